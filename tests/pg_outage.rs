//! PostgreSQL as it really behaves: restarted, its connections cut by an administrator,
//! frozen, failing a statement. Each test runs on a PostgreSQL cluster of its own
//! (`pg_cluster::Cluster`: created, used and dropped; the shared server is never touched),
//! except the last, which only breaks a table of its own schema on the shared server.
//!
//! - A fast restart while three `dialer` processes each submit 50 call results a second: no
//!   process exits before its input ends, every line is acknowledged, every acknowledged
//!   result is delivered, and each process exits 0.
//! - The same across two rounds of `pg_terminate_backend` on every connection.
//! - A submit to a frozen server (its processes stopped with SIGSTOP) answers
//!   `Error::StoreTimeout` for `call_timeout` within the bound and a small margin.
//! - A server error reaches the dialer's stderr with its SQLSTATE and the server's text.
//!
//! The `dialer` example is not rebuilt by `cargo test --test pg_outage`: run
//! `cargo build --all-features --examples` first. Without the cluster tools
//! (`pg_createcluster`) or a server, a test says NOT RUN and passes, unless
//! `CALL_RESULT_WEBHOOK_REQUIRE_DATABASE` is set.
#![cfg(all(unix, feature = "hyper", feature = "sqlite", feature = "postgres"))]

mod dialer_support;
mod pg_cluster;
mod pg_support;
mod support;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use call_result_webhook::store::PostgresStore;
use call_result_webhook::{
    AccountId, CallResult, CampaignId, Error, PreferencesUpdate, Submitted, Webhooks,
};
use dialer_support::{Dialer, fleet_args, line};
use pg_cluster::Cluster;
use support::{Receiver, loopback_policy, switch_on};

/// Dialer processes sharing the outbox.
const PROCESSES: usize = 3;
/// Call results fed to each, one every `FEED_PAUSE`: 50 a second for 8 s.
const PER_PROCESS: usize = 400;
const FEED_PAUSE: Duration = Duration::from_millis(20);
/// When the outage begins, after the dialers started.
const OUTAGE_AFTER: Duration = Duration::from_secs(2);
/// Every dialer must exit within this once its input ended.
const FINISH_WITHIN: Duration = Duration::from_secs(90);
const PASSWORD: &str = "outage-pässword";

/// One fleet test at a time: each runs three dialers and a cluster on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn start(cluster: &Cluster, url: &str, share: usize) -> Dialer {
    start_with(cluster, url, share, PER_PROCESS)
}

fn start_with(cluster: &Cluster, url: &str, share: usize, lines: usize) -> Dialer {
    let mut args = fleet_args(
        &cluster.url,
        "outage",
        url,
        PASSWORD,
        2000,
        "100,200,400,800,1000,1000,1000,1000,1000,1000",
    );
    args.extend(["--time-zone".into(), "Australia/Brisbane".into()]);
    let input = (0..lines)
        .map(|n| line("Outage Test", &format!("outage-{share}-{n:04}")).into_bytes())
        .collect();
    Dialer::start(args, input, FEED_PAUSE, true)
}

