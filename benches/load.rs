//! The load figures: each one a ratio to a baseline measured in the same run, or a count from
//! the same run, so that a shared, noisy machine still gives figures worth comparing.
//!
//! ```sh
//! cargo bench --bench load              # the full run (a few minutes)
//! cargo bench --bench load -- --quick   # fewer results per figure, no p6; about a minute
//! cargo bench --bench load -- --quick --only p10sqlite   # p10 on SQLite too: minutes
//! cargo bench --bench load --features postgres -- --quick   # and p7-p9, p12 on PostgreSQL
//! cargo bench --bench load --features postgres -- --only p12pg   # p12 on PostgreSQL only
//! cargo bench --bench load --features postgres -- --only p5pg    # p5 on a PostgreSQL fleet
//! ```
//!
//! `p5_pg_fleet_blackhole_vs_clean`, p7, p8, p9 and the `p12_pg_*` figures (feature `postgres`) measure the shared outbox on the
//! PostgreSQL server named by `CALL_RESULT_WEBHOOK_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), each round on a fresh schema dropped after
//! it; with no server answering they print `not run: no PostgreSQL at ...`. `--only p12`
//! runs p12 on SQLite and, with the feature, on PostgreSQL; `p12sqlite` and `p12pg` one each.
//! `--only p5` runs p5 on SQLite and, with the feature, its fleet version on PostgreSQL (three
//! instances on one schema); `p5pg` the fleet version alone.
//!
//! Every receiver is a hyper server on 127.0.0.1 started by this program (`support`); nothing
//! leaves the machine. Where a figure has a baseline, ours and the baseline alternate, three
//! rounds each, and the figure is the median of the rounds. Details of every round go to
//! stderr; the figures, one `name: value` line each, go to stdout at the end.
//!
//! Outbox files are written under Cargo's bench scratch directory (`target/tmp`), on the same
//! disk a dialer's outbox would be on, and removed afterwards.

mod support;

use std::hint::black_box;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use call_result_webhook::jiff::Timestamp;
use call_result_webhook::{
    AccountId, BlockingDispatcher, CallResult, CampaignId, DeliveryId, Dispatcher, Event,
    HyperDispatcher, MemoryStore, PreferencesUpdate, Principal, SqliteStore, UreqDispatcher,
    UrlPolicy, Webhooks,
    request::{EncodedBody, build_request},
    store::{CommitMode, NewDelivery, Outbox},
};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use support::{Behaviour, Receivers};

/// Rounds of ours and of the baseline, alternating.
const ROUNDS: usize = 3;
/// Concurrent senders (p2) and submitters (p3, p4).
const CONCURRENCY: usize = 16;
/// Accounts in the isolation run (p5).
const ACCOUNTS: usize = 100;
/// Pending results held in the outbox for the memory figure (p6).
const P6_PENDING: usize = 1_000_000;

/// How much work each figure does: the full run, or `--quick`.
#[derive(Debug, Clone, Copy)]
struct Scale {
    quick: bool,
    /// Requests built per round (p1).
    builds: usize,
    /// Requests sent per round (p2).
    sends: usize,
    /// Submits per round, at most (p3), and how long a round may run.
    submits: usize,
    submit_time: Duration,
    /// Results submitted and delivered end to end (p4), and the most time it may take.
    end_to_end: usize,
    end_to_end_time: Duration,
    /// Results per account in the isolation run (p5), and the most time a round may take.
    per_account: usize,
    isolation_time: Duration,
    /// How long the worker runs over a million pending results (p6).
    p6_worker_time: Duration,
    /// Results spread over 500 accounts, then over 20,000 (p10), and the most time a run may
    /// take.
    p10_results: usize,
    p10_time: Duration,
    /// How long sixteen threads submit flat out while the WAL is watched (p11).
    p11_time: Duration,
    /// Results pending when the worker starts (p12): the small backlog and the large one.
    /// Each run is timed over the first `p12_small` deliveries.
    p12_small: usize,
    p12_large: usize,
    /// The PostgreSQL backlog of `p12_pg_backlog_1m_per_s`, and the deliveries it is timed
    /// over (or as many as `p12_time` allows).
    p12_pg_huge: usize,
    p12_pg_huge_sample: usize,
    /// Results a PostgreSQL schema has delivered before `p12_pg_aged_vs_fresh` measures it.
    p12_pg_aged: usize,
    /// The most time one p12 run may take to deliver what it is timed over.
    p12_time: Duration,
}

impl Scale {
    fn full() -> Scale {
        Scale {
            quick: false,
            builds: 200_000,
            sends: 20_000,
            submits: 40_000,
            submit_time: Duration::from_secs(5),
            end_to_end: 100_000,
            end_to_end_time: Duration::from_secs(180),
            per_account: 200,
            isolation_time: Duration::from_secs(60),
            p6_worker_time: Duration::from_secs(10),
            p10_results: 200_000,
            p10_time: Duration::from_secs(300),
            p11_time: Duration::from_secs(60),
            p12_small: 10_000,
            p12_large: 100_000,
            p12_pg_huge: 1_000_000,
            p12_pg_huge_sample: 50_000,
            p12_pg_aged: 1_000_000,
            p12_time: Duration::from_secs(180),
        }
    }

