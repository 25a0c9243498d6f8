//! The attempts log in the file: read newest first by account (and campaign), pruned oldest
//! first by number.
//!
//! The writer does not write an attempt's row in the transaction that records its outcome: it
//! keeps the rows of committed outcomes in a [`LogBuffer`] and writes them together, at most
//! [`FLUSH_ROWS`] or [`FLUSH_AFTER`] later, in a transaction of their own. Written with each
//! outcome, the table and its two indexes each dirtied a page of their own per group commit,
//! whatever its size: a fifth of p4's rate. A read of the log first asks the writer to write
//! what it holds (`Op::FlushLog`), so it lists every attempt recorded before it; a crash may
//! lose the last moment of the log, never an outcome.

use std::time::{Duration, Instant};

use rusqlite::types::Type;
use rusqlite::{Connection, Row, params};

use crate::error::Result;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{AttemptCursor, AttemptQuery, AttemptState, LoggedAttempt};

use super::SqliteStore;
use super::rows::{clamp_nanos, from_nanos, sql_limit};
use super::writer::Op;

/// The writer writes the rows it holds once it holds this many...
pub(super) const FLUSH_ROWS: usize = 512;
/// ...or once the oldest has waited this long.
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(250);
/// The most rows it holds while writing them fails (a full disk): past it the oldest are
/// dropped, with a warning. Outcomes are never held back for the log.
const HELD_AT_MOST: usize = 64 * 1024;

/// Logs one attempt (see the `attempts` table).
const LOG_ATTEMPT: &str = "INSERT INTO attempts (account, campaign, delivery, number, at, \
    state, status, error, duration_us, answer) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// One attempt's row, as the writer holds it until it writes it.
pub(super) struct LogRow {
    pub(super) account: String,
    pub(super) campaign: String,
    pub(super) delivery: String,
    pub(super) number: u32,
    pub(super) at: i64,
    pub(super) state: AttemptState,
    pub(super) status: Option<u16>,
    pub(super) error: Option<String>,
    pub(super) duration_us: i64,
    pub(super) answer: String,
}

/// The rows of the writer's current transaction, and those of committed ones not written yet.
#[derive(Default)]
pub(super) struct LogBuffer {
    /// Rows of outcomes applied in the transaction being built, in order.
    open: Vec<LogRow>,
    /// Rows of committed outcomes, in order, waiting to be written.
    ready: Vec<LogRow>,
    /// When the oldest of `ready` was committed.
    since: Option<Instant>,
    /// A read asked for everything to be written.
    asked: bool,
}

impl LogBuffer {
    /// Where the open rows end now: [`truncate`](Self::truncate) goes back to it.
    pub(super) fn mark(&self) -> usize {
        self.open.len()
    }

    /// Holds the row of an outcome applied in the open transaction.
    pub(super) fn stage(&mut self, row: LogRow) {
        self.open.push(row);
    }

    /// Drops the rows staged after `mark`: their outcomes were rolled back.
    pub(super) fn truncate(&mut self, mark: usize) {
        self.open.truncate(mark);
    }

    /// The open transaction committed: its rows are ready to be written.
    pub(super) fn committed(&mut self) {
        if !self.open.is_empty() && self.ready.is_empty() {
            self.since = Some(Instant::now());
        }
        self.ready.append(&mut self.open);
    }

    /// A read wants every committed row written before it is answered.
    pub(super) fn ask(&mut self) {
        self.asked = true;
    }

    /// Whether the ready rows are to be written now.
    pub(super) fn due(&self) -> bool {
        self.asked
            || (!self.ready.is_empty()
                && (self.ready.len() >= FLUSH_ROWS
                    || self.since.is_some_and(|s| s.elapsed() >= FLUSH_AFTER)))
    }

    /// How long until the oldest ready row is due; `None` when none is held.
    pub(super) fn wait(&self) -> Option<Duration> {
        self.since
            .filter(|_| !self.ready.is_empty())
            .map(|s| FLUSH_AFTER.saturating_sub(s.elapsed()))
    }

    /// Writes the ready rows in one transaction of their own. On failure they are kept (at
    /// most [`HELD_AT_MOST`]) for the next time.
    pub(super) fn write(&mut self, conn: &Connection) {
        self.asked = false;
        if self.ready.is_empty() {
            return;
        }
        let written = write_rows(conn, &self.ready);
        match written {
            Ok(()) => {
                self.ready.clear();
                self.since = None;
            }
            Err(e) => {
                let over = self.ready.len().saturating_sub(HELD_AT_MOST);
                if over > 0 {
                    self.ready.drain(..over);
                }
                tracing::warn!(error = %e, held = self.ready.len(), dropped = over, "writing the attempts log failed; will retry");
            }
        }
    }
}

