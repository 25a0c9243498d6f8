//! The `tokio_shutdown` example from outside: SIGTERM while a slow receiver holds its attempts
//! stops it gracefully (exit 0 within its 10 s shutdown deadline), every accepted result is
//! then delivered or still pending in the outbox, and a second run delivers the rest with the
//! same `webhook-id`s.
//!
//! Uses the binary `cargo test` builds beside the test binary: after changing the example,
//! `cargo build --all-features --example tokio_shutdown` before `cargo test --test
//! tokio_shutdown`.
#![cfg(all(unix, feature = "hyper", feature = "sqlite"))]

mod dialer_support;
mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use call_result_webhook::{SqliteStore, store::Outbox};
use dialer_support::example_binary;
use support::Receiver;

const RESULTS: usize = 12;
/// How long the slow receiver holds each request in the first run: attempts are in flight
/// when the signal comes, and finish within the example's shutdown deadline.
const HOLD: Duration = Duration::from_secs(3);
/// The example's shutdown deadline, and a margin for a loaded machine.
const EXIT_WITHIN: Duration = Duration::from_secs(10 + 5);

struct Run {
    child: Child,
    /// `(webhook-id, reference)` of each `accepted` line, as printed.
    accepted: Arc<Mutex<Vec<(String, String)>>>,
}

/// Starts the example on `outbox`; feeds it `input` and keeps its stdin open unless `close`.
fn start(outbox: &Path, url: &str, input: &str, close: bool) -> Run {
    let mut child = Command::new(example_binary("tokio_shutdown"))
        .arg(outbox)
        .arg(url)
        .arg("--allow-local")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("feed stdin");
    if close {
        drop(stdin);
    } else {
        // Held open for the child's whole life: it is reading when the signal comes.
        std::mem::forget(stdin);
    }
    let accepted: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let lines = BufReader::new(child.stdout.take().expect("stdout"));
    let seen = accepted.clone();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            let mut words = line.split(' ');
            if let (Some("accepted"), Some(id), Some(reference)) =
                (words.next(), words.next(), words.next())
            {
                seen.lock()
                    .unwrap()
                    .push((id.to_owned(), reference.to_owned()));
            }
        }
    });
    Run { child, accepted }
}

impl Run {
    fn accepted(&self) -> Vec<(String, String)> {
        self.accepted.lock().unwrap().clone()
    }

    fn terminate(&self) {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Its exit status and stderr, once it exited within `limit` (killed and failed if not).
    fn exit_within(mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the example") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the example did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        let _ = self
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr);
        (status, stderr)
    }
}

#[test]
fn sigterm_stops_it_with_status_0_and_every_accepted_result_is_delivered_or_kept() {
    let receiver = Receiver::start();
    let slow = receiver.slow_until_switched(HOLD);
    let url = receiver.url_for("/calls");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let outbox = dir.path().join("outbox.sqlite");
    let input: String = (0..RESULTS).map(|n| format!("call-{n:02}\n")).collect();

    let first = start(&outbox, &url, &input, false);
    let waiting = Instant::now();
    while first.accepted().len() < RESULTS || receiver.requests().is_empty() {
        assert!(
            waiting.elapsed() < Duration::from_secs(20),
            "nothing accepted and sent within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let accepted = first.accepted();
    let signalled = Instant::now();
    first.terminate();
    let (status, stderr) = first.exit_within(EXIT_WITHIN);
    println!(
        "exited {status:?} {:?} after SIGTERM: {stderr}",
        signalled.elapsed()
    );
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{stderr}"
    );
    assert!(stderr.contains("stopped (SIGTERM)"), "{stderr}");

    // Nothing lost: each accepted result is delivered or still pending, none failed.
    let stats = || {
        SqliteStore::open(&outbox)
            .expect("reopen the outbox")
            .stats(&"acme".into(), None)
            .expect("stats")
    };
    let kept = stats();
    assert_eq!(kept.failed, 0, "{kept:?}");
    assert_eq!(kept.delivered + kept.pending, RESULTS as u64, "{kept:?}");
    assert!(
        kept.pending > 0,
        "the slow receiver held attempts: {kept:?}"
    );

    // A second run, no input, a fast receiver: it delivers what was kept, then exits 0.
    slow.store(false, Ordering::SeqCst);
    let (status, stderr) = start(&outbox, &url, "", true).exit_within(Duration::from_secs(60));
    assert!(status.success(), "second run {status:?}; stderr:\n{stderr}");
    assert!(stderr.contains("stopped (end of input)"), "{stderr}");
    let done = stats();
    assert_eq!(
        (done.delivered, done.pending, done.failed),
        (RESULTS as u64, 0, 0)
    );
    // Every accepted id reached the receiver, and no other.
    let sent: HashSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").expect("webhook-id").to_owned())
        .collect();
    let ids: HashSet<String> = accepted.into_iter().map(|(id, _)| id).collect();
    assert_eq!(sent, ids);
}
