//! The scheduler and the [`Worker`] handle.
//!
//! One scheduler thread per worker does every [`Store`](crate::store::Store) call of delivery, so no
//! store call ever runs on an async executor thread. It keeps a *lane* per account: the ids in
//! flight, a small backlog of due deliveries fetched with `Store::due`, and when the next one
//! is due. It hands attempts to a [`Runner`] (tokio tasks, or plain threads) within the global
//! and per-endpoint bounds, and takes their completions back through the engine's signal.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use jiff::Timestamp;

use crate::delivery::engine::{Attempt, Completed, Completion, Engine, Outcome};
use crate::delivery::schedule::add;
use crate::error::{Error, Result};
use crate::ids::{AccountId, DeliveryId};
use crate::store::Delivery;

/// How far ahead a fetch looks to learn when an account's next delivery is due. Longer than
/// any single wait of a schedule (7 days at most).
const LOOKAHEAD: Duration = Duration::from_secs(8 * 24 * 60 * 60);

/// How often, in real time, the scheduler asks the store which accounts have pending
/// deliveries, in case it missed a change (another process, a store error).
const RESCAN_EVERY: Duration = Duration::from_secs(60);

/// How long to wait before asking a failing store again.
const STORE_BACKOFF: Duration = Duration::from_secs(1);

/// Sends the attempts the scheduler hands it and reports each completion through the engine.
pub(crate) trait Runner: Send + Sync + 'static {
    /// Starts one attempt; its completion is reported with `Signal::complete`.
    fn run(&self, engine: &Arc<Engine>, attempt: Attempt, request: Request<Bytes>);
    /// The scheduler has taken this attempt's completion.
    fn finished(&self, _delivery: &DeliveryId) {}
    /// The scheduler is stopping: stop what is still running where possible.
    fn stop(&self);
}

/// A running delivery worker: the scheduler thread and its runner.
///
/// Made by [`Webhooks::start_threads`](crate::Webhooks::start_threads) or
/// `Webhooks::start_tokio` (feature `tokio`). Stop it with
/// [`shutdown`](Worker::shutdown); dropping it stops it at once, releasing what is in flight
/// (it stays pending in the store).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::{HeaderMap, Request, StatusCode};
/// use call_result_webhook::{
///     BlockingDispatcher, CallResult, MemoryStore, PreferencesUpdate, Principal, UrlPolicy,
///     Webhooks, dispatch::{ReceiverResponse, TransportError},
/// };
///
/// // A receiver that accepts everything, in process.
/// struct Accept;
/// impl BlockingDispatcher for Accept {
///     fn dispatch_blocking(&self, _: Request<Bytes>) -> Result<ReceiverResponse, TransportError> {
///         Ok(ReceiverResponse::new(StatusCode::NO_CONTENT, HeaderMap::new(), Bytes::new()))
///     }
/// }
///
/// let webhooks = Webhooks::builder().store(MemoryStore::new()).policy(UrlPolicy::new()).build()?;
/// let admin = Principal::administrator("alice");
/// let acme = "acme".into();
/// webhooks.update_preferences(&admin, &acme,
///     PreferencesUpdate::new().enabled(true).url("https://crm.example/hook"))?;
/// webhooks.set_campaign_webhook(&admin, &acme, "winter", true)?;
///
/// let worker = webhooks.start_threads(Accept, 4)?;
/// webhooks.submit(&acme, &"winter".into(), CallResult::builder().reference("123").build())?;
/// assert!(worker.wait_idle(Duration::from_secs(10))?);
/// assert_eq!(webhooks.status(&acme, None)?.stats.delivered, 1);
///
/// let report = worker.shutdown(Duration::from_secs(5));
/// assert_eq!(report.released, 0);
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
pub struct Worker {
    engine: Arc<Engine>,
    scheduler: Option<JoinHandle<ShutdownReport>>,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Attempts that finished (and were recorded) while shutting down.
    pub finished: usize,
    /// Attempts still in flight at the deadline: released, not recorded. Their deliveries stay
    /// pending in the store and are sent again, with the same `webhook-id`, by the next worker.
    pub released: usize,
}

