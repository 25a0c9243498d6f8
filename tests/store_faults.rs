//! A store that fails on demand, under a real worker sending to a real receiver on 127.0.0.1:
//! a full disk (writes fail), a corrupt page (reads fail), and recovery. Nothing is sent twice
//! while the store fails, nothing new is attempted, the cause is reported once, and after
//! recovery every delivery is delivered exactly once.
#![cfg(feature = "hyper")]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use call_result_webhook::{
    CallResult, DeliveryId, Error, Event, HyperDispatcher, PreferencesUpdate, Webhooks, Worker,
};
use support::events::Events;
use support::faulty_store::{Access, Failures, FaultyStore};
use support::{Receiver, Reply, admin, ids, loopback_policy, switch_on, within};

/// A `MemoryStore` whose writes or reads fail while told to, as a full disk or a corrupt
/// page would make them.
type Faulty = FaultyStore<Switches>;

/// What fails in a [`Faulty`] store.
#[derive(Default)]
struct Switches {
    writes_fail: AtomicBool,
    reads_fail: AtomicBool,
}

impl Failures for Switches {
    fn fails(&self, _: &'static str, access: Access) -> bool {
        match access {
            Access::Write => self.writes_fail.load(Ordering::SeqCst),
            Access::Read => self.reads_fail.load(Ordering::SeqCst),
            // Counts stay readable: the dialer's status screen is how an operator sees the
            // fault. Settings reads stay readable, as counts do: a full disk fails writes only.
            Access::Look => false,
        }
    }

    fn error(&self, _: &'static str, access: Access) -> Error {
        if access == Access::Write {
            Error::store(
                "recording an attempt",
                std::io::Error::other("database or disk is full"),
            )
        } else {
            Error::store(
                "claiming due deliveries",
                std::io::Error::other("database disk image is malformed"),
            )
        }
    }
}

struct Setup {
    store: Arc<Faulty>,
    webhooks: Webhooks,
    events: Events,
    receiver: Receiver,
    runtime: tokio::runtime::Runtime,
    ids: Vec<DeliveryId>,
}

/// `n` deliveries pending for one account, nothing running yet. At most 4 attempts at once.
fn setup(n: usize) -> Setup {
    let receiver = Receiver::start();
    receiver.set_default(Reply::ok());
    let store = Arc::new(Faulty::default());
    let events = Events::default();
    let webhooks = events
        .sink(
            Webhooks::builder()
                .store(store.clone())
                .policy(loopback_policy())
                .max_concurrency(8)
                .per_endpoint_concurrency(4),
        )
        .build()
        .unwrap();
    let (acme, winter) = ids();
    switch_on(
        &webhooks,
        &acme,
        &winter,
        PreferencesUpdate::new().url(&receiver.url_for("/hook")),
    );
    let ids = (0..n)
        .map(|i| {
            let id = DeliveryId::new(format!("call-{i}")).unwrap();
            let call = CallResult::builder().reference(i.to_string()).build();
            let submitted = webhooks.submit_with_id_blocking(&acme, &winter, call, id.clone());
            assert!(submitted.unwrap().is_accepted());
            id
        })
        .collect();
    Setup {
        store,
        webhooks,
        events,
        receiver,
        runtime: tokio::runtime::Runtime::new().unwrap(),
        ids,
    }
}

impl Setup {
    fn start(&self) -> Worker {
        self.webhooks
            .start_tokio(HyperDispatcher::builder().build(), self.runtime.handle())
            .unwrap()
    }

    fn requests_per_id(&self) -> HashMap<String, usize> {
        let mut per_id = HashMap::new();
        for r in self.receiver.requests() {
            *per_id
                .entry(r.header("webhook-id").unwrap().to_owned())
                .or_insert(0) += 1;
        }
        per_id
    }

    fn failing_events(&self) -> Vec<(String, bool, usize)> {
        self.events
            .all()
            .iter()
            .filter_map(|e| match e {
                Event::StoreFailing {
                    reason,
                    reads,
                    holding,
                } => Some((reason.clone(), *reads, *holding)),
                _ => None,
            })
            .collect()
    }

    fn recovered(&self) -> Option<usize> {
        self.events.all().iter().find_map(|e| match e {
            Event::StoreRecovered { recorded } => Some(*recorded),
            _ => None,
        })
    }
}

