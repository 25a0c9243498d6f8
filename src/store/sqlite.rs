//! The durable outbox in one SQLite file (feature `sqlite`).
//!
//! One writer thread owns the only write connection. Every write ([`Store::insert`],
//! [`Store::record_attempt`], ...) is sent to it over a channel; it takes what is queued, applies
//! each operation inside its own savepoint, commits the lot in one transaction with one fsync
//! (`synchronous = FULL` in WAL mode) and only then answers each caller with its own result.
//! Reads use a small pool of separate connections, which WAL lets run beside the writer. A
//! third connection checkpoints the WAL in the background, so commits never wait for one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Statement, ffi, params};

use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::request::EncodedBody;
use crate::store::{
    AttemptRecord, Delivery, DeliveryFilter, DeliveryState, DeliveryStats, NewDelivery, NextStep,
    Store,
};

/// `PRAGMA application_id` of an outbox file: "CRWH". A file carrying another id is refused.
const APPLICATION_ID: i32 = 0x4352_5748;
/// How long a connection waits for a lock held by another connection before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache per connection, in KiB (`PRAGMA cache_size = -N`): the file may hold a million
/// pending deliveries, and none of them is loaded into memory wholesale.
const CACHE_SIZE_KIB: i64 = 8 * 1024;
/// The WAL file is truncated back to this size after a checkpoint if it grew past it.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// Read connections kept open between reads; more are opened under load and closed after.
const MAX_IDLE_READERS: usize = 4;
/// The writer wakes the checkpointer after this many commits.
const CHECKPOINT_EVERY: u32 = 64;

/// The schema, one step per version: step `i` takes a file from `user_version = i` to `i + 1`.
/// Steps are only ever appended; a released step never changes.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

const SCHEMA_V1: &str = "
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY NOT NULL,
    account         TEXT NOT NULL,
    campaign        TEXT NOT NULL,
    body            BLOB NOT NULL,
    encoding        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'failed')),
    last_status     INTEGER,
    last_error      TEXT,
    last_attempt_at INTEGER
);
CREATE INDEX deliveries_due ON deliveries (account, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_failed ON deliveries (account, created_at) WHERE state = 'failed';
CREATE TABLE stats (
    account             TEXT NOT NULL,
    campaign            TEXT NOT NULL,
    pending             INTEGER NOT NULL DEFAULT 0,
    delivered           INTEGER NOT NULL DEFAULT 0,
    failed              INTEGER NOT NULL DEFAULT 0,
    last_success_at     INTEGER,
    last_failure_at     INTEGER,
    last_failure_reason TEXT,
    PRIMARY KEY (account, campaign)
) WITHOUT ROWID;
CREATE TABLE accounts (
    id       TEXT PRIMARY KEY NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE health (
    account TEXT PRIMARY KEY NOT NULL,
    health  TEXT NOT NULL
);
";

macro_rules! delivery_columns {
    () => {
        "id, account, campaign, body, encoding, created_at, next_attempt_at, attempts, state, \
         last_status, last_error, last_attempt_at"
    };
}

const INSERT_DELIVERY: &str = "INSERT INTO deliveries \
    (id, account, campaign, body, encoding, created_at, next_attempt_at, attempts, state) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 'pending')";

const FIND_DELIVERY: &str = "SELECT rowid, account, campaign, state FROM deliveries WHERE id = ?1";

const DELETE_BY_ROWID: &str = "DELETE FROM deliveries WHERE rowid = ?1";

const RECORD_ATTEMPT: &str = "UPDATE deliveries SET attempts = attempts + 1, last_status = ?2, \
    last_error = ?3, last_attempt_at = ?4, state = ?5, \
    next_attempt_at = coalesce(?6, next_attempt_at) WHERE rowid = ?1";

const BUMP_STATS: &str = "INSERT INTO stats (account, campaign, pending, delivered, failed, \
    last_success_at, last_failure_at, last_failure_reason) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
    ON CONFLICT (account, campaign) DO UPDATE SET \
    pending = pending + excluded.pending, \
    delivered = delivered + excluded.delivered, \
    failed = failed + excluded.failed, \
    last_success_at = coalesce(excluded.last_success_at, last_success_at), \
    last_failure_reason = CASE WHEN excluded.last_failure_at IS NULL \
        THEN last_failure_reason ELSE excluded.last_failure_reason END, \
    last_failure_at = coalesce(excluded.last_failure_at, last_failure_at)";

const SAVE_ACCOUNT: &str = "INSERT INTO accounts (id, settings) VALUES (?1, ?2) \
    ON CONFLICT (id) DO UPDATE SET settings = excluded.settings";

const SAVE_HEALTH: &str = "INSERT INTO health (account, health) VALUES (?1, ?2) \
    ON CONFLICT (account) DO UPDATE SET health = excluded.health";

const DUE: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM deliveries WHERE account = ?1 AND state = 'pending' AND next_attempt_at <= ?2 \
     ORDER BY next_attempt_at, rowid LIMIT ?3"
);

/// One index seek per account (a "loose index scan"), never a pass over every pending row.
const PENDING_ACCOUNTS: &str = "WITH RECURSIVE a(account) AS ( \
    SELECT (SELECT account FROM deliveries WHERE state = 'pending' ORDER BY account LIMIT 1) \
    UNION ALL \
    SELECT (SELECT d.account FROM deliveries AS d \
            WHERE d.state = 'pending' AND d.account > a.account ORDER BY d.account LIMIT 1) \
    FROM a WHERE a.account IS NOT NULL) \
    SELECT account, (SELECT min(next_attempt_at) FROM deliveries \
                     WHERE state = 'pending' AND account = a.account) \
    FROM a WHERE account IS NOT NULL";

const STATS_ACCOUNT: &str = "SELECT pending, delivered, failed, last_success_at, \
    last_failure_at, last_failure_reason FROM stats WHERE account = ?1";

const STATS_CAMPAIGN: &str = "SELECT pending, delivered, failed, last_success_at, \
    last_failure_at, last_failure_reason FROM stats WHERE account = ?1 AND campaign = ?2";

/// How the writer turns writes into transactions.
///
/// Both modes make every write durable (fsynced) before it returns; they differ in how many
/// writes share one fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitMode {
    /// Group commit (the default): the writer takes every write that is queued, up to
    /// `max_batch`, and commits them in one transaction with one fsync. When fewer are
    /// queued than went into the previous batch (about as many as write concurrently), it
    /// waits at most `max_wait` for more to arrive, so a lone caller is not kept waiting.
    Group {
        /// The most writes committed in one transaction (at least 1).
        max_batch: usize,
        /// How long the writer waits for a batch to fill before committing what it has.
        max_wait: Duration,
    },
    /// One transaction, and one fsync, per write. Slower under concurrency; there for
    /// comparison.
    PerSubmit,
}

