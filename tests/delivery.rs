//! Reliable delivery from outside: `Webhooks` with a real worker and a real backend, against
//! receivers on 127.0.0.1 that script their answers (503s, 429 with `Retry-After`, silence,
//! resets, 404, 410), one account's dead endpoint beside a healthy one, and a graceful shutdown
//! followed by a restart on the same SQLite outbox file.
//!
//! Every scenario runs through the hyper backend on tokio and through ureq on plain threads.
//! Accounts use short retry schedules so real time stays short; waits have generous upper
//! bounds (the machine may be loaded) and timing assertions are lower bounds only.
#![cfg(any(feature = "hyper", feature = "ureq"))]

mod support;

use std::time::{Duration, Instant};

use call_result_webhook::{
    AccountId, CallResult, CampaignId, DeliveryId, Error, Event, MemoryStore, PreferencesUpdate,
    Principal, Status, Submitted, Webhooks, Worker,
    campaign::WebhookIndicator,
    delivery::{FailureKind, PauseReason, RetrySchedule},
    store::{DeliveryFilter, Store},
};
use support::events::{Events, PATIENCE};
use support::{Receiver, Recorded, Reply, admin, loopback_policy, within};

/// The campaign every test account switches on.
const CAMPAIGN: &str = "winter-sale";

/// A short retry schedule, in milliseconds.
fn schedule(delays_ms: &[u64]) -> RetrySchedule {
    RetrySchedule::new(delays_ms.iter().map(|ms| Duration::from_millis(*ms)))
        .expect("a valid schedule")
}

/// A call result with a unique reference, every field set, and notes that exercise the encoder.
fn full_call(reference: &str) -> CallResult {
    CallResult::builder()
        .campaign_name("Winter Sale")
        .logged_at("2019-06-19T16:11:07Z".parse().unwrap())
        .call_start("2019-06-19T15:01:00Z".parse().unwrap())
        .call_end("2019-06-19T15:03:00Z".parse().unwrap())
        .phone_called("0731051xxx")
        .reference(reference)
        .result("Connected")
        .result_notes("Paid in full.\nCall back 3 pm & ask for Jo ✓")
        .wrap_up_by_name("agent@pinetree.net.au")
        .wrap_up_reason_name("Payment Taken")
        .build()
}

/// Every request carries `id` as `webhook-id` and the same body bytes as the first.
fn assert_same_delivery(requests: &[Recorded], id: &DeliveryId) {
    assert!(!requests.is_empty());
    for (n, r) in requests.iter().enumerate() {
        assert_eq!(
            r.header("webhook-id"),
            Some(id.as_str()),
            "request {n} has another webhook-id"
        );
        assert_eq!(r.body, requests[0].body, "request {n} sent other bytes");
    }
}

/// The value of `key` in a form body.
fn form_value(r: &Recorded, key: &str) -> String {
    r.form()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key} in the body"))
}

// ---------------------------------------------------------------------------------------------
// The harness: one `Webhooks`, its worker on a real backend, and the events it emitted.

/// Which backend and runtime deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// `HyperDispatcher` on a tokio runtime (`Webhooks::start_tokio`).
    #[cfg(feature = "hyper")]
    HyperOnTokio,
    /// `UreqDispatcher` on plain threads (`Webhooks::start_threads`).
    #[cfg(feature = "ureq")]
    UreqOnThreads,
}

/// Threads for the ureq worker: room for two endpoints' shares at once.
#[cfg(feature = "ureq")]
const UREQ_THREADS: usize = 4;

