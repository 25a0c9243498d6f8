//! The shared core of delivery: accounts, endpoint health, the store, the clock and the event
//! callback, and what happens when an attempt is prepared and when it completes.
//!
//! No runtime here: the scheduler ([`crate::delivery::worker`]) calls in from its own thread,
//! and runners report completions through [`Signal`].

mod operations;
mod settings;
mod signal;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use jiff::Timestamp;

use crate::account::Account;
use crate::campaign::SendDecision;
use crate::delivery::classify::{Verdict, classify};
use crate::delivery::clock::Clock;
use crate::delivery::events::{Event, FailureKind, PauseReason};
use crate::delivery::health::EndpointHealth;
use crate::delivery::schedule::{RetrySchedule, random_unit};
use crate::delivery::status::account_on;
use crate::dispatch::{ReceiverResponse, TransportError};
use crate::error::Error;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::policy::UrlPolicy;
use crate::request::build_request_at;
use crate::store::{AttemptRecord, ClaimToken, Delivery, NextStep, Store};
use crate::sync::lock;

pub(crate) use signal::Signal;

/// The event callback.
pub(crate) type EventSink = Arc<dyn Fn(&Event) + Send + Sync + 'static>;

/// Limits chosen at build time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_concurrency: usize,
    pub(crate) per_endpoint: usize,
    pub(crate) pause_after: Duration,
}

/// Everything the facade, the scheduler and the runners share. Its fields are its own: the
/// facade calls the operations in `operations.rs`, the scheduler the accessors below.
pub(crate) struct Engine {
    store: Arc<dyn Store>,
    policy: UrlPolicy,
    clock: Arc<dyn Clock>,
    on_event: Option<EventSink>,
    limits: Limits,
    accounts: RwLock<HashMap<AccountId, Account>>,
    health: Mutex<HashMap<AccountId, EndpointHealth>>,
    /// Serialises administrative changes to accounts' settings (read, change, save, put in
    /// force) and the following of other processes' saves; holds the version of each
    /// account's settings in force here.
    admin: Mutex<settings::Versions>,
    /// Serialises changes to endpoints' health (read, change, save, put in force); holds the
    /// version of each endpoint's health in force here (none for one never saved).
    health_saves: Mutex<settings::Versions>,
    signal: Arc<Signal>,
    /// Kept alive here; the clock holds only a weak reference.
    _clock_wake: Arc<dyn Fn() + Send + Sync>,
    worker_running: AtomicBool,
    in_flight: AtomicUsize,
    /// Accounts whose deliveries are held (webhook off, no URL, endpoint paused), kept up to
    /// date on every change to an account's settings or health, and bumped `held_version`.
    held: Mutex<HashSet<AccountId>>,
    held_version: AtomicU64,
    /// The longest attempt time limit of any account: what a claim's lease must outlast.
    longest_timeout: AtomicU64,
    /// Where settings changes made by other processes were last read up to.
    settings_cursor: AtomicU64,
    /// The store failure the worker reported and has not seen recover from, if any.
    store_problem: Mutex<Option<StoreProblem>>,
    #[cfg(feature = "metrics")]
    metrics: crate::delivery::metrics::Metrics,
}

/// A store failure the worker reported: what failed and whether reads fail too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreProblem {
    pub(crate) cause: String,
    /// Reads (claims) fail, not only writes: nothing pending can be delivered until the store
    /// is repaired.
    pub(crate) reads: bool,
}

/// How much longer than the longest attempt time limit a claim's lease lasts: the time to
/// record the outcome. A process that dies mid-attempt has its deliveries claimed again by
/// another this long after the attempt's time limit at most.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_secs(5);

