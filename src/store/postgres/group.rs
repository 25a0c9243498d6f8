//! Group commit for submits: single-delivery inserts made at the same moment by many
//! submitters share one transaction, one multi-row `INSERT` and one commit (one WAL flush),
//! instead of one each. Each submitter still waits for its own answer, given only once the
//! transaction that holds its delivery has committed.
//!
//! No timer and no extra thread: the first submitter to find no group running starts one on
//! the store's runtime; a group takes every insert queued when it starts, and while it
//! commits the next inserts queue up for the one after it. At most [`RUNNERS`] groups run at
//! once, so one commit's wait overlaps the next group's statements.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::store::NewDelivery;
use crate::sync::lock;

use super::ops::{self, Ctx};
use super::sql::{get, to_nanos};

/// How many groups may run at once.
const RUNNERS: usize = 2;
/// The most inserts one group takes.
const MAX_GROUP: usize = 512;

/// One submitter's insert, waiting for its group.
pub(super) struct Job {
    delivery: NewDelivery,
    answer: oneshot::Sender<Result<()>>,
}

/// The inserts waiting for a group, and how many groups run.
#[derive(Debug, Default)]
pub(super) struct Groups {
    queue: Mutex<Vec<Job>>,
    running: AtomicUsize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.delivery.id)
            .finish_non_exhaustive()
    }
}

impl Groups {
    /// Queues `delivery` and answers a receiver for its outcome; starts a group runner on
    /// the store's runtime (through `spawn`) when fewer than [`RUNNERS`] run.
    pub(super) fn submit(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        delivery: NewDelivery,
        spawn: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
    ) -> oneshot::Receiver<Result<()>> {
        let (answer, answered) = oneshot::channel();
        lock(&self.queue).push(Job { delivery, answer });
        if self.claim_runner() {
            let (groups, ctx) = (Arc::clone(self), Arc::clone(ctx));
            spawn(Box::pin(async move { groups.run(ctx).await }));
        }
        answered
    }

    fn claim_runner(&self) -> bool {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < RUNNERS).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes groups until the queue is empty.
    async fn run(self: Arc<Self>, ctx: Arc<Ctx>) {
        loop {
            let jobs: Vec<Job> = {
                let mut queue = lock(&self.queue);
                let take = queue.len().min(MAX_GROUP);
                queue.drain(..take).collect()
            };
            if jobs.is_empty() {
                self.running.fetch_sub(1, Ordering::AcqRel);
                // An insert queued after the check above found no runner to take it: take it.
                if lock(&self.queue).is_empty() || !self.claim_runner() {
                    return;
                }
                continue;
            }
            let answers = commit_group(&ctx, &jobs).await;
            for (job, answer) in jobs.into_iter().zip(answers) {
                // The submitter waits for its answer; nothing to do if it went away.
                let _ = job.answer.send(answer);
            }
        }
    }
}

/// Inserts a group in one transaction and answers for each insert. When the group cannot be
/// committed as one (the outbox would be over its `max_pending`, or the transaction failed),
/// each insert is made alone, so that each gets exactly its own answer.
async fn commit_group(ctx: &Arc<Ctx>, jobs: &[Job]) -> Vec<Result<()>> {
    if jobs.len() > 1
        && let Ok(answers) = try_group(ctx, jobs).await
    {
        return answers;
    }
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        answers.push(ops::insert(Arc::clone(ctx), vec![job.delivery.clone()]).await);
    }
    answers
}

