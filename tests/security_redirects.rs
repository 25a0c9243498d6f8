//! Redirects are never followed, by either backend nor by the engine: a receiver that answers
//! with a redirect to an internal address gets its 3xx back as a failure, and the internal
//! address (a second loopback receiver) receives nothing.
//!
//! The policy here admits the internal receiver's address, so only "never follow" stands
//! between a redirect and it.
#![cfg(any(feature = "hyper", feature = "ureq"))]

mod support;

use call_result_webhook::{
    Event, PreferencesUpdate,
    delivery::{FailureKind, SystemClock},
};
use support::backends::{BACKENDS, Names, Setup};
use support::sample_call;
use support::security::engine::Engine;
use support::security::request_to;
use support::{Receiver, Reply, loopback_policy};

#[test]
fn a_redirect_to_an_internal_address_comes_back_and_is_not_followed() {
    let internal = Receiver::start();
    let names = Names::new();
    names.add("admin.internal.test", &["127.0.0.1"]);
    let d = Setup::new(loopback_policy()).resolver(&names).build();
    let locations = [
        internal.url_for("/admin/delete-everything"),
        format!(
            "http://admin.internal.test:{}/admin",
            internal.addr().port()
        ),
        format!("//127.0.0.1:{}/scheme-relative", internal.addr().port()),
        "/same-host-other-path".to_owned(),
    ];
    for &backend in BACKENDS {
        for code in [301, 302, 303, 307, 308] {
            for location in &locations {
                let receiver = Receiver::start();
                receiver.script([Reply::redirect(code, location)]);
                let response = d
                    .send(backend, request_to(&receiver.url_for("/hook")))
                    .unwrap();
                let what = format!("{backend:?} {code} -> {location}");
                assert_eq!(response.status(), code, "{what}");
                assert_eq!(response.headers()["location"], location.as_str(), "{what}");
                assert_eq!(receiver.requests().len(), 1, "{what}: asked again");
            }
        }
    }
    assert_eq!(internal.connections(), 0, "a redirect was followed");
    assert_eq!(names.asked(), 0, "a redirect's host was even looked up");
}

#[test]
fn through_the_engine_a_redirect_fails_for_good_and_is_not_followed() {
    let internal = Receiver::start();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.set_default(Reply::redirect(302, &internal.url_for("/admin")));
        let engine = Engine::new(loopback_policy(), SystemClock);
        engine.configure("acme", &receiver.url_for("/hook"), PreferencesUpdate::new());
        let worker = engine.start(backend, &Setup::new(loopback_policy()));
        let id = engine.submit("acme", sample_call());
        let failed = engine
            .events
            .wait(1, |e| matches!(e, Event::DeliveryFailed { .. }));
        match &failed[0] {
            Event::DeliveryFailed {
                delivery,
                attempts,
                kind,
                reason,
                ..
            } => {
                assert_eq!(delivery, &id, "{backend:?}");
                assert_eq!(*attempts, 1, "{backend:?}: a redirect is not retried");
                assert_eq!(*kind, FailureKind::Rejected, "{backend:?}");
                assert_eq!(reason, "HTTP 302 Found (redirects are not followed)");
            }
            other => panic!("{other:?}"),
        }
        worker
            .shutdown_blocking(std::time::Duration::from_secs(5))
            .expect("shutdown");
        assert_eq!(receiver.requests().len(), 1, "{backend:?}");
        let dead = engine
            .webhooks
            .dead_letters_blocking(
                &engine.admin,
                &call_result_webhook::store::DeliveryFilter::account("acme"),
                10,
            )
            .unwrap();
        assert_eq!(dead.len(), 1, "{backend:?}: kept for replay");
        assert_eq!(dead[0].last_status, Some(302));
    }
    assert_eq!(internal.connections(), 0, "a redirect was followed");
}
