//! The facade the dialer holds: submit call results, run the worker, let administrators change
//! settings, replay and remove, and show status.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::account::Account;
use crate::blocking::{Runtime, refuse_on, twins};
use crate::campaign::WebhookIndicator;
use crate::delivery::{
    Clock, DeadLetter, Event, Status, SystemClock, ThreadRunner, Worker, new_observer,
};
use crate::dispatch::BlockingDispatcher;
use crate::engine::{Engine, EventSink, Limits};
pub use crate::engine::{Prepared, Submitted};
use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::limits::{
    DEFAULT_ATTEMPT_RETENTION, DEFAULT_MAX_CONCURRENCY, DEFAULT_PAUSE_AFTER,
    DEFAULT_PER_ENDPOINT_CONCURRENCY,
};
use crate::payload::CallResult;
use crate::policy::UrlPolicy;
use crate::preferences::{AuditRecord, PreferencesUpdate, Principal};
use crate::store::{AttemptQuery, DeliveryFilter, LoggedAttempt, Store};
use crate::sync::lock;

/// Sends every call result to the URL its customer account chose, reliably.
///
/// One `Webhooks` serves every account of the dialer. Clones are cheap handles to the same
/// state; hand one to every task or thread that needs it.
///
/// - The dialer calls [`submit`](Self::submit) once per finished call. It checks both switches,
///   fixes the body bytes, stores the delivery durably and returns; it never waits for a
///   receiver.
/// - A [`Worker`] ([`start_tokio`](Self::start_tokio) with the `tokio` feature, or
///   [`start_threads`](Self::start_threads)) delivers in the background: at least once, the
///   same `webhook-id` and bytes on every attempt, retried on the account's
///   [`RetrySchedule`](crate::delivery::RetrySchedule), each account's endpoint within its own
///   concurrency bound.
/// - Administrators change preferences and campaign switches, resume paused endpoints, replay
///   and remove dead letters; every such change needs full administrative permission and is
///   saved in the store before it returns.
/// - [`indicator`](Self::indicator) gives the UI its icon, [`status`](Self::status) its
///   counts and last outcomes.
///
/// # Async and blocking
///
/// Every operation that touches the store is an `async fn` that never blocks the caller's
/// runtime: the store's work runs on tokio's blocking pool (or, outside tokio, on a thread of
/// its own). Beside each is its `_blocking` twin with the same arguments, for dialers without
/// a runtime. Ids are always borrowed (`&AccountId`, `&CampaignId`); what the call consumes
/// (a [`CallResult`], a [`PreferencesUpdate`]) is passed by value.
///
/// A `_blocking` method is for a thread that no async runtime drives. Called on a thread of the
/// tokio runtime the worker's attempts run on (the one given to `start_tokio`, its blocking
/// pool's threads included, until another worker starts), it does nothing and returns
/// [`Error::BlockingInRuntime`] at once, naming the async method to await instead: blocking
/// there would hold a thread those attempts need, and on a current-thread runtime stop them
/// all. [`Worker::wait_idle_blocking`] and [`Worker::shutdown_blocking`] refuse the same
/// threads. On another runtime's threads a `_blocking` method works, holding that thread for
/// the store's work (no store call needs the caller's runtime, none nests one, so it never
/// deadlocks); await the async method there all the same.
///
/// # Cancellation
///
/// Dropping one of these futures does not undo or stop the operation: it runs to its end on
/// its blocking thread and only its answer is lost. Each method says what that means for it;
/// for submits, [`submit_with_id`](Self::submit_with_id) is idempotent on the id, so retrying
/// with the same id is always safe.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::{HeaderMap, Request, StatusCode};
/// use call_result_webhook::{BlockingDispatcher, CallResult, MemoryStore, PreferencesUpdate,
///     Principal, Submitted, UrlPolicy, Webhooks};
/// use call_result_webhook::campaign::WebhookIndicator;
/// use call_result_webhook::delivery::RetrySchedule;
/// use call_result_webhook::dispatch::{ReceiverResponse, TransportError};
///
/// // An in-process receiver that answers 503 once, then 200.
/// struct FlakyOnce(std::sync::atomic::AtomicBool);
/// impl BlockingDispatcher for FlakyOnce {
///     fn dispatch_blocking(&self, _: Request<Bytes>) -> Result<ReceiverResponse, TransportError> {
///         let failed_before = self.0.swap(true, std::sync::atomic::Ordering::SeqCst);
///         let status = if failed_before { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
///         Ok(ReceiverResponse::new(status, HeaderMap::new(), Bytes::new()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> call_result_webhook::Result<()> {
/// let webhooks = Webhooks::builder()
///     .store(MemoryStore::new())
///     .policy(UrlPolicy::new())
///     .on_event(|event| println!("{event:?}"))
///     .build()?;
///
/// let admin = Principal::administrator("alice");
/// let (acme, winter) = ("acme".into(), "winter".into());
/// webhooks.update_preferences(&admin, &acme, PreferencesUpdate::new()
///     .enabled(true)
///     .url("https://crm.example/hooks/calls")
///     .credentials("dialer", "s3cret")
///     // Quick retries for the example; the default waits 5 s, 5 min, ... over three days.
///     .retry_schedule(RetrySchedule::new([Duration::from_millis(10)])?)).await?;
///
/// // The campaign's switch is off: nothing is stored.
/// let call = CallResult::builder().reference("123").build();
/// let skipped = webhooks.submit(&acme, &winter, call.clone()).await?;
/// assert!(!skipped.is_accepted());
///
/// webhooks.set_campaign_webhook(&admin, &acme, &winter, true).await?;
/// let worker = webhooks.start_threads(FlakyOnce(Default::default()), 2)?;
/// let Submitted::Accepted(id) = webhooks.submit(&acme, &winter, call).await? else {
///     unreachable!("both switches are on")
/// };
/// println!("accepted {id}");
///
/// // Failed once, retried, delivered.
/// assert!(worker.wait_idle(Duration::from_secs(10)).await?);
/// assert_eq!(webhooks.indicator(&acme, Some(&winter)), WebhookIndicator::Active);
/// let status = webhooks.status(&acme, Some(&winter)).await?;
/// assert_eq!((status.stats.pending, status.stats.delivered), (0, 1));
/// assert!(status.stats.last_failure_reason.unwrap().contains("503"));
/// assert!(!status.failure_is_current, "the 503 is history: the retry succeeded");
/// worker.shutdown(Duration::from_secs(5)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Webhooks {
    pub(crate) engine: Arc<Engine>,
    /// The runtime of the worker last started, if [`start_tokio`](Self::start_tokio) started
    /// it: where the `_blocking` methods refuse to run.
    worker_runtime: Arc<Mutex<Option<Runtime>>>,
}

