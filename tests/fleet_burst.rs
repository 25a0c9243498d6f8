//! A fleet at burst: three instances (three `Webhooks`, each on its own `PostgresStore` on one
//! fresh schema, each with its own worker) take 5,000 call results over 50 accounts as fast as
//! twelve submitting threads can hand them over, all at once, while they deliver to one real
//! receiver on 127.0.0.1 that answers 200 to everything. No process dies.
//!
//! What is checked: every accepted result reaches the receiver (none lost); none is answered
//! 2xx twice (no duplicate `webhook-id`); no instance reports `Event::StoreFailing`; and the
//! server detected no deadlock in the meantime (`pg_stat_database.deadlocks` unchanged). One
//! summary line says what happened, pass or fail.
//!
//! Bounded: past [`DELIVERED_WITHIN`] the test fails saying how far it got; a submit that never
//! returns trips a watchdog at [`HARD_LIMIT`] that ends the process with a message.
#![cfg(all(feature = "hyper", feature = "postgres"))]

mod pg_support;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use call_result_webhook::campaign::WebhookIndicator;
use call_result_webhook::delivery::RetrySchedule;
use call_result_webhook::{AccountId, CallResult, CampaignId, Event, PreferencesUpdate, Submitted};
use pg_support::Database;
use support::{Instance, Receiver, switch_on, within};

const INSTANCES: usize = 3;
/// Submitting threads per instance.
const THREADS_PER_INSTANCE: usize = 4;
const RESULTS: usize = 5_000;
const ACCOUNTS: usize = 50;
/// How soon a change made through one instance must hold on another (as tests/fleet.rs).
const IN_FORCE_WITHIN: Duration = Duration::from_secs(1);
/// From the first submit, every accepted result must have reached the receiver within this.
const DELIVERED_WITHIN: Duration = Duration::from_secs(240);
/// After the last delivery, how long duplicates are still looked for.
const SETTLE: Duration = Duration::from_secs(2);
/// The whole test, whatever blocks: past this a watchdog ends the process.
const HARD_LIMIT: Duration = Duration::from_secs(420);

fn account(n: usize) -> AccountId {
    format!("burst-{n:02}").into()
}

fn campaign() -> CampaignId {
    "burst".into()
}

/// What the instances reported through `on_event`.
#[derive(Default)]
struct Seen {
    store_failing: AtomicUsize,
    reasons: Mutex<Vec<String>>,
}

impl Seen {
    fn note(&self, instance: usize, event: &Event) {
        if let Event::StoreFailing { reason, .. } = event {
            self.store_failing.fetch_add(1, Ordering::SeqCst);
            let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
            if reasons.len() < 5 {
                reasons.push(format!("instance {instance}: {reason}"));
            }
        }
    }
}

/// Ends the process with a message if the test is still running after `limit`: a submit or a
/// store call that never returns fails the test instead of hanging it.
fn watchdog(limit: Duration) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < limit {
            if finished.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("fleet burst: still running after {limit:?}: something blocks; giving up");
        std::process::exit(101);
    });
    done
}

