//! The 0.2 API as a tokio dialer meets it: async all the way, stalls that surface as errors or
//! events within a second, and submits that can be dropped and retried without duplicates.
//!
//! Every delivery here goes over real HTTP to a receiver on 127.0.0.1 (tests/support).
#![cfg(all(feature = "hyper", feature = "sqlite"))]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use call_result_webhook::delivery::RetrySchedule;
use call_result_webhook::{
    DeliveryId, Error, Event, HyperDispatcher, PreferencesUpdate, SqliteStore, Submitted,
    UrlPolicy, Webhooks,
};
use support::events::Events;
use support::{Receiver, Reply, admin, call, ids, loopback_policy};

/// How long a stall may take to surface.
const SURFACES_WITHIN: Duration = Duration::from_secs(1);

/// The first `WorkerStopped` event: when it came, its reason, and how many it released.
fn worker_stopped(events: &Events) -> Option<(Instant, String, usize)> {
    events.timed().into_iter().find_map(|(at, e)| match e {
        Event::WorkerStopped { reason, released } => Some((at, reason, released)),
        _ => None,
    })
}

/// A configured account on a fresh SQLite outbox, the policy given once, to the builder.
async fn webhooks(dir: &tempfile::TempDir, url: &str, events: &Events) -> Webhooks {
    let store = SqliteStore::open(dir.path().join("outbox.db")).expect("open the outbox");
    let webhooks = events
        .sink(Webhooks::builder().store(store).policy(loopback_policy()))
        .build()
        .expect("build");
    let (acme, winter) = ids();
    webhooks
        .update_preferences(
            &admin(),
            &acme,
            PreferencesUpdate::new()
                .enabled(true)
                .url(url)
                .credentials("dialer", "s3cret")
                .attempt_timeout(Duration::from_secs(2))
                .retry_schedule(RetrySchedule::new([Duration::from_millis(50)]).unwrap()),
        )
        .await
        .expect("preferences");
    webhooks
        .set_campaign_webhook(&admin(), &acme, &winter, true)
        .await
        .expect("campaign switch");
    webhooks
}

/// The integration the issue asked for: `#[tokio::main]`-style, every operation awaited, no
/// `spawn_blocking`, no `Arc::try_unwrap`, the worker shared by clones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokio_dialer_awaits_everything_and_shares_the_worker() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let events = Events::default();
    let webhooks = webhooks(&dir, &receiver.url_for("/hook"), &events).await;
    let (acme, winter) = ids();

    // The dispatcher is built without a policy: it adopts the one given to the builder.
    let worker = webhooks
        .start_tokio(
            HyperDispatcher::builder().build(),
            &tokio::runtime::Handle::current(),
        )
        .expect("start");
    let waiter = worker.clone();
    let submitted = webhooks.submit(&acme, &winter, call("1")).await.unwrap();
    assert!(submitted.is_accepted());
    assert!(waiter.wait_idle(Duration::from_secs(10)).await.unwrap());
    assert_eq!(receiver.requests().len(), 1);

    let status = webhooks.status(&acme, Some(&winter)).await.unwrap();
    assert_eq!((status.stats.delivered, status.stats.pending), (1, 0));
    assert!(status.worker_stopped.is_none());
    let report = worker.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.released, 0);
    // Another handle asking again gets the same answer at once.
    assert_eq!(waiter.shutdown(Duration::ZERO).await.unwrap(), report);
}

/// Before 0.2, `wait_idle` inside a current-thread runtime waited its whole deadline with
/// nothing delivered. Now each blocking wait made on the worker's runtime refuses at once.
#[test]
fn blocking_waits_on_the_workers_runtime_refuse_at_once() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = Events::default();
    runtime.block_on(async {
        let webhooks = webhooks(&dir, &receiver.url_for("/hook"), &events).await;
        let (acme, winter) = ids();
        let worker = webhooks
            .start_tokio(
                HyperDispatcher::builder().build(),
                &tokio::runtime::Handle::current(),
            )
            .unwrap();
        assert!(
            webhooks
                .submit(&acme, &winter, call("1"))
                .await
                .unwrap()
                .is_accepted()
        );

        let asked = Instant::now();
        let waited = worker.wait_idle_blocking(Duration::from_secs(30));
        assert!(
            matches!(
                waited,
                Err(Error::BlockingInRuntime {
                    instead: "Worker::wait_idle(..).await",
                    ..
                })
            ),
            "{waited:?}"
        );
        let stopped = worker.shutdown_blocking(Duration::from_secs(30));
        assert!(
            matches!(
                stopped,
                Err(Error::BlockingInRuntime {
                    instead: "Worker::shutdown(..).await",
                    ..
                })
            ),
            "{stopped:?}"
        );
        let refused_in = asked.elapsed();
        assert!(refused_in < SURFACES_WITHIN, "refused after {refused_in:?}");
        let message = waited.unwrap_err().to_string();
        assert!(message.contains("wait_idle(..).await"), "{message}");

        // The async forms work on the same thread, and nothing was lost meanwhile.
        assert!(worker.wait_idle(Duration::from_secs(10)).await.unwrap());
        assert_eq!(receiver.requests().len(), 1);
        worker.shutdown(Duration::from_secs(5)).await.unwrap();
    });
}

