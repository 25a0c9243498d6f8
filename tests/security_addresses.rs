//! The address filter, through each backend: every internal address is refused however it is
//! written or resolved, before any connection is made, and the allowlist admits exactly what it
//! names.
//!
//! Nothing here touches the internet or real DNS. Names come from an injected resolver. Every
//! refused destination that lives on loopback points at a listener of the test, which must
//! record no connection; the other refused addresses are refused before a socket exists (the
//! error is the policy's, never a connect error).
#![cfg(any(feature = "hyper", feature = "ureq"))]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use call_result_webhook::{
    Error, UrlPolicy,
    dispatch::{ReceiverResponse, TransportError, TransportErrorKind},
};
use support::backends::{BACKENDS, Names, Setup};
use support::security::{Tap, expect_refused, request_to};
use support::{Receiver, Reply};

const LOOPBACK: &str = "loopback";
const THIS_NETWORK: &str = "this network (0/8)";
const PRIVATE: &str = "private (RFC 1918)";
const SHARED: &str = "shared address space (CGNAT, 100.64/10)";
const LINK_LOCAL: &str = "link-local";
const DOCUMENTATION: &str = "documentation";
const MULTICAST: &str = "multicast";

/// URLs refused by the default address rules, `{port}` standing for the port of a receiver on
/// 127.0.0.1 (so a delivery that got through to a loopback address would be recorded), and the
/// rule that refuses each. Host names are answered by [`names`].
const REFUSED: &[(&str, &str)] = &[
    // The loopback address, and every odd spelling of it.
    ("http://127.0.0.1:{port}/hook", LOOPBACK),
    ("http://2130706433:{port}/hook", LOOPBACK),
    ("http://0x7f000001:{port}/hook", LOOPBACK),
    ("http://0177.0.0.1:{port}/hook", LOOPBACK),
    ("http://127.1:{port}/hook", LOOPBACK),
    ("http://0x7f.1:{port}/hook", LOOPBACK),
    ("http://127.0.0.1.:{port}/hook", LOOPBACK),
    ("http://%31%32%37.0.0.1:{port}/hook", LOOPBACK),
    (
        "http://127\u{3002}0\u{3002}0\u{3002}1:{port}/hook",
        LOOPBACK,
    ),
    ("http://127.255.255.254:{port}/hook", LOOPBACK),
    ("http://[::1]:{port}/hook", LOOPBACK),
    ("http://[::ffff:127.0.0.1]:{port}/hook", LOOPBACK),
    ("http://[0:0:0:0:0:ffff:7f00:1]:{port}/hook", LOOPBACK),
    ("http://[::127.0.0.1]:{port}/hook", LOOPBACK),
    ("http://[64:ff9b::7f00:1]:{port}/hook", LOOPBACK),
    ("http://[2002:7f00:1::]:{port}/hook", LOOPBACK),
    ("http://0:{port}/hook", THIS_NETWORK),
    ("http://0.0.0.0:{port}/hook", THIS_NETWORK),
    ("http://[::]:{port}/hook", "unspecified"),
    // Private, link-local, shared and the other non-global ranges, as literals.
    ("http://10.0.0.1:{port}/hook", PRIVATE),
    ("http://172.16.0.1/hook", PRIVATE),
    ("http://172.31.255.254/hook", PRIVATE),
    ("http://192.168.1.1/hook", PRIVATE),
    ("http://3232235777/hook", PRIVATE),
    ("http://169.254.169.254/latest/meta-data/", LINK_LOCAL),
    ("http://0xa9fea9fe/latest/meta-data/", LINK_LOCAL),
    ("http://100.64.0.1/hook", SHARED),
    ("http://100.100.100.200/hook", SHARED),
    (
        "http://192.0.0.8/hook",
        "IETF protocol assignments (192.0.0/24)",
    ),
    ("http://192.0.2.1/hook", DOCUMENTATION),
    ("http://198.51.100.7/hook", DOCUMENTATION),
    ("http://203.0.113.9/hook", DOCUMENTATION),
    ("http://198.18.0.1/hook", "benchmarking (198.18/15)"),
    ("http://224.0.0.1/hook", MULTICAST),
    ("http://255.255.255.255/hook", "broadcast"),
    ("http://240.0.0.1/hook", "reserved (240/4)"),
    ("http://[fd00::1]/hook", "unique local (fc00::/7)"),
    ("http://[fe80::1]/hook", LINK_LOCAL),
    (
        "http://[fec0::1]/hook",
        "site-local (fec0::/10, deprecated)",
    ),
    ("http://[ff02::1]/hook", MULTICAST),
    ("http://[2001:db8::1]/hook", DOCUMENTATION),
    ("http://[100::1]/hook", "discard-only (100::/64)"),
    ("http://[2001::1]/hook", "Teredo (2001::/32)"),
    (
        "http://[64:ff9b:1::1]/hook",
        "NAT64 local use (64:ff9b:1::/48)",
    ),
    // IPv6 forms carrying a refused IPv4 address.
    ("http://[::ffff:10.0.0.1]/hook", PRIVATE),
    ("http://[::ffff:169.254.169.254]/hook", LINK_LOCAL),
    ("http://[64:ff9b::a9fe:a9fe]/hook", LINK_LOCAL),
    ("http://[2002:a9fe:a9fe::]/hook", LINK_LOCAL),
    ("http://[2002:c0a8:101::1]/hook", PRIVATE),
    // Names whose (injected) resolver answers internal addresses.
    ("http://loopback.test:{port}/hook", LOOPBACK),
    ("http://localhost.test:{port}/hook", LOOPBACK),
    ("http://internal.test:{port}/hook", PRIVATE),
    ("http://metadata.test/latest/meta-data/", LINK_LOCAL),
    ("http://cgnat.test/hook", SHARED),
    ("http://ula.test/hook", "unique local (fc00::/7)"),
    ("http://mapped.test/hook", PRIVATE),
    ("http://nat64.test/hook", PRIVATE),
    ("http://every-answer-internal.test/hook", PRIVATE),
    ("http://zero.test:{port}/hook", THIS_NETWORK),
];

