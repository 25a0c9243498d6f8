//! Each store operation as async work on the store's runtime: one transaction or one
//! statement each.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use jiff::Timestamp;
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{
    AttemptRecord, Claim, ClaimToken, Delivery, DeliveryFilter, DeliveryState, DeliveryStats,
    NewDelivery, NextStep,
};

use super::clock::ServerClock;
use super::failure::{self, Kind, Shared, failed};
use super::sql::{Statements, delivery_from_row, get, stats_from_rows};

/// How long a delivered id is remembered, so that a resubmission is not sent again.
use crate::limits::DELIVERED_ID_RETENTION;

/// The most delivered ids one prune forgets: under [`limits::PRUNE_BATCH`](crate::limits::PRUNE_BATCH).
const PRUNE_BATCH: i64 = 256;
const _: () = assert!(PRUNE_BATCH as usize <= crate::limits::PRUNE_BATCH);

/// What every operation needs: the pool, the statements, the limits.
#[derive(Debug)]
pub(super) struct Ctx {
    pub(super) pool: Pool,
    pub(super) sql: Statements,
    pub(super) max_pending: usize,
    /// The time bounds of every operation.
    pub(super) bounds: Bounds,
    /// The database's clock, which every stored time is on (see [`super::clock`]).
    pub(super) clock: ServerClock,
    /// A prune of old delivered ids is under way (one at a time, off the recording path).
    pub(super) pruning: std::sync::atomic::AtomicBool,
    /// The schema's pending deliveries as last counted (by the fold, see [`fold`])...
    pub(super) pending_counted: AtomicI64,
    /// ...and those this process stored since: together, how a group of submits knows it is
    /// far from `max_pending` without counting (see [`Ctx::far_from_full`]).
    pub(super) stored_since: AtomicI64,
}

/// How often a transaction the server broke off as a deadlock victim or a serialization
/// failure is run again before its error is answered.
const TRANSIENT_TRIES: u32 = 8;

/// The first pause before trying again on a fresh connection; doubled after each try, up to
/// [`BROKEN_PAUSE_MAX`], jittered.
const BROKEN_PAUSE: Duration = Duration::from_millis(50);
const BROKEN_PAUSE_MAX: Duration = Duration::from_secs(1);

/// The store's time bounds (see the builder's methods of the same names).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// How long an operation that failed on a broken connection is tried again.
    pub(super) retry_for: Duration,
    /// The server's limit on one statement (`SET statement_timeout` on each connection);
    /// zero for none.
    pub(super) statement_timeout: Duration,
    /// The client's deadline on a whole call, its tries included.
    pub(super) call_timeout: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            retry_for: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(15),
            call_timeout: Duration::from_secs(45),
        }
    }
}

impl Bounds {
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a `call_timeout` of zero.
    pub(super) fn check(&self) -> Result<()> {
        if self.call_timeout.is_zero() {
            return Err(Error::config("call_timeout", "must be more than zero"));
        }
        Ok(())
    }

    /// The `SET`s each new connection runs: the server's own bound on every statement, and
    /// generic plans for every prepared statement.
    ///
    /// Every statement of the store is prepared, and its right plan does not depend on its
    /// parameters' values: a walk of the due index's head, lookups by key. A custom plan
    /// depends on the table's statistics instead, and with none (a fresh schema filled faster
    /// than autovacuum's first pass, a server with autovacuum off) the server reads every
    /// pending row into a bitmap and sorts them to find the head (measured: 12 ms a claim at
    /// 50,000 pending, growing with the backlog, against 0.1 ms for the index walk). The
    /// generic plan walks the index whatever the statistics.
    pub(super) fn session_setup(&self) -> String {
        format!(
            "SET statement_timeout = {}; SET plan_cache_mode = force_generic_plan",
            self.statement_timeout.as_millis().min(i32::MAX as u128)
        )
    }
}

