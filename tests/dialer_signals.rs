//! The `dialer` example from outside, on its way out: SIGTERM and SIGINT mid-delivery stop it
//! gracefully (summary, documented exit status 4, within the shutdown deadline), and a second
//! run on the same SQLite outbox delivers everything still pending; a stdin line over the cap
//! is refused while reading goes on; an outbox that cannot be opened is reported with its
//! causes (exit status 2).
//!
//! Uses the dialer binary `cargo test` builds beside the test binary: after changing the
//! example, `cargo build --all-features --example dialer` before `cargo test --test
//! dialer_signals`.
#![cfg(all(unix, feature = "hyper", feature = "sqlite"))]

mod dialer_support;
mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use call_result_webhook::{SqliteStore, store::Outbox};
use dialer_support::{Dialer, dialer_binary, line, store_args};
use support::Receiver;

const PASSWORD: &str = "signals-test-pässword";
/// How long the slow receiver holds each request before answering 200.
const HOLD: Duration = Duration::from_millis(1500);
/// Added to the shutdown deadline for the process to exit (a loaded machine is slow).
const EXIT_MARGIN: Duration = Duration::from_secs(3);

/// Starts the dialer on `store` with `extra` options and feeds it `input` at once; stdin is
/// closed after it if `close_stdin`, held open otherwise.
fn start(store: &Path, url: &str, extra: &[&str], input: Vec<u8>, close_stdin: bool) -> Dialer {
    let mut args = store_args(store, url, PASSWORD, "50,100,200");
    args.extend(extra.iter().map(|arg| arg.to_string()));
    Dialer::start(args, vec![input], Duration::ZERO, close_stdin)
}

/// How a run ended, having exited on its own.
struct Exited {
    status: ExitStatus,
    acks: Vec<(String, String)>,
    stderr: String,
}

/// Waits for the dialer to exit, at most `limit`; kills it and fails after that, and fails if
/// it printed the password.
fn exit_within(run: Dialer, limit: Duration) -> Exited {
    let ended = run.wait(Instant::now() + limit);
    let stderr = ended.stderr;
    let Some(status) = ended.status else {
        panic!("the dialer did not exit within {limit:?}; its stderr:\n{stderr}");
    };
    assert!(
        !stderr.contains(PASSWORD),
        "the password was printed:\n{stderr}"
    );
    Exited {
        status,
        acks: ended.acks,
        stderr,
    }
}

/// The summary line that starts with `dialer: {how}:`, and the count before `word` in it.
fn summary<'a>(stderr: &'a str, how: &str) -> &'a str {
    let start = format!("dialer: {how}: ");
    stderr
        .lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no summary line `{start}...` in:\n{stderr}"))
}

fn count_before(line: &str, word: &str) -> u64 {
    let at = line
        .find(word)
        .unwrap_or_else(|| panic!("no `{word}` in {line:?}"));
    line[..at]
        .trim_end()
        .rsplit([' ', ','])
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before `{word}` in {line:?}"))
}

