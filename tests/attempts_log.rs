//! The attempts log through the facade: every attempt of a real delivery over HTTP to a
//! receiver on 127.0.0.1, logged in a SQLite outbox with its number, status, duration and the
//! start of the receiver's answer (the account's own secrets blanked out); forgotten once the
//! retention the dialer set is over; and the checks on what a caller may ask for.
#![cfg(any(all(feature = "hyper", feature = "sqlite"), feature = "test-util"))]

mod support;

use std::time::Duration;

use call_result_webhook::store::{AttemptQuery, AttemptState};
use call_result_webhook::{Error, MemoryStore, Webhooks};

#[cfg(all(feature = "hyper", feature = "sqlite"))]
#[test]
fn every_attempt_is_logged_with_the_start_of_the_answer_and_no_secret() {
    use base64::Engine as _;
    use call_result_webhook::delivery::RetrySchedule;
    use call_result_webhook::{PreferencesUpdate, SqliteStore};
    use support::{Instance, Receiver, Reply, ids, sample_call, switch_on, within};

    const PASSWORD: &str = "hunter2-but-longer";
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("outbox.db")).unwrap();
    let instance = Instance::start(store);
    let receiver = Receiver::start();
    // The first answer echoes the request's Authorization header, as a debugging receiver
    // might, inside markup; the second is plain.
    let answered = std::sync::atomic::AtomicUsize::new(0);
    receiver.respond_with(move |request| {
        if answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            let echo = format!(
                "<p>busy; you sent Authorization: {}</p>",
                request.header("authorization").unwrap_or("")
            );
            Reply::status(503).body(echo)
        } else {
            Reply::status(200).body("thanks")
        }
    });
    let (account, campaign) = ids();
    switch_on(
        &instance.webhooks,
        &account,
        &campaign,
        PreferencesUpdate::new()
            .url(&receiver.url_for("/hook"))
            .credentials("acme-user", PASSWORD)
            .retry_schedule(
                RetrySchedule::new([Duration::from_millis(50), Duration::from_millis(50)]).unwrap(),
            ),
    );
    let id = instance
        .webhooks
        .submit_blocking(&account, &campaign, sample_call())
        .unwrap()
        .id()
        .expect("accepted")
        .clone();
    within("the delivery", Duration::from_secs(30), || {
        instance
            .webhooks
            .status_blocking(&account, None)
            .unwrap()
            .stats
            .delivered
            == 1
    });

    let log = instance
        .webhooks
        .attempts_blocking(&AttemptQuery::account(account.clone()))
        .unwrap();
    assert_eq!(log.len(), 2, "{log:#?}");
    let (second, first) = (&log[0], &log[1]);
    assert!(second.cursor > first.cursor, "newest first");
    for a in &log {
        assert_eq!(a.delivery, id);
        assert_eq!((&a.account, &a.campaign), (&account, &campaign));
        assert!(a.duration > Duration::ZERO, "{a:?}");
    }
    assert_eq!(
        (first.number, first.state, first.status),
        (1, AttemptState::Retrying, Some(503))
    );
    assert_eq!(first.error.as_deref(), Some("HTTP 503 Service Unavailable"));
    assert_eq!(
        (second.number, second.state, second.status),
        (2, AttemptState::Delivered, Some(200))
    );
    assert_eq!(second.answer, "thanks");
    assert!(second.at >= first.at);

    // The receiver saw the credential; the log keeps its answer without it.
    let sent = receiver.requests();
    let credential =
        base64::engine::general_purpose::STANDARD.encode(format!("acme-user:{PASSWORD}"));
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Basic {credential}").as_str())
    );
    assert_eq!(
        first.answer,
        "<p>busy; you sent Authorization: [redacted]</p>"
    );
    assert!(!first.answer.contains(&credential));

    // Narrowed by state, and paged.
    let delivered = instance
        .webhooks
        .attempts_blocking(&AttemptQuery::account(account.clone()).state(AttemptState::Delivered))
        .unwrap();
    assert_eq!(delivered, std::slice::from_ref(second));
    let older = instance
        .webhooks
        .attempts_blocking(&AttemptQuery::account(account.clone()).before(second.cursor))
        .unwrap();
    assert_eq!(older, std::slice::from_ref(first));
}

#[cfg(feature = "test-util")]
#[test]
fn the_log_forgets_attempts_once_the_retention_is_over() {
    use support::harness::Harness;
    use support::scripted::{Answer, ScriptedReceiver};

    let h = Harness::with(|b| b.attempt_retention(Duration::from_secs(3600)));
    h.configure("acme", "https://crm.example/hook");
    let receiver = ScriptedReceiver::new(|_, _| Answer::Status(204));
    let _worker = h.threads(&receiver);
    let log = || {
        h.webhooks
            .attempts_blocking(&AttemptQuery::account("acme"))
            .unwrap()
    };
    let first = h.submit("acme", "1");
    h.events.successes(1);
    assert_eq!(log().len(), 1);

    // Within the hour, both are kept.
    h.clock.advance(Duration::from_secs(1800));
    h.submit("acme", "2");
    h.events.successes(2);
    assert_eq!(log().len(), 2);

    // Past it, the next recording forgets the first.
    h.clock.advance(Duration::from_secs(1900));
    let third = h.submit("acme", "3");
    h.events.successes(3);
    let kept = log();
    assert_eq!(kept.len(), 2, "{kept:#?}");
    assert!(kept.iter().all(|a| a.delivery != first));
    assert_eq!(kept[0].delivery, third);
}

#[test]
fn bad_questions_get_typed_errors() {
    let err = Webhooks::builder()
        .store(MemoryStore::new())
        .attempt_retention(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "attempt_retention",
                ..
            }
        ),
        "{err:?}"
    );
    let webhooks = Webhooks::builder()
        .store(MemoryStore::new())
        .build()
        .unwrap();
    for limit in [0, call_result_webhook::limits::MAX_ATTEMPT_PAGE + 1] {
        let err = webhooks
            .attempts_blocking(&AttemptQuery::account("acme").limit(limit))
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { field: "limit", .. }),
            "{err:?}"
        );
    }
    let err = webhooks
        .attempts_blocking(&AttemptQuery::account("acme").campaign("bad\ncampaign"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidId { .. }), "{err:?}");
    assert!(
        webhooks
            .attempts_blocking(&AttemptQuery::account("acme"))
            .unwrap()
            .is_empty()
    );
}
