//! Recording attempts' outcomes: each checked before anything is written, all of one call in
//! one transaction (fenced by their claims' tokens), delivered ids forgotten after the
//! retention.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ids::DeliveryId;
use crate::limits::DELIVERED_ID_RETENTION;
use crate::store::{AttemptRecord, ClaimToken, NextStep};

use super::clock::ServerClock;
use super::failure::{Shared, failed};
use super::ops::{Ctx, retrying};
use super::sql::get;

/// The most delivered ids one prune forgets: under [`limits::PRUNE_BATCH`](crate::limits::PRUNE_BATCH).
const PRUNE_BATCH: i64 = 256;
const _: () = assert!(PRUNE_BATCH as usize <= crate::limits::PRUNE_BATCH);

/// One outcome, its times checked before anything is written.
struct Outcome {
    id: DeliveryId,
    token: i64,
    at: i64,
    status: Option<i32>,
    error: Option<String>,
    next: Result<(Option<&'static str>, Option<i64>), Shared>,
    duration_us: i64,
    answer: String,
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
        duration_us: i64::try_from(record.duration.as_micros()).unwrap_or(i64::MAX),
        answer: record.answer.clone(),
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
    durations: Vec<i64>,
    answers: Vec<String>,
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
        self.durations.push(o.duration_us);
        self.answers.push(o.answer.clone());
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
                    &self.durations,
                    &self.answers,
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