impl CommitMode {
    /// The default `max_batch` of [`CommitMode::Group`].
    pub const DEFAULT_MAX_BATCH: usize = 512;
    /// The default `max_wait` of [`CommitMode::Group`].
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_micros(100);

    fn limits(self) -> (usize, Duration) {
        match self {
            CommitMode::Group {
                max_batch,
                max_wait,
            } => (max_batch, max_wait),
            CommitMode::PerSubmit => (1, Duration::ZERO),
        }
    }
}

impl Default for CommitMode {
    fn default() -> Self {
        CommitMode::Group {
            max_batch: Self::DEFAULT_MAX_BATCH,
            max_wait: Self::DEFAULT_MAX_WAIT,
        }
    }
}

/// Options for opening a [`SqliteStore`]; made by [`SqliteStore::builder`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    commit: CommitMode,
    max_pending: usize,
}

impl SqliteStoreBuilder {
    /// How writes are committed; [`CommitMode::Group`] with its defaults unless set.
    pub fn commit(mut self, mode: CommitMode) -> Self {
        self.commit = mode;
        self
    }

    /// The most deliveries that may be pending at once in the file;
    /// [`SqliteStore::DEFAULT_MAX_PENDING`] unless set. A submit beyond it is refused with
    /// [`Error::StoreFull`] and nothing is stored. A hard limit, not a preallocation.
    pub fn max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// Opens (or creates) the file, migrates its schema to this version, and starts the
    /// writer.
    ///
    /// A new file is created with mode `0600` on unix: it holds account passwords. An
    /// existing file keeps its permissions. A file written by a newer version of this crate,
    /// or a database that is not an outbox, is refused with [`Error::Store`].
    pub fn open(self) -> Result<SqliteStore> {
        SqliteStore::open_with(self)
    }
}

/// The outbox in one SQLite file: survives crashes and restarts of the dialer.
///
/// - Durable: [`insert`](Store::insert) returns once the deliveries are fsynced to the file's
///   write-ahead log (`journal_mode = WAL`, `synchronous = FULL`).
/// - Group commit: concurrent writes share one transaction and one fsync (see
///   [`CommitMode`]); a write that fails (a duplicate id, an unknown delivery) fails alone.
/// - Bounded: past [`max_pending`](SqliteStore::max_pending) pending deliveries, `insert`
///   returns [`Error::StoreFull`] and stores nothing.
/// - Small in memory: pending deliveries stay in the file; reads fetch only what they return.
///
/// Open one `SqliteStore` per file at a time: the `max_pending` check counts in the process.
/// Dropping the store commits what was queued, stops its threads and closes the file.
///
/// # Examples
///
/// ```
/// use call_result_webhook::jiff::Timestamp;
/// use call_result_webhook::{
///     DeliveryId, SqliteStore, encoding::Encoding, request::EncodedBody,
///     store::{NewDelivery, Store},
/// };
///
/// let path = std::env::temp_dir().join(format!("outbox-doctest-{}.db", std::process::id()));
/// let store = SqliteStore::open(&path)?;
///
/// let now = Timestamp::now();
/// store.insert(&[NewDelivery {
///     id: DeliveryId::generate(),
///     account: "acme".into(),
///     campaign: "winter-sale".into(),
///     body: EncodedBody::from_parts("Reference=123".into(), Encoding::Form),
///     created_at: now,
///     next_attempt_at: now,
/// }])?;
///
/// let due = store.due(&"acme".into(), now, 10, &[])?;
/// assert_eq!(due[0].body.bytes().as_ref(), b"Reference=123");
/// assert_eq!(store.stats(&"acme".into(), None)?.pending, 1);
///
/// drop(store);
/// # for suffix in ["", "-wal", "-shm"] {
/// #     let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
/// # }
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
pub struct SqliteStore {
    path: PathBuf,
    commit: CommitMode,
    max_pending: usize,
    jobs: Option<Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    /// Transactions the writer has committed.
    commits: Arc<AtomicU64>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the accounts' settings: they hold passwords.
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("commit", &self.commit)
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The default [`max_pending`](SqliteStore::max_pending): the most deliveries that may be
    /// pending at once.
    pub const DEFAULT_MAX_PENDING: usize = 1_000_000;