/// What each new pooled connection runs before its first use: the session's
/// `statement_timeout` and plan cache mode ([`Bounds::session_setup`]). A connection that
/// cannot run it is not used.
pub(super) fn session_hook(bounds: Bounds) -> deadpool_postgres::Hook {
    let setup = bounds.session_setup();
    deadpool_postgres::Hook::async_fn(move |client, _| {
        let setup = setup.clone();
        Box::pin(async move {
            client
                .batch_execute(&setup)
                .await
                .map_err(deadpool_postgres::HookError::Backend)
        })
    })
}

/// Runs `work` (one whole transaction or statement, idempotent or fenced by claim tokens)
/// again while it fails in a way running it again may pass:
///
/// - broken off by the server as a deadlock victim or a serialization failure: again after a
///   jittered pause of a few milliseconds that grows with each try, up to
///   [`TRANSIENT_TRIES`] times;
/// - on a connection that broke or could not be made (a restart, a failover,
///   `pg_terminate_backend`, the server starting up or shutting down): again on a fresh
///   connection (the pool drops closed ones), after a jittered pause from [`BROKEN_PAUSE`]
///   doubling to [`BROKEN_PAUSE_MAX`], for as long as the store's `retry_for` allows.
///
/// Only then is the last failure answered, its message saying how long it was tried. A statement cancelled by the server's `statement_timeout`
/// is answered as [`Error::StoreTimeout`].
pub(super) async fn retrying<T, F>(ctx: &Ctx, mut work: impl FnMut() -> F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    let mut transient_tries = 0;
    let mut broken_tries = 0u32;
    let mut broken_since: Option<tokio::time::Instant> = None;
    loop {
        let e = match work().await {
            Ok(done) => return Ok(done),
            Err(e) => e,
        };
        let pause = match failure::kind(&e) {
            Kind::Transient if transient_tries < TRANSIENT_TRIES => {
                transient_tries += 1;
                let most = 2u64 << transient_tries.min(7);
                Duration::from_millis(1 + getrandom::u64().unwrap_or(0) % most)
            }
            Kind::Broken => {
                let since = *broken_since.get_or_insert_with(tokio::time::Instant::now);
                let doubled = BROKEN_PAUSE.saturating_mul(1 << broken_tries.min(5));
                let most = doubled.min(BROKEN_PAUSE_MAX);
                let left = ctx.bounds.retry_for.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return Err(match e {
                        Error::Store { message, source } if broken_tries > 0 => Error::Store {
                            message: format!(
                                "{message} (still failing after {} tries on fresh connections \
                                 over {:.1} s; retry_for is {:?})",
                                broken_tries + 1,
                                since.elapsed().as_secs_f64(),
                                ctx.bounds.retry_for
                            ),
                            source,
                        },
                        e => e,
                    });
                }
                broken_tries += 1;
                // The last try comes as retry_for runs out.
                let pause = most / 2
                    + Duration::from_millis(
                        getrandom::u64().unwrap_or(0) % (most.as_millis() as u64 / 2 + 1),
                    );
                pause.min(left)
            }
            Kind::StatementTimeout => {
                tracing::debug!(error = %crate::error::error_chain(&e), "outbox: statement cancelled by statement_timeout");
                return Err(Error::StoreTimeout {
                    bound: "statement_timeout",
                    limit: ctx.bounds.statement_timeout,
                });
            }
            _ => return Err(e),
        };
        tracing::debug!(error = %crate::error::error_chain(&e), transient_tries, broken_tries, "outbox: running the operation again");
        tokio::time::sleep(pause).await;
    }
}

/// The same error for each of `n` callers (see [`Shared::again`]); for one, the error
/// itself.
pub(super) fn each_failed(e: Error, n: usize, what: &str) -> Vec<Result<()>> {
    if n == 1 {
        return vec![Err(e)];
    }
    let shared = Shared(Arc::new(e));
    (0..n).map(|_| Err(shared.again(what))).collect()
}