/// Builds [`Webhooks`]: [`Webhooks::builder`].
#[must_use = "a builder does nothing until built"]
pub struct WebhooksBuilder {
    store: Option<Arc<dyn Store>>,
    policy: UrlPolicy,
    clock: Arc<dyn Clock>,
    on_event: Option<EventSink>,
    limits: Limits,
    /// Each account as a label of the metrics (feature `metrics`).
    metrics_by_account: bool,
    error: Option<Error>,
}

impl fmt::Debug for WebhooksBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhooksBuilder")
            .field("store", &self.store.is_some())
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl WebhooksBuilder {
    fn keep(&mut self, err: Error) {
        self.error.get_or_insert(err);
    }

    /// The outbox (required): `SqliteStore` for durability, [`MemoryStore`](crate::MemoryStore)
    /// for tests and for dialers that accept losing pending results on a crash.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The URL and address policy (default: [`UrlPolicy::new`], https required). URLs are
    /// checked against it when an administrator sets them and before each attempt; the same
    /// policy belongs in the dispatcher, which checks the addresses it connects to.
    pub fn policy(mut self, policy: UrlPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock (default: [`SystemClock`]). Tests pass a `ManualClock` (feature `test-util`).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Calls `callback` with every [`Event`]. It runs on the scheduler's thread (and, for
    /// [`Event::EndpointResumed`], on the administrator's): keep it quick and do not block in
    /// it. A panic in it is caught and logged.
    pub fn on_event(mut self, callback: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(callback));
        self
    }

    /// The bound on attempts in flight at once over all accounts (default
    /// [`DEFAULT_MAX_CONCURRENCY`]). With [`Webhooks::start_threads`] the number of threads
    /// bounds it too.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        if n == 0 {
            self.keep(Error::config("max_concurrency", "must be at least 1"));
        } else {
            self.limits.max_concurrency = n;
        }
        self
    }

    /// The bound on attempts in flight at once to one account's endpoint (default
    /// [`DEFAULT_PER_ENDPOINT_CONCURRENCY`]), so a slow or dead endpoint ties up only its own
    /// share. One endpoint never gets more than half the total bound (at least 1).
    ///
    /// The bound is the fleet's: every process on one store counts against it. On PostgreSQL
    /// a claim takes one of the endpoint's `n` slots (a table of the schema) for each
    /// delivery it leases; the outcome, a release or the lease's end frees it, so a dead
    /// process's places come back with its leases. One endpoint whose places are all taken
    /// (a slow or dead one) never slows the other accounts, in this process or another.
    pub fn per_endpoint_concurrency(mut self, n: usize) -> Self {
        if n == 0 {
            self.keep(Error::config(
                "per_endpoint_concurrency",
                "must be at least 1",
            ));
        } else {
            self.limits.per_endpoint = n;
        }
        self
    }

    /// How long an endpoint may fail every attempt before it is paused (default
    /// [`DEFAULT_PAUSE_AFTER`], 5 days).
    pub fn pause_after(mut self, failing_for: Duration) -> Self {
        self.limits.pause_after = failing_for;
        self
    }

    /// How long the attempts log ([`Webhooks::attempts`]) keeps an attempt (default
    /// [`DEFAULT_ATTEMPT_RETENTION`], 7 days): older ones are forgotten as new outcomes are
    /// recorded, a bounded batch at a time. At least one second.
    pub fn attempt_retention(mut self, keep: Duration) -> Self {
        if keep < Duration::from_secs(1) {
            self.keep(Error::config(
                "attempt_retention",
                "must be at least one second",
            ));
        } else {
            self.limits.attempt_retention = keep;
        }
        self
    }

    /// Labels the per-delivery metrics with an `account` label, the account's id (default
    /// `false`): `attempts_total`, `deliveries_total`, `attempt_duration_seconds`, and
    /// `store_pending` as one series per account. Off by default because every account then
    /// makes its own series, which a monitoring system with thousands of accounts pays for.
    /// See [`delivery::metrics`](crate::delivery::metrics) for the names.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_by_account(mut self, by_account: bool) -> Self {
        self.metrics_by_account = by_account;
        self
    }

    /// Builds the facade, loading every account's settings and every endpoint's health from the
    /// store, so preferences, campaign switches and pauses outlive a restart. The first invalid
    /// setting, a missing store, or an unreadable stored record is returned as an error.
    ///
    /// # Errors
    ///
    /// The first invalid builder setting ([`Error::InvalidConfig`]), a missing store
    /// (`InvalidConfig { field: "store" }`), or [`Error::Store`] when the stored settings cannot
    /// be read.
    pub fn build(self) -> Result<Webhooks> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let store = self
            .store
            .ok_or_else(|| Error::config("store", "a store is required"))?;
        let engine = Arc::new(Engine::new(
            store,
            self.policy,
            self.clock,
            self.on_event,
            self.limits,
            new_observer(self.metrics_by_account),
        )?);
        crate::engine::follow(&engine)?;
        Ok(Webhooks {
            engine,
            worker_runtime: Arc::default(),
        })
    }
}

