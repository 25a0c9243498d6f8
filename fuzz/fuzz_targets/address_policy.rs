//! Arbitrary 16 bytes as an IPv4 address (the first four) and an IPv6 address (all sixteen),
//! plus the IPv6 forms that carry that IPv4 (mapped, IPv4-compatible, NAT64, 6to4), through
//! `UrlPolicy::check_addr`.
//!
//! Checks, for the default policy, `allow_private()` and one allowlisted network made from the
//! input:
//! - every verdict matches the independent oracle (`fuzz/src/lib.rs`), so an allowlisted network
//!   admits exactly its members (and the IPv6 forms whose IPv4 is a member), nothing else;
//! - an IPv6 form that carries an IPv4 gets the same verdict as that IPv4 (and, under the
//!   default policy, the same rule), for the default policy, `allow_private()` and an IPv4
//!   allowlist;
//! - `check_url` on the address written as a URL host gives the same verdict as `check_addr`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use call_result_webhook::{Error, UrlPolicy};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    addr: [u8; 16],
    /// Fills the 80 low bits of the 6to4 form.
    tail: u128,
    net: [u8; 16],
    net_is_v6: bool,
    prefix: u8,
    /// Put the address inside the allowlisted network (keeping only its host bits).
    inside: bool,
}

fuzz_target!(|input: Input| {
    let net = fuzz_oracle::net_from(input.net, input.net_is_v6, input.prefix);
    let (v4, v6) = addresses(&input, &net);

    let default = UrlPolicy::default();
    let private = UrlPolicy::default().allow_private();
    let listed = UrlPolicy::default().allow_net(net);
    let policies: [(&str, &UrlPolicy, Vec<IpNet>); 3] = [
        ("default", &default, Vec::new()),
        ("allow_private", &private, fuzz_oracle::private_nets()),
        ("allow_net", &listed, vec![net]),
    ];

    let mut all = vec![IpAddr::V4(v4), IpAddr::V6(v6)];
    let forms = fuzz_oracle::embeddings(v4, input.tail);
    all.extend(forms.iter().map(|&(_, a)| IpAddr::V6(a)));
    if let Some(carried) = fuzz_oracle::embedded_v4(v6) {
        all.push(IpAddr::V4(carried));
    }

    for (name, policy, allowed) in &policies {
        for &addr in &all {
            let verdict = policy.check_addr("receiver.example", addr);
            let expected = fuzz_oracle::admitted(addr, allowed);
            assert_eq!(
                verdict.is_ok(),
                expected,
                "[{name} {allowed:?}] {addr}: got {verdict:?}"
            );
            if let Err(err) = verdict {
                let Error::AddressRefused {
                    host,
                    addr: got,
                    rule,
                } = err
                else {
                    panic!("[{name}] {addr}: unexpected error kind {err:?}");
                };
                assert_eq!(host, "receiver.example");
                assert_eq!(got, addr);
                assert!(!rule.is_empty());
            }
            same_verdict_through_a_url(name, policy, addr);
        }

        // The embedded forms share the IPv4's verdict, unless the allowlist is an IPv6 network
        // (which may name the IPv6 form itself: see the README).
        if matches!(net, IpNet::V6(_)) && *name == "allow_net" {
            continue;
        }
        let base = policy.check_addr("h", IpAddr::V4(v4));
        for &(form, a) in &forms {
            let got = policy.check_addr("h", IpAddr::V6(a));
            assert_eq!(
                got.is_ok(),
                base.is_ok(),
                "[{name}] {form} {a} of {v4}: {got:?} vs {base:?}"
            );
            if *name == "default" {
                assert_eq!(rule(&got), rule(&base), "[{name}] {form} {a} of {v4}");
            }
        }
    }
});

/// The IPv4 and IPv6 addresses to judge: the input bytes, or (when `inside`) the network's
/// address with the input's host bits, so that allowlist members come up often.
fn addresses(input: &Input, net: &IpNet) -> (Ipv4Addr, Ipv6Addr) {
    let raw6 = u128::from_be_bytes(input.addr);
    let raw4 = u32::from_be_bytes([input.addr[0], input.addr[1], input.addr[2], input.addr[3]]);
    if !input.inside {
        return (Ipv4Addr::from(raw4), Ipv6Addr::from(raw6));
    }
    match net {
        IpNet::V4(n) => {
            let v4 = u32::from(n.network()) | (raw4 & u32::from(n.hostmask()));
            (Ipv4Addr::from(v4), Ipv6Addr::from(raw6))
        }
        IpNet::V6(n) => {
            let v6 = u128::from(n.network()) | (raw6 & u128::from(n.hostmask()));
            (Ipv4Addr::from(raw4), Ipv6Addr::from(v6))
        }
    }
}

fn rule(result: &call_result_webhook::Result<()>) -> Option<&'static str> {
    match result {
        Err(Error::AddressRefused { rule, .. }) => Some(rule),
        _ => None,
    }
}

/// `check_url` on `https://<addr>/` reaches the same verdict as `check_addr`.
fn same_verdict_through_a_url(name: &str, policy: &UrlPolicy, addr: IpAddr) {
    let text = match addr {
        IpAddr::V4(a) => format!("https://{a}/"),
        IpAddr::V6(a) => format!("https://[{a}]/"),
    };
    let url = url::Url::parse(&text).expect("an address always makes a URL");
    let by_url = policy.check_url(&url);
    let by_addr = policy.check_addr("h", addr);
    assert_eq!(
        by_url.is_ok(),
        by_addr.is_ok(),
        "[{name}] {text}: {by_url:?} vs {by_addr:?}"
    );
    assert_eq!(rule(&by_url), rule(&by_addr), "[{name}] {text}");
}
