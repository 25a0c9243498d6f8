//! Crash safety from outside: the `dialer` example, fed call results on stdin while it delivers
//! to a flaky receiver on 127.0.0.1, is killed with SIGKILL at random moments and started again
//! on the same SQLite outbox, several times, then left to finish.
//!
//! Every call result the dialer acknowledged (`accepted <webhook-id> <Reference>` on stdout)
//! must have been answered 2xx by the receiver at least once. A result may arrive more than
//! once (an attempt in flight at a kill is made again), always with the same `webhook-id`.
//!
//! The moments are random: the seed is printed, and `CRASH_SEED=<seed>` repeats the same
//! choices (the timing of a loaded machine still varies).
#![cfg(all(unix, feature = "hyper", feature = "sqlite"))]

mod dialer_support;
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use call_result_webhook::{SqliteStore, store::Outbox};
use dialer_support::{Dialer, Ended, Flaky, Rng, line, record, seed, store_args};
use support::Receiver;

/// Call results fed to the dialer, each with a unique Reference.
const RESULTS: usize = 300;
/// How many times the dialer is killed before it is left to finish.
const KILLS: usize = 6;
/// A killed run lives this long at least, and at most this plus `KILL_SPREAD`.
const KILL_AFTER_MIN: Duration = Duration::from_millis(150);
const KILL_SPREAD_MS: u64 = 900;
/// The feeder's pause between lines, so that input spans several kills and kills land while
/// results are being submitted as well as while they are delivered.
const FEED_PAUSE: Duration = Duration::from_millis(3);
/// The last run must finish within this (generous: the machine may be loaded).
const FINISH_WITHIN: Duration = Duration::from_secs(40);
/// The receiver answers (or fails) after a delay below this.
const REPLY_DELAY_MS: u64 = 40;
/// Enough retries that a delivery never runs out of them here.
const RETRY_DELAYS_MS: &str = "50,50,100,100,150,150,200,200,200,200,200,200";
const PASSWORD: &str = "crash-test-pässword";

/// Starts the dialer on `store` and feeds it `lines`, one every `FEED_PAUSE`; stdin is closed
/// after them if `close_stdin`, held open (so the input never ends) otherwise.
fn start(store: &Path, url: &str, lines: Vec<String>, close_stdin: bool) -> Dialer {
    let mut args = store_args(store, url, PASSWORD, RETRY_DELAYS_MS);
    args.extend(["--time-zone", "Australia/Brisbane"].map(str::to_owned));
    let input = lines.into_iter().map(String::into_bytes).collect();
    Dialer::start(args, input, FEED_PAUSE, close_stdin)
}

#[test]
fn every_acknowledged_result_is_delivered_across_sigkills_and_restarts() {
    let started = Instant::now();
    let seed = seed("CRASH_SEED");
    println!("crash test seed: {seed} (CRASH_SEED={seed} repeats its choices)");
    let mut rng = Rng(seed);

    let receiver = Receiver::start();
    let flaky = Flaky::serve(&receiver, seed ^ 0x5EED, REPLY_DELAY_MS, false);
    let url = receiver.url_for("/calls");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = dir.path().join("outbox.sqlite");
    let references: Vec<String> = (0..RESULTS).map(|n| format!("crash-{n:04}")).collect();

    // Reference -> webhook-id, for every acknowledgement.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut outputs = String::new();
    let unacked_lines = |acked: &BTreeMap<String, String>| -> Vec<String> {
        references
            .iter()
            .filter(|r| !acked.contains_key(*r))
            .map(|r| line("Crash Test", r))
            .collect()
    };

    for kill in 1..=KILLS {
        let run = start(&store, &url, unacked_lines(&acked), false);
        let lives = KILL_AFTER_MIN + Duration::from_millis(rng.below(KILL_SPREAD_MS));
        std::thread::sleep(lives);
        let acked_in_run = run.acked();
        let ended = run.kill();
        println!(
            "kill {kill}: after {lives:?}, {} acknowledged in this run ({acked_in_run} when the signal was sent), {} requests so far",
            ended.acks.len(),
            receiver.requests().len()
        );
        record(ended.acks, &mut acked);
        outputs.push_str(&ended.stderr);
    }

    let run = start(&store, &url, unacked_lines(&acked), true);
    let Ended {
        status,
        acks,
        stderr,
        ..
    } = run.wait(Instant::now() + FINISH_WITHIN);
    let acked_last = acks.len();
    record(acks, &mut acked);
    outputs.push_str(&stderr);
    assert!(
        status.is_some(),
        "the last run did not finish within {FINISH_WITHIN:?}; its stderr:\n{stderr}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the last run exited with {status:?}; its stderr:\n{stderr}"
    );
    println!("last run: {acked_last} acknowledged, exited 0");

    // Every call result was acknowledged once, and every acknowledged one answered 2xx.
    assert_eq!(
        acked.len(),
        RESULTS,
        "every line is acknowledged in the end"
    );
    let requests = receiver.requests();
    let flaky = flaky.lock().unwrap_or_else(PoisonError::into_inner);
    let undelivered: Vec<_> = acked
        .iter()
        .filter(|(_, id)| !flaky.answered_2xx.contains_key(*id))
        .collect();
    assert!(
        undelivered.is_empty(),
        "acknowledged but never answered 2xx: {undelivered:?}"
    );

    // Each acknowledged webhook-id always carried its own call result, with the same bytes.
    let mut bodies: HashMap<&str, &[u8]> = HashMap::new();
    for request in &requests {
        let id = request.header("webhook-id").expect("a webhook-id");
        let first = *bodies.entry(id).or_insert(&request.body);
        assert_eq!(first, &request.body[..], "{id} sent other bytes");
    }
    for (reference, id) in &acked {
        let body = bodies.get(id.as_str()).expect("sent");
        let sent_reference = form_urlencoded::parse(body)
            .find(|(k, _)| k == "Reference")
            .map(|(_, v)| v.into_owned());
        assert_eq!(sent_reference.as_deref(), Some(reference.as_str()));
    }

    // The outbox agrees: nothing pending, nothing failed.
    let stats = SqliteStore::open(&store)
        .expect("reopen the outbox")
        .stats(&"dialer".into(), None)
        .expect("stats");
    assert_eq!((stats.pending, stats.failed), (0, 0), "{stats:?}");

    // No secret in anything the dialer said.
    assert!(!outputs.contains(PASSWORD), "the password was printed");

    let acked_ids: HashSet<&str> = acked.values().map(String::as_str).collect();
    let duplicates: usize = acked_ids
        .iter()
        .map(|id| {
            flaky
                .answered_2xx
                .get(*id)
                .map_or(0, Vec::len)
                .saturating_sub(1)
        })
        .sum();
    let unacknowledged = bodies.keys().filter(|id| !acked_ids.contains(*id)).count();
    println!(
        "crash test: {KILLS} kills, {} acknowledged, {} delivered (answered 2xx), {duplicates} duplicates \
         (the same webhook-id answered 2xx again), {unacknowledged} stored but not acknowledged before a kill \
         (fed again, under a new webhook-id), {} requests, {:.1} s",
        acked.len(),
        acked_ids
            .iter()
            .filter(|id| flaky.answered_2xx.contains_key(**id))
            .count(),
        requests.len(),
        started.elapsed().as_secs_f64(),
    );
}