impl Webhooks {
    /// A builder: set at least a [`store`](WebhooksBuilder::store).
    pub fn builder() -> WebhooksBuilder {
        WebhooksBuilder {
            store: None,
            policy: UrlPolicy::new(),
            clock: Arc::new(SystemClock),
            on_event: None,
            limits: Limits {
                max_concurrency: DEFAULT_MAX_CONCURRENCY,
                per_endpoint: DEFAULT_PER_ENDPOINT_CONCURRENCY,
                pause_after: DEFAULT_PAUSE_AFTER,
                attempt_retention: DEFAULT_ATTEMPT_RETENTION,
            },
            metrics_by_account: false,
            error: None,
        }
    }

    twins! {
        "Webhooks";

        /// Hands over one finished call's result, with a fresh `webhook-id`.
        ///
        /// If the account was never configured, its webhook is off or has no URL, or the
        /// campaign's switch is off, returns [`Submitted::Skipped`] and stores nothing. Otherwise
        /// encodes the body once (the account's current encoding and time zone: these bytes are
        /// what every attempt sends), stores it durably and returns [`Submitted::Accepted`] without
        /// waiting for any receiver.
        ///
        /// The store's work runs on a blocking thread; with a durable store this waits for the data
        /// to reach the disk (a group commit may share that wait with other submits).
        ///
        /// **Dropped before it completes**, the submit still runs to its end: the call result may
        /// or may not be stored, and if it is, it will be delivered under an id the caller never
        /// learned. A caller that retries after a timeout uses
        /// [`submit_with_id`](Self::submit_with_id) with the same id each time, so that a retry
        /// never creates a second delivery.
        ///
        /// # Errors
        ///
        /// The call result was **not** accepted when this returns an error:
        /// [`Error::InvalidId`] for an account or campaign id that may not be stored,
        /// [`Error::InvalidCallResult`] or [`Error::BodyTooLarge`] for the call result itself,
        /// [`Error::StoreFull`] when the outbox holds its most pending deliveries,
        /// [`Error::Store`] when the store failed, and [`Error::RuntimeShuttingDown`] when the
        /// tokio runtime is shutting down.
        pub async fn submit(
            &self,
            account: &AccountId,
            campaign: &CampaignId,
            call: CallResult,
        ) -> Result<Submitted>;
        /// [`submit`](Self::submit) for callers without an async runtime: blocks the calling thread
        /// until the delivery is stored.
        pub fn submit_blocking;
        {
            self.submit_work(account, campaign, call, DeliveryId::generate())?
        }

        /// [`submit`](Self::submit) with the dialer's own `webhook-id` (for example one derived
        /// from its call id).
        ///
        /// Idempotent on the id: submitting the same call result again under the same id (a retry
        /// after a timeout, a dropped future, a dialer restarted mid-submit) stores it once and
        /// answers [`Submitted::Accepted`] again, even after it was delivered (ids of delivered
        /// call results are remembered for
        /// [`DELIVERED_ID_RETENTION`](crate::limits::DELIVERED_ID_RETENTION)).
        ///
        /// **Dropped before it completes**, the submit still runs to its end: the call result may
        /// or may not be stored. Submit it again with the same id: either way it is delivered once.
        ///
        /// # Errors
        ///
        /// As [`submit`](Self::submit), and [`Error::IdConflict`] when the id is already stored
        /// for a different call result (another account, campaign or body).
        pub async fn submit_with_id(
            &self,
            account: &AccountId,
            campaign: &CampaignId,
            call: CallResult,
            id: DeliveryId,
        ) -> Result<Submitted>;
        pub fn submit_with_id_blocking;
        {
            self.submit_work(account, campaign, call, id)?
        }
    }