/// The group as one transaction: `Err` means nothing was committed and each insert should
/// be made alone.
async fn try_group(ctx: &Arc<Ctx>, jobs: &[Job]) -> Result<Vec<Result<()>>> {
    // The first insert of each id goes into the statement; a later one of the same id in the
    // group is a repeat (the same call result) or a conflict, answered from the first.
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(jobs.len());
    let mut answers: Vec<Option<Result<()>>> = Vec::with_capacity(jobs.len());
    let mut rows: Vec<&NewDelivery> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let d = &job.delivery;
        match first.get(d.id.as_str()) {
            Some(&i) if ops::same_new(&jobs[i].delivery, d) => answers.push(Some(Ok(()))),
            Some(_) => answers.push(Some(Err(Error::IdConflict {
                id: d.id.to_string(),
            }))),
            None => {
                first.insert(d.id.as_str(), answers.len());
                answers.push(None);
                rows.push(d);
            }
        }
    }
    let ids: Vec<&str> = rows.iter().map(|d| d.id.as_str()).collect();
    let accounts: Vec<&str> = rows.iter().map(|d| d.account.as_str()).collect();
    let campaigns: Vec<&str> = rows.iter().map(|d| d.campaign.as_str()).collect();
    let bodies: Vec<&[u8]> = rows.iter().map(|d| d.body.bytes().as_ref()).collect();
    let encodings: Vec<&str> = rows.iter().map(|d| d.body.encoding().as_str()).collect();
    let created: Vec<i64> = rows
        .iter()
        .map(|d| to_nanos(d.created_at))
        .collect::<Result<_>>()?;
    let due: Vec<i64> = rows
        .iter()
        .map(|d| to_nanos(d.next_attempt_at))
        .collect::<Result<_>>()?;

    let failed = |e| Error::store("storing a group of deliveries", e);
    let mut client = ctx.client().await?;
    let tx = client.transaction().await.map_err(failed)?;
    let stmt = tx.prepare_cached(&ctx.sql.insert).await.map_err(failed)?;
    let inserted = tx
        .query(
            &stmt,
            &[
                &ids, &accounts, &campaigns, &bodies, &encodings, &created, &due,
            ],
        )
        .await
        .map_err(failed)?;
    let mut stored = std::collections::HashSet::with_capacity(inserted.len());
    for row in &inserted {
        stored.insert(get::<String>(row, 0)?);
    }
    // Not inserted: stored already (the same call result: a repeat; another: a conflict,
    // and only that insert is refused, its delivery was not written), or delivered lately.
    let others: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !stored.contains(*id))
        .collect();
    if !others.is_empty() {
        let stmt = tx.prepare_cached(&ctx.sql.stored).await.map_err(failed)?;
        for row in tx.query(&stmt, &[&others]).await.map_err(failed)? {
            let id: &str = get(&row, 0)?;
            let Some(&i) = first.get(id) else { continue };
            if !ops::same_parts(
                &jobs[i].delivery,
                get(&row, 1)?,
                get(&row, 2)?,
                get(&row, 3)?,
                get(&row, 4)?,
            ) {
                answers[i] = Some(Err(Error::IdConflict { id: id.to_owned() }));
            }
        }
    }
    if !stored.is_empty() {
        let stmt = tx
            .prepare_cached(&ctx.sql.pending_total)
            .await
            .map_err(failed)?;
        let pending: i64 = get(&tx.query_one(&stmt, &[]).await.map_err(failed)?, 0)?;
        if usize::try_from(pending).unwrap_or(usize::MAX) > ctx.max_pending {
            // Over the limit as a group: each alone, so only those past it are refused.
            return Err(Error::StoreFull {
                max_pending: ctx.max_pending,
            });
        }
        tx.batch_execute(&ctx.sql.notify_due)
            .await
            .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)?;
    // A repeat answered from a first insert that was refused shares its refusal.
    let mut out = Vec::with_capacity(answers.len());
    for (job, answer) in jobs.iter().zip(&answers) {
        let i = first[job.delivery.id.as_str()];
        out.push(match answer {
            Some(Err(Error::IdConflict { id })) => Err(Error::IdConflict { id: id.clone() }),
            Some(Ok(())) => match &answers[i] {
                Some(Err(Error::IdConflict { id })) => Err(Error::IdConflict { id: id.clone() }),
                _ => Ok(()),
            },
            Some(Err(_)) | None => Ok(()),
        });
    }
    Ok(out)
}
