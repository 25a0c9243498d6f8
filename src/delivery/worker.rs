//! The scheduler and the [`Worker`] handle.
//!
//! One scheduler thread per worker does every [`Store`](crate::store::Store) call of delivery, so no
//! store call ever runs on an async executor thread. It keeps a *lane* per account: the ids in
//! flight, a small backlog of due deliveries fetched with `Store::due`, and when the next one
//! is due. It hands attempts to a [`Runner`] (tokio tasks, or plain threads) within the global
//! and per-endpoint bounds, and takes their completions back through the engine's signal.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use jiff::Timestamp;

use crate::blocking::unblock;
use crate::delivery::engine::{Attempt, Completed, Completion, Engine, Outcome};
use crate::delivery::events::Event;
use crate::delivery::schedule::add;
use crate::error::{Error, Result};
use crate::ids::{AccountId, DeliveryId};
use crate::store::Delivery;
use crate::sync::lock;

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
    /// The scheduler is starting: watch whatever the attempts depend on (the async runtime).
    fn started(&self, _engine: &Arc<Engine>) {}
    /// Starts one attempt; its completion is reported with `Signal::complete`.
    fn run(&self, engine: &Arc<Engine>, attempt: Attempt, request: Request<Bytes>);
    /// The scheduler has taken this attempt's completion.
    fn finished(&self, _delivery: &DeliveryId) {}
    /// The scheduler is stopping: stop what is still running where possible.
    fn stop(&self);
}

/// A running delivery worker: the scheduler thread and its runner.
///
/// Made by [`Webhooks::start_tokio`](crate::Webhooks::start_tokio) (feature `tokio`) or
/// [`Webhooks::start_threads`](crate::Webhooks::start_threads). Clones are handles to the same
/// worker: keep one in the dialer's state, hand others to whoever waits on it. Stop it with
/// [`shutdown`](Worker::shutdown); when the last handle is dropped it stops at once,
/// releasing what is in flight (it stays pending in the store).
///
/// Waiting methods come in pairs: `wait_idle(..).await` and `shutdown(..).await` for async
/// callers, `wait_idle_blocking` and `shutdown_blocking` for threads. A blocking one called on
/// a thread of the tokio runtime the worker's attempts run on would stall those very attempts,
/// so it returns [`Error::BlockingInRuntime`] at once instead of waiting.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::{HeaderMap, Request, StatusCode};
/// use call_result_webhook::{BlockingDispatcher, CallResult, MemoryStore, PreferencesUpdate,
///     Principal, UrlPolicy, Webhooks};
/// use call_result_webhook::dispatch::{ReceiverResponse, TransportError};
///
/// // A receiver that accepts everything, in process.
/// struct Accept;
/// impl BlockingDispatcher for Accept {
///     fn dispatch_blocking(&self, _: Request<Bytes>) -> Result<ReceiverResponse, TransportError> {
///         Ok(ReceiverResponse::new(StatusCode::NO_CONTENT, HeaderMap::new(), Bytes::new()))
///     }
/// }
///
/// // A dialer with no async runtime: the `_blocking` forms throughout.
/// let webhooks = Webhooks::builder().store(MemoryStore::new()).policy(UrlPolicy::new()).build()?;
/// let admin = Principal::administrator("alice");
/// let (acme, winter) = ("acme".into(), "winter".into());
/// webhooks.update_preferences_blocking(&admin, &acme,
///     PreferencesUpdate::new().enabled(true).url("https://crm.example/hook"))?;
/// webhooks.set_campaign_webhook_blocking(&admin, &acme, &winter, true)?;
///
/// let worker = webhooks.start_threads(Accept, 4)?;
/// let call = CallResult::builder().reference("123").build();
/// webhooks.submit_blocking(&acme, &winter, call)?;
/// assert!(worker.wait_idle_blocking(Duration::from_secs(10))?);
/// assert_eq!(webhooks.status_blocking(&acme, None)?.stats.delivered, 1);
///
/// let report = worker.shutdown_blocking(Duration::from_secs(5))?;
/// assert_eq!(report.released, 0);
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[derive(Clone)]
pub struct Worker {
    inner: Arc<WorkerInner>,
}

struct WorkerInner {
    engine: Arc<Engine>,
    /// The scheduler thread until it is joined, then what it reported.
    scheduler: Mutex<Scheduled>,
    /// The runtime the attempts run on, where blocking waits are refused.
    #[cfg(feature = "tokio")]
    runtime: Option<tokio::runtime::Handle>,
}