    /// Opens (or creates) the outbox file at `path` with group commit and the default
    /// [`max_pending`](SqliteStore::max_pending). See [`SqliteStoreBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        Self::builder(path).open()
    }

    /// Options for opening the outbox file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_path_buf(),
            commit: CommitMode::default(),
            max_pending: Self::DEFAULT_MAX_PENDING,
        }
    }

    /// The file this store keeps its deliveries in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The most deliveries that may be pending at once; a submit beyond it is refused with
    /// [`Error::StoreFull`] and nothing is stored.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// How writes are committed.
    pub fn commit_mode(&self) -> CommitMode {
        self.commit
    }

    /// How many transactions (and so fsyncs of the log) the writer has committed since the
    /// store was opened. Writes divided by this is the average group-commit batch.
    pub fn transactions_committed(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn open_with(options: SqliteStoreBuilder) -> Result<SqliteStore> {
        let SqliteStoreBuilder {
            path,
            commit,
            max_pending,
        } = options;
        let (max_batch, max_wait) = commit.limits();
        if max_batch == 0 {
            return Err(Error::config("max_batch", "must be at least 1"));
        }
        // SQLite reads these as private, in-memory databases: nothing would be durable.
        if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
            return Err(Error::config("path", "the outbox needs a file path"));
        }
        create_private_file(&path)?;

        let mut conn = open_connection(&path, true)
            .map_err(|e| Error::store(format!("opening outbox file {}", path.display()), e))?;
        // Refuse a newer or foreign file before changing anything in it.
        check_schema(&conn, &path, MIGRATIONS.len())?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| Error::store("switching to WAL", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Store {
                message: format!("the file system refused WAL mode (journal_mode is {mode})"),
                source: None,
            });
        }
        // Checkpoints run on their own connection, off the commit path.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .and_then(|()| conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT))
            .map_err(|e| Error::store("configuring the write connection", e))?;
        migrate(&mut conn, &path, MIGRATIONS)?;
        let pending: i64 = conn
            .query_row("SELECT coalesce(sum(pending), 0) FROM stats", [], |r| {
                r.get(0)
            })
            .map_err(|e| Error::store("counting pending deliveries", e))?;

        let reader = open_reader(&path)?;
        let checkpoint_conn = open_connection(&path, false)
            .map_err(|e| Error::store("opening the checkpoint connection", e))?;

        let (wake_tx, wake_rx) = mpsc::sync_channel(1);
        let checkpointer = std::thread::Builder::new()
            .name("outbox-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, wake_rx))
            .map_err(|e| Error::store("starting the checkpoint thread", e))?;

        let commits = Arc::new(AtomicU64::new(0));
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let writer = Writer {
            conn,
            max_pending: max_pending as u64,
            pending: pending.max(0) as u64,
            max_batch,
            max_wait,
            wake_checkpointer: wake_tx,
            since_checkpoint: 0,
            expected: max_batch,
            commits: Arc::clone(&commits),
        };
        let writer = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.run(jobs_rx))
            .map_err(|e| Error::store("starting the writer thread", e))?;

        Ok(SqliteStore {
            path,
            commit,
            max_pending,
            jobs: Some(jobs_tx),
            writer: Some(writer),
            checkpointer: Some(checkpointer),
            readers: Mutex::new(vec![reader]),
            commits,
        })
    }

    /// Sends one write to the writer and waits for its own answer, which comes only after the
    /// transaction holding it has committed (or the write failed alone).
    fn write(&self, op: Op) -> Result<u64> {
        self.queue(op)?.recv().map_err(|_| writer_stopped())?
    }

    /// Sends one write to the writer without waiting; its own answer comes on the receiver.
    fn queue(&self, op: Op) -> Result<Receiver<Result<u64>>> {
        let (reply, answer) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(writer_stopped)?;
        jobs.send(Job { op, reply }).map_err(|_| writer_stopped())?;
        Ok(answer)
    }

    fn idle_readers(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The pool holds plain connections; a panic elsewhere leaves them usable.
        crate::sync::lock(&self.readers)
    }

    /// Runs `read` on an idle read connection, opening one if none is idle.
    fn read<T>(
        &self,
        what: &'static str,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let idle = self.idle_readers().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let out = read(&conn);
        let mut idle = self.idle_readers();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out.map_err(|e| Error::store(what, e))
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer commit what is queued, then stop; the writer
        // closes the checkpointer's channel in turn.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
    }
}

impl Store for SqliteStore {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        for d in deliveries {
            to_nanos(d.created_at)?;
            to_nanos(d.next_attempt_at)?;
        }
        self.write(Op::Insert(deliveries.to_vec())).map(drop)
    }

    fn due(
        &self,
        account: &AccountId,
        now: Timestamp,
        limit: usize,
        skip: &[DeliveryId],
    ) -> Result<Vec<Delivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // At most `skip.len()` of the earliest rows are in flight: fetch that many more.
        let fetch = limit.saturating_add(skip.len());
        self.read("reading due deliveries", |conn| {
            let mut stmt = conn.prepare_cached(DUE)?;
            let mut rows = stmt.query(params![
                account.as_str(),
                clamp_nanos(now),
                sql_limit(fetch)
            ])?;
            let mut due = Vec::with_capacity(limit.min(1024));
            while let Some(row) = rows.next()? {
                if !skip.is_empty() {
                    let id = row.get_ref(0)?.as_str()?;
                    if skip.iter().any(|s| s.as_str() == id) {
                        continue;
                    }
                }
                due.push(delivery_from_row(row)?);
                if due.len() == limit {
                    break;
                }
            }
            Ok(due)
        })
    }

    fn pending_accounts(&self) -> Result<Vec<(AccountId, Timestamp)>> {
        self.read("reading accounts with pending deliveries", |conn| {
            let mut stmt = conn.prepare_cached(PENDING_ACCOUNTS)?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    AccountId::new(row.get::<_, String>(0)?),
                    from_nanos(row.get(1)?, 1)?,
                ))
            })?;
            rows.collect()
        })
    }

    fn record_attempt(&self, id: &DeliveryId, record: &AttemptRecord) -> Result<()> {
        to_nanos(record.at)?;
        if let NextStep::RetryAt(at) = record.next {
            to_nanos(at)?;
        }
        self.write(Op::Record(id.clone(), record.clone())).map(drop)
    }

    /// Queues every record before waiting for any, so the writer takes them into one batch:
    /// one transaction and one fsync for the lot, each still in its own savepoint.
    fn record_attempts(&self, attempts: &[(DeliveryId, AttemptRecord)]) -> Vec<Result<()>> {
        let queued: Vec<Result<Receiver<Result<u64>>>> = attempts
            .iter()
            .map(|(id, record)| {
                to_nanos(record.at)?;
                if let NextStep::RetryAt(at) = record.next {
                    to_nanos(at)?;
                }
                self.queue(Op::Record(id.clone(), record.clone()))
            })
            .collect();
        queued
            .into_iter()
            .map(|answer| answer?.recv().map_err(|_| writer_stopped())?.map(drop))
            .collect()
    }

    fn list(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>> {
        let states = stored_states(filter.state);
        if states.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut sql = String::with_capacity(512);
        for (i, state) in states.iter().enumerate() {
            if i > 0 {
                sql.push_str(" UNION ALL ");
            }
            sql.push_str(concat!("SELECT ", delivery_columns!(), " FROM deliveries"));
            push_filter(&mut sql, filter, *state);
        }
        sql.push_str(" ORDER BY created_at, id LIMIT ?4");
        self.read("listing deliveries", |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            bind_filter(&mut stmt, filter)?;
            stmt.raw_bind_parameter(4, sql_limit(limit))?;
            let mut rows = stmt.raw_query();
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                found.push(delivery_from_row(row)?);
            }
            Ok(found)
        })
    }

    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64> {
        to_nanos(now)?;
        self.write(Op::Requeue(filter.clone(), now))
    }

    fn remove(&self, filter: &DeliveryFilter) -> Result<u64> {
        if stored_states(filter.state).is_empty() {
            return Ok(0);
        }
        self.write(Op::Remove(filter.clone()))
    }

    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats> {
        self.read("reading delivery counts", |conn| {
            let mut stmt;
            let mut rows = match campaign {
                None => {
                    stmt = conn.prepare_cached(STATS_ACCOUNT)?;
                    stmt.query(params![account.as_str()])?
                }
                Some(campaign) => {
                    stmt = conn.prepare_cached(STATS_CAMPAIGN)?;
                    stmt.query(params![account.as_str(), campaign.as_str()])?
                }
            };
            let mut total = DeliveryStats::default();
            while let Some(row) = rows.next()? {
                total.pending += row.get::<_, u64>(0)?;
                total.delivered += row.get::<_, u64>(1)?;
                total.failed += row.get::<_, u64>(2)?;
                let success = optional_time(row, 3)?;
                total.last_success_at = total.last_success_at.max(success);
                let failure = optional_time(row, 4)?;
                if failure > total.last_failure_at {
                    total.last_failure_at = failure;
                    total.last_failure_reason = row.get(5)?;
                }
            }
            Ok(total)
        })
    }

    fn save_account(&self, account: &AccountId, settings_json: &str) -> Result<()> {
        self.write(Op::SaveAccount(account.clone(), settings_json.to_owned()))
            .map(drop)
    }

    fn load_accounts(&self) -> Result<Vec<String>> {
        self.read("loading account settings", |conn| {
            let mut stmt = conn.prepare_cached("SELECT settings FROM accounts ORDER BY id")?;
            let rows = stmt.query_map([], |row| row.get(0))?;
            rows.collect()
        })
    }

    fn save_health(&self, account: &AccountId, health_json: &str) -> Result<()> {
        self.write(Op::SaveHealth(account.clone(), health_json.to_owned()))
            .map(drop)
    }

    fn load_health(&self) -> Result<Vec<(AccountId, String)>> {
        self.read("loading endpoint health", |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT account, health FROM health ORDER BY account")?;
            let rows = stmt.query_map([], |row| {
                Ok((AccountId::new(row.get::<_, String>(0)?), row.get(1)?))
            })?;
            rows.collect()
        })
    }
}

