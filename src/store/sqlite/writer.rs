//! The writer thread, which owns the only write connection, commits writes in groups and keeps
//! the write-ahead log under its bound, and the checkpoint loop it wakes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::ids::{AccountId, DeliveryId};
use crate::limits::{DELIVERED_ID_RETENTION, PRUNE_BATCH};
use crate::store::{
    AttemptRecord, AttemptState, DeliveryFilter, DeliveryState, Fingerprint, NewDelivery, NextStep,
};

use super::log::{LogBuffer, LogRow};
use super::rows::{
    BUMP_STATS, DELETE_BY_ROWID, DELIVERED_FINGERPRINT, FIND_DELIVERY, INSERT_ACCOUNT,
    INSERT_DELIVERY, INSERT_HEALTH, NEXT_SETTINGS_VERSION, PRUNE_DELIVERED, RECORD_ATTEMPT,
    REMEMBER_DELIVERED, SAME_DELIVERY, UPDATE_ACCOUNT, UPDATE_HEALTH, bind_filter, push_filter,
    sql_limit, state_from_sql, stored_states, to_nanos,
};
use super::syncer::{Answers, Broken, broken_error};

/// The writer wakes the checkpointer after this many commits.
const CHECKPOINT_EVERY: u32 = 64;
/// The writer truncates the write-ahead log once the `-wal` file is past this share of the
/// limit: the batch that crosses it, and a checkpoint that has to try again, stay under it.
const WAL_RESET_SHARE: u64 = 2;
/// After a truncating checkpoint that could not finish (a read held the log past the busy
/// timeout), the writer tries again once the log has grown by this share of the limit.
const WAL_RETRY_SHARE: u64 = 8;
/// The writer forgets delivered ids past their retention after this many commits, at most
/// [`PRUNE_BATCH`] at a time, in a transaction of its own.
pub(super) const PRUNE_EVERY: u32 = 64;

/// One write, owned so it can cross to the writer thread. No `Debug`: it may carry settings.
pub(super) enum Op {
    Insert(Vec<NewDelivery>),
    Record(DeliveryId, AttemptRecord),
    Requeue(DeliveryFilter, Timestamp),
    Remove(DeliveryFilter),
    /// An account's settings, saved if still at the version expected (compare-and-set).
    SaveAccount(AccountId, String, Option<u64>),
    /// An endpoint's health and whether it is paused, saved if still at the version expected.
    SaveHealth(AccountId, String, bool, Option<u64>),
    /// Several accounts' settings, each saved if still at the version expected, in one
    /// savepoint; the version each was saved at (0: stale) is left in the shared list.
    SaveAccounts(Vec<(AccountId, String, Option<u64>)>, SavedVersions),
    /// Forgets, of the `.1` oldest logged attempts, those that finished before `.0`
    /// (nanoseconds).
    PruneAttempts(i64, usize),
    /// Writes the attempts the writer holds before answering (a read of the log comes next).
    FlushLog,
}

/// The versions a [`Op::SaveAccounts`] saved its accounts at, in order (0: stale): filled by
/// the writer, read by the caller once the write's answer says it committed.
pub(super) type SavedVersions = Arc<Mutex<Vec<u64>>>;

impl Op {
    /// The newest time this write carries (a submit's creation, an attempt, a replay's now), in
    /// nanoseconds: what moves the writer's clock for forgetting delivered ids.
    fn time(&self) -> Option<i64> {
        let at = match self {
            Op::Insert(deliveries) => deliveries.iter().map(|d| d.created_at).max()?,
            Op::Record(_, record) => record.at,
            Op::Requeue(_, now) => *now,
            Op::Remove(_)
            | Op::SaveAccount(..)
            | Op::SaveHealth(..)
            | Op::SaveAccounts(..)
            | Op::PruneAttempts(..)
            | Op::FlushLog => {
                return None;
            }
        };
        to_nanos(at).ok()
    }
}

/// A write and where its own answer goes.
pub(super) struct Job {
    pub(super) op: Op,
    pub(super) reply: SyncSender<Result<u64>>,
}

