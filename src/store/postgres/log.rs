//! The attempts log in the database: written by the statements that record outcomes (see
//! `RECORD_KEPT` and `RECORD_DELIVERED`), read newest first by account (and campaign), pruned
//! oldest first by number without two processes waiting on each other.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::Result;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{AttemptCursor, AttemptQuery, AttemptState, LoggedAttempt};

use super::clock::ServerClock;
use super::failure::failed;
use super::ops::{Ctx, retrying};
use super::sql::get;

pub(super) async fn read(ctx: Arc<Ctx>, query: AttemptQuery) -> Result<Vec<LoggedAttempt>> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    retrying(&ctx, || read_once(&ctx, &query)).await
}

async fn read_once(ctx: &Ctx, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>> {
    let s = ctx.sql.s();
    let before = query
        .before
        .map_or(i64::MAX, |c| i64::try_from(c.get()).unwrap_or(i64::MAX));
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let account = query.account.as_str();
    let campaign = query.campaign.as_ref().map(CampaignId::as_str);
    let state = query.state.map(AttemptState::as_str);
    let sql = read_sql(&s, campaign.is_some(), state.is_some());
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&account, &before];
    if let Some(campaign) = &campaign {
        params.push(campaign);
    }
    if let Some(state) = &state {
        params.push(state);
    }
    params.push(&limit);
    let read_failed = failed("reading the attempts log");
    let client = ctx.client().await?;
    let stmt = client.prepare_cached(&sql).await.map_err(&read_failed)?;
    let rows = client.query(&stmt, &params).await.map_err(&read_failed)?;
    rows.iter()
        .map(|row| attempt_from_row(row, &ctx.clock))
        .collect()
}

/// A page of one account's attempts (`$1`), before a number (`$2`), of one campaign and one
/// state when asked (the next parameters, in that order), at most the last parameter. A
/// statement of its own for each filter, so that the plan (generic, as every statement of the
/// store's sessions) walks the index that serves it: a campaign's page `attempts_by_campaign`,
/// the account's the table's key. A state narrows either walk.
pub(super) fn read_sql(s: &str, campaign: bool, state: bool) -> String {
    let mut sql = format!(
        "SELECT seq, at, delivery, account, campaign, number, state, status, error, \
            duration_us, answer FROM {s}.attempts \
         WHERE account = $1::text AND seq < $2::bigint"
    );
    let mut n = 2;
    if campaign {
        n += 1;
        sql.push_str(&format!(" AND campaign = ${n}::text"));
    }
    if state {
        n += 1;
        sql.push_str(&format!(" AND state = ${n}::text"));
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}::bigint", n + 1));
    sql
}

/// Forgets at most `$2` attempts that finished before `$1`, oldest first, skipping those
/// another process is forgetting: by the rows' addresses, found through `attempts_by_time`, a
/// plan that cannot read the whole table (a join on the key read it: 109 ms at 500,000 rows;
/// this, 2 ms).
pub(super) fn prune_sql(s: &str) -> String {
    format!(
        "DELETE FROM {s}.attempts WHERE ctid = ANY (ARRAY( \
            SELECT ctid FROM {s}.attempts WHERE at < $1::bigint ORDER BY at \
            LIMIT $2::bigint FOR UPDATE SKIP LOCKED))"
    )
}

fn attempt_from_row(row: &Row, clock: &ServerClock) -> Result<LoggedAttempt> {
    let seq: i64 = get(row, 0)?;
    let state: AttemptState = get::<&str>(row, 6)?.parse()?;
    let micros: i64 = get(row, 9)?;
    let status: Option<i32> = get(row, 7)?;
    Ok(LoggedAttempt {
        cursor: AttemptCursor::new(u64::try_from(seq).unwrap_or(0)),
        at: clock.read_stored(get(row, 1)?)?,
        delivery: DeliveryId::new(get::<String>(row, 2)?)?,
        account: AccountId::new(get::<String>(row, 3)?),
        campaign: CampaignId::new(get::<String>(row, 4)?),
        number: u32::try_from(get::<i32>(row, 5)?).unwrap_or(0),
        state,
        status: status.and_then(|s| u16::try_from(s).ok()),
        error: get(row, 8)?,
        duration: Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
        answer: get(row, 10)?,
    })
}

/// Forgets at most `limit` of the attempts that finished before `before` (on this process's
/// clock), oldest first, leaving those another process is forgetting right now to it.
pub(super) async fn prune(ctx: Arc<Ctx>, before: Timestamp, limit: usize) -> Result<u64> {
    if limit == 0 {
        return Ok(0);
    }
    let before = ctx.clock.to_server_clamped(before);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    retrying(&ctx, || async {
        let sql = prune_sql(&ctx.sql.s());
        let prune_failed = failed("forgetting old logged attempts");
        let client = ctx.client().await?;
        let stmt = client.prepare_cached(&sql).await.map_err(&prune_failed)?;
        client
            .execute(&stmt, &[&before, &limit])
            .await
            .map_err(&prune_failed)
    })
    .await
}