/// One write, owned so it can cross to the writer thread. No `Debug`: it may carry settings.
enum Op {
    Insert(Vec<NewDelivery>),
    Record(DeliveryId, AttemptRecord),
    Requeue(DeliveryFilter, Timestamp),
    Remove(DeliveryFilter),
    SaveAccount(AccountId, String),
    SaveHealth(AccountId, String),
}

/// A write and where its own answer goes.
struct Job {
    op: Op,
    reply: SyncSender<Result<u64>>,
}

/// The writer thread's state: the only write connection and the count of pending deliveries.
struct Writer {
    conn: Connection,
    max_pending: u64,
    /// Pending deliveries in the file, as of the last statement applied.
    pending: u64,
    max_batch: usize,
    max_wait: Duration,
    wake_checkpointer: SyncSender<()>,
    since_checkpoint: u32,
    /// The size of the last batch: how many writes the next one waits for.
    expected: usize,
    commits: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, jobs: Receiver<Job>) {
        let mut batch = Vec::with_capacity(self.max_batch.min(1024));
        let mut results = Vec::with_capacity(self.max_batch.min(1024));
        // `recv` fails only once the store is dropped and everything queued was taken.
        while let Ok(first) = jobs.recv() {
            batch.push(first);
            self.gather(&jobs, &mut batch);
            self.expected = batch.len();
            self.commit_batch(&batch, &mut results);
            for (job, result) in batch.drain(..).zip(results.drain(..)) {
                // The caller always waits for its answer; nothing to do if it is gone.
                let _ = job.reply.send(result);
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
    /// leaving one result per job in `results`.
    fn commit_batch(&mut self, batch: &[Job], results: &mut Vec<Result<u64>>) {
        let mut in_tx = false;
        let mut tx_start = 0;
        let mut pending_at_start = self.pending;
        for (i, job) in batch.iter().enumerate() {
            if !in_tx {
                if let Err(e) = self.exec("BEGIN IMMEDIATE") {
                    results.push(Err(Error::store("starting a transaction", e)));
                    continue;
                }
                in_tx = true;
                tx_start = i;
                pending_at_start = self.pending;
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
                in_tx = false;
            }
        }
        if !in_tx {
            return;
        }
        match self.exec("COMMIT") {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.since_checkpoint += 1;
                if self.since_checkpoint >= CHECKPOINT_EVERY {
                    self.since_checkpoint = 0;
                    // A wake-up already waiting is as good as a new one.
                    let _ = self.wake_checkpointer.try_send(());
                }
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.exec("ROLLBACK");
                }
                abort(&mut results[tx_start..], &e.to_string());
                self.pending = pending_at_start;
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
        let applied = self.apply(op).and_then(|done| {
            self.exec("RELEASE op")
                .map_err(|e| Error::store("releasing a savepoint", e))?;
            Ok(done)
        });
        match applied {
            Ok((n, pending_delta)) => {
                self.pending = self.pending.saturating_add_signed(pending_delta);
                Ok(n)
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.exec("ROLLBACK TO op");
                    let _ = self.exec("RELEASE op");
                }
                Err(e)
            }
        }
    }

    /// Applies one write; returns its answer and how it changed the pending count.
    fn apply(&self, op: &Op) -> Result<(u64, i64)> {
        match op {
            Op::Insert(deliveries) => self.insert(deliveries),
            Op::Record(id, record) => self.record_attempt(id, record),
            Op::Requeue(filter, now) => self.requeue_failed(filter, *now),
            Op::Remove(filter) => self.remove(filter),
            Op::SaveAccount(account, json) => {
                self.upsert(SAVE_ACCOUNT, account, json, "saving account settings")
            }
            Op::SaveHealth(account, json) => {
                self.upsert(SAVE_HEALTH, account, json, "saving endpoint health")
            }
        }
    }

    fn insert(&self, deliveries: &[NewDelivery]) -> Result<(u64, i64)> {
        let n = deliveries.len() as u64;
        if self.pending.saturating_add(n) > self.max_pending {
            return Err(Error::StoreFull {
                capacity: self.max_pending as usize,
            });
        }
        let failed = |e| Error::store("storing a delivery", e);
        let mut stmt = self.conn.prepare_cached(INSERT_DELIVERY).map_err(failed)?;
        for d in deliveries {
            stmt.execute(params![
                d.id.as_str(),
                d.account.as_str(),
                d.campaign.as_str(),
                d.body.bytes().as_ref(),
                d.body.encoding().as_str(),
                to_nanos(d.created_at)?,
                to_nanos(d.next_attempt_at)?,
            ])
            .map_err(|e| {
                let code = e.sqlite_error().map(|e| e.extended_code);
                if code == Some(ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
                    || code == Some(ffi::SQLITE_CONSTRAINT_UNIQUE)
                {
                    Error::Store {
                        message: format!("delivery {} already exists", d.id),
                        source: Some(e.into()),
                    }
                } else {
                    failed(e)
                }
            })?;
        }
        // One counter update per run of the same account and campaign.
        for run in deliveries.chunk_by(|a, b| a.account == b.account && a.campaign == b.campaign) {
            let delta = StatsDelta {
                pending: run.len() as i64,
                ..StatsDelta::default()
            };
            self.bump_stats(run[0].account.as_str(), run[0].campaign.as_str(), &delta)?;
        }
        Ok((n, n as i64))
    }

    fn record_attempt(&self, id: &DeliveryId, record: &AttemptRecord) -> Result<(u64, i64)> {
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
                    ))
                })
                .optional()
            })
            .map_err(failed)?;
        let Some((rowid, account, campaign, was)) = found else {
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
                // Delivered deliveries are only counted, not kept.
                self.conn
                    .prepare_cached(DELETE_BY_ROWID)
                    .and_then(|mut stmt| stmt.execute([rowid]))
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

    fn upsert(
        &self,
        sql: &str,
        account: &AccountId,
        json: &str,
        what: &'static str,
    ) -> Result<(u64, i64)> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(params![account.as_str(), json]))
            .map_err(|e| Error::store(what, e))?;
        Ok((0, 0))
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

