//! The facade the dialer holds: submit call results, run the worker, let administrators change
//! settings, replay and remove, and show status.

use crate::limits::{
    DEFAULT_MAX_CONCURRENCY, DEFAULT_PAUSE_AFTER, DEFAULT_PER_ENDPOINT_CONCURRENCY,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::account::Account;
use crate::campaign::{OffReason, SendDecision, WebhookIndicator, decide};
use crate::delivery::engine::{Engine, EventSink, Limits};
use crate::delivery::{
    Clock, DeadLetter, EndpointHealth, Event, Status, SystemClock, ThreadRunner, Worker,
    account_on, indicator,
};
use crate::dispatch::BlockingDispatcher;
use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::payload::CallResult;
use crate::policy::UrlPolicy;
use crate::preferences::{AuditRecord, PreferencesUpdate, Principal};
use crate::request::EncodedBody;
use crate::store::{DeliveryFilter, DeliveryState, NewDelivery, Store};
use crate::sync::lock;

/// What [`Webhooks::submit`] did with a call result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a skipped call result was not stored"]
pub enum Submitted {
    /// Stored durably; it will be delivered with this `webhook-id`.
    Accepted(DeliveryId),
    /// Not sent and not stored: a switch was off when it was submitted.
    Skipped(OffReason),
}

impl Submitted {
    /// The delivery's id, if it was accepted.
    pub fn id(&self) -> Option<&DeliveryId> {
        match self {
            Submitted::Accepted(id) => Some(id),
            Submitted::Skipped(_) => None,
        }
    }

    /// Whether it was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Submitted::Accepted(_))
    }
}

/// Sends every call result to the URL its customer account chose, reliably.
///
/// One `Webhooks` serves every account of the dialer. Clones are cheap handles to the same
/// state; hand one to every thread that needs it.
///
/// - The dialer calls [`submit`](Self::submit) once per finished call. It checks both switches,
///   fixes the body bytes, stores the delivery durably and returns; it never waits for a
///   receiver.
/// - A [`Worker`] ([`start_threads`](Self::start_threads) or `start_tokio` with the `tokio` feature)
///   delivers in the background: at least once, the same `webhook-id` and bytes on every
///   attempt, retried on the account's [`RetrySchedule`](crate::delivery::RetrySchedule), each account's
///   endpoint within its own concurrency bound.
/// - Administrators change preferences and campaign switches, resume paused endpoints, replay
///   and remove dead letters; every such change needs full administrative permission and is
///   saved in the store before it returns.
/// - [`status`](Self::status) gives the UI its indicator and counts.
///
/// Every method that touches the store is synchronous. An async dialer calls them from
/// `tokio::task::spawn_blocking` or a thread of its own (or uses
/// `submit_async` with the `tokio` feature).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::{HeaderMap, Request, StatusCode};
/// use call_result_webhook::{
///     BlockingDispatcher, CallResult, MemoryStore, PreferencesUpdate, Principal, Submitted,
///     UrlPolicy, Webhooks, campaign::WebhookIndicator, dispatch::{ReceiverResponse, TransportError},
/// };
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
/// let store = Arc::new(MemoryStore::new());
/// let webhooks = Webhooks::builder()
///     .store(store.clone())
///     .policy(UrlPolicy::new())
///     .on_event(|event| println!("{event:?}"))
///     .build()?;
///
/// let admin = Principal::administrator("alice");
/// let acme = "acme".into();
/// webhooks.update_preferences(&admin, &acme, PreferencesUpdate::new()
///     .enabled(true)
///     .url("https://crm.example/hooks/calls")
///     .credentials("dialer", "s3cret")
///     // Quick retries for the example; the default waits 5 s, 5 min, ... over three days.
///     .retry_schedule(call_result_webhook::delivery::RetrySchedule::new([Duration::from_millis(10)])?))?;
///
/// // The campaign's switch is off: nothing is stored.
/// let call = CallResult::builder().reference("123").build();
/// let skipped = webhooks.submit(&acme, &"winter".into(), call.clone())?;
/// assert!(!skipped.is_accepted());
///
/// webhooks.set_campaign_webhook(&admin, &acme, "winter", true)?;
/// let worker = webhooks.start_threads(FlakyOnce(Default::default()), 2)?;
/// let Submitted::Accepted(id) = webhooks.submit(&acme, &"winter".into(), call)? else {
///     unreachable!("both switches are on")
/// };
/// println!("accepted {id}");
///
/// // Failed once, retried, delivered.
/// assert!(worker.wait_idle(Duration::from_secs(10))?);
/// let status = webhooks.status(&acme, Some(&"winter".into()))?;
/// assert_eq!(status.indicator, WebhookIndicator::Active);
/// assert_eq!((status.stats.pending, status.stats.delivered), (0, 1));
/// assert!(status.stats.last_failure_reason.unwrap().contains("503"));
/// worker.shutdown(Duration::from_secs(5));
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[derive(Clone)]
pub struct Webhooks {
    engine: Arc<Engine>,
}

