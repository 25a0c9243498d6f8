//! One bound per endpoint across a fleet: `per_endpoint_concurrency(n)` bounds the attempts in
//! flight to one account's endpoint over every instance on the PostgreSQL outbox, not in each
//! process. Real PostgreSQL (tests/pg_support), real receivers on 127.0.0.1 (tests/support)
//! that count the requests in flight at every moment, instances that are each a `Webhooks` on
//! a `PostgresStore` of its own with its own worker, and a `dialer` process killed with
//! SIGKILL.
//!
//! Every check is a bound on counts, never on speed: a loaded machine only makes a test slower.
//! A receiver counts a request in flight from the moment it has read it until its answer is
//! handed back, a shorter span than the sender's, so its count never exceeds the fleet's.
//!
//! The `dialer` example is built by `cargo test --all-features`; `cargo test --all-features
//! --test fleet_bound` alone does not rebuild it (run `cargo build --all-features --example
//! dialer` first).
#![cfg(all(unix, feature = "hyper", feature = "postgres"))]

mod dialer_support;
mod pg_support;
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use call_result_webhook::campaign::WebhookIndicator;
use call_result_webhook::delivery::RetrySchedule;
use call_result_webhook::limits::DEFAULT_PER_ENDPOINT_CONCURRENCY;
use call_result_webhook::{AccountId, CampaignId, PreferencesUpdate};
use dialer_support::{Dialer, fleet_args, line};
use pg_support::Database;
use support::{Instance, Receiver, Reply, admin, call, ids, switch_on, within};

/// Instances on the shared schema.
const INSTANCES: usize = 3;
/// How long the slow receiver holds each request before answering.
const HOLD: Duration = Duration::from_millis(300);
/// How soon a change made through one instance holds on another (as tests/fleet.rs).
const IN_FORCE_WITHIN: Duration = Duration::from_secs(1);
/// After a pause, how long the receiver is watched for requests that should not come.
const WATCH: Duration = Duration::from_millis(1500);

/// `INSTANCES` instances on `db`, with `per_endpoint_concurrency(bound)` (the default when
/// `None`), all seeing `acme` switched on to `url`.
fn fleet(db: &Database, bound: Option<usize>, url: &str) -> Vec<Instance> {
    let fleet: Vec<Instance> = (0..INSTANCES)
        .map(|_| {
            Instance::start_with(db.store(), |builder| match bound {
                Some(n) => builder.per_endpoint_concurrency(n),
                None => builder,
            })
        })
        .collect();
    let (acme, winter) = ids();
    switch_on(
        &fleet[0].webhooks,
        &acme,
        &winter,
        PreferencesUpdate::new()
            .url(url)
            .retry_schedule(RetrySchedule::new([Duration::from_millis(100); 8]).unwrap()),
    );
    for instance in &fleet[1..] {
        within("every instance sees the account", IN_FORCE_WITHIN, || {
            instance.webhooks.indicator(&acme, Some(&winter)) == WebhookIndicator::Active
        });
    }
    fleet
}

/// Submits `n` results for `acme`, spread over the instances; answers their webhook-ids.
fn submit(fleet: &[Instance], n: usize, tag: &str) -> Vec<String> {
    let (acme, winter) = ids();
    (0..n)
        .map(|i| {
            let submitted = fleet[i % fleet.len()]
                .webhooks
                .submit_blocking(&acme, &winter, call(&format!("{tag}-{i}")))
                .expect("submit");
            assert!(submitted.is_accepted());
            submitted
                .id()
                .expect("an accepted result has an id")
                .to_string()
        })
        .collect()
}

/// A fleet at work: `results` results for `acme` submitted through `INSTANCES` instances with
/// `per_endpoint_concurrency(bound)` (the default when `None`) to a receiver answering
/// `reply`. Fields drop in order: the instances, the receiver, then the schema.
struct Run {
    fleet: Vec<Instance>,
    receiver: Receiver,
    /// The webhook-ids of the results submitted.
    sent: Vec<String>,
    _db: Database,
}