/// Before 0.2, a worker whose runtime was dropped kept accepting submits, left its attempts
/// "in flight" for ever and said nothing. Now it notices at once: an event, the status, and
/// the next wait_idle and shutdown say it is not running; submits are still stored.
#[test]
fn a_worker_whose_runtime_is_gone_says_so_and_submits_are_still_kept() {
    let receiver = Receiver::start();
    // Four attempts hang at the receiver, so they are in flight when the runtime goes.
    receiver.set_default(Reply::hang());
    let dir = tempfile::tempdir().unwrap();
    let events = Events::default();
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let webhooks = setup.block_on(webhooks(&dir, &receiver.url_for("/hook"), &events));
    let (acme, winter) = ids();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let worker = webhooks
        .start_tokio(HyperDispatcher::builder().build(), runtime.handle())
        .unwrap();
    for n in 0..4 {
        let submitted = webhooks.submit_blocking(&acme, &winter, call(&n.to_string()));
        assert!(submitted.unwrap().is_accepted());
    }
    receiver.wait_for(4, Duration::from_secs(10));
    assert_eq!(worker.in_flight(), 4);

    let dropped_at = Instant::now();
    drop(runtime);
    let waited = worker.wait_idle_blocking(Duration::from_secs(30));
    assert!(
        matches!(&waited, Err(Error::WorkerStopped { reason }) if reason.contains("runtime")),
        "{waited:?}"
    );
    let noticed_in = dropped_at.elapsed();
    assert!(noticed_in < SURFACES_WITHIN, "noticed after {noticed_in:?}");
    let (event_at, reason, released) = worker_stopped(&events).expect("a WorkerStopped event");
    assert!(event_at.duration_since(dropped_at) < SURFACES_WITHIN);
    assert!(reason.contains("runtime"), "{reason}");
    assert_eq!(released, 4);
    assert!(!worker.is_running());
    assert!(matches!(
        worker.shutdown_blocking(Duration::from_secs(5)),
        Err(Error::WorkerStopped { .. })
    ));

    // Submits are still accepted durably, and the status tells the UI.
    assert!(
        webhooks
            .submit_blocking(&acme, &winter, call("after"))
            .unwrap()
            .is_accepted()
    );
    let status = webhooks.status_blocking(&acme, None).unwrap();
    assert_eq!(status.stats.pending, 5, "the 4 released and the new one");
    assert!(status.worker_stopped.is_some_and(|r| r.contains("runtime")));

    // A new worker on a new runtime delivers all five, with the same ids for the four.
    receiver.set_default(Reply::ok());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let worker = webhooks
        .start_tokio(HyperDispatcher::builder().build(), runtime.handle())
        .unwrap();
    assert!(worker.wait_idle_blocking(Duration::from_secs(10)).unwrap());
    assert_eq!(
        webhooks
            .status_blocking(&acme, None)
            .unwrap()
            .stats
            .delivered,
        5
    );
    worker.shutdown_blocking(Duration::from_secs(5)).unwrap();
}