/// Three dialers submitting while `outage` happens (on a thread of its own, from
/// `OUTAGE_AFTER`): none exits early, all exit 0, every line is acknowledged and delivered.
fn fleet_through(test: &str, outage: impl FnOnce(&Cluster) + Send) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(cluster) = Cluster::create(test) else {
        return;
    };
    let receiver = Receiver::start();
    let url = receiver.url_for("/calls");
    let started = Instant::now();
    let mut runs: Vec<Option<Dialer>> = (0..PROCESSES)
        .map(|p| Some(start(&cluster, &url, p)))
        .collect();

    // Watches the acknowledgements every 10 ms: the longest stretch in which a process that
    // still had lines to acknowledge acknowledged none.
    let mut longest_wait = Duration::ZERO;
    let mut ended = Vec::new();
    std::thread::scope(|scope| {
        let cluster = &cluster;
        let outage = scope.spawn(move || {
            std::thread::sleep(OUTAGE_AFTER);
            let at = Instant::now();
            outage(cluster);
            at.elapsed()
        });
        let mut last: Vec<(usize, Instant)> = vec![(0, Instant::now()); PROCESSES];
        let deadline = Instant::now() + FINISH_WITHIN + FEED_PAUSE * PER_PROCESS as u32;
        while runs.iter().any(Option::is_some) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            for (p, run) in runs.iter_mut().enumerate() {
                let Some(dialer) = run.as_mut() else { continue };
                let acked = dialer.acked();
                if acked != last[p].0 {
                    last[p] = (acked, Instant::now());
                } else if acked < PER_PROCESS {
                    longest_wait = longest_wait.max(last[p].1.elapsed());
                }
                if dialer.exited().is_some() {
                    let ended_run = run.take().expect("running").wait(Instant::now());
                    ended.push((p, ended_run));
                }
            }
        }
        for (p, run) in runs.iter_mut().enumerate() {
            if let Some(dialer) = run.take() {
                ended.push((p, dialer.wait(Instant::now())));
            }
        }
        let took = outage.join().expect("the outage's thread");
        println!("{test}: the outage itself took {took:?}");
    });
    ended.sort_by_key(|(p, _)| *p);

    let mut acked_ids = HashSet::new();
    let mut failures = Vec::new();
    for (p, run) in &ended {
        println!(
            "{test}: dialer {p}: {:?}, {} of {PER_PROCESS} acknowledged",
            run.status,
            run.acks.len()
        );
        assert!(
            !run.stderr.contains(PASSWORD),
            "dialer {p} printed the password"
        );
        if run.status.and_then(|s| s.code()) != Some(0) || run.acks.len() != PER_PROCESS {
            failures.push(format!(
                "dialer {p} ended {:?} with {} of {PER_PROCESS} acknowledged; stderr:\n{}",
                run.status,
                run.acks.len(),
                run.stderr_timed
            ));
        }
        acked_ids.extend(run.acks.iter().map(|(id, _)| id.clone()));
    }
    let delivered: HashSet<String> = receiver
        .requests()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    let undelivered = acked_ids.difference(&delivered).count();
    println!(
        "{test}: {} acknowledged, {} delivered ({} requests), {undelivered} acknowledged but \
         not delivered; longest wait for an acknowledgement {longest_wait:?}; {:?} in all",
        acked_ids.len(),
        delivered.len(),
        receiver.requests().len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(acked_ids.len(), PROCESSES * PER_PROCESS);
    assert_eq!(undelivered, 0, "every acknowledged result is delivered");
}

#[test]
fn three_dialers_submitting_50_a_second_each_ride_out_a_fast_restart() {
    fleet_through("restart", |cluster| cluster.restart());
}

#[test]
fn three_dialers_submitting_50_a_second_each_ride_out_two_rounds_of_pg_terminate_backend() {
    fleet_through("terminate", |cluster| {
        for round in 1..=2 {
            let cut = cluster.terminate_backends();
            println!("terminate: round {round}: {cut} connections cut");
            std::thread::sleep(Duration::from_millis(1500));
        }
    });
}

#[test]
fn a_dialer_waiting_at_the_end_of_its_input_rides_out_a_stopped_server() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(cluster) = Cluster::create("end_of_input") else {
        return;
    };
    let receiver = Receiver::start();
    // Slow answers: the deliveries are still pending when the server stops.
    receiver.set_default(support::Reply::ok().delay(Duration::from_millis(800)));
    let url = receiver.url_for("/calls");
    let dialer = start_with(&cluster, &url, 0, 5);
    support::within("five acknowledgements", Duration::from_secs(30), || {
        dialer.acked() == 5
    });
    cluster.stop();
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    cluster.start();
    println!(
        "end_of_input: the server was down for {:?}",
        stopped.elapsed()
    );
    let ended = dialer.wait(Instant::now() + Duration::from_secs(60));
    println!(
        "end_of_input: {:?} after {:?}; stderr:\n{}",
        ended.status,
        stopped.elapsed(),
        ended.stderr_timed
    );
    assert_eq!(ended.status.and_then(|s| s.code()), Some(0));
    let ids: HashSet<String> = receiver
        .requests()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert!(ended.acks.iter().all(|(id, _)| ids.contains(id)));
    assert!(
        ended.stderr.contains("5 delivered and 0 failed for good"),
        "{}",
        ended.stderr
    );
}

