//! Oracles for the fuzz targets: the address rules of the URL policy written out again, on their own,
//! so a target can compare the crate's verdict with an independent one.
//!
//! Nothing here is copied from `src/policy.rs`; the tables are typed in from the issue and the
//! IANA special-purpose registries, and membership is tested with `ipnet`, not with the crate's
//! own mask arithmetic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// IPv4 networks that must be refused.
const REFUSED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
];

/// IPv6 networks refused by their own rule (before any embedded IPv4 is looked at).
const REFUSED_V6: &[&str] = &[
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "3fff::/20",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// The loopback and private networks `UrlPolicy::allow_private` admits.
const PRIVATE: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fc00::/7",
];

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter()
        .map(|s| s.parse().expect("oracle tables hold valid networks"))
        .collect()
}

static REFUSED_V4_NETS: LazyLock<Vec<IpNet>> = LazyLock::new(|| nets(REFUSED_V4));
static REFUSED_V6_NETS: LazyLock<Vec<IpNet>> = LazyLock::new(|| nets(REFUSED_V6));
static GLOBAL_UNICAST: LazyLock<Ipv6Net> =
    LazyLock::new(|| "2000::/3".parse().expect("valid network"));

/// The IPv4 address an IPv6 address carries, in the four forms the policy judges by their IPv4:
/// IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96` (not `::` or `::1`), NAT64
/// `64:ff9b::/96` and 6to4 `2002::/16` (bits 16..48).
pub fn embedded_v4(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = addr.octets();
    let last4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let s = addr.segments();
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some(last4);
    }
    if s[..6] == [0; 6] {
        return (u128::from(addr) > 1).then_some(last4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(last4);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// Whether the default policy must refuse `addr`.
pub fn refused(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => REFUSED_V4_NETS.iter().any(|n| n.contains(&IpAddr::V4(v4))),
        IpAddr::V6(v6) => {
            if REFUSED_V6_NETS.iter().any(|n| n.contains(&IpAddr::V6(v6))) {
                return true;
            }
            if let Some(v4) = embedded_v4(v6) {
                return refused(IpAddr::V4(v4));
            }
            !GLOBAL_UNICAST.contains(&v6)
        }
    }
}

/// Whether a policy whose allowlist is `allowed` must admit `addr`: not refused at all, or
/// inside an allowlisted network, or an IPv6 form whose embedded IPv4 is inside one.
pub fn admitted(addr: IpAddr, allowed: &[IpNet]) -> bool {
    if !refused(addr) {
        return true;
    }
    let listed = |a: IpAddr| allowed.iter().any(|n| n.contains(&a));
    listed(addr)
        || match addr {
            IpAddr::V6(v6) => embedded_v4(v6).is_some_and(|v4| listed(IpAddr::V4(v4))),
            IpAddr::V4(_) => false,
        }
}

/// The allowlist `UrlPolicy::allow_private` adds.
pub fn private_nets() -> Vec<IpNet> {
    nets(PRIVATE)
}

/// The four IPv6 forms that carry `v4`, with `tail` filling the 80 bits 6to4 leaves free.
/// The IPv4-compatible form is left out for `0.0.0.0` and `0.0.0.1` (they are `::` and `::1`).
pub fn embeddings(v4: Ipv4Addr, tail: u128) -> Vec<(&'static str, Ipv6Addr)> {
    let bits = u128::from(u32::from(v4));
    let mut out = vec![
        ("mapped", Ipv6Addr::from(0xffff_0000_0000 | bits)),
        (
            "nat64",
            Ipv6Addr::from(u128::from(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)) | bits),
        ),
        (
            "6to4",
            Ipv6Addr::from((0x2002u128 << 112) | (bits << 80) | (tail & ((1u128 << 80) - 1))),
        ),
    ];
    if bits > 1 {
        out.push(("compatible", Ipv6Addr::from(bits)));
    }
    out
}

/// How a C resolver's `inet_aton` reads a host name: one to four parts separated by `.`, each
/// decimal, octal (leading `0`) or hex (`0x`), the last part filling the remaining bytes. A name
/// it reads never reaches DNS, so it is an address, whatever the URL parser thought.
pub fn inet_aton(name: &str) -> Option<Ipv4Addr> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        // Digits only: `from_str_radix` would also take a leading `+`, which C does not.
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let value = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        values.push(value);
    }
    let (last, head) = values.split_last()?;
    if head.iter().any(|&v| v > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if room < 64 && *last >= (1u64 << room) {
        return None;
    }
    let mut bits = *last as u32;
    for (i, &v) in head.iter().enumerate() {
        bits |= (v as u32) << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(bits))
}

/// A network from fuzz bytes: IPv4 or IPv6, any prefix length, host bits left as they are.
pub fn net_from(bytes: [u8; 16], v6: bool, prefix: u8) -> IpNet {
    if v6 {
        let len = prefix % 129;
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(bytes), len).expect("prefix <= 128"))
    } else {
        let len = prefix % 33;
        let a = Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
        IpNet::V4(Ipv4Net::new(a, len).expect("prefix <= 32"))
    }
}