/// Submit futures dropped at random points, then retried with the same id until answered:
/// each id is delivered exactly once, and nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_submits_retried_with_their_id_are_delivered_exactly_once() {
    const CALLS: usize = 200;
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let events = Events::default();
    let webhooks = webhooks(&dir, &receiver.url_for("/hook"), &events).await;
    let (acme, winter) = ids();
    let worker = webhooks
        .start_tokio(
            HyperDispatcher::builder().build(),
            &tokio::runtime::Handle::current(),
        )
        .unwrap();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut rng = seed | 1;
    let mut next = move || {
        // xorshift64: enough to scatter the drop points.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut dropped, mut answered_first_time) = (0, 0);
    let mut calls = Vec::with_capacity(CALLS);
    for n in 0..CALLS {
        let id = DeliveryId::new(format!("call-{n}")).unwrap();
        // One call result, submitted again as it was: a retry sends the same call (its
        // LogDateTime included), not a new one built later.
        let this = call(&n.to_string());
        calls.push(this.clone());
        // Dropped after 0 to 400 µs: before, during or after the store's work.
        let patience = Duration::from_micros(next() % 400);
        let first = tokio::time::timeout(
            patience,
            webhooks.submit_with_id(&acme, &winter, this.clone(), id.clone()),
        )
        .await;
        match first {
            Ok(answer) => {
                assert_eq!(answer.unwrap(), Submitted::Accepted(id.clone()));
                answered_first_time += 1;
            }
            Err(_elapsed) => dropped += 1,
        }
        // Retried, as a dialer would after a timeout: same id, same call result, twice.
        for _ in 0..2 {
            let again = webhooks
                .submit_with_id(&acme, &winter, this.clone(), id.clone())
                .await;
            assert_eq!(again.unwrap(), Submitted::Accepted(id.clone()));
        }
    }
    println!("{dropped} futures dropped, {answered_first_time} answered the first time");
    assert!(
        dropped > 0,
        "no future was dropped: the test proved nothing"
    );

    assert!(worker.wait_idle(Duration::from_secs(30)).await.unwrap());
    // Late retries, after delivery, are remembered and not sent again; another call result
    // under a delivered id is refused, never silently dropped (a fingerprint of what was
    // delivered is kept with the id).
    for (n, this) in calls.into_iter().enumerate() {
        let id = DeliveryId::new(format!("call-{n}")).unwrap();
        let again = webhooks.submit_with_id(&acme, &winter, this, id.clone());
        assert!(again.await.unwrap().is_accepted());
        let other = call(&format!("another {n}"));
        let refused = webhooks.submit_with_id(&acme, &winter, other, id).await;
        assert!(
            matches!(&refused, Err(Error::IdConflict { id }) if id == &format!("call-{n}")),
            "{refused:?}"
        );
    }
    assert!(worker.wait_idle(Duration::from_secs(30)).await.unwrap());
    worker.shutdown(Duration::from_secs(5)).await.unwrap();

    let mut per_id: HashMap<String, usize> = HashMap::new();
    for request in receiver.requests() {
        *per_id
            .entry(request.header("webhook-id").unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), CALLS, "every call delivered");
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let status = webhooks.status(&acme, None).await.unwrap();
    assert_eq!(
        (status.stats.delivered, status.stats.pending),
        (CALLS as u64, 0)
    );

    // With no worker running, a new id stays pending: the same id for a different call
    // result is refused, not silently merged; the same call result again is fine.
    let late = DeliveryId::new("call-late").unwrap();
    let first = webhooks.submit_with_id(&acme, &winter, call("late"), late.clone());
    assert!(first.await.unwrap().is_accepted());
    let reused = webhooks
        .submit_with_id(&acme, &winter, call("something else"), late.clone())
        .await;
    assert!(
        matches!(&reused, Err(Error::IdConflict { id }) if id == "call-late"),
        "{reused:?}"
    );
    assert!(
        webhooks
            .submit_with_id(&acme, &winter, call("late"), late)
            .await
            .is_ok()
    );
    assert_eq!(webhooks.status(&acme, None).await.unwrap().stats.pending, 1);
}

/// The policy is set once: a dispatcher built with a different one is refused when the worker
/// starts, with an error naming the conflict, rather than failing every delivery later.
#[tokio::test]
async fn a_dispatcher_with_a_different_policy_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let events = Events::default();
    let webhooks = webhooks(&dir, "http://127.0.0.1:9/hook", &events).await;
    let started = webhooks.start_tokio(
        HyperDispatcher::builder().policy(UrlPolicy::new()).build(),
        &tokio::runtime::Handle::current(),
    );
    match started {
        Err(Error::InvalidConfig {
            field: "policy",
            reason,
        }) => {
            assert!(reason.contains("Webhooks::builder().policy"), "{reason}")
        }
        other => panic!("expected the policy conflict, got {other:?}"),
    }
    // Nothing is left running: a worker with an agreeing dispatcher starts.
    let worker = webhooks
        .start_tokio(
            HyperDispatcher::builder().policy(loopback_policy()).build(),
            &tokio::runtime::Handle::current(),
        )
        .unwrap();
    worker.shutdown(Duration::from_secs(1)).await.unwrap();
}
