//! What a dialer sees of a delivery, and what it never sees: events, status, dead letters and
//! `Debug` carry no password, no URL token and no body; each attempt has a tracing span with
//! its ids, status and latency, and nothing secret is traced.
//!
//! In process: `Webhooks` on a `MemoryStore` with a `ManualClock` (feature `test-util`), and a
//! receiver that answers as a rule says (tests/support/harness.rs and scripted.rs). No network,
//! no sleeps for synchronisation: a retry happens when the test moves the clock. The same scenarios over real HTTP, with real
//! time, are in tests/delivery.rs; those that must see that nothing happens (which needs the
//! crate-private `Worker::settle`) are unit tests in src/delivery/tests.rs.
#![cfg(feature = "test-util")]

mod support;

use call_result_webhook::Event;
use support::events::{PATIENCE, next_attempt};
use support::harness::{Harness, PASSWORD};
use support::scripted::{Answer, ScriptedReceiver};

#[test]
fn secrets_and_bodies_never_show_in_events_status_or_debug() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook?token=t0ken-secret");
    let receiver = ScriptedReceiver::new(|_, n| Answer::Status(if n == 1 { 401 } else { 200 }));
    let worker = h.threads(&receiver);
    h.submit("acme", "ref-1");
    h.events
        .wait(1, |e| matches!(e, Event::DeliveryFailed { .. }));
    let everything = format!(
        "{:?} {:?} {:?} {:?} {:?} {:?}",
        h.events.all(),
        h.webhooks,
        h.webhooks.account(&"acme".into()),
        h.status("acme"),
        h.dead_letters("acme"),
        worker,
    );
    for secret in [PASSWORD, "t0ken-secret", "0731051123", "Reference=ref-1"] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked: {everything}"
        );
    }
    let json = serde_json::to_string(&h.status("acme")).unwrap();
    assert!(!json.contains(PASSWORD));
    worker.shutdown_blocking(PATIENCE).unwrap();
}

/// A tracing collector for the whole process: spans with their fields, and events.
mod capture {
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Metadata, Subscriber};

    use super::support::events::lock;

    #[derive(Default)]
    pub(super) struct Capture {
        next: AtomicU64,
        spans: Mutex<HashMap<u64, String>>,
        events: Mutex<Vec<String>>,
    }

    struct Text<'a>(&'a mut String);

    impl Visit for Text<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
            let mut text = span.metadata().name().to_owned();
            span.record(&mut Text(&mut text));
            lock(&self.spans).insert(id, text);
            Id::from_u64(id)
        }
        fn record(&self, span: &Id, values: &Record<'_>) {
            if let Some(text) = lock(&self.spans).get_mut(&span.into_u64()) {
                values.record(&mut Text(text));
            }
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut text = String::new();
            event.record(&mut Text(&mut text));
            lock(&self.events).push(text);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();

    /// Installs the collector once for the process and returns it.
    pub(super) fn install() -> &'static Capture {
        CAPTURE.get_or_init(|| {
            let capture: &'static Capture = Box::leak(Box::default());
            tracing::subscriber::set_global_default(Forward(capture))
                .expect("no other global collector in these tests");
            capture
        })
    }

    struct Forward(&'static Capture);

    impl Subscriber for Forward {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            self.0.enabled(m)
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            self.0.new_span(span)
        }
        fn record(&self, span: &Id, values: &Record<'_>) {
            self.0.record(span, values)
        }
        fn record_follows_from(&self, a: &Id, b: &Id) {
            self.0.record_follows_from(a, b)
        }
        fn event(&self, event: &tracing::Event<'_>) {
            self.0.event(event)
        }
        fn enter(&self, span: &Id) {
            self.0.enter(span)
        }
        fn exit(&self, span: &Id) {
            self.0.exit(span)
        }
    }

    impl Capture {
        pub(super) fn spans(&self) -> Vec<String> {
            lock(&self.spans).values().cloned().collect()
        }
        pub(super) fn everything(&self) -> String {
            let mut all = self.spans().join("\n");
            all.push('\n');
            all.push_str(&lock(&self.events).join("\n"));
            all
        }
    }
}

#[test]
fn each_attempt_has_a_span_with_ids_status_and_latency_and_no_secret_is_traced() {
    let capture = capture::install();
    let h = Harness::new();
    h.configure("traced", "https://crm.example/hook?token=t0ken-secret");
    let receiver = ScriptedReceiver::new(|_, n| Answer::Status(if n == 1 { 503 } else { 200 }));
    let worker = h.threads(&receiver);
    let id = h.submit("traced", "ref-1");
    let next = next_attempt(&h.events.failures(1)[0]).unwrap();
    h.clock.set(next);
    h.events.successes(1);
    worker.shutdown_blocking(PATIENCE).unwrap();

    let mut spans: Vec<String> = capture
        .spans()
        .into_iter()
        .filter(|s| s.contains(id.as_str()))
        .collect();
    spans.sort_by_key(|s| s.contains("attempt=2"));
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for (span, (attempt, status)) in spans.iter().zip([(1, 503), (2, 200)]) {
        assert!(span.starts_with("webhook_attempt"), "{span}");
        for field in [
            format!("delivery_id={id}"),
            "account=traced".to_owned(),
            "campaign=winter".to_owned(),
            format!("attempt={attempt}"),
            format!("status={status}"),
            "latency_ms=".to_owned(),
        ] {
            assert!(span.contains(&field), "{field} missing from {span}");
        }
    }
    let everything = capture.everything();
    for secret in [PASSWORD, "t0ken-secret", "0731051123", "Reference=ref-1"] {
        assert!(!everything.contains(secret), "{secret} was traced");
    }
}