/// The injected resolver of [`REFUSED`]'s names.
fn names() -> Names {
    let names = Names::new();
    names
        .add("loopback.test", &["127.0.0.1"])
        .add("localhost.test", &["::1", "127.0.0.1"])
        .add("internal.test", &["10.1.2.3"])
        .add("metadata.test", &["169.254.169.254"])
        .add("cgnat.test", &["100.64.1.1"])
        .add("ula.test", &["fd12:3456::1"])
        .add("mapped.test", &["::ffff:192.168.0.1"])
        .add("nat64.test", &["64:ff9b::a00:1"])
        .add(
            "every-answer-internal.test",
            &["10.0.0.1", "172.16.0.1", "192.168.0.1", "127.0.0.1"],
        )
        .add("zero.test", &["0.0.0.0"]);
    names
}

/// Whether `outcome` is a refusal by `rule`, not retryable, naming the URL's host when it is a
/// name (the address it resolved to is named too).
fn refused_as(
    outcome: Result<ReceiverResponse, TransportError>,
    rule: &str,
    url: &str,
) -> Result<(), String> {
    let err = match outcome {
        Ok(response) => return Err(format!("sent, answered {}", response.status())),
        Err(err) => err,
    };
    if err.kind() != TransportErrorKind::Refused || err.kind().is_retryable() {
        return Err(format!("{:?} error, not a refusal: {err}", err.kind()));
    }
    let Some(Error::AddressRefused {
        host, rule: got, ..
    }) = err.policy_refusal()
    else {
        return Err(format!("not an address refusal: {err}"));
    };
    if *got != rule {
        return Err(format!("refused as {got}, expected {rule}"));
    }
    let named = url::Url::parse(url)
        .unwrap()
        .host_str()
        .unwrap_or("")
        .to_owned();
    if named.ends_with(".test") && *host != named {
        return Err(format!("the refusal names {host}, not {named}"));
    }
    Ok(())
}

#[test]
fn every_internal_address_is_refused_by_each_backend_before_connecting() {
    assert!(REFUSED.len() >= 40, "{} cases", REFUSED.len());
    let receiver = Receiver::start();
    let names = names();
    // http is allowed, so only the address rules stand between a delivery and the receiver.
    let d = Setup::new(UrlPolicy::new().allow_http(true))
        .resolver(&names)
        .build();
    let port = receiver.addr().port().to_string();
    // Every case is tried and every miss listed, so a failure shows how much got through.
    let mut misses = Vec::new();
    for &backend in BACKENDS {
        for &(template, rule) in REFUSED {
            let url = template.replace("{port}", &port);
            if let Err(miss) = refused_as(d.send(backend, request_to(&url)), rule, &url) {
                misses.push(format!("{backend:?} {url}: {miss}"));
            }
        }
    }
    assert!(
        misses.is_empty(),
        "{} of {} cases were not refused as expected:\n{}",
        misses.len(),
        REFUSED.len() * BACKENDS.len(),
        misses.join("\n")
    );
    assert_eq!(
        receiver.connections(),
        0,
        "a refused address was connected to"
    );
    assert!(receiver.requests().is_empty());
    // Every name was resolved through the injected resolver, never through real DNS.
    assert!(names.asked() >= 10 * BACKENDS.len(), "{}", names.asked());
}