/// Feeds results, signals the dialer while the slow receiver holds attempts, checks the
/// graceful stop, then lets a second run on the same outbox deliver what is pending.
fn stops_on_signal_and_loses_nothing(signal: &str, name: &str, shutdown: Option<Duration>) {
    const RESULTS: usize = 20;
    let receiver = Receiver::start();
    let slow = receiver.slow_until_switched(HOLD);
    let url = receiver.url_for("/calls");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = dir.path().join("outbox.sqlite");

    let input: String = (0..RESULTS)
        .map(|n| line("Signals Test", &format!("{name}-{n:02}")))
        .collect();
    let ms = shutdown.map(|d| d.as_millis().to_string());
    let extra: Vec<&str> = match &ms {
        Some(ms) => vec!["--shutdown-ms", ms],
        None => vec![],
    };
    let deadline = shutdown.unwrap_or(Duration::from_secs(5));
    // Stdin stays open: the dialer is blocked reading it when the signal comes.
    let run = start(&store, &url, &extra, input.into_bytes(), false);
    let waiting = Instant::now();
    while run.acked() < RESULTS || receiver.requests().is_empty() {
        assert!(
            waiting.elapsed() < Duration::from_secs(20),
            "no delivery started within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let in_flight_seen = receiver.requests().len();
    let signalled = Instant::now();
    run.signal(signal);
    let first = exit_within(run, deadline + EXIT_MARGIN + Duration::from_secs(5));
    let took = signalled.elapsed();
    let sent_by_first = receiver.requests().len();

    let how = format!("stopped by SIG{signal}");
    let line = summary(&first.stderr, &how).to_owned();
    let released = count_before(&line, "attempt(s) in flight released");
    println!(
        "SIG{signal}: exited {:?} {took:?} after the signal ({in_flight_seen} requests seen then); {line}",
        first.status.code()
    );
    assert_eq!(
        first.status.code(),
        Some(4),
        "exit status; stderr:\n{}",
        first.stderr
    );
    assert!(
        took <= deadline + EXIT_MARGIN,
        "took {took:?} to exit, over the {deadline:?} deadline + {EXIT_MARGIN:?}"
    );
    assert_eq!(first.acks.len(), RESULTS, "every line was acknowledged");
    assert_eq!(count_before(&line, "accepted"), RESULTS as u64);
    if deadline < HOLD {
        // Every attempt in flight outlives the deadline: at least one was released.
        assert!(released >= 1, "nothing released: {line}");
    }

    // Second run, empty stdin, a fast receiver: everything still pending is delivered.
    slow.store(false, Ordering::SeqCst);
    let second = exit_within(
        start(&store, &url, &[], Vec::new(), true),
        Duration::from_secs(40),
    );
    assert!(
        second.status.success(),
        "the second run exited {:?}; stderr:\n{}",
        second.status,
        second.stderr
    );
    let end = summary(&second.stderr, "end of input").to_owned();
    println!("second run: {end}");
    assert!(second.acks.is_empty());

    // Nothing lost: every acknowledged result is recorded delivered (a 2xx taken by the
    // dialer), nothing pending or failed, and nothing stored that was not acknowledged.
    let stats = SqliteStore::open(&store)
        .expect("reopen the outbox")
        .stats(&"dialer".into(), None)
        .expect("stats");
    assert_eq!((stats.pending, stats.failed), (0, 0), "{stats:?}");
    assert_eq!(stats.delivered, RESULTS as u64, "{stats:?}");
    let requests = receiver.requests();
    let ids = |from: usize, to: usize| -> HashSet<String> {
        requests[from..to]
            .iter()
            .map(|r| r.header("webhook-id").expect("a webhook-id").to_owned())
            .collect()
    };
    let acked: HashSet<String> = first.acks.iter().map(|(id, _)| id.clone()).collect();
    let sent = ids(0, requests.len());
    assert_eq!(sent, acked, "requests carried exactly the acknowledged ids");
    // Attempts released by the first run are made again by the second, same webhook-id.
    let resent = ids(0, sent_by_first)
        .intersection(&ids(sent_by_first, requests.len()))
        .count();
    assert!(
        resent as u64 >= released,
        "{released} released, {resent} sent again"
    );
    println!(
        "SIG{signal}: {} acknowledged, {} delivered, {released} released and {resent} sent again by the second run, {} requests",
        acked.len(),
        stats.delivered,
        requests.len()
    );
}

#[test]
fn sigterm_mid_delivery_stops_within_the_deadline_and_loses_nothing() {
    // A deadline shorter than the receiver's hold: the attempts in flight are released.
    stops_on_signal_and_loses_nothing("TERM", "term", Some(Duration::from_millis(500)));
}

#[test]
fn sigint_mid_delivery_lets_attempts_finish_and_loses_nothing() {
    // The default deadline, 5 s: the attempts in flight finish.
    stops_on_signal_and_loses_nothing("INT", "int", None);
}

#[test]
fn a_line_over_the_cap_is_refused_and_reading_goes_on() {
    let receiver = Receiver::start();
    let url = receiver.url_for("/calls");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = dir.path().join("outbox.sqlite");

    // The default cap, 1 MiB: a 3 MiB line between two results.
    let mut input = line("Signals Test", "before").into_bytes();
    input.extend(std::iter::repeat_n(b'x', 3 << 20));
    input.push(b'\n');
    input.extend(line("Signals Test", "after").into_bytes());
    let ended = exit_within(
        start(&store, &url, &[], input, true),
        Duration::from_secs(30),
    );
    println!("{}", ended.stderr.trim_end());
    assert!(ended.status.success(), "{:?}", ended.status);
    assert!(
        ended
            .stderr
            .contains("dialer: line 2: not accepted: longer than 1048576 bytes\n"),
        "{}",
        ended.stderr
    );
    let references: Vec<&str> = ended.acks.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(references, ["before", "after"]);
    let end = summary(&ended.stderr, "end of input");
    assert_eq!(count_before(end, "not accepted"), 1, "{end}");

    // A cap given: a result longer than it is refused too; a blank line and a short one are not.
    let input = format!("{}\n{{}}\n", line("Signals Test", "long").trim_end());
    let ended = exit_within(
        start(
            &store,
            &url,
            &["--max-line-bytes", "64"],
            input.into_bytes(),
            true,
        ),
        Duration::from_secs(30),
    );
    println!("{}", ended.stderr.trim_end());
    assert!(ended.status.success(), "{:?}", ended.status);
    assert!(
        ended
            .stderr
            .contains("dialer: line 1: not accepted: longer than 64 bytes\n"),
        "{}",
        ended.stderr
    );
    assert!(
        ended
            .stderr
            .contains("dialer: line 2: not accepted: invalid"),
        "line 2 is read and judged: {}",
        ended.stderr
    );
    assert!(ended.acks.is_empty());
}

#[test]
fn an_outbox_that_cannot_be_opened_is_reported_with_its_causes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = support::unused_url();
    let mut cases = vec![
        (
            dir.path().join("missing").join("outbox.sqlite"),
            "No such file or directory",
        ),
        (dir.path().to_owned(), "Is a directory"),
    ];
    // A read-only directory refuses the new file, unless the tests run as root.
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).expect("mkdir");
    let mut permissions = std::fs::metadata(&read_only).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o555);
    std::fs::set_permissions(&read_only, permissions).expect("chmod");
    if std::fs::File::create(read_only.join("probe")).is_ok() {
        println!("running as root: the read-only directory case is skipped");
    } else {
        cases.push((read_only.join("outbox.sqlite"), "Permission denied"));
    }
    for (store, cause) in cases {
        let ended = exit_within(
            start(&store, &url, &[], Vec::new(), true),
            Duration::from_secs(30),
        );
        let said = ended.stderr.trim_end();
        println!("{} -> {:?}: {said}", store.display(), ended.status.code());
        assert_eq!(ended.status.code(), Some(2), "{said}");
        let expected = format!("dialer: cannot open the outbox {}: ", store.display());
        assert!(said.starts_with(&expected), "{said}");
        assert!(
            said.lines().count() == 1
                && said.ends_with(&format!("{cause} (os error {})", os_error(cause))),
            "one line, ending with the cause: {said}"
        );
    }
}

/// The errno the cause's text comes from (Linux and the BSDs agree on these three).
fn os_error(cause: &str) -> i32 {
    match cause {
        "Permission denied" => 13,
        "No such file or directory" => 2,
        "Is a directory" => 21,
        _ => unreachable!(),
    }
}

#[test]
fn help_documents_every_exit_status_and_the_new_options() {
    let out = Command::new(dialer_binary())
        .arg("--help")
        .output()
        .expect("run the dialer");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("UTF-8");
    let statuses = help
        .split_once("EXIT STATUS:")
        .expect("an EXIT STATUS section")
        .1;
    for status in 0..=4 {
        assert!(
            statuses.contains(&format!("\n    {status}  ")),
            "exit status {status} is not documented:\n{statuses}"
        );
    }
    for needle in [
        "--shutdown-ms",
        "--max-line-bytes",
        "SIGTERM",
        "SIGINT",
        "SIGHUP",
        "SIGXFSZ",
    ] {
        assert!(help.contains(needle), "{needle} is not in --help");
    }
}