struct Harness {
    backend: Backend,
    webhooks: Webhooks,
    events: Events,
    worker: Option<Worker>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Harness {
    /// `Webhooks` on a fresh in-memory outbox, delivering through `backend`.
    fn start(backend: Backend) -> Harness {
        let mut harness = Harness::on_store(backend, MemoryStore::new());
        harness.start_worker();
        harness
    }

    /// `Webhooks` on `store`, with no worker yet.
    fn on_store(backend: Backend, store: impl Store) -> Harness {
        let events = Events::default();
        let webhooks = events
            .sink(Webhooks::builder().store(store).policy(loopback_policy()))
            .build()
            .expect("webhooks build");
        Harness {
            backend,
            webhooks,
            events,
            worker: None,
            runtime: None,
        }
    }

    fn start_worker(&mut self) {
        let worker = match self.backend {
            #[cfg(feature = "hyper")]
            Backend::HyperOnTokio => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                let dispatcher = call_result_webhook::HyperDispatcher::builder()
                    .policy(loopback_policy())
                    .build();
                let worker = self.webhooks.start_tokio(dispatcher, runtime.handle());
                self.runtime = Some(runtime);
                worker
            }
            #[cfg(feature = "ureq")]
            Backend::UreqOnThreads => {
                let dispatcher = call_result_webhook::UreqDispatcher::builder()
                    .policy(loopback_policy())
                    .build();
                self.webhooks.start_threads(dispatcher, UREQ_THREADS)
            }
        };
        self.worker = Some(worker.expect("worker starts"));
    }

    fn worker(&self) -> &Worker {
        self.worker.as_ref().expect("the worker runs")
    }

    /// Configures `account` as its administrator would: webhook on, `url`, credentials, the
    /// retry schedule `delays_ms`, and the test campaign switched on.
    fn account(&self, account: &str, url: &str, delays_ms: &[u64]) -> AccountId {
        let id = AccountId::from(account);
        self.update(
            &id,
            PreferencesUpdate::new()
                .enabled(true)
                .url(url)
                .credentials("dialer", "s3cret-pässword")
                .retry_schedule(schedule(delays_ms)),
        );
        self.webhooks
            .set_campaign_webhook_blocking(&admin(), &id, &CAMPAIGN.into(), true)
            .expect("campaign switch");
        id
    }

    fn update(&self, account: &AccountId, update: PreferencesUpdate) {
        self.webhooks
            .update_preferences_blocking(&admin(), account, update)
            .expect("preferences update");
    }

    /// Submits a call result for the test campaign; it must be accepted.
    fn submit(&self, account: &AccountId, reference: &str) -> DeliveryId {
        match self
            .webhooks
            .submit_blocking(account, &CampaignId::from(CAMPAIGN), full_call(reference))
            .expect("submit")
        {
            Submitted::Accepted(id) => id,
            Submitted::Skipped(reason) => panic!("skipped: {}", reason.describe()),
        }
    }

    fn status(&self, account: &AccountId) -> Status {
        self.webhooks
            .status_blocking(account, Some(&CampaignId::from(CAMPAIGN)))
            .expect("status")
    }

    fn indicator(&self, account: &AccountId) -> WebhookIndicator {
        self.webhooks
            .indicator(account, Some(&CampaignId::from(CAMPAIGN)))
    }

    /// Waits until nothing is pending in the outbox.
    fn wait_idle(&self) {
        assert!(
            self.worker()
                .wait_idle_blocking(PATIENCE)
                .expect("wait_idle"),
            "deliveries still pending after {PATIENCE:?}"
        );
    }

