//! Delivery end to end, in process, where a test must see that nothing happens: the scheduler
//! is settled (`Worker::settle`, crate-private) before the test looks. `MemoryStore`,
//! `ManualClock` and a scripted receiver (tests/support/harness.rs and scripted.rs, shared with
//! the tests in `tests/`, which hold the facade scenarios that need no private hook:
//! tests/delivery_*.rs). No network, no sleeps for synchronisation.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    CallResult, DeliveryId, Error, Event, MemoryStore, PreferencesUpdate, Principal, Submitted,
    campaign::{OffReason, WebhookIndicator},
    delivery::{Clock, FailureKind, ManualClock, PauseReason, RetrySchedule},
    store::DeliveryFilter,
};

/// The crate, by the name the shared test files use for it.
use crate as under_test;

#[path = "../../tests/support/events.rs"]
mod events;
#[path = "../../tests/support/harness.rs"]
mod harness;
#[path = "../../tests/support/scripted.rs"]
mod scripted;

use events::{PATIENCE, next_attempt};
use harness::{Harness, assert_jittered, delay_between, t0};
#[cfg(feature = "tokio")]
use scripted::runtime;
use scripted::{Answer, ScriptedReceiver};

#[test]
fn always_503_is_tried_ten_times_on_schedule_then_expires_and_replays_with_the_same_bytes() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let receiver = ScriptedReceiver::always(503);
    let worker = h.threads(&receiver);
    let id = h.submit("acme", "123");

    let schedule = RetrySchedule::default();
    let mut attempted_at = h.clock.now();
    for attempt in 1..=10u32 {
        let failure = h.events.failures(attempt as usize).pop().unwrap();
        assert!(
            matches!(&failure, Event::AttemptFailed { attempt: a, status: Some(503), .. } if *a == attempt)
        );
        match next_attempt(&failure) {
            Some(next) => {
                let scheduled = schedule.delay_before_retry(attempt).unwrap();
                assert_jittered(delay_between(attempted_at, next), scheduled);
                // Nothing happens before it is due.
                h.clock.set(next - jiff::SignedDuration::from_millis(1));
                worker.settle();
                assert_eq!(worker.in_flight(), 0);
                assert_eq!(receiver.seen().len(), attempt as usize);
                h.clock.set(next);
                attempted_at = next;
            }
            None => assert_eq!(attempt, 10, "only the last attempt has no next"),
        }
    }
    let failed = h
        .events
        .wait(1, |e| matches!(e, Event::DeliveryFailed { .. }));
    assert!(matches!(
        &failed[0],
        Event::DeliveryFailed { kind: FailureKind::Expired, attempts: 10, delivery, .. } if *delivery == id
    ));
    // About three days in all.
    let total = delay_between(t0(), attempted_at);
    assert!(total > Duration::from_secs(2 * 86_400) && total < Duration::from_secs(5 * 86_400));

    // Nothing more is attempted, whatever the time.
    h.clock.advance(Duration::from_secs(30 * 86_400));
    worker.settle();
    assert_eq!(worker.in_flight(), 0);
    let seen = receiver.seen();
    assert_eq!(seen.len(), 10);
    assert!(
        seen.iter().all(|s| s == &seen[0]),
        "same id, URL, auth and bytes every time"
    );
    assert_eq!(seen[0].id, id.as_str());

    let dead = h.dead_letters("acme");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.clone(), dead[0].attempts), (id.clone(), 10));
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no retries left")
    );
    let status = h.status("acme");
    assert_eq!((status.stats.pending, status.stats.failed), (0, 1));
    assert_eq!(
        h.webhooks.indicator(&"acme".into(), None),
        WebhookIndicator::Failing
    );

    // The administrator fixes the receiver and replays: same id, same bytes.
    receiver.set_rule(|_, _| Answer::Status(200));
    let n = h
        .webhooks
        .replay_blocking(&h.admin, &DeliveryFilter::account("acme").id(id.clone()))
        .unwrap();
    assert_eq!(n, 1);
    h.events.successes(1);
    let seen = receiver.seen();
    assert_eq!(seen.len(), 11);
    assert_eq!(seen[10], seen[0]);
    let status = h.status("acme");
    assert_eq!((status.stats.delivered, status.stats.failed), (1, 0));
    assert_eq!(
        h.webhooks.indicator(&"acme".into(), None),
        WebhookIndicator::Active
    );
    assert!(h.dead_letters("acme").is_empty());
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn not_found_fails_after_one_attempt_and_only_an_administrator_replays_it() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let receiver = ScriptedReceiver::always(404);
    let worker = h.threads(&receiver);
    let id = h.submit("acme", "123");
    let failed = h
        .events
        .wait(1, |e| matches!(e, Event::DeliveryFailed { .. }));
    assert!(
        matches!(&failed[0], Event::DeliveryFailed { kind: FailureKind::Rejected, attempts: 1, reason, .. } if reason == "HTTP 404 Not Found")
    );
    assert_eq!(next_attempt(&h.events.failures(1)[0]), None);
    h.clock.advance(Duration::from_secs(86_400));
    worker.settle();
    assert_eq!(worker.in_flight(), 0);
    assert_eq!(receiver.seen().len(), 1);
    let dead = h.dead_letters("acme");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_status, Some(404));

    // Someone without full administrative permission can neither replay nor remove.
    let agent = Principal::user("bob");
    let all = DeliveryFilter::account("acme");
    for denied in [
        h.webhooks.replay_blocking(&agent, &all).map(drop),
        h.webhooks.remove_blocking(&agent, &all).map(drop),
        h.webhooks.dead_letters_blocking(&agent, &all, 10).map(drop),
        h.webhooks
            .resume_endpoint_blocking(&agent, &"acme".into())
            .map(drop),
    ] {
        assert!(
            matches!(denied, Err(Error::PermissionDenied { ref principal, .. }) if principal == "bob")
        );
    }
    worker.settle();
    assert_eq!(receiver.seen().len(), 1);
    assert_eq!(h.dead_letters("acme").len(), 1);

    receiver.set_rule(|_, _| Answer::Status(204));
    assert_eq!(
        h.webhooks
            .replay_blocking(
                &h.admin,
                &DeliveryFilter::account("acme").campaign("winter")
            )
            .unwrap(),
        1
    );
    h.events.successes(1);
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1], seen[0]);
    assert_eq!(seen[1].id, id.as_str());
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn gone_pauses_the_endpoint_until_an_administrator_resumes_it() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let receiver = ScriptedReceiver::always(410);
    let worker = h.threads(&receiver);
    let first = h.submit("acme", "1");
    let paused = h
        .events
        .wait(1, |e| matches!(e, Event::EndpointPaused { .. }));
    assert!(matches!(
        &paused[0],
        Event::EndpointPaused {
            reason: PauseReason::Gone,
            ..
        }
    ));
    assert_eq!(next_attempt(&h.events.failures(1)[0]), None);

    // Paused: a new call result is accepted and held with the first; nothing is attempted.
    let second = h.submit("acme", "2");
    h.clock.advance(Duration::from_secs(10 * 86_400));
    worker.settle();
    assert_eq!(worker.in_flight(), 0);
    assert_eq!(receiver.seen().len(), 1);
    let status = h
        .webhooks
        .status_blocking(&"acme".into(), Some(&"winter".into()))
        .unwrap();
    assert!(status.held);
    assert_eq!((status.stats.pending, status.stats.failed), (2, 0));
    assert!(h.dead_letters("acme").is_empty());
    assert_eq!(
        h.webhooks.indicator(&"acme".into(), Some(&"winter".into())),
        WebhookIndicator::Paused
    );

    assert!(matches!(
        h.webhooks
            .resume_endpoint_blocking(&Principal::user("bob"), &"acme".into()),
        Err(Error::PermissionDenied { .. })
    ));
    worker.settle();
    assert_eq!(receiver.seen().len(), 1);

    receiver.set_rule(|_, _| Answer::Status(200));
    assert!(
        h.webhooks
            .resume_endpoint_blocking(&h.admin, &"acme".into())
            .unwrap()
    );
    h.events.wait(
        1,
        |e| matches!(e, Event::EndpointResumed { by, .. } if by == "alice"),
    );
    h.events.successes(2);
    let ids: HashSet<String> = receiver.seen()[1..].iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids, HashSet::from([first.to_string(), second.to_string()]));
    let status = h.status("acme");
    assert_eq!(
        h.webhooks.indicator(&"acme".into(), None),
        WebhookIndicator::Active
    );
    assert!(!status.held);
    assert!(
        !h.webhooks
            .resume_endpoint_blocking(&h.admin, &"acme".into())
            .unwrap()
    );
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn an_endpoint_failing_for_the_configured_time_is_paused() {
    let h = Harness::with(|b| b.pause_after(Duration::from_secs(3600)));
    h.configure("acme", "https://crm.example/hook");
    let receiver = ScriptedReceiver::always(500);
    let worker = h.threads(&receiver);
    h.submit("acme", "1");
    // Attempts at about 0, 5 s, 5 min, 35 min, 2.5 h: the last is past one hour of failing.
    for n in 1..=4 {
        let failure = h.events.failures(n).pop().unwrap();
        worker.settle();
        let paused = h
            .events
            .all()
            .into_iter()
            .any(|e| matches!(e, Event::EndpointPaused { .. }));
        assert!(!paused, "paused after {n} failures");
        h.clock.set(next_attempt(&failure).unwrap());
    }
    let paused = h
        .events
        .wait(1, |e| matches!(e, Event::EndpointPaused { .. }));
    assert!(matches!(
        &paused[0],
        Event::EndpointPaused {
            reason: PauseReason::FailingTooLong,
            ..
        }
    ));
    let health = h.status("acme").endpoint;
    assert_eq!(health.consecutive_failures, 5);
    assert_eq!(health.failing_since, Some(t0()));
    // Still pending (its retry is scheduled), but held.
    h.clock.advance(Duration::from_secs(86_400));
    worker.settle();
    assert_eq!(worker.in_flight(), 0);
    assert_eq!(receiver.seen().len(), 5);
    assert_eq!(h.status("acme").stats.pending, 1);
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn switching_the_account_off_holds_pending_deliveries_and_on_again_sends_them() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let ids: Vec<DeliveryId> = (0..3).map(|i| h.submit("acme", &i.to_string())).collect();
    h.webhooks
        .update_preferences_blocking(
            &h.admin,
            &"acme".into(),
            PreferencesUpdate::new().enabled(false),
        )
        .unwrap();

    let receiver = ScriptedReceiver::always(200);
    let worker = h.threads(&receiver);
    worker.settle();
    h.clock.advance(Duration::from_secs(7 * 86_400));
    worker.settle();
    assert!(receiver.seen().is_empty());
    assert_eq!(worker.in_flight(), 0);
    let status = h
        .webhooks
        .status_blocking(&"acme".into(), Some(&"winter".into()))
        .unwrap();
    assert_eq!(
        h.webhooks.indicator(&"acme".into(), Some(&"winter".into())),
        WebhookIndicator::Off(OffReason::AccountDisabled)
    );
    assert!(status.held);
    assert_eq!(status.stats.pending, 3);
    assert!(!worker.wait_idle_blocking(Duration::from_millis(1)).unwrap());

    // Off at submit time: skipped, nothing stored.
    let call = CallResult::builder().reference("skipped").build();
    let skipped = h
        .webhooks
        .submit_blocking(&"acme".into(), &"winter".into(), call)
        .unwrap();
    assert_eq!(skipped, Submitted::Skipped(OffReason::AccountDisabled));
    assert_eq!(h.status("acme").stats.pending, 3);

    h.webhooks
        .update_preferences_blocking(
            &h.admin,
            &"acme".into(),
            PreferencesUpdate::new().enabled(true),
        )
        .unwrap();
    h.events.successes(3);
    assert!(worker.wait_idle_blocking(PATIENCE).unwrap());
    let sent: HashSet<String> = receiver.seen().into_iter().map(|s| s.id).collect();
    assert_eq!(sent, ids.iter().map(ToString::to_string).collect());
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn the_next_attempt_uses_the_new_url_and_credentials_with_the_same_bytes() {
    let h = Harness::new();
    h.configure("acme", "https://old.example/hook");
    let receiver = ScriptedReceiver::new(|seen, _| {
        Answer::Status(if seen.url.starts_with("https://new.example/") {
            200
        } else {
            503
        })
    });
    let worker = h.threads(&receiver);
    let id = h.submit("acme", "123");
    let next = next_attempt(&h.events.failures(1)[0]).unwrap();
    h.webhooks
        .update_preferences_blocking(
            &h.admin,
            &"acme".into(),
            PreferencesUpdate::new()
                .url("https://new.example/calls")
                .credentials("dialer2", "n3w-pass")
                // A new encoding applies to new call results only.
                .encoding(crate::encoding::Encoding::Json),
        )
        .unwrap();
    // Not before it is due.
    worker.settle();
    assert_eq!(receiver.seen().len(), 1);
    h.clock.set(next);
    h.events.successes(1);
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].url, "https://old.example/hook");
    assert_eq!(seen[1].url, "https://new.example/calls");
    assert_ne!(seen[0].authorization, seen[1].authorization);
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode("dialer2:n3w-pass");
    assert_eq!(seen[1].authorization, Some(format!("Basic {expected}")));
    assert_eq!(seen[1].body, seen[0].body);
    assert_eq!(
        (seen[0].id.as_str(), seen[1].id.as_str()),
        (id.as_str(), id.as_str())
    );
    // A new URL ends the old endpoint's failure streak.
    assert_eq!(
        h.webhooks.indicator(&"acme".into(), None),
        WebhookIndicator::Active
    );
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn redirects_and_refused_addresses_fail_for_good_without_a_retry() {
    let h = Harness::new();
    h.configure("redirect", "https://crm.example/hook");
    h.configure("refused", "https://intranet.example/hook");
    let receiver = ScriptedReceiver::new(|seen, _| {
        if seen.url.contains("intranet") {
            Answer::Refused
        } else {
            Answer::Status(302)
        }
    });
    let worker = h.threads(&receiver);
    h.submit("redirect", "1");
    h.submit("refused", "2");
    let failed = h
        .events
        .wait(2, |e| matches!(e, Event::DeliveryFailed { .. }));
    for e in &failed {
        let Event::DeliveryFailed {
            account,
            kind,
            reason,
            attempts,
            ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!(*attempts, 1);
        match account.as_str() {
            "redirect" => {
                assert_eq!(*kind, FailureKind::Rejected);
                assert_eq!(reason, "HTTP 302 Found (redirects are not followed)");
            }
            _ => {
                assert_eq!(*kind, FailureKind::Refused);
                assert!(
                    reason.contains("10.1.2.3") && reason.contains("private"),
                    "{reason}"
                );
            }
        }
    }
    h.clock.advance(Duration::from_secs(86_400));
    worker.settle();
    assert_eq!(receiver.seen().len(), 2);
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn a_black_holed_endpoint_ties_up_only_its_own_share_on_threads() {
    let h = Harness::with(|b| b.per_endpoint_concurrency(2));
    h.configure("stuck", "https://stuck.example/hook");
    h.configure("fine", "https://fine.example/hook");
    let receiver = ScriptedReceiver::new(|seen, _| {
        if seen.url.contains("stuck") {
            Answer::Hang
        } else {
            Answer::Status(200)
        }
    });
    for i in 0..10 {
        h.submit("stuck", &format!("s{i}"));
    }
    let worker = h.webhooks.start_threads(receiver.clone(), 4).unwrap();
    for i in 0..20 {
        h.submit("fine", &format!("f{i}"));
    }
    let ok = h.events.successes(20);
    assert!(ok.iter().all(
        |e| matches!(e, Event::AttemptSucceeded { account, .. } if account.as_str() == "fine")
    ));
    worker.settle();
    let stuck = receiver
        .seen()
        .iter()
        .filter(|s| s.url.contains("stuck"))
        .count();
    assert_eq!(stuck, 2, "only the per-endpoint bound is tied up");
    assert_eq!(worker.in_flight(), 2);
    // Waiting out the grace period for the hung attempts is a wait, not a spin.
    let passes = h.webhooks.scheduler_passes();
    let report = worker
        .shutdown_blocking(Duration::from_millis(100))
        .unwrap();
    assert_eq!((report.finished, report.released), (0, 2));
    assert!(
        h.webhooks.scheduler_passes() - passes < 50,
        "the scheduler spun while waiting"
    );
    receiver.release_hung();
    let stuck = h.status("stuck");
    assert_eq!(stuck.stats.pending, 10);
}

#[cfg(feature = "tokio")]
#[test]
fn a_black_holed_endpoint_never_delays_another_account_on_tokio() {
    let rt = runtime();
    let h = Harness::new();
    h.configure("stuck", "https://stuck.example/hook");
    h.configure("fine", "https://fine.example/hook");
    let receiver = ScriptedReceiver::new(|seen, _| {
        if seen.url.contains("stuck") {
            Answer::Hang
        } else {
            Answer::Status(200)
        }
    });
    let worker = h
        .webhooks
        .start_tokio(receiver.clone(), rt.handle())
        .unwrap();
    for i in 0..10 {
        h.submit("stuck", &format!("s{i}"));
        h.submit("fine", &format!("f{i}"));
    }
    h.events.successes(10);
    receiver.wait_seen(14);
    worker.settle();
    let stuck = receiver
        .seen()
        .iter()
        .filter(|s| s.url.contains("stuck"))
        .count();
    assert_eq!(stuck, crate::limits::DEFAULT_PER_ENDPOINT_CONCURRENCY);
    let status = h.status("fine");
    assert_eq!((status.stats.pending, status.stats.delivered), (0, 10));
    assert_eq!(h.status("stuck").stats.pending, 10);
    let report = worker.shutdown_blocking(Duration::from_millis(50)).unwrap();
    assert_eq!(
        report.released,
        crate::limits::DEFAULT_PER_ENDPOINT_CONCURRENCY
    );
}

#[test]
fn a_restart_sees_accounts_switches_and_pauses() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let h = Harness::on(store.clone(), clock.clone(), |b| b);
    h.configure("acme", "https://crm.example/hook");
    h.configure("other", "https://other.example/hook");
    h.webhooks
        .update_preferences_blocking(
            &h.admin,
            &"acme".into(),
            PreferencesUpdate::new()
                .retry_schedule(RetrySchedule::new([Duration::from_secs(1)]).unwrap()),
        )
        .unwrap();
    let receiver = ScriptedReceiver::always(410);
    let worker = h.threads(&receiver);
    h.submit("acme", "1");
    h.events
        .wait(1, |e| matches!(e, Event::EndpointPaused { .. }));
    worker.shutdown_blocking(PATIENCE).unwrap();
    let before = h.webhooks.account(&"acme".into()).unwrap();
    drop(h);

    let h = Harness::on(store, clock, |b| b);
    let acme = h.webhooks.account(&"acme".into()).unwrap();
    assert_eq!(format!("{acme:?}"), format!("{before:?}"));
    assert!(acme.campaign_webhook_enabled(&"winter".into()));
    assert_eq!(acme.preferences().retry_schedule().attempts(), 2);
    assert_eq!(
        acme.preferences().authorization(),
        before.preferences().authorization()
    );
    let status = h
        .webhooks
        .status_blocking(&"acme".into(), Some(&"winter".into()))
        .unwrap();
    assert_eq!(
        h.webhooks.indicator(&"acme".into(), Some(&"winter".into())),
        WebhookIndicator::Paused
    );
    assert!(status.held);
    assert_eq!(
        h.webhooks
            .indicator(&"other".into(), Some(&"winter".into())),
        WebhookIndicator::Active
    );
    // Still held after the restart, until resumed.
    let receiver = ScriptedReceiver::always(200);
    let worker = h.threads(&receiver);
    worker.settle();
    assert_eq!(worker.in_flight(), 0);
    assert!(receiver.seen().is_empty());
    h.webhooks
        .resume_endpoint_blocking(&h.admin, &"acme".into())
        .unwrap();
    h.events.successes(1);
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn removal_is_explicit_and_for_administrators() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    h.submit("acme", "1");
    h.submit("acme", "2");
    assert_eq!(
        h.webhooks
            .remove_blocking(&h.admin, &DeliveryFilter::account("acme"))
            .unwrap(),
        2
    );
    let receiver = ScriptedReceiver::always(200);
    let worker = h.threads(&receiver);
    assert!(worker.wait_idle_blocking(PATIENCE).unwrap());
    worker.settle();
    assert_eq!(worker.in_flight(), 0);
    assert!(receiver.seen().is_empty());
    worker.shutdown_blocking(PATIENCE).unwrap();
}