/// Builds [`Webhooks`]: [`Webhooks::builder`].
#[must_use = "a builder does nothing until built"]
pub struct WebhooksBuilder {
    store: Option<Arc<dyn Store>>,
    policy: UrlPolicy,
    clock: Arc<dyn Clock>,
    on_event: Option<EventSink>,
    limits: Limits,
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

    /// The clock (default: [`SystemClock`]). Tests pass a [`ManualClock`](crate::delivery::ManualClock).
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

    /// Builds the facade, loading every account's settings and every endpoint's health from the
    /// store, so preferences, campaign switches and pauses outlive a restart. The first invalid
    /// setting, a missing store, or an unreadable stored record is returned as an error.
    pub fn build(self) -> Result<Webhooks> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let store = self
            .store
            .ok_or_else(|| Error::config("store", "a store is required"))?;
        let mut accounts = HashMap::new();
        for json in store.load_accounts()? {
            let account = Account::from_storage_json(&json)?;
            accounts.insert(account.id().clone(), account);
        }
        let mut health = HashMap::new();
        for (account, json) in store.load_health()? {
            health.insert(account, EndpointHealth::from_json(&json)?);
        }
        let engine = Engine::new(
            store,
            self.policy,
            self.clock,
            self.on_event,
            self.limits,
            accounts,
            health,
        );
        Ok(Webhooks {
            engine: Arc::new(engine),
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
            },
            error: None,
        }
    }

    /// Hands over one finished call's result.
    ///
    /// If the account's webhook is off, has no URL, or the campaign's switch is off, returns
    /// [`Submitted::Skipped`] and stores nothing. Otherwise encodes the body once (the
    /// account's current encoding and time zone: these bytes are what every attempt sends),
    /// gives it a fresh `webhook-id`, stores it durably and returns [`Submitted::Accepted`]
    /// without waiting for any receiver. An error (invalid field, body too large, store full or
    /// broken) means the call result was **not** accepted.
    ///
    /// Synchronous: with a durable store it waits for the data to reach the disk (a group commit
    /// may share that wait with other submits). Async dialers call it from `spawn_blocking` or
    /// a thread, or use `submit_async` (feature `tokio`).
    pub fn submit(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
        call: CallResult,
    ) -> Result<Submitted> {
        self.submit_with_id(account, campaign, call, DeliveryId::generate())
    }

    /// [`submit`](Self::submit) with the dialer's own `webhook-id` (for example one derived from
    /// its call id, so a resubmission after a dialer crash is recognisably the same). An id
    /// already stored is an error.
    pub fn submit_with_id(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
        call: CallResult,
        id: DeliveryId,
    ) -> Result<Submitted> {
        let body = {
            let accounts = self.engine.accounts();
            let Some(acc) = accounts.get(account) else {
                return Ok(Submitted::Skipped(OffReason::AccountDisabled));
            };
            if let SendDecision::Skip(reason) = acc.decide(campaign) {
                return Ok(Submitted::Skipped(reason));
            }
            EncodedBody::encode(&call, acc.preferences())?
        };
        let now = self.engine.clock.now();
        self.engine.store.insert(&[NewDelivery {
            id: id.clone(),
            account: account.clone(),
            campaign: campaign.clone(),
            body,
            created_at: now,
            next_attempt_at: now,
        }])?;
        tracing::debug!(delivery_id = %id, account = %account, campaign = %campaign, "call result accepted");
        self.engine.signal.touch(account);
        Ok(Submitted::Accepted(id))
    }

    /// [`submit`](Self::submit) on tokio's blocking pool, for async dialers.
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn submit_async(
        &self,
        account: AccountId,
        campaign: CampaignId,
        call: CallResult,
    ) -> Result<Submitted> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.submit(&account, &campaign, call)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Shutdown),
        }
    }

    /// Starts delivering on `threads` plain threads that call `dispatcher`, with no async
    /// runtime. At most `threads` attempts are in flight at once (and at most the
    /// [`max_concurrency`](WebhooksBuilder::max_concurrency)).
    ///
    /// One worker per `Webhooks` at a time: starting a second while one runs is an error.
    pub fn start_threads(
        &self,
        dispatcher: impl BlockingDispatcher,
        threads: usize,
    ) -> Result<Worker> {
        if threads == 0 {
            return Err(Error::config("threads", "must be at least 1"));
        }
        let global = threads.min(self.engine.limits.max_concurrency);
        let runner = ThreadRunner::start(Arc::new(dispatcher), global)
            .map_err(|e| Error::config("threads", format!("cannot start a thread: {e}")))?;
        Worker::start(self.engine.clone(), Arc::new(runner), global)
    }

    /// Starts delivering on the dialer's tokio runtime: each attempt is a task spawned on
    /// `handle` that awaits `dispatcher`. The scheduler itself (and every store call) runs on
    /// its own thread, never on the runtime's.
    ///
    /// One worker per `Webhooks` at a time: starting a second while one runs is an error.
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn start_tokio(
        &self,
        dispatcher: impl crate::dispatch::Dispatcher,
        handle: &tokio::runtime::Handle,
    ) -> Result<Worker> {
        let runner = crate::delivery::TokioRunner::new(Arc::new(dispatcher), handle.clone());
        Worker::start(
            self.engine.clone(),
            Arc::new(runner),
            self.engine.limits.max_concurrency,
        )
    }

    /// A copy of the account's settings, if any were ever saved. Its `Debug` never shows the
    /// password.
    pub fn account(&self, id: &AccountId) -> Option<Account> {
        self.engine.accounts().get(id).cloned()
    }

    /// Changes an account's preferences (creating its settings on first use). Only a full
    /// administrator may; anyone else gets [`Error::PermissionDenied`] and nothing changes. A
    /// new URL is also checked against the [`UrlPolicy`]. The change is saved in the store
    /// before this returns, and applies to pending deliveries from their next attempt on (their
    /// bodies stay as they were).
    pub fn update_preferences(
        &self,
        who: &Principal,
        account: &AccountId,
        update: PreferencesUpdate,
    ) -> Result<AuditRecord> {
        let _admin = lock(&self.engine.admin);
        let mut next = self
            .account(account)
            .unwrap_or_else(|| Account::new(account.clone()));
        let old_url = next.preferences().url().cloned();
        let record = next.update_preferences_at(who, update, self.engine.clock.now())?;
        let url_changed = next.preferences().url() != old_url.as_ref();
        if url_changed && let Some(url) = next.preferences().url() {
            self.engine.policy.check_url(url.as_url())?;
        }
        self.engine
            .store
            .save_account(account, &next.to_storage_json())?;
        self.engine.accounts_mut().insert(account.clone(), next);
        if url_changed {
            self.end_failure_streak(account);
        }
        self.engine.signal.reset(account);
        Ok(record)
    }

    /// A new URL is a new endpoint: the old one's failure streak no longer says anything.
    fn end_failure_streak(&self, account: &AccountId) {
        let mut all = lock(&self.engine.health);
        if let Some(health) = all.get_mut(account)
            && health.url_changed()
            && let Err(e) = self.engine.store.save_health(account, &health.to_json())
        {
            tracing::error!(account = %account, error = %e, "could not save endpoint health");
        }
    }

    /// Switches a campaign's "Enable WebHook" on or off (full administrators only; saved
    /// before this returns). It decides for call results submitted from now on; deliveries
    /// already accepted are still sent.
    pub fn set_campaign_webhook(
        &self,
        who: &Principal,
        account: &AccountId,
        campaign: impl Into<CampaignId>,
        enabled: bool,
    ) -> Result<AuditRecord> {
        let _admin = lock(&self.engine.admin);
        let mut next = self
            .account(account)
            .unwrap_or_else(|| Account::new(account.clone()));
        let record =
            next.set_campaign_webhook_at(who, campaign.into(), enabled, self.engine.clock.now())?;
        self.engine
            .store
            .save_account(account, &next.to_storage_json())?;
        self.engine.accounts_mut().insert(account.clone(), next);
        Ok(record)
    }

    /// Resumes a paused endpoint (full administrators only; saved before this returns): the
    /// deliveries that waited are sent. Returns whether it was paused.
    pub fn resume_endpoint(&self, who: &Principal, account: &AccountId) -> Result<bool> {
        who.require_admin("resume a webhook endpoint")?;
        let was_paused = {
            let mut all = lock(&self.engine.health);
            let mut health = all.get(account).cloned().unwrap_or_default();
            if health == EndpointHealth::default() {
                return Ok(false);
            }
            let was_paused = health.resume();
            self.engine.store.save_health(account, &health.to_json())?;
            all.insert(account.clone(), health);
            was_paused
        };
        if was_paused {
            tracing::info!(account = %account, by = who.name(), "webhook endpoint resumed");
            self.engine.emit(Event::EndpointResumed {
                account: account.clone(),
                by: who.name().to_owned(),
                at: self.engine.clock.now(),
            });
        }
        self.engine.signal.reset(account);
        Ok(was_paused)
    }

    /// Puts the failed deliveries matching `filter` back to pending, due now, with their
    /// `webhook-id` and bytes unchanged, and returns how many (full administrators only). One
    /// delivery ([`DeliveryFilter::id`]), a campaign's, or all of an account's.
    pub fn replay(&self, who: &Principal, filter: &DeliveryFilter) -> Result<u64> {
        who.require_admin("replay webhook deliveries")?;
        let n = self
            .engine
            .store
            .requeue_failed(filter, self.engine.clock.now())?;
        self.engine.signal.reset(&filter.account);
        Ok(n)
    }

    /// Removes the deliveries matching `filter`, pending or failed, and returns how many (full
    /// administrators only). This is the one way an accepted delivery is dropped.
    pub fn remove(&self, who: &Principal, filter: &DeliveryFilter) -> Result<u64> {
        who.require_admin("remove webhook deliveries")?;
        let n = self.engine.store.remove(filter)?;
        self.engine.signal.reset(&filter.account);
        Ok(n)
    }

    /// The deliveries that failed for good among those matching `filter`, oldest first, at most
    /// `limit` (full administrators only). No bodies.
    pub fn dead_letters(
        &self,
        who: &Principal,
        filter: &DeliveryFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        who.require_admin("list failed webhook deliveries")?;
        let filter = filter.clone().state(DeliveryState::Failed);
        Ok(self
            .engine
            .store
            .list(&filter, limit)?
            .into_iter()
            .map(DeadLetter::from)
            .collect())
    }

    /// The webhook's status for one campaign (`Some`) or the whole account (`None`): the
    /// indicator, counts, last success and failure, whether deliveries are held, and the
    /// endpoint's health. Reads the store.
    pub fn status(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<Status> {
        let stats = self.engine.store.stats(account, campaign)?;
        let endpoint = self.engine.health_of(account);
        let accounts = self.engine.accounts();
        let acc = accounts.get(account);
        let indicator = indicator(acc, campaign, &endpoint);
        let account_off = account_on(acc) != SendDecision::Send;
        Ok(Status {
            held: stats.pending > 0 && (account_off || endpoint.is_paused()),
            indicator,
            stats,
            endpoint,
        })
    }

    /// The indicator alone, from memory (no store read): cheap enough for every row of a
    /// campaign list.
    pub fn indicator(&self, account: &AccountId, campaign: &CampaignId) -> WebhookIndicator {
        let endpoint = self.engine.health_of(account);
        match self.engine.accounts().get(account) {
            Some(acc) => indicator(Some(acc), Some(campaign), &endpoint),
            None => WebhookIndicator::from(decide(false, false, false)),
        }
    }
}

#[cfg(test)]
impl Webhooks {
    /// How many passes the scheduler has made, for tests that check it waits, not spins.
    pub(crate) fn scheduler_passes(&self) -> u64 {
        self.engine.signal.passes().0
    }
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("engine", &self.engine)
            .finish()
    }
}