    /// Stops the worker with `deadline` and the runtime with it.
    #[cfg(feature = "sqlite")]
    fn stop(&mut self, deadline: Duration) -> call_result_webhook::delivery::ShutdownReport {
        let report = self
            .worker
            .take()
            .expect("running")
            .shutdown_blocking(deadline)
            .expect("shutdown");
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
        report
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The worker first (it spawns on the runtime), then the runtime.
        drop(self.worker.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs each named scenario once per backend, as `hyper_on_tokio::NAME` and
/// `ureq_on_threads::NAME`.
macro_rules! on_every_backend {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        #[cfg(feature = "hyper")]
        mod hyper_on_tokio {
            $($(#[$attr])* #[test] fn $name() { super::$name(super::Backend::HyperOnTokio) })*
        }
        #[cfg(feature = "ureq")]
        mod ureq_on_threads {
            $($(#[$attr])* #[test] fn $name() { super::$name(super::Backend::UreqOnThreads) })*
        }
    };
}

on_every_backend!(
    two_503s_then_200_is_delivered_on_the_third_attempt_with_the_same_id_and_bytes,
    a_429_with_retry_after_2_is_not_tried_again_for_2_seconds,
    a_receiver_that_never_answers_times_out_and_the_retry_is_delivered,
    a_connection_reset_mid_response_is_retried_and_delivered,
    a_404_fails_after_one_attempt_and_an_administrator_replays_it_with_the_same_id,
    a_410_pauses_the_endpoint_until_an_administrator_resumes_it,
    a_dead_endpoint_never_delays_another_accounts_deliveries,
    #[cfg(feature = "sqlite")]
    in_flight_deliveries_survive_a_graceful_shutdown_and_a_restart_on_the_same_file,
);

// ---------------------------------------------------------------------------------------------
// The scenarios.

fn two_503s_then_200_is_delivered_on_the_third_attempt_with_the_same_id_and_bytes(
    backend: Backend,
) {
    let receiver = Receiver::start();
    receiver.script([Reply::status(503), Reply::status(503), Reply::ok()]);
    let h = Harness::start(backend);
    let acme = h.account("acme", &receiver.url_for("/calls"), &[100, 100, 100]);

    let id = h.submit(&acme, "ref-503");
    let requests = receiver.wait_for(3, PATIENCE);
    h.wait_idle();

    assert_eq!(receiver.requests().len(), 3, "no attempt after the 200");
    assert_same_delivery(&requests, &id);
    assert_eq!(form_value(&requests[0], "Reference"), "ref-503");
    assert!(
        requests[0]
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))
    );

    let events = h.events.all();
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::AttemptFailed {
                delivery,
                attempt,
                status,
                next_attempt_at,
                ..
            } => Some((
                delivery.clone(),
                *attempt,
                *status,
                next_attempt_at.is_some(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        failed,
        vec![
            (id.clone(), 1, Some(503), true),
            (id.clone(), 2, Some(503), true)
        ]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::AttemptSucceeded { delivery, attempt: 3, status: 200, .. } if *delivery == id
    )));

    let status = h.status(&acme);
    assert_eq!(h.indicator(&acme), WebhookIndicator::Active);
    assert_eq!(
        (
            status.stats.pending,
            status.stats.delivered,
            status.stats.failed
        ),
        (0, 1, 0)
    );
    assert!(
        status
            .stats
            .last_failure_reason
            .is_some_and(|r| r.contains("503"))
    );
}

fn a_429_with_retry_after_2_is_not_tried_again_for_2_seconds(backend: Backend) {
    let receiver = Receiver::start();
    receiver.script([Reply::status(429).header("retry-after", "2"), Reply::ok()]);
    let h = Harness::start(backend);
    // The schedule alone would retry after about 50 ms.
    let acme = h.account("acme", &receiver.url(), &[50]);

    let id = h.submit(&acme, "ref-429");
    let requests = receiver.wait_for(2, PATIENCE);
    h.wait_idle();

    assert_same_delivery(&requests, &id);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(
        gap >= Duration::from_secs(2),
        "retried {gap:?} after a 429 asking for 2 s"
    );
    let events = h.events.all();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::AttemptFailed {
            attempt: 1,
            status: Some(429),
            next_attempt_at: Some(_),
            ..
        }
    )));
    assert_eq!(h.status(&acme).stats.delivered, 1);
}

fn a_receiver_that_never_answers_times_out_and_the_retry_is_delivered(backend: Backend) {
    let receiver = Receiver::start();
    receiver.script([Reply::hang(), Reply::ok()]);
    let h = Harness::start(backend);
    let acme = h.account("acme", &receiver.url(), &[100]);
    h.update(
        &acme,
        PreferencesUpdate::new().attempt_timeout(Duration::from_secs(1)),
    );

    let id = h.submit(&acme, "ref-hang");
    let requests = receiver.wait_for(2, PATIENCE);
    h.wait_idle();

    assert_same_delivery(&requests, &id);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    let events = h.events.all();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::AttemptFailed { attempt: 1, status: None, reason, next_attempt_at: Some(_), .. }
                if reason.contains("timed out")
        )),
        "{events:#?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::AttemptSucceeded {
            attempt: 2,
            status: 200,
            ..
        }
    )));
}

