//! Group commit for submits: single-delivery inserts made at the same moment by many
//! submitters share one statement (a multi-row `INSERT` with its counts and its `NOTIFY`, in
//! autocommit: one round trip and one WAL flush), instead of a transaction each. Each
//! submitter still waits for its own answer, given only once that statement has committed.
//!
//! No timer and no extra thread: the first submitter to find no group running starts one on
//! the store's runtime; a group takes every insert queued when it starts, and while it
//! commits the next inserts queue up for the one after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::Row;

use crate::error::{Error, Result};
use crate::store::NewDelivery;
use crate::sync::lock;

use super::failure;
use super::insert::{self, Columns, same_parts};
use super::ops::{self, Ctx};
use super::sql::get;

/// How many groups may run at once: one. Two halve each group (measured: 6 submits per WAL
/// flush and 9.3k submits/s with two, 12 per flush and 11.9k/s with one, p99 3.9 vs 2.7 ms).
const RUNNERS: usize = 1;
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
            // Bounded like any store call: a group stuck on a server that does not answer is
            // answered, and the next group may find it answering again.
            let limit = ctx.bounds.call_timeout;
            let answers = tokio::time::timeout(limit, commit_group(&ctx, &jobs))
                .await
                .unwrap_or_else(|_| {
                    let timeout = Error::StoreTimeout {
                        bound: "call_timeout",
                        limit,
                    };
                    ops::each_failed(timeout, jobs.len(), "storing a group of deliveries")
                });
            for (job, answer) in jobs.into_iter().zip(answers) {
                // The submitter waits for its answer; nothing to do if it went away.
                let _ = job.answer.send(answer);
            }
        }
    }
}

/// Inserts a group in one statement and answers for each insert. The statement is made
/// again on a fresh connection when its connection breaks (see [`ops::retrying`]; a group
/// that committed unanswered finds its rows stored); when the database stays out of reach,
/// every insert is answered with that failure. When the group cannot be committed as one
/// otherwise (the outbox may be near its `max_pending`, or the statement failed), each insert
/// is made alone, so that each gets exactly its own answer.
async fn commit_group(ctx: &Arc<Ctx>, jobs: &[Job]) -> Vec<Result<()>> {
    if ctx.far_from_full(jobs.len()) {
        match ops::retrying(ctx, || try_group(ctx, jobs)).await {
            Ok(answers) => return answers,
            // Out of reach, or out of time: made alone, each would meet the same.
            Err(e)
                if failure::kind(&e) == failure::Kind::Broken
                    || matches!(e, Error::StoreTimeout { .. }) =>
            {
                return ops::each_failed(e, jobs.len(), "storing a group of deliveries");
            }
            // Made alone below.
            Err(_) => {}
        }
    }
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        answers.push(insert::insert(Arc::clone(ctx), vec![job.delivery.clone()]).await);
    }
    answers
}

/// The group as one transaction: `Err` means nothing was committed and each insert should
/// be made alone.
async fn try_group(ctx: &Arc<Ctx>, jobs: &[Job]) -> Result<Vec<Result<()>>> {
    // The first insert of each id goes into the statement; every insert of the group is then
    // answered from what the statement found for its id.
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(jobs.len());
    let mut rows: Vec<&NewDelivery> = Vec::with_capacity(jobs.len());
    for (k, job) in jobs.iter().enumerate() {
        let d = &job.delivery;
        if !first.contains_key(d.id.as_str()) {
            first.insert(d.id.as_str(), k);
            rows.push(d);
        }
    }
    let columns = Columns::new(&rows, &ctx.clock)?;
    // In id order, as every insert takes its rows: no two groups wait on each other.
    rows.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    let failed = failure::failed("storing a group of deliveries");
    let client = ctx.client().await?;
    let stmt = client
        .prepare_cached(&ctx.sql.insert_group)
        .await
        .map_err(&failed)?;
    // One statement, committed on its own: one round trip and one flush for the group.
    let result = client
        .query(&stmt, &columns.params())
        .await
        .map_err(&failed)?;
    let (found, inserted) = read_found(&result)?;
    ctx.stored(inserted);
    let mut answers = Vec::with_capacity(jobs.len());
    for (k, job) in jobs.iter().enumerate() {
        let d = &job.delivery;
        let id = d.id.as_str();
        let conflict = || Err(Error::IdConflict { id: id.to_owned() });
        answers.push(match found.get(id) {
            Some(Found::Inserted)
                if first[id] == k || jobs[first[id]].delivery.is_same_call_result(d) =>
            {
                Ok(())
            }
            Some(Found::Inserted) => conflict(),
            Some(Found::Stored(account, campaign, body, encoding)) => {
                if same_parts(d, account, campaign, body, encoding) {
                    Ok(())
                } else {
                    conflict()
                }
            }
            Some(Found::Delivered(true)) => Ok(()),
            Some(Found::Delivered(false)) => conflict(),
            // Asked again alone: the row is committed by now.
            Some(Found::Raced) | None => insert::insert(Arc::clone(ctx), vec![d.clone()]).await,
        });
    }
    Ok(answers)
}

/// What the group's statement found for one id.
enum Found<'r> {
    /// Inserted now, with the first insert's content.
    Inserted,
    /// Stored before, with this account, campaign, body and encoding.
    Stored(&'r str, &'r str, &'r [u8], &'r str),
    /// Delivered within the retention: only the id and a fingerprint are kept; `true` for
    /// the same call result (or one delivered before fingerprints were kept).
    Delivered(bool),
    /// Neither: another transaction stored it at the same moment, unseen here.
    Raced,
}

/// Reads the group's statement's rows: what it found for each id, and how many rows it
/// inserted.
fn read_found(rows: &[Row]) -> Result<(HashMap<&str, Found<'_>>, usize)> {
    let mut found = HashMap::with_capacity(rows.len());
    let mut inserted = 0;
    for row in rows {
        let id: &str = get(row, 0)?;
        if get::<bool>(row, 1)? {
            found.insert(id, Found::Inserted);
            inserted += 1;
            continue;
        }
        let stored: Option<&str> = get(row, 2)?;
        let what = match stored {
            Some(account) => Found::Stored(account, get(row, 3)?, get(row, 4)?, get(row, 5)?),
            None if get::<bool>(row, 6)? => Found::Delivered(get(row, 7)?),
            None => Found::Raced,
        };
        found.insert(id, what);
    }
    Ok((found, inserted))
}
