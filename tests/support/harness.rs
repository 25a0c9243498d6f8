//! A dialer in miniature, in process: `Webhooks` on a `MemoryStore` with a `ManualClock`
//! (feature `test-util`), its events collected, sending to a `ScriptedReceiver`. No sleeps for
//! synchronisation: a retry happens when the test moves the clock.
//!
//! Shared with the unit tests of `src/delivery`, which include this file with `#[path]` (beside
//! `events.rs` and `scripted.rs`): the crate is `under_test` here, `crate` there and
//! `call_result_webhook` in `tests/`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use super::events::Events;
use super::scripted::{ScriptedReceiver, submit_accepted};
use super::under_test::{
    CallResult, DeliveryId, MemoryStore, PreferencesUpdate, Principal, Status, UrlPolicy, Webhooks,
    WebhooksBuilder, Worker,
    delivery::{DeadLetter, ManualClock},
    jiff::Timestamp,
    store::DeliveryFilter,
};

/// The moment every test's clock starts at.
pub(crate) fn t0() -> Timestamp {
    "2024-03-01T00:00:00Z".parse().unwrap()
}

/// The password every [`Harness::configure`]d account sends.
pub(crate) const PASSWORD: &str = "pa55-w0rd!";

/// A dialer in miniature: `Webhooks` on `store` with `clock`, https required by its policy,
/// its events collected.
pub(crate) struct Harness {
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) events: Events,
    pub(crate) webhooks: Webhooks,
    pub(crate) admin: Principal,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Harness::with(|b| b)
    }

    /// With more settings on the builder.
    pub(crate) fn with(configure: impl FnOnce(WebhooksBuilder) -> WebhooksBuilder) -> Self {
        Harness::on(
            Arc::new(MemoryStore::new()),
            Arc::new(ManualClock::new(t0())),
            configure,
        )
    }

    /// A dialer (re)started on `store`.
    pub(crate) fn on(
        store: Arc<MemoryStore>,
        clock: Arc<ManualClock>,
        configure: impl FnOnce(WebhooksBuilder) -> WebhooksBuilder,
    ) -> Self {
        let events = Events::default();
        let builder = Webhooks::builder()
            .store(store.clone())
            .clock(clock.clone())
            .policy(UrlPolicy::new());
        let webhooks = configure(events.sink(builder)).build().unwrap();
        Harness {
            store,
            clock,
            events,
            webhooks,
            admin: Principal::administrator("alice"),
        }
    }

    /// Webhook on, URL and credentials set, campaign `winter` on.
    pub(crate) fn configure(&self, account: &str, url: &str) {
        let id = account.into();
        self.webhooks
            .update_preferences_blocking(
                &self.admin,
                &id,
                PreferencesUpdate::new()
                    .enabled(true)
                    .url(url)
                    .credentials("dialer", PASSWORD),
            )
            .unwrap();
        self.webhooks
            .set_campaign_webhook_blocking(&self.admin, &id, &"winter".into(), true)
            .unwrap();
    }

    /// Submits a call result for campaign `winter`; it must be accepted.
    pub(crate) fn submit(&self, account: &str, reference: &str) -> DeliveryId {
        let call = CallResult::builder()
            .campaign_name("Winter Sale")
            .phone_called("0731051123")
            .reference(reference)
            .logged_at(t0())
            .build();
        submit_accepted(&self.webhooks, account, call)
    }

    /// A worker on 8 threads, sending to `receiver`.
    pub(crate) fn threads(&self, receiver: &Arc<ScriptedReceiver>) -> Worker {
        self.webhooks.start_threads(receiver.clone(), 8).unwrap()
    }

    /// `account`'s status, over all its campaigns.
    pub(crate) fn status(&self, account: &str) -> Status {
        self.webhooks
            .status_blocking(&account.into(), None)
            .unwrap()
    }

    pub(crate) fn dead_letters(&self, account: &str) -> Vec<DeadLetter> {
        self.webhooks
            .dead_letters_blocking(&self.admin, &DeliveryFilter::account(account), 100)
            .unwrap()
    }
}

pub(crate) fn delay_between(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap()
}

/// `actual` is `scheduled` give or take the schedule's jitter (±20%).
#[track_caller]
pub(crate) fn assert_jittered(actual: Duration, scheduled: Duration) {
    let (low, high) = (scheduled.mul_f64(0.8), scheduled.mul_f64(1.2));
    assert!(
        actual >= low && actual <= high,
        "{actual:?} not within ±20% of {scheduled:?}"
    );
}