    /// Everything [`submit_with_id`](Self::submit_with_id) does before it stores: checks both
    /// switches and encodes the body once, with no I/O. For a dialer that writes its own call
    /// record and the webhook's delivery in **one database transaction** (the transactional
    /// outbox): insert the [`Prepared::Ready`] delivery in that transaction, and both commit or
    /// neither does. Inserting it is idempotent on its id, like `submit_with_id`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`] for an account or campaign id that may not be stored;
    /// [`Error::InvalidCallResult`] or [`Error::BodyTooLarge`] for the call result itself.
    pub fn prepare(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
        call: &CallResult,
        id: DeliveryId,
    ) -> Result<Prepared> {
        check_ids(account, Some(campaign))?;
        self.engine.prepare_submit(account, campaign, call, id)
    }

    /// Starts delivering on `threads` plain threads that call `dispatcher`, with no async
    /// runtime. At most `threads` attempts are in flight at once (and at most the
    /// [`max_concurrency`](WebhooksBuilder::max_concurrency)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `threads` is 0, a thread cannot be started, a worker is
    /// already running for these webhooks (one at a time), or the dispatcher was built with a
    /// URL policy other than the one given to [`WebhooksBuilder::policy`].
    pub fn start_threads(
        &self,
        dispatcher: impl BlockingDispatcher,
        threads: usize,
    ) -> Result<Worker> {
        if threads == 0 {
            return Err(Error::config("threads", "must be at least 1"));
        }
        dispatcher.adopt_policy(self.engine.policy())?;
        let global = threads.min(self.engine.limits().max_concurrency);
        let runner = ThreadRunner::start(Arc::new(dispatcher), global)
            .map_err(|e| Error::config("threads", format!("cannot start a thread: {e}")))?;
        let worker = Worker::start(self.engine.clone(), Arc::new(runner), global, None)?;
        *lock(&self.worker_runtime) = None;
        Ok(worker)
    }

