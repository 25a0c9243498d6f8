//! TLS through each backend, against an https receiver on 127.0.0.1 whose certificates are made
//! in the test: a private authority is refused by default and accepted once added, and adding
//! it never switches validation off (host name, validity, issuer still checked).
#![cfg(any(feature = "hyper", feature = "ureq"))]

mod support;

use call_result_webhook::{
    UrlPolicy,
    dispatch::{Certificate, TransportErrorKind},
};
use support::backends::{BACKENDS, Names, Setup, expect_err};
use support::security::request_to;
use support::security::tls::{ServerCert, TestCa, TlsReceiver};

/// Only the receiver's address is allowlisted: the tests are about certificates, not addresses.
fn policy() -> UrlPolicy {
    UrlPolicy::new().allow_net("127.0.0.1/32".parse().unwrap())
}

/// `receiver.test` and `wrong-name.test` both answer 127.0.0.1.
fn names() -> Names {
    let names = Names::new();
    names
        .add("receiver.test", &["127.0.0.1"])
        .add("wrong-name.test", &["127.0.0.1"]);
    names
}

#[test]
fn a_certificate_from_a_private_authority_is_refused_by_default_as_tls() {
    let ca = TestCa::new("Acme on-premises CA");
    let receiver = TlsReceiver::start(&ca.issue(&["receiver.test", "127.0.0.1"]));
    let d = Setup::new(policy()).resolver(&names()).build();
    for &backend in BACKENDS {
        for url in [
            format!("https://receiver.test:{}/hook", receiver.port()),
            format!("https://127.0.0.1:{}/hook", receiver.port()),
        ] {
            let err = expect_err(d.send(backend, request_to(&url)), &url);
            assert_eq!(
                err.kind(),
                TransportErrorKind::Tls,
                "{backend:?} {url}: {err}"
            );
            assert!(err.kind().is_retryable());
        }
    }
    assert!(receiver.connections() >= 2 * BACKENDS.len());
    assert_eq!(receiver.handshakes(), 0);
    assert!(
        receiver.requests().is_empty(),
        "nothing was sent in the clear"
    );
}

#[test]
fn the_same_certificate_is_accepted_once_its_authority_is_added() {
    let ca = TestCa::new("Acme on-premises CA");
    let receiver = TlsReceiver::start(&ca.issue(&["receiver.test", "127.0.0.1"]));
    // The authority as an administrator would hand it over: a PEM file.
    let root = Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap();
    let d = Setup::new(policy()).resolver(&names()).root(root).build();
    for &backend in BACKENDS {
        for url in [
            format!("https://receiver.test:{}/by-name", receiver.port()),
            format!("https://127.0.0.1:{}/by-address", receiver.port()),
        ] {
            let response = d.send(backend, request_to(&url)).unwrap();
            assert_eq!(response.status(), 200, "{backend:?} {url}");
        }
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2 * BACKENDS.len());
    for (path, body) in &requests {
        assert!(path == "/by-name" || path == "/by-address", "{path}");
        assert!(body.starts_with(b"CampaignName=Winter+Sale&"));
    }
}

#[test]
fn an_added_authority_does_not_switch_validation_off() {
    let ca = TestCa::new("Acme on-premises CA");
    let other_ca = TestCa::new("Someone else's CA");
    let expired = ca.issue_with(&["receiver.test"], |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let cases = [
        (
            "a name the certificate does not carry",
            ca.issue(&["receiver.test"]),
            "wrong-name.test",
        ),
        ("an expired certificate", expired, "receiver.test"),
        (
            "another authority's certificate",
            other_ca.issue(&["receiver.test"]),
            "receiver.test",
        ),
        (
            "a self-signed certificate",
            ServerCert::self_signed(&["receiver.test"]),
            "receiver.test",
        ),
    ];
    let d = Setup::new(policy())
        .resolver(&names())
        .root(ca.certificate())
        .build();
    for (what, cert, host) in cases {
        let receiver = TlsReceiver::start(&cert);
        let url = format!("https://{host}:{}/hook", receiver.port());
        for &backend in BACKENDS {
            let err = expect_err(d.send(backend, request_to(&url)), what);
            assert_eq!(
                err.kind(),
                TransportErrorKind::Tls,
                "{backend:?} {what}: {err}"
            );
        }
        assert_eq!(receiver.handshakes(), 0, "{what}");
        assert!(receiver.requests().is_empty(), "{what}");
    }
}
