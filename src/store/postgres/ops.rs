//! Each store operation as async work on the store's runtime: one transaction or one
//! statement each.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use jiff::Timestamp;
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{
    AttemptRecord, Claim, ClaimToken, Delivery, DeliveryFilter, DeliveryState, DeliveryStats,
    NewDelivery, NextStep, SettingsSnapshot,
};

use super::schema::SETTINGS_LOCK_SPACE;
use super::sql::{
    Statements, clamp_nanos, delivery_from_row, from_nanos, get, stats_from_rows, to_nanos,
};

/// How long a delivered id is remembered, so that a resubmission is not sent again.
use crate::limits::DELIVERED_ID_RETENTION;

/// The most delivered ids one prune forgets.
const PRUNE_BATCH: i64 = 256;

/// What every operation needs: the pool, the statements, the limits.
#[derive(Debug)]
pub(super) struct Ctx {
    pub(super) pool: Pool,
    pub(super) sql: Statements,
    pub(super) max_pending: usize,
    /// A prune of old delivered ids is under way (one at a time, off the recording path).
    pub(super) pruning: std::sync::atomic::AtomicBool,
}

fn failed(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| Error::store(what, e)
}

impl Ctx {
    pub(super) async fn client(&self) -> Result<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::store("taking a database connection from the pool", e))
    }
}

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
    // One row per id, in id order (so concurrent batches lock ids in the same order); a
    // repeat within the batch must be the same call result.
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
    let columns = Columns::new(&kept)?;
    let ids = &columns.ids;

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
    let others: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !stored.contains(*id))
        .collect();
    if !others.is_empty() {
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
    }
    if !stored.is_empty() {
        // Checked once the repeats are known: they take no room. Counted over the fleet; two
        // processes inserting at the same moment may each pass with the other's rows unseen.
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
        // Delivered to listeners only if the transaction commits.
        tx.batch_execute(&ctx.sql.notify_due)
            .await
            .map_err(&store_failed)?;
    }
    tx.commit().await.map_err(&store_failed)
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
    pub(super) fn new(rows: &[&'a NewDelivery]) -> Result<Self> {
        Ok(Columns {
            ids: rows.iter().map(|d| d.id.as_str()).collect(),
            accounts: rows.iter().map(|d| d.account.as_str()).collect(),
            campaigns: rows.iter().map(|d| d.campaign.as_str()).collect(),
            bodies: rows.iter().map(|d| d.body.bytes().as_ref()).collect(),
            encodings: rows.iter().map(|d| d.body.encoding().as_str()).collect(),
            created: rows
                .iter()
                .map(|d| to_nanos(d.created_at))
                .collect::<Result<_>>()?,
            due: rows
                .iter()
                .map(|d| to_nanos(d.next_attempt_at))
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

pub(super) async fn claim(
    ctx: Arc<Ctx>,
    now: Timestamp,
    limit: usize,
    lease: Duration,
    skip: Vec<String>,
) -> Result<Vec<Claim>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = clamp_nanos(now);
    let lease = i64::try_from(lease.as_nanos()).unwrap_or(i64::MAX);
    let until = now.saturating_add(lease);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let claim_failed = failed("claiming deliveries");
    let client = ctx.client().await?;
    let stmt = client
        .prepare_cached(&ctx.sql.claim)
        .await
        .map_err(&claim_failed)?;
    let rows = client
        .query(&stmt, &[&now, &until, &skip, &limit])
        .await
        .map_err(&claim_failed)?;
    let mut claims = rows
        .iter()
        .map(|row| {
            Ok(Claim {
                delivery: delivery_from_row(row)?,
                token: ClaimToken::new(u64::try_from(get::<i64>(row, 12)?).unwrap_or(0)),
                lease_until: from_nanos(get(row, 13)?)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // UPDATE ... RETURNING keeps no order: earliest due first, as claimed.
    claims.sort_by(|a, b| {
        (a.delivery.next_attempt_at, a.delivery.id.as_str())
            .cmp(&(b.delivery.next_attempt_at, b.delivery.id.as_str()))
    });
    Ok(claims)
}

pub(super) async fn next_due(
    ctx: Arc<Ctx>,
    now: Timestamp,
    skip: Vec<String>,
) -> Result<Option<Timestamp>> {
    let due_failed = failed("finding the next due delivery");
    let client = ctx.client().await?;
    let stmt = client
        .prepare_cached(&ctx.sql.next_due)
        .await
        .map_err(&due_failed)?;
    let row = client
        .query_opt(&stmt, &[&clamp_nanos(now), &skip])
        .await
        .map_err(&due_failed)?;
    row.map(|row| from_nanos(get(&row, 0)?)).transpose()
}

/// One outcome, its times checked before anything is written.
struct Outcome {
    id: DeliveryId,
    token: i64,
    at: i64,
    status: Option<i32>,
    error: Option<String>,
    next: Result<(Option<&'static str>, Option<i64>)>,
}

fn outcome(id: &DeliveryId, token: ClaimToken, record: &AttemptRecord) -> Outcome {
    let at = to_nanos(record.at);
    let next = match record.next {
        NextStep::Delivered => Ok((None, None)),
        NextStep::RetryAt(next) => to_nanos(next).map(|n| (Some("pending"), Some(n))),
        NextStep::Failed => Ok((Some("failed"), None)),
    };
    let (at, next) = match at {
        Ok(at) => (at, next),
        Err(e) => (0, Err(e)),
    };
    Outcome {
        id: id.clone(),
        token: i64::try_from(token.get()).unwrap_or(-1),
        at,
        status: record.status.map(i32::from),
        error: record.error.clone(),
        next,
    }
}

pub(super) async fn record_attempts(
    ctx: Arc<Ctx>,
    outcomes: Vec<(DeliveryId, ClaimToken, AttemptRecord)>,
) -> Vec<Result<()>> {
    let outcomes: Vec<Outcome> = outcomes
        .iter()
        .map(|(id, token, record)| outcome(id, *token, record))
        .collect();
    match record_in_one_transaction(&ctx, &outcomes).await {
        Ok(answers) => {
            let delivered_at = outcomes
                .iter()
                .zip(&answers)
                .filter(|(o, answer)| answer.is_ok() && matches!(o.next, Ok((None, _))))
                .map(|(o, _)| o.at)
                .max();
            if let Some(at) = delivered_at
                && !ctx.pruning.swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                // Off the recording path: the outcomes are answered without waiting for it.
                let ctx = Arc::clone(&ctx);
                drop(tokio::spawn(async move {
                    prune_delivered(&ctx, at).await;
                    ctx.pruning
                        .store(false, std::sync::atomic::Ordering::Release);
                }));
            }
            answers
        }
        Err(e) => {
            // Nothing of the batch was recorded.
            let cause = e.to_string();
            outcomes
                .iter()
                .map(|o| match &o.next {
                    Err(e) => Err(Error::Store {
                        message: e.to_string(),
                        source: None,
                    }),
                    Ok(_) => Err(Error::Store {
                        message: format!(
                            "the transaction holding this outcome was rolled back: {cause}"
                        ),
                        source: None,
                    }),
                })
                .collect()
        }
    }
}

/// Records every outcome in one transaction; an error here means none was recorded. The
/// statements go out together (tokio-postgres pipelines requests made at once), so a batch
/// costs a round trip or two, not one per outcome.
async fn record_in_one_transaction(ctx: &Ctx, outcomes: &[Outcome]) -> Result<Vec<Result<()>>> {
    let record_failed = failed("recording attempts");
    let mut client = ctx.client().await?;
    let tx = client.transaction().await.map_err(&record_failed)?;
    let delivered = tx
        .prepare_cached(&ctx.sql.record_delivered)
        .await
        .map_err(&record_failed)?;
    let kept = tx
        .prepare_cached(&ctx.sql.record_kept)
        .await
        .map_err(&record_failed)?;
    let mut answers: Vec<Option<Result<()>>> = Vec::with_capacity(outcomes.len());
    let mut pending = Vec::with_capacity(outcomes.len());
    for (i, o) in outcomes.iter().enumerate() {
        match &o.next {
            Err(e) => answers.push(Some(Err(Error::Store {
                message: e.to_string(),
                source: None,
            }))),
            Ok((state, retry_at)) => {
                answers.push(None);
                let (tx, delivered, kept) = (&tx, &delivered, &kept);
                pending.push(async move {
                    let row = match state {
                        None => {
                            tx.query_one(delivered, &[&o.id.as_str(), &o.token, &o.at, &o.error])
                                .await
                        }
                        Some(state) => {
                            tx.query_one(
                                kept,
                                &[
                                    &o.id.as_str(),
                                    &o.token,
                                    &o.status,
                                    &o.error,
                                    &o.at,
                                    state,
                                    retry_at,
                                ],
                            )
                            .await
                        }
                    };
                    (i, row)
                });
            }
        }
    }
    let mut unchanged = Vec::new();
    for (i, row) in futures_util::future::join_all(pending).await {
        let changed: i64 = get(&row.map_err(&record_failed)?, 0)?;
        if changed == 1 {
            answers[i] = Some(Ok(()));
        } else {
            unchanged.push(i);
        }
    }
    if !unchanged.is_empty() {
        // Not under this claim: claimed again since (or finished by the newer claim), or
        // removed by an administrator.
        let stmt = tx
            .prepare_cached(&ctx.sql.known)
            .await
            .map_err(&record_failed)?;
        for i in unchanged {
            let id = outcomes[i].id.as_str();
            let known: bool = get(
                &tx.query_one(&stmt, &[&id]).await.map_err(&record_failed)?,
                0,
            )?;
            answers[i] = Some(Err(if known {
                Error::LeaseLost { id: id.to_owned() }
            } else {
                Error::UnknownDelivery(id.to_owned())
            }));
        }
    }
    tx.commit().await.map_err(&record_failed)?;
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every outcome answered"))
        .collect())
}

/// Forgets at most [`PRUNE_BATCH`] ids delivered more than the retention before `newest`. The
/// store has no clock of its own: the newest delivery time it was told stands for now.
async fn prune_delivered(ctx: &Ctx, newest: i64) {
    let retention = i64::try_from(DELIVERED_ID_RETENTION.as_nanos()).unwrap_or(i64::MAX);
    let before = newest.saturating_sub(retention);
    let pruned = async {
        let client = ctx.client().await?;
        let stmt = client
            .prepare_cached(&ctx.sql.prune_delivered)
            .await
            .map_err(failed("forgetting old delivered ids"))?;
        client
            .execute(&stmt, &[&before, &PRUNE_BATCH])
            .await
            .map_err(failed("forgetting old delivered ids"))
    };
    if let Err(e) = pruned.await {
        // The next delivery prunes again; the ids only take room meanwhile.
        tracing::warn!(error = %e, "outbox: forgetting old delivered ids failed; will retry");
    }
}

pub(super) async fn release(ctx: Arc<Ctx>, claims: Vec<(DeliveryId, ClaimToken)>) -> Result<()> {
    if claims.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = claims.iter().map(|(id, _)| id.as_str()).collect();
    let tokens: Vec<i64> = claims
        .iter()
        .map(|(_, t)| i64::try_from(t.get()).unwrap_or(-1))
        .collect();
    let release_failed = failed("releasing claims");
    let client = ctx.client().await?;
    let stmt = client
        .prepare_cached(&ctx.sql.release)
        .await
        .map_err(&release_failed)?;
    client
        .query_one(&stmt, &[&ids, &tokens])
        .await
        .map_err(&release_failed)?;
    Ok(())
}

pub(super) async fn has_pending(ctx: Arc<Ctx>) -> Result<bool> {
    let client = ctx.client().await?;
    let row = client
        .query_one(ctx.sql.has_pending.as_str(), &[])
        .await
        .map_err(failed("looking for pending deliveries"))?;
    get(&row, 0)
}

/// Appends `AND ...` for the filter's campaign and id, numbering parameters after those in
/// `params`, which it extends.
fn push_filter<'a>(sql: &mut String, params: &mut Vec<&'a str>, filter: &'a DeliveryFilter) {
    if let Some(campaign) = &filter.campaign {
        params.push(campaign.as_str());
        sql.push_str(&format!(" AND campaign = ${}", params.len()));
    }
    if let Some(id) = &filter.id {
        params.push(id.as_str());
        sql.push_str(&format!(" AND id = ${}", params.len()));
    }
}

/// The stored state a filter's state names; `None` inside for any; `None` for delivered,
/// which no stored row is.
fn stored_state(state: Option<DeliveryState>) -> Option<Option<&'static str>> {
    match state {
        None => Some(None),
        Some(DeliveryState::Pending) => Some(Some("pending")),
        Some(DeliveryState::Failed) => Some(Some("failed")),
        Some(DeliveryState::Delivered) => None,
    }
}

fn as_params<'a>(params: &'a [&'a str]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

pub(super) async fn list(
    ctx: Arc<Ctx>,
    filter: DeliveryFilter,
    limit: usize,
) -> Result<Vec<Delivery>> {
    let Some(state) = stored_state(filter.state) else {
        return Ok(Vec::new());
    };
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut sql = ctx.sql.select_deliveries();
    sql.push_str(" WHERE account = $1");
    let mut params = vec![filter.account.as_str()];
    push_filter(&mut sql, &mut params, &filter);
    if let Some(state) = state {
        sql.push_str(&format!(" AND state = '{state}'"));
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    sql.push_str(&format!(
        " ORDER BY created_at, id LIMIT ${}::bigint",
        params.len() + 1
    ));
    let mut bound = as_params(&params);
    bound.push(&limit);
    let list_failed = failed("listing deliveries");
    let client = ctx.client().await?;
    let stmt = client.prepare_cached(&sql).await.map_err(&list_failed)?;
    let rows = client.query(&stmt, &bound).await.map_err(&list_failed)?;
    rows.iter().map(delivery_from_row).collect()
}

pub(super) async fn requeue_failed(
    ctx: Arc<Ctx>,
    filter: DeliveryFilter,
    now: Timestamp,
) -> Result<u64> {
    let now = to_nanos(now)?;
    let s = ctx.sql.s();
    let mut params = vec![filter.account.as_str()];
    let mut matching = String::from("account = $1 AND state = 'failed'");
    push_filter(&mut matching, &mut params, &filter);
    let at = params.len() + 1;
    let sql = format!(
        "WITH r AS ( \
            UPDATE {s}.deliveries SET state = 'pending', next_attempt_at = ${at}::bigint, \
                lease_until = NULL, claim_token = NULL \
            WHERE {matching} RETURNING campaign), \
         st AS ( \
            INSERT INTO {s}.stats AS t (account, campaign, pending, failed) \
            SELECT $1::text, campaign, count(*), -count(*) FROM r \
            GROUP BY campaign ORDER BY campaign \
            ON CONFLICT (account, campaign) DO UPDATE SET \
                pending = t.pending + excluded.pending, failed = t.failed + excluded.failed) \
         SELECT n, CASE WHEN n > 0 THEN pg_notify({ch}, 'due')::text END \
         FROM (SELECT count(*) AS n FROM r) c",
        ch = super::sql::quote_literal(&ctx.sql.schema),
    );
    let mut bound = as_params(&params);
    bound.push(&now);
    let requeue_failed = failed("replaying failed deliveries");
    let client = ctx.client().await?;
    let stmt = client.prepare_cached(&sql).await.map_err(&requeue_failed)?;
    let row = client
        .query_one(&stmt, &bound)
        .await
        .map_err(&requeue_failed)?;
    Ok(u64::try_from(get::<i64>(&row, 0)?).unwrap_or(0))
}

pub(super) async fn remove(ctx: Arc<Ctx>, filter: DeliveryFilter) -> Result<u64> {
    let Some(state) = stored_state(filter.state) else {
        return Ok(0);
    };
    let s = ctx.sql.s();
    let mut params = vec![filter.account.as_str()];
    let mut matching = String::from("account = $1");
    push_filter(&mut matching, &mut params, &filter);
    if let Some(state) = state {
        matching.push_str(&format!(" AND state = '{state}'"));
    }
    let sql = format!(
        "WITH r AS (DELETE FROM {s}.deliveries WHERE {matching} RETURNING campaign, state), \
         st AS ( \
            INSERT INTO {s}.stats AS t (account, campaign, pending, failed) \
            SELECT $1::text, campaign, -count(*) FILTER (WHERE state = 'pending'), \
                -count(*) FILTER (WHERE state = 'failed') \
            FROM r GROUP BY campaign ORDER BY campaign \
            ON CONFLICT (account, campaign) DO UPDATE SET \
                pending = t.pending + excluded.pending, failed = t.failed + excluded.failed) \
         SELECT count(*) FROM r"
    );
    let remove_failed = failed("removing deliveries");
    let client = ctx.client().await?;
    let stmt = client.prepare_cached(&sql).await.map_err(&remove_failed)?;
    let row = client
        .query_one(&stmt, &as_params(&params))
        .await
        .map_err(&remove_failed)?;
    Ok(u64::try_from(get::<i64>(&row, 0)?).unwrap_or(0))
}

pub(super) async fn stats(
    ctx: Arc<Ctx>,
    account: AccountId,
    campaign: Option<CampaignId>,
) -> Result<DeliveryStats> {
    let stats_failed = failed("reading delivery counts");
    let client = ctx.client().await?;
    let rows = match &campaign {
        None => {
            let stmt = client
                .prepare_cached(&ctx.sql.stats_account)
                .await
                .map_err(&stats_failed)?;
            client.query(&stmt, &[&account.as_str()]).await
        }
        Some(campaign) => {
            let stmt = client
                .prepare_cached(&ctx.sql.stats_campaign)
                .await
                .map_err(&stats_failed)?;
            client
                .query(&stmt, &[&account.as_str(), &campaign.as_str()])
                .await
        }
    }
    .map_err(&stats_failed)?;
    stats_from_rows(&rows)
}

/// Which settings table a save goes to.
#[derive(Debug, Clone, Copy)]
pub(super) enum SettingsKind {
    Account,
    /// An endpoint's health, and whether it is paused.
    Health {
        paused: bool,
    },
}

pub(super) async fn save_settings(
    ctx: Arc<Ctx>,
    kind: SettingsKind,
    account: AccountId,
    json: String,
) -> Result<()> {
    let (sql, save_failed) = match kind {
        SettingsKind::Account => (&ctx.sql.save_account, failed("saving account settings")),
        SettingsKind::Health { .. } => (&ctx.sql.save_health, failed("saving endpoint health")),
    };
    let mut client = ctx.client().await?;
    let tx = client.transaction().await.map_err(&save_failed)?;
    // Saves take their versions one after another, each committed before the next is taken:
    // a reader that has seen version n has seen every version below it.
    let lock = tx
        .prepare_cached(&ctx.sql.settings_lock)
        .await
        .map_err(&save_failed)?;
    tx.execute(&lock, &[&SETTINGS_LOCK_SPACE, &ctx.sql.schema])
        .await
        .map_err(&save_failed)?;
    let stmt = tx.prepare_cached(sql).await.map_err(&save_failed)?;
    match kind {
        SettingsKind::Account => tx.execute(&stmt, &[&account.as_str(), &json]).await,
        SettingsKind::Health { paused } => {
            tx.execute(&stmt, &[&account.as_str(), &json, &paused])
                .await
        }
    }
    .map_err(&save_failed)?;
    tx.commit().await.map_err(&save_failed)
}

pub(super) async fn settings_since(ctx: Arc<Ctx>, cursor: u64) -> Result<SettingsSnapshot> {
    let load_failed = failed("reading settings");
    let client = ctx.client().await?;
    let stmt = client
        .prepare_cached(&ctx.sql.settings_since)
        .await
        .map_err(&load_failed)?;
    let since = i64::try_from(cursor).unwrap_or(i64::MAX);
    let rows = client.query(&stmt, &[&since]).await.map_err(&load_failed)?;
    let mut snapshot = SettingsSnapshot {
        cursor,
        ..SettingsSnapshot::default()
    };
    for row in &rows {
        let version = u64::try_from(get::<i64>(row, 3)?).unwrap_or(0);
        snapshot.cursor = snapshot.cursor.max(version);
        let json: String = get(row, 2)?;
        if get::<&str>(row, 0)? == "a" {
            snapshot.accounts.push(json);
        } else {
            snapshot
                .health
                .push((AccountId::new(get::<String>(row, 1)?), json));
        }
    }
    Ok(snapshot)
}