    fn quick() -> Scale {
        Scale {
            quick: true,
            builds: 50_000,
            sends: 4_000,
            submits: 10_000,
            submit_time: Duration::from_millis(1500),
            end_to_end: 10_000,
            end_to_end_time: Duration::from_secs(20),
            per_account: 40,
            isolation_time: Duration::from_secs(8),
            p6_worker_time: Duration::ZERO,
            p10_results: 100_000,
            p10_time: Duration::from_secs(60),
            p11_time: Duration::from_secs(10),
            p12_small: 5_000,
            p12_large: 50_000,
            p12_pg_huge: 100_000,
            p12_pg_huge_sample: 10_000,
            p12_pg_aged: 100_000,
            p12_time: Duration::from_secs(60),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--p6-child") {
        p6_child(&args[at + 1..]);
        return;
    }
    let scale = if args.iter().any(|a| a == "--quick") {
        Scale::quick()
    } else {
        Scale::full()
    };
    // `--only p2,p4` runs just those figures, for working on one of them.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|at| args.get(at + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    let wanted = |figure: &str| only.as_ref().is_none_or(|o| o.iter().any(|w| w == figure));
    let scratch = Scratch::new();
    let started = Instant::now();
    eprintln!(
        "load: {} run, {} CPUs seen, started {}",
        if scale.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        Timestamp::now()
            .round(call_result_webhook::jiff::Unit::Second)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    );

    let mut figures: Vec<(&str, String)> = Vec::new();
    if wanted("p1") {
        let p1 = p1_build(scale);
        figures.push(("p1_build_vs_serde_urlencoded", format!("{p1:.2}")));
    }

    // Receivers for p2 and p4: one healthy listener is enough.
    let receivers = Receivers::start(&[Behaviour::Answer], 2);
    if wanted("p2") {
        let hyper = p2_hyper(&receivers, scale);
        figures.push(("p2_hyper_vs_raw", format!("{hyper:.2}")));
        let ureq = p2_ureq(&receivers, scale);
        figures.push(("p2_ureq_vs_raw", format!("{ureq:.2}")));
    }

    if wanted("p3") || wanted("p3sqlite") {
        let (group, per_submit) = p3_sqlite(&scratch, scale);
        figures.extend([
            (
                "p3_sqlite_group_commit_per_s",
                format!("{:.0}", group.per_s),
            ),
            (
                "p3_sqlite_group_commit_p99_ms",
                format!("{:.2}", group.p99_ms()),
            ),
            (
                "p3_sqlite_per_submit_per_s",
                format!("{:.0}", per_submit.per_s),
            ),
            (
                "p3_sqlite_per_submit_p99_ms",
                format!("{:.2}", per_submit.p99_ms()),
            ),
        ]);
    }
    if wanted("p3") || wanted("p3memory") {
        let memory = p3_memory(scale);
        figures.push(("p3_memory_submit_p99_us", format!("{:.1}", memory.p99_us())));
    }

    if wanted("p4") {
        let p4 = p4_end_to_end(&scratch, &receivers, scale);
        figures.push(("p4_end_to_end_per_s", format!("{p4:.0}")));
    }
    drop(receivers);

    if wanted("p5") {
        let p5 = p5_isolation(&scratch, scale);
        figures.push(("p5_isolation_ratio", format!("{p5:.2}")));
    }

    if wanted("p6") {
        let p6 = if scale.quick {
            "skipped".to_owned()
        } else {
            format!("{:.1}", p6_rss(&scratch, scale))
        };
        figures.push(("p6_rss_mib_1m_pending", p6));
    }

    if wanted("p10") || wanted("p10sqlite") {
        let named = only
            .as_ref()
            .is_some_and(|o| o.iter().any(|w| w == "p10sqlite"));
        let p10 = p10_accounts(&scratch, scale, named);
        figures.extend([
            (
                "p10_accounts_20k_vs_500",
                format!("{:.2}", p10.memory_ratio),
            ),
            (
                "p10_scheduler_us_per_delivery_20k",
                format!("{:.1}", p10.scheduler_us_per_delivery),
            ),
            (
                "p10_sqlite_accounts_20k_vs_500",
                p10.sqlite_ratio
                    .map_or_else(|| "skipped".to_owned(), |r| format!("{r:.2}")),
            ),
        ]);
    }

    if wanted("p11") {
        let p11 = p11_wal_peak(&scratch, scale);
        figures.extend([
            ("p11_wal_peak_mib", format!("{:.1}", p11.peak_mib)),
            ("p11_wal_submits_per_s", format!("{:.0}", p11.per_s)),
        ]);
    }

    if wanted("p12") || wanted("p12sqlite") {
        let p12 = p12_sqlite_backlog(&scratch, scale, Layout::Arrival);
        figures.push(("p12_sqlite_backlog_100k_vs_10k", format!("{p12:.2}")));
        let blocks = p12_sqlite_backlog(&scratch, scale, Layout::Blocks);
        figures.push(("p12_sqlite_blocks_100k_vs_10k", format!("{blocks:.2}")));
    }

    #[cfg(feature = "postgres")]
    if ["p5", "p5pg", "p7", "p8", "p9", "p12", "p12pg"]
        .iter()
        .any(|f| wanted(f))
    {
        pg::run(&wanted, &scratch, scale, &mut figures);
    }

    eprintln!("load: done in {:.1} s", started.elapsed().as_secs_f64());
    for (name, value) in figures {
        println!("{name}: {value}");
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// Loopback receivers only: http allowed, and 127/8 admitted past the address policy.
fn loopback_policy() -> UrlPolicy {
    UrlPolicy::new()
        .allow_http(true)
        .allow_net("127.0.0.0/8".parse().expect("a CIDR"))
}

fn admin() -> Principal {
    Principal::administrator("bench")
}

/// The product page's sample call, with its reference numbered.
fn sample_call(n: usize) -> CallResult {
    CallResult::builder()
        .campaign_name("Winter Sale")
        .logged_at("2019-06-19T16:11:07Z".parse().expect("a timestamp"))
        .call_start("2019-06-19T15:01:00Z".parse().expect("a timestamp"))
        .call_end("2019-06-19T15:03:00Z".parse().expect("a timestamp"))
        .phone_called("0731051xxx")
        .reference(n.to_string())
        .result("Connected")
        .wrap_up_by_name("agent@pinetree.net.au")
        .wrap_up_reason_name("Payment Taken")
        .build()
}

/// The preferences every bench account gets: on, the given URL, Basic credentials, Brisbane.
fn account_settings(url: &str) -> PreferencesUpdate {
    PreferencesUpdate::new()
        .enabled(true)
        .url(url)
        .credentials("dialer", "s3cret")
        .time_zone("Australia/Brisbane")
}

/// Those preferences as a value, for the runs that encode and build requests themselves.
fn preferences(url: &str) -> call_result_webhook::preferences::Preferences {
    call_result_webhook::preferences::Preferences::from_update(account_settings(url))
        .expect("preferences")
}

const CAMPAIGN: &str = "winter-sale";

/// Sets up `account` on `webhooks` to send to `url`, with the campaign switched on.
fn configure(webhooks: &Webhooks, account: &AccountId, url: &str) {
    webhooks
        .update_preferences_blocking(&admin(), account, account_settings(url))
        .expect("preferences");
    webhooks
        .set_campaign_webhook_blocking(&admin(), account, &CAMPAIGN.into(), true)
        .expect("campaign switch");
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `q` quantile (nearest rank) of `values`, which it sorts.
fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// A directory for outbox files under Cargo's bench scratch directory, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch { dir }
    }

    /// A fresh outbox path (nothing there yet).
    fn outbox(&self, name: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.db"));
        remove_outbox(&path);
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn remove_outbox(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// p1: building a request

/// The same ten values as [`sample_call`] formats them, already text.
#[derive(serde::Serialize)]
#[allow(non_snake_case)]
struct PlainPage {
    CampaignName: String,
    LogDateTime: String,
    CallStart: String,
    CallEnd: String,
    PhoneCalled: String,
    Reference: String,
    Result: String,
    ResultNotes: String,
    WrapUpByName: String,
    WrapUpReasonName: String,
}

fn p1_build(scale: Scale) -> f64 {
    let prefs = &preferences("https://crm.acme.example/hooks/calls");
    let call = sample_call(123);
    let id = DeliveryId::new("msg_01J9Z3K7Q8X4N2M5P6R7S8T9VW").expect("an id");
    let page = PlainPage {
        CampaignName: "Winter Sale".into(),
        LogDateTime: "2019-06-19T16:11:07".into(),
        CallStart: "2019-06-20 01:01:00".into(),
        CallEnd: "2019-06-20 01:03:00".into(),
        PhoneCalled: "0731051xxx".into(),
        Reference: "123".into(),
        Result: "Connected".into(),
        ResultNotes: String::new(),
        WrapUpByName: "agent@pinetree.net.au".into(),
        WrapUpReasonName: "Payment Taken".into(),
    };
    let ours_body = EncodedBody::encode(&call, prefs).expect("encodes");
    let baseline_body = serde_urlencoded::to_string(&page).expect("encodes");
    assert_eq!(
        ours_body.bytes().as_ref(),
        baseline_body.as_bytes(),
        "ours and the baseline must encode the same bytes"
    );

    let ours = || {
        let body = EncodedBody::encode(black_box(&call), prefs).expect("encodes");
        black_box(build_request(prefs, black_box(&id), &body).expect("builds"));
    };
    let baseline = || {
        black_box(serde_urlencoded::to_string(black_box(&page)).expect("encodes"));
    };
    // Warm up both.
    for _ in 0..scale.builds / 10 {
        ours();
        baseline();
    }
    // Each round interleaves short slices of the two, so that a burst of load from elsewhere on
    // the machine falls on both alike.
    const SLICES: usize = 20;
    let per_slice = scale.builds / SLICES;
    let time = |f: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..per_slice {
            f();
        }
        start.elapsed()
    };
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let (mut o, mut b) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..SLICES {
            o += time(&ours);
            b += time(&baseline);
        }
        let per = |d: Duration| d.as_nanos() as f64 / (per_slice * SLICES) as f64;
        let (o, b) = (per(o), per(b));
        eprintln!(
            "p1 round {round}: ours {o:.0} ns/request, serde_urlencoded {b:.0} ns/request, ratio {:.2}",
            o / b
        );
        ratios.push(o / b);
    }
    median(&ratios)
}

// ---------------------------------------------------------------------------------------------
// p2: sending through our dispatchers against the raw clients

/// `count` copies of one request to `url`, built the way the worker builds them.
fn prebuilt(url: &str, count: usize) -> Vec<Request<Bytes>> {
    let prefs = &preferences(url);
    let body = EncodedBody::encode(&sample_call(1), prefs).expect("encodes");
    (0..count)
        .map(|_| build_request(prefs, &DeliveryId::generate(), &body).expect("builds"))
        .collect()
}

/// Deals `requests` out to `n` senders, round robin.
fn deal(requests: Vec<Request<Bytes>>, n: usize) -> Vec<Vec<Request<Bytes>>> {
    let mut hands: Vec<Vec<Request<Bytes>>> = (0..n).map(|_| Vec::new()).collect();
    for (i, r) in requests.into_iter().enumerate() {
        hands[i % n].push(r);
    }
    hands
}

#[derive(Clone)]
enum AsyncSender {
    Ours(HyperDispatcher),
    Raw(Client<HttpConnector, Full<Bytes>>),
}

impl AsyncSender {
    async fn send(&self, request: Request<Bytes>) -> bool {
        match self {
            AsyncSender::Ours(d) => d
                .dispatch(request)
                .await
                .is_ok_and(|r| r.status().is_success()),
            AsyncSender::Raw(client) => match client.request(request.map(Full::new)).await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    ok && response.into_body().collect().await.is_ok()
                }
                Err(_) => false,
            },
        }
    }
}

/// Sends every request, `CONCURRENCY` at a time; returns deliveries per second.
fn send_async(
    rt: &tokio::runtime::Runtime,
    sender: &AsyncSender,
    requests: Vec<Request<Bytes>>,
) -> f64 {
    let total = requests.len();
    let hands = deal(requests, CONCURRENCY);
    let failures = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = hands
            .into_iter()
            .map(|hand| {
                let sender = sender.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    for request in hand {
                        if !sender.send(request).await {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a sender task");
        }
    });
    let elapsed = start.elapsed();
    let failed = failures.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{failed} of {total} requests failed");
    total as f64 / elapsed.as_secs_f64()
}

fn p2_hyper(receivers: &Receivers, scale: Scale) -> f64 {
    let rt = runtime(2);
    let ours = AsyncSender::Ours(HyperDispatcher::builder().policy(loopback_policy()).build());
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let raw = AsyncSender::Raw(
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(http),
    );
    let url = receivers.url(0);
    // Warm up: open the pooled connections of both.
    send_async(&rt, &ours, prebuilt(&url, CONCURRENCY * 20));
    send_async(&rt, &raw, prebuilt(&url, CONCURRENCY * 20));
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let opened = receivers.connections();
        let o = send_async(&rt, &ours, prebuilt(&url, scale.sends));
        let between = receivers.connections();
        let r = send_async(&rt, &raw, prebuilt(&url, scale.sends));
        eprintln!(
            "p2 hyper round {round}: ours {o:.0}/s ({} connections), raw hyper-util {r:.0}/s \
             ({} connections), ratio {:.2}",
            between - opened,
            receivers.connections() - between,
            o / r
        );
        ratios.push(o / r);
    }
    median(&ratios)
}

#[derive(Clone)]
enum BlockingSender {
    Ours(UreqDispatcher),
    Raw(ureq::Agent),
}

impl BlockingSender {
    fn send(&self, request: Request<Bytes>) -> bool {
        match self {
            BlockingSender::Ours(d) => d
                .dispatch_blocking(request)
                .is_ok_and(|r| r.status().is_success()),
            BlockingSender::Raw(agent) => {
                let (parts, body) = request.into_parts();
                match agent.run(Request::from_parts(parts, &body[..])) {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let mut sink = Vec::new();
                        ok && response
                            .into_body()
                            .into_reader()
                            .read_to_end(&mut sink)
                            .is_ok()
                    }
                    Err(_) => false,
                }
            }
        }
    }
}