#[test]
fn outcomes_a_full_disk_cannot_record_are_kept_never_sent_again_and_recorded_on_recovery() {
    const N: usize = 20;
    let s = setup(N);
    s.store.failures.writes_fail.store(true, Ordering::SeqCst);
    let worker = s.start();

    // The first attempts go out (4: the endpoint's share) and answer 200; their outcomes
    // cannot be written. While the first are being written, the places their requests left
    // take the next attempts (at most another share) until the failure is known. Then
    // nothing: no resend, no new attempt, for as long as it lasts.
    s.receiver.wait_for(4, Duration::from_secs(10));
    within("the failure is reported", Duration::from_secs(10), || {
        !s.failing_events().is_empty()
    });
    let at_report = s.receiver.requests().len();
    std::thread::sleep(Duration::from_secs(3));
    let during = s.receiver.requests().len();
    let failing = s.failing_events();
    println!(
        "disk full: {during} requests ({at_report} when reported) in {:?}, events {failing:?}",
        Duration::from_secs(3)
    );
    assert_eq!(during, at_report, "no attempt while the store fails");
    assert!(
        (4..=8).contains(&during),
        "the first attempts only: {during}"
    );
    assert!(s.requests_per_id().values().all(|n| *n == 1), "each once");
    assert_eq!(failing.len(), 1, "said once");
    let (reason, reads, holding) = &failing[0];
    assert!(reason.contains("disk is full"), "{reason}");
    assert!(!reads);
    // Reported on the third failed try (a claim given back or an outcome recorded): by then
    // some of the outcomes were held.
    assert!((1..=during).contains(holding), "{holding}");
    let status = s.webhooks.status_blocking(&"acme".into(), None).unwrap();
    assert!(
        status
            .store_failing
            .is_some_and(|r| r.contains("disk is full"))
    );
    // Writes fail, reads do not: waiting goes on (the backlog drains once the disk has room).
    assert!(matches!(
        worker.wait_idle_blocking(Duration::from_millis(200)),
        Ok(false)
    ));

    // Room again: the held outcomes are recorded, then the rest is delivered, each once.
    s.store.failures.writes_fail.store(false, Ordering::SeqCst);
    let idle = worker.wait_idle_blocking(Duration::from_secs(30)).unwrap();
    if !idle {
        eprintln!("events: {:?}", s.events.all());
        eprintln!("requests: {}", s.receiver.requests().len());
        eprintln!(
            "status: {:?}",
            s.webhooks.status_blocking(&"acme".into(), None)
        );
        eprintln!("in flight: {}", worker.in_flight());
    }
    assert!(idle);
    let per_id = s.requests_per_id();
    assert_eq!(per_id.len(), N);
    assert!(per_id.values().all(|n| *n == 1), "{per_id:?}");
    assert_eq!(s.recovered(), Some(during));
    let status = s.webhooks.status_blocking(&"acme".into(), None).unwrap();
    assert_eq!(
        (status.stats.delivered, status.stats.pending),
        (N as u64, 0)
    );
    assert!(status.store_failing.is_none());
    println!(
        "disk full, then room: {N} delivered, {} requests, ids {:?}..",
        s.receiver.requests().len(),
        &s.ids[..2]
    );
    worker.shutdown_blocking(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_store_that_cannot_be_read_is_reported_and_waiting_on_it_fails() {
    const N: usize = 5;
    let s = setup(N);
    s.store.failures.reads_fail.store(true, Ordering::SeqCst);
    let worker = s.start();
    let reported = Instant::now();
    within("the failure is reported", Duration::from_secs(15), || {
        !s.failing_events().is_empty()
    });
    println!("corrupt page: reported after {:?}", reported.elapsed());
    let failing = s.failing_events();
    assert!(failing[0].1, "a read failure");
    assert!(failing[0].0.contains("malformed"), "{failing:?}");
    // Waiting for an idle outbox that cannot be read says why, rather than waiting on.
    match worker.wait_idle_blocking(Duration::from_secs(30)) {
        Err(Error::Store { message, .. }) => assert!(message.contains("malformed"), "{message}"),
        other => panic!("expected the store's failure, got {other:?}"),
    }
    assert!(s.receiver.requests().is_empty());

    // Repaired: everything is delivered once.
    s.store.failures.reads_fail.store(false, Ordering::SeqCst);
    within("every delivery", Duration::from_secs(40), || {
        s.receiver.requests().len() >= N
    });
    assert!(worker.wait_idle_blocking(Duration::from_secs(10)).unwrap());
    assert!(s.requests_per_id().values().all(|n| *n == 1));
    assert!(s.recovered().is_some());
    worker.shutdown_blocking(Duration::from_secs(5)).unwrap();
}

/// A dialer that sets the same preferences at every start writes nothing for them: on a full
/// disk it still starts, and its worker still delivers what is pending.
#[test]
fn setting_the_same_preferences_again_writes_nothing() {
    let s = setup(3);
    s.store.failures.writes_fail.store(true, Ordering::SeqCst);
    let admin = admin();
    let (acme, winter) = ids();
    s.webhooks
        .update_preferences_blocking(
            &admin,
            &acme,
            PreferencesUpdate::new()
                .enabled(true)
                .url(&s.receiver.url_for("/hook")),
        )
        .expect("nothing changed, nothing written");
    s.webhooks
        .set_campaign_webhook_blocking(&admin, &acme, &winter, true)
        .expect("nothing changed, nothing written");
    // A real change needs the disk.
    assert!(
        s.webhooks
            .set_campaign_webhook_blocking(&admin, &acme, &winter, false)
            .is_err()
    );
}