enum Scheduled {
    Running(JoinHandle<Stopped>),
    Joined(Stopped),
}

/// What the scheduler thread returns: its report, and why it stopped if not asked to.
#[derive(Clone)]
struct Stopped {
    report: ShutdownReport,
    because: Option<String>,
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
        #[cfg(feature = "tokio")] runtime: Option<tokio::runtime::Handle>,
        #[cfg(not(feature = "tokio"))] _runtime: Option<std::convert::Infallible>,
    ) -> Result<Self> {
        if !engine.claim_worker() {
            return Err(Error::config(
                "worker",
                "a worker is already running for these webhooks",
            ));
        }
        engine.signal().start();
        let per_endpoint = engine.limits().per_endpoint.min((global / 2).max(1));
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
                inner: Arc::new(WorkerInner {
                    engine,
                    scheduler: Mutex::new(Scheduled::Running(handle)),
                    #[cfg(feature = "tokio")]
                    runtime,
                }),
            }),
            Err(e) => {
                engine.signal().stopped(None);
                engine.release_worker();
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
    /// Every handle may call it; the first does the work, the others wait for it and get the
    /// same report. Calling it again after the worker stopped returns that report at once.
    ///
    /// **Dropped before it completes**, the shutdown still goes on: the worker stops by the
    /// deadline all the same.
    ///
    /// # Errors
    ///
    /// [`Error::WorkerStopped`] when the worker had already stopped on its own (its runtime
    /// shut down; the reason says so): nothing was in flight to finish.
    /// [`Error::RuntimeShuttingDown`] when the caller's runtime is shutting down.
    pub async fn shutdown(&self, deadline: Duration) -> Result<ShutdownReport> {
        let inner = self.inner.clone();
        inner.engine.signal().shutdown(Instant::now() + deadline);
        unblock(move || inner.join()).await?
    }

    /// [`shutdown`](Self::shutdown) for threads: blocks for at most about `deadline`.
    ///
    /// # Errors
    ///
    /// [`Error::BlockingInRuntime`] at once, without stopping anything, when called on a thread
    /// of the tokio runtime the worker's attempts run on (call `shutdown(..).await` there);
    /// otherwise as [`shutdown`](Self::shutdown).
    pub fn shutdown_blocking(&self, deadline: Duration) -> Result<ShutdownReport> {
        self.inner
            .refuse_blocking("Worker::shutdown_blocking", "Worker::shutdown(..).await")?;
        self.inner
            .engine
            .signal()
            .shutdown(Instant::now() + deadline);
        self.inner.join()
    }

    /// Waits until no delivery is pending in the store, at most `timeout`. Returns `true` when
    /// none is, `false` at the timeout (or when the worker was shut down meanwhile).
    ///
    /// Deliveries that failed for good are not pending: they are reported by
    /// [`Event::DeliveryFailed`](crate::Event::DeliveryFailed), not waited on. Deliveries held
    /// because the account's webhook is off or its endpoint is paused are pending, and keep
    /// this waiting until the timeout. Read only: dropping the future loses nothing.
    ///
    /// # Errors
    ///
    /// [`Error::WorkerStopped`] as soon as the worker stops on its own (its runtime shut
    /// down), since nothing pending would be delivered; [`Error::Store`] when the store cannot
    /// be read; [`Error::RuntimeShuttingDown`].
    pub async fn wait_idle(&self, timeout: Duration) -> Result<bool> {
        let inner = self.inner.clone();
        unblock(move || inner.wait_idle(timeout)).await?
    }

    /// [`wait_idle`](Self::wait_idle) for threads.
    ///
    /// # Errors
    ///
    /// [`Error::BlockingInRuntime`] at once when called on a thread of the tokio runtime the
    /// worker's attempts run on (call `wait_idle(..).await` there); otherwise as
    /// [`wait_idle`](Self::wait_idle).
    pub fn wait_idle_blocking(&self, timeout: Duration) -> Result<bool> {
        self.inner
            .refuse_blocking("Worker::wait_idle_blocking", "Worker::wait_idle(..).await")?;
        self.inner.wait_idle(timeout)
    }

    /// How many attempts are in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.engine.in_flight()
    }

    /// Whether the scheduler is running (not shut down, not stopped on its own).
    pub fn is_running(&self) -> bool {
        self.inner.engine.signal().passes().1
    }

    /// Waits until the scheduler has handled everything signalled so far.
    #[cfg(test)]
    pub(crate) fn settle(&self) {
        assert!(
            self.inner.engine.signal().settle(),
            "the scheduler is not running"
        );
    }
}