#[test]
fn a_fleet_at_burst_delivers_everything_once_without_deadlocks_or_store_failures() {
    let Some(db) = Database::new("fleet burst") else {
        return;
    };
    let watchdog = watchdog(HARD_LIMIT);
    let receiver = Receiver::start();
    let seen = Arc::new(Seen::default());
    let fleet: Vec<Instance> = (0..INSTANCES)
        .map(|i| {
            let seen = seen.clone();
            Instance::start_with(db.store(), move |builder| {
                builder.on_event(move |event| seen.note(i, event))
            })
        })
        .collect();

    // Fifty accounts, configured through the first instance; every instance sees them all.
    let schedule = RetrySchedule::new([Duration::from_millis(200); 8]).unwrap();
    for n in 0..ACCOUNTS {
        switch_on(
            &fleet[0].webhooks,
            &account(n),
            &campaign(),
            PreferencesUpdate::new()
                .url(&receiver.url_for(&format!("/hook/{n:02}")))
                .retry_schedule(schedule.clone()),
        );
    }
    for instance in &fleet {
        within(
            "every instance sees every account",
            IN_FORCE_WITHIN * 5,
            || {
                (0..ACCOUNTS).all(|n| {
                    instance.webhooks.indicator(&account(n), Some(&campaign()))
                        == WebhookIndicator::Active
                })
            },
        );
    }
    // The statistics reach the server's collector with a delay: let what came before settle.
    std::thread::sleep(Duration::from_millis(600));
    let deadlocks_before = db.deadlocks();

    // The burst: every thread submits its share as fast as it can, all starting together.
    let threads = INSTANCES * THREADS_PER_INSTANCE;
    let start = Arc::new(Barrier::new(threads + 1));
    // webhook-id -> when its submit began.
    let submitted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let skipped = Arc::new(AtomicUsize::new(0));
    let burst_started = std::thread::scope(|scope| {
        for t in 0..threads {
            let webhooks = fleet[t % INSTANCES].webhooks.clone();
            let (start, submitted, errors, skipped) = (
                start.clone(),
                submitted.clone(),
                errors.clone(),
                skipped.clone(),
            );
            scope.spawn(move || {
                start.wait();
                for n in (t..RESULTS).step_by(threads) {
                    let call = CallResult::builder()
                        .reference(format!("burst-{n:05}"))
                        .build();
                    let at = Instant::now();
                    match webhooks.submit_blocking(&account(n % ACCOUNTS), &campaign(), call) {
                        Ok(Submitted::Accepted(id)) => {
                            submitted
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(id.to_string(), at);
                        }
                        Ok(Submitted::Skipped(_)) => {
                            skipped.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => errors
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!("result {n}: {e}")),
                    }
                }
            });
        }
        start.wait();
        Instant::now()
    });
    let submitted_in = burst_started.elapsed();
    let submitted = std::mem::take(&mut *submitted.lock().unwrap_or_else(PoisonError::into_inner));
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(PoisonError::into_inner));
    let accepted = submitted.len();

    // Until every accepted result has reached the receiver, or the limit.
    let deadline = burst_started + DELIVERED_WITHIN;
    let delivered_ids = |requests: &[support::Recorded]| {
        let mut first: HashMap<String, (Instant, usize)> = HashMap::new();
        for r in requests {
            let id = r.header("webhook-id").unwrap_or_default().to_owned();
            first
                .entry(id)
                .and_modify(|(_, n)| *n += 1)
                .or_insert((r.at, 1));
        }
        first
    };
    let mut timed_out = false;
    loop {
        let requests = receiver.requests();
        let arrived = delivered_ids(&requests);
        if submitted.keys().all(|id| arrived.contains_key(id)) {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let delivered_in = burst_started.elapsed();
    // Late duplicates: attempts already under way, or claimed again.
    if !timed_out {
        for instance in &fleet {
            let _ = instance.worker.wait_idle_blocking(SETTLE * 5);
        }
    }
    std::thread::sleep(SETTLE);
    let requests = receiver.requests();
    let arrived = delivered_ids(&requests);
    let delivered = submitted
        .keys()
        .filter(|id| arrived.contains_key(*id))
        .count();
    let lost = accepted - delivered;
    // Every request is answered 200: a webhook-id seen twice was answered 2xx twice.
    let duplicates: usize = arrived.values().map(|(_, n)| n - 1).sum();
    let duplicated_ids = arrived.values().filter(|(_, n)| *n > 1).count();
    let strangers = arrived
        .keys()
        .filter(|id| !submitted.contains_key(*id))
        .count();
    let mut latencies: Vec<Duration> = submitted
        .iter()
        .filter_map(|(id, at)| {
            arrived
                .get(id)
                .map(|(first, _)| first.saturating_duration_since(*at))
        })
        .collect();
    latencies.sort();
    let percentile = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    // The server's statistics lag a little behind.
    std::thread::sleep(Duration::from_millis(600));
    let deadlocks_after = db.deadlocks();
    let store_failing = seen.store_failing.load(Ordering::SeqCst);

    println!(
        "fleet burst: {accepted} accepted of {RESULTS} ({} submit errors, {} skipped) in {:.1} s \
         by {threads} threads on {INSTANCES} instances; {delivered} delivered, {lost} lost, \
         {duplicates} duplicates ({duplicated_ids} webhook-ids answered 2xx more than once), \
         {} requests; deadlocks before/after {deadlocks_before}/{deadlocks_after}; \
         {store_failing} StoreFailing events; elapsed {:.1} s; submit-to-delivered p50 {:?}, \
         p99 {:?}, max {:?}",
        errors.len(),
        skipped.load(Ordering::SeqCst),
        submitted_in.as_secs_f64(),
        requests.len(),
        delivered_in.as_secs_f64(),
        percentile(50),
        percentile(99),
        latencies.last().copied().unwrap_or_default(),
    );
    for e in errors.iter().take(5) {
        println!("  submit error: {e}");
    }
    for r in seen
        .reasons
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        println!("  StoreFailing: {r}");
    }
    watchdog.store(true, Ordering::SeqCst);

    let mut failures = Vec::new();
    if timed_out {
        failures.push(format!(
            "only {delivered} of {accepted} accepted results reached the receiver within \
             {DELIVERED_WITHIN:?}"
        ));
    }
    if lost > 0 {
        failures.push(format!("{lost} accepted results were never delivered"));
    }
    if duplicates > 0 {
        failures.push(format!(
            "{duplicated_ids} webhook-ids were answered 2xx more than once ({duplicates} extra)"
        ));
    }
    if strangers > 0 {
        failures.push(format!(
            "{strangers} webhook-ids reached the receiver that no submit accepted"
        ));
    }
    if store_failing > 0 {
        failures.push(format!("{store_failing} Event::StoreFailing"));
    }
    if deadlocks_after != deadlocks_before {
        failures.push(format!(
            "the server detected {} deadlocks",
            deadlocks_after - deadlocks_before
        ));
    }
    if !errors.is_empty() {
        failures.push(format!("{} submits failed", errors.len()));
    }
    assert!(failures.is_empty(), "fleet burst: {}", failures.join("; "));
}