/// Sends every request from `CONCURRENCY` threads; returns deliveries per second.
fn send_blocking(sender: &BlockingSender, requests: Vec<Request<Bytes>>) -> f64 {
    let total = requests.len();
    let hands = deal(requests, CONCURRENCY);
    let failures = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for hand in hands {
            let failures = &failures;
            s.spawn(move || {
                for request in hand {
                    if !sender.send(request) {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let failed = failures.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{failed} of {total} requests failed");
    total as f64 / elapsed.as_secs_f64()
}

fn p2_ureq(receivers: &Receivers, scale: Scale) -> f64 {
    let ours = BlockingSender::Ours(UreqDispatcher::builder().policy(loopback_policy()).build());
    // The same pool as ours (one idle connection per attempt in flight), so that only what
    // our dispatcher adds is compared.
    let raw = BlockingSender::Raw(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections_per_host(call_result_webhook::limits::DEFAULT_MAX_CONCURRENCY)
            .max_idle_connections(4 * call_result_webhook::limits::DEFAULT_MAX_CONCURRENCY)
            .build()
            .new_agent(),
    );
    let url = receivers.url(0);
    send_blocking(&ours, prebuilt(&url, CONCURRENCY * 20));
    send_blocking(&raw, prebuilt(&url, CONCURRENCY * 20));
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let opened = receivers.connections();
        let o = send_blocking(&ours, prebuilt(&url, scale.sends));
        let between = receivers.connections();
        let r = send_blocking(&raw, prebuilt(&url, scale.sends));
        eprintln!(
            "p2 ureq round {round}: ours {o:.0}/s ({} connections), raw ureq {r:.0}/s ({} \
             connections), ratio {:.2}",
            between - opened,
            receivers.connections() - between,
            o / r
        );
        ratios.push(o / r);
    }
    median(&ratios)
}

// ---------------------------------------------------------------------------------------------
// p3: submitting into the outbox

/// What one round of submits measured.
#[derive(Debug, Clone, Copy, Default)]
struct SubmitRound {
    submitted: usize,
    per_s: f64,
    p99: Duration,
}

impl SubmitRound {
    fn p99_ms(&self) -> f64 {
        self.p99.as_secs_f64() * 1e3
    }
    fn p99_us(&self) -> f64 {
        self.p99.as_secs_f64() * 1e6
    }
}

/// Submits up to `count` call results from `CONCURRENCY` threads, for at most `limit`, timing
/// each submit. Returns the rate and the 99th percentile of one submit's latency.
fn submit_round(
    webhooks: &Webhooks,
    accounts: &[AccountId],
    count: usize,
    limit: Duration,
    pace: Option<Duration>,
) -> SubmitRound {
    submit_round_with(CONCURRENCY, webhooks, accounts, count, limit, pace)
}

/// [`submit_round`] with `submitters` threads.
fn submit_round_with(
    submitters: usize,
    webhooks: &Webhooks,
    accounts: &[AccountId],
    count: usize,
    limit: Duration,
    pace: Option<Duration>,
) -> SubmitRound {
    let campaign = CampaignId::new(CAMPAIGN);
    let barrier = Barrier::new(submitters + 1);
    let per_thread = count.div_ceil(submitters);
    let mut latencies = Vec::with_capacity(count);
    let elapsed = std::thread::scope(|s| {
        let threads: Vec<_> = (0..submitters)
            .map(|t| {
                let barrier = &barrier;
                let campaign = &campaign;
                s.spawn(move || {
                    let calls: Vec<CallResult> = (0..per_thread)
                        .map(|i| sample_call(t * per_thread + i))
                        .collect();
                    let mut took = Vec::with_capacity(per_thread);
                    barrier.wait();
                    let began = Instant::now();
                    let deadline = began + limit;
                    for (i, call) in calls.into_iter().enumerate() {
                        if let Some(every) = pace {
                            // Each thread's submits are `every` apart, the threads' staggered.
                            let due =
                                began + every * i as u32 + every * t as u32 / submitters as u32;
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        }
                        let account = &accounts[(t + i) % accounts.len()];
                        let began = Instant::now();
                        let submitted = webhooks
                            .submit_blocking(account, campaign, call)
                            .expect("submit");
                        took.push(began.elapsed());
                        assert!(submitted.is_accepted(), "every switch is on");
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    took
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for t in threads {
            latencies.extend(t.join().expect("a submitter"));
        }
        start.elapsed()
    });
    SubmitRound {
        submitted: latencies.len(),
        per_s: latencies.len() as f64 / elapsed.as_secs_f64(),
        p99: quantile(&mut latencies, 0.99),
    }
}

fn sqlite_webhooks(path: &Path, commit: CommitMode) -> (Webhooks, Arc<SqliteStore>, AccountId) {
    let store = Arc::new(
        SqliteStore::builder(path)
            .commit(commit)
            .open()
            .expect("open the outbox"),
    );
    let webhooks = Webhooks::builder()
        .store(store.clone())
        .policy(loopback_policy())
        .build()
        .expect("webhooks");
    let account = AccountId::new("acme");
    configure(&webhooks, &account, "http://127.0.0.1:9/calls");
    (webhooks, store, account)
}

/// How long one `fdatasync` of a 4 KiB overwrite takes in `dir`, 200 times: the floor under
/// every commit of a durable outbox on this disk.
fn fdatasync_times(dir: &Path) -> (Duration, Duration) {
    use std::io::{Seek as _, Write as _};
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path).expect("create the probe file");
    let block = [0u8; 4096];
    file.write_all(&block).expect("write");
    file.sync_all().expect("sync");
    let mut took = Vec::with_capacity(200);
    for _ in 0..200 {
        file.rewind().expect("rewind");
        file.write_all(&block).expect("write");
        let began = Instant::now();
        file.sync_data().expect("fdatasync");
        took.push(began.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    (quantile(&mut took, 0.5), quantile(&mut took, 0.99))
}

/// Group commit against one fsync per submit, alternating; the median round of each.
fn p3_sqlite(scratch: &Scratch, scale: Scale) -> (SubmitRound, SubmitRound) {
    let modes = [
        ("group commit", CommitMode::default()),
        ("per submit", CommitMode::PerSubmit),
    ];
    let (p50, p99) = fdatasync_times(&scratch.dir);
    eprintln!(
        "p3 disk: fdatasync of 4 KiB takes {:.2} ms (p50), {:.2} ms (p99); {CONCURRENCY} \
         submitters each waiting for their own commit can make at most {CONCURRENCY} per commit",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    let mut rounds: [Vec<SubmitRound>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=ROUNDS {
        for (m, (name, mode)) in modes.iter().enumerate() {
            let path = scratch.outbox("p3");
            let (webhooks, store, account) = sqlite_webhooks(&path, *mode);
            let commits_before = store.transactions_committed();
            let r = submit_round(
                &webhooks,
                &[account],
                scale.submits,
                scale.submit_time,
                None,
            );
            let commits = store.transactions_committed() - commits_before;
            drop(webhooks);
            drop(store);
            remove_outbox(&path);
            eprintln!(
                "p3 sqlite {name} round {round}: {:.0} submits/s, p99 {:.2} ms ({} commits, {:.1} \
                 submits per commit, {:.2} ms per commit)",
                r.per_s,
                r.p99_ms(),
                commits,
                r.submitted as f64 / commits.max(1) as f64,
                r.submitted as f64 / r.per_s / commits.max(1) as f64 * 1e3,
            );
            rounds[m].push(r);
        }
    }
    // Not a figure: the same group commit with four times the submitters, to show that a
    // commit's size, not the store, is what the sixteen are held to.
    let path = scratch.outbox("p3");
    let (webhooks, store, account) = sqlite_webhooks(&path, CommitMode::default());
    let many = 4 * CONCURRENCY;
    let commits_before = store.transactions_committed();
    let r = submit_round_with(
        many,
        &webhooks,
        &[account],
        scale.submits,
        scale.submit_time,
        None,
    );
    let commits = (store.transactions_committed() - commits_before).max(1);
    drop(webhooks);
    drop(store);
    remove_outbox(&path);
    eprintln!(
        "p3 sqlite group commit with {many} submitters, not a figure: {:.0} submits/s, p99 {:.2} \
         ms ({:.1} submits per commit)",
        r.per_s,
        r.p99_ms(),
        r.submitted as f64 / commits as f64
    );
    let pick = |rs: &[SubmitRound]| SubmitRound {
        submitted: rs.iter().map(|r| r.submitted).sum(),
        per_s: median(&rs.iter().map(|r| r.per_s).collect::<Vec<_>>()),
        p99: Duration::from_secs_f64(median(
            &rs.iter().map(|r| r.p99.as_secs_f64()).collect::<Vec<_>>(),
        )),
    };
    (pick(&rounds[0]), pick(&rounds[1]))
}

/// Answers `204` at once, in process.
struct Accept;

impl BlockingDispatcher for Accept {
    fn dispatch_blocking(
        &self,
        _: Request<Bytes>,
    ) -> Result<
        call_result_webhook::dispatch::ReceiverResponse,
        call_result_webhook::dispatch::TransportError,
    > {
        Ok(call_result_webhook::dispatch::ReceiverResponse::new(
            http::StatusCode::NO_CONTENT,
            http::HeaderMap::new(),
            Bytes::new(),
        ))
    }
}

/// Each of the `CONCURRENCY` memory submitters submits this often (16,000 submits/s in all,
/// hundreds of times a busy dialer's rate), their turns staggered.
const P3_MEMORY_PACE: Duration = Duration::from_millis(1);
/// At that pace, a round of this many submits takes a second and a quarter.
const P3_MEMORY_PACE_CAP: usize = 20_000;

/// Submits into a `MemoryStore` from `CONCURRENCY` threads, each at a steady pace
/// ([`P3_MEMORY_PACE`]), while the worker delivers them through an in-process dispatcher that
/// answers at once: the latency a dialer's thread sees when it hands over a result.
///
/// One store serves every round and what a round leaves is removed after it, so the measured
/// rounds run on memory the process already uses, as in a dialer that has been running; the
/// warm-up round, on fresh memory, is reported but not counted. Each round is followed by one
/// with no pause between submits, reported only: with sixteen threads on two cores its tail is
/// how long a preempted thread holding the store's lock waits for a core again.
fn p3_memory(scale: Scale) -> SubmitRound {
    let webhooks = Webhooks::builder()
        .store(MemoryStore::new())
        .policy(loopback_policy())
        .build()
        .expect("webhooks");
    let account = AccountId::new("acme");
    configure(&webhooks, &account, "http://127.0.0.1:9/calls");
    // The worker delivers as results arrive, so the store stays the size a running dialer's
    // does and its memory is reused.
    let worker = webhooks.start_threads(Accept, 2).expect("start the worker");
    let clear = || {
        webhooks
            .remove_blocking(
                &admin(),
                &call_result_webhook::store::DeliveryFilter::account("acme"),
            )
            .expect("remove")
    };
    let count = scale.submits.min(P3_MEMORY_PACE_CAP);
    let limit = scale.submit_time * 2;
    let accounts = std::slice::from_ref(&account);
    let warm = submit_round(&webhooks, accounts, count, limit, None);
    clear();
    eprintln!(
        "p3 memory warm-up, not counted: {:.0} submits/s, p99 {:.1} us",
        warm.per_s,
        warm.p99_us()
    );
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        let r = submit_round(&webhooks, accounts, count, limit, Some(P3_MEMORY_PACE));
        clear();
        let flat_out = submit_round(&webhooks, accounts, count, limit, None);
        clear();
        eprintln!(
            "p3 memory round {round}: {:.0} submits/s paced, p99 {:.1} us (no pauses: {:.0} \
             submits/s, p99 {:.1} us)",
            r.per_s,
            r.p99_us(),
            flat_out.per_s,
            flat_out.p99_us()
        );
        rounds.push(r);
    }
    worker
        .shutdown_blocking(Duration::from_secs(5))
        .expect("shutdown");
    SubmitRound {
        submitted: rounds.iter().map(|r| r.submitted).sum(),
        per_s: median(&rounds.iter().map(|r| r.per_s).collect::<Vec<_>>()),
        p99: Duration::from_secs_f64(median(
            &rounds
                .iter()
                .map(|r| r.p99.as_secs_f64())
                .collect::<Vec<_>>(),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// p4: end to end

/// Counts `AttemptSucceeded` events, optionally leaving out one account.
#[derive(Clone, Default)]
struct Delivered {
    count: Arc<AtomicU64>,
}

impl Delivered {
    fn sink(&self, except: Option<AccountId>) -> impl Fn(&Event) + Send + Sync + 'static {
        let count = self.count.clone();
        move |event| {
            if let Event::AttemptSucceeded { account, .. } = event
                && except.as_ref() != Some(account)
            {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `n` are counted or `limit` has passed; returns when the last one was seen
    /// (or the limit).
    fn wait_for(&self, n: u64, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        while self.get() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Instant::now()
    }
}

/// The per-endpoint bound for p4: one account's endpoint may use half the default overall
/// bound of 64, the most one endpoint is ever given. The default of 4 is meant for many
/// accounts sharing the worker.
const P4_PER_ENDPOINT: usize = 32;

fn p4_end_to_end(scratch: &Scratch, receivers: &Receivers, scale: Scale) -> f64 {
    let per_endpoint: usize = std::env::var("P4_PER_ENDPOINT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(P4_PER_ENDPOINT);
    let path = scratch.outbox("p4");
    let delivered = Delivered::default();
    let store = SqliteStore::builder(&path).open().expect("open the outbox");
    let webhooks = Webhooks::builder()
        .store(store)
        .policy(loopback_policy())
        .per_endpoint_concurrency(per_endpoint)
        .on_event(delivered.sink(None))
        .build()
        .expect("webhooks");
    let account = AccountId::new("acme");
    configure(&webhooks, &account, &receivers.url(0));
    let before = receivers.total();

    let rt = runtime(2);
    let dispatcher = HyperDispatcher::builder().policy(loopback_policy()).build();
    let worker = webhooks
        .start_tokio(dispatcher, rt.handle())
        .expect("start the worker");
    let n = scale.end_to_end;
    let start = Instant::now();
    let submitting = submit_round(
        &webhooks,
        std::slice::from_ref(&account),
        n,
        scale.end_to_end_time,
        None,
    );
    let end = delivered.wait_for(
        n as u64,
        scale.end_to_end_time.saturating_sub(start.elapsed()),
    );
    let elapsed = end.duration_since(start);
    let got = delivered.get();
    let report = worker
        .shutdown_blocking(Duration::from_secs(5))
        .expect("shutdown");
    drop(webhooks);
    remove_outbox(&path);
    eprintln!(
        "p4: {got} of {n} delivered in {:.2} s, {per_endpoint} in flight at most ({} submitted at {:.0}/s; \
         receiver read {}; shutdown {report:?})",
        elapsed.as_secs_f64(),
        submitting.submitted,
        submitting.per_s,
        receivers.total() - before,
    );
    got as f64 / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// p5: one endpoint that never answers among a hundred

/// Stores `per_account` pending results for each account straight into the outbox, in one
/// transaction per account, so that a round starts with the work already waiting.
fn fill(store: &dyn Outbox, accounts: &[AccountId], per_account: usize, body: &EncodedBody) {
    let now = Timestamp::now();
    for account in accounts {
        let batch: Vec<NewDelivery> = (0..per_account)
            .map(|_| pending_result(account, body, now))
            .collect();
        store.insert(&batch).expect("fill the outbox");
    }
}

/// Stores `per_account` pending results for each account as a dialer's submits would have
/// left them: in arrival order, the accounts' results interleaved (one from each in turn), each
/// due a microsecond after the one before, committed a thousand at a time. The rows the worker
/// has in flight at once (a few of many accounts, by the per-endpoint bound) then lie near each
/// other in the file and its indexes, as they do in a backlog that built up while receivers
/// were down.
fn fill_in_arrival_order(
    store: &dyn Outbox,
    accounts: &[AccountId],
    per_account: usize,
    body: &EncodedBody,
) {
    const COMMIT: usize = 1000;
    let total = accounts.len() * per_account;
    let first = Timestamp::now()
        .checked_sub(Duration::from_micros(total as u64))
        .expect("a time");
    let mut batch = Vec::with_capacity(COMMIT);
    for i in 0..total {
        let at = first
            .checked_add(Duration::from_micros(i as u64))
            .expect("a time");
        batch.push(pending_result(&accounts[i % accounts.len()], body, at));
        if batch.len() == COMMIT || i + 1 == total {
            store.insert(&batch).expect("fill the outbox");
            batch.clear();
        }
    }
}

/// A new pending result of `account` in the bench's campaign, due at `at`, under a fresh id.
fn pending_result(account: &AccountId, body: &EncodedBody, at: Timestamp) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::generate(),
        account: account.clone(),
        campaign: CampaignId::new(CAMPAIGN),
        body: body.clone(),
        created_at: at,
        next_attempt_at: at,
    }
}

fn sample_body() -> EncodedBody {
    let preferences = preferences("https://crm.acme.example/calls");
    EncodedBody::encode(&sample_call(1), &preferences).expect("encodes")
}

/// The last of the isolation run's accounts: the one whose listener may never answer.
fn isolation_last() -> AccountId {
    AccountId::new(format!("account-{:03}", ACCOUNTS - 1))
}

/// The isolation run's set-up: `ACCOUNTS` accounts configured through `webhooks`, account `i`
/// sending to listener `i` but the last, which sends to `last_listener`, and
/// `scale.per_account` results pending for each in `store`. Answers how many results the
/// accounts but the last have pending.
fn isolation_setup(
    webhooks: &Webhooks,
    store: &dyn Outbox,
    receivers: &Receivers,
    last_listener: usize,
    scale: Scale,
) -> u64 {
    let accounts: Vec<AccountId> = (0..ACCOUNTS)
        .map(|i| AccountId::new(format!("account-{i:03}")))
        .collect();
    for (i, account) in accounts.iter().enumerate() {
        let listener = if i == ACCOUNTS - 1 { last_listener } else { i };
        configure(webhooks, account, &receivers.url(listener));
    }
    fill(store, &accounts, scale.per_account, &sample_body());
    ((ACCOUNTS - 1) * scale.per_account) as u64
}

/// One isolation round: deliveries per second of accounts `0..99` while account 99 sends to
/// `last_url`.
fn isolation_round(
    scratch: &Scratch,
    receivers: &Receivers,
    last_listener: usize,
    scale: Scale,
) -> f64 {
    let path = scratch.outbox("p5");
    let store = Arc::new(SqliteStore::builder(&path).open().expect("open the outbox"));
    let delivered = Delivered::default();
    let webhooks = Webhooks::builder()
        .store(store.clone())
        .policy(loopback_policy())
        .on_event(delivered.sink(Some(isolation_last())))
        .build()
        .expect("webhooks");
    let want = isolation_setup(&webhooks, &*store, receivers, last_listener, scale);

    let rt = runtime(2);
    let dispatcher = HyperDispatcher::builder().policy(loopback_policy()).build();
    let start = Instant::now();
    let worker = webhooks
        .start_tokio(dispatcher, rt.handle())
        .expect("start the worker");
    let end = delivered.wait_for(want, scale.isolation_time);
    let got = delivered.get();
    let elapsed = end.duration_since(start);
    worker.shutdown_blocking(Duration::ZERO).expect("shutdown");
    drop(webhooks);
    drop(store);
    rt.shutdown_timeout(Duration::from_secs(1));
    remove_outbox(&path);
    if got < want {
        eprintln!(
            "p5: only {got} of {want} delivered within {:?}",
            scale.isolation_time
        );
    }
    got as f64 / elapsed.as_secs_f64()
}

/// The isolation run's listeners: 0..100 answer at once; listener 100 (the second value)
/// accepts, reads and never answers. Every account has its own port; account 99 uses port 99
/// in the healthy run and the hanging port in the faulty one.
fn isolation_receivers() -> (Receivers, usize) {
    let mut behaviours = vec![Behaviour::Answer; ACCOUNTS];
    behaviours.push(Behaviour::Hang);
    (Receivers::start(&behaviours, 2), ACCOUNTS)
}

fn p5_isolation(scratch: &Scratch, scale: Scale) -> f64 {
    let (receivers, hang) = isolation_receivers();
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let faulty = isolation_round(scratch, &receivers, hang, scale);
        let healthy = isolation_round(scratch, &receivers, ACCOUNTS - 1, scale);
        eprintln!(
            "p5 round {round}: 99 accounts {faulty:.0}/s beside one that never answers, \
             {healthy:.0}/s beside a healthy one, ratio {:.2}",
            faulty / healthy
        );
        ratios.push(faulty / healthy);
    }
    eprintln!(
        "p5: the never-answering listener read {} requests",
        receivers.count(hang)
    );
    median(&ratios)
}

// ---------------------------------------------------------------------------------------------
// p6: memory with a million pending results

fn p6_rss(scratch: &Scratch, scale: Scale) -> f64 {
    let receivers = Receivers::start(&[Behaviour::Answer; ACCOUNTS], 2);
    let path = scratch.outbox("p6");
    let filled = Instant::now();
    {
        let store = Arc::new(SqliteStore::builder(&path).open().expect("open the outbox"));
        let webhooks = Webhooks::builder()
            .store(store.clone())
            .policy(loopback_policy())
            .build()
            .expect("webhooks");
        let accounts: Vec<AccountId> = (0..ACCOUNTS)
            .map(|i| AccountId::new(format!("account-{i:03}")))
            .collect();
        for (i, account) in accounts.iter().enumerate() {
            configure(&webhooks, account, &receivers.url(i));
        }
        let body = sample_body();
        let per_round = 1_000;
        for _ in 0..P6_PENDING / (ACCOUNTS * per_round) {
            fill(&*store, &accounts, per_round, &body);
        }
        let stats: u64 = accounts
            .iter()
            .map(|a| {
                webhooks
                    .status_blocking(a, None)
                    .expect("status")
                    .stats
                    .pending
            })
            .sum();
        assert_eq!(stats, P6_PENDING as u64);
    }
    eprintln!(
        "p6: {P6_PENDING} pending results stored in {:.1} s; running the worker in a child for {:?}",
        filled.elapsed().as_secs_f64(),
        scale.p6_worker_time
    );
    let exe = std::env::current_exe().expect("the bench binary");
    let output = std::process::Command::new(exe)
        .arg("--p6-child")
        .arg(&path)
        .arg(scale.p6_worker_time.as_secs().to_string())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the p6 child failed: {stdout}");
    remove_outbox(&path);
    let field = |name: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("the child printed no {name}: {stdout}"))
    };
    let peak_kib = field("vmhwm_kib:");
    eprintln!(
        "p6: child delivered {} while holding the rest; peak RSS {:.1} MiB",
        field("delivered:"),
        peak_kib / 1024.0
    );
    peak_kib / 1024.0
}

/// The child: opens the outbox, runs the worker for the given seconds, prints its peak RSS.
fn p6_child(args: &[String]) {
    let path = PathBuf::from(&args[0]);
    let secs: u64 = args[1].parse().expect("seconds");
    let delivered = Delivered::default();
    let store = SqliteStore::builder(&path).open().expect("open the outbox");
    let webhooks = Webhooks::builder()
        .store(store)
        .policy(loopback_policy())
        .on_event(delivered.sink(None))
        .build()
        .expect("webhooks");
    let rt = runtime(2);
    let dispatcher = HyperDispatcher::builder().policy(loopback_policy()).build();
    let worker = webhooks
        .start_tokio(dispatcher, rt.handle())
        .expect("start the worker");
    std::thread::sleep(Duration::from_secs(secs));
    worker
        .shutdown_blocking(Duration::from_secs(5))
        .expect("shutdown");
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/self/status");
    println!("vmhwm_kib: {hwm}");
    println!("delivered: {}", delivered.get());
}

// ---------------------------------------------------------------------------------------------
// p10: many accounts

/// Accounts in p10's two spreads of the same results.
const P10_FEW: usize = 500;
const P10_MANY: usize = 20_000;
/// Threads that configure accounts and store results before a p10 run.
const P10_SETUP_THREADS: usize = 8;

/// p10's figures: the rate over 20,000 accounts over the rate over 500, each store, and the
/// scheduler's CPU time per delivery over 20,000 accounts (`MemoryStore`).
struct P10 {
    memory_ratio: f64,
    scheduler_us_per_delivery: f64,
    /// `None` when the SQLite line was not run.
    sqlite_ratio: Option<f64>,
}

/// One p10 run: deliveries per second from the worker's start to the last delivery, and the
/// scheduler thread's CPU time over the same span.
struct SpreadRun {
    per_s: f64,
    delivered: u64,
    scheduler_cpu: Option<Duration>,
}

impl SpreadRun {
    fn scheduler_us_per_delivery(&self) -> f64 {
        self.scheduler_cpu.map_or(f64::NAN, |cpu| {
            cpu.as_secs_f64() * 1e6 / self.delivered.max(1) as f64
        })
    }
}

fn p10_accounts(scratch: &Scratch, scale: Scale, with_sqlite: bool) -> P10 {
    let receivers = Receivers::start(&[Behaviour::Answer], 2);
    // The full run alternates the two spreads three times; the quick run does each once.
    let rounds = if scale.quick { 1 } else { ROUNDS };
    let n = scale.p10_results;
    let mut memory_ratios = Vec::new();
    let mut scheduler = Vec::new();
    let mut sqlite_ratios = Vec::new();
    // Storing 20,000 accounts' settings takes minutes in SQLite here, and delivering from
    // 20,000 accounts longer still: the SQLite line runs only when named (`--only p10sqlite`).
    let sqlite_rounds = if with_sqlite { rounds } else { 0 };
    let say = |store: &str, round: usize, few: &SpreadRun, many: &SpreadRun| {
        eprintln!(
            "p10 {store} round {round}: {n} results over {P10_FEW} accounts {:.0}/s, over \
             {P10_MANY} {:.0}/s, ratio {:.2}; scheduler CPU {:.1} us per delivery over \
             {P10_FEW}, {:.1} over {P10_MANY}",
            few.per_s,
            many.per_s,
            many.per_s / few.per_s,
            few.scheduler_us_per_delivery(),
            many.scheduler_us_per_delivery(),
        );
    };
    for round in 1..=rounds {
        let few = spread_run(Arc::new(MemoryStore::new()), &receivers, P10_FEW, scale);
        let many = spread_run(Arc::new(MemoryStore::new()), &receivers, P10_MANY, scale);
        say("memory", round, &few, &many);
        memory_ratios.push(many.per_s / few.per_s);
        scheduler.push(many.scheduler_us_per_delivery());
    }
    for round in 1..=sqlite_rounds {
        let open = |name: &str| {
            Arc::new(
                SqliteStore::builder(scratch.outbox(name))
                    .max_pending(P11_MAX_PENDING)
                    .open()
                    .expect("open the outbox"),
            )
        };
        let few = spread_run(open("p10-few"), &receivers, P10_FEW, scale);
        let many = spread_run(open("p10-many"), &receivers, P10_MANY, scale);
        remove_outbox(&scratch.dir.join("p10-few.db"));
        remove_outbox(&scratch.dir.join("p10-many.db"));
        say("sqlite", round, &few, &many);
        sqlite_ratios.push(many.per_s / few.per_s);
    }
    P10 {
        memory_ratio: median(&memory_ratios),
        scheduler_us_per_delivery: median(&scheduler),
        sqlite_ratio: (!sqlite_ratios.is_empty()).then(|| median(&sqlite_ratios)),
    }
}

/// Spreads `scale.p10_results` results evenly over `accounts` accounts stored beforehand in
/// `store`, then starts one worker (`HyperDispatcher` on tokio, p4's limits) and times it from
/// its start to the last delivery.
fn spread_run<S: call_result_webhook::store::Store>(
    store: Arc<S>,
    receivers: &Receivers,
    accounts: usize,
    scale: Scale,
) -> SpreadRun {
    let delivered = Delivered::default();
    let webhooks = Webhooks::builder()
        .store(store.clone())
        .policy(loopback_policy())
        .per_endpoint_concurrency(P4_PER_ENDPOINT)
        .on_event(delivered.sink(None))
        .build()
        .expect("webhooks");
    let ids: Vec<AccountId> = (0..accounts)
        .map(|i| AccountId::new(format!("account-{i:05}")))
        .collect();
    let per_account = scale.p10_results / accounts;
    let body = sample_body();
    let url = receivers.url(0);
    let setup = Instant::now();
    std::thread::scope(|s| {
        for chunk in ids.chunks(accounts.div_ceil(P10_SETUP_THREADS)) {
            let (webhooks, store, url, body) = (&webhooks, &store, &url, &body);
            s.spawn(move || {
                for account in chunk {
                    configure(webhooks, account, url);
                }
                fill(&**store, chunk, per_account, body);
            });
        }
    });
    let want = (per_account * accounts) as u64;
    eprintln!(
        "p10: {accounts} accounts configured and {want} results stored in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let rt = runtime(2);
    let dispatcher = HyperDispatcher::builder().policy(loopback_policy()).build();
    let start = Instant::now();
    let worker = webhooks
        .start_tokio(dispatcher, rt.handle())
        .expect("start the worker");
    let thread = scheduler_thread();
    let cpu_before = thread.as_deref().and_then(thread_cpu);
    let end = delivered.wait_for(want, scale.p10_time);
    let cpu_after = thread.as_deref().and_then(thread_cpu);
    let got = delivered.get();
    let elapsed = end.duration_since(start);
    worker
        .shutdown_blocking(Duration::from_secs(5))
        .expect("shutdown");
    drop(webhooks);
    drop(store);
    rt.shutdown_timeout(Duration::from_secs(1));
    if got < want {
        eprintln!(
            "p10: only {got} of {want} delivered within {:?}",
            scale.p10_time
        );
    }
    let scheduler_cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => {
            eprintln!(
                "p10: scheduler thread CPU {:.2} s (utime+stime, 10 ms ticks), {:.3} s on CPU by \
                 schedstat",
                after.ticks.saturating_sub(before.ticks).as_secs_f64(),
                after.on_cpu.saturating_sub(before.on_cpu).as_secs_f64(),
            );
            Some(after.ticks.saturating_sub(before.ticks))
        }
        _ => {
            eprintln!("p10: no thread named webhook-scheduler found; its CPU is not measured");
            None
        }
    };
    SpreadRun {
        per_s: got as f64 / elapsed.as_secs_f64(),
        delivered: got,
        scheduler_cpu,
    }
}

/// The worker's scheduler thread, once it has named itself (a new thread does so once it
/// runs): looked for for up to a second.
fn scheduler_thread() -> Option<PathBuf> {
    (0..1_000).find_map(|_| {
        named_thread("webhook-scheduler").or_else(|| {
            std::thread::sleep(Duration::from_millis(1));
            None
        })
    })
}

/// The task directory (`/proc/self/task/<tid>`) of this process's thread named `name`; the
/// newest if several are. Linux keeps the first 15 bytes of a thread's name (`comm`).
fn named_thread(name: &str) -> Option<PathBuf> {
    let comm_name = &name.as_bytes()[..name.len().min(15)];
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir("/proc/self/task")
        .ok()?
        .filter_map(|entry| {
            let dir = entry.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            let tid = dir.file_name()?.to_str()?.parse().ok()?;
            (comm.trim_end().as_bytes() == comm_name).then_some((tid, dir))
        })
        .collect();
    if found.len() > 1 {
        eprintln!("{} threads named {name}; measuring the newest", found.len());
    }
    found.sort();
    found.pop().map(|(_, dir)| dir)
}

/// A thread's CPU time so far: `utime + stime` from its `stat` (in clock ticks of 10 ms, the
/// `USER_HZ` of Linux on x86), and its time on a CPU from `schedstat` (nanoseconds).
struct ThreadCpu {
    ticks: Duration,
    on_cpu: Duration,
}

/// Bytes this process has handed to `write`-like calls so far (`wchar` of `/proc/self/io`):
/// files (the outbox's log and database) and sockets alike.
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .and_then(|n| n.trim().parse().ok())
}

fn thread_cpu(task: &Path) -> Option<ThreadCpu> {
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces: the
    // state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let schedstat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    let on_cpu: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(ThreadCpu {
        ticks: Duration::from_millis((utime + stime) * 10),
        on_cpu: Duration::from_nanos(on_cpu),
    })
}

// ---------------------------------------------------------------------------------------------
// p11: the WAL under steady submits

/// High enough that p11 (and p10 on SQLite) is never refused for holding too much, with no
/// worker delivering.
const P11_MAX_PENDING: usize = 100_000_000;
/// How often p11 samples the size of the `-wal` file.
const P11_SAMPLE_EVERY: Duration = Duration::from_millis(2);

struct P11 {
    peak_mib: f64,
    per_s: f64,
}

/// The peak size of the `-wal` file, sampled every [`P11_SAMPLE_EVERY`] from a thread of its
/// own, while `CONCURRENCY` threads submit flat out through `Webhooks::submit_blocking` into a
/// `SqliteStore` with the default settings, its default `wal_limit` (64 MiB) included (no
/// worker: the outbox only grows).
fn p11_wal_peak(scratch: &Scratch, scale: Scale) -> P11 {
    let path = scratch.outbox("p11");
    // `P11_WAL_LIMIT=<bytes>` sets another limit, for comparison: one the log never reaches
    // (`18446744073709551615`) plays the store as it was before the limit.
    let limit: u64 = std::env::var("P11_WAL_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SqliteStore::DEFAULT_WAL_LIMIT);
    let store = Arc::new(
        SqliteStore::builder(&path)
            .max_pending(P11_MAX_PENDING)
            .wal_limit(limit)
            .open()
            .expect("open the outbox"),
    );
    let webhooks = Webhooks::builder()
        .store(store.clone())
        .policy(loopback_policy())
        .build()
        .expect("webhooks");
    let account = AccountId::new("acme");
    configure(&webhooks, &account, "http://127.0.0.1:9/calls");
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let campaign = CampaignId::new(CAMPAIGN);
    let submitted = AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let barrier = Barrier::new(CONCURRENCY + 1);
    let (elapsed, (peak, shrank, samples)) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let (mut peak, mut last, mut shrank, mut samples) = (0u64, 0u64, 0u64, 0u64);
            while !done.load(Ordering::Relaxed) {
                let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
                peak = peak.max(len);
                if len < last {
                    shrank += 1;
                }
                last = len;
                samples += 1;
                std::thread::sleep(P11_SAMPLE_EVERY);
            }
            (peak, shrank, samples)
        });
        let threads: Vec<_> = (0..CONCURRENCY)
            .map(|t| {
                let (barrier, webhooks, account, campaign, submitted) =
                    (&barrier, &webhooks, &account, &campaign, &submitted);
                s.spawn(move || {
                    barrier.wait();
                    let deadline = Instant::now() + scale.p11_time;
                    let mut i = 0;
                    while Instant::now() < deadline {
                        let call = sample_call(t * 100_000_000 + i);
                        let done = webhooks
                            .submit_blocking(account, campaign, call)
                            .expect("submit");
                        assert!(done.is_accepted(), "the switch is on");
                        i += 1;
                    }
                    submitted.fetch_add(i as u64, Ordering::Relaxed);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for t in threads {
            t.join().expect("a submitter");
        }
        let elapsed = start.elapsed();
        done.store(true, Ordering::Relaxed);
        (elapsed, sampler.join().expect("the sampler"))
    });
    let submitted = submitted.load(Ordering::Relaxed);
    let db = std::fs::metadata(&path).map_or(0, |m| m.len());
    let commits = store.transactions_committed();
    let limit = store.wal_limit();
    drop(webhooks);
    drop(store);
    remove_outbox(&path);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "p11: {submitted} submits in {:.1} s ({:.0}/s, {:.1} per commit); -wal peak {:.1} MiB \
         (limit {:.0} MiB) over {samples} samples, reset {shrank} times; database {:.1} MiB",
        elapsed.as_secs_f64(),
        submitted as f64 / elapsed.as_secs_f64(),
        submitted as f64 / commits.max(1) as f64,
        mib(peak),
        mib(limit),
        mib(db),
    );
    P11 {
        peak_mib: mib(peak),
        per_s: submitted as f64 / elapsed.as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------------------------
// p12: delivering from a backlog

/// Accounts a p12 backlog is spread over: enough that, with the default bounds (4 in flight
/// per endpoint, 64 overall), a claim skips the accounts at their bound as a dialer's do.
const P12_ACCOUNTS: usize = 50;

fn p12_accounts() -> Vec<AccountId> {
    (0..P12_ACCOUNTS)
        .map(|i| AccountId::new(format!("account-{i:02}")))
        .collect()
}

/// One p12 run: [`P12_ACCOUNTS`] accounts configured to send to the first receiver, `backlog`
/// results spread evenly over them and stored straight into `store` by `fill` before any
/// worker starts, then one worker with the default bounds (`HyperDispatcher` on tokio), timed
/// from its start to the `sample`-th delivery. Deliveries per second.
fn backlog_run<S: call_result_webhook::store::Store>(
    what: &str,
    store: Arc<S>,
    receivers: &Receivers,
    backlog: usize,
    sample: usize,
    limit: Duration,
    fill: impl FnOnce(&S, &[AccountId], usize),
) -> f64 {
    let delivered = Delivered::default();
    // The default bounds: per_endpoint_concurrency and max_concurrency left alone.
    let webhooks = Webhooks::builder()
        .store(store.clone())
        .policy(loopback_policy())
        .on_event(delivered.sink(None))
        .build()
        .expect("webhooks");
    let accounts = p12_accounts();
    for account in &accounts {
        configure(&webhooks, account, &receivers.url(0));
    }
    let setup = Instant::now();
    fill(&store, &accounts, backlog / P12_ACCOUNTS);
    let stored = setup.elapsed();

    // Where the time goes, not a figure: CPU per delivery of the scheduler thread (claims and
    // next due run on it), of the SQLite writer (none on PostgreSQL) and of the process.
    let process = PathBuf::from("/proc/self");
    let writer = named_thread("outbox-writer");
    let process_before = thread_cpu(&process);
    let written_before = written_bytes();
    let writer_before = writer.as_deref().and_then(thread_cpu);

    let rt = runtime(2);
    let dispatcher = HyperDispatcher::builder().policy(loopback_policy()).build();
    let start = Instant::now();
    let worker = webhooks
        .start_tokio(dispatcher, rt.handle())
        .expect("start the worker");
    let scheduler = scheduler_thread();
    let scheduler_before = scheduler.as_deref().and_then(thread_cpu);
    let end = delivered.wait_for(sample as u64, limit);
    let elapsed = end.duration_since(start);
    let all = delivered.get();
    let got = all.min(sample as u64);
    let written = match (written_before, written_bytes()) {
        (Some(before), Some(after)) => format!("{}", after.saturating_sub(before) / all.max(1)),
        _ => "-".to_owned(),
    };
    let per_delivery = |before: Option<ThreadCpu>, task: Option<&Path>, ticks: bool| {
        let after = task.and_then(thread_cpu);
        match (before, after) {
            (Some(b), Some(a)) => {
                let spent = if ticks {
                    a.ticks.saturating_sub(b.ticks)
                } else {
                    a.on_cpu.saturating_sub(b.on_cpu)
                };
                format!("{:.1}", spent.as_secs_f64() * 1e6 / all.max(1) as f64)
            }
            _ => "-".to_owned(),
        }
    };
    let cpu = format!(
        "CPU per delivery: scheduler {} us, writer {} us, process {} us; the process wrote {written} \
         bytes per delivery",
        per_delivery(scheduler_before, scheduler.as_deref(), false),
        per_delivery(writer_before, writer.as_deref(), false),
        per_delivery(process_before, Some(&process), true),
    );
    worker
        .shutdown_blocking(Duration::from_secs(5))
        .expect("shutdown");
    drop(webhooks);
    drop(store);
    rt.shutdown_timeout(Duration::from_secs(1));
    let rate = got as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{what}: {backlog} pending over {P12_ACCOUNTS} accounts (stored in {:.1} s); the first \
         {got} of {sample} timed delivered in {:.2} s from the worker's start: {rate:.0}/s \
         ({cpu})",
        stored.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    rate
}

/// How a p12 backlog lies in the SQLite file.
#[derive(Clone, Copy)]
enum Layout {
    /// In arrival order, the accounts interleaved ([`fill_in_arrival_order`]): the figure.
    Arrival,
    /// Each account's results in one block, all due at one instant ([`fill`]): the worst case
    /// for the file's locality, printed beside it.
    Blocks,
}

/// The rate with `p12_large` results pending over the rate with `p12_small`, each timed over
/// the first `p12_small` deliveries, on a fresh SQLite file each; the two alternate, three
/// rounds even in the quick run (a quick round takes a few seconds).
fn p12_sqlite_backlog(scratch: &Scratch, scale: Scale, layout: Layout) -> f64 {
    let receivers = Receivers::start(&[Behaviour::Answer], 2);
    let body = sample_body();
    let what = match layout {
        Layout::Arrival => "p12 sqlite",
        Layout::Blocks => "p12 sqlite blocks",
    };
    let run = |backlog: usize| {
        let path = scratch.outbox("p12");
        let store = SqliteStore::builder(&path)
            .max_pending(P11_MAX_PENDING)
            .open()
            .expect("open the outbox");
        let rate = backlog_run(
            what,
            Arc::new(store),
            &receivers,
            backlog,
            scale.p12_small,
            scale.p12_time,
            |store, accounts, per_account| match layout {
                Layout::Arrival => fill_in_arrival_order(store, accounts, per_account, &body),
                Layout::Blocks => fill(store, accounts, per_account, &body),
            },
        );
        remove_outbox(&path);
        rate
    };
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let small = run(scale.p12_small);
        let large = run(scale.p12_large);
        eprintln!(
            "{what} round {round}: {} pending {small:.0}/s, {} pending {large:.0}/s, ratio {:.2}",
            scale.p12_small,
            scale.p12_large,
            large / small
        );
        ratios.push(large / small);
    }
    median(&ratios)
}

// ---------------------------------------------------------------------------------------------
// p7, p8, p9: the fleet outbox on PostgreSQL (feature `postgres`)

/// The PostgreSQL figures. Each round runs on a schema of its own, made fresh for it on the
/// server named by `CALL_RESULT_WEBHOOK_DATABASE_URL` (default
/// `postgres://postgres@127.0.0.1:5432/postgres`) and dropped after it. With no server
/// answering, every PostgreSQL figure reads `not run: no PostgreSQL at ...`.
#[cfg(feature = "postgres")]
mod pg {
    use super::*;

    use call_result_webhook::campaign::WebhookIndicator;
    use call_result_webhook::store::{PostgresStore, PostgresStoreBuilder};

    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
    /// High enough that no round is refused for holding too much: the count is still taken
    /// at every insert, as with the default.
    const MAX_PENDING: usize = 100_000_000;
    /// Rows per `Outbox::insert` in `p7_pg_insert_batch_per_s`.
    const BATCH: usize = 100;
    /// Instances in the fleet of `p8_pg_fleet_vs_single`.
    const FLEET: usize = 3;

    /// The figures' names, in the order they are printed.
    const NAMES: [(&str, &str); 10] = [
        ("p5pg", "p5_pg_fleet_blackhole_vs_clean"),
        ("p7", "p7_pg_submit_per_s"),
        ("p7", "p7_pg_submit_p99_ms"),
        ("p7", "p7_pg_insert_batch_per_s"),
        ("p8", "p8_pg_end_to_end_per_s"),
        ("p8", "p8_pg_fleet_vs_single"),
        ("p9", "p9_pg_wakeup_p99_ms"),
        ("p12pg", "p12_pg_backlog_100k_vs_10k"),
        ("p12pg", "p12_pg_backlog_1m_per_s"),
        ("p12pg", "p12_pg_aged_vs_fresh"),
    ];

    /// Runs the wanted PostgreSQL figures and appends them to `figures`.
    pub(super) fn run(
        wanted: &dyn Fn(&str) -> bool,
        scratch: &Scratch,
        scale: Scale,
        figures: &mut Vec<(&'static str, String)>,
    ) {
        let url = std::env::var("CALL_RESULT_WEBHOOK_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_URL.to_owned());
        if let Err(e) = simple_query(&url, "SELECT 1") {
            eprintln!(
                "p7-p9: no PostgreSQL server answers at {}: {e}",
                shown(&url)
            );
            for (figure, name) in NAMES {
                if wanted(figure)
                    || (figure == "p12pg" && wanted("p12"))
                    || (figure == "p5pg" && wanted("p5"))
                {
                    figures.push((name, format!("not run: no PostgreSQL at {}", shown(&url))));
                }
            }
            return;
        }
        if let Ok(row) = simple_query(
            &url,
            "SELECT current_setting('server_version'), current_setting('fsync'), \
             current_setting('synchronous_commit'), current_setting('wal_sync_method'), \
             current_setting('commit_delay')",
        ) {
            eprintln!(
                "p7-p9: PostgreSQL {} at {}: fsync {}, synchronous_commit {}, wal_sync_method {}, \
                 commit_delay {}",
                row[0],
                shown(&url),
                row[1],
                row[2],
                row[3],
                row[4]
            );
        }
        if wanted("p5") || wanted("p5pg") {
            let ratio = p5_fleet(&url, scale);
            figures.push(("p5_pg_fleet_blackhole_vs_clean", format!("{ratio:.2}")));
        }
        if wanted("p7") {
            let submit = p7_submit(&url, scratch, scale);
            figures.push(("p7_pg_submit_per_s", format!("{:.0}", submit.per_s)));
            figures.push(("p7_pg_submit_p99_ms", format!("{:.2}", submit.p99_ms())));
            let batch = p7_insert_batch(&url, scale);
            figures.push(("p7_pg_insert_batch_per_s", format!("{batch:.0}")));
        }
        let receivers = Receivers::start(&[Behaviour::Answer], 2);
        if wanted("p8") {
            let (single, ratio) = p8_fleet(&url, &receivers, scale);
            figures.push(("p8_pg_end_to_end_per_s", format!("{single:.0}")));
            figures.push(("p8_pg_fleet_vs_single", format!("{ratio:.2}")));
        }
        if wanted("p9") {
            let p99 = p9_wakeup(&url, &receivers, scale);
            figures.push((
                "p9_pg_wakeup_p99_ms",
                format!("{:.2}", p99.as_secs_f64() * 1e3),
            ));
        }
        if wanted("p12") || wanted("p12pg") {
            let (ratio, huge, aged) = p12_backlog(&url, &receivers, scale);
            figures.extend([
                ("p12_pg_backlog_100k_vs_10k", format!("{ratio:.2}")),
                ("p12_pg_backlog_1m_per_s", format!("{huge:.0}")),
                ("p12_pg_aged_vs_fresh", format!("{aged:.2}")),
            ]);
        }
    }

    /// `url` without its password.
    fn shown(url: &str) -> String {
        match url::Url::parse(url) {
            Ok(mut parsed) => {
                if parsed.password().is_some() {
                    let _ = parsed.set_password(Some("***"));
                }
                parsed.to_string()
            }
            Err(_) => "the server in CALL_RESULT_WEBHOOK_DATABASE_URL".to_owned(),
        }
    }

    /// Runs `sql` on a connection of its own and answers the first row's columns as text
    /// (empty for a statement that returns none).
    fn simple_query(url: &str, sql: &str) -> Result<Vec<String>, String> {
        let work = async {
            let (client, connection) = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_postgres::connect(url, tokio_postgres::NoTls),
            )
            .await
            .map_err(|_| "timed out connecting".to_owned())?
            .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let messages = client.simple_query(sql).await.map_err(|e| e.to_string())?;
            Ok(messages
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).unwrap_or("").to_owned())
                            .collect(),
                    ),
                    _ => None,
                })
                .unwrap_or_default())
        };
        // A runtime of its own on a thread of its own: callers may be anywhere.
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(work)
            })
            .join()
            .expect("the query's thread")
        })
    }

    /// A fresh schema on the server, dropped with the value.
    struct Schema {
        url: String,
        name: String,
    }

    impl Schema {
        fn new(url: &str, figure: &str) -> Schema {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos() as u64;
            Schema {
                url: url.to_owned(),
                name: format!("crwh_bench_{figure}_{nanos:016x}"),
            }
        }

        fn builder(&self) -> PostgresStoreBuilder {
            PostgresStore::builder(self.url.clone())
                .schema(self.name.clone())
                .max_pending(MAX_PENDING)
        }

        /// A store on this schema with the default pool (creating the schema on first open).
        fn store(&self) -> PostgresStore {
            self.builder()
                .open_blocking()
                .expect("open the PostgreSQL outbox")
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
            if let Err(e) = simple_query(&self.url, &sql) {
                eprintln!("could not drop the bench schema {}: {e}", self.name);
            }
        }
    }

    /// The server's WAL flushes so far (`pg_stat_wal.wal_sync`, the whole server's). Backends
    /// report their counts when they end or go idle, so read this after the store's
    /// connections closed.
    #[derive(Debug, Clone, Copy, Default)]
    struct ServerCounts {
        wal_syncs: i64,
    }

    impl ServerCounts {
        fn read(url: &str) -> ServerCounts {
            let row = simple_query(url, "SELECT wal_sync FROM pg_stat_wal").unwrap_or_default();
            ServerCounts {
                wal_syncs: row.first().and_then(|v| v.parse().ok()).unwrap_or(0),
            }
        }

        fn since(self, before: ServerCounts) -> ServerCounts {
            ServerCounts {
                wal_syncs: self.wal_syncs - before.wal_syncs,
            }
        }
    }

    /// Lets the closed connections' backends end and report their counts.
    fn settle() {
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Pending deliveries in the schema, as its counters hold them.
    fn pending(schema: &Schema) -> i64 {
        simple_query(
            &schema.url,
            &format!(
                "SELECT (SELECT coalesce(sum(pending), 0) FROM {s}.stats) \
                 + (SELECT coalesce(sum(pending), 0) FROM {s}.stats_deltas)",
                s = schema.name
            ),
        )
        .ok()
        .and_then(|row| row.first().and_then(|v| v.parse().ok()))
        .unwrap_or(-1)
    }

    // -----------------------------------------------------------------------------------------
    // p7: submitting into the shared outbox

    /// One round of `CONCURRENCY` submitters through `Webhooks::submit_blocking` into a fresh
    /// schema, no worker running, over `accounts` distinct accounts; the store's pool is
    /// `pool_size` connections.
    fn p7_round(
        url: &str,
        scale: Scale,
        accounts: usize,
        pool_size: usize,
    ) -> (SubmitRound, ServerCounts) {
        let schema = Schema::new(url, "p7");
        let store = schema
            .builder()
            .pool_size(pool_size)
            .open_blocking()
            .expect("open the PostgreSQL outbox");
        let webhooks = Webhooks::builder()
            .store(store)
            .policy(loopback_policy())
            .build()
            .expect("webhooks");
        let ids: Vec<AccountId> = (0..accounts)
            .map(|i| AccountId::new(format!("account-{i:02}")))
            .collect();
        for account in &ids {
            configure(&webhooks, account, "http://127.0.0.1:9/calls");
        }
        settle();
        let before = ServerCounts::read(url);
        let r = submit_round(&webhooks, &ids, scale.submits, scale.submit_time, None);
        drop(webhooks);
        settle();
        let counts = ServerCounts::read(url).since(before);
        let stored = pending(&schema);
        assert_eq!(
            stored, r.submitted as i64,
            "every accepted submit is stored"
        );
        (r, counts)
    }

    fn describe(r: &SubmitRound, counts: ServerCounts) -> String {
        format!(
            "{:.0} submits/s, p99 {:.2} ms ({} submits, one transaction each; {} WAL flushes \
             on the server: {:.2} submits per flush, {:.2} ms of the round per flush)",
            r.per_s,
            r.p99_ms(),
            r.submitted,
            counts.wal_syncs,
            r.submitted as f64 / counts.wal_syncs.max(1) as f64,
            r.submitted as f64 / r.per_s / counts.wal_syncs.max(1) as f64 * 1e3,
        )
    }

    fn p7_submit(url: &str, scratch: &Scratch, scale: Scale) -> SubmitRound {
        let (p50, p99) = fdatasync_times(&scratch.dir);
        eprintln!(
            "p7 disk (the bench's scratch directory): fdatasync of 4 KiB takes {:.2} ms (p50), \
             {:.2} ms (p99)",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        let pool = PostgresStore::DEFAULT_POOL_SIZE;
        let mut rounds = Vec::new();
        for round in 1..=ROUNDS {
            let (r, counts) = p7_round(url, scale, 1, pool);
            eprintln!(
                "p7 pg submit round {round} (one account, pool of {pool}): {}",
                describe(&r, counts)
            );
            rounds.push(r);
        }
        // Not figures: what the rate is held to. Sixteen accounts take the counter row of one
        // (account, campaign) out of the way; a pool of sixteen gives every submitter its own
        // connection.
        let (r, counts) = p7_round(url, scale, CONCURRENCY, pool);
        eprintln!(
            "p7 pg submit, {CONCURRENCY} accounts (pool of {pool}), not a figure: {}",
            describe(&r, counts)
        );
        let (r, counts) = p7_round(url, scale, CONCURRENCY, CONCURRENCY);
        eprintln!(
            "p7 pg submit, {CONCURRENCY} accounts, pool of {CONCURRENCY}, not a figure: {}",
            describe(&r, counts)
        );
        SubmitRound {
            submitted: rounds.iter().map(|r| r.submitted).sum(),
            per_s: median(&rounds.iter().map(|r| r.per_s).collect::<Vec<_>>()),
            p99: Duration::from_secs_f64(median(
                &rounds
                    .iter()
                    .map(|r| r.p99.as_secs_f64())
                    .collect::<Vec<_>>(),
            )),
        }
    }

    /// `Outbox::insert` with batches of [`BATCH`] from `CONCURRENCY` threads for
    /// `scale.submit_time`, one account; deliveries stored per second.
    fn p7_insert_batch_round(url: &str, scale: Scale) -> (f64, Duration, ServerCounts) {
        let schema = Schema::new(url, "p7b");
        let store = schema.store();
        let body = sample_body();
        let account = AccountId::new("acme");
        let campaign = CampaignId::new(CAMPAIGN);
        settle();
        let before = ServerCounts::read(url);
        let barrier = Barrier::new(CONCURRENCY + 1);
        let mut latencies = Vec::new();
        let elapsed = std::thread::scope(|s| {
            let threads: Vec<_> = (0..CONCURRENCY)
                .map(|_| {
                    let (store, body, barrier) = (&store, &body, &barrier);
                    let (account, campaign) = (&account, &campaign);
                    s.spawn(move || {
                        let batch = || -> Vec<NewDelivery> {
                            let now = Timestamp::now();
                            (0..BATCH)
                                .map(|_| NewDelivery {
                                    id: DeliveryId::generate(),
                                    account: account.clone(),
                                    campaign: campaign.clone(),
                                    body: body.clone(),
                                    created_at: now,
                                    next_attempt_at: now,
                                })
                                .collect()
                        };
                        let mut took = Vec::new();
                        let mut next = batch();
                        barrier.wait();
                        let deadline = Instant::now() + scale.submit_time;
                        while Instant::now() < deadline {
                            let began = Instant::now();
                            store.insert(&next).expect("insert a batch");
                            took.push(began.elapsed());
                            next = batch();
                        }
                        took
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            for t in threads {
                latencies.extend(t.join().expect("an inserter"));
            }
            start.elapsed()
        });
        drop(store);
        settle();
        let counts = ServerCounts::read(url).since(before);
        let stored = latencies.len() * BATCH;
        assert_eq!(pending(&schema), stored as i64, "every batch is stored");
        (
            stored as f64 / elapsed.as_secs_f64(),
            quantile(&mut latencies, 0.99),
            counts,
        )
    }

    fn p7_insert_batch(url: &str, scale: Scale) -> f64 {
        let mut rates = Vec::new();
        for round in 1..=ROUNDS {
            let (rate, p99, counts) = p7_insert_batch_round(url, scale);
            eprintln!(
                "p7 pg insert batches of {BATCH} round {round}: {rate:.0} deliveries/s, p99 of one \
                 batch {:.2} ms ({} WAL flushes on the server)",
                p99.as_secs_f64() * 1e3,
                counts.wal_syncs
            );
            rates.push(rate);
        }
        median(&rates)
    }

    // -----------------------------------------------------------------------------------------
    // p8: delivering from the shared outbox, one instance and three

    /// A store on `schema` and a `Webhooks` on it without a worker, to configure accounts and
    /// store results before a round starts.
    fn setup_view(schema: &Schema) -> (Arc<PostgresStore>, Webhooks) {
        let store = Arc::new(schema.store());
        let webhooks = Webhooks::builder()
            .store(store.clone())
            .policy(loopback_policy())
            .build()
            .expect("webhooks");
        (store, webhooks)
    }

    /// Stores `n` results for `account` in a fresh schema, configured to send to `url`, in
    /// batches of a thousand, before any worker starts.
    fn prefill(schema: &Schema, account: &AccountId, url: &str, n: usize) {
        let (store, webhooks) = setup_view(schema);
        configure(&webhooks, account, url);
        let body = sample_body();
        let now = Timestamp::now();
        let mut left = n;
        while left > 0 {
            let batch: Vec<NewDelivery> = (0..left.min(1_000))
                .map(|_| pending_result(account, &body, now))
                .collect();
            store.insert(&batch).expect("prefill the outbox");
            left -= batch.len();
        }
    }

    /// One instance of a fleet: its own store on the schema, its own worker on a runtime of
    /// its own.
    struct Instance {
        webhooks: Webhooks,
        runtime: tokio::runtime::Runtime,
        worker: Option<call_result_webhook::Worker>,
    }

    impl Instance {
        fn new(schema: &Schema, sink: impl Fn(&Event) + Send + Sync + 'static) -> Instance {
            Instance::with_bound(schema, sink, Some(P4_PER_ENDPOINT))
        }

        /// With `per_endpoint_concurrency(bound)`, or the default bound when `None`.
        fn with_bound(
            schema: &Schema,
            sink: impl Fn(&Event) + Send + Sync + 'static,
            bound: Option<usize>,
        ) -> Instance {
            let mut builder = Webhooks::builder()
                .store(schema.store())
                .policy(loopback_policy())
                .on_event(sink);
            if let Some(bound) = bound {
                builder = builder.per_endpoint_concurrency(bound);
            }
            let webhooks = builder.build().expect("webhooks");
            Instance {
                webhooks,
                runtime: runtime(2),
                worker: None,
            }
        }

        fn start(&mut self) {
            let dispatcher = HyperDispatcher::builder().policy(loopback_policy()).build();
            self.worker = Some(
                self.webhooks
                    .start_tokio(dispatcher, self.runtime.handle())
                    .expect("start the worker"),
            );
        }

        fn stop(self) {
            self.stop_within(Duration::from_secs(5));
        }

        /// Stops, letting the attempts in flight finish within `grace`.
        fn stop_within(mut self, grace: Duration) {
            if let Some(worker) = self.worker.take() {
                worker.shutdown_blocking(grace).expect("shutdown");
            }
            drop(self.webhooks);
            self.runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }

    /// Deliveries per second of `instances` instances working off `scale.end_to_end`
    /// results stored beforehand in a fresh schema, from the first worker's start to the last
    /// `AttemptSucceeded`.
    fn p8_round(url: &str, receivers: &Receivers, scale: Scale, instances: usize) -> f64 {
        let schema = Schema::new(url, "p8");
        let account = AccountId::new("acme");
        let n = scale.end_to_end;
        prefill(&schema, &account, &receivers.url(0), n);
        let delivered = Delivered::default();
        let each: Vec<Delivered> = (0..instances).map(|_| Delivered::default()).collect();
        let mut fleet: Vec<Instance> = each
            .iter()
            .map(|mine| {
                let (all, mine) = (delivered.sink(None), mine.sink(None));
                Instance::new(&schema, move |e: &Event| {
                    all(e);
                    mine(e);
                })
            })
            .collect();
        let before = receivers.total();
        settle();
        let wal_before = ServerCounts::read(url);
        let start = Instant::now();
        for instance in &mut fleet {
            instance.start();
        }
        let end = delivered.wait_for(n as u64, scale.end_to_end_time);
        let elapsed = end.duration_since(start);
        let got = delivered.get();
        for instance in fleet {
            instance.stop();
        }
        settle();
        let flushes = ServerCounts::read(url).since(wal_before).wal_syncs;
        let shares: Vec<u64> = each.iter().map(Delivered::get).collect();
        eprintln!(
            "p8 pg {instances} instance(s): {got} of {n} delivered in {:.2} s, {:.0}/s (by \
             instance: {shares:?}; receiver read {}; {flushes} WAL flushes on the server, {:.1} \
             deliveries per flush)",
            elapsed.as_secs_f64(),
            got as f64 / elapsed.as_secs_f64(),
            receivers.total() - before,
            got as f64 / flushes.max(1) as f64
        );
        got as f64 / elapsed.as_secs_f64()
    }

    /// One instance's rate (the median round), and three instances' over one's (the median
    /// of the rounds' ratios); one and three alternate.
    fn p8_fleet(url: &str, receivers: &Receivers, scale: Scale) -> (f64, f64) {
        let (mut singles, mut ratios) = (Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            let one = p8_round(url, receivers, scale, 1);
            let three = p8_round(url, receivers, scale, FLEET);
            eprintln!(
                "p8 pg round {round}: one instance {one:.0}/s, {FLEET} instances {three:.0}/s, \
                 ratio {:.2}",
                three / one
            );
            singles.push(one);
            ratios.push(three / one);
        }
        (median(&singles), median(&ratios))
    }

    // -----------------------------------------------------------------------------------------
    // p5 on PostgreSQL: one endpoint that never answers among a hundred, in a fleet

    /// One fleet isolation round on a fresh schema: deliveries per second of accounts `0..99`
    /// through `FLEET` instances with the default per-endpoint bound, while account 99 sends
    /// to `last_listener`; from the first worker's start to the last of them delivered.
    fn p5_round(url: &str, receivers: &Receivers, last_listener: usize, scale: Scale) -> f64 {
        let schema = Schema::new(url, "p5");
        let want = {
            let (store, webhooks) = setup_view(&schema);
            isolation_setup(&webhooks, &*store, receivers, last_listener, scale)
        };
        let delivered = Delivered::default();
        let mut fleet: Vec<Instance> = (0..FLEET)
            .map(|_| Instance::with_bound(&schema, delivered.sink(Some(isolation_last())), None))
            .collect();
        settle();
        // A fleet on a shared server is slower than one process on a file: room for it.
        let limit = scale.isolation_time * 4;
        let start = Instant::now();
        for instance in &mut fleet {
            instance.start();
        }
        let end = delivered.wait_for(want, limit);
        let got = delivered.get();
        let elapsed = end.duration_since(start);
        for instance in fleet {
            instance.stop_within(Duration::ZERO);
        }
        if got < want {
            eprintln!("p5 pg: only {got} of {want} delivered within {limit:?}");
        }
        got as f64 / elapsed.as_secs_f64()
    }

    /// `FLEET` instances on one schema, a hundred accounts: the other 99's rate beside one
    /// endpoint that never answers over their rate beside a healthy one, the two alternating;
    /// the median of the rounds' ratios.
    fn p5_fleet(url: &str, scale: Scale) -> f64 {
        let (receivers, hang) = isolation_receivers();
        let rounds = if scale.quick { 1 } else { ROUNDS };
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            let faulty = p5_round(url, &receivers, hang, scale);
            let healthy = p5_round(url, &receivers, ACCOUNTS - 1, scale);
            eprintln!(
                "p5 pg round {round}: {FLEET} instances, 99 accounts {faulty:.0}/s beside one \
                 that never answers, {healthy:.0}/s beside a healthy one, ratio {:.2}",
                faulty / healthy
            );
            ratios.push(faulty / healthy);
        }
        eprintln!(
            "p5 pg: the never-answering listener read {} requests",
            receivers.count(hang)
        );
        median(&ratios)
    }

    // -----------------------------------------------------------------------------------------
    // p9: waking an idle fleet

    /// On an idle fleet (two instances with workers, one submitting instance without), from
    /// the start of each submit to its request read by the receiver; the 99th percentile.
    fn p9_wakeup(url: &str, receivers: &Receivers, scale: Scale) -> Duration {
        let samples = if scale.quick { 100 } else { 300 };
        let schema = Schema::new(url, "p9");
        let account = AccountId::new("acme");
        let campaign = CampaignId::new(CAMPAIGN);
        let submitter = Webhooks::builder()
            .store(schema.store())
            .policy(loopback_policy())
            .build()
            .expect("webhooks");
        configure(&submitter, &account, &receivers.url(0));
        let each = [Delivered::default(), Delivered::default()];
        let mut workers: Vec<Instance> = each
            .iter()
            .map(|d| Instance::new(&schema, d.sink(None)))
            .collect();
        for w in &mut workers {
            assert_eq!(
                w.webhooks.indicator(&account, Some(&campaign)),
                WebhookIndicator::Active,
                "an instance built after the settings were saved has them"
            );
            w.start();
        }
        // Pauses of 50 to 150 ms, spread so that they fall anywhere in the workers' 1 s poll.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut pause = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            Duration::from_millis(50 + (seed >> 33) % 101)
        };
        let wait_for_one = |before: u64, sent: Instant| -> Option<Duration> {
            while receivers.count(0) <= before {
                if sent.elapsed() > Duration::from_secs(5) {
                    return None;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            Some(sent.elapsed())
        };
        // Warm-up, not counted: each worker opens its connection to the receiver.
        for n in 0..4 {
            std::thread::sleep(pause());
            let before = receivers.count(0);
            let sent = Instant::now();
            let submitted = submitter
                .submit_blocking(&account, &campaign, sample_call(n))
                .expect("submit");
            assert!(submitted.is_accepted(), "the switches are on");
            wait_for_one(before, sent);
        }
        let mut latencies = Vec::with_capacity(samples);
        let mut submits = Vec::with_capacity(samples);
        let mut missed = 0;
        for n in 0..samples {
            std::thread::sleep(pause());
            let before = receivers.count(0);
            let sent = Instant::now();
            let submitted = submitter
                .submit_blocking(&account, &campaign, sample_call(n))
                .expect("submit");
            submits.push(sent.elapsed());
            assert!(submitted.is_accepted(), "the switches are on");
            match wait_for_one(before, sent) {
                Some(took) => latencies.push(took),
                None => missed += 1,
            }
        }
        for w in workers {
            w.stop();
        }
        drop(submitter);
        let p50 = quantile(&mut latencies, 0.5);
        let max = latencies.last().copied().unwrap_or_default();
        let p99 = quantile(&mut latencies, 0.99);
        let submit_p50 = quantile(&mut submits, 0.5);
        eprintln!(
            "p9 pg wake-up, {} submits one at a time 50 to 150 ms apart: submit to first \
             attempt p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (the submit itself: p50 {:.2} \
             ms); attempts by instance {:?}; {missed} not seen within 5 s",
            latencies.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            submit_p50.as_secs_f64() * 1e3,
            each.iter().map(Delivered::get).collect::<Vec<_>>(),
        );
        if missed > 0 {
            // A missed wake-up counts as the longest wait there is, not as nothing.
            return Duration::from_secs(5);
        }
        p99
    }

    // -----------------------------------------------------------------------------------------
    // p12: delivering from a backlog

    /// Rows per `Outbox::insert` when a p12 backlog is stored, and threads storing them.
    const FILL_BATCH: usize = 5_000;
    const FILL_THREADS: usize = 4;
    /// Results inserted, claimed and delivered per step when a schema is aged.
    const AGE_STEP: usize = 10_000;

    /// Stores `per_account` results for each account in batches of [`FILL_BATCH`] through
    /// `Outbox::insert`, from [`FILL_THREADS`] threads, each its share of the accounts.
    fn fill_batched(store: &PostgresStore, accounts: &[AccountId], per_account: usize) {
        let body = sample_body();
        std::thread::scope(|s| {
            for chunk in accounts.chunks(accounts.len().div_ceil(FILL_THREADS)) {
                let body = &body;
                s.spawn(move || {
                    let now = Timestamp::now();
                    for account in chunk {
                        let mut left = per_account;
                        while left > 0 {
                            let batch: Vec<NewDelivery> = (0..left.min(FILL_BATCH))
                                .map(|_| pending_result(account, body, now))
                                .collect();
                            store.insert(&batch).expect("fill the outbox");
                            left -= batch.len();
                        }
                    }
                });
            }
        });
    }

    /// One p12 run on a fresh schema (aged first by [`age`] when `aged` is more than 0).
    fn pg_backlog_run(
        url: &str,
        receivers: &Receivers,
        what: &str,
        aged: usize,
        backlog: usize,
        sample: usize,
        limit: Duration,
    ) -> f64 {
        let schema = Schema::new(url, "p12");
        let store = schema.store();
        if aged > 0 {
            age(&schema, &store, aged);
        }
        backlog_run(
            what,
            Arc::new(store),
            receivers,
            backlog,
            sample,
            limit,
            fill_batched,
        )
    }

    /// Ages a schema as `n` deliveries would, [`AGE_STEP`] at a time: each step stores its
    /// results through `Outbox::insert` (the store's own statement), claims them with the
    /// store's claim (`lease_until` and a `claim_token` from the schema's sequence, earliest
    /// first), then removes them as the store records a delivery: the row deleted, its id
    /// kept in `delivered_ids`, the counters moved from pending to delivered. Batched, so a
    /// million take a minute rather than the hours of a real run.
    ///
    /// Vacuum: on a server running autovacuum, it runs whenever it decides to. On one with
    /// autovacuum off (this bench's server, for its tests), each step ends by vacuuming
    /// (`VACUUM (ANALYZE)`) every table of the schema that default autovacuum would pick:
    /// more dead rows than 50 + 20% of its live ones, or more inserts since its last vacuum
    /// than 1,000 + 20%; the count is printed.
    fn age(schema: &Schema, store: &PostgresStore, n: usize) {
        let s = &schema.name;
        let autovacuum = simple_query(&schema.url, "SELECT current_setting('autovacuum')")
            .ok()
            .and_then(|row| row.first().cloned())
            .unwrap_or_default();
        let emulate = autovacuum != "on";
        let due_for_vacuum = format!(
            "SELECT relname::text FROM pg_stat_user_tables WHERE schemaname = '{s}' \
             AND (n_dead_tup > 50 + 0.2 * n_live_tup \
             OR n_ins_since_vacuum > 1000 + 0.2 * n_live_tup)"
        );
        let mut vacuums = 0;
        let claim = format!(
            "WITH c AS MATERIALIZED (SELECT id FROM {s}.deliveries \
             WHERE next_attempt_at <= $1::bigint AND state = 'pending' \
             AND (lease_until IS NULL OR lease_until <= $1::bigint) \
             ORDER BY next_attempt_at LIMIT $2::bigint FOR UPDATE SKIP LOCKED) \
             UPDATE {s}.deliveries d SET lease_until = $3::bigint, \
             claim_token = nextval('{s}.claim_tokens') \
             WHERE d.id = ANY (ARRAY (SELECT id FROM c)) RETURNING d.id"
        );
        let deliver = format!(
            "WITH d AS (DELETE FROM {s}.deliveries WHERE id = ANY($1::text[]) \
             AND state = 'pending' RETURNING id, account, campaign), \
             r AS (INSERT INTO {s}.delivered_ids AS x (id, delivered_at) \
             SELECT id, $2::bigint FROM d ON CONFLICT (id) DO UPDATE \
             SET delivered_at = greatest(x.delivered_at, excluded.delivered_at)), \
             st AS (INSERT INTO {s}.stats AS t (account, campaign, pending, delivered, \
             last_success_at) SELECT account, campaign, -count(*), count(*), $2::bigint \
             FROM d GROUP BY account, campaign ORDER BY account, campaign \
             ON CONFLICT (account, campaign) DO UPDATE SET \
             pending = t.pending + excluded.pending, delivered = t.delivered + excluded.delivered, \
             last_success_at = greatest(t.last_success_at, excluded.last_success_at)) \
             SELECT count(*) FROM d"
        );
        let accounts = p12_accounts();
        let started = Instant::now();
        let work = async {
            let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
                .await
                .expect("connect to age the schema");
            tokio::spawn(connection);
            let mut done = 0;
            while done < n {
                let step = AGE_STEP.min(n - done);
                fill_batched(store, &accounts, step / accounts.len());
                let nanos = |t: Timestamp| t.as_nanosecond() as i64;
                let now = nanos(Timestamp::now());
                let rows = client
                    .query(&claim, &[&now, &(step as i64), &(now + 60_000_000_000)])
                    .await
                    .expect("claim while ageing");
                let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                assert!(!ids.is_empty(), "the rows just stored are claimed");
                let removed: i64 = client
                    .query_one(&deliver, &[&ids, &nanos(Timestamp::now())])
                    .await
                    .expect("deliver while ageing")
                    .get(0);
                assert_eq!(removed as usize, ids.len(), "every claimed row is removed");
                done += ids.len();
                if emulate {
                    // Backends report their counts at most once a second: a step's may be
                    // seen a step late, as autovacuum sees them up to a minute late.
                    for row in client
                        .query(&due_for_vacuum, &[])
                        .await
                        .expect("read the tables' counts")
                    {
                        let table: String = row.get(0);
                        client
                            .batch_execute(&format!("VACUUM (ANALYZE) {s}.{table}"))
                            .await
                            .expect("vacuum while ageing");
                        vacuums += 1;
                    }
                }
            }
        };
        // The inserts block on the store's own runtime: this client runs on a runtime of its
        // own, on a thread of its own.
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(work)
            })
            .join()
            .expect("the ageing thread")
        });
        let sizes = simple_query(
            &schema.url,
            &format!(
                "SELECT pg_size_pretty(pg_total_relation_size('{s}.deliveries')), \
                 pg_size_pretty(pg_total_relation_size('{s}.delivered_ids')), \
                 (SELECT n_dead_tup FROM pg_stat_user_tables \
                  WHERE schemaname = '{s}' AND relname = 'deliveries'), \
                 (SELECT autovacuum_count FROM pg_stat_user_tables \
                  WHERE schemaname = '{s}' AND relname = 'deliveries'), \
                 current_setting('autovacuum')"
            ),
        )
        .unwrap_or_default();
        let vacuumed = if emulate {
            format!("{vacuums} VACUUM (ANALYZE) where default autovacuum would")
        } else {
            "autovacuum left to itself".to_owned()
        };
        eprintln!(
            "p12 pg: schema aged by {n} deliveries in {:.1} s (steps of {AGE_STEP}: insert, \
             claim, delete with delivered_ids and counters; server autovacuum {autovacuum}: \
             {vacuumed}); deliveries {}, delivered_ids {}, dead rows in deliveries {}, \
             autovacuums of deliveries {} (autovacuum {})",
            started.elapsed().as_secs_f64(),
            sizes.first().map_or("?", String::as_str),
            sizes.get(1).map_or("?", String::as_str),
            sizes.get(2).map_or("?", String::as_str),
            sizes.get(3).map_or("?", String::as_str),
            sizes.get(4).map_or("?", String::as_str),
        );
    }

    /// p12's PostgreSQL figures: the backlog ratio (rounds alternate the two backlogs, each
    /// on a fresh schema), the rate over a million pending, and an aged schema's rate over a
    /// fresh one's; one instance each.
    fn p12_backlog(url: &str, receivers: &Receivers, scale: Scale) -> (f64, f64, f64) {
        let rounds = if scale.quick { 1 } else { ROUNDS };
        let (small, large, limit) = (scale.p12_small, scale.p12_large, scale.p12_time);
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            let few = pg_backlog_run(url, receivers, "p12 pg", 0, small, small, limit);
            let many = pg_backlog_run(url, receivers, "p12 pg", 0, large, small, limit);
            eprintln!(
                "p12 pg round {round}: {small} pending {few:.0}/s, {large} pending {many:.0}/s, \
                 ratio {:.2}",
                many / few
            );
            ratios.push(many / few);
        }
        let (huge, sample) = (scale.p12_pg_huge, scale.p12_pg_huge_sample);
        let huge_rate = pg_backlog_run(url, receivers, "p12 pg huge", 0, huge, sample, limit);
        eprintln!(
            "p12 pg: {huge} pending, one instance: {huge_rate:.0}/s, timed over the first \
             {sample} deliveries or as many as were made within {limit:?} (the line above)"
        );
        let fresh = pg_backlog_run(url, receivers, "p12 pg fresh", 0, small, small, limit);
        let aged_n = scale.p12_pg_aged;
        let aged = pg_backlog_run(url, receivers, "p12 pg aged", aged_n, small, small, limit);
        eprintln!(
            "p12 pg: {small} pending on a fresh schema {fresh:.0}/s, on one aged by {aged_n} \
             deliveries {aged:.0}/s, ratio {:.2}",
            aged / fresh
        );
        (median(&ratios), huge_rate, aged / fresh)
    }
}