impl WorkerInner {
    fn refuse_blocking(&self, method: &'static str, instead: &'static str) -> Result<()> {
        #[cfg(feature = "tokio")]
        if self
            .runtime
            .as_ref()
            .is_some_and(crate::blocking::on_runtime)
        {
            return Err(Error::BlockingInRuntime { method, instead });
        }
        let _ = (method, instead);
        Ok(())
    }

    /// Joins the scheduler (once) and answers with what it reported.
    fn join(&self) -> Result<ShutdownReport> {
        let mut scheduled = lock(&self.scheduler);
        let stopped = match std::mem::replace(
            &mut *scheduled,
            Scheduled::Joined(Stopped {
                report: ShutdownReport::default(),
                because: None,
            }),
        ) {
            Scheduled::Running(handle) => match handle.join() {
                Ok(stopped) => stopped,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            Scheduled::Joined(stopped) => stopped,
        };
        *scheduled = Scheduled::Joined(stopped.clone());
        match stopped.because {
            Some(reason) => Err(Error::WorkerStopped { reason }),
            None => Ok(stopped.report),
        }
    }

    fn wait_idle(&self, timeout: Duration) -> Result<bool> {
        let signal = self.engine.signal();
        let until = Instant::now() + timeout;
        loop {
            let (seen, running) = signal.passes();
            if let Some(reason) = signal.stopped_because() {
                return Err(Error::WorkerStopped { reason });
            }
            if self.engine.store().pending_accounts()?.is_empty() {
                return Ok(true);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || !running {
                return Ok(false);
            }
            signal.wait_pass(seen, left);
        }
    }
}

impl Drop for WorkerInner {
    /// The last handle is gone: stop at once, as `shutdown(Duration::ZERO)` would; what is in
    /// flight is released.
    fn drop(&mut self) {
        let scheduled = self.scheduler.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Scheduled::Running(_) = scheduled {
            self.engine.signal().shutdown(Instant::now());
            if let Scheduled::Running(handle) = std::mem::replace(
                scheduled,
                Scheduled::Joined(Stopped {
                    report: ShutdownReport::default(),
                    because: None,
                }),
            ) {
                // The scheduler only finishes its current pass; a panic there was reported.
                let _ = handle.join();
            }
        }
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("running", &self.is_running())
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
    fn run(mut self) -> Stopped {
        self.runner.started(&self.engine);
        let mut report = ShutdownReport::default();
        let mut because = None;
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
            let now = self.engine.clock().now();
            if deadline.is_none() && !stalled {
                self.dispatch_ready(now);
            }
            self.lanes.retain(|_, lane| !lane.is_empty());
            self.engine.set_in_flight(self.in_flight);
            self.engine.signal().pass_done(requested);

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

            let batch = self.engine.signal().take(wait);
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
            if batch.runtime_gone {
                because =
                    Some("the tokio runtime the worker's attempts ran on has shut down".to_owned());
                break;
            }
        }
        report.released = self.in_flight;
        self.runner.stop();
        self.engine.set_in_flight(0);
        self.engine.release_worker();
        if let Some(reason) = &because {
            tracing::error!(reason = %reason, released = report.released, "webhook worker stopped on its own");
            self.engine.emit(Event::WorkerStopped {
                reason: reason.clone(),
                released: report.released,
            });
        } else {
            tracing::info!(
                finished = report.finished,
                released = report.released,
                "webhook worker stopped"
            );
        }
        self.engine.signal().stopped(because.clone());
        Stopped { report, because }
    }

    /// Learns from the store which accounts have pending deliveries. Returns `false` if the
    /// store failed.
    fn rescan(&mut self) -> bool {
        match self.engine.store().pending_accounts() {
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
            .store()
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
            Err(verdict) => self.engine.signal().complete(Completion {
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
        self.engine.clock().sleep_hint(soonest)
    }
}

fn min_wait(wait: Option<Duration>, other: Duration) -> Option<Duration> {
    Some(wait.map_or(other, |w| w.min(other)))
}