impl Worker {
    pub(crate) fn start(
        engine: Arc<Engine>,
        runner: Arc<dyn Runner>,
        global: usize,
    ) -> Result<Self> {
        if engine
            .worker_running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(Error::config(
                "worker",
                "a worker is already running for these webhooks",
            ));
        }
        engine.signal.start();
        let per_endpoint = engine.limits.per_endpoint.min((global / 2).max(1));
        let scheduler = Scheduler {
            engine: engine.clone(),
            runner,
            global,
            per_endpoint,
            backlog: (2 * per_endpoint).max(8),
            lanes: HashMap::new(),
            in_flight: 0,
            rotate: 0,
            backoff_until: None,
        };
        let spawned = std::thread::Builder::new()
            .name("webhook-scheduler".into())
            .spawn(move || scheduler.run());
        match spawned {
            Ok(handle) => Ok(Worker {
                engine,
                scheduler: Some(handle),
            }),
            Err(e) => {
                engine.signal.stopped();
                engine.worker_running.store(false, Ordering::SeqCst);
                Err(Error::config(
                    "worker",
                    format!("cannot start the scheduler thread: {e}"),
                ))
            }
        }
    }

    /// Stops gracefully: takes no new attempts, waits up to `deadline` for the attempts in
    /// flight and records their outcomes, then releases the rest. Released deliveries stay
    /// pending in the store and are sent again, with the same `webhook-id`, by the next worker
    /// (after a restart, on the same store). Nothing is lost.
    ///
    /// Blocks the calling thread for at most about `deadline`. Call it from a thread, or from
    /// `spawn_blocking`, not from an async task.
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        self.engine.signal.shutdown(Instant::now() + deadline);
        match self.scheduler.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => ShutdownReport::default(),
        }
    }

    /// Waits until no delivery is pending in the store, at most `timeout`. Returns `true` when
    /// none is, `false` at the timeout.
    ///
    /// Deliveries that failed for good are not pending: they are reported by
    /// [`Event::DeliveryFailed`](crate::Event::DeliveryFailed), not waited on. Deliveries held
    /// because the account's webhook is off or its endpoint is paused are pending, and keep
    /// this waiting until the timeout.
    ///
    /// Reads the store: call it from a thread, not from an async task.
    pub fn wait_idle(&self, timeout: Duration) -> Result<bool> {
        let until = Instant::now() + timeout;
        loop {
            let (seen, running) = self.engine.signal.passes();
            if self.engine.store.pending_accounts()?.is_empty() {
                return Ok(true);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || !running {
                return Ok(false);
            }
            self.engine.signal.wait_pass(seen, left);
        }
    }

    /// How many attempts are in flight now.
    pub fn in_flight(&self) -> usize {
        self.engine.in_flight.load(Ordering::Relaxed)
    }

    /// Waits until the scheduler has handled everything signalled so far.
    #[cfg(test)]
    pub(crate) fn settle(&self) {
        assert!(self.engine.signal.settle(), "the scheduler is not running");
    }
}

impl Drop for Worker {
    /// Stops at once, as `shutdown(Duration::ZERO)` would: what is in flight is released.
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            self.engine.signal.shutdown(Instant::now());
            // The scheduler only finishes its current pass; a panic there was already reported.
            let _ = scheduler.join();
        }
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("running", &self.scheduler.is_some())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// One account's share of the scheduler.
#[derive(Debug, Default)]
struct Lane {
    /// Due deliveries fetched from the store, not yet started.
    backlog: VecDeque<Delivery>,
    in_flight: HashSet<DeliveryId>,
    /// Look in the store before trusting `next_due`.
    needs_fetch: bool,
    /// When the earliest pending delivery not in flight is due, as far as known.
    next_due: Option<Timestamp>,
}

impl Lane {
    fn wants_fetch(&self, now: Timestamp) -> bool {
        self.backlog.is_empty() && (self.needs_fetch || self.next_due.is_some_and(|t| t <= now))
    }

