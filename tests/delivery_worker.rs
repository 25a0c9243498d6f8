//! The worker's life: one at a time, a graceful shutdown that waits for what finishes in time
//! and releases what does not (sent again, same id, after a restart), a broken event callback,
//! many accounts at once, and `Webhooks` and `Worker` shared across threads.
//!
//! In process: `Webhooks` on a `MemoryStore` with a `ManualClock` (feature `test-util`), and a
//! receiver that answers as a rule says (tests/support/harness.rs and scripted.rs). No network,
//! no sleeps for synchronisation: a retry happens when the test moves the clock. The same scenarios over real HTTP, with real
//! time, are in tests/delivery.rs; those that must see that nothing happens (which needs the
//! crate-private `Worker::settle`) are unit tests in src/delivery/tests.rs.
#![cfg(feature = "test-util")]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use call_result_webhook::delivery::ManualClock;
use call_result_webhook::store::{DeliveryFilter, Outbox};
use call_result_webhook::{
    CallResult, Error, MemoryStore, PreferencesUpdate, Principal, Webhooks, Worker,
};
use support::events::PATIENCE;
use support::harness::{Harness, t0};
#[cfg(feature = "tokio")]
use support::scripted::runtime;
use support::scripted::{Answer, ScriptedReceiver};

#[cfg(feature = "tokio")]
#[test]
fn a_graceful_shutdown_releases_what_did_not_finish_and_a_restart_sends_it_with_the_same_id() {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let h = Harness::on(store.clone(), clock.clone(), |b| b);
    h.configure("acme", "https://crm.example/hook");
    let hanging = ScriptedReceiver::new(|_, _| Answer::Hang);
    let worker = h
        .webhooks
        .start_tokio(hanging.clone(), rt.handle())
        .unwrap();
    let ids: HashSet<String> = (0..3)
        .map(|i| h.submit("acme", &i.to_string()).to_string())
        .collect();
    let in_flight: HashSet<String> = hanging.wait_seen(3).into_iter().map(|s| s.id).collect();
    assert_eq!(in_flight, ids);
    let report = worker.shutdown_blocking(Duration::from_millis(20)).unwrap();
    assert_eq!((report.finished, report.released), (0, 3));
    assert_eq!(h.status("acme").stats.pending, 3);
    drop(h);

    // The dialer restarts on the same store.
    let h = Harness::on(store, clock, |b| b);
    let receiver = ScriptedReceiver::always(200);
    let worker = h
        .webhooks
        .start_tokio(receiver.clone(), rt.handle())
        .unwrap();
    h.events.successes(3);
    let resent: HashSet<String> = receiver.seen().into_iter().map(|s| s.id).collect();
    assert_eq!(resent, ids);
    assert!(worker.wait_idle_blocking(PATIENCE).unwrap());
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn a_graceful_shutdown_waits_for_attempts_that_finish_in_time() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let receiver = ScriptedReceiver::new(|_, _| Answer::Hang);
    let worker = h.threads(&receiver);
    h.submit("acme", "1");
    receiver.wait_seen(1);
    // The receiver answers while the worker is shutting down.
    let release = {
        let receiver = receiver.clone();
        std::thread::spawn(move || receiver.release_hung())
    };
    let report = worker.shutdown_blocking(PATIENCE).unwrap();
    release.join().unwrap();
    // Finished before or during the shutdown, never released.
    assert_eq!(report.released, 0);
    assert!(report.finished <= 1);
    // Its outcome (a timeout) was recorded: pending again, for its retry.
    let pending = h.store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert_eq!(pending[0].attempts, 1);
}

#[test]
fn one_worker_at_a_time_and_another_after_shutdown() {
    let h = Harness::new();
    let receiver = ScriptedReceiver::always(200);
    let worker = h.threads(&receiver);
    assert!(matches!(
        h.webhooks.start_threads(receiver.clone(), 1),
        Err(Error::InvalidConfig {
            field: "worker",
            ..
        })
    ));
    assert!(matches!(
        h.webhooks.start_threads(receiver.clone(), 0),
        Err(Error::InvalidConfig {
            field: "threads",
            ..
        })
    ));
    worker.shutdown_blocking(PATIENCE).unwrap();
    let again = h.threads(&receiver);
    drop(again);
    assert!(matches!(
        Webhooks::builder().build(),
        Err(Error::InvalidConfig { field: "store", .. })
    ));
    assert!(matches!(
        Webhooks::builder()
            .store(MemoryStore::new())
            .max_concurrency(0)
            .build(),
        Err(Error::InvalidConfig {
            field: "max_concurrency",
            ..
        })
    ));
}

#[test]
fn a_panicking_event_callback_does_not_stop_deliveries() {
    let store = Arc::new(MemoryStore::new());
    let webhooks = Webhooks::builder()
        .store(store.clone())
        .clock(ManualClock::new(t0()))
        .on_event(|_| panic!("the dialer's callback is broken"))
        .build()
        .unwrap();
    let admin = Principal::administrator("alice");
    let acme = "acme".into();
    webhooks
        .update_preferences_blocking(
            &admin,
            &acme,
            PreferencesUpdate::new()
                .enabled(true)
                .url("https://crm.example/"),
        )
        .unwrap();
    webhooks
        .set_campaign_webhook_blocking(&admin, &acme, &"c".into(), true)
        .unwrap();
    let receiver = ScriptedReceiver::always(200);
    let worker = webhooks.start_threads(receiver.clone(), 2).unwrap();
    for i in 0..3 {
        let call = CallResult::builder().reference(i.to_string()).build();
        let _ = webhooks.submit_blocking(&acme, &"c".into(), call).unwrap();
    }
    assert!(worker.wait_idle_blocking(PATIENCE).unwrap());
    assert_eq!(receiver.seen().len(), 3);
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn many_accounts_many_deliveries_all_arrive_once_each() {
    let h = Harness::with(|b| b.max_concurrency(6).per_endpoint_concurrency(2));
    for a in 0..5 {
        h.configure(&format!("acct{a}"), &format!("https://r{a}.example/hook"));
    }
    let receiver = ScriptedReceiver::always(200);
    let worker = h.webhooks.start_threads(receiver.clone(), 6).unwrap();
    let mut ids = HashSet::new();
    for i in 0..40 {
        ids.insert(
            h.submit(&format!("acct{}", i % 5), &i.to_string())
                .to_string(),
        );
    }
    assert!(worker.wait_idle_blocking(PATIENCE).unwrap());
    let seen: Vec<String> = receiver.seen().into_iter().map(|s| s.id).collect();
    assert_eq!(seen.len(), 40);
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), ids);
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn webhooks_and_worker_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Webhooks>();
    shared::<Worker>();
    shared::<ManualClock>();
}
