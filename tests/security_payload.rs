//! What goes into a request: no header value the crate builds can carry CR, LF or NUL; every
//! field and the whole body have a cap, enforced at submit with nothing stored; and the
//! account's personal-data options change exactly what they say.
#![cfg(any(feature = "hyper", feature = "ureq"))]

mod support;

use std::time::Duration;

use call_result_webhook::{
    AccountId, CallResult, DeliveryId, Error, Event, PreferencesUpdate, Principal, UrlPolicy,
    auth::Credentials,
    delivery::SystemClock,
    limits::{MAX_BODY_BYTES, MAX_FIELD_BYTES, MAX_NOTES_BYTES},
    preferences::Preferences,
    request::{EncodedBody, build_request},
    store::{DeliveryFilter, Outbox},
};
use proptest::prelude::*;
use support::backends::{BACKENDS, Setup};
use support::sample_call;
use support::security::engine::Engine;
use support::security::preferences;
use support::{Receiver, Saved};

const CONTROL: [&str; 3] = ["\r", "\n", "\0"];

/// Every header value of a request is visible ASCII or space: nothing can split or end a header.
fn assert_headers_clean(request: &http::Request<bytes::Bytes>) {
    for (name, value) in request.headers() {
        assert!(
            value.as_bytes().iter().all(|b| (0x20..0x7f).contains(b)),
            "{name} carries a control byte"
        );
    }
    let target = request.uri().to_string();
    assert!(!target.contains(['\r', '\n', '\0', ' ']), "{target:?}");
}

#[test]
fn cr_lf_and_nul_are_refused_in_credentials_and_nothing_changes() {
    let admin = Principal::administrator("alice");
    let acme = Saved::new(
        PreferencesUpdate::new()
            .enabled(true)
            .url("https://crm.example/hook")
            .credentials("dialer", "good-pw"),
    );
    let before = format!("{:?}", acme.account().preferences());
    for c in CONTROL {
        for (user, pass, field) in [
            (format!("dia{c}ler"), "pw".to_owned(), "username"),
            (
                format!("dialer{c}X-Injected: 1"),
                "pw".to_owned(),
                "username",
            ),
            ("dialer".to_owned(), format!("pa{c}ss"), "password"),
            (
                "dialer".to_owned(),
                format!("pw{c}X-Injected: 1"),
                "password",
            ),
        ] {
            let err = Credentials::new(user.clone(), pass.clone()).unwrap_err();
            assert!(
                matches!(err, Error::InvalidConfig { field: f, .. } if f == field),
                "{err:?}"
            );
            let err = acme
                .update(&admin, PreferencesUpdate::new().credentials(user, pass))
                .unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
            assert!(!format!("{err} {err:?}").contains("X-Injected"));
        }
    }
    assert_eq!(format!("{:?}", acme.account().preferences()), before);
}

#[test]
fn cr_lf_and_nul_are_refused_in_delivery_ids() {
    for c in CONTROL {
        for id in [
            format!("msg{c}1"),
            format!("msg_1{c}X-Injected: 1"),
            c.to_owned(),
        ] {
            assert!(
                matches!(
                    DeliveryId::new(id.clone()),
                    Err(Error::InvalidConfig { .. })
                ),
                "{id:?}"
            );
            let json = serde_json::to_string(&id).unwrap();
            assert!(serde_json::from_str::<DeliveryId>(&json).is_err(), "{id:?}");
        }
    }
    // What is admitted is header-safe by construction.
    let id = DeliveryId::new("order-42_a-b").unwrap();
    assert!(http::HeaderValue::from_str(id.as_str()).is_ok());
}