/// The writer thread's state: the only write connection and the count of pending deliveries.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) max_pending: u64,
    /// Pending deliveries in the file, as of the last statement applied.
    pub(super) pending: u64,
    pub(super) max_batch: usize,
    pub(super) max_wait: Duration,
    pub(super) wake_checkpointer: SyncSender<()>,
    pub(super) since_checkpoint: u32,
    /// The newest time, in nanoseconds, that a write applied so far carried. The store has no
    /// clock: delivered ids are kept for [`DELIVERED_ID_RETENTION`] before this.
    pub(super) newest: i64,
    pub(super) since_prune: u32,
    /// The size of the last batch: how many writes the next one waits for.
    pub(super) expected: usize,
    pub(super) commits: Arc<AtomicU64>,
    pub(super) wal: WalBound,
    /// Where committed batches go to be fsynced and answered (group commit); `None` answers
    /// at once, the commit having fsynced (`synchronous = FULL`).
    pub(super) syncer: Option<(Sender<Answers>, JoinHandle<()>)>,
    /// Set once an fsync of the log failed: every write is refused from then on.
    pub(super) broken: Broken,
    /// The attempts log's rows not written yet (see [`super::log`]).
    pub(super) log: LogBuffer,
}

/// What the writer needs to keep the write-ahead log under its limit.
///
/// The `-wal` file's length is what the limit is about, and it is cheap to read (one `stat`
/// after each batch). Truncating checkpoints set it back to zero, so it also counts the pages
/// appended since the last one. (A log reset by SQLite alone, after a passive checkpoint
/// copied everything, keeps its length: then the length is more than what the log holds,
/// and the next truncation only comes sooner.)
pub(super) struct WalBound {
    path: PathBuf,
    limit: u64,
    /// The length past which the next truncating checkpoint runs.
    next_at: u64,
    /// Held during every checkpoint, the background one's included: SQLite answers busy at
    /// once, without waiting, to a checkpoint while another runs.
    checkpointing: Arc<Mutex<()>>,
}

impl WalBound {
    pub(super) fn new(db: &Path, limit: u64, checkpointing: Arc<Mutex<()>>) -> WalBound {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        WalBound {
            path: PathBuf::from(path),
            limit,
            next_at: limit / WAL_RESET_SHARE,
            checkpointing,
        }
    }
}

