//! What most tests begin with: an administrator, the account and campaign they configure, a
//! call result, the policy that admits a receiver on 127.0.0.1, an account's saved settings,
//! and a `Webhooks` with its worker running.

use std::sync::Arc;

use call_result_webhook::{
    AccountId, CallResult, CampaignId, MemoryStore, PreferencesUpdate, Principal, UrlPolicy,
    Webhooks, account::Account, preferences::AuditRecord, store::Settings as _,
};

/// The administrator who configures every test account.
pub fn admin() -> Principal {
    Principal::administrator("alice")
}

/// The account and campaign most tests use: `acme` and `winter`.
pub fn ids() -> (AccountId, CampaignId) {
    ("acme".into(), "winter".into())
}

/// A call result with nothing but its `reference`.
pub fn call(reference: &str) -> CallResult {
    CallResult::builder().reference(reference).build()
}

/// A call result with a little of everything.
pub fn sample_call() -> CallResult {
    CallResult::builder()
        .campaign_name("Winter Sale")
        .logged_at("2019-06-19T16:11:07Z".parse().unwrap())
        .phone_called("0731051234")
        .reference("123")
        .result("Connected")
        .result_notes("Paid by card, call back Tuesday")
        .build()
}

/// The test receivers are plain http on loopback, which the default policy refuses: this one
/// admits them.
pub fn loopback_policy() -> UrlPolicy {
    UrlPolicy::new().allow_http(true).allow_private()
}

/// Account `acme` as the administrator saved it with `update` (see [`Saved`]).
pub fn account(update: PreferencesUpdate) -> Account {
    Saved::new(update).account()
}

/// Account `acme`'s settings, changed the one way an administrator changes them (saved through
/// [`Webhooks`], on a [`MemoryStore`] of their own, under [`loopback_policy`]), for tests that
/// build requests from them.
pub struct Saved {
    webhooks: Webhooks,
    store: Arc<MemoryStore>,
}

impl Saved {
    /// `acme` with `update` saved by the [`admin`].
    pub fn new(update: PreferencesUpdate) -> Self {
        let store = Arc::new(MemoryStore::new());
        let saved = Saved {
            webhooks: Self::open(&store),
            store,
        };
        saved.update(&admin(), update).expect("preferences");
        saved
    }

    /// Applies and saves `update` as `who`.
    pub fn update(
        &self,
        who: &Principal,
        update: PreferencesUpdate,
    ) -> call_result_webhook::Result<AuditRecord> {
        self.webhooks
            .update_preferences_blocking(who, &"acme".into(), update)
    }

    /// `acme` as saved.
    pub fn account(&self) -> Account {
        self.webhooks.account(&"acme".into()).expect("saved")
    }

    /// `acme`'s settings as the store was handed them.
    pub fn stored_json(&self) -> String {
        self.store
            .load_account(&"acme".into())
            .expect("load")
            .expect("saved")
            .json
    }

    /// `acme` as another `Webhooks` on the same store reads it back.
    pub fn reopened(&self) -> Account {
        Self::open(&self.store)
            .account(&"acme".into())
            .expect("saved")
    }

    fn open(store: &Arc<MemoryStore>) -> Webhooks {
        Webhooks::builder()
            .store(store.clone())
            .policy(loopback_policy())
            .build()
            .expect("webhooks")
    }
}

/// The set-up most tests begin with: an administrator switches `account`'s webhook on with
/// `preferences` and turns `campaign` on.
pub fn switch_on(
    webhooks: &Webhooks,
    account: &AccountId,
    campaign: &CampaignId,
    preferences: PreferencesUpdate,
) {
    let admin = admin();
    webhooks
        .update_preferences_blocking(&admin, account, preferences.enabled(true))
        .expect("preferences");
    webhooks
        .set_campaign_webhook_blocking(&admin, account, campaign, true)
        .expect("campaign switch");
}

/// One dialer process in miniature (on a `PostgresStore` over a shared schema, one instance
/// of a fleet): `Webhooks` on a store under [`loopback_policy`], and its worker with a
/// `HyperDispatcher` on a runtime of its own (one thread). Fields drop in order: the facade,
/// the worker, then the runtime.
#[cfg(feature = "hyper")]
pub struct Instance {
    pub webhooks: Webhooks,
    pub worker: call_result_webhook::Worker,
    pub runtime: tokio::runtime::Runtime,
}

#[cfg(feature = "hyper")]
impl Instance {
    pub fn start(store: impl call_result_webhook::store::Store) -> Instance {
        Instance::start_with(store, |builder| builder)
    }

    /// With more settings on the builder (`on_event`, limits).
    pub fn start_with(
        store: impl call_result_webhook::store::Store,
        configure: impl FnOnce(
            call_result_webhook::WebhooksBuilder,
        ) -> call_result_webhook::WebhooksBuilder,
    ) -> Instance {
        let builder = Webhooks::builder().store(store).policy(loopback_policy());
        let webhooks = configure(builder).build().expect("build");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let worker = webhooks
            .start_tokio(
                call_result_webhook::HyperDispatcher::builder().build(),
                runtime.handle(),
            )
            .expect("start the worker");
        Instance {
            webhooks,
            worker,
            runtime,
        }
    }
}
