//! The scheduler and the [`Worker`] handle.
//!
//! One scheduler thread per worker does every store call of delivery, so no store call ever
//! runs on an async executor thread. Each pass it claims due deliveries from the store
//! ([`Outbox::claim`](crate::store::Outbox::claim): earliest due first, each under a lease and a
//! fencing token), within the global bound and each endpoint's share, leaving out held
//! accounts; hands them to a [`Runner`] (tokio tasks, or plain threads); and has their
//! outcomes, taken back through the engine's signal, recorded with the tokens they were
//! claimed under, by a recorder thread (`recorder`) while it goes on claiming: a finished
//! request's place at its endpoint goes to the next attempt at once, and the attempt stays in
//! flight (claimed, counted in the global bound, waited for by a shutdown) until its outcome
//! is recorded.
//! Several processes may claim from one store at once: the store's claims keep them apart.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use jiff::Timestamp;

use crate::blocking::{Runtime, refuse_on, twins};
use crate::delivery::attempt::{Attempt, Completed, Completion, Outcome};
use crate::delivery::core::{Core, StoreProblem};
use crate::delivery::events::Event;
use crate::delivery::recorder::Recorder;
use crate::delivery::signal::Batch;
use crate::error::{Error, Result, error_chain};
use crate::ids::{AccountId, DeliveryId};
use crate::store::{Claim, ClaimRequest, ClaimToken};
use crate::sync::lock;

/// How long to wait before asking a failing store again the first time: soon, since most
/// failures pass at once (a broken connection replaced, a transaction broken off), and an
/// outcome waiting to be recorded holds its delivery; the wait doubles with each try.
const STORE_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two tries of a failing store.
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// After this many failed tries in a row (1.5 s with the doubling waits), the failure is
/// reported (an event, the status).
const REPORT_AFTER: u32 = 5;

/// Sends the attempts the scheduler hands it and reports each completion through the engine.
pub(crate) trait Runner: Send + Sync + 'static {
    /// The scheduler is starting: watch whatever the attempts depend on (the async runtime).
    fn started(&self, _engine: &Arc<dyn Core>) {}
    /// Starts one attempt; its completion is reported with `Signal::complete`.
    fn run(&self, engine: &Arc<dyn Core>, attempt: Attempt, request: Request<Bytes>);
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
    engine: Arc<dyn Core>,
    /// The scheduler thread until it is joined, then what it reported.
    scheduler: Mutex<Scheduled>,
    /// The runtime the attempts run on, where blocking waits are refused.
    runtime: Option<Runtime>,
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
    /// Attempts that finished but whose outcome the failing store never took: their
    /// deliveries stay pending in the store and are sent again by the next worker.
    pub unrecorded: usize,
}