impl Ctx {
    /// Records `n` deliveries this process stored (after they committed).
    pub(super) fn stored(&self, n: usize) {
        self.stored_since
            .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Ordering::AcqRel);
    }

    /// Whether `n` more deliveries surely fit under `max_pending` by the estimate, with a
    /// margin of a quarter of it for what other processes stored since the last count. When
    /// not, the insert counts exactly (the estimate may be stale either way).
    pub(super) fn far_from_full(&self, n: usize) -> bool {
        let max = i64::try_from(self.max_pending).unwrap_or(i64::MAX);
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.pending_counted
            .load(Ordering::Acquire)
            .saturating_add(self.stored_since.load(Ordering::Acquire))
            .saturating_add(n)
            .saturating_add(max / 4)
            <= max
    }

    pub(super) async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| {
            Error::store(
                "taking a database connection from the pool",
                failure::DbFailure::of_pool(e),
            )
        })
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
    retrying(&ctx, || insert_once(&ctx, &deliveries)).await
}

async fn insert_once(ctx: &Ctx, deliveries: &[NewDelivery]) -> Result<()> {
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
    let columns = Columns::new(&kept, &ctx.clock)?;
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
    tx.commit().await.map_err(&store_failed)?;
    ctx.stored(stored.len());
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

/// How many rows of the due order a claim or `next_due` reads before it walks account by
/// account instead: room for the fleet's leased rows and a few accounts at their bound,
/// whatever the backlog.
fn head_budget(limit: i64) -> i64 {
    limit.saturating_mul(4).saturating_add(64)
}

/// What both walks of a claim bind (`$1`-`$7`).
struct ClaimParams {
    now: i64,
    until: i64,
    skip: Vec<String>,
    /// Slots per endpoint over the fleet; `None`: no bound.
    per_account: Option<i64>,
    busy_accounts: Vec<String>,
    busy_counts: Vec<i64>,
    /// Tokens of this process's claims whose requests finished: their slots are free here.
    finished: Vec<i64>,
}

impl ClaimParams {
    fn bind<'a>(&'a self, limit: &'a i64) -> Vec<&'a (dyn ToSql + Sync)> {
        vec![
            &self.now,
            &self.until,
            &self.skip,
            limit,
            &self.per_account,
            &self.busy_accounts,
            &self.busy_counts,
            &self.finished,
        ]
    }

    /// Counts `claims` as in flight, for the next walk.
    fn take(&mut self, claims: &[Claim]) {
        for claim in claims {
            let account = claim.delivery.account.as_str();
            match self.busy_accounts.iter().position(|a| a == account) {
                Some(i) => self.busy_counts[i] += 1,
                None => {
                    self.busy_accounts.push(account.to_owned());
                    self.busy_counts.push(1);
                }
            }
        }
    }
}

/// The most slots one endpoint gets in the schema: a larger per-account bound is no bound
/// (the worker's own bound is far smaller; this keeps a stray bound from making millions of
/// rows).
const MAX_ENDPOINT_SLOTS: usize = 4_096;

/// What one walk of a claim answered.
struct Walked {
    claims: Vec<Claim>,
    /// How many rows the head read (the first walk only).
    head_rows: i64,
    /// Accounts among the candidates with no endpoint slots yet.
    missing: Vec<String>,
}

/// Runs one walk of a claim (`budget`: the head's size, for the first walk) for at most
/// `limit` deliveries.
async fn walk(
    ctx: &Ctx,
    client: &Object,
    sql: &str,
    params: &ClaimParams,
    limit: i64,
    budget: Option<i64>,
) -> Result<Walked> {
    let claim_failed = failed("claiming deliveries");
    let stmt = client.prepare_cached(sql).await.map_err(&claim_failed)?;
    let mut bound = params.bind(&limit);
    if let Some(budget) = &budget {
        bound.push(budget);
    }
    let rows = client.query(&stmt, &bound).await.map_err(&claim_failed)?;
    // The claimed rows' 14 columns and their slot, then the head's size (first walk), then
    // the accounts.
    let missing_at = if budget.is_some() { 16 } else { 15 };
    let first = rows.first();
    Ok(Walked {
        head_rows: match (first, budget) {
            (Some(row), Some(_)) => get(row, 15)?,
            _ => 0,
        },
        missing: first
            .map(|row| get::<Option<Vec<String>>>(row, missing_at))
            .transpose()?
            .flatten()
            .unwrap_or_default(),
        claims: rows
            .iter()
            .filter(|row| matches!(row.try_get::<_, Option<&str>>(0), Ok(Some(_))))
            .map(|row| claim_from_row(row, &ctx.clock))
            .collect::<Result<Vec<_>>>()?,
    })
}

/// Runs a walk, and once more after making the endpoint slots it found missing.
async fn walk_making_slots(
    ctx: &Ctx,
    client: &Object,
    sql: &str,
    params: &ClaimParams,
    limit: i64,
    budget: Option<i64>,
) -> Result<Walked> {
    let mut walked = walk(ctx, client, sql, params, limit, budget).await?;
    if let (false, Some(slots)) = (walked.missing.is_empty(), params.per_account) {
        let stmt = client
            .prepare_cached(&ctx.sql.ensure_slots)
            .await
            .map_err(failed("making endpoint slots"))?;
        let slots = i32::try_from(slots).unwrap_or(i32::MAX);
        client
            .execute(&stmt, &[&walked.missing, &slots])
            .await
            .map_err(failed("making endpoint slots"))?;
        let wanted = limit - walked.claims.len() as i64;
        if wanted > 0 {
            let again = walk(ctx, client, sql, params, wanted, budget).await?;
            walked.claims.extend(again.claims);
            walked.head_rows = walked.head_rows.max(again.head_rows);
        }
    }
    Ok(walked)
}

/// A claimed row (the lease's columns after the delivery's).
fn claim_from_row(row: &tokio_postgres::Row, clock: &ServerClock) -> Result<Claim> {
    Ok(Claim {
        delivery: delivery_from_row(row, clock)?,
        token: ClaimToken::new(u64::try_from(get::<i64>(row, 12)?).unwrap_or(0)),
        lease_until: clock.read_stored(get(row, 13)?)?,
    })
}

/// What a claim asks for, as owned values for the store's runtime.
pub(super) struct ClaimAsk {
    pub(super) now: Timestamp,
    pub(super) limit: usize,
    pub(super) lease: Duration,
    pub(super) skip: Vec<String>,
    pub(super) per_account: Option<usize>,
    pub(super) in_flight: Vec<(String, usize)>,
    pub(super) finished: Vec<ClaimToken>,
}

/// Claims in two walks: the head of the due order ([`CLAIM_HEAD`](super::sql)); then, only
/// when the head was full of rows it could not take and more are wanted, account by account.
pub(super) async fn claim(ctx: Arc<Ctx>, ask: ClaimAsk) -> Result<Vec<Claim>> {
    retrying(&ctx, || claim_once(&ctx, &ask)).await
}

async fn claim_once(ctx: &Ctx, ask: &ClaimAsk) -> Result<Vec<Claim>> {
    if ask.limit == 0 {
        return Ok(Vec::new());
    }
    let now = ctx.clock.to_server_clamped(ask.now);
    let lease = i64::try_from(ask.lease.as_nanos()).unwrap_or(i64::MAX);
    let limit = i64::try_from(ask.limit).unwrap_or(i64::MAX);
    // The fleet's slots count every process's attempts, this one's included; the process's
    // own count (`in_flight`) bounds it too, as in a store of one process.
    let mut params = ClaimParams {
        now,
        until: now.saturating_add(lease),
        skip: ask.skip.clone(),
        per_account: ask
            .per_account
            .filter(|n| *n <= MAX_ENDPOINT_SLOTS)
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        busy_accounts: ask.in_flight.iter().map(|(a, _)| a.clone()).collect(),
        busy_counts: ask
            .in_flight
            .iter()
            .map(|(_, n)| i64::try_from(*n).unwrap_or(i64::MAX))
            .collect(),
        finished: ask
            .finished
            .iter()
            .filter_map(|t| i64::try_from(t.get()).ok())
            .collect(),
    };
    let client = ctx.client().await?;
    let budget = head_budget(limit);
    let head = walk_making_slots(
        ctx,
        &client,
        &ctx.sql.claim_head,
        &params,
        limit,
        Some(budget),
    )
    .await?;
    let mut claims = head.claims;
    let wanted = limit - claims.len() as i64;
    if wanted > 0 && head.head_rows >= budget {
        params.take(&claims);
        let more = walk_making_slots(
            ctx,
            &client,
            &ctx.sql.claim_by_account,
            &params,
            wanted,
            None,
        )
        .await?;
        claims.extend(more.claims);
    }
    // UPDATE ... RETURNING keeps no order: earliest due first, as claimed.
    claims.sort_by(|a, b| {
        (a.delivery.next_attempt_at, a.delivery.id.as_str())
            .cmp(&(b.delivery.next_attempt_at, b.delivery.id.as_str()))
    });
    Ok(claims)
}

/// The same two walks as [`claim`], for the earliest claimable due time.
pub(super) async fn next_due(
    ctx: Arc<Ctx>,
    now: Timestamp,
    skip: Vec<String>,
) -> Result<Option<Timestamp>> {
    retrying(&ctx, || next_due_once(&ctx, now, &skip)).await
}

async fn next_due_once(ctx: &Ctx, now: Timestamp, skip: &[String]) -> Result<Option<Timestamp>> {
    let due_failed = failed("finding the next due delivery");
    let client = ctx.client().await?;
    let head = client
        .prepare_cached(&ctx.sql.next_due_head)
        .await
        .map_err(&due_failed)?;
    let now = ctx.clock.to_server_clamped(now);
    // As many rows as a full claim's head reads.
    let budget = head_budget(64);
    let row = client
        .query_one(&head, &[&now, &skip, &budget])
        .await
        .map_err(&due_failed)?;
    let mut earliest: Option<i64> = get(&row, 0)?;
    if earliest.is_none() && get::<i64>(&row, 1)? >= budget {
        let by_account = client
            .prepare_cached(&ctx.sql.next_due_by_account)
            .await
            .map_err(&due_failed)?;
        let row = client
            .query_one(&by_account, &[&now, &skip])
            .await
            .map_err(&due_failed)?;
        earliest = get(&row, 0)?;
    }
    earliest.map(|n| ctx.clock.read_stored(n)).transpose()
}

/// One outcome, its times checked before anything is written.
struct Outcome {
    id: DeliveryId,
    token: i64,
    at: i64,
    status: Option<i32>,
    error: Option<String>,
    next: Result<(Option<&'static str>, Option<i64>), Shared>,
}

/// The outcome of `record`, its times on the server's clock.
fn outcome(
    id: &DeliveryId,
    token: ClaimToken,
    record: &AttemptRecord,
    clock: &ServerClock,
) -> Outcome {
    let at = clock.to_server(record.at);
    let next = match record.next {
        NextStep::Delivered => Ok((None, None)),
        NextStep::RetryAt(next) => clock.to_server(next).map(|n| (Some("pending"), Some(n))),
        NextStep::Failed => Ok((Some("failed"), None)),
    };
    let (at, next) = match at {
        Ok(at) => (at, next),
        Err(e) => (0, Err(e)),
    };
    let next = next.map_err(|e| Shared(Arc::new(e)));
    Outcome {
        id: id.clone(),
        token: i64::try_from(token.get()).unwrap_or(-1),
        at,
        status: record.status.map(i32::from),
        error: record.error.clone(),
        next,
    }
}

/// One statement's share of a batch of outcomes, as the arrays it binds (see `OUTCOMES` in
/// the statements), and where each stands in the batch.
#[derive(Default)]
struct Batch {
    index: Vec<usize>,
    ids: Vec<String>,
    tokens: Vec<i64>,
    at: Vec<i64>,
    errors: Vec<Option<String>>,
    statuses: Vec<Option<i32>>,
    states: Vec<Option<&'static str>>,
    retry_at: Vec<Option<i64>>,
}

impl Batch {
    fn push(
        &mut self,
        index: usize,
        o: &Outcome,
        state: Option<&'static str>,
        retry_at: Option<i64>,
    ) {
        self.index.push(index);
        self.ids.push(o.id.as_str().to_owned());
        self.tokens.push(o.token);
        self.at.push(o.at);
        self.errors.push(o.error.clone());
        self.statuses.push(o.status);
        self.states.push(state);
        self.retry_at.push(retry_at);
    }

    /// Runs `sql` over the batch in `tx`: the ids it changed.
    async fn record(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        sql: &str,
    ) -> Result<Vec<String>> {
        if self.ids.is_empty() {
            return Ok(Vec::new());
        }
        let record_failed = failed("recording attempts");
        let stmt = tx.prepare_cached(sql).await.map_err(&record_failed)?;
        let rows = tx
            .query(
                &stmt,
                &[
                    &self.ids,
                    &self.tokens,
                    &self.at,
                    &self.errors,
                    &self.statuses,
                    &self.states,
                    &self.retry_at,
                ],
            )
            .await
            .map_err(&record_failed)?;
        rows.iter().map(|row| get::<String>(row, 0)).collect()
    }
}

pub(super) async fn record_attempts(
    ctx: Arc<Ctx>,
    outcomes: Vec<(DeliveryId, ClaimToken, AttemptRecord)>,
) -> Vec<Result<()>> {
    let outcomes: Vec<Outcome> = outcomes
        .iter()
        .map(|(id, token, record)| outcome(id, *token, record, &ctx.clock))
        .collect();
    match retrying(&ctx, || record_in_one_transaction(&ctx, &outcomes)).await {
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
            // Nothing of the batch was recorded: each outcome is answered with the whole
            // cause (a time it could not hold, or why the transaction failed).
            let shared = Shared(Arc::new(e));
            outcomes
                .iter()
                .map(|o| match &o.next {
                    Err(e) => Err(Error::store("this outcome cannot be recorded", e.clone())),
                    Ok(_) => Err(shared.again("the transaction holding this outcome failed")),
                })
                .collect()
        }
    }
}

/// Records every outcome in one transaction; an error here means none was recorded. The
/// delivered ones go in one statement and the rest in another, sent together (tokio-postgres
/// pipelines requests made at once): a batch costs a round trip or two and two statements,
/// whatever its size.
async fn record_in_one_transaction(ctx: &Ctx, outcomes: &[Outcome]) -> Result<Vec<Result<()>>> {
    let record_failed = failed("recording attempts");
    let mut client = ctx.client().await?;
    let tx = client.transaction().await.map_err(&record_failed)?;
    let mut answers: Vec<Option<Result<()>>> = (0..outcomes.len()).map(|_| None).collect();
    let (mut delivered, mut kept) = (Batch::default(), Batch::default());
    let mut seen = HashSet::with_capacity(outcomes.len());
    let mut unchanged = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        match &o.next {
            Err(e) => {
                answers[i] = Some(Err(Error::store(
                    "this outcome cannot be recorded",
                    e.clone(),
                )))
            }
            // A second outcome for one id in a batch is not under its current claim: the
            // first one ends that claim. It is answered as any other outcome that changed
            // nothing.
            Ok(_) if !seen.insert(o.id.as_str()) => unchanged.push(i),
            Ok((None, _)) => delivered.push(i, o, None, None),
            Ok((Some(state), retry_at)) => kept.push(i, o, Some(*state), *retry_at),
        }
    }
    let (progress, delivered_ids, kept_ids) = futures_util::future::join3(
        tx.batch_execute(&ctx.sql.progress_commit),
        delivered.record(&tx, &ctx.sql.record_delivered),
        kept.record(&tx, &ctx.sql.record_kept),
    )
    .await;
    progress.map_err(&record_failed)?;
    for (batch, changed) in [(&delivered, delivered_ids?), (&kept, kept_ids?)] {
        let changed: HashSet<String> = changed.into_iter().collect();
        for (i, id) in batch.index.iter().zip(&batch.ids) {
            if changed.contains(id) {
                answers[*i] = Some(Ok(()));
            } else {
                unchanged.push(*i);
            }
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
/// store has no clock of its own: the newest delivery time it was told (on the server's
/// clock) stands for now.
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
    retrying(&ctx, || release_once(&ctx, &claims)).await
}

async fn release_once(ctx: &Ctx, claims: &[(DeliveryId, ClaimToken)]) -> Result<()> {
    on_claims(ctx, &ctx.sql.release, "releasing claims", claims, None).await
}

/// Extends the leases of `claims` to `until` (those still current).
pub(super) async fn extend(
    ctx: Arc<Ctx>,
    claims: Vec<(DeliveryId, ClaimToken)>,
    until: Timestamp,
) -> Result<()> {
    let until = ctx.clock.to_server_clamped(until);
    retrying(&ctx, || {
        on_claims(
            &ctx,
            &ctx.sql.extend,
            "extending leases",
            &claims,
            Some(until),
        )
    })
    .await
}

/// Runs `statement` on `claims` bound as two arrays, ids (`$1`) and tokens (`$2`), and
/// `at` as `$3` when given: the shape of [`release`] and [`extend`].
async fn on_claims(
    ctx: &Ctx,
    statement: &str,
    what: &'static str,
    claims: &[(DeliveryId, ClaimToken)],
    at: Option<i64>,
) -> Result<()> {
    if claims.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = claims.iter().map(|(id, _)| id.as_str()).collect();
    let tokens: Vec<i64> = claims
        .iter()
        .map(|(_, t)| i64::try_from(t.get()).unwrap_or(-1))
        .collect();
    let on_failure = failed(what);
    let client = ctx.client().await?;
    let stmt = client
        .prepare_cached(statement)
        .await
        .map_err(&on_failure)?;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids, &tokens];
    if let Some(at) = &at {
        params.push(at);
    }
    client
        .query_one(&stmt, &params)
        .await
        .map_err(&on_failure)?;
    Ok(())
}

/// How often each process folds the counts' deltas (one process at a time does it) and
/// counts the pending deliveries for [`Ctx::far_from_full`].
pub(super) const FOLD_EVERY: Duration = Duration::from_millis(250);

/// Folds the deltas into the counts and counts the pending deliveries, every
/// [`FOLD_EVERY`], for as long as the store's runtime runs.
pub(super) async fn fold_forever(ctx: Arc<Ctx>) {
    let mut every = tokio::time::interval(FOLD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = fold(&ctx).await {
            // The deltas wait for the next fold; counts stay exact meanwhile (read with them).
            tracing::debug!(error = %e, "outbox: folding counts failed; will retry");
        }
    }
}

async fn fold(ctx: &Ctx) -> Result<()> {
    let fold_failed = failed("folding delivery counts");
    let client = ctx.client().await?;
    let stmt = client
        .prepare_cached(&ctx.sql.fold_stats)
        .await
        .map_err(&fold_failed)?;
    client
        .query_one(&stmt, &[&super::schema::FOLD_LOCK_SPACE, &ctx.sql.schema])
        .await
        .map_err(&fold_failed)?;
    let total = client
        .prepare_cached(&ctx.sql.pending_total)
        .await
        .map_err(&fold_failed)?;
    // What this process stored before the count began is in the count; what it stores from
    // now on may not be: it stays in `stored_since` (some may be counted twice: an estimate
    // that errs high only sends a group to the exact count).
    let before = ctx.stored_since.load(Ordering::Acquire);
    let pending: i64 = get(
        &client.query_one(&total, &[]).await.map_err(&fold_failed)?,
        0,
    )?;
    ctx.pending_counted.store(pending, Ordering::Release);
    ctx.stored_since.fetch_sub(before, Ordering::AcqRel);
    Ok(())
}

pub(super) async fn has_pending(ctx: Arc<Ctx>) -> Result<bool> {
    retrying(&ctx, || has_pending_once(&ctx)).await
}

async fn has_pending_once(ctx: &Ctx) -> Result<bool> {
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
    retrying(&ctx, || list_once(&ctx, &filter, limit)).await
}

async fn list_once(ctx: &Ctx, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>> {
    let Some(state) = stored_state(filter.state) else {
        return Ok(Vec::new());
    };
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut sql = ctx.sql.select_deliveries();
    sql.push_str(" WHERE account = $1");
    let mut params = vec![filter.account.as_str()];
    push_filter(&mut sql, &mut params, filter);
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
    rows.iter()
        .map(|row| delivery_from_row(row, &ctx.clock))
        .collect()
}

pub(super) async fn requeue_failed(
    ctx: Arc<Ctx>,
    filter: DeliveryFilter,
    now: Timestamp,
) -> Result<u64> {
    retrying(&ctx, || requeue_failed_once(&ctx, &filter, now)).await
}

async fn requeue_failed_once(ctx: &Ctx, filter: &DeliveryFilter, now: Timestamp) -> Result<u64> {
    let now = ctx.clock.to_server(now)?;
    let s = ctx.sql.s();
    let mut params = vec![filter.account.as_str()];
    let mut matching = String::from("account = $1 AND state = 'failed'");
    push_filter(&mut matching, &mut params, filter);
    let at = params.len() + 1;
    let sql = format!(
        "WITH r AS ( \
            UPDATE {s}.deliveries SET state = 'pending', next_attempt_at = ${at}::bigint, \
                lease_until = NULL, claim_token = NULL \
            WHERE {matching} RETURNING campaign), \
         st AS ( \
            INSERT INTO {s}.stats_deltas (account, campaign, pending, failed) \
            SELECT $1::text, campaign, count(*), -count(*) FROM r GROUP BY campaign) \
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
    retrying(&ctx, || remove_once(&ctx, &filter)).await
}

async fn remove_once(ctx: &Ctx, filter: &DeliveryFilter) -> Result<u64> {
    let Some(state) = stored_state(filter.state) else {
        return Ok(0);
    };
    let s = ctx.sql.s();
    let mut params = vec![filter.account.as_str()];
    let mut matching = String::from("account = $1");
    push_filter(&mut matching, &mut params, filter);
    if let Some(state) = state {
        matching.push_str(&format!(" AND state = '{state}'"));
    }
    let sql = format!(
        "WITH r AS (DELETE FROM {s}.deliveries WHERE {matching} RETURNING campaign, state), \
         st AS ( \
            INSERT INTO {s}.stats_deltas (account, campaign, pending, failed) \
            SELECT $1::text, campaign, -count(*) FILTER (WHERE state = 'pending'), \
                -count(*) FILTER (WHERE state = 'failed') \
            FROM r GROUP BY campaign) \
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
    retrying(&ctx, || stats_once(&ctx, &account, campaign.as_ref())).await
}

async fn stats_once(
    ctx: &Ctx,
    account: &AccountId,
    campaign: Option<&CampaignId>,
) -> Result<DeliveryStats> {
    let stats_failed = failed("reading delivery counts");
    let client = ctx.client().await?;
    let rows = match campaign {
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
    stats_from_rows(&rows, &ctx.clock)
}