/// Inserts `rows` in one transaction of their own; rolled back on error.
fn write_rows(conn: &Connection, rows: &[LogRow]) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let inserted = (|| {
        let mut stmt = conn.prepare_cached(LOG_ATTEMPT)?;
        for r in rows {
            stmt.execute(params![
                r.account,
                r.campaign,
                r.delivery,
                r.number,
                r.at,
                r.state.as_str(),
                r.status,
                r.error,
                r.duration_us,
                r.answer,
            ])?;
        }
        conn.prepare_cached("COMMIT")?.execute([]).map(drop)
    })();
    if inserted.is_err() && !conn.is_autocommit() {
        let _ = conn
            .prepare_cached("ROLLBACK")
            .and_then(|mut s| s.execute([]));
    }
    inserted
}

/// Forgets, of the `?2` oldest logged attempts, those that finished before `?1`, but the
/// newest of all: the next attempt's number is one more than the highest held, so keeping it
/// keeps numbers from being given twice.
pub(super) const PRUNE_ATTEMPTS: &str = "DELETE FROM attempts WHERE seq IN \
    (SELECT seq FROM (SELECT seq, at FROM attempts ORDER BY seq LIMIT ?2) WHERE at < ?1 \
        AND seq < (SELECT max(seq) FROM attempts))";

const COLUMNS: &str = "SELECT seq, at, delivery, account, campaign, number, state, status, \
    error, duration_us, answer FROM attempts WHERE account = ?1 AND seq < ?2";

impl SqliteStore {
    pub(super) fn read_attempts(&self, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        // Every attempt recorded before this read is written first. A writer that stopped or
        // broke holds nothing more to write: what the file has is the log.
        if let Err(e) = self.write(Op::FlushLog) {
            tracing::debug!(error = %e, "the attempts log could not be brought up to date first");
        }
        let mut sql = String::from(COLUMNS);
        if query.campaign.is_some() {
            sql.push_str(" AND campaign = ?3");
        }
        if query.state.is_some() {
            sql.push_str(" AND state = ?4");
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?5");
        let before = query
            .before
            .map_or(i64::MAX, |c| i64::try_from(c.get()).unwrap_or(i64::MAX));
        self.read("reading the attempts log", |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            stmt.raw_bind_parameter(1, query.account.as_str())?;
            stmt.raw_bind_parameter(2, before)?;
            if let Some(campaign) = &query.campaign {
                stmt.raw_bind_parameter(3, campaign.as_str())?;
            }
            if let Some(state) = query.state {
                stmt.raw_bind_parameter(4, state.as_str())?;
            }
            stmt.raw_bind_parameter(5, sql_limit(query.limit))?;
            let mut rows = stmt.raw_query();
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                found.push(attempt_from_row(row)?);
            }
            Ok(found)
        })
    }

    pub(super) fn prune_logged(&self, before: jiff::Timestamp, limit: usize) -> Result<u64> {
        if limit == 0 {
            return Ok(0);
        }
        let before = clamp_nanos(before);
        self.write(Op::PruneAttempts(before, limit))
    }
}

fn attempt_from_row(row: &Row<'_>) -> rusqlite::Result<LoggedAttempt> {
    let conversion = |column, e: crate::Error| {
        rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e))
    };
    let seq: i64 = row.get(0)?;
    let state: AttemptState = row
        .get_ref(6)?
        .as_str()?
        .parse()
        .map_err(|e| conversion(6, e))?;
    let micros: i64 = row.get(9)?;
    Ok(LoggedAttempt {
        cursor: AttemptCursor::new(u64::try_from(seq).unwrap_or(0)),
        at: from_nanos(row.get(1)?, 1)?,
        delivery: DeliveryId::new(row.get::<_, String>(2)?).map_err(|e| conversion(2, e))?,
        account: AccountId::new(row.get::<_, String>(3)?),
        campaign: CampaignId::new(row.get::<_, String>(4)?),
        number: row.get(5)?,
        state,
        status: row.get(7)?,
        error: row.get(8)?,
        duration: Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
        answer: row.get(10)?,
    })
}