#[test]
fn a_dialer_waiting_at_the_end_of_its_input_gives_up_after_30_s_of_a_stopped_server() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(cluster) = Cluster::create("give_up") else {
        return;
    };
    let receiver = Receiver::start();
    receiver.set_default(support::Reply::ok().delay(Duration::from_millis(800)));
    let url = receiver.url_for("/calls");
    let dialer = start_with(&cluster, &url, 0, 5);
    support::within("five acknowledgements", Duration::from_secs(30), || {
        dialer.acked() == 5
    });
    cluster.stop();
    let stopped = Instant::now();
    let ended = dialer.wait(Instant::now() + Duration::from_secs(120));
    let took = ended.at.duration_since(stopped);
    println!(
        "give_up: {:?} {took:?} after the server stopped; stderr:\n{}",
        ended.status, ended.stderr_timed
    );
    assert_eq!(ended.status.and_then(|s| s.code()), Some(1));
    // 30 s of failing, then the worker's stop (its store call under way finishes first).
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(80),
        "gave up after {took:?}"
    );
    assert!(
        ended.stderr.contains("kept failing for 30 s"),
        "{}",
        ended.stderr
    );
    assert!(
        ended.stderr.contains("Connection refused"),
        "the driver's words reach stderr: {}",
        ended.stderr
    );
}

/// A `Webhooks` on `store` with one account switched on, sending to `url`.
fn webhooks_on(store: PostgresStore, url: &str) -> (Webhooks, AccountId, CampaignId) {
    let webhooks = Webhooks::builder()
        .store(store)
        .policy(loopback_policy())
        .build()
        .expect("build");
    let (account, campaign) = (AccountId::from("frozen"), CampaignId::from("calls"));
    switch_on(
        &webhooks,
        &account,
        &campaign,
        PreferencesUpdate::new().url(url),
    );
    (webhooks, account, campaign)
}

#[test]
fn a_submit_to_a_frozen_server_answers_the_call_timeout_within_its_bound() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(mut cluster) = Cluster::create("frozen") else {
        return;
    };
    let bound = Duration::from_secs(3);
    let store = PostgresStore::builder(cluster.url.clone())
        .call_timeout(bound)
        .statement_timeout(Duration::from_secs(1))
        .open_blocking()
        .expect("open the store");
    let (webhooks, account, campaign) = webhooks_on(store, &support::unused_url());
    let call = |n: usize| {
        CallResult::builder()
            .reference(format!("frozen-{n}"))
            .build()
    };
    let before = webhooks.submit_blocking(&account, &campaign, call(0));
    assert!(matches!(before, Ok(Submitted::Accepted(_))), "{before:?}");

    cluster.freeze();
    let at = Instant::now();
    let answer = webhooks.submit_blocking(&account, &campaign, call(1));
    let took = at.elapsed();
    cluster.thaw();
    println!("frozen: the submit answered after {took:?}: {answer:?}");
    match answer {
        Err(Error::StoreTimeout {
            bound: "call_timeout",
            limit,
        }) => assert_eq!(limit, bound),
        other => panic!("expected the call_timeout error, got {other:?}"),
    }
    assert!(
        took >= bound && took < bound + Duration::from_millis(500),
        "answered after {took:?}, bound {bound:?}"
    );
    // Thawed, the store answers again.
    cluster.wait_up(Duration::from_secs(10)).expect("thawed");
    let after = webhooks.submit_blocking(&account, &campaign, call(2));
    assert!(matches!(after, Ok(Submitted::Accepted(_))), "{after:?}");
}