fn a_connection_reset_mid_response_is_retried_and_delivered(backend: Backend) {
    let receiver = Receiver::start();
    // A 503 whose body breaks off, then a reset before any answer: two transport failures.
    // (A 200 whose body breaks off is delivered: its head said so; tests/backends.rs.)
    receiver.script([
        Reply::status(503).body("partial").then_reset(),
        Reply::reset(),
        Reply::ok(),
    ]);
    let h = Harness::start(backend);
    let acme = h.account("acme", &receiver.url(), &[100, 100]);

    let id = h.submit(&acme, "ref-reset");
    let requests = receiver.wait_for(3, PATIENCE);
    h.wait_idle();

    assert_eq!(receiver.requests().len(), 3);
    assert_same_delivery(&requests, &id);
    let events = h.events.all();
    let reasons: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::AttemptFailed { reason, status, .. } => Some((reason.clone(), *status)),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{events:#?}");
    // Neither left a usable answer: no status is recorded for either.
    assert!(reasons.iter().all(|(_, status)| status.is_none()));
    assert_eq!(h.status(&acme).stats.delivered, 1);
}

fn a_404_fails_after_one_attempt_and_an_administrator_replays_it_with_the_same_id(
    backend: Backend,
) {
    let receiver = Receiver::start();
    receiver.script([Reply::status(404)]);
    let h = Harness::start(backend);
    let acme = h.account("acme", &receiver.url(), &[50, 50, 50]);

    let id = h.submit(&acme, "ref-404");
    h.events.wait_until("the delivery to fail", |events| {
        events
            .iter()
            .any(|e| matches!(e, Event::DeliveryFailed { .. }))
    });
    h.wait_idle();
    // Longer than the whole schedule: a 404 is not retried.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.requests().len(), 1, "a 404 was retried");
    assert!(h.events.all().iter().any(|e| matches!(
        e,
        Event::DeliveryFailed { delivery, attempts: 1, kind: FailureKind::Rejected, .. }
            if *delivery == id
    )));

    let status = h.status(&acme);
    assert_eq!((status.stats.pending, status.stats.failed), (0, 1));

    // Only an administrator sees and replays dead letters.
    let filter = DeliveryFilter::account(acme.clone());
    let clerk = Principal::user("bob@acme.example");
    assert!(matches!(
        h.webhooks.dead_letters_blocking(&clerk, &filter, 10),
        Err(Error::PermissionDenied { .. })
    ));
    let dead = h
        .webhooks
        .dead_letters_blocking(&admin(), &filter, 10)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].last_status, Some(404));
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("404"))
    );
    assert!(matches!(
        h.webhooks
            .replay_blocking(&clerk, &filter.clone().id(id.clone())),
        Err(Error::PermissionDenied { .. })
    ));
    assert_eq!(receiver.requests().len(), 1);

    // The administrator fixed the receiver (it now answers 200) and replays the one delivery.
    let replayed = h
        .webhooks
        .replay_blocking(&admin(), &filter.clone().id(id.clone()))
        .unwrap();
    assert_eq!(replayed, 1);
    let requests = receiver.wait_for(2, PATIENCE);
    h.wait_idle();
    assert_same_delivery(&requests, &id);
    let status = h.status(&acme);
    assert_eq!(
        (
            status.stats.pending,
            status.stats.delivered,
            status.stats.failed
        ),
        (0, 1, 0)
    );
    assert!(
        h.webhooks
            .dead_letters_blocking(&admin(), &filter, 10)
            .unwrap()
            .is_empty()
    );
}

