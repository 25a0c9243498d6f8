//! Each store operation as async work on the store's runtime: one transaction or one
//! statement each.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use jiff::Timestamp;
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{Claim, ClaimToken, Delivery, DeliveryFilter, DeliveryState, DeliveryStats};

use super::clock::ServerClock;
use super::failure::{self, Kind, Shared, failed};
use super::sql::{Statements, delivery_from_row, get, stats_from_rows};

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

/// The same two walks as [`claim`], in one statement, for the earliest claimable due time.
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
    let stmt = client
        .prepare_cached(&ctx.sql.next_due)
        .await
        .map_err(&due_failed)?;
    let now = ctx.clock.to_server_clamped(now);
    // As many rows as a full claim's head reads.
    let budget = head_budget(64);
    let row = client
        .query_one(&stmt, &[&now, &skip, &budget])
        .await
        .map_err(&due_failed)?;
    let earliest: Option<i64> = get(&row, 0)?;
    earliest.map(|n| ctx.clock.read_stored(n)).transpose()
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