    fn is_empty(&self) -> bool {
        self.backlog.is_empty()
            && self.in_flight.is_empty()
            && !self.needs_fetch
            && self.next_due.is_none()
    }

    fn due_sooner(&mut self, at: Timestamp) {
        self.next_due = Some(self.next_due.map_or(at, |t| t.min(at)));
    }
}

struct Scheduler {
    engine: Arc<Engine>,
    runner: Arc<dyn Runner>,
    global: usize,
    per_endpoint: usize,
    backlog: usize,
    lanes: HashMap<AccountId, Lane>,
    in_flight: usize,
    rotate: usize,
    backoff_until: Option<Instant>,
}

impl Scheduler {
    fn run(mut self) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        let mut deadline: Option<Instant> = None;
        let mut last_rescan: Option<Instant> = None;
        let mut requested = 0;
        loop {
            let stalled = self.backoff_until.is_some_and(|t| Instant::now() < t);
            if !stalled {
                self.backoff_until = None;
                if last_rescan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY) && self.rescan() {
                    last_rescan = Some(Instant::now());
                }
            }
            let now = self.engine.clock.now();
            if deadline.is_none() && !stalled {
                self.dispatch_ready(now);
            }
            self.lanes.retain(|_, lane| !lane.is_empty());
            self.engine
                .in_flight
                .store(self.in_flight, Ordering::Relaxed);
            self.engine.signal.pass_done(requested);

            let mut wait = self.wait(now, deadline.is_some());
            if let Some(rescan_at) = last_rescan.map(|t| t + RESCAN_EVERY) {
                wait = min_wait(wait, rescan_at.saturating_duration_since(Instant::now()));
            }
            if let Some(t) = self.backoff_until {
                wait = min_wait(wait, t.saturating_duration_since(Instant::now()));
            }
            if let Some(d) = deadline {
                if self.in_flight == 0 || Instant::now() >= d {
                    break;
                }
                wait = min_wait(wait, d.saturating_duration_since(Instant::now()));
            }

