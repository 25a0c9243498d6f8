//! The file: its schema and migrations, and opening connections to it.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::{Error, Result};

/// `PRAGMA application_id` of an outbox file: "CRWH". A file carrying another id is refused.
const APPLICATION_ID: i32 = 0x4352_5748;
/// How long a connection waits for a lock held by another connection before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache per connection, in KiB (`PRAGMA cache_size = -N`): the file may hold a million
/// pending deliveries, and none of them is loaded into memory wholesale.
const CACHE_SIZE_KIB: i64 = 8 * 1024;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// The schema, one step per version: step `i` takes a file from `user_version = i` to `i + 1`.
/// Steps are only ever appended; a released step never changes.
pub(super) const MIGRATIONS: &[&str] = &[
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6,
];

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

/// Version 2: the ids of delivered deliveries, with when they were delivered, so that a
/// resubmission with the same id is not sent again. Kept for
/// [`DELIVERED_ID_RETENTION`](crate::limits::DELIVERED_ID_RETENTION), then pruned oldest first.
const SCHEMA_V2: &str = "
CREATE TABLE delivered_ids (
    id           TEXT PRIMARY KEY NOT NULL,
    delivered_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX delivered_ids_at ON delivered_ids (delivered_at);
";

/// Version 3: a version on every account's settings and endpoint's health, from one counter
/// shared by both tables, so that [`Settings::changes_since`](crate::store::Settings) finds
/// what was saved after a cursor. Rows saved before keep version 0: they are in every
/// snapshot, and in no change after one.
const SCHEMA_V3: &str = "
ALTER TABLE accounts ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE health ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE health ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
CREATE INDEX accounts_version ON accounts (version);
CREATE INDEX health_version ON health (version);
";

/// Due work found by time over every account at once: what a claim walks, so its cost does
/// not grow with the number of accounts.
const SCHEMA_V4: &str = "
CREATE INDEX deliveries_by_due ON deliveries (next_attempt_at) WHERE state = 'pending';
";

/// Version 5: a delivered id keeps a fingerprint of what was delivered
/// ([`Fingerprint`](crate::store::Fingerprint)), so that the id reused for another call
/// result is refused instead of silently dropped. Ids delivered before keep none: a submit
/// under one of them stays a no-op.
const SCHEMA_V5: &str = "
ALTER TABLE delivered_ids ADD COLUMN fingerprint BLOB;
";

/// Version 6: the attempts log, one row per attempt recorded, numbered in the order logged
/// (the rowid: one more than the highest held; pruning keeps the newest row, so a number is
/// never given twice; `AUTOINCREMENT` would cost a write of its own per attempt, a fifth of
/// p4's rate), read newest first by account (and campaign), pruned oldest first by number.
const SCHEMA_V6: &str = "
CREATE TABLE attempts (
    seq         INTEGER PRIMARY KEY,
    account     TEXT NOT NULL,
    campaign    TEXT NOT NULL,
    delivery    TEXT NOT NULL,
    number      INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('delivered', 'retrying', 'failed')),
    status      INTEGER,
    error       TEXT,
    duration_us INTEGER NOT NULL,
    answer      TEXT NOT NULL
);
CREATE INDEX attempts_by_account ON attempts (account, seq);
CREATE INDEX attempts_by_campaign ON attempts (account, campaign, seq);
";

/// Creates the file with mode 0600 if it does not exist yet, before SQLite opens it (SQLite
/// gives the `-wal` and `-shm` files the same mode).
pub(super) fn create_private_file(path: &Path) -> Result<()> {
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

pub(super) fn open_connection(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -CACHE_SIZE_KIB)?;
    // Plans that do not depend on bound values. Without this, a statement whose `LIMIT` is a
    // parameter (every page of a walk for due work) is compiled again each time it is run:
    // SQLite marks it expired when that parameter is bound, to plan for the new value. That
    // recompiling was a third of the worker's scheduler thread under load.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

pub(super) fn open_reader(path: &Path) -> Result<Connection> {
    open_connection(path, false)
        .and_then(|conn| {
            conn.pragma_update(None, "query_only", true)?;
            Ok(conn)
        })
        .map_err(|e| Error::store("opening a read connection", e))
}

/// Refuses a file written by a newer version of the crate, or one that is not an outbox.
pub(super) fn check_schema(conn: &Connection, path: &Path, latest: usize) -> Result<usize> {
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
pub(super) fn migrate(conn: &mut Connection, path: &Path, steps: &[&str]) -> Result<()> {
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