impl Engine {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        policy: UrlPolicy,
        clock: Arc<dyn Clock>,
        on_event: Option<EventSink>,
        limits: Limits,
        #[cfg(feature = "metrics")] metrics: crate::delivery::metrics::Metrics,
    ) -> crate::error::Result<Self> {
        // Every account's settings and every endpoint's health, as saved: preferences,
        // campaign switches and pauses outlive a restart (and are the fleet's).
        let snapshot = store.load_settings()?;
        let mut accounts = HashMap::new();
        let mut account_versions = settings::Versions::new();
        for record in &snapshot.accounts {
            let account = Account::from_storage_json(&record.json)?;
            account_versions.insert(account.id().clone(), record.version);
            accounts.insert(account.id().clone(), account);
        }
        let mut health = HashMap::new();
        let mut health_versions = settings::Versions::new();
        for (account, record) in &snapshot.health {
            health.insert(account.clone(), EndpointHealth::from_json(&record.json)?);
            health_versions.insert(account.clone(), record.version);
        }
        let signal = Arc::new(Signal::default());
        let woken = signal.clone();
        let clock_wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || woken.clock_moved());
        clock.watch(crate::delivery::clock::ClockWaker::new(&clock_wake));
        let engine = Engine {
            store,
            policy,
            clock,
            on_event,
            limits,
            accounts: RwLock::new(accounts),
            health: Mutex::new(health),
            admin: Mutex::new(account_versions),
            health_saves: Mutex::new(health_versions),
            signal,
            _clock_wake: clock_wake,
            worker_running: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            held: Mutex::new(HashSet::new()),
            held_version: AtomicU64::new(0),
            longest_timeout: AtomicU64::new(0),
            settings_cursor: AtomicU64::new(snapshot.cursor),
            store_problem: Mutex::new(None),
            #[cfg(feature = "metrics")]
            metrics,
        };
        engine.refresh_all();
        Ok(engine)
    }

    /// Recomputes every account's held state and the longest attempt time limit.
    fn refresh_all(&self) {
        let accounts = self.accounts();
        let health = lock(&self.health);
        let mut held = HashSet::new();
        let mut longest = Duration::ZERO;
        for (id, account) in accounts.iter() {
            longest = longest.max(account.preferences().attempt_timeout());
            if !open(Some(account), health.get(id)) {
                held.insert(id.clone());
            }
        }
        for (id, h) in health.iter() {
            if h.is_paused() {
                held.insert(id.clone());
            }
        }
        drop((accounts, health));
        self.longest_timeout
            .store(longest.as_millis() as u64, Ordering::Relaxed);
        *lock(&self.held) = held;
        self.held_version.fetch_add(1, Ordering::SeqCst);
    }

    /// An account's settings or health changed: recompute whether it is held, and tell the
    /// scheduler.
    pub(crate) fn account_changed(&self, account: &AccountId) {
        let is_open = {
            let accounts = self.accounts();
            let acc = accounts.get(account);
            if let Some(acc) = acc {
                let timeout = acc.preferences().attempt_timeout().as_millis() as u64;
                self.longest_timeout.fetch_max(timeout, Ordering::Relaxed);
            }
            open(acc, lock(&self.health).get(account))
        };
        let changed = {
            let mut held = lock(&self.held);
            if is_open {
                held.remove(account)
            } else {
                held.insert(account.clone())
            }
        };
        if changed {
            self.held_version.fetch_add(1, Ordering::SeqCst);
        }
        self.signal.settings_changed();
    }

    /// The store failure the worker reports, or `None` once the store works again.
    pub(crate) fn set_store_problem(&self, problem: Option<StoreProblem>) {
        #[cfg(feature = "metrics")]
        self.metrics.store_failing(problem.is_some());
        *lock(&self.store_problem) = problem;
    }

    pub(crate) fn store_problem(&self) -> Option<StoreProblem> {
        lock(&self.store_problem).clone()
    }

    /// The held accounts, and the version to tell when they change.
    pub(crate) fn held_accounts(&self) -> Vec<AccountId> {
        lock(&self.held).iter().cloned().collect()
    }

    pub(crate) fn held_version(&self) -> u64 {
        self.held_version.load(Ordering::SeqCst)
    }

    /// How long a claim's lease lasts: the longest attempt time limit and [`LEASE_MARGIN`].
    pub(crate) fn lease(&self) -> Duration {
        Duration::from_millis(self.longest_timeout.load(Ordering::Relaxed)) + LEASE_MARGIN
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    pub(crate) fn policy(&self) -> &UrlPolicy {
        &self.policy
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn signal(&self) -> &Signal {
        &self.signal
    }

    /// Attempts in flight, as the scheduler last published.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.in_flight(n);
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn metrics(&self) -> &crate::delivery::metrics::Metrics {
        &self.metrics
    }

    /// Every account this process has settings for.
    #[cfg(feature = "metrics")]
    pub(crate) fn account_ids(&self) -> Vec<AccountId> {
        self.accounts().keys().cloned().collect()
    }

    /// How many accounts this process has settings for.
    #[cfg(feature = "metrics")]
    pub(crate) fn account_count(&self) -> usize {
        self.accounts().len()
    }

    /// Takes the one worker place; `false` if a worker is running already.
    pub(crate) fn claim_worker(&self) -> bool {
        self.worker_running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    pub(crate) fn release_worker(&self) {
        self.worker_running.store(false, Ordering::SeqCst);
    }

    fn accounts(&self) -> RwLockReadGuard<'_, HashMap<AccountId, Account>> {
        crate::sync::read(&self.accounts)
    }

    fn accounts_mut(&self) -> RwLockWriteGuard<'_, HashMap<AccountId, Account>> {
        crate::sync::write(&self.accounts)
    }

    fn health_of(&self, account: &AccountId) -> EndpointHealth {
        lock(&self.health).get(account).cloned().unwrap_or_default()
    }

    /// Hands `event` to the dialer's callback. A panicking callback is contained: it must not
    /// stop deliveries.
    pub(crate) fn emit(&self, event: Event) {
        if let Some(sink) = &self.on_event {
            let call = std::panic::AssertUnwindSafe(|| sink(&event));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!("the webhook event callback panicked");
            }
        }
    }

    /// Whether the account's pending deliveries may be attempted now: webhook on, URL set,
    /// endpoint not paused. Otherwise they are held.
    pub(crate) fn lane_open(&self, account: &AccountId) -> bool {
        open(
            self.accounts().get(account),
            lock(&self.health).get(account),
        )
    }

    /// The request for one attempt, built from the account's *current* preferences at the
    /// clock's current time; or, when
    /// the URL is refused by the policy or the request cannot be built, the failure to record
    /// without sending anything.
    pub(crate) fn prepare(&self, d: &Delivery) -> Result<Request<Bytes>, Verdict> {
        let accounts = self.accounts();
        let refuse = |reason: String| Verdict::Fail {
            status: None,
            reason,
            kind: FailureKind::Refused,
        };
        let Some(account) = accounts.get(&d.account) else {
            return Err(refuse("the account is unknown".into()));
        };
        let prefs = account.preferences();
        if let Some(url) = prefs.url()
            && let Err(e) = self.policy.check_url(url.as_url())
        {
            return Err(refuse(format!("refused by address policy: {e}")));
        }
        // The attempt's time comes from the engine's clock: it is the signed webhook-timestamp.
        build_request_at(prefs, &d.id, &d.body, self.clock.now()).map_err(|e| refuse(e.to_string()))
    }

    /// Records the outcomes of `completions` in one store call, so that a durable store makes
    /// them durable together, then, in order, updates each endpoint's health and tells the
    /// dialer. Returns, for each completion, what the scheduler needs to know.
    pub(crate) fn complete_all(&self, completions: &[Completion]) -> Vec<Completed> {
        if completions.is_empty() {
            return Vec::new();
        }
        let now = self.clock.now();
        let decided: Vec<Decided> = completions.iter().map(|c| self.decide(c, now)).collect();
        let writes: Vec<(DeliveryId, ClaimToken, AttemptRecord)> = completions
            .iter()
            .zip(&decided)
            .map(|(c, d)| {
                (
                    c.attempt.delivery.clone(),
                    c.attempt.token,
                    d.record.clone(),
                )
            })
            .collect();
        let mut recorded = self.store.record_attempts(&writes);
        // A store answers once per attempt; one that does not has recorded nothing it did not
        // answer for.
        recorded.truncate(completions.len());
        recorded.resize_with(completions.len(), || {
            Err(Error::Store {
                message: "the store gave no answer for this attempt".into(),
                source: None,
            })
        });
        completions
            .iter()
            .zip(decided)
            .zip(recorded)
            .map(|((c, d), r)| self.finish(c, d, r, now))
            .collect()
    }

    /// When the attempt after attempt `number` of a delivery of `account` is due under its retry
    /// schedule (the default one if the account is gone), or `None` when none is left.
    fn next_attempt_at(
        &self,
        account: &AccountId,
        number: u32,
        now: Timestamp,
        retry_after: Option<Duration>,
    ) -> Option<Timestamp> {
        let accounts = self.accounts();
        let default;
        let schedule = match accounts.get(account) {
            Some(acc) => acc.preferences().retry_schedule(),
            None => {
                default = RetrySchedule::default();
                &default
            }
        };
        schedule.next_attempt_at(number, now, retry_after, random_unit())
    }

    /// What an attempt's outcome means: the verdict, and the record to store.
    fn decide(&self, c: &Completion, now: Timestamp) -> Decided {
        let a = &c.attempt;
        let verdict = match &c.outcome {
            Outcome::Sent(result) => classify(result, now),
            Outcome::NotSent(verdict) => verdict.clone(),
        };
        let mut failed_for_good = None;
        let (next, error) = match &verdict {
            Verdict::Delivered { .. } => (NextStep::Delivered, None),
            Verdict::Retry {
                reason,
                retry_after,
                ..
            } => match self.next_attempt_at(&a.account, a.number, now, *retry_after) {
                Some(at) => (NextStep::RetryAt(at), Some(reason.clone())),
                None => {
                    let reason = format!("{reason}; no retries left");
                    failed_for_good = Some((FailureKind::Expired, reason.clone()));
                    (NextStep::Failed, Some(reason))
                }
            },
            Verdict::Fail { reason, kind, .. } => {
                failed_for_good = Some((*kind, reason.clone()));
                (NextStep::Failed, Some(reason.clone()))
            }
            // The delivery waits, due at once, for the endpoint to be resumed.
            Verdict::Gone { reason } => (NextStep::RetryAt(now), Some(reason.clone())),
        };
        let record = AttemptRecord {
            at: now,
            status: verdict.status(),
            error,
            next,
        };
        a.span.record("status", verdict.status());
        a.span.record("latency_ms", c.latency.as_millis() as u64);
        let paused_first = matches!(verdict, Verdict::Gone { .. })
            .then(|| self.update_health(&a.account, &verdict, now));
        Decided {
            paused_first,
            verdict,
            record,
            failed_for_good,
        }
    }

    /// After the store's answer: the endpoint's health, the events, and the scheduler's next
    /// step.
    fn finish(
        &self,
        c: &Completion,
        decided: Decided,
        recorded: crate::error::Result<()>,
        now: Timestamp,
    ) -> Completed {
        let a = &c.attempt;
        let span = &a.span;
        let Decided {
            verdict,
            record,
            failed_for_good,
            paused_first,
        } = decided;
        let (next, error) = (record.next, record.error);
        match recorded {
            Ok(()) => {}
            Err(Error::UnknownDelivery(_)) => {
                tracing::debug!(parent: span, "delivery removed while in flight");
                return Completed::Forgotten;
            }
            Err(Error::LeaseLost { .. }) => {
                // Its lease ran out and another claim took it: that claim's outcome stands.
                tracing::warn!(parent: span, "the claim's lease ran out before its outcome was recorded; not recorded");
                return Completed::Forgotten;
            }
            Err(e) => {
                tracing::error!(parent: span, error = %e, "could not record the attempt's outcome; it is kept and recorded when the store recovers");
                return Completed::NotRecorded(error_chain(&e));
            }
        }

        let paused = match paused_first {
            Some(paused) => paused,
            None => self.update_health(&a.account, &verdict, now),
        };

        // Recorded: counted, as the events below report it.
        #[cfg(feature = "metrics")]
        {
            self.metrics.attempt(&a.account, &verdict, c.latency);
            if matches!(verdict, Verdict::Delivered { .. }) {
                self.metrics.delivery(&a.account, "delivered");
            } else if failed_for_good.is_some() {
                self.metrics.delivery(&a.account, "failed");
            }
        }

        match &verdict {
            Verdict::Delivered { status } => {
                tracing::info!(parent: span, outcome = "delivered", "webhook delivered");
                self.emit(Event::AttemptSucceeded {
                    delivery: a.delivery.clone(),
                    account: a.account.clone(),
                    campaign: a.campaign.clone(),
                    attempt: a.number,
                    status: *status,
                    latency: c.latency,
                });
            }
            _ => {
                let next_attempt_at = match next {
                    NextStep::RetryAt(at) if !matches!(verdict, Verdict::Gone { .. }) => Some(at),
                    _ => None,
                };
                let reason = error.clone().unwrap_or_default();
                tracing::warn!(parent: span, outcome = "failed", reason = %reason, next_attempt_at = ?next_attempt_at, "webhook attempt failed");
                self.emit(Event::AttemptFailed {
                    delivery: a.delivery.clone(),
                    account: a.account.clone(),
                    campaign: a.campaign.clone(),
                    attempt: a.number,
                    status: verdict.status(),
                    reason,
                    next_attempt_at,
                });
            }
        }
        if let Some((kind, reason)) = failed_for_good {
            tracing::warn!(parent: span, kind = kind.as_str(), "webhook delivery failed for good");
            self.emit(Event::DeliveryFailed {
                delivery: a.delivery.clone(),
                account: a.account.clone(),
                campaign: a.campaign.clone(),
                attempts: a.number,
                kind,
                reason,
            });
        }
        if let Some(reason) = paused {
            tracing::warn!(account = %a.account, reason = reason.describe(), "webhook endpoint paused");
            self.emit(Event::EndpointPaused {
                account: a.account.clone(),
                reason,
                at: now,
            });
        }
        match next {
            NextStep::RetryAt(at) => Completed::RetryAt(at),
            _ => Completed::Done,
        }
    }

    /// Updates the endpoint's health with an attempt's outcome and saves it when that matters
    /// (see [`Engine::change_health_in_force`]). Returns the reason if this outcome paused the
    /// endpoint.
    fn update_health(
        &self,
        account: &AccountId,
        verdict: &Verdict,
        now: Timestamp,
    ) -> Option<PauseReason> {
        let pause_after = self.limits.pause_after;
        let change = self.change_health_in_force(account, |health| match verdict {
            Verdict::Delivered { .. } => health.on_success(),
            Verdict::Gone { .. } => {
                health.on_failure(now, pause_after);
                health.pause(now, PauseReason::Gone)
            }
            _ => health.on_failure(now, pause_after),
        });
        change.paused
    }
}