impl Run {
    /// `None` (after saying why) when no PostgreSQL server answers.
    fn start(test: &str, bound: Option<usize>, reply: Reply, results: usize) -> Option<Run> {
        let db = Database::new(test)?;
        let receiver = Receiver::start();
        receiver.set_default(reply);
        let fleet = fleet(&db, bound, &receiver.url_for("/hook"));
        let sent = submit(&fleet, results, test);
        Some(Run {
            fleet,
            receiver,
            sent,
            _db: db,
        })
    }
}

/// Per webhook-id, how many times the receiver answered it 2xx.
fn answered_2xx(receiver: &Receiver) -> HashMap<String, usize> {
    let requests = receiver.requests();
    let mut seen = HashMap::new();
    for answer in receiver.answers() {
        if (200..300).contains(&answer.status) {
            let id = requests[answer.request]
                .header("webhook-id")
                .expect("every request has a webhook-id");
            *seen.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

/// Waits until every one of `ids` was answered 2xx, then checks none was answered 2xx twice
/// (no process died, so nothing may be sent again after a 2xx).
fn delivered_exactly_once(receiver: &Receiver, ids: &[String], limit: Duration) {
    within("every result is answered 2xx", limit, || {
        let seen = answered_2xx(receiver);
        ids.iter().all(|id| seen.contains_key(id))
    });
    // Late duplicates would show within a few holds.
    std::thread::sleep(HOLD * 3);
    let seen = answered_2xx(receiver);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "answered 2xx more than once: {twice:?}");
    assert_eq!(seen.len(), ids.len(), "answered 2xx: an id never submitted");
}

/// `RESULTS` results to one slow endpoint (each request held `HOLD`, then 200) through three
/// instances with `per_endpoint_concurrency(bound)`: the most requests the receiver had in
/// flight at once. Every result is delivered exactly once.
fn most_in_flight_at_a_slow_endpoint(test: &str, bound: Option<usize>) -> Option<usize> {
    const RESULTS: usize = 60;
    let Run {
        fleet,
        receiver,
        sent,
        _db,
    } = Run::start(test, bound, Reply::ok().delay(HOLD), RESULTS)?;
    // A bound of 1 would take RESULTS x HOLD = 18 s; allow for a loaded machine.
    delivered_exactly_once(&receiver, &sent, Duration::from_secs(120));
    for instance in &fleet {
        assert!(
            instance
                .worker
                .wait_idle_blocking(Duration::from_secs(10))
                .unwrap()
        );
    }
    let (acme, _) = ids();
    let status = fleet[0].webhooks.status_blocking(&acme, None).unwrap();
    assert_eq!(
        (status.stats.delivered, status.stats.pending),
        (RESULTS as u64, 0)
    );
    Some(receiver.most_in_flight())
}

#[test]
fn three_instances_keep_one_endpoint_within_a_bound_of_two() {
    const BOUND: usize = 2;
    let Some(most) = most_in_flight_at_a_slow_endpoint("fleet bound of 2", Some(BOUND)) else {
        return;
    };
    println!(
        "one slow endpoint, {INSTANCES} instances, per_endpoint_concurrency({BOUND}): at most \
         {most} in flight"
    );
    assert!(
        most <= BOUND,
        "{most} requests in flight at once to one endpoint across {INSTANCES} instances, over \
         the bound of {BOUND}"
    );
}

#[test]
fn three_instances_keep_one_endpoint_within_the_default_bound() {
    let Some(most) = most_in_flight_at_a_slow_endpoint("fleet default bound", None) else {
        return;
    };
    println!(
        "one slow endpoint, {INSTANCES} instances, the default per_endpoint_concurrency \
         ({DEFAULT_PER_ENDPOINT_CONCURRENCY}): at most {most} in flight"
    );
    assert!(
        most <= DEFAULT_PER_ENDPOINT_CONCURRENCY,
        "{most} requests in flight at once to one endpoint across {INSTANCES} instances, over \
         the default bound of {DEFAULT_PER_ENDPOINT_CONCURRENCY}"
    );
}

/// Requests that arrived after `since`.
fn arrived_after(receiver: &Receiver, since: Instant) -> usize {
    receiver.requests().iter().filter(|r| r.at > since).count()
}

/// An endpoint that answers 410 (after holding each request `HOLD`) is paused for the fleet:
/// once the first 410 has been handed back, at most `BOUND` more requests reach it, whichever
/// instance sends them; with at most `BOUND` in flight when it was, at most twice `BOUND` in
/// all. Resumed, every result is delivered once: the pause leaves no slot taken.
#[test]
fn a_410_stops_the_fleet_within_the_bound() {
    const BOUND: usize = 2;
    const RESULTS: usize = 30;
    let Some(Run {
        fleet,
        receiver,
        sent,
        _db,
    }) = Run::start(
        "a 410 with a bound",
        Some(BOUND),
        Reply::status(410).delay(HOLD),
        RESULTS,
    )
    else {
        return;
    };
    let (acme, _) = ids();

    within(
        "every instance sees the endpoint paused",
        Duration::from_secs(30),
        || {
            fleet.iter().all(|i| {
                i.webhooks
                    .status_blocking(&acme, None)
                    .is_ok_and(|s| s.endpoint.is_paused())
            })
        },
    );
    std::thread::sleep(WATCH);
    let first_410 = receiver
        .answers()
        .iter()
        .find(|a| a.status == 410)
        .expect("a 410 was answered")
        .at;
    let after = arrived_after(&receiver, first_410);
    let total = receiver.requests().len();
    println!(
        "410 Gone, {INSTANCES} instances, per_endpoint_concurrency({BOUND}): {after} requests \
         arrived after the first 410 was answered, {total} in all before the pause held"
    );

    // Resumed: everything that waited is delivered, once each.
    receiver.set_default(Reply::ok());
    assert!(
        fleet[1]
            .webhooks
            .resume_endpoint_blocking(&admin(), &acme)
            .unwrap()
    );
    delivered_exactly_once(&receiver, &sent, Duration::from_secs(60));

    assert!(
        after <= BOUND,
        "{after} requests reached a 410 endpoint after its first 410 was answered, over the \
         bound of {BOUND}"
    );
    assert!(
        total <= 2 * BOUND,
        "{total} requests reached a 410 endpoint before the pause held: over the bound of \
         {BOUND} in flight when the first 410 was answered and {BOUND} after it"
    );
}

/// An administrator switches the account's webhook off while a slow endpoint has the fleet's
/// attempts in flight: once the switch is saved, at most `BOUND` more requests start. Switched
/// on again, every result is delivered once.
#[test]
fn an_administrators_switch_off_stops_the_fleet_within_the_bound() {
    const BOUND: usize = 2;
    const RESULTS: usize = 30;
    let Some(Run {
        fleet,
        receiver,
        sent,
        _db,
    }) = Run::start(
        "a switch-off with a bound",
        Some(BOUND),
        Reply::ok().delay(HOLD),
        RESULTS,
    )
    else {
        return;
    };
    let (acme, _) = ids();

    // Under way: a few delivered, the endpoint busy.
    receiver.wait_for(2 * BOUND, Duration::from_secs(30));
    fleet[2]
        .webhooks
        .update_preferences_blocking(&admin(), &acme, PreferencesUpdate::new().enabled(false))
        .expect("switch the webhook off");
    let saved = Instant::now();
    std::thread::sleep(WATCH);
    let after = arrived_after(&receiver, saved);
    let before = receiver.requests().len() - after;
    println!(
        "switched off by an administrator, {INSTANCES} instances, per_endpoint_concurrency\
         ({BOUND}): {after} requests started after the switch-off was saved ({before} before)"
    );
    assert!(
        before < RESULTS,
        "everything was sent before the switch-off: make the receiver slower"
    );

    // Switched on again: everything that waited is delivered, once each.
    fleet[0]
        .webhooks
        .update_preferences_blocking(&admin(), &acme, PreferencesUpdate::new().enabled(true))
        .expect("switch the webhook on");
    delivered_exactly_once(&receiver, &sent, Duration::from_secs(60));

    assert!(
        after <= BOUND,
        "{after} requests started after the switch-off was saved, over the bound of {BOUND}"
    );
}

/// A `dialer` process takes every slot of its endpoint (the receiver holds its requests
/// unanswered) and is killed with SIGKILL, recording nothing. While it lives, the other
/// instances send that endpoint nothing; once its leases run out (the attempt time limit + 5
/// s), they deliver every result it had acknowledged, each answered 2xx once: its slots came
/// back with its leases.
#[test]
fn the_slots_of_a_process_killed_mid_attempt_come_back_with_its_leases() {
    /// The account's attempt time limit: the dialer's attempts outlive the test's watch
    /// before its kill (on a machine not too loaded), and a lease is this + 5 s.
    const TIMEOUT_MS: u64 = 10_000;
    const RESULTS: usize = 12;
    let Some(db) = Database::new("a killed process's slots") else {
        return;
    };
    let receiver = Receiver::start();
    let hanging = Arc::new(AtomicBool::new(true));
    let hang = hanging.clone();
    receiver.respond_with(move |_| {
        if hang.load(Ordering::SeqCst) {
            Reply::hang()
        } else {
            Reply::ok()
        }
    });
    let args = fleet_args(
        &db.url,
        &db.schema,
        &receiver.url_for("/calls"),
        "fleet-bound-password",
        TIMEOUT_MS,
        "100,100,100,100,100,100,100,100",
    );
    let input = (0..RESULTS)
        .map(|n| line("Fleet Bound Test", &format!("bound-{n:02}")).into_bytes())
        .collect();
    let dialer = Dialer::start(args, input, Duration::ZERO, false);

    // The dialer alone: it fills every slot of its endpoint, its requests unanswered.
    let slots = DEFAULT_PER_ENDPOINT_CONCURRENCY;
    let held_since = receiver.wait_for(slots, Duration::from_secs(30))[slots - 1].at;
    within(
        "the dialer acknowledges every result",
        Duration::from_secs(30),
        || dialer.acked() == RESULTS,
    );
    // The rest of the fleet, with the same (default) bound.
    let fleet: Vec<Instance> = (0..INSTANCES - 1)
        .map(|_| Instance::start(db.store()))
        .collect();
    let (account, campaign) = (AccountId::from("dialer"), CampaignId::from("calls"));
    for instance in &fleet {
        within("every instance sees the account", IN_FORCE_WITHIN, || {
            instance.webhooks.indicator(&account, Some(&campaign)) == WebhookIndicator::Active
        });
    }
    std::thread::sleep(IN_FORCE_WITHIN);
    let ended = dialer.kill();
    let killed = ended.at;
    // Requests beside the dialer's while it held every slot: before it was killed, and before
    // its attempts could have reached their time limit (after which their slots are free).
    let held_until = killed.min(held_since + Duration::from_millis(TIMEOUT_MS));
    let beside_the_dialer = receiver
        .requests()
        .iter()
        .skip(slots)
        .filter(|r| r.at < held_until)
        .count();
    hanging.store(false, Ordering::SeqCst);
    let acked: Vec<String> = ended.acks.into_iter().map(|(id, _)| id).collect();
    assert_eq!(acked.len(), RESULTS);
    // Leases run out TIMEOUT_MS + 5 s after their claims: allow for a loaded machine.
    let lease = Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(5);
    within(
        "every result the dialer acknowledged is delivered",
        lease + Duration::from_secs(60),
        || {
            let seen = answered_2xx(&receiver);
            acked.iter().all(|id| seen.contains_key(id))
        },
    );
    let all_delivered = killed.elapsed();
    std::thread::sleep(HOLD * 3);
    let seen = answered_2xx(&receiver);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "answered 2xx more than once: {twice:?}");
    for instance in &fleet {
        assert!(
            instance
                .worker
                .wait_idle_blocking(Duration::from_secs(10))
                .unwrap()
        );
    }
    println!(
        "a dialer holding all {slots} slots killed with SIGKILL: {beside_the_dialer} requests \
         from the other instances while it lived; every result delivered {:.1} s after the \
         kill (leases: {:.0} s)",
        all_delivered.as_secs_f64(),
        lease.as_secs_f64()
    );
    assert_eq!(
        beside_the_dialer, 0,
        "the other instances sent requests while the dialer held every slot of the endpoint"
    );
}