#[test]
fn a_submit_to_a_stopped_server_fails_after_retry_for_with_the_drivers_words() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(cluster) = Cluster::create("stopped") else {
        return;
    };
    let retry_for = Duration::from_secs(2);
    let store = PostgresStore::builder(cluster.url.clone())
        .retry_for(retry_for)
        .open_blocking()
        .expect("open the store");
    let (webhooks, account, campaign) = webhooks_on(store, &support::unused_url());
    cluster.stop();
    let at = Instant::now();
    let answer = webhooks.submit_blocking(
        &account,
        &campaign,
        CallResult::builder().reference("stopped").build(),
    );
    let took = at.elapsed();
    let error = answer.expect_err("no server: the submit fails");
    let chain = error_chain(&error);
    println!("stopped: the submit failed after {took:?}: {chain}");
    cluster.start();
    assert!(matches!(error, Error::Store { .. }), "{error:?}");
    assert!(
        took >= retry_for - Duration::from_millis(600) && took < retry_for + Duration::from_secs(2),
        "failed after {took:?}, retry_for {retry_for:?}"
    );
    assert!(chain.contains("still failing after"), "{chain}");
    assert!(
        chain.contains("Connection refused") || chain.contains("57P03"),
        "the driver's or the server's words: {chain}"
    );
}

#[test]
fn a_statement_held_by_a_lock_answers_the_statement_timeout() {
    let Some(db) = pg_support::Database::new("statement_timeout") else {
        return;
    };
    let limit = Duration::from_secs(1);
    let store = db
        .builder()
        .statement_timeout(limit)
        .call_timeout(Duration::from_secs(20))
        .open_blocking()
        .expect("open the store");
    let (webhooks, account, campaign) = webhooks_on(store, &support::unused_url());
    // Another session holds the outbox table locked, in a transaction left open.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (url, table) = (db.url.clone(), format!("{}.deliveries", db.schema));
    let holder = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(async move {
                let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(connection);
                let tx = client.transaction().await.expect("begin");
                tx.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
                    .await
                    .expect("lock");
                locked_tx.send(()).expect("tell");
                // Held until the test is done (or gone).
                let _ = tokio::task::spawn_blocking(move || release_rx.recv()).await;
                drop(tx);
            })
    });
    locked_rx.recv().expect("the table locked");
    let at = Instant::now();
    let answer = webhooks.submit_blocking(
        &account,
        &campaign,
        CallResult::builder().reference("locked").build(),
    );
    let took = at.elapsed();
    println!("statement_timeout: the submit answered after {took:?}: {answer:?}");
    drop(release_tx);
    holder.join().expect("the lock holder");
    match answer {
        Err(Error::StoreTimeout {
            bound: "statement_timeout",
            limit: l,
        }) => assert_eq!(l, limit),
        other => panic!("expected the statement_timeout error, got {other:?}"),
    }
    assert!(took < limit * 3, "answered after {took:?}");
}

/// An error and its causes, `: `-joined.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[test]
fn a_server_error_reaches_the_dialers_stderr_with_its_sqlstate_and_text() {
    let Some(db) = pg_support::Database::new("server_error") else {
        return;
    };
    // The schema made, then its outbox table renamed away: every insert meets 42P01.
    drop(db.store());
    db.execute(&format!(
        "ALTER TABLE {s}.deliveries RENAME TO deliveries_elsewhere",
        s = db.schema
    ));
    let receiver = Receiver::start();
    let url = receiver.url_for("/calls");
    let args = [
        "--database-url",
        &db.url,
        "--database-schema",
        &db.schema,
        "--url",
        &url,
        "--allow-http",
        "--allow-private",
    ];
    let input = vec![line("Server Error Test", "error-1").into_bytes()];
    let ended = Dialer::start(args, input, Duration::ZERO, true)
        .wait(Instant::now() + Duration::from_secs(60));
    println!("server_error: {:?}\n{}", ended.status, ended.stderr);
    assert_eq!(ended.status.and_then(|s| s.code()), Some(1));
    let refused = ended
        .stderr
        .lines()
        .find(|l| l.contains("line 1: not accepted"))
        .expect("the line is refused");
    assert!(
        refused.contains("ERROR 42P01") && refused.contains("does not exist"),
        "the server's SQLSTATE and text: {refused}"
    );
}
