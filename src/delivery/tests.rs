//! Delivery end to end, in process: [`MemoryStore`], [`ManualClock`] and a scripted receiver
//! (tests/support/scripted.rs, shared with the tests in `tests/`). No network, no sleeps for
//! synchronisation.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    CallResult, CampaignId, DeliveryId, Error, Event, MemoryStore, PreferencesUpdate, Principal,
    Submitted, UrlPolicy, Webhooks, Worker,
    campaign::{OffReason, WebhookIndicator},
    delivery::{Clock, FailureKind, ManualClock, PauseReason, RetrySchedule},
    dispatch::TransportErrorKind,
    store::{DeliveryFilter, Outbox, Settings},
};

/// The crate, by the name the shared test files use for it.
use crate as under_test;

#[path = "../../tests/support/events.rs"]
mod events;
#[path = "../../tests/support/scripted.rs"]
mod scripted;

use events::{PATIENCE, next_attempt};
#[cfg(feature = "tokio")]
use scripted::runtime;
use scripted::{Answer, Harness, PASSWORD, ScriptedReceiver, assert_jittered, delay_between, t0};

// ---------------------------------------------------------------------------------------------

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
    let status = h.webhooks.status_blocking(&"acme".into(), None).unwrap();
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
    let status = h.webhooks.status_blocking(&"acme".into(), None).unwrap();
    assert_eq!((status.stats.delivered, status.stats.failed), (1, 0));
    assert_eq!(
        h.webhooks.indicator(&"acme".into(), None),
        WebhookIndicator::Active
    );
    assert!(h.dead_letters("acme").is_empty());
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn two_503s_then_200_is_delivered_on_the_third_attempt_with_the_same_id_and_bytes() {
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
    let stats = h
        .webhooks
        .status_blocking(&"acme".into(), None)
        .unwrap()
        .stats;
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
    let status = h.webhooks.status_blocking(&"acme".into(), None).unwrap();
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
    let health = h
        .webhooks
        .status_blocking(&"acme".into(), None)
        .unwrap()
        .endpoint;
    assert_eq!(health.consecutive_failures, 5);
    assert_eq!(health.failing_since, Some(t0()));
    // Still pending (its retry is scheduled), but held.
    h.clock.advance(Duration::from_secs(86_400));
    worker.settle();
    assert_eq!(worker.in_flight(), 0);
    assert_eq!(receiver.seen().len(), 5);
    assert_eq!(
        h.webhooks
            .status_blocking(&"acme".into(), None)
            .unwrap()
            .stats
            .pending,
        1
    );
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
    assert_eq!(
        h.webhooks
            .status_blocking(&"acme".into(), None)
            .unwrap()
            .stats
            .pending,
        3
    );

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
fn a_campaign_switched_off_at_submit_time_stores_nothing() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let call = || CallResult::builder().reference("1").build();
    let acme = "acme".into();
    assert_eq!(
        h.webhooks
            .submit_blocking(&acme, &"spring".into(), call())
            .unwrap(),
        Submitted::Skipped(OffReason::CampaignDisabled)
    );
    assert_eq!(
        h.webhooks
            .submit_blocking(&"unknown".into(), &"winter".into(), call())
            .unwrap(),
        Submitted::Skipped(OffReason::AccountNotConfigured),
        "an account never configured says so, rather than 'disabled'"
    );
    h.webhooks
        .update_preferences_blocking(&h.admin, &acme, PreferencesUpdate::new().clear_url())
        .unwrap();
    assert_eq!(
        h.webhooks
            .submit_blocking(&acme, &"winter".into(), call())
            .unwrap(),
        Submitted::Skipped(OffReason::AccountNotConfigured)
    );
    assert!(
        h.store
            .list(&DeliveryFilter::account("acme"), 10)
            .unwrap()
            .is_empty()
    );
    assert!(!h.store.has_pending().unwrap());
}

#[test]
fn a_campaign_switched_off_later_still_sends_what_was_accepted() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    h.submit("acme", "1");
    h.webhooks
        .set_campaign_webhook_blocking(&h.admin, &"acme".into(), &"winter".into(), false)
        .unwrap();
    let receiver = ScriptedReceiver::always(200);
    let worker = h.threads(&receiver);
    h.events.successes(1);
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
    let stuck = h.webhooks.status_blocking(&"stuck".into(), None).unwrap();
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
    let status = h.webhooks.status_blocking(&"fine".into(), None).unwrap();
    assert_eq!((status.stats.pending, status.stats.delivered), (0, 10));
    assert_eq!(
        h.webhooks
            .status_blocking(&"stuck".into(), None)
            .unwrap()
            .stats
            .pending,
        10
    );
    let report = worker.shutdown_blocking(Duration::from_millis(50)).unwrap();
    assert_eq!(
        report.released,
        crate::limits::DEFAULT_PER_ENDPOINT_CONCURRENCY
    );
}

