//! Storing new deliveries: one transaction per batch, each id once, a repeat of a stored or
//! lately delivered id accepted only for the same call result, the pending bound kept.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::store::NewDelivery;

use super::clock::ServerClock;
use super::failure::failed;
use super::ops::{Ctx, retrying};
use super::sql::get;

/// Whether a stored delivery's parts are those of `new`.
pub(super) fn same_parts(
    new: &NewDelivery,
    account: &str,
    campaign: &str,
    body: &[u8],
    enc: &str,
) -> bool {
    new.account.as_str() == account
        && new.campaign.as_str() == campaign
        && new.body.bytes().as_ref() == body
        && new.body.encoding().as_str() == enc
}

pub(super) async fn insert(ctx: Arc<Ctx>, deliveries: Vec<NewDelivery>) -> Result<()> {
    retrying(&ctx, || insert_once(&ctx, &deliveries)).await
}

async fn insert_once(ctx: &Ctx, deliveries: &[NewDelivery]) -> Result<()> {
    let kept = unique_by_id(deliveries)?;
    let columns = Columns::new(&kept, &ctx.clock)?;
    let store_failed = failed("storing deliveries");
    let mut client = ctx.client().await?;
    let tx = client.transaction().await.map_err(&store_failed)?;
    let stmt = tx
        .prepare_cached(&ctx.sql.insert)
        .await
        .map_err(&store_failed)?;
    let rows = tx
        .query(&stmt, &columns.params())
        .await
        .map_err(&store_failed)?;
    let mut stored: HashSet<String> = HashSet::with_capacity(rows.len());
    for row in &rows {
        stored.insert(get::<String>(row, 0)?);
    }
    // The rest were stored already (the same call result, or another: refused), or delivered
    // within the retention (only their ids are kept: left as they are).
    let others: Vec<&str> = columns
        .ids
        .iter()
        .copied()
        .filter(|id| !stored.contains(*id))
        .collect();
    if !others.is_empty() {
        check_repeats(ctx, &tx, &kept, &others).await?;
    }
    if !stored.is_empty() {
        check_room_and_announce(ctx, &tx).await?;
    }
    tx.commit().await.map_err(&store_failed)?;
    ctx.stored(stored.len());
    Ok(())
}

/// One delivery per id, in id order (so concurrent batches lock ids in the same order); a
/// repeat within the batch must be the same call result.
fn unique_by_id(deliveries: &[NewDelivery]) -> Result<Vec<&NewDelivery>> {
    let mut unique: Vec<&NewDelivery> = deliveries.iter().collect();
    unique.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    let mut kept: Vec<&NewDelivery> = Vec::with_capacity(unique.len());
    for d in unique {
        match kept.last() {
            Some(last) if last.id == d.id => {
                if !last.is_same_call_result(d) {
                    return Err(Error::IdConflict {
                        id: d.id.to_string(),
                    });
                }
            }
            _ => kept.push(d),
        }
    }
    Ok(kept)
}

/// The ids of `kept` not inserted (`others`) are repeats: of a stored delivery, or of one
/// delivered lately; each must be the same call result.
///
/// # Errors
///
/// [`Error::IdConflict`] for the first that is another.
async fn check_repeats(
    ctx: &Ctx,
    tx: &Transaction<'_>,
    kept: &[&NewDelivery],
    others: &[&str],
) -> Result<()> {
    let store_failed = failed("storing deliveries");
    let by_id: HashMap<&str, &NewDelivery> = kept.iter().map(|d| (d.id.as_str(), *d)).collect();
    let stmt = tx
        .prepare_cached(&ctx.sql.stored)
        .await
        .map_err(&store_failed)?;
    for row in tx.query(&stmt, &[&others]).await.map_err(&store_failed)? {
        let id: &str = get(&row, 0)?;
        let Some(new) = by_id.get(id) else { continue };
        if !same_parts(
            new,
            get(&row, 1)?,
            get(&row, 2)?,
            get(&row, 3)?,
            get(&row, 4)?,
        ) {
            return Err(Error::IdConflict { id: id.to_owned() });
        }
    }
    // Delivered lately: a no-op for the same call result, refused for another.
    let rows: Vec<&NewDelivery> = others
        .iter()
        .filter_map(|id| by_id.get(id).copied())
        .collect();
    let others = Columns::new(&rows, &ctx.clock)?;
    let stmt = tx
        .prepare_cached(&ctx.sql.delivered_otherwise)
        .await
        .map_err(&store_failed)?;
    let conflicting = tx
        .query(&stmt, &others.params()[..5])
        .await
        .map_err(&store_failed)?;
    if let Some(row) = conflicting.first() {
        return Err(Error::IdConflict {
            id: get::<String>(row, 0)?,
        });
    }
    Ok(())
}

/// Checked once the repeats are known (they take no room): the pending deliveries within
/// the bound, counted over the fleet (two processes inserting at the same moment may each
/// pass with the other's rows unseen); then the notice of due work, delivered to listeners
/// only if the transaction commits.
async fn check_room_and_announce(ctx: &Ctx, tx: &Transaction<'_>) -> Result<()> {
    let store_failed = failed("storing deliveries");
    let stmt = tx
        .prepare_cached(&ctx.sql.pending_total)
        .await
        .map_err(&store_failed)?;
    let pending: i64 = get(&tx.query_one(&stmt, &[]).await.map_err(&store_failed)?, 0)?;
    if usize::try_from(pending).unwrap_or(usize::MAX) > ctx.max_pending {
        return Err(Error::StoreFull {
            max_pending: ctx.max_pending,
        });
    }
    tx.batch_execute(&ctx.sql.notify_due)
        .await
        .map_err(&store_failed)?;
    Ok(())
}

/// New deliveries as the insert statements bind them: one array per column, `$1` to `$7`.
pub(super) struct Columns<'a> {
    pub(super) ids: Vec<&'a str>,
    accounts: Vec<&'a str>,
    campaigns: Vec<&'a str>,
    bodies: Vec<&'a [u8]>,
    encodings: Vec<&'a str>,
    created: Vec<i64>,
    due: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// The columns of `rows`, their times on the server's clock.
    pub(super) fn new(rows: &[&'a NewDelivery], clock: &ServerClock) -> Result<Self> {
        Ok(Columns {
            ids: rows.iter().map(|d| d.id.as_str()).collect(),
            accounts: rows.iter().map(|d| d.account.as_str()).collect(),
            campaigns: rows.iter().map(|d| d.campaign.as_str()).collect(),
            bodies: rows.iter().map(|d| d.body.bytes().as_ref()).collect(),
            encodings: rows.iter().map(|d| d.body.encoding().as_str()).collect(),
            created: rows
                .iter()
                .map(|d| clock.to_server(d.created_at))
                .collect::<Result<_>>()?,
            due: rows
                .iter()
                .map(|d| clock.to_server(d.next_attempt_at))
                .collect::<Result<_>>()?,
        })
    }

    /// `$1` to `$7`.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.ids,
            &self.accounts,
            &self.campaigns,
            &self.bodies,
            &self.encodings,
            &self.created,
            &self.due,
        ]
    }
}