impl Worker {
    pub(crate) fn start(
        engine: Arc<dyn Core>,
        runner: Arc<dyn Runner>,
        global: usize,
        runtime: Option<Runtime>,
    ) -> Result<Self> {
        if !engine.claim_worker() {
            return Err(Error::config(
                "worker",
                "a worker is already running for these webhooks",
            ));
        }
        engine.signal().start();
        let scheduler = Scheduler::new(engine.clone(), runner, global);
        let spawned = std::thread::Builder::new()
            .name("webhook-scheduler".into())
            .spawn(move || scheduler.run());
        match spawned {
            Ok(handle) => Ok(Worker {
                inner: Arc::new(WorkerInner {
                    engine,
                    scheduler: Mutex::new(Scheduled::Running(handle)),
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

    twins! {
        "Worker";

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
        pub async fn shutdown(&self, deadline: Duration) -> Result<ShutdownReport>;
        /// [`shutdown`](Self::shutdown) for threads: blocks for at most about `deadline`.
        pub fn shutdown_blocking;
        {
            let inner = self.inner.clone();
            inner.engine.signal().shutdown(Instant::now() + deadline);
            move || inner.join()
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
        /// down), since nothing pending would be delivered; [`Error::Store`] or
        /// [`Error::StoreTimeout`] when the store cannot be read (a
        /// `PostgresStore` first tries for its `retry_for` on fresh
        /// connections), or when the worker reported that it cannot read from it; a caller that
        /// gives a failing store a while, as the `dialer` example gives it 30 s, calls again;
        /// [`Error::RuntimeShuttingDown`].
        pub async fn wait_idle(&self, timeout: Duration) -> Result<bool>;
        pub fn wait_idle_blocking;
        {
            let inner = self.inner.clone();
            move || inner.wait_idle(timeout)
        }
    }

    /// How many attempts are in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.engine.in_flight()
    }

    /// Whether the scheduler is running (not shut down, not stopped on its own).
    pub fn is_running(&self) -> bool {
        self.inner.engine.signal().passes().1
    }

    /// The check every `_blocking` method makes first: refused on a thread of the runtime the
    /// attempts run on (see [`refuse_on`]).
    fn refuse_blocking(&self, method: &'static str, instead: &'static str) -> Result<()> {
        refuse_on(self.inner.runtime.as_ref(), method, instead)
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
            if let Some(problem) = self.engine.store_problem()
                && problem.reads
            {
                // Nothing pending can be claimed, let alone delivered, until it is repaired.
                return Err(Error::Store {
                    message: format!("the outbox keeps failing to read: {}", problem.cause),
                    source: None,
                });
            }
            // Nothing pending, and every outcome of this worker recorded and reported (an
            // outcome is visible in the store a moment before its events are sent).
            // (The store is asked first: a store that cannot answer is an error, whatever is
            // in flight.)
            if !self.engine.store().has_pending()? && self.engine.in_flight() == 0 {
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

struct Scheduler {
    engine: Arc<dyn Core>,
    runner: Arc<dyn Runner>,
    global: usize,
    per_endpoint: usize,
    /// Attempts in flight, from their claim until their outcome is recorded: the claim each
    /// was made under.
    in_flight: HashMap<DeliveryId, InFlight>,
    /// Requests in flight per account: an attempt's place at its endpoint is free once its
    /// request has finished, while its outcome is still being recorded.
    per_account: HashMap<AccountId, usize>,
    /// Records outcomes on a thread of its own while this one claims and starts attempts.
    recorder: Option<Recorder>,
    /// The held accounts, as of `held_version`.
    held: Vec<AccountId>,
    held_version: u64,
    /// Accounts claimed from but found closed (no settings at all): left out until settings
    /// change.
    closed: HashSet<AccountId>,
    /// Outcomes the store could not record: kept until it can, their places still taken, so
    /// that their deliveries are not attempted again meanwhile.
    unrecorded: Vec<Completion>,
    /// Set while the store fails: no new attempts, tries again at `retry_at`.
    failing: Option<Failing>,
    /// Claims the store could not take back (a failing write): given back once it works.
    unreleased: Vec<(DeliveryId, ClaimToken)>,
    /// The store's last answer to `next_due`, used again for [`NEXT_DUE_REUSE`].
    next_due: Option<NextDue>,
}

/// How long the scheduler goes on with the store's answer to `next_due` before asking again.
/// Under load a pass comes every millisecond or two, each after a claim that takes what is
/// due now; asking when the next delivery is due after every one of them cost a store round
/// trip per pass (a tenth of a PostgreSQL worker's passes). While an answer is used again, the
/// scheduler sleeps no longer than until it is this old, so a delivery due meanwhile (a retry
/// coming due, another process's submit whose notice was lost) is claimed at most this late.
const NEXT_DUE_REUSE: Duration = Duration::from_millis(20);

/// An answer of the store's `next_due`, and when it was asked.
#[derive(Debug, Clone, Copy)]
struct NextDue {
    asked: Instant,
    at: Option<Timestamp>,
}

/// An attempt the scheduler holds: the claim it was made under, and whether its request still
/// takes a place at its endpoint.
#[derive(Debug)]
struct InFlight {
    account: AccountId,
    token: ClaimToken,
    sending: bool,
}

/// A store that is failing, as the scheduler sees it.
#[derive(Debug)]
struct Failing {
    cause: String,
    /// The last failure was a read (a claim), not only a write.
    reads: bool,
    tries: u32,
    retry_at: Instant,
    reported: bool,
}

/// Where the scheduler's loop stands between passes.
#[derive(Default)]
struct Running {
    /// Set by a shutdown: when to stop waiting for what is in flight.
    deadline: Option<Instant>,
    /// The settle requests made up to the last batch taken.
    requested: u64,
    report: ShutdownReport,
    /// Why the worker stops on its own, if it does.
    because: Option<String>,
}

impl Scheduler {
    fn new(engine: Arc<dyn Core>, runner: Arc<dyn Runner>, global: usize) -> Self {
        let per_endpoint = engine.per_endpoint().min((global / 2).max(1));
        Scheduler {
            engine,
            runner,
            global,
            per_endpoint,
            in_flight: HashMap::new(),
            per_account: HashMap::new(),
            recorder: None,
            held: Vec::new(),
            held_version: u64::MAX,
            closed: HashSet::new(),
            unrecorded: Vec::new(),
            failing: None,
            unreleased: Vec::new(),
            next_due: None,
        }
    }

    fn run(mut self) -> Stopped {
        self.runner.started(&self.engine);
        self.recorder = Recorder::start(self.engine.clone());
        self.engine
            .observer()
            .worker_started(self.engine.store_problem().is_some());
        let poll = self.engine.store().poll_interval();
        let mut run = Running::default();
        while let ControlFlow::Continue(wait) = self.pass(&run, poll) {
            let batch = self.engine.signal().take(wait);
            if self.take_batch(batch, &mut run).is_break() {
                break;
            }
        }
        self.stop(run)
    }

    /// One pass: tries a failing store again when due, claims and starts what is due and
    /// fits, publishes its progress, and says how long to wait for the signal; or breaks once
    /// a shutdown has nothing more to finish.
    fn pass(&mut self, run: &Running, poll: Option<Duration>) -> ControlFlow<(), Option<Duration>> {
        let stalled = self
            .failing
            .as_ref()
            .is_some_and(|f| Instant::now() < f.retry_at);
        if self.failing.is_some() && !stalled {
            self.retry_store();
        }
        let now = self.engine.clock().now();
        if run.deadline.is_none()
            && self.failing.is_none()
            && let Err(e) = self.fill(now)
        {
            self.store_failed(&e, true);
        }
        let stalled = self.failing.is_some();
        self.engine.set_in_flight(self.in_flight.len());
        let pending_in = self.read_pending(stalled);
        // A settle request is answered once what was handed to the recorder before it
        // has come back recorded.
        let answered = match &mut self.recorder {
            Some(recorder) => recorder.answerable(run.requested),
            None => run.requested,
        };
        self.engine.signal().pass_done(answered);

        let mut wait = if run.deadline.is_some() || stalled {
            None
        } else {
            self.wait(now)
        };
        if let Some(poll) = poll
            && run.deadline.is_none()
        {
            // A notice from another process may be lost: look again at least this often.
            wait = min_wait(wait, poll);
        }
        if let Some(f) = &self.failing {
            wait = min_wait(wait, f.retry_at.saturating_duration_since(Instant::now()));
        }
        if let Some(next) = pending_in
            && run.deadline.is_none()
        {
            wait = min_wait(wait, next);
        }

        if let Some(d) = run.deadline {
            // What is left in flight only waits for the store: nothing more to finish.
            if self.in_flight.len() == self.unrecorded.len() || Instant::now() >= d {
                return ControlFlow::Break(());
            }
            wait = min_wait(wait, d.saturating_duration_since(Instant::now()));
        }
        ControlFlow::Continue(wait)
    }

    /// Takes what the signal brought: a shutdown's deadline, completions and recorded
    /// outcomes, changed settings; breaks when the runtime the attempts ran on is gone.
    fn take_batch(&mut self, batch: Batch, run: &mut Running) -> ControlFlow<()> {
        run.requested = batch.requested;
        if run.deadline.is_none() && batch.shutdown.is_some() {
            tracing::info!(
                in_flight = self.in_flight.len(),
                "webhook worker shutting down"
            );
        }
        run.deadline = match (run.deadline, batch.shutdown) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let recorded = self.take_completions(batch.completions, batch.recorded);
        if run.deadline.is_some() {
            run.report.finished += recorded;
        }
        if batch.settings_changed {
            self.closed.clear();
            self.next_due = None;
        }
        if batch.runtime_gone {
            run.because =
                Some("the tokio runtime the worker's attempts ran on has shut down".to_owned());
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// The loop is over: records what the recorder holds, tries a failing store a last time,
    /// releases what is left in flight and reports.
    fn stop(mut self, run: Running) -> Stopped {
        let Running {
            mut report,
            because,
            deadline,
            ..
        } = run;
        if let Some(recorder) = self.recorder.take() {
            // What it holds is recorded before it stops; a shutdown's deadline does not cut
            // a write short (the outcome is known: recording it spares a second request).
            recorder.stop();
            let recorded = self.take_completions(Vec::new(), self.engine.signal().take_recorded());
            if deadline.is_some() {
                report.finished += recorded;
            }
        }
        if !self.unrecorded.is_empty() {
            // A last try, when the store's next try is due (a stop does not ask a failing
            // store sooner than the loop would: a store that retries inside, as PostgreSQL's
            // does, would hold the stop for its whole retry bound again); what still cannot
            // be recorded stays pending in the store, and is sent again, with the same
            // webhook-id, by the next worker.
            if self
                .failing
                .as_ref()
                .is_none_or(|f| f.retry_at <= Instant::now())
            {
                self.retry_store();
            }
            report.unrecorded = self.unrecorded.len();
            for c in std::mem::take(&mut self.unrecorded) {
                self.in_flight.remove(&c.attempt.delivery);
            }
        }
        report.released = self.in_flight.len();
        self.runner.stop();
        self.release_in_flight();
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

    /// The accounts a claim leaves out: held ones, closed ones, and those with every place of
    /// their endpoint in use.
    fn skip(&mut self) -> Vec<AccountId> {
        let version = self.engine.held_version();
        if version != self.held_version {
            self.held = self.engine.held_accounts();
            self.held_version = version;
        }
        let mut skip = self.held.clone();
        skip.extend(self.closed.iter().cloned());
        skip.extend(
            self.per_account
                .iter()
                .filter(|(_, n)| **n >= self.per_endpoint)
                .map(|(a, _)| a.clone()),
        );
        skip
    }

    /// Claims and starts every attempt that is due and fits the bounds.
    fn fill(&mut self, now: Timestamp) -> Result<()> {
        loop {
            let room = self.global.saturating_sub(self.in_flight.len());
            if room == 0 {
                return Ok(());
            }
            let skip = self.skip();
            let in_flight: Vec<(AccountId, usize)> = self
                .per_account
                .iter()
                .map(|(account, n)| (account.clone(), *n))
                .collect();
            let finished: Vec<ClaimToken> = self
                .in_flight
                .values()
                .filter(|held| !held.sending)
                .map(|held| held.token)
                .collect();
            let request = ClaimRequest {
                now,
                limit: room,
                lease: self.engine.lease(),
                skip: &skip,
                per_account: Some(self.per_endpoint),
                in_flight: &in_flight,
                finished: &finished,
            };
            let claims = self.engine.store().claim(&request)?;
            let full = claims.len() == room;
            let mut started = 0;
            let mut give_back = Vec::new();
            for claim in claims {
                let account = claim.delivery.account.clone();
                let busy = self.per_account.get(&account).copied().unwrap_or(0);
                if busy >= self.per_endpoint {
                    // More of one account than its endpoint's share: the rest wait.
                    give_back.push((claim.delivery.id, claim.token));
                } else if !self.engine.lane_open(&account) {
                    // No settings at all, or closed since the held list was read.
                    self.closed.insert(account);
                    give_back.push((claim.delivery.id, claim.token));
                } else {
                    self.engine.observer().touched(&account);
                    *self.per_account.entry(account.clone()).or_default() += 1;
                    self.in_flight.insert(
                        claim.delivery.id.clone(),
                        InFlight {
                            account,
                            token: claim.token,
                            sending: true,
                        },
                    );
                    self.start(claim);
                    started += 1;
                }
            }
            if !give_back.is_empty()
                && let Err(e) = self.engine.store().release(&give_back)
            {
                // Given back once the store works; until then their leases keep them out.
                self.unreleased.extend(give_back);
                self.store_failed(&e, false);
                return Ok(());
            }
            if !full || started == 0 {
                return Ok(());
            }
        }
    }

    /// The store failed (a read when `read`): stop making attempts, try again later, and
    /// after a few tries say so once.
    fn store_failed(&mut self, e: &Error, read: bool) {
        self.store_failed_because(error_chain(e), read);
    }

    /// [`store_failed`](Self::store_failed) with the failure already put in words.
    fn store_failed_because(&mut self, cause: String, read: bool) {
        let failing = self.failing.get_or_insert_with(|| Failing {
            cause: String::new(),
            reads: false,
            tries: 0,
            retry_at: Instant::now(),
            reported: false,
        });
        failing.tries += 1;
        failing.reads = read;
        failing.cause = cause;
        let pause = STORE_BACKOFF
            .saturating_mul(1 << failing.tries.min(5).saturating_sub(1))
            .min(STORE_BACKOFF_MAX);
        failing.retry_at = Instant::now() + pause;
        tracing::error!(error = %failing.cause, tries = failing.tries, retry_in_ms = pause.as_millis() as u64, holding = self.unrecorded.len(), "the outbox store is failing; no new attempts until it works");
        if failing.reported || failing.tries >= REPORT_AFTER {
            let first = !failing.reported;
            failing.reported = true;
            // Once reported, kept current: a write failure may have become a read failure.
            self.engine.set_store_problem(Some(StoreProblem {
                cause: failing.cause.clone(),
                reads: failing.reads,
            }));
            if first {
                self.engine.emit(Event::StoreFailing {
                    reason: failing.cause.clone(),
                    reads: failing.reads,
                    holding: self.unrecorded.len(),
                });
            }
        }
    }

    /// Tries a failing store again: first the outcomes it could not record, then a claim.
    fn retry_store(&mut self) {
        if let Err(e) = self.extend_unrecorded() {
            // The outcomes' writes would meet the same failure (a store that retries
            // internally, as PostgreSQL's does, would wait it out a second time).
            self.store_failed(&e, false);
            return;
        }
        let held = std::mem::take(&mut self.unrecorded);
        let count = held.len();
        let outcomes = self.engine.complete_all(&held);
        let mut cause = None;
        for (c, outcome) in held.into_iter().zip(outcomes) {
            match outcome {
                Completed::NotRecorded(why) => {
                    cause.get_or_insert(why);
                    self.unrecorded.push(c);
                }
                other => self.completed(c, other),
            }
        }
        if let Some(why) = cause {
            self.store_failed_because(why, false);
            return;
        }
        if !self.unreleased.is_empty() {
            if let Err(e) = self.engine.store().release(&self.unreleased) {
                self.store_failed(&e, false);
                return;
            }
            self.unreleased.clear();
        }
        // Writes work; a claim tells whether reads do.
        let skip = self.skip();
        let probe = self
            .engine
            .store()
            .next_due(self.engine.clock().now(), &skip);
        if let Err(e) = probe {
            self.store_failed(&e, true);
            return;
        }
        if let Some(failing) = self.failing.take() {
            tracing::info!(recorded = count, "the outbox store works again");
            if failing.reported {
                self.engine.set_store_problem(None);
                self.engine.emit(Event::StoreRecovered { recorded: count });
            }
        }
    }

    /// Keeps the claims of attempts whose outcomes wait to be recorded from running out, so
    /// that no other process claims those deliveries and sends them again meanwhile.
    ///
    /// # Errors
    ///
    /// What the store answered, when it could not extend them.
    fn extend_unrecorded(&self) -> crate::Result<()> {
        let claims: Vec<(DeliveryId, ClaimToken)> = self
            .unrecorded
            .iter()
            .filter_map(|c| {
                let id = &c.attempt.delivery;
                self.in_flight.get(id).map(|held| (id.clone(), held.token))
            })
            .collect();
        if claims.is_empty() {
            return Ok(());
        }
        let until = self
            .engine
            .clock()
            .now()
            .checked_add(self.engine.lease())
            .unwrap_or(Timestamp::MAX);
        self.engine
            .store()
            .extend_leases(&claims, until)
            .inspect_err(|e| {
                tracing::warn!(error = %e, held = claims.len(), "could not extend the leases of outcomes waiting to be recorded");
            })
    }

    fn start(&self, claim: Claim) {
        let attempt = Attempt::new(&claim.delivery, claim.token);
        match self.engine.prepare(&claim.delivery) {
            Ok(request) => self.runner.run(&self.engine, attempt, request),
            Err(verdict) => self.engine.signal().complete(Completion {
                attempt,
                outcome: Outcome::NotSent(verdict),
                latency: Duration::ZERO,
            }),
        }
    }

    /// Takes a pass's new completions and the recorder's results: frees each finished
    /// request's place at its endpoint, hands the outcomes to the recorder (or records them
    /// here when there is none), and finishes each recorded one. Returns how many were
    /// recorded or kept as unrecorded in this pass.
    fn take_completions(
        &mut self,
        completions: Vec<Completion>,
        recorded: Vec<(Completion, Completed)>,
    ) -> usize {
        for c in &completions {
            self.runner.finished(&c.attempt.delivery);
            self.request_done(&c.attempt.delivery);
        }
        let mut results = recorded;
        if let Some(recorder) = &mut self.recorder {
            recorder.came_back(results.len());
            recorder.record(completions);
        } else {
            // Recorded together: a durable store makes them durable in one write.
            let outcomes = self.engine.complete_all(&completions);
            results.extend(completions.into_iter().zip(outcomes));
        }
        let n = results.len();
        for (c, outcome) in results {
            self.completed(c, outcome);
        }
        n
    }

    /// The attempt's request has finished: its place at the endpoint is free for the next,
    /// while the attempt stays in flight until its outcome is recorded.
    fn request_done(&mut self, id: &DeliveryId) {
        let Some(held) = self.in_flight.get_mut(id) else {
            return;
        };
        if std::mem::replace(&mut held.sending, false)
            && let Some(n) = self.per_account.get_mut(&held.account)
        {
            *n -= 1;
            if *n == 0 {
                self.per_account.remove(&held.account);
            }
        }
    }

    /// Forgets the attempt once its outcome is recorded; keeps it (and the outcome) when the
    /// store could not record it.
    fn completed(&mut self, c: Completion, result: Completed) {
        let id = &c.attempt.delivery;
        self.request_done(id);
        if let Completed::NotRecorded(why) = result {
            self.unrecorded.push(c);
            self.store_failed_because(why, false);
            return;
        }
        self.engine.observer().touched(&c.attempt.account);
        self.in_flight.remove(id);
    }

    /// Reads the store's pending counts for the `store_pending` gauge when a reading is due,
    /// unless the store is failing. Returns how long until the next reading is wanted, if one
    /// is.
    fn read_pending(&self, stalled: bool) -> Option<Duration> {
        if stalled {
            return None;
        }
        let engine = &self.engine;
        engine.observer().read_pending(
            engine.store(),
            &|| engine.account_ids(),
            engine.account_count(),
        )
    }

    /// Gives the claims of released attempts back, so the next worker takes them at once.
    fn release_in_flight(&mut self) {
        let claims: Vec<(DeliveryId, ClaimToken)> = self
            .in_flight
            .drain()
            .map(|(id, held)| (id, held.token))
            .collect();
        self.per_account.clear();
        if !claims.is_empty()
            && let Err(e) = self.engine.store().release(&claims)
        {
            tracing::warn!(error = %e, "could not give claims back; their leases will run out");
        }
    }

    /// How long to sleep before the next delivery is due for an account with room; `None`
    /// means until signalled.
    fn wait(&mut self, now: Timestamp) -> Option<Duration> {
        if self.in_flight.len() >= self.global {
            return None;
        }
        let (at, reused_until) = match self.next_due {
            Some(last) if last.asked.elapsed() < NEXT_DUE_REUSE => {
                (last.at, Some(last.asked + NEXT_DUE_REUSE))
            }
            _ => {
                let skip = self.skip();
                match self.engine.store().next_due(now, &skip) {
                    Ok(at) => {
                        self.next_due = Some(NextDue {
                            asked: Instant::now(),
                            at,
                        });
                        (at, None)
                    }
                    Err(e) => {
                        self.next_due = None;
                        self.store_failed(&e, true);
                        return None;
                    }
                }
            }
        };
        let wait = match at {
            // Due but not claimable now (another process holds it): look again shortly.
            Some(at) if at <= now => Some(Duration::from_millis(10)),
            Some(at) => self.engine.clock().sleep_hint(at),
            None => None,
        };
        match reused_until {
            Some(until) => min_wait(wait, until.saturating_duration_since(Instant::now())),
            None => wait,
        }
    }
}

fn min_wait(wait: Option<Duration>, other: Duration) -> Option<Duration> {
    Some(wait.map_or(other, |w| w.min(other)))
}
