//! The durable outbox in one SQLite file (feature `sqlite`).
//!
//! One writer thread owns the only write connection. Every write ([`Outbox::insert`](crate::store::Outbox::insert),
//! [`Outbox::record_attempts`](crate::store::Outbox::record_attempts), ...) is sent to it over a channel; it takes what is queued, applies
//! each operation inside its own savepoint and commits the lot in one transaction. A second
//! thread fsyncs the write-ahead log after the commit, while the writer applies the next batch,
//! and only then answers each caller with its own result (see `syncer`: one fsync for every
//! batch committed meanwhile; [`CommitMode::PerSubmit`] fsyncs in each commit instead).
//! Reads use a small pool of separate connections, which WAL lets run beside the writer. A
//! third connection copies the WAL into the file in the background (passive checkpoints), and
//! the writer keeps the WAL under [`SqliteStoreBuilder::wal_limit`]: once the `-wal` file has
//! grown past half the limit, it checkpoints what is left and truncates the log between two
//! batches, so the log is reset however steady the writes are.

mod claims;
mod due;
mod log;
mod outbox;
mod rows;
mod schema;
mod syncer;
#[cfg(test)]
mod tests;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{
    AttemptRecord, Delivery, DeliveryFilter, DeliveryStats, NewDelivery, NextStep, SaveOutcome,
    Versioned,
};

use claims::Claims;
use rows::{
    ACCOUNTS_SINCE, HEALTH_SINCE, NEWEST_DELIVERED, SELECT_DELIVERIES, STATS_ACCOUNT,
    STATS_CAMPAIGN, bind_filter, delivery_from_row, optional_time, push_filter, sql_limit,
    stored_states, to_nanos,
};
use schema::{
    MIGRATIONS, check_schema, create_private_file, migrate, open_connection, open_reader,
};
use writer::{Job, Op, WalBound, Writer, checkpoint_loop, writer_stopped};

/// Read connections kept open between reads; more are opened under load and closed after.
const MAX_IDLE_READERS: usize = 4;

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
    wal_limit: u64,
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

    /// The most the write-ahead log (the `-wal` file beside the outbox) may hold, in bytes;
    /// [`SqliteStore::DEFAULT_WAL_LIMIT`] (64 MiB) unless set.
    ///
    /// Every commit appends the pages it changed to the log; checkpoints copy them into the
    /// file. Once the log has grown past half this limit, the writer checkpoints what is left
    /// and truncates the log to nothing, between two batches, however steady the writes are.
    /// The log passes the limit only by the batch being committed as it crosses half of it,
    /// or while a read holds the log for longer than the busy timeout (5 s): the checkpoint
    /// then gives up and the writer tries again once the log has grown by another eighth of
    /// the limit. A lower limit means more frequent checkpoints, each the writer waits for.
    /// The same value is the file's `journal_size_limit`.
    ///
    /// # Errors
    ///
    /// [`open`](Self::open) returns [`Error::InvalidConfig`] (field `wal_limit`) for a limit
    /// below [`SqliteStore::MIN_WAL_LIMIT`] (4 MiB): the log would be checkpointed every few
    /// batches.
    pub fn wal_limit(mut self, bytes: u64) -> Self {
        self.wal_limit = bytes;
        self
    }

    /// Opens (or creates) the file, migrates its schema to this version, and starts the
    /// writer.
    ///
    /// A new file is created with mode `0600` on unix: it holds account passwords. An
    /// existing file keeps its permissions. A file written by an older version of this crate
    /// is migrated in one transaction; one written by a newer version, or a database that is
    /// not an outbox, is refused and left untouched.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidConfig`] for a `max_batch` of 0 in [`CommitMode::Group`] (field
    ///   `max_batch`), a [`wal_limit`](Self::wal_limit) below [`SqliteStore::MIN_WAL_LIMIT`]
    ///   (field `wal_limit`), or an empty path or `:memory:` (field `path`): nothing would be
    ///   durable.
    /// - [`Error::Store`] if the file cannot be created or opened, the file system refuses WAL
    ///   mode, the file is a database but not an outbox, its schema version is newer than this
    ///   release knows, the migration fails, or the writer or checkpoint thread cannot start.
    pub fn open(self) -> Result<SqliteStore> {
        SqliteStore::open_with(self)
    }
}

