//! `dialer --metrics-addr`: the crate's metrics served in the Prometheus text format, scraped
//! over HTTP while the dialer runs and read by Prometheus's own Python parser
//! (`prometheus_client`): the counters equal the outcomes, and the attempt duration is a
//! histogram with buckets.
//!
//! Uses the dialer binary `cargo test` builds beside the test binary. Without the parser the
//! test says it did not run, unless `CALL_RESULT_WEBHOOK_REQUIRE_PROMETHEUS_PARSER` is set.
#![cfg(all(unix, feature = "hyper", feature = "sqlite", feature = "metrics"))]

mod dialer_support;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dialer_support::{dialer_binary, line};
use support::{Receiver, Reply};

/// `text` read by `prometheus_client`'s parser: one `name{labels} value` line per sample,
/// labels sorted, or `None` when the parser is not installed.
fn parse_with_prometheus(text: &str) -> Option<Vec<String>> {
    const READ: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))
        print(f'{s.name}{{{labels}}} {float(s.value)}')
"#;
    let probe = Command::new("python3")
        .args(["-c", "import prometheus_client.parser"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        if std::env::var_os("CALL_RESULT_WEBHOOK_REQUIRE_PROMETHEUS_PARSER").is_some() {
            panic!("python3 cannot import prometheus_client, and the parser is required");
        }
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", READ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused the text:\n{text}");
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics address");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

#[test]
fn the_dialer_serves_metrics_that_equal_its_outcomes() {
    let receiver = Receiver::start();
    // Two delivered at once, one after a 503: 3 delivered, 4 attempts.
    receiver.script([Reply::status(503)]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("outbox.sqlite");
    let mut child = Command::new(dialer_binary())
        .arg("--store")
        .arg(&store)
        .args([
            "--url",
            &receiver.url_for("/hook"),
            "--allow-http",
            "--allow-private",
        ])
        .args(["--retry-delays-ms", "50", "--metrics-addr", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the dialer");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("dialer: metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address on stderr: {first}"))
        .to_owned();
    let mut stdin = child.stdin.take().unwrap();
    for n in 0..3 {
        stdin
            .write_all(line("Metrics Test", &n.to_string()).as_bytes())
            .unwrap();
    }
    stdin.flush().unwrap();
    receiver.wait_for(4, Duration::from_secs(20));

    // The last outcome is recorded a moment after the receiver answers: scrape until it is.
    let started = Instant::now();
    let (text, samples) = loop {
        let text = scrape(&addr);
        let Some(samples) = parse_with_prometheus(&text) else {
            eprintln!(
                "the_dialer_serves_metrics: NOT RUN: python3 cannot import prometheus_client"
            );
            drop(stdin);
            let _ = child.wait();
            return;
        };
        let done = samples
            .iter()
            .any(|s| s == "call_result_webhook_deliveries_total{result=delivered} 3.0");
        if done || started.elapsed() > Duration::from_secs(10) {
            break (text, samples);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("{}", samples.join("\n"));
    // The attempt duration is a histogram, with buckets (a summary cannot be aggregated over a
    // fleet's processes), and every attempt is in it.
    assert!(
        text.contains("# TYPE call_result_webhook_attempt_duration_seconds histogram"),
        "the attempt duration is not a histogram:\n{text}"
    );
    for want in [
        "call_result_webhook_deliveries_total{result=delivered} 3.0",
        "call_result_webhook_attempts_total{outcome=delivered} 3.0",
        "call_result_webhook_attempts_total{outcome=retry} 1.0",
        "call_result_webhook_attempt_duration_seconds_count{} 4.0",
        "call_result_webhook_attempt_duration_seconds_bucket{le=+Inf} 4.0",
        "call_result_webhook_in_flight{} 0.0",
    ] {
        assert!(
            samples.iter().any(|s| s == want),
            "no `{want}` in:\n{samples:#?}"
        );
    }

    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