fn checkpoint_loop(conn: Connection, wake: Receiver<()>) {
    while wake.recv().is_ok() {
        // PASSIVE never waits for the writer or readers; what it cannot copy now waits for
        // the next one.
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        if let Err(e) = done {
            tracing::warn!(error = %e, "outbox checkpoint failed; will retry");
        }
    }
}

fn writer_stopped() -> Error {
    Error::Store {
        message: "the outbox writer has stopped".into(),
        source: None,
    }
}

/// Creates the file with mode 0600 if it does not exist yet, before SQLite opens it (SQLite
/// gives the `-wal` and `-shm` files the same mode).
fn create_private_file(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::store(
            format!("creating outbox file {}", path.display()),
            e,
        )),
    }
}

fn open_connection(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -CACHE_SIZE_KIB)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection> {
    open_connection(path, false)
        .and_then(|conn| {
            conn.pragma_update(None, "query_only", true)?;
            Ok(conn)
        })
        .map_err(|e| Error::store("opening a read connection", e))
}

/// Refuses a file written by a newer version of the crate, or one that is not an outbox.
fn check_schema(conn: &Connection, path: &Path, latest: usize) -> Result<usize> {
    let read = |conn: &Connection| -> rusqlite::Result<(i32, i64, bool)> {
        let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let empty = conn
            .query_row("SELECT 1 FROM sqlite_schema LIMIT 1", [], |_| Ok(()))
            .optional()?
            .is_none();
        Ok((app, version, empty))
    };
    let (app, version, empty) = read(conn).map_err(|e| {
        Error::store(
            format!("reading the schema version of {}", path.display()),
            e,
        )
    })?;
    // Ours, or an empty file about to become ours.
    let fresh = app == 0 && version == 0 && empty;
    if app != APPLICATION_ID && !fresh {
        return Err(Error::Store {
            message: format!(
                "{} is a database, but not a call-result-webhook outbox",
                path.display()
            ),
            source: None,
        });
    }
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > latest {
        return Err(Error::Store {
            message: format!(
                "{} has schema version {version}, newer than version {latest} that this \
                 release of call-result-webhook knows; open it with a newer release",
                path.display()
            ),
            source: None,
        });
    }
    Ok(version)
}

/// Brings the file's schema to `steps.len()`, applying each missing step in order, all in one
/// transaction with the version stamp.
fn migrate(conn: &mut Connection, path: &Path, steps: &[&str]) -> Result<()> {
    let failed = |e| Error::store(format!("migrating the schema of {}", path.display()), e);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(failed)?;
    // Checked again under the write lock, in case another process migrated meanwhile.
    let from = check_schema(&tx, path, steps.len())?;
    if from == steps.len() {
        return Ok(());
    }
    for step in &steps[from..] {
        tx.execute_batch(step).map_err(failed)?;
    }
    tx.pragma_update(None, "user_version", steps.len() as i64)
        .and_then(|()| tx.pragma_update(None, "application_id", APPLICATION_ID))
        .and_then(|()| tx.commit())
        .map_err(failed)
}

/// The states a filter can match among stored rows (delivered ones are not kept).
fn stored_states(state: Option<DeliveryState>) -> &'static [DeliveryState] {
    match state {
        None => &[DeliveryState::Pending, DeliveryState::Failed],
        Some(DeliveryState::Pending) => &[DeliveryState::Pending],
        Some(DeliveryState::Failed) => &[DeliveryState::Failed],
        Some(DeliveryState::Delivered) => &[],
    }
}

/// Appends the `WHERE` clause for `filter` in one stored state: `?1` is the account, `?2` the
/// campaign, `?3` the id. The literal state lets SQLite use that state's partial index.
fn push_filter(sql: &mut String, filter: &DeliveryFilter, state: DeliveryState) {
    sql.push_str(" WHERE account = ?1 AND state = '");
    sql.push_str(state.as_str());
    sql.push('\'');
    if filter.campaign.is_some() {
        sql.push_str(" AND campaign = ?2");
    }
    if filter.id.is_some() {
        sql.push_str(" AND id = ?3");
    }
}

fn bind_filter(stmt: &mut Statement<'_>, filter: &DeliveryFilter) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, filter.account.as_str())?;
    if let Some(campaign) = &filter.campaign {
        stmt.raw_bind_parameter(2, campaign.as_str())?;
    }
    if let Some(id) = &filter.id {
        stmt.raw_bind_parameter(3, id.as_str())?;
    }
    Ok(())
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Times are stored as integer nanoseconds since the Unix epoch (years 1678 to 2261).
fn to_nanos(at: Timestamp) -> Result<i64> {
    i64::try_from(at.as_nanosecond()).map_err(|_| Error::Store {
        message: format!("time {at} is outside the years 1678 to 2261 that the outbox stores"),
        source: None,
    })
}

/// Like [`to_nanos`], for a bound in a query: a time past the range means "everything".
fn clamp_nanos(at: Timestamp) -> i64 {
    let nanos = at.as_nanosecond();
    nanos.clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

fn from_nanos(nanos: i64, column: usize) -> rusqlite::Result<Timestamp> {
    Timestamp::from_nanosecond(nanos.into())
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Integer, e.into()))
}