/// The outbox in one SQLite file: survives crashes and restarts of the dialer.
///
/// - Durable: [`insert`](crate::store::Outbox::insert) returns once the deliveries are fsynced to the file's
///   write-ahead log (`journal_mode = WAL`; the log is fsynced after each group commit, beside
///   the next batch's work, and every caller is answered only after the fsync that covers
///   its write).
/// - Group commit: concurrent writes share one transaction and one fsync (see
///   [`CommitMode`]); a write that fails (an id stored for another call result, an unknown
///   delivery) fails alone.
/// - Bounded: past [`max_pending`](SqliteStore::max_pending) pending deliveries, `insert`
///   returns [`Error::StoreFull`] and stores nothing; the write-ahead log stays under
///   [`wal_limit`](SqliteStoreBuilder::wal_limit) however steady the writes.
/// - Small in memory: pending deliveries stay in the file; reads fetch only what they return.
///
/// One process per file: the file is locked for the store's life, and a second store on it is
/// refused with [`Error::StoreInUse`]. Claims and their leases live in this store's memory; a
/// fleet of processes shares a `PostgresStore` instead (feature `postgres`).
/// Dropping the store commits what was queued, stops its threads and closes the file.
///
/// # Examples
///
/// ```
/// use call_result_webhook::jiff::Timestamp;
/// use call_result_webhook::{
///     DeliveryId, SqliteStore, encoding::Encoding, request::EncodedBody,
///     store::{ClaimRequest, NewDelivery, Outbox},
/// };
/// use std::time::Duration;
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
/// // The worker claims what is due, under a lease.
/// let claims = store.claim(&ClaimRequest {
///     now,
///     limit: 10,
///     lease: Duration::from_secs(20),
///     skip: &[],
///     ..ClaimRequest::default()
/// })?;
/// assert_eq!(claims[0].delivery.body.bytes().as_ref(), b"Reference=123");
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
    wal_limit: u64,
    jobs: Option<Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    /// Transactions the writer has committed.
    commits: Arc<AtomicU64>,
    /// The claims handed out by [`Outbox::claim`](crate::store::Outbox::claim), in memory
    /// only: the file is this store's alone.
    claims: Mutex<Claims>,
    /// Held for the store's life: an exclusive lock on the file, so that a second process (or
    /// a second store in this one) cannot open it and send the same deliveries again.
    _exclusive: std::fs::File,
    /// Accounts whose endpoint was last saved paused: claims leave them out.
    paused: Mutex<std::collections::HashSet<AccountId>>,
    /// What one search for due work leaves for the next (see `due`).
    search_hints: due::Hints,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the accounts' settings: they hold passwords.
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("commit", &self.commit)
            .field("max_pending", &self.max_pending)
            .field("wal_limit", &self.wal_limit)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The default [`max_pending`](SqliteStore::max_pending): the most deliveries that may be
    /// pending at once.
    pub const DEFAULT_MAX_PENDING: usize = 1_000_000;
    /// The default [`wal_limit`](SqliteStoreBuilder::wal_limit): 64 MiB.
    pub const DEFAULT_WAL_LIMIT: u64 = 64 * 1024 * 1024;
    /// The lowest [`wal_limit`](SqliteStoreBuilder::wal_limit) accepted: 4 MiB.
    pub const MIN_WAL_LIMIT: u64 = 4 * 1024 * 1024;

    /// Opens (or creates) the outbox file at `path` with group commit and the default
    /// [`max_pending`](SqliteStore::max_pending). See [`SqliteStoreBuilder::open`].
    ///
    /// # Errors
    ///
    /// As [`SqliteStoreBuilder::open`]: [`Error::InvalidConfig`] for an empty path or
    /// `:memory:`, [`Error::Store`] for a file that cannot be opened, is not an outbox, or
    /// comes from a newer release.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        Self::builder(path).open()
    }

    /// Options for opening the outbox file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_path_buf(),
            commit: CommitMode::default(),
            max_pending: Self::DEFAULT_MAX_PENDING,
            wal_limit: Self::DEFAULT_WAL_LIMIT,
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

    /// The most the write-ahead log may hold, in bytes: see
    /// [`SqliteStoreBuilder::wal_limit`].
    pub fn wal_limit(&self) -> u64 {
        self.wal_limit
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
            wal_limit,
        } = options;
        let (max_batch, max_wait) = commit.limits();
        check_options(&path, max_batch, wal_limit)?;
        create_private_file(&path)?;
        let exclusive = lock_exclusively(&path)?;
        let conn = open_write_connection(&path, wal_limit)?;
        let found = Found::read(&conn)?;
        let reader = open_reader(&path)?;
        let checkpoint_conn = open_connection(&path, false)
            .map_err(|e| Error::store("opening the checkpoint connection", e))?;

        let (wake_tx, wake_rx) = mpsc::sync_channel(1);
        // One checkpoint at a time: SQLite refuses a second at once rather than wait for it.
        let checkpointing = Arc::new(Mutex::new(()));
        let background = Arc::clone(&checkpointing);
        let checkpointer = std::thread::Builder::new()
            .name("outbox-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, wake_rx, &background))
            .map_err(|e| Error::store("starting the checkpoint thread", e))?;

        let broken = syncer::Broken::default();
        let syncer = start_syncer(&conn, commit, &path, &broken)?;
        let commits = Arc::new(AtomicU64::new(0));
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let writer = Writer {
            conn,
            max_pending: max_pending as u64,
            pending: found.pending.max(0) as u64,
            max_batch,
            max_wait,
            wake_checkpointer: wake_tx,
            since_checkpoint: 0,
            newest: found.newest.unwrap_or(i64::MIN),
            since_prune: 0,
            expected: max_batch,
            commits: Arc::clone(&commits),
            wal: WalBound::new(&path, wal_limit, checkpointing),
            syncer,
            broken,
            log: log::LogBuffer::default(),
        };
        let writer = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.run(jobs_rx))
            .map_err(|e| Error::store("starting the writer thread", e))?;

        Ok(SqliteStore {
            path,
            commit,
            max_pending,
            wal_limit,
            jobs: Some(jobs_tx),
            writer: Some(writer),
            checkpointer: Some(checkpointer),
            readers: Mutex::new(vec![reader]),
            commits,
            claims: Mutex::new(Claims::default()),
            _exclusive: exclusive,
            paused: Mutex::new(found.paused),
            search_hints: due::Hints::default(),
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

    /// The claims handed out; held while a claim reads the file, so that a claim never sees
    /// a delivery whose outcome was committed but whose claim is not yet forgotten.
    fn claims(&self) -> MutexGuard<'_, Claims> {
        crate::sync::lock(&self.claims)
    }

    /// `skip` and the accounts whose endpoint was last saved paused.
    fn skip_with_paused(&self, skip: &[AccountId]) -> Vec<AccountId> {
        let paused = crate::sync::lock(&self.paused);
        let mut all = skip.to_vec();
        all.extend(paused.iter().filter(|a| !skip.contains(a)).cloned());
        all
    }

    fn insert_deliveries(&self, deliveries: &[NewDelivery]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        for d in deliveries {
            to_nanos(d.created_at)?;
            to_nanos(d.next_attempt_at)?;
        }
        self.write(Op::Insert(deliveries.to_vec())).map(drop)
    }

    /// Checks an attempt's times and queues it to the writer without waiting.
    fn queue_record(
        &self,
        id: &DeliveryId,
        record: &AttemptRecord,
    ) -> Result<Receiver<Result<u64>>> {
        to_nanos(record.at)?;
        if let NextStep::RetryAt(at) = record.next {
            to_nanos(at)?;
        }
        self.queue(Op::Record(id.clone(), record.clone()))
    }

    fn list_deliveries(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>> {
        let states = stored_states(filter.state);
        if states.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut sql = String::with_capacity(512);
        for (i, state) in states.iter().enumerate() {
            if i > 0 {
                sql.push_str(" UNION ALL ");
            }
            sql.push_str(SELECT_DELIVERIES);
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

    fn requeue(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64> {
        to_nanos(now)?;
        self.write(Op::Requeue(filter.clone(), now))
    }

    fn remove_matching(&self, filter: &DeliveryFilter) -> Result<u64> {
        if stored_states(filter.state).is_empty() {
            return Ok(0);
        }
        self.write(Op::Remove(filter.clone()))
    }

    fn read_stats(
        &self,
        account: &AccountId,
        campaign: Option<&CampaignId>,
    ) -> Result<DeliveryStats> {
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

    /// Saves an account's settings or an endpoint's health, compare-and-set: the writer
    /// answers the version written, or 0 for a stale record.
    fn save(&self, op: Op) -> Result<SaveOutcome> {
        Ok(match self.write(op)? {
            0 => SaveOutcome::Stale,
            version => SaveOutcome::Saved { version },
        })
    }
}

/// A settings version as SQLite holds it (rows saved before versions existed hold 0).
fn version_of(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(column)?).unwrap_or(0))
}

/// One settings record (`sql` is `LOAD_ACCOUNT` or `LOAD_HEALTH`) and its version.
fn load_versioned(
    conn: &Connection,
    sql: &str,
    account: &AccountId,
) -> rusqlite::Result<Option<Versioned>> {
    conn.prepare_cached(sql)?
        .query_row([account.as_str()], |row| {
            Ok(Versioned {
                json: row.get(0)?,
                version: version_of(row, 1)?,
            })
        })
        .optional()
}

/// Accounts' settings saved with a version above `after`.
fn accounts_since(conn: &Connection, after: i64) -> rusqlite::Result<Vec<Versioned>> {
    let mut stmt = conn.prepare_cached(ACCOUNTS_SINCE)?;
    let rows = stmt.query_map([after], |row| {
        Ok(Versioned {
            json: row.get(0)?,
            version: version_of(row, 1)?,
        })
    })?;
    rows.collect()
}

/// Endpoints' health saved with a version above `after`.
fn health_since(conn: &Connection, after: i64) -> rusqlite::Result<Vec<(AccountId, Versioned)>> {
    let mut stmt = conn.prepare_cached(HEALTH_SINCE)?;
    let rows = stmt.query_map([after], |row| {
        let health = Versioned {
            json: row.get(1)?,
            version: version_of(row, 2)?,
        };
        Ok((AccountId::new(row.get::<_, String>(0)?), health))
    })?;
    rows.collect()
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

/// The builder's options, checked before any file is touched.
fn check_options(path: &Path, max_batch: usize, wal_limit: u64) -> Result<()> {
    if max_batch == 0 {
        return Err(Error::config("max_batch", "must be at least 1"));
    }
    if wal_limit < SqliteStore::MIN_WAL_LIMIT {
        return Err(Error::config(
            "wal_limit",
            format_args!(
                "must be at least {} bytes (4 MiB)",
                SqliteStore::MIN_WAL_LIMIT
            ),
        ));
    }
    // SQLite reads these as private, in-memory databases: nothing would be durable.
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return Err(Error::config("path", "the outbox needs a file path"));
    }
    Ok(())
}

/// The write connection: the file's schema checked (a newer or foreign file is refused
/// before anything in it changes), WAL mode, the log's bounds, the migrations run.
fn open_write_connection(path: &Path, wal_limit: u64) -> Result<Connection> {
    let mut conn = open_connection(path, true)
        .map_err(|e| Error::store(format!("opening outbox file {}", path.display()), e))?;
    check_schema(&conn, path, MIGRATIONS.len())?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| Error::store("switching to WAL", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Store {
            message: format!("the file system refused WAL mode (journal_mode is {mode})"),
            source: None,
        });
    }
    // Passive checkpoints run on their own connection, off the commit path; the writer
    // truncates the log itself when it passes half the limit (`WalBound`).
    let journal_size_limit = i64::try_from(wal_limit).unwrap_or(i64::MAX);
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .and_then(|()| conn.pragma_update(None, "journal_size_limit", journal_size_limit))
        .map_err(|e| Error::store("configuring the write connection", e))?;
    migrate(&mut conn, path, MIGRATIONS)?;
    Ok(conn)
}

/// What an opened file already holds that the store keeps count of.
struct Found {
    pending: i64,
    /// When the newest delivery was delivered, if any was.
    newest: Option<i64>,
    paused: std::collections::HashSet<AccountId>,
}

impl Found {
    fn read(conn: &Connection) -> Result<Found> {
        let pending: i64 = conn
            .query_row("SELECT coalesce(sum(pending), 0) FROM stats", [], |r| {
                r.get(0)
            })
            .map_err(|e| Error::store("counting pending deliveries", e))?;
        let newest: Option<i64> = conn
            .query_row(NEWEST_DELIVERED, [], |r| r.get(0))
            .map_err(|e| Error::store("reading the newest delivery time", e))?;
        let paused = conn
            .prepare("SELECT account FROM health WHERE paused")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| row.get::<_, String>(0))?
                    .map(|account| account.map(|a| AccountId::new(a.as_str())))
                    .collect::<rusqlite::Result<std::collections::HashSet<_>>>()
            })
            .map_err(|e| Error::store("reading paused endpoints", e))?;
        Ok(Found {
            pending,
            newest,
            paused,
        })
    }
}

