//! The application core: every account's settings and endpoint's health in force here, the
//! store, the clock and the event callback, shared by the facade and the scheduler.
//!
//! - `submit`: a call result checked against both switches and stored.
//! - `settings`: administrators' changes to accounts' settings and endpoints' health, as
//!   compare-and-set against the store, and following other processes' saves (`follow`);
//!   `settings::owned`, the settings a dialer owns, put and listed whole.
//! - `deliveries`: replays, removals, dead letters and status.
//! - `outcomes`: the request for one attempt, and what its outcome changes.
//!
//! No runtime here: the scheduler ([`crate::delivery`]) calls in from its own thread through
//! the [`Core`] seam, and runners report completions through the [`Signal`].

mod deliveries;
mod follow;
mod outcomes;
mod settings;
mod submit;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use http::Request;

use crate::account::Account;
use crate::campaign::SendDecision;
use crate::delivery::attempt::{Completed, Completion};
use crate::delivery::classify::Verdict;
use crate::delivery::clock::{Clock, ClockWaker};
use crate::delivery::core::{Core, StoreProblem};
use crate::delivery::events::Event;
use crate::delivery::health::EndpointHealth;
use crate::delivery::observer::Observer;
use crate::delivery::signal::Signal;
use crate::delivery::status::account_on;
use crate::error::Result;
use crate::ids::AccountId;
use crate::policy::UrlPolicy;
use crate::store::{Delivery, Store};
use crate::sync::lock;

pub(crate) use follow::follow;
pub use settings::{
    AccountListing, AccountPage, AccountQuery, AccountSettings, CampaignListing, DEFAULT_PAGE,
    Expected, MAX_PAGE, PutOutcome, SettingsPut,
};
pub use submit::{Prepared, Submitted};

/// The version of each record in force here, by account.
type Versions = HashMap<AccountId, u64>;

/// The event callback.
pub(crate) type EventSink = Arc<dyn Fn(&Event) + Send + Sync + 'static>;

/// Limits chosen at build time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_concurrency: usize,
    pub(crate) per_endpoint: usize,
    pub(crate) pause_after: Duration,
    /// How long the attempts log keeps an attempt.
    pub(crate) attempt_retention: Duration,
}

/// Everything the facade, the scheduler and the runners share. Its fields are its own: the
/// facade calls the operations of the submodules, the scheduler those of [`Core`].
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
    admin: Mutex<Versions>,
    /// Serialises changes to endpoints' health (read, change, save, put in force); holds the
    /// version of each endpoint's health in force here (none for one never saved).
    health_saves: Mutex<Versions>,
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
    /// What the metrics are recorded through.
    observer: Arc<dyn Observer>,
    /// When the attempts log is next pruned (on the engine's clock); `None`: at the next
    /// recording.
    next_log_prune: Mutex<Option<jiff::Timestamp>>,
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
        observer: Arc<dyn Observer>,
    ) -> Result<Self> {
        // Every account's settings and every endpoint's health, as saved: preferences,
        // campaign switches and pauses outlive a restart (and are the fleet's).
        let snapshot = store.load_settings()?;
        let mut accounts = HashMap::new();
        let mut account_versions = Versions::new();
        for record in &snapshot.accounts {
            let account = Account::from_storage_json(&record.json)?;
            account_versions.insert(account.id().clone(), record.version);
            accounts.insert(account.id().clone(), account);
        }
        let mut health = HashMap::new();
        let mut health_versions = Versions::new();
        for (account, record) in &snapshot.health {
            health.insert(account.clone(), EndpointHealth::from_json(&record.json)?);
            health_versions.insert(account.clone(), record.version);
        }
        let signal = Arc::new(Signal::default());
        let woken = signal.clone();
        let clock_wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || woken.clock_moved());
        clock.watch(ClockWaker::new(&clock_wake));
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
            observer,
            next_log_prune: Mutex::new(None),
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

    /// The store failure the worker reported and has not seen recover from, if any.
    pub(crate) fn store_problem(&self) -> Option<StoreProblem> {
        lock(&self.store_problem).clone()
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
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
}

impl Core for Engine {
    fn store(&self) -> &dyn Store {
        &*self.store
    }

    fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    fn signal(&self) -> &Signal {
        &self.signal
    }

    fn emit(&self, event: Event) {
        Engine::emit(self, event);
    }

    fn claim_worker(&self) -> bool {
        self.worker_running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn release_worker(&self) {
        self.worker_running.store(false, Ordering::SeqCst);
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n, Ordering::Relaxed);
        self.observer.in_flight(n);
    }

    fn store_problem(&self) -> Option<StoreProblem> {
        Engine::store_problem(self)
    }

    fn set_store_problem(&self, problem: Option<StoreProblem>) {
        self.observer.store_failing(problem.is_some());
        *lock(&self.store_problem) = problem;
    }

    fn per_endpoint(&self) -> usize {
        self.limits.per_endpoint
    }

    fn held_accounts(&self) -> Vec<AccountId> {
        lock(&self.held).iter().cloned().collect()
    }

    fn held_version(&self) -> u64 {
        self.held_version.load(Ordering::SeqCst)
    }

    /// Whether the account's pending deliveries may be attempted now: webhook on, URL set,
    /// endpoint not paused. Otherwise they are held.
    fn lane_open(&self, account: &AccountId) -> bool {
        open(
            self.accounts().get(account),
            lock(&self.health).get(account),
        )
    }

    /// The longest attempt time limit and [`LEASE_MARGIN`].
    fn lease(&self) -> Duration {
        Duration::from_millis(self.longest_timeout.load(Ordering::Relaxed)) + LEASE_MARGIN
    }

    fn prepare(&self, d: &Delivery) -> Result<Request<Bytes>, Verdict> {
        self.prepare_attempt(d)
    }

    fn complete_all(&self, completions: &[Completion]) -> Vec<Completed> {
        self.record_outcomes(completions)
    }

    fn observer(&self) -> &dyn Observer {
        &*self.observer
    }

    fn account_ids(&self) -> Vec<AccountId> {
        self.accounts().keys().cloned().collect()
    }

    fn account_count(&self) -> usize {
        self.accounts().len()
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
            .field("in_flight", &Core::in_flight(self))
            .finish_non_exhaustive()
    }
}
