//! Retries through the facade: the schedule, `Retry-After` (seconds, an HTTP date, the cap, a
//! short one that never shortens the schedule), and transport failures retried like 5xx.
//!
//! In process: `Webhooks` on a `MemoryStore` with a `ManualClock` (feature `test-util`), and a
//! receiver that answers as a rule says (tests/support/harness.rs and scripted.rs). No network,
//! no sleeps for synchronisation: a retry happens when the test moves the clock. The same scenarios over real HTTP, with real
//! time, are in tests/delivery.rs; those that must see that nothing happens (which needs the
//! crate-private `Worker::settle`) are unit tests in src/delivery/tests.rs.
#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use call_result_webhook::Event;
use call_result_webhook::delivery::Clock as _;
use call_result_webhook::dispatch::TransportErrorKind;
use support::events::{PATIENCE, next_attempt};
use support::harness::{Harness, assert_jittered, delay_between, t0};
use support::scripted::{Answer, ScriptedReceiver};

#[test]
fn two_503s_then_200_is_delivered_on_the_third_attempt_with_the_same_id_and_bytes_in_process() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let receiver = ScriptedReceiver::new(|_, n| Answer::Status(if n <= 2 { 503 } else { 200 }));
    let worker = h.threads(&receiver);
    let id = h.submit("acme", "123");
    for n in 1..=2 {
        let next = next_attempt(&h.events.failures(n)[n - 1]).unwrap();
        h.clock.set(next);
    }
    let ok = h.events.successes(1);
    assert!(
        matches!(&ok[0], Event::AttemptSucceeded { attempt: 3, status: 200, delivery, .. } if *delivery == id)
    );
    let seen = receiver.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s == &seen[0]));
    assert_eq!(seen[0].id, id.as_str());
    assert!(
        std::str::from_utf8(&seen[0].body)
            .unwrap()
            .contains("Reference=123")
    );
    let stats = h.status("acme").stats;
    assert_eq!((stats.pending, stats.delivered, stats.failed), (0, 1, 0));
    assert!(stats.last_success_at.is_some());
    assert_eq!(
        stats.last_failure_reason.as_deref(),
        Some("HTTP 503 Service Unavailable")
    );
    assert!(worker.wait_idle_blocking(PATIENCE).unwrap());
    assert_eq!(worker.shutdown_blocking(PATIENCE).unwrap().released, 0);
}

#[test]
fn retry_after_in_seconds_and_as_a_date_is_honoured_within_the_cap() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&(t0() + jiff::SignedDuration::from_hours(3)))
        .unwrap();
    let receiver = ScriptedReceiver::new(move |_, n| match n {
        1 => Answer::RetryAfter(429, "120".into()),
        2 => Answer::RetryAfter(503, date.clone()),
        3 => Answer::RetryAfter(503, "999999".into()),
        4 => Answer::RetryAfter(429, "1".into()),
        _ => Answer::Status(200),
    });
    let worker = h.threads(&receiver);
    h.submit("acme", "1");

    // 429, Retry-After: 120 beats the scheduled 5 s.
    let next = next_attempt(&h.events.failures(1)[0]).unwrap();
    assert_eq!(next, t0() + jiff::SignedDuration::from_secs(120));
    h.clock.set(next);
    // An HTTP date three hours after t0 beats the scheduled 5 min.
    let next = next_attempt(&h.events.failures(2)[1]).unwrap();
    assert_eq!(next, t0() + jiff::SignedDuration::from_hours(3));
    h.clock.set(next);
    // Asking for 11 days gets the 24 h cap.
    let next = next_attempt(&h.events.failures(3)[2]).unwrap();
    assert_eq!(next, h.clock.now() + jiff::SignedDuration::from_hours(24));
    h.clock.set(next);
    // A short Retry-After never shortens the scheduled 2 h.
    let at = h.clock.now();
    let next = next_attempt(&h.events.failures(4)[3]).unwrap();
    assert_jittered(delay_between(at, next), Duration::from_secs(2 * 3600));
    h.clock.set(next);
    h.events.successes(1);
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn transport_failures_are_retried() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let receiver = ScriptedReceiver::new(|_, n| match n {
        1 => Answer::Transport(TransportErrorKind::Timeout),
        2 => Answer::Transport(TransportErrorKind::Io),
        _ => Answer::Status(200),
    });
    let worker = h.threads(&receiver);
    h.submit("acme", "1");
    for n in 1..=2 {
        let failure = h.events.failures(n).pop().unwrap();
        assert!(matches!(
            &failure,
            Event::AttemptFailed { status: None, .. }
        ));
        h.clock.set(next_attempt(&failure).unwrap());
    }
    h.events.successes(1);
    let reasons: Vec<String> = h
        .events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::AttemptFailed { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["timed out", "I/O error"]);
    worker.shutdown_blocking(PATIENCE).unwrap();
}
