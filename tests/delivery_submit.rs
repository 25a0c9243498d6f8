//! What a submit stores and sends, under which settings, and who may change them: campaigns
//! switched off, an account not configured, the address policy, a full store, a caller's own
//! delivery id, and settings only a full administrator changes.
//!
//! In process: `Webhooks` on a `MemoryStore` with a `ManualClock` (feature `test-util`), and a
//! receiver that answers as a rule says (tests/support/harness.rs and scripted.rs). No network,
//! no sleeps for synchronisation: a retry happens when the test moves the clock. The same scenarios over real HTTP, with real
//! time, are in tests/delivery.rs; those that must see that nothing happens (which needs the
//! crate-private `Worker::settle`) are unit tests in src/delivery/tests.rs.
#![cfg(feature = "test-util")]

mod support;

use std::sync::Arc;

use call_result_webhook::campaign::OffReason;
use call_result_webhook::delivery::ManualClock;
use call_result_webhook::store::{DeliveryFilter, Outbox, Settings};
use call_result_webhook::{
    CallResult, CampaignId, DeliveryId, Error, MemoryStore, PreferencesUpdate, Principal,
    Submitted, UrlPolicy,
};
use support::events::PATIENCE;
use support::harness::{Harness, t0};
use support::scripted::ScriptedReceiver;

#[test]
fn a_campaign_switched_off_at_submit_time_stores_nothing() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let call = || CallResult::builder().reference("1").build();
    let acme = "acme".into();
    assert_eq!(
        h.webhooks
            .submit_blocking(&acme, &"spring".into(), call())
            .unwrap(),
        Submitted::Skipped(OffReason::CampaignDisabled)
    );
    assert_eq!(
        h.webhooks
            .submit_blocking(&"unknown".into(), &"winter".into(), call())
            .unwrap(),
        Submitted::Skipped(OffReason::AccountNotConfigured),
        "an account never configured says so, rather than 'disabled'"
    );
    h.webhooks
        .update_preferences_blocking(&h.admin, &acme, PreferencesUpdate::new().clear_url())
        .unwrap();
    assert_eq!(
        h.webhooks
            .submit_blocking(&acme, &"winter".into(), call())
            .unwrap(),
        Submitted::Skipped(OffReason::AccountNotConfigured)
    );
    assert!(
        h.store
            .list(&DeliveryFilter::account("acme"), 10)
            .unwrap()
            .is_empty()
    );
    assert!(!h.store.has_pending().unwrap());
}

#[test]
fn a_campaign_switched_off_later_still_sends_what_was_accepted() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    h.submit("acme", "1");
    h.webhooks
        .set_campaign_webhook_blocking(&h.admin, &"acme".into(), &"winter".into(), false)
        .unwrap();
    let receiver = ScriptedReceiver::always(200);
    let worker = h.threads(&receiver);
    h.events.successes(1);
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn only_a_full_administrator_changes_settings_and_nothing_changes_otherwise() {
    let h = Harness::new();
    let bob = Principal::user("bob");
    let acme = "acme".into();
    let err = h
        .webhooks
        .update_preferences_blocking(
            &bob,
            &acme,
            PreferencesUpdate::new()
                .enabled(true)
                .url("https://x.example/"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }));
    assert!(
        h.webhooks
            .set_campaign_webhook_blocking(&bob, &acme, &"winter".into(), true)
            .is_err()
    );
    assert!(h.webhooks.account(&acme).is_none());
    assert!(h.store.load_settings().unwrap().accounts.is_empty());

    h.configure("acme", "https://crm.example/hook");
    let before = format!("{:?}", h.webhooks.account(&acme).unwrap());
    let saved = h.store.load_settings().unwrap().accounts;
    assert!(
        h.webhooks
            .update_preferences_blocking(&bob, &acme, PreferencesUpdate::new().enabled(false))
            .is_err()
    );
    assert!(
        h.webhooks
            .set_campaign_webhook_blocking(&bob, &acme, &"winter".into(), false)
            .is_err()
    );
    assert_eq!(format!("{:?}", h.webhooks.account(&acme).unwrap()), before);
    assert_eq!(h.store.load_settings().unwrap().accounts, saved);
}

#[test]
fn urls_are_checked_against_the_policy_when_set() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let acme = "acme".into();
    let before = format!("{:?}", h.webhooks.account(&acme).unwrap());
    // https is required by this deployment's policy.
    let err = h
        .webhooks
        .update_preferences_blocking(
            &h.admin,
            &acme,
            PreferencesUpdate::new().url("http://crm.example/hook"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    let err = h
        .webhooks
        .update_preferences_blocking(
            &h.admin,
            &acme,
            PreferencesUpdate::new().url("https://10.0.0.5/hook"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::AddressRefused { .. }), "{err:?}");
    assert_eq!(format!("{:?}", h.webhooks.account(&acme).unwrap()), before);

    // A deployment that allows http accepts it.
    let h = Harness::with(|b| b.policy(UrlPolicy::new().allow_http(true)));
    h.configure("acme", "http://crm.example/hook");
}

#[test]
fn a_full_store_is_an_error_and_nothing_is_dropped_silently() {
    let h = Harness::on(
        Arc::new(MemoryStore::with_max_pending(1)),
        Arc::new(ManualClock::new(t0())),
        |b| b,
    );
    h.configure("acme", "https://crm.example/hook");
    h.submit("acme", "1");
    let call = CallResult::builder().reference("2").build();
    let err = h
        .webhooks
        .submit_blocking(&"acme".into(), &"winter".into(), call)
        .unwrap_err();
    assert!(matches!(err, Error::StoreFull { max_pending: 1 }));
}

#[test]
fn a_caller_chosen_id_is_sent_once_and_a_conflicting_reuse_is_refused() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let id = DeliveryId::new("call-42").unwrap();
    let call = || CallResult::builder().reference("42").build();
    let (acme, winter): (call_result_webhook::AccountId, CampaignId) =
        ("acme".into(), "winter".into());
    assert_eq!(
        h.webhooks
            .submit_with_id_blocking(&acme, &winter, call(), id.clone())
            .unwrap(),
        Submitted::Accepted(id.clone())
    );
    // The same call result again is stored once (Store::insert is idempotent on the id);
    // another call result under the id is refused.
    assert_eq!(
        h.webhooks
            .submit_with_id_blocking(&acme, &winter, call(), id.clone())
            .unwrap(),
        Submitted::Accepted(id.clone())
    );
    let other = CallResult::builder().reference("43").build();
    assert!(matches!(
        h.webhooks
            .submit_with_id_blocking(&acme, &winter, other, id.clone()),
        Err(Error::IdConflict { .. })
    ));
    let receiver = ScriptedReceiver::always(200);
    let worker = h.threads(&receiver);
    h.events.successes(1);
    assert_eq!(receiver.seen()[0].id, "call-42");
    worker.shutdown_blocking(PATIENCE).unwrap();
    assert_eq!(receiver.seen().len(), 1);
}