#[test]
fn cr_lf_and_nul_are_refused_in_every_signing_input() {
    use call_result_webhook::signing::{SigningSecret, sign_headers};
    let secret = SigningSecret::generate().unwrap();
    let good = secret.to_whsec();
    for c in CONTROL {
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "untouched".parse().unwrap());
        let before = headers.clone();
        for id in [format!("msg{c}1"), format!("msg_1{c}X-Injected: 1")] {
            let err = sign_headers(
                &mut headers,
                &id,
                1_700_000_000,
                b"x",
                std::slice::from_ref(&secret),
            )
            .unwrap_err();
            assert!(matches!(err, Error::Signature(_)), "{err:?}");
            assert_eq!(headers, before, "headers changed on error");
        }
        // A secret with a control character inside is not a secret.
        let broken = format!("{}{c}{}", &good[..20], &good[20..]);
        assert!(broken.parse::<SigningSecret>().is_err(), "{c:?}");
    }
    // The timestamp is a number and the signature base64: the built values are clean.
    let acme = preferences(
        "https://crm.example/hook",
        PreferencesUpdate::new().signing_secret(secret),
    );
    let body = EncodedBody::encode(&sample_call(), &acme).unwrap();
    let request = build_request(&acme, &DeliveryId::generate(), &body).unwrap();
    assert_headers_clean(&request);
    assert!(request.headers().contains_key("webhook-signature"));
}

#[test]
fn control_characters_in_a_url_never_reach_the_request_line_or_a_header() {
    for url in [
        "https://crm.example/hook\r\nX-Injected: 1",
        "https://crm.example/ho\nok?x=1\r\n\r\nGET / HTTP/1.1",
        "https://crm.example/hook?token=a\0b",
        "https://crm.example/hook#\r\n",
    ] {
        let Ok(acme) = Preferences::from_update(PreferencesUpdate::new().url(url)) else {
            continue; // refused outright (the fragment): fine
        };
        let body = EncodedBody::encode(&sample_call(), &acme).unwrap();
        let request = build_request(&acme, &DeliveryId::generate(), &body).unwrap();
        assert_headers_clean(&request);
    }
}

proptest! {
    #[test]
    fn every_header_value_built_from_any_input_is_clean(
        user in "\\PC{0,12}[\r\n\0]?\\PC{0,12}",
        pass in "\\PC{0,12}[\r\n\0]?\\PC{0,12}",
        reference in "\\PC{0,40}",
        slash in any::<bool>(),
    ) {
        let has_control = |s: &str| s.contains(['\r', '\n', '\0']);
        let update = PreferencesUpdate::new()
            .credentials(user.clone(), pass.clone())
            .auth_scheme(if slash {
                call_result_webhook::auth::AuthScheme::Slash
            } else {
                call_result_webhook::auth::AuthScheme::Basic
            });
        let applied = Preferences::from_update(update.url("https://crm.example/hook"));
        if has_control(&user) || has_control(&pass) {
            prop_assert!(applied.is_err());
        }
        if let Ok(acme) = applied {
            let call = CallResult::builder().reference(reference).build();
            let body = EncodedBody::encode(&call, &acme).unwrap();
            let request = build_request(&acme, &DeliveryId::generate(), &body).unwrap();
            assert_headers_clean(&request);
        }
    }
}