            let batch = self.engine.signal.take(wait);
            requested = batch.requested;
            if deadline.is_none() && batch.shutdown.is_some() {
                tracing::info!(in_flight = self.in_flight, "webhook worker shutting down");
            }
            deadline = match (deadline, batch.shutdown) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Recorded together: a durable store makes them durable in one write.
            let outcomes = self.engine.complete_all(&batch.completions);
            for (c, outcome) in batch.completions.into_iter().zip(outcomes) {
                self.completed(c, outcome);
                if deadline.is_some() {
                    report.finished += 1;
                }
            }
            for account in batch.touched {
                self.lanes.entry(account).or_default().needs_fetch = true;
            }
            for account in batch.reset {
                let lane = self.lanes.entry(account).or_default();
                lane.backlog.clear();
                lane.needs_fetch = true;
            }
        }
        report.released = self.in_flight;
        self.runner.stop();
        self.engine.in_flight.store(0, Ordering::Relaxed);
        self.engine.worker_running.store(false, Ordering::SeqCst);
        self.engine.signal.stopped();
        tracing::info!(
            finished = report.finished,
            released = report.released,
            "webhook worker stopped"
        );
        report
    }

    /// Learns from the store which accounts have pending deliveries. Returns `false` if the
    /// store failed.
    fn rescan(&mut self) -> bool {
        match self.engine.store.pending_accounts() {
            Ok(accounts) => {
                for (account, at) in accounts {
                    self.lanes.entry(account).or_default().due_sooner(at);
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "could not list pending deliveries");
                self.backoff_until = Some(Instant::now() + STORE_BACKOFF);
                false
            }
        }
    }

    /// Starts every attempt that is due and fits the bounds, one account at a time in turn.
    fn dispatch_ready(&mut self, now: Timestamp) {
        let mut accounts: Vec<AccountId> = self
            .lanes
            .iter()
            .filter(|(_, l)| {
                l.in_flight.len() < self.per_endpoint
                    && (!l.backlog.is_empty() || l.wants_fetch(now))
            })
            .map(|(a, _)| a.clone())
            .collect();
        if accounts.is_empty() {
            return;
        }
        accounts.sort();
        let first = self.rotate % accounts.len();
        accounts.rotate_left(first);
        self.rotate = self.rotate.wrapping_add(1);
        accounts.retain(|a| self.engine.lane_open(a));
        loop {
            let mut started = false;
            for account in &accounts {
                if self.in_flight >= self.global || self.backoff_until.is_some() {
                    return;
                }
                let lane = self.lanes.get_mut(account).expect("lane exists");
                if lane.in_flight.len() >= self.per_endpoint {
                    continue;
                }
                if lane.wants_fetch(now) {
                    self.fetch(account, now);
                }
                let lane = self.lanes.get_mut(account).expect("lane exists");
                if let Some(d) = lane.backlog.pop_front() {
                    lane.in_flight.insert(d.id.clone());
                    self.in_flight += 1;
                    self.start(d);
                    started = true;
                }
            }
            if !started {
                return;
            }
        }
    }

    fn fetch(&mut self, account: &AccountId, now: Timestamp) {
        let lane = self.lanes.get_mut(account).expect("lane exists");
        let skip: Vec<DeliveryId> = lane.in_flight.iter().cloned().collect();
        match self
            .engine
            .store
            .due(account, add(now, LOOKAHEAD), self.backlog, &skip)
        {
            Ok(found) => {
                let full = found.len() == self.backlog;
                let mut next_future = None;
                let mut last_due = None;
                for d in found {
                    if d.next_attempt_at <= now {
                        last_due = Some(d.next_attempt_at);
                        lane.backlog.push_back(d);
                    } else if next_future.is_none() {
                        next_future = Some(d.next_attempt_at);
                    }
                }
                lane.needs_fetch = false;
                // A full answer of due deliveries may hide more that are due.
                lane.next_due = next_future.or(if full { last_due } else { None });
            }
            Err(e) => {
                tracing::error!(account = %account, error = %e, "could not fetch due deliveries");
                self.backoff_until = Some(Instant::now() + STORE_BACKOFF);
            }
        }
    }

    fn start(&self, d: Delivery) {
        let attempt = Attempt::new(&d);
        match self.engine.prepare(&d) {
            Ok(request) => self.runner.run(&self.engine, attempt, request),
            Err(verdict) => self.engine.signal.complete(Completion {
                attempt,
                outcome: Outcome::NotSent(verdict),
                latency: Duration::ZERO,
            }),
        }
    }

    /// Frees the attempt's place once its outcome is recorded.
    fn completed(&mut self, c: Completion, result: Completed) {
        let account = c.attempt.account.clone();
        let id = c.attempt.delivery.clone();
        self.runner.finished(&id);
        let lane = self.lanes.entry(account).or_default();
        if lane.in_flight.remove(&id) {
            self.in_flight -= 1;
        }
        match result {
            Completed::RetryAt(at) => lane.due_sooner(at),
            Completed::NotRecorded => {
                lane.needs_fetch = true;
                self.backoff_until = Some(Instant::now() + STORE_BACKOFF);
            }
            Completed::Done | Completed::Forgotten => {}
        }
    }

    /// How long to sleep before the next due delivery of an open lane with room; `None` means
    /// until signalled.
    fn wait(&self, now: Timestamp, stopping: bool) -> Option<Duration> {
        if stopping || self.in_flight >= self.global {
            return None;
        }
        let soonest = self
            .lanes
            .iter()
            .filter(|(_, l)| l.in_flight.len() < self.per_endpoint && l.backlog.is_empty())
            .filter_map(|(a, l)| l.next_due.filter(|t| *t > now).map(|t| (a, t)))
            .filter(|(a, _)| self.engine.lane_open(a))
            .map(|(_, t)| t)
            .min()?;
        self.engine.clock.sleep_hint(soonest)
    }
}

fn min_wait(wait: Option<Duration>, other: Duration) -> Option<Duration> {
    Some(wait.map_or(other, |w| w.min(other)))
}
