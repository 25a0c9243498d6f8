//! Signing wired in: requests built by the crate verify with the crate's `verify`, both secrets
//! verify during a rotation, a receiver on loopback verifies exactly what each backend sent,
//! and the engine signs every attempt at its own clock's time with the account's current secrets.
#![cfg(all(feature = "signing", any(feature = "hyper", feature = "ureq")))]

mod support;

use std::time::Duration;

use call_result_webhook::{
    DeliveryId, PreferencesUpdate,
    limits::DEFAULT_SIGNATURE_TOLERANCE,
    request::{EncodedBody, build_request, build_request_at},
    signing::{SigningSecret, verify, verify_now},
};
use jiff::Timestamp;
use support::backends::{BACKENDS, Setup};
use support::sample_call;
use support::security::preferences;
use support::{Receiver, Saved, loopback_policy};

const AT: i64 = 1_750_000_000;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

/// The `v1,` entries of a `webhook-signature` value.
fn signatures(value: &str) -> Vec<&str> {
    value.split(' ').collect()
}

#[test]
fn a_request_built_by_the_crate_verifies_with_the_crates_verify() {
    let secret = SigningSecret::generate().unwrap();
    let preferences = preferences(
        "https://crm.example/hook",
        PreferencesUpdate::new().signing_secret(secret.clone()),
    );
    let body = EncodedBody::encode(&sample_call(), &preferences).unwrap();
    let id = DeliveryId::generate();
    let request = build_request_at(&preferences, &id, &body, at(AT)).unwrap();
    let headers = request.headers();
    assert_eq!(headers["webhook-id"], id.as_str());
    assert_eq!(headers["webhook-timestamp"], AT.to_string().as_str());
    assert_eq!(
        signatures(headers["webhook-signature"].to_str().unwrap()).len(),
        1
    );
    let tolerance = DEFAULT_SIGNATURE_TOLERANCE;
    verify(
        headers,
        request.body(),
        std::slice::from_ref(&secret),
        tolerance,
        AT + 60,
    )
    .unwrap();

    // It is over the exact bytes, the id and the time: change any and it fails.
    assert!(
        verify(
            headers,
            b"CampaignName=Other",
            std::slice::from_ref(&secret),
            tolerance,
            AT
        )
        .is_err()
    );
    let mut other_id = headers.clone();
    other_id.insert("webhook-id", "msg_other".parse().unwrap());
    assert!(
        verify(
            &other_id,
            request.body(),
            std::slice::from_ref(&secret),
            tolerance,
            AT
        )
        .is_err()
    );
    let mut other_time = headers.clone();
    other_time.insert("webhook-timestamp", (AT + 1).into());
    assert!(
        verify(
            &other_time,
            request.body(),
            std::slice::from_ref(&secret),
            tolerance,
            AT
        )
        .is_err()
    );
    let stranger = SigningSecret::generate().unwrap();
    assert!(verify(headers, request.body(), &[stranger], tolerance, AT).is_err());
    // A replay long after is refused.
    assert!(verify(headers, request.body(), &[secret], tolerance, AT + 3600).is_err());

    // build_request signs at the system clock's time.
    let now = Timestamp::now().as_second();
    let request = build_request(&preferences, &id, &body).unwrap();
    let sent: i64 = request.headers()["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((sent - now).abs() <= 2, "{sent} vs {now}");
}

#[test]
fn both_secrets_verify_during_a_rotation_and_only_they_do() {
    let (old, new) = (
        SigningSecret::generate().unwrap(),
        SigningSecret::generate().unwrap(),
    );
    let admin = call_result_webhook::Principal::administrator("alice");
    let saved = Saved::new(
        PreferencesUpdate::new()
            .url("https://crm.example/hook")
            .signing_secret(old.clone()),
    );
    saved
        .update(
            &admin,
            PreferencesUpdate::new().rotate_signing_secret(new.clone()),
        )
        .unwrap();
    let account = saved.account();
    let body = EncodedBody::encode(&sample_call(), account.preferences()).unwrap();
    let id = DeliveryId::generate();
    let request = build_request_at(account.preferences(), &id, &body, at(AT)).unwrap();
    let value = request.headers()["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures(value).len(), 2, "{value}");
    let t = DEFAULT_SIGNATURE_TOLERANCE;
    // A receiver that has not switched yet, one that has, and one holding both.
    verify(
        request.headers(),
        request.body(),
        std::slice::from_ref(&old),
        t,
        AT,
    )
    .unwrap();
    verify(
        request.headers(),
        request.body(),
        std::slice::from_ref(&new),
        t,
        AT,
    )
    .unwrap();
    verify(
        request.headers(),
        request.body(),
        &[new.clone(), old.clone()],
        t,
        AT,
    )
    .unwrap();
    let stranger = SigningSecret::generate().unwrap();
    assert!(verify(request.headers(), request.body(), &[stranger], t, AT).is_err());

    // Ending the rotation: the old secret no longer verifies.
    saved
        .update(
            &admin,
            PreferencesUpdate::new()
                .clear_signing_secrets()
                .signing_secret(new.clone()),
        )
        .unwrap();
    let request = build_request_at(saved.account().preferences(), &id, &body, at(AT)).unwrap();
    verify(request.headers(), request.body(), &[new], t, AT).unwrap();
    assert!(verify(request.headers(), request.body(), &[old], t, AT).is_err());
}

#[test]
fn a_receiver_on_loopback_verifies_what_each_backend_sent() {
    let (old, new) = (
        SigningSecret::generate().unwrap(),
        SigningSecret::generate().unwrap(),
    );
    let d = Setup::new(loopback_policy()).build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        let mut update = PreferencesUpdate::new().signing_secret(old.clone());
        update = update.rotate_signing_secret(new.clone());
        let preferences = preferences(&receiver.url_for("/hook"), update);
        let body = EncodedBody::encode(&sample_call(), &preferences).unwrap();
        let request = build_request(&preferences, &DeliveryId::generate(), &body).unwrap();
        d.send(backend, request).unwrap();
        let seen = &receiver.wait_for(1, Duration::from_secs(5))[0];
        // The receiver's side: the headers and raw body it recorded, checked on its own clock.
        for secrets in [vec![old.clone()], vec![new.clone()]] {
            verify_now(
                &seen.headers,
                &seen.body,
                &secrets,
                DEFAULT_SIGNATURE_TOLERANCE,
            )
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        }
        assert_eq!(&seen.body[..], &body.bytes()[..], "{backend:?}");
        let mut tampered = seen.body.to_vec();
        tampered.extend_from_slice(b"&Extra=1");
        assert!(
            verify_now(
                &seen.headers,
                &tampered,
                std::slice::from_ref(&new),
                DEFAULT_SIGNATURE_TOLERANCE
            )
            .is_err()
        );
    }
}

#[cfg(feature = "test-util")]
#[test]
fn the_engine_signs_every_attempt_at_its_clock_time_with_the_current_secrets() {
    use call_result_webhook::{Event, delivery::ManualClock};
    use support::Reply;
    use support::security::engine::Engine;
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.script([Reply::status(503)]);
        let start = at(AT);
        let clock = std::sync::Arc::new(ManualClock::new(start));
        let engine = Engine::new(loopback_policy(), clock.clone());
        let first = SigningSecret::generate().unwrap();
        engine.configure(
            "acme",
            &receiver.url_for("/hook"),
            PreferencesUpdate::new().signing_secret(first.clone()),
        );
        let worker = engine.start(backend, &Setup::new(loopback_policy()));
        let id = engine.submit("acme", sample_call());
        let failed = engine
            .events
            .wait(1, |e| matches!(e, Event::AttemptFailed { .. }));
        let Event::AttemptFailed {
            next_attempt_at: Some(next),
            ..
        } = failed[0]
        else {
            panic!("{failed:?}")
        };
        // A rotation between the attempts: the retry carries both signatures.
        let second = SigningSecret::generate().unwrap();
        engine
            .webhooks
            .update_preferences_blocking(
                &engine.admin,
                &"acme".into(),
                PreferencesUpdate::new().rotate_signing_secret(second.clone()),
            )
            .unwrap();
        clock.set(next);
        engine
            .events
            .wait(1, |e| matches!(e, Event::AttemptSucceeded { .. }));
        worker
            .shutdown_blocking(Duration::from_secs(5))
            .expect("shutdown");

        let seen = receiver.requests();
        assert_eq!(seen.len(), 2, "{backend:?}");
        let t = DEFAULT_SIGNATURE_TOLERANCE;
        for (attempt, when, secrets) in [
            (&seen[0], start, vec![first.clone()]),
            (&seen[1], next, vec![first.clone(), second.clone()]),
        ] {
            assert_eq!(
                attempt.header("webhook-id"),
                Some(id.as_str()),
                "{backend:?}"
            );
            let timestamp = when.as_second().to_string();
            assert_eq!(
                attempt.header("webhook-timestamp"),
                Some(&*timestamp),
                "{backend:?}"
            );
            let value = attempt.header("webhook-signature").unwrap();
            assert_eq!(signatures(value).len(), secrets.len(), "{backend:?}");
            for secret in &secrets {
                verify(
                    &attempt.headers,
                    &attempt.body,
                    std::slice::from_ref(secret),
                    t,
                    when.as_second(),
                )
                .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
            }
        }
        assert_eq!(seen[0].body, seen[1].body, "{backend:?}: the same bytes");
    }
}

#[test]
fn a_dialer_id_with_a_dot_is_refused_before_anything_is_stored() {
    // "id.timestamp.body" is only unambiguous when the id holds no '.', so such an id is refused
    // where the dialer hands it in, and every accepted delivery can be signed.
    let err = DeliveryId::new("call.42").unwrap_err();
    assert!(
        matches!(
            err,
            call_result_webhook::Error::InvalidConfig {
                field: "delivery_id",
                ..
            }
        ),
        "{err:?}"
    );
}
