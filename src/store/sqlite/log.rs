//! The attempts log in the file: read newest first by account (and campaign), pruned oldest
//! first by number. The writer logs each attempt in the transaction that records it.

use std::time::Duration;

use rusqlite::Row;
use rusqlite::types::Type;

use crate::error::Result;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{AttemptCursor, AttemptQuery, AttemptState, LoggedAttempt};

use super::SqliteStore;
use super::rows::{clamp_nanos, from_nanos, sql_limit};
use super::writer::Op;

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
