//! The metrics as a Prometheus scrape sees them: a worker on the hyper backend delivers to a
//! receiver on 127.0.0.1 with known answers, `metrics-exporter-prometheus` renders what was
//! recorded, and Python's `prometheus_client` parser (a real Prometheus text parser, not one
//! written here) reads it back. The parsed counters must equal the outcomes exactly.
//!
//! The parser is run as `python3 -c ...` with the text on stdin. Where `prometheus_client` is
//! not importable the tests say plainly that they did not run, unless
//! `CALL_RESULT_WEBHOOK_REQUIRE_PROMETHEUS_PARSER=1` is set: then they fail.
#![cfg(all(feature = "metrics", feature = "hyper"))]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant};

use call_result_webhook::delivery::RetrySchedule;
use call_result_webhook::delivery::metrics::ATTEMPT_DURATION_SECONDS;
use call_result_webhook::{
    AccountId, CallResult, CampaignId, Error, Event, HyperDispatcher, MemoryStore,
    PreferencesUpdate, Submitted, Webhooks,
};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use support::events::{Events, PATIENCE};
use support::faulty_store::{Access, Failures, FaultyStore};
use support::{Receiver, Reply, admin, loopback_policy, switch_on};

const CAMPAIGN: &str = "winter-sale";

const REQUIRE: &str = "CALL_RESULT_WEBHOOK_REQUIRE_PROMETHEUS_PARSER";

// ---------------------------------------------------------------------------------------------
// One fresh Prometheus registry per scenario.
//
// The worker records from its own threads, so the recorder must be the process's global one,
// which can be installed once. It forwards to the scenario running now; scenarios run one at
// a time.

static CURRENT: Mutex<Option<Arc<PrometheusRecorder>>> = Mutex::new(None);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn current() -> Option<Arc<PrometheusRecorder>> {
    CURRENT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

struct Forward;

impl Recorder for Forward {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(r) = current() {
            r.describe_counter(key, unit, description);
        }
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(r) = current() {
            r.describe_gauge(key, unit, description);
        }
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(r) = current() {
            r.describe_histogram(key, unit, description);
        }
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        current().map_or_else(Counter::noop, |r| r.register_counter(key, metadata))
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        current().map_or_else(Gauge::noop, |r| r.register_gauge(key, metadata))
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        current().map_or_else(Histogram::noop, |r| r.register_histogram(key, metadata))
    }
}

/// Takes the one scenario place and gives it a fresh registry; histograms of attempt
/// durations are rendered with buckets (a true Prometheus histogram, not a summary).
fn fresh_registry() -> (MutexGuard<'static, ()>, Arc<PrometheusRecorder>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| metrics::set_global_recorder(Forward).expect("no recorder yet"));
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(ATTEMPT_DURATION_SECONDS.into()),
            &[0.005, 0.05, 0.5, 5.0],
        )
        .expect("buckets")
        .build_recorder();
    let recorder = Arc::new(recorder);
    *CURRENT.lock().unwrap_or_else(PoisonError::into_inner) = Some(recorder.clone());
    (turn, recorder)
}

// ---------------------------------------------------------------------------------------------
// The real parser.

/// Reads Prometheus text with `prometheus_client.parser.text_string_to_metric_families` and
/// prints every sample as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "help": family.documentation,
                    "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// One sample as the parser read it.
#[derive(Debug, Clone)]
struct Sample {
    /// The family's type, from its `# TYPE` line: `counter`, `gauge`, `histogram`...
    kind: String,
    /// The family's `# HELP` text.
    help: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Whether the parser can run here; `false` (said plainly) when it cannot and is not
/// required, a panic when it is required.
fn parser_available(test: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import prometheus_client.parser"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if probe.is_ok_and(|s| s.success()) {
        return true;
    }
    if std::env::var(REQUIRE).is_ok_and(|v| v == "1") {
        panic!(
            "{test}: python3 with prometheus_client is required ({REQUIRE}=1) but cannot be \
             imported: pip install prometheus-client"
        );
    }
    println!(
        "{test}: DID NOT RUN: python3 cannot import prometheus_client (pip install \
         prometheus-client; set {REQUIRE}=1 to make this a failure)"
    );
    false
}

fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("text written to the parser");
    let out = child.wait_with_output().expect("the parser finishes");
    assert!(
        out.status.success(),
        "prometheus_client could not parse the text:\n{}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    json.as_array()
        .expect("a list of samples")
        .iter()
        .map(|s| Sample {
            kind: s["type"].as_str().expect("type").to_owned(),
            help: s["help"].as_str().unwrap_or_default().to_owned(),
            name: s["name"].as_str().expect("name").to_owned(),
            labels: s["labels"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_owned()))
                .collect(),
            value: s["value"].as_f64().expect("value"),
        })
        .collect()
}

/// The samples named `name`, summed by the value of `label` (`""` for none), as integers.
fn by_label(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let key = s.labels.get(label).cloned().unwrap_or_default();
        assert_eq!(s.value.fract(), 0.0, "{name} {:?} is not whole", s.labels);
        *sums.entry(key).or_default() += s.value as u64;
    }
    sums
}

/// The first sample named `name`, which carries its family's type and help.
fn first<'a>(samples: &'a [Sample], name: &str) -> &'a Sample {
    samples
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no sample named {name}"))
}

fn kind_of(samples: &[Sample], name: &str) -> String {
    first(samples, name).kind.clone()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

// ---------------------------------------------------------------------------------------------
// The scenario: known answers, known outcomes.

/// - `steady`: 5 deliveries answered 200 at once;
/// - `flaky`: 2 deliveries answered 503 once, then 200;
/// - `rejecting`: 1 delivery answered 404 (failed for good);
/// - `held`: 3 deliveries submitted, then its webhook switched off: pending, never attempted.
///
/// Attempts: 7 `delivered`, 2 `retry`, 1 `failed`, 10 in all. Deliveries: 7 `delivered`,
/// 1 `failed`. Pending at the end: the 3 held.
const HELD: u64 = 3;

/// Runs the scenario and returns the rendered text once the pending gauge shows the held
/// deliveries and the worker has stopped.
fn run_scenario(by_account: bool, recorder: &PrometheusRecorder) -> String {
    let receiver = Receiver::start();
    let answered_503 = Mutex::new(HashSet::new());
    receiver.respond_with(move |r| match r.target.as_str() {
        "/ok" => Reply::ok(),
        "/flaky" => {
            let id = r.header("webhook-id").expect("webhook-id").to_owned();
            let first = answered_503
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id);
            if first {
                Reply::status(503)
            } else {
                Reply::ok()
            }
        }
        "/reject" => Reply::status(404),
        other => panic!("unexpected request to {other}"),
    });

    let finished = Arc::new(AtomicUsize::new(0));
    let seen = finished.clone();
    let webhooks = Webhooks::builder()
        .store(MemoryStore::new())
        .policy(loopback_policy())
        .metrics_by_account(by_account)
        .on_event(move |e| {
            if matches!(
                e,
                Event::AttemptSucceeded { .. } | Event::DeliveryFailed { .. }
            ) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .expect("webhooks build");
    let campaign = CampaignId::from(CAMPAIGN);
    let account = |name: &str, path: &str| {
        let id = AccountId::from(name);
        let schedule = RetrySchedule::new([Duration::from_millis(10)]).expect("schedule");
        switch_on(
            &webhooks,
            &id,
            &campaign,
            PreferencesUpdate::new()
                .url(receiver.url_for(path).as_str())
                .retry_schedule(schedule),
        );
        id
    };
    let submit = |id: &AccountId, n: usize| {
        for i in 0..n {
            let call = CallResult::builder().reference(format!("{id}-{i}")).build();
            match webhooks
                .submit_blocking(id, &campaign, call)
                .expect("submit")
            {
                Submitted::Accepted(_) => {}
                Submitted::Skipped(why) => panic!("skipped: {}", why.describe()),
            }
        }
    };
    let steady = account("steady", "/ok");
    let flaky = account("flaky", "/flaky");
    let rejecting = account("rejecting", "/reject");
    let held = account("held", "/ok");
    submit(&steady, 5);
    submit(&flaky, 2);
    submit(&rejecting, 1);
    submit(&held, HELD as usize);
    webhooks
        .update_preferences_blocking(&admin(), &held, PreferencesUpdate::new().enabled(false))
        .expect("held account switched off");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dispatcher = HyperDispatcher::builder().policy(loopback_policy()).build();
    let worker = webhooks
        .start_tokio(dispatcher, runtime.handle())
        .expect("worker starts");

    let deadline = Instant::now() + PATIENCE;
    while finished.load(Ordering::SeqCst) < 8 {
        assert!(Instant::now() < deadline, "deliveries not finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    // `pending` is read at most once a second: wait for the reading after the last outcome.
    loop {
        let samples = parse(&recorder.handle().render());
        let pending = by_label(&samples, "call_result_webhook_store_pending", "account");
        let total: u64 = pending.values().sum();
        let expected_series = if by_account { 4 } else { 1 };
        if total == HELD && pending.len() == expected_series {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pending gauge never showed {HELD}: {pending:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = worker
        .shutdown_blocking(Duration::from_secs(10))
        .expect("shutdown");
    assert_eq!(report.released, 0);
    runtime.shutdown_timeout(Duration::from_secs(5));
    recorder.handle().render()
}

/// What both scenarios check: the counters equal the outcomes, the gauges end right, the
/// histogram counted every attempt.
fn check_totals(samples: &[Sample]) {
    assert_eq!(
        by_label(samples, "call_result_webhook_attempts_total", "outcome"),
        counts(&[("delivered", 7), ("failed", 1), ("retry", 2)])
    );
    assert_eq!(
        by_label(samples, "call_result_webhook_deliveries_total", "result"),
        counts(&[("delivered", 7), ("failed", 1)])
    );
    assert_eq!(
        kind_of(samples, "call_result_webhook_attempts_total"),
        "counter"
    );
    assert_eq!(
        kind_of(samples, "call_result_webhook_deliveries_total"),
        "counter"
    );

    assert_eq!(kind_of(samples, "call_result_webhook_in_flight"), "gauge");
    assert_eq!(
        by_label(samples, "call_result_webhook_in_flight", ""),
        counts(&[("", 0)])
    );
    assert_eq!(
        by_label(samples, "call_result_webhook_store_failing", ""),
        counts(&[("", 0)])
    );
    let pending: u64 = by_label(samples, "call_result_webhook_store_pending", "")
        .values()
        .sum();
    assert_eq!(pending, HELD);

    let duration = "call_result_webhook_attempt_duration_seconds";
    assert_eq!(kind_of(samples, &format!("{duration}_count")), "histogram");
    let count: u64 = by_label(samples, &format!("{duration}_count"), "")
        .values()
        .sum();
    assert_eq!(count, 10, "one observation per attempt");
    let inf: u64 = samples
        .iter()
        .filter(|s| s.name == format!("{duration}_bucket") && s.labels["le"] == "+Inf")
        .map(|s| s.value as u64)
        .sum();
    assert_eq!(inf, 10);
}

#[test]
fn scraped_counters_equal_the_outcomes_and_carry_no_account_by_default() {
    if !parser_available("scraped_counters_equal_the_outcomes_and_carry_no_account_by_default") {
        return;
    }
    let (_turn, recorder) = fresh_registry();
    let text = run_scenario(false, &recorder);
    println!("--- rendered without account labels ---\n{text}");
    let samples = parse(&text);
    check_totals(&samples);
    let labelled: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.labels.contains_key("account"))
        .collect();
    assert!(labelled.is_empty(), "account labels: {labelled:?}");
}

#[test]
fn metrics_by_account_labels_each_account() {
    if !parser_available("metrics_by_account_labels_each_account") {
        return;
    }
    let (_turn, recorder) = fresh_registry();
    let text = run_scenario(true, &recorder);
    println!("--- rendered with account labels ---\n{text}");
    let samples = parse(&text);
    check_totals(&samples);

    let per_account = |name: &str, account: &str, label: &str| {
        let only: Vec<Sample> = samples
            .iter()
            .filter(|s| s.labels.get("account").map(String::as_str) == Some(account))
            .cloned()
            .collect();
        by_label(&only, name, label)
    };
    let attempts = "call_result_webhook_attempts_total";
    assert_eq!(
        per_account(attempts, "steady", "outcome"),
        counts(&[("delivered", 5)])
    );
    assert_eq!(
        per_account(attempts, "flaky", "outcome"),
        counts(&[("delivered", 2), ("retry", 2)])
    );
    assert_eq!(
        per_account(attempts, "rejecting", "outcome"),
        counts(&[("failed", 1)])
    );
    assert!(per_account(attempts, "held", "outcome").is_empty());
    let deliveries = "call_result_webhook_deliveries_total";
    assert_eq!(
        per_account(deliveries, "flaky", "result"),
        counts(&[("delivered", 2)])
    );
    assert_eq!(
        per_account(deliveries, "rejecting", "result"),
        counts(&[("failed", 1)])
    );
    let pending = by_label(&samples, "call_result_webhook_store_pending", "account");
    assert_eq!(
        pending,
        counts(&[
            ("flaky", 0),
            ("held", HELD),
            ("rejecting", 0),
            ("steady", 0)
        ])
    );
    let durations = by_label(
        &samples,
        "call_result_webhook_attempt_duration_seconds_count",
        "account",
    );
    assert_eq!(
        durations,
        counts(&[("flaky", 4), ("rejecting", 1), ("steady", 5)])
    );
    // The process's gauges describe no account.
    for name in [
        "call_result_webhook_in_flight",
        "call_result_webhook_store_failing",
    ] {
        assert!(
            samples
                .iter()
                .filter(|s| s.name == name)
                .all(|s| !s.labels.contains_key("account")),
            "{name} carries an account"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// An outcome the store cannot record is not counted until it is recorded.

/// Attempt outcomes cannot be recorded while it is set (a full disk); everything else passes
/// through to the memory store.
struct FullDisk(Arc<AtomicBool>);

impl Failures for FullDisk {
    fn fails(&self, method: &'static str, _: Access) -> bool {
        method == "record_attempts" && self.0.load(Ordering::SeqCst)
    }
    fn error(&self, _: &'static str, _: Access) -> Error {
        Error::Store {
            message: "disk is full".into(),
            source: None,
        }
    }
}

#[test]
fn an_outcome_the_store_cannot_record_is_counted_once_recorded() {
    if !parser_available("an_outcome_the_store_cannot_record_is_counted_once_recorded") {
        return;
    }
    let (_turn, recorder) = fresh_registry();
    let receiver = Receiver::start();
    let full = Arc::new(AtomicBool::new(true));
    let events = Events::default();
    let webhooks = events
        .sink(
            Webhooks::builder()
                .store(FaultyStore::new(FullDisk(full.clone())))
                .policy(loopback_policy()),
        )
        .build()
        .expect("webhooks build");
    let (acme, campaign) = (AccountId::from("acme"), CampaignId::from(CAMPAIGN));
    switch_on(
        &webhooks,
        &acme,
        &campaign,
        PreferencesUpdate::new().url(receiver.url_for("/ok").as_str()),
    );
    let call = CallResult::builder().reference("1").build();
    assert!(
        webhooks
            .submit_blocking(&acme, &campaign, call)
            .expect("submit")
            .is_accepted()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dispatcher = HyperDispatcher::builder().policy(loopback_policy()).build();
    let worker = webhooks
        .start_tokio(dispatcher, runtime.handle())
        .expect("worker starts");
    let wait_for = |what: &str, done: &dyn Fn(&Event) -> bool| {
        events.wait_until(what, |events| events.iter().any(done));
    };

    // Sent and answered 200, but not recorded: not counted, and the store is failing.
    wait_for("StoreFailing", &|e| matches!(e, Event::StoreFailing { .. }));
    assert_eq!(receiver.requests().len(), 1);
    let samples = parse(&recorder.handle().render());
    assert!(by_label(&samples, "call_result_webhook_attempts_total", "outcome").is_empty());
    assert!(by_label(&samples, "call_result_webhook_deliveries_total", "result").is_empty());
    assert_eq!(
        by_label(&samples, "call_result_webhook_store_failing", ""),
        counts(&[("", 1)])
    );
    assert_eq!(
        by_label(&samples, "call_result_webhook_in_flight", ""),
        counts(&[("", 1)]),
        "the unrecorded outcome keeps its place"
    );

    // Recorded once the store works: counted once, not sent again.
    full.store(false, Ordering::SeqCst);
    wait_for("StoreRecovered", &|e| {
        matches!(e, Event::StoreRecovered { .. })
    });
    let report = worker
        .shutdown_blocking(Duration::from_secs(10))
        .expect("shutdown");
    assert_eq!((report.released, report.unrecorded), (0, 0));
    runtime.shutdown_timeout(Duration::from_secs(5));
    let text = recorder.handle().render();
    println!("--- rendered after the store recovered ---\n{text}");
    let samples = parse(&text);
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(
        by_label(&samples, "call_result_webhook_attempts_total", "outcome"),
        counts(&[("delivered", 1)])
    );
    assert_eq!(
        by_label(&samples, "call_result_webhook_deliveries_total", "result"),
        counts(&[("delivered", 1)])
    );
    assert_eq!(
        by_label(&samples, "call_result_webhook_store_failing", ""),
        counts(&[("", 0)])
    );
    assert_eq!(
        by_label(&samples, "call_result_webhook_in_flight", ""),
        counts(&[("", 0)])
    );
}

/// `store_pending` is the store's count, so the fleet's: a process reports what another process
/// on the same store submitted, and its help says to aggregate processes with `max`, while
/// `in_flight` says it is the process's own.
#[test]
fn store_pending_counts_what_every_process_submitted_and_says_to_take_the_max() {
    if !parser_available("store_pending_counts_what_every_process_submitted") {
        return;
    }
    let (_turn, recorder) = fresh_registry();
    let store = Arc::new(MemoryStore::new());
    let process = |store: &Arc<MemoryStore>| {
        Webhooks::builder()
            .store(store.clone())
            .policy(loopback_policy())
            .build()
            .expect("webhooks build")
    };
    let (acme, campaign) = (AccountId::from("acme"), CampaignId::from(CAMPAIGN));
    let this = process(&store);
    switch_on(
        &this,
        &acme,
        &campaign,
        PreferencesUpdate::new().url(&support::unused_url()),
    );
    // Another process on the same store submits; this one submits nothing.
    let other = process(&store);
    for n in 0..3 {
        let call = CallResult::builder().reference(n.to_string()).build();
        let submitted = other
            .submit_blocking(&acme, &campaign, call)
            .expect("submit");
        assert!(submitted.is_accepted());
    }
    // Held, so that the count stays put while it is read.
    this.update_preferences_blocking(&admin(), &acme, PreferencesUpdate::new().enabled(false))
        .expect("held");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dispatcher = HyperDispatcher::builder().policy(loopback_policy()).build();
    let worker = this
        .start_tokio(dispatcher, runtime.handle())
        .expect("worker starts");

    let deadline = Instant::now() + PATIENCE;
    let samples = loop {
        let samples = parse(&recorder.handle().render());
        if by_label(&samples, "call_result_webhook_store_pending", "") == counts(&[("", 3)]) {
            break samples;
        }
        assert!(Instant::now() < deadline, "store_pending never showed 3");
        std::thread::sleep(Duration::from_millis(100));
    };
    let help = |name: &str| first(&samples, name).help.clone();
    let pending = help("call_result_webhook_store_pending");
    assert!(
        pending.contains("the whole fleet's") && pending.contains("with max, not sum"),
        "{pending}"
    );
    assert_eq!(
        kind_of(&samples, "call_result_webhook_store_pending"),
        "gauge"
    );
    let in_flight = help("call_result_webhook_in_flight");
    assert!(in_flight.contains("this process's own"), "{in_flight}");
    worker
        .shutdown_blocking(Duration::from_secs(10))
        .expect("shutdown");
}