impl Writer {
    pub(super) fn run(mut self, jobs: Receiver<Job>) {
        let mut batch = Vec::with_capacity(self.max_batch.min(1024));
        let mut results = Vec::with_capacity(self.max_batch.min(1024));
        // `recv` fails only once the store is dropped and everything queued was taken.
        loop {
            let first = match self.log.wait() {
                Some(wait) => match jobs.recv_timeout(wait) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        self.log.write(&self.conn);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            batch.push(first);
            self.gather(&jobs, &mut batch);
            self.expected = batch.len();
            if let Some(why) = self.broken.get() {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(broken_error(why)));
                }
                continue;
            }
            let committed = self.commit_batch(&batch, &mut results);
            if self.log.due() {
                // Before the answers: a read of the log that asked waits for this.
                self.log.write(&self.conn);
            }
            let answers: Answers = batch
                .drain(..)
                .map(|job| job.reply)
                .zip(results.drain(..))
                .collect();
            match &self.syncer {
                // Answered once the log is fsynced, while the next batch is applied.
                Some((syncer, _)) if committed => {
                    if let Err(returned) = syncer.send(answers) {
                        // The syncer is gone (it cannot be, short of a panic): nothing
                        // committed may be answered as durable.
                        for (reply, _) in returned.0 {
                            let _ = reply.send(Err(broken_error("the fsync thread stopped")));
                        }
                    }
                }
                _ => {
                    for (reply, answer) in answers {
                        // The caller always waits for its answer; nothing to do if it is gone.
                        let _ = reply.send(answer);
                    }
                }
            }
            if self.since_prune >= PRUNE_EVERY {
                self.prune();
            }
            self.bound_wal();
        }
        // What the log holds is written before the syncer's last fsync.
        self.log.write(&self.conn);
        // The syncer answers what it was handed, then ends.
        if let Some((syncer, thread)) = self.syncer.take() {
            drop(syncer);
            let _ = thread.join();
        }
    }

    /// Between two batches, after the callers have their answers: once the `-wal` file is past
    /// half the limit, copies what the background checkpoints have not copied yet into the
    /// file, waits for reads that still use the log (with the busy timeout), and truncates the
    /// log to nothing. No write runs meanwhile: this thread is the only writer.
    fn bound_wal(&mut self) {
        let Ok(len) = std::fs::metadata(&self.wal.path).map(|m| m.len()) else {
            // No log yet, or none left: nothing to bound.
            return;
        };
        if len < self.wal.next_at {
            return;
        }
        let done = {
            let _one_at_a_time = crate::sync::lock(&self.wal.checkpointing);
            self.conn
                .prepare_cached("PRAGMA wal_checkpoint(TRUNCATE)")
                .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, i64>(0)))
        };
        match done {
            Ok(0) => self.wal.next_at = self.wal.limit / WAL_RESET_SHARE,
            Ok(_) => {
                self.wal.next_at = len.saturating_add(self.wal.limit / WAL_RETRY_SHARE);
                tracing::warn!(
                    wal_bytes = len,
                    "a read held the outbox log past the busy timeout; truncating it later"
                );
            }
            Err(e) => {
                self.wal.next_at = len.saturating_add(self.wal.limit / WAL_RETRY_SHARE);
                tracing::warn!(error = %e, "truncating the outbox log failed; will retry");
            }
        }
    }

    /// Forgets at most [`PRUNE_BATCH`] delivered ids older than the retention, in a
    /// transaction of its own, after the batch's callers have their answers. When it finds a
    /// full batch to forget, it runs again after the next commit, so a backlog is worked off a
    /// bounded step at a time.
    fn prune(&mut self) {
        let retention = i64::try_from(DELIVERED_ID_RETENTION.as_nanos()).unwrap_or(i64::MAX);
        let before = self.newest.saturating_sub(retention);
        let pruned = self.exec("BEGIN IMMEDIATE").and_then(|()| {
            let n = self
                .conn
                .prepare_cached(PRUNE_DELIVERED)?
                .execute(params![before, PRUNE_BATCH as i64])?;
            self.exec("COMMIT")?;
            Ok(n)
        });
        match pruned {
            Ok(n) => {
                if n > 0 {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                }
                self.since_prune = if n >= PRUNE_BATCH { PRUNE_EVERY } else { 0 };
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.exec("ROLLBACK");
                }
                self.since_prune = 0;
                tracing::warn!(error = %e, "forgetting old delivered ids failed; will retry");
            }
        }
    }

    /// Adds what is already queued to `batch`; then, while the batch is smaller than the last
    /// one, waits up to `max_wait` for more.
    ///
    /// The last batch's size stands for how many callers write at once: waiting for that many
    /// fills the batch without idling once they have all arrived, and a lone caller does not
    /// wait. A batch cut short by the deadline lowers the target for the next one.
    fn gather(&self, jobs: &Receiver<Job>, batch: &mut Vec<Job>) {
        while batch.len() < self.max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let target = self.expected.clamp(1, self.max_batch);
        if batch.len() >= target || self.max_wait.is_zero() {
            return;
        }
        let deadline = Instant::now() + self.max_wait;
        while batch.len() < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match jobs.recv_timeout(left) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Applies each job in its own savepoint and commits them all in one transaction,
    /// leaving one result per job in `results`. Returns whether a transaction committed.
    fn commit_batch(&mut self, batch: &[Job], results: &mut Vec<Result<u64>>) -> bool {
        let mut in_tx = false;
        let mut tx_start = 0;
        let mut pending_at_start = self.pending;
        let mut tx_log = self.log.mark();
        for (i, job) in batch.iter().enumerate() {
            if !in_tx {
                if let Err(e) = self.exec("BEGIN IMMEDIATE") {
                    results.push(Err(Error::store("starting a transaction", e)));
                    continue;
                }
                in_tx = true;
                tx_start = i;
                pending_at_start = self.pending;
                tx_log = self.log.mark();
            }
            let result = self.apply_alone(&job.op);
            let aborted = result.is_err() && self.conn.is_autocommit();
            results.push(result);
            if aborted {
                // SQLite rolled the whole transaction back (an I/O error, a full disk):
                // the batch-mates applied before this one are not stored either.
                let cause = results[i].as_ref().err().map(ToString::to_string);
                abort(&mut results[tx_start..i], cause.as_deref().unwrap_or(""));
                self.pending = pending_at_start;
                self.log.truncate(tx_log);
                in_tx = false;
            }
        }
        if !in_tx {
            return false;
        }
        match self.exec("COMMIT") {
            Ok(()) => {
                self.log.committed();
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.since_prune = self.since_prune.saturating_add(1);
                self.since_checkpoint += 1;
                if self.since_checkpoint >= CHECKPOINT_EVERY {
                    self.since_checkpoint = 0;
                    // A wake-up already waiting is as good as a new one.
                    let _ = self.wake_checkpointer.try_send(());
                }
                true
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.exec("ROLLBACK");
                }
                abort(&mut results[tx_start..], &e.to_string());
                self.pending = pending_at_start;
                self.log.truncate(tx_log);
                false
            }
        }
    }

    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// Applies one job inside its own savepoint, so that its failure undoes only its own
    /// changes.
    fn apply_alone(&mut self, op: &Op) -> Result<u64> {
        self.exec("SAVEPOINT op")
            .map_err(|e| Error::store("starting a savepoint", e))?;
        let log_mark = self.log.mark();
        let applied = self.apply(op).and_then(|done| {
            self.exec("RELEASE op")
                .map_err(|e| Error::store("releasing a savepoint", e))?;
            Ok(done)
        });
        match applied {
            Ok((n, pending_delta)) => {
                self.pending = self.pending.saturating_add_signed(pending_delta);
                if let Some(at) = op.time() {
                    self.newest = self.newest.max(at);
                }
                Ok(n)
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.exec("ROLLBACK TO op");
                    let _ = self.exec("RELEASE op");
                }
                self.log.truncate(log_mark);
                Err(e)
            }
        }
    }

    /// Applies one write; returns its answer and how it changed the pending count.
    fn apply(&mut self, op: &Op) -> Result<(u64, i64)> {
        match op {
            Op::Insert(deliveries) => self.insert(deliveries),
            Op::Record(id, record) => self.record_attempt(id, record),
            Op::Requeue(filter, now) => self.requeue_failed(filter, *now),
            Op::Remove(filter) => self.remove(filter),
            Op::SaveAccount(account, json, expected) => self
                .save_settings(account, json, None, *expected)
                .map_err(|e| Error::store("saving account settings", e)),
            Op::SaveHealth(account, json, paused, expected) => self
                .save_settings(account, json, Some(*paused), *expected)
                .map_err(|e| Error::store("saving endpoint health", e)),
            Op::SaveAccounts(saves, versions) => self
                .save_accounts(saves, versions)
                .map_err(|e| Error::store("saving accounts' settings", e)),
            Op::FlushLog => {
                self.log.ask();
                Ok((0, 0))
            }
            Op::PruneAttempts(before, limit) => self
                .conn
                .prepare_cached(super::log::PRUNE_ATTEMPTS)
                .and_then(|mut stmt| stmt.execute(params![before, sql_limit(*limit)]))
                .map(|n| (n as u64, 0))
                .map_err(|e| Error::store("forgetting old logged attempts", e)),
        }
    }

    /// Saves each account's settings as [`Writer::save_settings`] does, inside the one
    /// savepoint of the write: all of them or none. Returns how many were written.
    fn save_accounts(
        &self,
        saves: &[(AccountId, String, Option<u64>)],
        versions: &SavedVersions,
    ) -> rusqlite::Result<(u64, i64)> {
        let mut saved = Vec::with_capacity(saves.len());
        for (account, json, expected) in saves {
            saved.push(self.save_settings(account, json, None, *expected)?.0);
        }
        let written = saved.iter().filter(|v| **v > 0).count() as u64;
        *crate::sync::lock(versions) = saved;
        Ok((written, 0))
    }

    /// Stores each delivery whose id is new; a repeat of a stored or recently delivered one
    /// changes nothing. Returns how many were stored. Fails, and the savepoint undoes the lot,
    /// on an id stored for another call result or past `max_pending`.
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<(u64, i64)> {
        let mut added = 0;
        // One counter update per run of the same account and campaign.
        for run in deliveries.chunk_by(|a, b| a.account == b.account && a.campaign == b.campaign) {
            let mut stored = 0;
            for d in run {
                if self.insert_one(d)? {
                    stored += 1;
                }
            }
            if stored > 0 {
                let delta = StatsDelta {
                    pending: stored,
                    ..StatsDelta::default()
                };
                self.bump_stats(run[0].account.as_str(), run[0].campaign.as_str(), &delta)?;
            }
            added += stored;
        }
        // Checked once the repeats are known: they take no room.
        if self.pending.saturating_add_signed(added) > self.max_pending {
            return Err(Error::StoreFull {
                max_pending: self.max_pending as usize,
            });
        }
        Ok((added as u64, added))
    }

    /// Stores one delivery: `true` if stored, `false` if its id is stored already for the same
    /// call result or was delivered within the retention, [`Error::IdConflict`] if it is stored
    /// for another one.
    fn insert_one(&self, d: &NewDelivery) -> Result<bool> {
        let failed = |e| Error::store("storing a delivery", e);
        let (id, account, campaign) = (d.id.as_str(), d.account.as_str(), d.campaign.as_str());
        let (body, encoding) = (d.body.bytes().as_ref(), d.body.encoding().as_str());
        let (created_at, next_attempt_at) = (to_nanos(d.created_at)?, to_nanos(d.next_attempt_at)?);
        let stored = self
            .conn
            .prepare_cached(INSERT_DELIVERY)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id,
                    account,
                    campaign,
                    body,
                    encoding,
                    created_at,
                    next_attempt_at,
                ])
            })
            .map_err(failed)?;
        if stored == 1 {
            return Ok(true);
        }
        let same: Option<bool> = self
            .conn
            .prepare_cached(SAME_DELIVERY)
            .and_then(|mut stmt| {
                stmt.query_row(params![id, account, campaign, body, encoding], |row| {
                    row.get(0)
                })
                .optional()
            })
            .map_err(failed)?;
        let same = match same {
            Some(same) => same,
            // Not stored, so delivered within the retention: only its id and a fingerprint of
            // what was delivered are kept.
            None => {
                let kept: Option<Option<Vec<u8>>> = self
                    .conn
                    .prepare_cached(DELIVERED_FINGERPRINT)
                    .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
                    .map_err(failed)?;
                match kept.flatten() {
                    Some(kept) => kept == d.fingerprint().0,
                    // Delivered before fingerprints were kept, or not delivered at all.
                    None => true,
                }
            }
        };
        if same {
            // A resubmission of the same call result: left as it is.
            Ok(false)
        } else {
            Err(Error::IdConflict {
                id: d.id.to_string(),
            })
        }
    }

    fn record_attempt(&mut self, id: &DeliveryId, record: &AttemptRecord) -> Result<(u64, i64)> {
        let failed = |e| Error::store("recording an attempt", e);
        let found = self
            .conn
            .prepare_cached(FIND_DELIVERY)
            .and_then(|mut stmt| {
                stmt.query_row([id.as_str()], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        state_from_sql(row, 3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, Vec<u8>>(5)?,
                        row.get::<_, u32>(6)?,
                    ))
                })
                .optional()
            })
            .map_err(failed)?;
        let Some((rowid, account, campaign, was, encoding, body, attempts)) = found else {
            return Err(Error::UnknownDelivery(id.to_string()));
        };
        let at = to_nanos(record.at)?;
        let mut delta = StatsDelta::default();
        match was {
            DeliveryState::Pending => delta.pending -= 1,
            DeliveryState::Failed => delta.failed -= 1,
            DeliveryState::Delivered => {}
        }
        if let Some(error) = &record.error {
            delta.failure = Some((at, error.as_str()));
        }
        let (state, retry_at) = match record.next {
            NextStep::Delivered => {
                // Delivered deliveries are only counted, not kept; their ids are remembered
                // for a while, so a resubmission is not sent again.
                self.conn
                    .prepare_cached(DELETE_BY_ROWID)
                    .and_then(|mut stmt| stmt.execute([rowid]))
                    .and_then(|_| self.conn.prepare_cached(REMEMBER_DELIVERED))
                    .and_then(|mut stmt| {
                        let what = Fingerprint::of_parts(&account, &campaign, &encoding, &body);
                        stmt.execute(params![id.as_str(), at, &what.0[..]])
                    })
                    .map_err(failed)?;
                delta.delivered += 1;
                delta.success_at = Some(at);
                (None, None)
            }
            NextStep::RetryAt(next) => {
                delta.pending += 1;
                (Some(DeliveryState::Pending), Some(to_nanos(next)?))
            }
            NextStep::Failed => {
                delta.failed += 1;
                (Some(DeliveryState::Failed), None)
            }
        };
        if let Some(state) = state {
            self.conn
                .prepare_cached(RECORD_ATTEMPT)
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        rowid,
                        record.status,
                        record.error.as_deref(),
                        at,
                        state.as_str(),
                        retry_at,
                    ])
                })
                .map_err(failed)?;
        }
        self.bump_stats(&account, &campaign, &delta)?;
        self.log.stage(LogRow {
            account,
            campaign,
            delivery: id.as_str().to_owned(),
            number: attempts.saturating_add(1),
            at,
            state: AttemptState::of(record.next),
            status: record.status,
            error: record.error.clone(),
            duration_us: i64::try_from(record.duration.as_micros()).unwrap_or(i64::MAX),
            answer: record.answer.clone(),
        });
        Ok((0, delta.pending))
    }

    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<(u64, i64)> {
        let mut sql = String::from("UPDATE deliveries SET state = 'pending', next_attempt_at = ?4");
        push_filter(&mut sql, filter, DeliveryState::Failed);
        sql.push_str(" RETURNING campaign");
        let now = to_nanos(now)?;
        let campaigns = self
            .changed_campaigns(&sql, filter, Some(now))
            .map_err(|e| Error::store("replaying failed deliveries", e))?;
        let mut total = 0;
        for (campaign, n) in &campaigns {
            let delta = StatsDelta {
                pending: *n,
                failed: -*n,
                ..StatsDelta::default()
            };
            self.bump_stats(filter.account.as_str(), campaign, &delta)?;
            total += *n;
        }
        Ok((total as u64, total))
    }

    fn remove(&self, filter: &DeliveryFilter) -> Result<(u64, i64)> {
        let mut removed = 0;
        let mut pending_delta = 0;
        for state in stored_states(filter.state) {
            let mut sql = String::from("DELETE FROM deliveries");
            push_filter(&mut sql, filter, *state);
            sql.push_str(" RETURNING campaign");
            let campaigns = self
                .changed_campaigns(&sql, filter, None)
                .map_err(|e| Error::store("removing deliveries", e))?;
            for (campaign, n) in &campaigns {
                let mut delta = StatsDelta::default();
                if *state == DeliveryState::Pending {
                    delta.pending = -*n;
                    pending_delta -= *n;
                } else {
                    delta.failed = -*n;
                }
                self.bump_stats(filter.account.as_str(), campaign, &delta)?;
                removed += *n as u64;
            }
        }
        Ok((removed, pending_delta))
    }

    /// Runs an `UPDATE`/`DELETE ... RETURNING campaign` over `filter` and counts the rows it
    /// changed, by campaign.
    fn changed_campaigns(
        &self,
        sql: &str,
        filter: &DeliveryFilter,
        now: Option<i64>,
    ) -> rusqlite::Result<Vec<(String, i64)>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        bind_filter(&mut stmt, filter)?;
        if let Some(now) = now {
            stmt.raw_bind_parameter(4, now)?;
        }
        let mut counts: Vec<(String, i64)> = Vec::new();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            let campaign = row.get_ref(0)?.as_str()?;
            match counts.iter_mut().find(|(c, _)| c == campaign) {
                Some((_, n)) => *n += 1,
                None => counts.push((campaign.to_owned(), 1)),
            }
        }
        Ok(counts)
    }

    /// Saves an account's settings (`paused` is `None`) or an endpoint's health (`Some`) if
    /// the stored record is still at version `expected` (`None`: if none is stored), at the
    /// next settings version. Answers that version, or 0 when the record was stale and nothing
    /// was written (a version written is at least 1). This thread is the file's only writer,
    /// so nothing is saved between the version read and the write.
    fn save_settings(
        &self,
        account: &AccountId,
        json: &str,
        paused: Option<bool>,
        expected: Option<u64>,
    ) -> rusqlite::Result<(u64, i64)> {
        let next: i64 = self
            .conn
            .prepare_cached(NEXT_SETTINGS_VERSION)?
            .query_row([], |r| r.get(0))?;
        // A version past what SQLite holds matches no row: stale.
        let expected = expected.map(|v| i64::try_from(v).unwrap_or(-1));
        let id = account.as_str();
        let written = match (paused, expected) {
            (None, None) => self
                .conn
                .prepare_cached(INSERT_ACCOUNT)?
                .execute(params![id, json, next])?,
            (None, Some(v)) => self
                .conn
                .prepare_cached(UPDATE_ACCOUNT)?
                .execute(params![id, json, next, v])?,
            (Some(paused), None) => self
                .conn
                .prepare_cached(INSERT_HEALTH)?
                .execute(params![id, json, paused, next])?,
            (Some(paused), Some(v)) => self
                .conn
                .prepare_cached(UPDATE_HEALTH)?
                .execute(params![id, json, paused, next, v])?,
        };
        let version = if written == 1 {
            u64::try_from(next).unwrap_or(0)
        } else {
            0
        };
        Ok((version, 0))
    }

    fn bump_stats(&self, account: &str, campaign: &str, delta: &StatsDelta<'_>) -> Result<()> {
        self.conn
            .prepare_cached(BUMP_STATS)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    account,
                    campaign,
                    delta.pending,
                    delta.delivered,
                    delta.failed,
                    delta.success_at,
                    delta.failure.map(|(at, _)| at),
                    delta.failure.map(|(_, reason)| reason),
                ])
            })
            .map_err(|e| Error::store("updating delivery counts", e))?;
        Ok(())
    }
}