/// Group commit fsyncs on a thread of its own (see `syncer`): the write connection's commits
/// only append to the log. One write per commit fsyncs as it commits, and has no such thread.
fn start_syncer(
    conn: &Connection,
    commit: CommitMode,
    path: &Path,
    broken: &syncer::Broken,
) -> Result<Option<(Sender<syncer::Answers>, JoinHandle<()>)>> {
    match commit {
        CommitMode::Group { .. } => {
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| Error::store("configuring the write connection", e))?;
            let (answers_tx, answers_rx) = mpsc::channel();
            let (db, theirs) = (path.to_path_buf(), broken.clone());
            let thread = std::thread::Builder::new()
                .name("outbox-sync".into())
                .spawn(move || syncer::sync_loop(&db, &answers_rx, &theirs))
                .map_err(|e| Error::store("starting the fsync thread", e))?;
            Ok(Some((answers_tx, thread)))
        }
        CommitMode::PerSubmit => Ok(None),
    }
}

/// Takes an exclusive advisory lock (`flock` on unix) on the outbox file for the store's life.
/// SQLite's own locks are POSIX record locks, which this one does not touch. Two processes on
/// one SQLite outbox would each claim the same deliveries and send them twice: the second is
/// refused with [`Error::StoreInUse`].
fn lock_exclusively(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::store(format!("opening outbox file {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::StoreInUse {
            what: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::store(
            format!("locking outbox file {}", path.display()),
            e,
        )),
    }
}