#[cfg(feature = "tokio")]
#[test]
fn a_graceful_shutdown_releases_what_did_not_finish_and_a_restart_sends_it_with_the_same_id() {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let h = Harness::on(store.clone(), clock.clone(), |b| b);
    h.configure("acme", "https://crm.example/hook");
    let hanging = ScriptedReceiver::new(|_, _| Answer::Hang);
    let worker = h
        .webhooks
        .start_tokio(hanging.clone(), rt.handle())
        .unwrap();
    let ids: HashSet<String> = (0..3)
        .map(|i| h.submit("acme", &i.to_string()).to_string())
        .collect();
    let in_flight: HashSet<String> = hanging.wait_seen(3).into_iter().map(|s| s.id).collect();
    assert_eq!(in_flight, ids);
    let report = worker.shutdown_blocking(Duration::from_millis(20)).unwrap();
    assert_eq!((report.finished, report.released), (0, 3));
    assert_eq!(
        h.webhooks
            .status_blocking(&"acme".into(), None)
            .unwrap()
            .stats
            .pending,
        3
    );
    drop(h);

    // The dialer restarts on the same store.
    let h = Harness::on(store, clock, |b| b);
    let receiver = ScriptedReceiver::always(200);
    let worker = h
        .webhooks
        .start_tokio(receiver.clone(), rt.handle())
        .unwrap();
    h.events.successes(3);
    let resent: HashSet<String> = receiver.seen().into_iter().map(|s| s.id).collect();
    assert_eq!(resent, ids);
    assert!(worker.wait_idle_blocking(PATIENCE).unwrap());
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn a_graceful_shutdown_waits_for_attempts_that_finish_in_time() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let receiver = ScriptedReceiver::new(|_, _| Answer::Hang);
    let worker = h.threads(&receiver);
    h.submit("acme", "1");
    receiver.wait_seen(1);
    // The receiver answers while the worker is shutting down.
    let release = {
        let receiver = receiver.clone();
        std::thread::spawn(move || receiver.release_hung())
    };
    let report = worker.shutdown_blocking(PATIENCE).unwrap();
    release.join().unwrap();
    // Finished before or during the shutdown, never released.
    assert_eq!(report.released, 0);
    assert!(report.finished <= 1);
    // Its outcome (a timeout) was recorded: pending again, for its retry.
    let pending = h.store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert_eq!(pending[0].attempts, 1);
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
fn only_a_full_administrator_changes_settings_and_nothing_changes_otherwise() {
    let h = Harness::new();
    let bob = Principal::user("bob");
    let acme = "acme".into();
    let err = h
        .webhooks
        .update_preferences_blocking(
            &bob,
            &acme,
            PreferencesUpdate::new()
                .enabled(true)
                .url("https://x.example/"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }));
    assert!(
        h.webhooks
            .set_campaign_webhook_blocking(&bob, &acme, &"winter".into(), true)
            .is_err()
    );
    assert!(h.webhooks.account(&acme).is_none());
    assert!(h.store.load_settings().unwrap().accounts.is_empty());

    h.configure("acme", "https://crm.example/hook");
    let before = format!("{:?}", h.webhooks.account(&acme).unwrap());
    let saved = h.store.load_settings().unwrap().accounts;
    assert!(
        h.webhooks
            .update_preferences_blocking(&bob, &acme, PreferencesUpdate::new().enabled(false))
            .is_err()
    );
    assert!(
        h.webhooks
            .set_campaign_webhook_blocking(&bob, &acme, &"winter".into(), false)
            .is_err()
    );
    assert_eq!(format!("{:?}", h.webhooks.account(&acme).unwrap()), before);
    assert_eq!(h.store.load_settings().unwrap().accounts, saved);
}