    /// Starts delivering on the dialer's tokio runtime: each attempt is a task spawned on
    /// `handle` that awaits `dispatcher`. The scheduler itself (and every store call) runs on
    /// its own thread, never on the runtime's.
    ///
    /// If that runtime shuts down while the worker runs, the worker notices at once, stops,
    /// emits [`Event::WorkerStopped`](crate::Event::WorkerStopped), and its
    /// [`wait_idle`](Worker::wait_idle) and [`shutdown`](Worker::shutdown) answer
    /// [`Error::WorkerStopped`]. Nothing in flight is lost: it stays pending in the store.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a worker is already running for these webhooks (one at a
    /// time), or the dispatcher was built with a URL policy other than the one given to
    /// [`WebhooksBuilder::policy`].
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn start_tokio(
        &self,
        dispatcher: impl crate::dispatch::Dispatcher,
        handle: &tokio::runtime::Handle,
    ) -> Result<Worker> {
        dispatcher.adopt_policy(self.engine.policy())?;
        let runner = crate::delivery::TokioRunner::new(Arc::new(dispatcher), handle.clone());
        let worker = Worker::start(
            self.engine.clone(),
            Arc::new(runner),
            self.engine.limits().max_concurrency,
            Some(handle.clone()),
        )?;
        *lock(&self.worker_runtime) = Some(handle.clone());
        Ok(worker)
    }

    /// A copy of the account's settings, if any were ever saved (from memory, no I/O). Its
    /// `Debug` never shows the password.
    pub fn account(&self, id: &AccountId) -> Option<Account> {
        self.engine.account(id)
    }

    /// [`update_preferences`](Self::update_preferences), saved only while `still` holds for the
    /// preferences as stored, checked inside the compare-and-set (the portal's check that the
    /// form was rendered from the settings it would overwrite). [`Error::SettingsStale`] when
    /// it does not.
    #[cfg(feature = "portal")]
    pub(crate) async fn update_preferences_if(
        &self,
        who: &Principal,
        account: &AccountId,
        update: PreferencesUpdate,
        still: impl Fn(&crate::preferences::Preferences) -> bool + Send + Sync + 'static,
    ) -> Result<AuditRecord> {
        check_ids(account, None)?;
        let (engine, who, account) = (self.engine.clone(), who.clone(), account.clone());
        crate::blocking::unblock(move || {
            engine.update_preferences_if(&who, &account, update, &still)
        })
        .await?
    }