/// Whether deliveries of an account with these settings and this health may be attempted:
/// webhook on, URL set, endpoint not paused.
fn open(account: Option<&Account>, health: Option<&EndpointHealth>) -> bool {
    account_on(account) == SendDecision::Send && !health.is_some_and(EndpointHealth::is_paused)
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("accounts", &self.accounts().len())
            .field("limits", &self.limits)
            .field("policy", &self.policy)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// One attempt in flight: who it is for and its tracing span.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) delivery: DeliveryId,
    pub(crate) account: AccountId,
    pub(crate) campaign: CampaignId,
    /// Counting from 1 over the delivery's life.
    pub(crate) number: u32,
    /// The claim it is made under: its outcome is recorded with this fencing token.
    pub(crate) token: ClaimToken,
    pub(crate) span: tracing::Span,
}

impl Attempt {
    pub(crate) fn new(d: &Delivery, token: ClaimToken) -> Self {
        let number = d.attempts.saturating_add(1);
        let span = tracing::info_span!(
            "webhook_attempt",
            delivery_id = %d.id,
            account = %d.account,
            campaign = %d.campaign,
            attempt = number,
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        Attempt {
            delivery: d.id.clone(),
            account: d.account.clone(),
            campaign: d.campaign.clone(),
            number,
            token,
            span,
        }
    }
}

/// What came of an attempt.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Sent: the receiver's answer or the transport failure.
    Sent(Result<ReceiverResponse, TransportError>),
    /// Not sent: refused before sending.
    NotSent(Verdict),
}

/// An attempt and its outcome, reported by a runner.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) attempt: Attempt,
    pub(crate) outcome: Outcome,
    pub(crate) latency: Duration,
}

/// What the scheduler learns from a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Completed {
    /// Delivered or failed for good.
    Done,
    /// Pending again, due at this time.
    RetryAt(Timestamp),
    /// Removed by an administrator meanwhile.
    Forgotten,
    /// The store could not record it (why): the scheduler keeps the outcome and records it
    /// once the store recovers; the delivery is not attempted again meanwhile.
    NotRecorded(String),
}

/// An attempt's outcome, decided and not yet recorded.
struct Decided {
    verdict: Verdict,
    record: AttemptRecord,
    failed_for_good: Option<(FailureKind, String)>,
    /// A 410's pause, saved before the outcome is recorded: once the delivery is pending
    /// again, no process may claim it, since the store already leaves the account out.
    paused_first: Option<Option<PauseReason>>,
}

/// An error and its causes, on one line: what a store failure is reported with.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