#[test]
fn urls_are_checked_against_the_policy_when_set() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let acme = "acme".into();
    let before = format!("{:?}", h.webhooks.account(&acme).unwrap());
    // https is required by this deployment's policy.
    let err = h
        .webhooks
        .update_preferences_blocking(
            &h.admin,
            &acme,
            PreferencesUpdate::new().url("http://crm.example/hook"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    let err = h
        .webhooks
        .update_preferences_blocking(
            &h.admin,
            &acme,
            PreferencesUpdate::new().url("https://10.0.0.5/hook"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::AddressRefused { .. }), "{err:?}");
    assert_eq!(format!("{:?}", h.webhooks.account(&acme).unwrap()), before);

    // A deployment that allows http accepts it.
    let h = Harness::with(|b| b.policy(UrlPolicy::new().allow_http(true)));
    h.configure("acme", "http://crm.example/hook");
}

#[test]
fn a_full_store_is_an_error_and_nothing_is_dropped_silently() {
    let h = Harness::on(
        Arc::new(MemoryStore::with_max_pending(1)),
        Arc::new(ManualClock::new(t0())),
        |b| b,
    );
    h.configure("acme", "https://crm.example/hook");
    h.submit("acme", "1");
    let call = CallResult::builder().reference("2").build();
    let err = h
        .webhooks
        .submit_blocking(&"acme".into(), &"winter".into(), call)
        .unwrap_err();
    assert!(matches!(err, Error::StoreFull { max_pending: 1 }));
}

#[test]
fn a_caller_chosen_id_is_sent_once_and_a_conflicting_reuse_is_refused() {
    let h = Harness::new();
    h.configure("acme", "https://crm.example/hook");
    let id = DeliveryId::new("call-42").unwrap();
    let call = || CallResult::builder().reference("42").build();
    let (acme, winter): (crate::AccountId, CampaignId) = ("acme".into(), "winter".into());
    assert_eq!(
        h.webhooks
            .submit_with_id_blocking(&acme, &winter, call(), id.clone())
            .unwrap(),
        Submitted::Accepted(id.clone())
    );
    // The same call result again is stored once (Store::insert is idempotent on the id);
    // another call result under the id is refused.
    assert_eq!(
        h.webhooks
            .submit_with_id_blocking(&acme, &winter, call(), id.clone())
            .unwrap(),
        Submitted::Accepted(id.clone())
    );
    let other = CallResult::builder().reference("43").build();
    assert!(matches!(
        h.webhooks
            .submit_with_id_blocking(&acme, &winter, other, id.clone()),
        Err(Error::IdConflict { .. })
    ));
    let receiver = ScriptedReceiver::always(200);
    let worker = h.threads(&receiver);
    h.events.successes(1);
    assert_eq!(receiver.seen()[0].id, "call-42");
    worker.shutdown_blocking(PATIENCE).unwrap();
    assert_eq!(receiver.seen().len(), 1);
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

#[test]
fn one_worker_at_a_time_and_another_after_shutdown() {
    let h = Harness::new();
    let receiver = ScriptedReceiver::always(200);
    let worker = h.threads(&receiver);
    assert!(matches!(
        h.webhooks.start_threads(receiver.clone(), 1),
        Err(Error::InvalidConfig {
            field: "worker",
            ..
        })
    ));
    assert!(matches!(
        h.webhooks.start_threads(receiver.clone(), 0),
        Err(Error::InvalidConfig {
            field: "threads",
            ..
        })
    ));
    worker.shutdown_blocking(PATIENCE).unwrap();
    let again = h.threads(&receiver);
    drop(again);
    assert!(matches!(
        Webhooks::builder().build(),
        Err(Error::InvalidConfig { field: "store", .. })
    ));
    assert!(matches!(
        Webhooks::builder()
            .store(MemoryStore::new())
            .max_concurrency(0)
            .build(),
        Err(Error::InvalidConfig {
            field: "max_concurrency",
            ..
        })
    ));
}

#[test]
fn a_panicking_event_callback_does_not_stop_deliveries() {
    let store = Arc::new(MemoryStore::new());
    let webhooks = Webhooks::builder()
        .store(store.clone())
        .clock(ManualClock::new(t0()))
        .on_event(|_| panic!("the dialer's callback is broken"))
        .build()
        .unwrap();
    let admin = Principal::administrator("alice");
    let acme = "acme".into();
    webhooks
        .update_preferences_blocking(
            &admin,
            &acme,
            PreferencesUpdate::new()
                .enabled(true)
                .url("https://crm.example/"),
        )
        .unwrap();
    webhooks
        .set_campaign_webhook_blocking(&admin, &acme, &"c".into(), true)
        .unwrap();
    let receiver = ScriptedReceiver::always(200);
    let worker = webhooks.start_threads(receiver.clone(), 2).unwrap();
    for i in 0..3 {
        let call = CallResult::builder().reference(i.to_string()).build();
        let _ = webhooks.submit_blocking(&acme, &"c".into(), call).unwrap();
    }
    assert!(worker.wait_idle_blocking(PATIENCE).unwrap());
    assert_eq!(receiver.seen().len(), 3);
    worker.shutdown_blocking(PATIENCE).unwrap();
}

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
        h.webhooks.status_blocking(&"acme".into(), None).unwrap(),
        h.dead_letters("acme"),
        worker,
    );
    for secret in [PASSWORD, "t0ken-secret", "0731051123", "Reference=ref-1"] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked: {everything}"
        );
    }
    let json =
        serde_json::to_string(&h.webhooks.status_blocking(&"acme".into(), None).unwrap()).unwrap();
    assert!(!json.contains(PASSWORD));
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn many_accounts_many_deliveries_all_arrive_once_each() {
    let h = Harness::with(|b| b.max_concurrency(6).per_endpoint_concurrency(2));
    for a in 0..5 {
        h.configure(&format!("acct{a}"), &format!("https://r{a}.example/hook"));
    }
    let receiver = ScriptedReceiver::always(200);
    let worker = h.webhooks.start_threads(receiver.clone(), 6).unwrap();
    let mut ids = HashSet::new();
    for i in 0..40 {
        ids.insert(
            h.submit(&format!("acct{}", i % 5), &i.to_string())
                .to_string(),
        );
    }
    assert!(worker.wait_idle_blocking(PATIENCE).unwrap());
    let seen: Vec<String> = receiver.seen().into_iter().map(|s| s.id).collect();
    assert_eq!(seen.len(), 40);
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), ids);
    worker.shutdown_blocking(PATIENCE).unwrap();
}

#[test]
fn webhooks_and_worker_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Webhooks>();
    shared::<Worker>();
    shared::<ManualClock>();
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

    use crate::sync::lock;

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