    twins! {
        "Webhooks";

        /// Changes an account's preferences (creating its settings on first use): the way to
        /// change them. [`account`](Self::account) reads them back; an
        /// [`Account`] is a read-only copy, and
        /// [`Preferences::from_update`](crate::preferences::Preferences::from_update) makes a value
        /// saved nowhere, for sending without `Webhooks`. Only a full
        /// administrator may; anyone else gets [`Error::PermissionDenied`] and nothing changes. A
        /// new URL is also checked against the [`UrlPolicy`]. The change is saved in the store
        /// before this returns, and applies to pending deliveries from their next attempt on (their
        /// bodies stay as they were).
        ///
        /// **Dropped before it completes**, the change still runs to its end and may or may not be
        /// saved; calling it again with the same update is harmless.
        ///
        /// # Errors
        ///
        /// [`Error::InvalidId`] for an account id that may not be stored;
        /// [`Error::PermissionDenied`] for a non-administrator; [`Error::InvalidConfig`] or
        /// [`Error::InvalidUrl`] for an invalid setting (the first one found); an
        /// [`Error::AddressRefused`] or [`Error::InvalidUrl`] from the URL policy; [`Error::Store`]
        /// when it could not be read or saved; [`Error::SettingsConflict`] when other processes
        /// kept saving the account first; [`Error::RuntimeShuttingDown`]. Nothing changed on
        /// error.
        pub async fn update_preferences(
            &self,
            who: &Principal,
            account: &AccountId,
            update: PreferencesUpdate,
        ) -> Result<AuditRecord>;
        pub fn update_preferences_blocking;
        {
            check_ids(account, None)?;
            let (engine, who, account) = (self.engine.clone(), who.clone(), account.clone());
            move || engine.update_preferences(&who, &account, update)
        }

        /// Switches a campaign's "Enable WebHook" on or off (full administrators only; saved
        /// before this returns). It decides for call results submitted from now on; deliveries
        /// already accepted are still sent.
        ///
        /// **Dropped before it completes**, the change still runs to its end and may or may not be
        /// saved; calling it again is harmless.
        ///
        /// # Errors
        ///
        /// [`Error::InvalidId`] for an account or campaign id that may not be stored,
        /// [`Error::PermissionDenied`] for a non-administrator, [`Error::Store`] when it could not
        /// be read or saved, [`Error::SettingsConflict`] when other processes kept saving the
        /// account first, [`Error::RuntimeShuttingDown`]. Nothing changed on error.
        pub async fn set_campaign_webhook(
            &self,
            who: &Principal,
            account: &AccountId,
            campaign: &CampaignId,
            enabled: bool,
        ) -> Result<AuditRecord>;
        /// [`set_campaign_webhook`](Self::set_campaign_webhook) for callers without an async
        /// runtime.
        pub fn set_campaign_webhook_blocking;
        {
            check_ids(account, Some(campaign))?;
            let (engine, who) = (self.engine.clone(), who.clone());
            let (account, campaign) = (account.clone(), campaign.clone());
            move || engine.set_campaign_webhook(&who, &account, &campaign, enabled)
        }

        /// Resumes a paused endpoint (full administrators only; saved before this returns): the
        /// deliveries that waited are sent. Returns whether it was paused.
        ///
        /// **Dropped before it completes**, the resume still runs to its end.
        ///
        /// # Errors
        ///
        /// [`Error::InvalidId`] for an account id that may not be stored,
        /// [`Error::PermissionDenied`] for a non-administrator, [`Error::Store`] when it could not
        /// be read or saved, or [`Error::SettingsConflict`] when other processes kept saving the
        /// endpoint's health first (the endpoint stays paused), [`Error::RuntimeShuttingDown`].
        pub async fn resume_endpoint(&self, who: &Principal, account: &AccountId) -> Result<bool>;
        pub fn resume_endpoint_blocking;
        {
            check_ids(account, None)?;
            let (engine, who, account) = (self.engine.clone(), who.clone(), account.clone());
            move || engine.resume_endpoint(&who, &account)
        }

        /// Puts the failed deliveries matching `filter` back to pending, due now, with their
        /// `webhook-id` and bytes unchanged, and returns how many (full administrators only). One
        /// delivery ([`DeliveryFilter::id`]), a campaign's, or all of an account's.
        ///
        /// **Dropped before it completes**, the replay still runs to its end; calling it again
        /// finds nothing more to replay.
        ///
        /// # Errors
        ///
        /// [`Error::InvalidId`] for an account or campaign id in `filter` that may not be stored,
        /// [`Error::PermissionDenied`] for a non-administrator, [`Error::Store`],
        /// [`Error::RuntimeShuttingDown`].
        pub async fn replay(&self, who: &Principal, filter: &DeliveryFilter) -> Result<u64>;
        pub fn replay_blocking;
        {
            check_filter(filter)?;
            let (engine, who, filter) = (self.engine.clone(), who.clone(), filter.clone());
            move || engine.replay(&who, &filter)
        }

        /// Removes the deliveries matching `filter`, pending or failed, and returns how many (full
        /// administrators only). This is the one way an accepted delivery is dropped.
        ///
        /// **Dropped before it completes**, the removal still runs to its end.
        ///
        /// # Errors
        ///
        /// [`Error::InvalidId`] for an account or campaign id in `filter` that may not be stored,
        /// [`Error::PermissionDenied`] for a non-administrator, [`Error::Store`],
        /// [`Error::RuntimeShuttingDown`].
        pub async fn remove(&self, who: &Principal, filter: &DeliveryFilter) -> Result<u64>;
        pub fn remove_blocking;
        {
            check_filter(filter)?;
            let (engine, who, filter) = (self.engine.clone(), who.clone(), filter.clone());
            move || engine.remove(&who, &filter)
        }

        /// The deliveries that failed for good among those matching `filter`, oldest first, at most
        /// `limit` (full administrators only). No bodies. Read only: dropping the future loses
        /// nothing.
        ///
        /// # Errors
        ///
        /// [`Error::InvalidId`] for an account or campaign id in `filter` that may not be stored,
        /// [`Error::PermissionDenied`] for a non-administrator, [`Error::Store`],
        /// [`Error::RuntimeShuttingDown`].
        pub async fn dead_letters(
            &self,
            who: &Principal,
            filter: &DeliveryFilter,
            limit: usize,
        ) -> Result<Vec<DeadLetter>>;
        pub fn dead_letters_blocking;
        {
            check_filter(filter)?;
            let (engine, who, filter) = (self.engine.clone(), who.clone(), filter.clone());
            move || engine.dead_letters(&who, &filter, limit)
        }

        /// The attempts log of `query`'s account: every attempt recorded (by any process sharing
        /// the store) and kept for the [retention](WebhooksBuilder::attempt_retention), newest
        /// first, narrowed to a campaign or an [`AttemptState`](crate::store::AttemptState),
        /// at most `query.limit`; the next page is `query.before(last.cursor)`. Each attempt
        /// says when, which delivery (its `webhook-id`), which attempt, what came of it (status
        /// or failure), how long it took and how the receiver's answer began (the account's
        /// own secrets blanked out). Reads the store; dropping the future loses nothing.
        ///
        /// # Errors
        ///
        /// [`Error::InvalidId`] for an account or campaign id that may not be stored,
        /// [`Error::InvalidConfig`] naming `limit` for a limit of 0 or over
        /// [`MAX_ATTEMPT_PAGE`](crate::limits::MAX_ATTEMPT_PAGE), [`Error::Store`],
        /// [`Error::RuntimeShuttingDown`].
        pub async fn attempts(&self, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>>;
        pub fn attempts_blocking;
        {
            check_ids(&query.account, query.campaign.as_ref())?;
            if query.limit == 0 || query.limit > crate::limits::MAX_ATTEMPT_PAGE {
                return Err(Error::config(
                    "limit",
                    format!("must be 1 to {}", crate::limits::MAX_ATTEMPT_PAGE),
                ));
            }
            let (engine, query) = (self.engine.clone(), query.clone());
            move || engine.attempts(&query)
        }

        /// The webhook's status for one campaign (`Some`) or the whole account (`None`): counts,
        /// last success and failure (and which came last), whether deliveries are held, the
        /// endpoint's health, and whether the worker stopped on its own. Reads the store; dropping
        /// the future loses nothing. The icon beside them is [`indicator`](Self::indicator)'s.
        ///
        /// # Errors
        ///
        /// [`Error::InvalidId`] for an account or campaign id that may not be stored,
        /// [`Error::Store`] when the counts cannot be read, [`Error::RuntimeShuttingDown`].
        pub async fn status(
            &self,
            account: &AccountId,
            campaign: Option<&CampaignId>,
        ) -> Result<Status>;
        pub fn status_blocking;
        {
            check_ids(account, campaign)?;
            let (engine, account) = (self.engine.clone(), account.clone());
            let campaign = campaign.cloned();
            move || engine.status(&account, campaign.as_ref())
        }
    }

    /// The webhook's indicator for one campaign (`Some`) or the whole account (`None`): the
    /// icon the dialer draws next to it. `Off` with the reason when a switch is off or the
    /// account has no URL, else `Paused`, `Failing` or `Active` as the endpoint's health says.
    ///
    /// The one way to read it: from memory (no store read, never blocks, never fails), cheap
    /// enough for every row of a campaign list. [`status`](Self::status) adds what needs the
    /// store: counts, last outcomes, whether deliveries are held.
    pub fn indicator(
        &self,
        account: &AccountId,
        campaign: Option<&CampaignId>,
    ) -> WebhookIndicator {
        self.engine.indicator(account, campaign)
    }
}

impl Webhooks {
    /// The work of [`submit_with_id`](Self::submit_with_id), the ids checked first.
    fn submit_work(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
        call: CallResult,
        id: DeliveryId,
    ) -> Result<impl FnOnce() -> Result<Submitted> + Send + 'static> {
        check_ids(account, Some(campaign))?;
        let (engine, account, campaign) = (self.engine.clone(), account.clone(), campaign.clone());
        Ok(move || engine.submit(&account, &campaign, &call, id))
    }

    /// The check every `_blocking` method makes first: refused on a thread of the runtime the
    /// worker's attempts run on (see [`refuse_on`]).
    pub(crate) fn refuse_blocking(
        &self,
        method: &'static str,
        instead: &'static str,
    ) -> Result<()> {
        refuse_on(lock(&self.worker_runtime).as_ref(), method, instead)
    }
}

/// The check every method makes of the ids it is given, before anything is read or stored.
fn check_ids(account: &AccountId, campaign: Option<&CampaignId>) -> Result<()> {
    account.check()?;
    campaign.map_or(Ok(()), CampaignId::check)
}

fn check_filter(filter: &DeliveryFilter) -> Result<()> {
    check_ids(&filter.account, filter.campaign.as_ref())
}

#[cfg(test)]
impl Webhooks {
    /// How many passes the scheduler has made, for tests that check it waits, not spins.
    pub(crate) fn scheduler_passes(&self) -> u64 {
        self.engine.signal().passes().0
    }
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("engine", &self.engine)
            .finish()
    }
}