fn a_410_pauses_the_endpoint_until_an_administrator_resumes_it(backend: Backend) {
    let receiver = Receiver::start();
    receiver.script([Reply::status(410)]);
    let h = Harness::start(backend);
    let acme = h.account("acme", &receiver.url(), &[50, 50, 50]);

    let first = h.submit(&acme, "ref-gone-1");
    h.events.wait_until("the endpoint to be paused", |events| {
        events.iter().any(|e| {
            matches!(
                e,
                Event::EndpointPaused {
                    reason: PauseReason::Gone,
                    ..
                }
            )
        })
    });
    let status = h.status(&acme);
    assert_eq!(h.indicator(&acme), WebhookIndicator::Paused);
    assert!(status.held);
    assert_eq!(status.stats.pending, 1);
    assert!(status.endpoint.is_paused());

    // Nothing is attempted while paused, not even what is submitted now.
    let second = h.submit(&acme, "ref-gone-2");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(receiver.requests().len(), 1, "attempted while paused");
    let status = h.status(&acme);
    assert_eq!(
        (status.stats.pending, status.stats.delivered),
        (2, 0),
        "held, never dropped"
    );

    let clerk = Principal::user("bob@acme.example");
    assert!(matches!(
        h.webhooks.resume_endpoint_blocking(&clerk, &acme),
        Err(Error::PermissionDenied { .. })
    ));
    assert_eq!(h.indicator(&acme), WebhookIndicator::Paused);

    assert!(
        h.webhooks
            .resume_endpoint_blocking(&admin(), &acme)
            .unwrap()
    );
    let requests = receiver.wait_for(3, PATIENCE);
    h.wait_idle();
    assert_eq!(receiver.requests().len(), 3);
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids[0], first.as_str());
    assert!(ids[1..].contains(&first.as_str().to_owned()));
    assert!(ids[1..].contains(&second.as_str().to_owned()));
    let resent = requests
        .iter()
        .skip(1)
        .find(|r| r.header("webhook-id") == Some(first.as_str()))
        .unwrap();
    assert_eq!(resent.body, requests[0].body);

    let status = h.status(&acme);
    assert_eq!(h.indicator(&acme), WebhookIndicator::Active);
    assert!(!status.held);
    assert_eq!((status.stats.pending, status.stats.delivered), (0, 2));
    assert!(h.events.all().iter().any(|e| matches!(
        e,
        Event::EndpointResumed { account, .. } if *account == acme
    )));
}

fn a_dead_endpoint_never_delays_another_accounts_deliveries(backend: Backend) {
    const STUCK: u64 = call_result_webhook::limits::DEFAULT_MAX_CONCURRENCY as u64 + 6;
    let dead = Receiver::start();
    dead.set_default(Reply::hang());
    let alive = Receiver::start();
    let h = Harness::start(backend);
    let stuck = h.account("stuck", &dead.url(), &[50, 50]);
    // The longest attempt time limit: the stuck account's attempts hang for the whole test.
    h.update(
        &stuck,
        PreferencesUpdate::new().attempt_timeout(Duration::from_secs(30)),
    );
    let fine = h.account("fine", &alive.url(), &[50, 50]);

    // The stuck account gets more deliveries than the worker may have in flight at all: only
    // the per-endpoint bound keeps them from taking every slot.
    for n in 0..STUCK {
        h.submit(&stuck, &format!("stuck-{n}"));
    }
    dead.wait_for(1, PATIENCE);
    within(
        "the stuck account's attempts to be in flight",
        PATIENCE,
        || h.worker().in_flight() >= 1,
    );

    let mut expected = Vec::new();
    for n in 0..20 {
        expected.push(h.submit(&fine, &format!("fine-{n}")).as_str().to_owned());
    }
    let requests = alive.wait_for(expected.len(), PATIENCE);
    within(
        "every delivery of the other account to be recorded",
        PATIENCE,
        || h.status(&fine).stats.delivered == expected.len() as u64,
    );

    let mut arrived: Vec<_> = requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    arrived.sort();
    expected.sort();
    assert_eq!(arrived, expected, "each exactly once");

    // Meanwhile the stuck account is still stuck: nothing answered, nothing delivered, and
    // no more of its attempts in flight than its share.
    let status = h.status(&stuck);
    assert_eq!((status.stats.delivered, status.stats.pending), (0, STUCK));
    let share = match backend {
        #[cfg(feature = "hyper")]
        Backend::HyperOnTokio => call_result_webhook::limits::DEFAULT_PER_ENDPOINT_CONCURRENCY,
        #[cfg(feature = "ureq")]
        Backend::UreqOnThreads => UREQ_THREADS / 2,
    };
    let stuck_requests = dead.requests();
    assert!(!stuck_requests.is_empty());
    // Each stuck attempt hangs for its 30 s time limit; before the first one ends, no more than
    // the endpoint's share can have started.
    if stuck_requests[0].at.elapsed() < Duration::from_secs(25) {
        assert!(
            stuck_requests.len() <= share,
            "{} attempts to the dead endpoint, share {share}",
            stuck_requests.len()
        );
    }
}