/// Changes to one (account, campaign) row of `stats`.
#[derive(Default)]
struct StatsDelta<'a> {
    pending: i64,
    delivered: i64,
    failed: i64,
    success_at: Option<i64>,
    failure: Option<(i64, &'a str)>,
}

/// Turns the answers of jobs whose work was rolled back into errors.
fn abort(results: &mut [Result<u64>], cause: &str) {
    for result in results.iter_mut().filter(|r| r.is_ok()) {
        *result = Err(Error::Store {
            message: format!("the transaction holding this write was rolled back: {cause}"),
            source: None,
        });
    }
}

pub(super) fn checkpoint_loop(conn: Connection, wake: Receiver<()>, checkpointing: &Mutex<()>) {
    while wake.recv().is_ok() {
        // PASSIVE never waits for the writer or readers; what it cannot copy now waits for
        // the next one. Copying here, beside the writer, leaves less for the writer's own
        // truncating checkpoint.
        let _one_at_a_time = crate::sync::lock(checkpointing);
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        if let Err(e) = done {
            tracing::warn!(error = %e, "outbox checkpoint failed; will retry");
        }
    }
}

pub(super) fn writer_stopped() -> Error {
    Error::Store {
        message: "the outbox writer has stopped".into(),
        source: None,
    }
}