#[test]
fn a_name_resolving_to_several_internal_addresses_tries_none_of_them() {
    let taps = [
        Tap::on("127.0.0.1"),
        Tap::on("127.0.0.2"),
        Tap::on("127.0.0.3"),
    ];
    let names = Names::new();
    let addrs: Vec<SocketAddr> = taps.iter().map(Tap::addr).collect();
    names.add_with_ports("all-loopback.test", &addrs);
    let d = Setup::new(UrlPolicy::new().allow_http(true))
        .resolver(&names)
        .build();
    for &backend in BACKENDS {
        let (host, addr) = expect_refused(
            d.send(backend, request_to("http://all-loopback.test/hook")),
            LOOPBACK,
            &format!("{backend:?}"),
        );
        assert_eq!(host, "all-loopback.test");
        assert_eq!(addr, addrs[0].ip(), "the first refusal is reported");
    }
    for tap in &taps {
        assert_eq!(tap.connections(), 0, "{} was connected to", tap.addr());
    }
}

#[test]
fn the_allowlist_admits_what_it_names_and_nothing_else() {
    let receiver = Receiver::start();
    let beside = Tap::on("127.0.0.2");
    let port = receiver.addr().port();
    let names = Names::new();
    names
        .add("receiver.test", &["127.0.0.1"])
        .add_with_ports("beside.test", &[beside.addr()])
        .add_with_ports(
            "both.test",
            &[beside.addr(), SocketAddr::from(([127, 0, 0, 1], port))],
        );
    let policy = UrlPolicy::new()
        .allow_http(true)
        .allow_net("127.0.0.1/32".parse().unwrap());
    let d = Setup::new(policy).resolver(&names).build();
    let admitted = [
        format!("http://127.0.0.1:{port}/literal"),
        format!("http://2130706433:{port}/odd-spelling"),
        format!("http://receiver.test:{port}/by-name"),
        // Offered both, only the admitted address is used.
        format!("http://both.test:{port}/mixed"),
    ];
    let refused = [
        (format!("http://127.0.0.2:{}/", beside.port()), LOOPBACK),
        (format!("http://beside.test:{}/", beside.port()), LOOPBACK),
        (format!("http://[::1]:{port}/"), LOOPBACK),
        ("http://10.0.0.1/".to_owned(), PRIVATE),
        ("http://169.254.169.254/".to_owned(), LINK_LOCAL),
    ];
    for &backend in BACKENDS {
        for url in &admitted {
            let response = d.send(backend, request_to(url)).unwrap();
            assert_eq!(response.status(), 200, "{backend:?} {url}");
        }
        for (url, rule) in &refused {
            expect_refused(
                d.send(backend, request_to(url)),
                rule,
                &format!("{backend:?} {url}"),
            );
        }
    }
    let targets: Vec<String> = receiver.requests().into_iter().map(|r| r.target).collect();
    let expected: Vec<&str> =
        ["/literal", "/odd-spelling", "/by-name", "/mixed"].repeat(BACKENDS.len());
    assert_eq!(targets, expected);
    assert_eq!(beside.connections(), 0, "127.0.0.2 is not allowlisted");
}

#[test]
fn dns_rebinding_is_closed_every_new_connection_judges_the_new_answer() {
    let receiver = Receiver::start();
    // Each answer ends the connection, so the next request needs a new one.
    receiver.set_default(Reply::ok().header("connection", "close"));
    let rebound = Tap::on("127.0.0.2");
    let policy = UrlPolicy::new()
        .allow_http(true)
        .allow_net("127.0.0.1/32".parse().unwrap());
    for &backend in BACKENDS {
        let names = Names::new();
        names.add("flip.test", &["127.0.0.1"]);
        let d = Setup::new(policy.clone()).resolver(&names).build();
        let url = format!("http://flip.test:{}/hook", receiver.addr().port());
        let first = d.send(backend, request_to(&url)).unwrap();
        assert_eq!(first.status(), 200, "{backend:?}");
        // The name now answers another address: the same URL, judged again.
        names.add_with_ports("flip.test", &[rebound.addr()]);
        std::thread::sleep(Duration::from_millis(50));
        expect_refused(
            d.send(backend, request_to(&url)),
            LOOPBACK,
            &format!("{backend:?}"),
        );
        assert_eq!(
            names.asked(),
            2,
            "{backend:?}: resolved once per connection"
        );
    }
    assert_eq!(rebound.connections(), 0);
    assert_eq!(receiver.requests().len(), BACKENDS.len());
}

#[test]
fn a_custom_resolver_cannot_lead_past_the_policy() {
    // Whatever a dialer's resolver answers, the default policy judges it: it may only propose.
    let receiver = Receiver::start();
    let names = Names::new();
    names.add(
        "crm.acme.test",
        &["127.0.0.1", "10.0.0.1", "169.254.169.254"],
    );
    let d = Setup::new(UrlPolicy::new().allow_http(true))
        .resolver(&names)
        .build();
    let url = format!("http://crm.acme.test:{}/hook", receiver.addr().port());
    for &backend in BACKENDS {
        expect_refused(
            d.send(backend, request_to(&url)),
            LOOPBACK,
            &format!("{backend:?}"),
        );
    }
    assert_eq!(receiver.connections(), 0);
}