fn optional_time(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Timestamp>> {
    row.get::<_, Option<i64>>(column)?
        .map(|nanos| from_nanos(nanos, column))
        .transpose()
}

fn state_from_sql(row: &Row<'_>, column: usize) -> rusqlite::Result<DeliveryState> {
    match row.get_ref(column)?.as_str()? {
        "pending" => Ok(DeliveryState::Pending),
        "failed" => Ok(DeliveryState::Failed),
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            column,
            Type::Text,
            format!("unknown delivery state {other:?}").into(),
        )),
    }
}

/// A row of [`delivery_columns!`].
fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let conversion = |column, e: Error| {
        rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e))
    };
    let id = DeliveryId::new(row.get::<_, String>(0)?).map_err(|e| conversion(0, e))?;
    let encoding: Encoding = row
        .get_ref(4)?
        .as_str()?
        .parse()
        .map_err(|e| conversion(4, e))?;
    Ok(Delivery {
        id,
        account: AccountId::new(row.get::<_, String>(1)?),
        campaign: CampaignId::new(row.get::<_, String>(2)?),
        body: EncodedBody::from_parts(Bytes::copy_from_slice(row.get_ref(3)?.as_blob()?), encoding),
        created_at: from_nanos(row.get(5)?, 5)?,
        next_attempt_at: from_nanos(row.get(6)?, 6)?,
        attempts: row.get(7)?,
        state: state_from_sql(row, 8)?,
        last_status: row.get(9)?,
        last_error: row.get(10)?,
        last_attempt_at: optional_time(row, 11)?,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::sync::Barrier;

    use super::*;
    use crate::store::conformance::{self, new_deliveries, t};

    fn in_dir(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("outbox.db")
    }

    /// A delivery whose times carry nanoseconds and whose body is not text.
    fn exact(i: u32, account: &str, campaign: &str) -> NewDelivery {
        let created =
            Timestamp::from_nanosecond(1_700_000_000_123_456_789 + i128::from(i)).unwrap();
        let mut body = vec![0u8, 0xff, 0xfe, b'\n', b'\r'];
        body.extend_from_slice(
            format!("{{\"Reference\":\"{i}\",\"ResultNotes\":\"\u{2713}\"}}").as_bytes(),
        );
        NewDelivery {
            id: DeliveryId::new(format!("msg_{account}_{campaign}_{i}")).unwrap(),
            account: account.into(),
            campaign: campaign.into(),
            body: EncodedBody::from_parts(
                Bytes::from(body),
                if i.is_multiple_of(2) {
                    Encoding::Json
                } else {
                    Encoding::Form
                },
            ),
            created_at: created,
            next_attempt_at: created,
        }
    }

    fn attempt(at: Timestamp, status: u16, next: NextStep) -> AttemptRecord {
        AttemptRecord {
            at,
            status: Some(status),
            error: (status >= 300).then(|| format!("HTTP {status}")),
            next,
        }
    }

    #[test]
    fn conforms_with_group_commit() {
        let dirs = RefCell::new(Vec::new());
        conformance::run_all(&|| {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(in_dir(&dir)).unwrap();
            dirs.borrow_mut().push(dir);
            store
        });
    }

    #[test]
    fn conforms_with_one_commit_per_write() {
        let dirs = RefCell::new(Vec::new());
        conformance::run_all(&|| {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::builder(in_dir(&dir))
                .commit(CommitMode::PerSubmit)
                .open()
                .unwrap();
            dirs.borrow_mut().push(dir);
            store
        });
    }

    /// Everything a store can tell about its contents, for comparing before and after.
    #[derive(Debug, PartialEq)]
    struct Snapshot {
        deliveries: Vec<Delivery>,
        stats: Vec<DeliveryStats>,
        pending_accounts: Vec<(AccountId, Timestamp)>,
        accounts: Vec<String>,
        health: Vec<(AccountId, String)>,
    }

    fn snapshot(store: &SqliteStore) -> Snapshot {
        let mut deliveries = Vec::new();
        let mut stats = Vec::new();
        for account in ["acme", "bolt"] {
            deliveries.extend(store.list(&DeliveryFilter::account(account), 1000).unwrap());
            stats.push(store.stats(&account.into(), None).unwrap());
            for campaign in ["c1", "c2"] {
                stats.push(
                    store
                        .stats(&account.into(), Some(&campaign.into()))
                        .unwrap(),
                );
            }
        }
        let mut pending_accounts = store.pending_accounts().unwrap();
        pending_accounts.sort();
        Snapshot {
            deliveries,
            stats,
            pending_accounts,
            accounts: store.load_accounts().unwrap(),
            health: store.load_health().unwrap(),
        }
    }

    #[test]
    fn reopening_finds_everything_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = in_dir(&dir);
        let store = SqliteStore::open(&path).unwrap();
        let batch: Vec<_> = (0..6)
            .map(|i| {
                exact(
                    i,
                    ["acme", "bolt"][i as usize % 2],
                    ["c1", "c2"][i as usize / 3],
                )
            })
            .collect();
        store.insert(&batch).unwrap();
        let later = Timestamp::from_nanosecond(1_700_000_100_000_000_001).unwrap();
        store
            .record_attempt(&batch[0].id, &attempt(later, 204, NextStep::Delivered))
            .unwrap();
        store
            .record_attempt(&batch[1].id, &attempt(later, 503, NextStep::RetryAt(later)))
            .unwrap();
        store
            .record_attempt(&batch[2].id, &attempt(later, 410, NextStep::Failed))
            .unwrap();
        store
            .save_account(&"acme".into(), r#"{"password":"hunter2"}"#)
            .unwrap();
        store.save_account(&"bolt".into(), r#"{"v":1}"#).unwrap();
        store
            .save_health(&"acme".into(), r#"{"paused":true}"#)
            .unwrap();
        let before = snapshot(&store);
        assert_eq!(before.deliveries.len(), 5);
        assert!(!format!("{store:?}").contains("hunter2"));
        drop(store);
        // Every connection closed: SQLite checkpointed and removed the log.
        assert!(!Path::new(&format!("{}-wal", path.display())).exists());

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(snapshot(&store), before);
        for new in &batch[1..] {
            let found = store
                .list(
                    &DeliveryFilter::account(new.account.clone()).id(new.id.clone()),
                    1,
                )
                .unwrap();
            assert_eq!(found[0].body, new.body, "{}", new.id);
            assert_eq!(found[0].created_at, new.created_at);
        }
    }

    #[test]
    fn concurrent_inserts_are_all_kept() {
        const THREADS: usize = 16;
        const EACH: usize = 100;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(in_dir(&dir)).unwrap());
        std::thread::scope(|s| {
            for thread in 0..THREADS {
                let store = &store;
                s.spawn(move || {
                    for d in
                        new_deliveries(&format!("a{}", thread % 4), &format!("t{thread}"), EACH)
                    {
                        store.insert(&[d]).unwrap();
                    }
                });
            }
        });
        let mut total = 0;
        for account in 0..4 {
            let account = format!("a{account}");
            let stats = store.stats(&account.as_str().into(), None).unwrap();
            let due = store
                .due(&account.as_str().into(), t(1_000_000), usize::MAX, &[])
                .unwrap();
            assert_eq!(stats.pending, (THREADS / 4 * EACH) as u64);
            assert_eq!(due.len(), THREADS / 4 * EACH);
            total += due.len();
        }
        assert_eq!(total, THREADS * EACH);
        let commits = store.transactions_committed();
        assert!(
            commits < (THREADS * EACH) as u64,
            "{commits} commits: no write shared one"
        );
    }

    #[test]
    fn attempts_recorded_together_share_commits() {
        const N: usize = 64;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(in_dir(&dir)).unwrap();
        store.insert(&new_deliveries("acme", "c1", N)).unwrap();
        let due = store.due(&"acme".into(), t(1_000_000), N, &[]).unwrap();
        let records: Vec<_> = due
            .iter()
            .map(|d| {
                let record = AttemptRecord {
                    at: t(2_000),
                    status: Some(204),
                    error: None,
                    next: NextStep::Delivered,
                };
                (d.id.clone(), record)
            })
            .collect();
        let before = store.transactions_committed();
        let answers = store.record_attempts(&records);
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        let commits = store.transactions_committed() - before;
        // All are queued before the first answer is awaited: the writer takes them in batches.
        assert!(
            commits < (N / 2) as u64,
            "{commits} commits for {N} records"
        );
        let stats = store.stats(&"acme".into(), None).unwrap();
        assert_eq!((stats.pending, stats.delivered), (0, N as u64));
    }

    #[test]
    fn a_failing_write_fails_alone_in_its_batch() {
        const THREADS: usize = 16;
        let dir = tempfile::tempdir().unwrap();
        let existing = new_deliveries("acme", "dup", 1);
        SqliteStore::open(in_dir(&dir))
            .unwrap()
            .insert(&existing)
            .unwrap();
        // A batch closes when full: exactly the 17 writes below.
        let store = SqliteStore::builder(in_dir(&dir))
            .commit(CommitMode::Group {
                max_batch: THREADS + 1,
                max_wait: Duration::from_secs(10),
            })
            .open()
            .unwrap();
        let commits_before = store.transactions_committed();
        let barrier = Barrier::new(THREADS + 1);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for thread in 0..THREADS {
                let (store, barrier) = (&store, &barrier);
                handles.push(s.spawn(move || {
                    let fresh = new_deliveries("acme", &format!("c{thread}"), 2);
                    barrier.wait();
                    store.insert(&fresh)
                }));
            }
            let (store, barrier, existing) = (&store, &barrier, &existing);
            handles.push(s.spawn(move || {
                // A fresh delivery and a duplicate: all or nothing, so neither is stored.
                let mut mixed = new_deliveries("acme", "mixed", 1);
                mixed.push(existing[0].clone());
                barrier.wait();
                store.insert(&mixed)
            }));
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            store.transactions_committed(),
            commits_before + 1,
            "one batch"
        );
        for ok in &results[..THREADS] {
            ok.as_ref().unwrap();
        }
        match &results[THREADS] {
            Err(Error::Store { message, .. }) => assert!(message.contains("already exists")),
            other => panic!("{other:?}"),
        }
        let acme: AccountId = "acme".into();
        assert_eq!(
            store.stats(&acme, None).unwrap().pending,
            1 + 2 * THREADS as u64
        );
        assert_eq!(
            store.stats(&acme, Some(&"mixed".into())).unwrap().pending,
            0
        );
        assert!(
            store
                .list(&DeliveryFilter::account("acme").campaign("mixed"), 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .list(&DeliveryFilter::account("acme"), 100)
                .unwrap()
                .len(),
            1 + 2 * THREADS
        );
    }

    #[test]
    fn a_lone_caller_is_not_kept_waiting_for_company() {
        let max_wait = Duration::from_millis(300);
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::builder(in_dir(&dir))
            .commit(CommitMode::Group {
                max_batch: 64,
                max_wait,
            })
            .open()
            .unwrap();
        let batch = new_deliveries("acme", "c1", 11);
        // The first write may wait for company; after a batch of one, the next ones do not.
        store.insert(&batch[..1]).unwrap();
        let started = Instant::now();
        for d in &batch[1..] {
            store.insert(std::slice::from_ref(d)).unwrap();
        }
        let took = started.elapsed();
        assert!(took < max_wait * 10 / 2, "10 lone writes took {took:?}");
        assert_eq!(store.transactions_committed(), 11);
    }

    #[test]
    fn full_store_refuses_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let path = in_dir(&dir);
        let store = SqliteStore::builder(&path).max_pending(3).open().unwrap();
        let batch = new_deliveries("acme", "c1", 5);
        store.insert(&batch[..2]).unwrap();
        assert!(matches!(
            store.insert(&batch[2..4]),
            Err(Error::StoreFull { capacity: 3 })
        ));
        store.insert(&batch[2..3]).unwrap();
        assert!(matches!(
            store.insert(&batch[3..4]),
            Err(Error::StoreFull { .. })
        ));
        let kept = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
        let ids: Vec<_> = kept.iter().map(|d| d.id.clone()).collect();
        assert_eq!(
            ids,
            [
                batch[0].id.clone(),
                batch[1].id.clone(),
                batch[2].id.clone()
            ]
        );
        assert!(kept.iter().zip(&batch).all(|(d, n)| d.body == n.body));
        assert_eq!(store.stats(&"acme".into(), None).unwrap().pending, 3);

        // A delivered one frees its place, and the count outlives a restart.
        store
            .record_attempt(&batch[0].id, &attempt(t(9), 200, NextStep::Delivered))
            .unwrap();
        store.insert(&batch[3..4]).unwrap();
        drop(store);
        let store = SqliteStore::builder(&path).max_pending(3).open().unwrap();
        assert!(matches!(
            store.insert(&batch[4..]),
            Err(Error::StoreFull { .. })
        ));
        assert_eq!(store.stats(&"acme".into(), None).unwrap().pending, 3);
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = in_dir(&dir);
        let store = SqliteStore::open(&path).unwrap();
        store
            .save_account(&"acme".into(), r#"{"password":"hunter2"}"#)
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
        }
    }

    fn set_version(path: &Path, version: i64) {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
    }

    fn version(path: &Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_file_from_a_newer_version_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = in_dir(&dir);
        drop(SqliteStore::open(&path).unwrap());
        let newer = MIGRATIONS.len() as i64 + 1;
        set_version(&path, newer);
        let err = SqliteStore::open(&path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Store { .. }));
        assert!(
            message.contains(&format!("schema version {newer}")),
            "{message}"
        );
        assert!(message.contains("newer release"), "{message}");
        assert_eq!(version(&path), newer);
    }

    #[test]
    fn a_database_that_is_not_an_outbox_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = in_dir(&dir);
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
            .unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            err.to_string().contains("not a call-result-webhook outbox"),
            "{err}"
        );
        let conn = Connection::open(&path).unwrap();
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 1, "left untouched");
        conn.execute_batch("DROP TABLE invoices; PRAGMA user_version = 3")
            .unwrap();
        drop(conn);
        assert!(
            SqliteStore::open(&path).is_err(),
            "versioned by someone else"
        );

        for path in ["", ":memory:"] {
            assert!(matches!(
                SqliteStore::open(path),
                Err(Error::InvalidConfig { field: "path", .. })
            ));
        }
    }

    #[test]
    fn an_older_file_is_migrated() {
        // Version 0: an empty file, as an older release that had not yet created it leaves it.
        let dir = tempfile::tempdir().unwrap();
        let path = in_dir(&dir);
        Connection::open(&path)
            .unwrap()
            .execute_batch("VACUUM")
            .unwrap();
        assert_eq!(version(&path), 0);
        let store = SqliteStore::open(&path).unwrap();
        store.insert(&new_deliveries("acme", "c1", 1)).unwrap();
        drop(store);
        assert_eq!(version(&path), MIGRATIONS.len() as i64);

        // A later step runs on a file at the current version and keeps its data.
        let next = "ALTER TABLE deliveries ADD COLUMN signature TEXT; \
                    CREATE TABLE endpoints (account TEXT PRIMARY KEY NOT NULL)";
        let mut steps = MIGRATIONS.to_vec();
        steps.push(next);
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path, &steps).unwrap();
        assert_eq!(version(&path), steps.len() as i64);
        let kept: i64 = conn
            .query_row(
                "SELECT count(*) FROM deliveries WHERE signature IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, 1);
        // Already there: nothing runs twice.
        migrate(&mut conn, &path, &steps).unwrap();
        // And this release refuses what the later one wrote.
        drop(conn);
        assert!(SqliteStore::open(&path).is_err());
    }

    #[test]
    fn hot_queries_never_scan_the_whole_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(in_dir(&dir)).unwrap();
        let conn = Connection::open(store.path()).unwrap();
        let filter = DeliveryFilter::account("acme").campaign("c1");
        let mut filtered = Vec::new();
        for state in [DeliveryState::Pending, DeliveryState::Failed] {
            let mut sql = String::from("DELETE FROM deliveries");
            push_filter(&mut sql, &filter, state);
            filtered.push(sql);
        }
        let mut queries = vec![DUE, PENDING_ACCOUNTS, FIND_DELIVERY, STATS_CAMPAIGN];
        queries.extend(filtered.iter().map(String::as_str));
        for sql in queries {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().unwrap() {
                let step: String = row.get(3).unwrap();
                assert!(
                    !step.starts_with("SCAN deliveries") || step.contains("INDEX"),
                    "{sql}: {step}"
                );
            }
        }
    }

    /// Set for the child process of [`acknowledged_inserts_survive_sigkill`]: the file to write.
    const CRASH_CHILD_ENV: &str = "CALL_RESULT_WEBHOOK_SQLITE_CRASH_CHILD";

    /// Not a test on its own: the child process of [`acknowledged_inserts_survive_sigkill`].
    /// Inserts from several threads until killed, printing each id once `insert` returned.
    #[test]
    fn crash_child() {
        let Ok(path) = std::env::var(CRASH_CHILD_ENV) else {
            return;
        };
        let store = SqliteStore::open(&path).unwrap();
        std::thread::scope(|s| {
            for thread in 0..4 {
                let store = &store;
                s.spawn(move || {
                    for i in 0.. {
                        let mut d = exact(i, "acme", &format!("t{thread}"));
                        d.id = DeliveryId::new(format!("{}_{}", d.id, std::process::id())).unwrap();
                        store.insert(std::slice::from_ref(&d)).unwrap();
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ack {}", d.id).unwrap();
                        out.flush().unwrap();
                    }
                });
            }
        });
    }

    #[cfg(unix)]
    #[test]
    fn acknowledged_inserts_survive_sigkill() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        let dir = tempfile::tempdir().unwrap();
        let path = in_dir(&dir);
        let mut acknowledged = HashSet::new();
        for round in 0..4 {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "store::sqlite::tests::crash_child",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CRASH_CHILD_ENV, &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let (first_tx, first_rx) = mpsc::channel();
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut acks = Vec::new();
                let mut lines = BufReader::new(stdout);
                let mut line = Vec::new();
                // A line cut short by the kill has no newline: it was never acknowledged.
                while lines.read_until(b'\n', &mut line).unwrap() > 0 {
                    if let Some(id) = line
                        .strip_prefix(b"ack ")
                        .and_then(|l| l.strip_suffix(b"\n"))
                    {
                        acks.push(String::from_utf8(id.to_vec()).unwrap());
                        let _ = first_tx.send(());
                    }
                    line.clear();
                }
                acks
            });
            first_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the child acknowledged nothing");
            let wait_ms = 20 + getrandom::u32().unwrap() % 300;
            std::thread::sleep(Duration::from_millis(u64::from(wait_ms)));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let acks = reader.join().unwrap();
            assert!(!acks.is_empty());

            let conn = Connection::open(&path).unwrap();
            let check: String = conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok", "round {round}");
            let stored: HashSet<String> = conn
                .prepare("SELECT id FROM deliveries")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            drop(conn);
            eprintln!(
                "round {round}: killed after {wait_ms} ms, {} acknowledged, {} stored",
                acks.len(),
                stored.len()
            );
            acknowledged.extend(acks);
            let lost: Vec<_> = acknowledged.difference(&stored).collect();
            assert!(
                lost.is_empty(),
                "round {round}: {} acknowledged ids lost: {lost:?}",
                lost.len()
            );

            // The counters moved in the same transactions as the rows.
            let store = SqliteStore::open(&path).unwrap();
            let stats = store.stats(&"acme".into(), None).unwrap();
            assert_eq!(stats.pending, stored.len() as u64, "round {round}");
        }
    }
}