/// The dialer stops while the receiver is still answering: a graceful shutdown with a short
/// deadline releases the attempts in flight, and a new process (a new store on the same SQLite
/// file, new `Webhooks`, new worker) sends them again with the same `webhook-id` and bytes.
#[cfg(feature = "sqlite")]
fn in_flight_deliveries_survive_a_graceful_shutdown_and_a_restart_on_the_same_file(
    backend: Backend,
) {
    use call_result_webhook::SqliteStore;

    // No more than one endpoint's share of the worker (2 with the ureq threads here), so every
    // delivery is in flight at once.
    const IN_FLIGHT: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    let receiver = Receiver::start();
    receiver.script(std::iter::repeat_n(
        Reply::ok().delay(Duration::from_secs(5)),
        IN_FLIGHT,
    ));

    let mut before = Harness::on_store(backend, SqliteStore::open(&path).unwrap());
    before.start_worker();
    let acme = before.account("acme", &receiver.url(), &[100]);
    let ids: Vec<DeliveryId> = (0..IN_FLIGHT)
        .map(|n| before.submit(&acme, &format!("ref-shutdown-{n}")))
        .collect();
    let first = receiver.wait_for(IN_FLIGHT, PATIENCE);
    within("every attempt to be in flight", PATIENCE, || {
        before.worker().in_flight() == IN_FLIGHT
    });

    let report = before.stop(Duration::from_millis(200));
    assert_eq!((report.finished, report.released), (0, IN_FLIGHT));
    assert_eq!(before.status(&acme).stats.pending, IN_FLIGHT as u64);
    drop(before);

    // The restart: the account's preferences and the pending deliveries come from the file.
    // A sender thread still finishing its released attempt keeps the old store (and its lock
    // on the file) until it returns; a second store is refused until then, never shared.
    let started = Instant::now();
    let store = loop {
        match SqliteStore::open(&path) {
            Ok(store) => break store,
            Err(call_result_webhook::Error::StoreInUse { .. }) if started.elapsed() < PATIENCE => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("reopening the outbox: {e}"),
        }
    };
    let mut after = Harness::on_store(backend, store);
    let status = after.status(&acme);
    assert_eq!(after.indicator(&acme), WebhookIndicator::Active);
    assert_eq!(
        (status.stats.pending, status.stats.delivered),
        (IN_FLIGHT as u64, 0)
    );
    after.start_worker();
    let all = receiver.wait_for(2 * IN_FLIGHT, PATIENCE);
    after.wait_idle();

    let again = &all[IN_FLIGHT..];
    for id in &ids {
        let sent = |requests: &[Recorded]| -> Recorded {
            requests
                .iter()
                .find(|r| r.header("webhook-id") == Some(id.as_str()))
                .unwrap_or_else(|| panic!("{id} was not sent"))
                .clone()
        };
        assert_eq!(sent(again).body, sent(&first).body, "{id} sent other bytes");
    }
    let status = after.status(&acme);
    assert_eq!(
        (status.stats.pending, status.stats.delivered),
        (0, IN_FLIGHT as u64)
    );
}