/// A submit over a cap is refused with the reason, and nothing is stored or sent.
#[test]
fn a_call_result_over_a_cap_is_refused_at_submit_and_nothing_is_stored() {
    let receiver = Receiver::start();
    let policy = UrlPolicy::new().allow_http(true).allow_private();
    let engine = Engine::new(policy.clone(), SystemClock);
    engine.configure("acme", &receiver.url_for("/hook"), PreferencesUpdate::new());
    let worker = engine.start(BACKENDS[0], &Setup::new(policy));
    let submit = |call: CallResult| {
        engine
            .webhooks
            .submit_blocking(&"acme".into(), &"winter".into(), call)
    };

    let over_field = CallResult::builder()
        .reference("r".repeat(MAX_FIELD_BYTES + 1))
        .build();
    match submit(over_field) {
        Err(Error::InvalidCallResult { field, reason }) => {
            assert_eq!(field, "Reference");
            assert!(reason.contains(&MAX_FIELD_BYTES.to_string()), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let over_notes = CallResult::builder()
        .result_notes("n".repeat(MAX_NOTES_BYTES + 1))
        .build();
    assert!(matches!(
        submit(over_notes),
        Err(Error::InvalidCallResult {
            field: "ResultNotes",
            ..
        })
    ));
    // Within every field cap, but percent-encoding triples it past the body cap.
    let over_body = CallResult::builder()
        .result_notes("&".repeat(MAX_NOTES_BYTES))
        .campaign_name("&".repeat(MAX_FIELD_BYTES))
        .build();
    match submit(over_body) {
        Err(Error::BodyTooLarge { size, limit }) => {
            assert_eq!(limit, MAX_BODY_BYTES);
            assert!(size > limit);
        }
        other => panic!("{other:?}"),
    }
    let multibyte = CallResult::builder()
        .wrap_up_by_name("é".repeat(MAX_FIELD_BYTES / 2 + 1))
        .build();
    assert!(matches!(
        submit(multibyte),
        Err(Error::InvalidCallResult {
            field: "WrapUpByName",
            ..
        })
    ));

    let acme: AccountId = "acme".into();
    assert!(
        engine
            .store
            .list(&DeliveryFilter::account("acme"), 10)
            .unwrap()
            .is_empty()
    );
    let status = engine.webhooks.status_blocking(&acme, None).unwrap();
    assert_eq!(
        status.stats.pending + status.stats.failed + status.stats.delivered,
        0
    );

    // At the caps exactly, it is accepted and delivered.
    let at_caps = CallResult::builder()
        .reference("r".repeat(MAX_FIELD_BYTES))
        .result_notes("n".repeat(MAX_NOTES_BYTES))
        .build();
    assert!(submit(at_caps).unwrap().is_accepted());
    engine
        .events
        .wait(1, |e| matches!(e, Event::AttemptSucceeded { .. }));
    worker
        .shutdown_blocking(Duration::from_secs(5))
        .expect("shutdown");
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn pii_options_change_exactly_what_the_account_asked_for() {
    let policy = UrlPolicy::new().allow_http(true).allow_private();
    let phone = "0731051234";
    let notes = "Paid by card, call back Tuesday";
    // (what, mask_phone, omit_result_notes, PhoneCalled sent, ResultNotes sent)
    let cases = [
        ("the page's promise, by default", false, false, phone, notes),
        ("phone masked", true, false, "*******234", notes),
        ("notes left out", false, true, phone, ""),
        ("both", true, true, "*******234", ""),
    ];
    for &backend in BACKENDS {
        for &(what, mask, omit, want_phone, want_notes) in &cases {
            let receiver = Receiver::start();
            let engine = Engine::new(policy.clone(), SystemClock);
            let update = PreferencesUpdate::new()
                .mask_phone(mask)
                .omit_result_notes(omit);
            engine.configure("acme", &receiver.url_for("/hook"), update);
            let worker = engine.start(backend, &Setup::new(policy.clone()));
            engine.submit("acme", sample_call());
            engine
                .events
                .wait(1, |e| matches!(e, Event::AttemptSucceeded { .. }));
            worker
                .shutdown_blocking(Duration::from_secs(5))
                .expect("shutdown");
            let form = receiver.requests()[0].form();
            let get = |key: &str| form.iter().find(|(k, _)| k == key).unwrap().1.clone();
            assert_eq!(get("PhoneCalled"), want_phone, "{backend:?} {what}");
            assert_eq!(get("ResultNotes"), want_notes, "{backend:?} {what}");
            assert_eq!(get("Reference"), "123", "{backend:?} {what}");
            assert_eq!(form.len(), 10, "{backend:?} {what}: all ten keys, always");
            // Whatever the account chose, the number never shows unmasked in an event.
            assert!(!format!("{:?}", engine.events.all()).contains(phone));
        }
    }
}
