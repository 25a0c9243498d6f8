//! The address policy: which webhook URLs are acceptable, and which addresses a delivery may
//! connect to. See [`UrlPolicy`] for what is refused and where each check runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

use crate::{Error, Result};

/// The longest URL accepted by default, in bytes.
const DEFAULT_MAX_URL_LEN: usize = 2048;

const THIS_NETWORK: &str = "this network (0/8)";
const PRIVATE: &str = "private (RFC 1918)";
const SHARED: &str = "shared address space (CGNAT, 100.64/10)";
const LOOPBACK: &str = "loopback";
const LINK_LOCAL: &str = "link-local";
const IETF_V4: &str = "IETF protocol assignments (192.0.0/24)";
const DOCUMENTATION: &str = "documentation";
const BENCHMARKING: &str = "benchmarking (198.18/15)";
const MULTICAST: &str = "multicast";
const BROADCAST: &str = "broadcast";
const RESERVED_V4: &str = "reserved (240/4)";

const UNSPECIFIED: &str = "unspecified";
const NAT64_LOCAL: &str = "NAT64 local use (64:ff9b:1::/48)";
const DISCARD: &str = "discard-only (100::/64)";
const TEREDO: &str = "Teredo (2001::/32)";
const IETF_V6: &str = "IETF protocol assignments (2001::/23)";
const UNIQUE_LOCAL: &str = "unique local (fc00::/7)";
const SITE_LOCAL: &str = "site-local (fec0::/10, deprecated)";
const RESERVED_V6: &str = "reserved (outside 2000::/3)";

/// IPv4 ranges that are not global unicast destinations: network, prefix length, rule.
/// First match wins, so the broadcast address comes before `240/4`.
#[rustfmt::skip]
const IPV4_RULES: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0),           8,  THIS_NETWORK),
    (Ipv4Addr::new(10, 0, 0, 0),          8,  PRIVATE),
    (Ipv4Addr::new(100, 64, 0, 0),        10, SHARED),
    (Ipv4Addr::new(127, 0, 0, 0),         8,  LOOPBACK),
    (Ipv4Addr::new(169, 254, 0, 0),       16, LINK_LOCAL),
    (Ipv4Addr::new(172, 16, 0, 0),        12, PRIVATE),
    (Ipv4Addr::new(192, 0, 0, 0),         24, IETF_V4),
    (Ipv4Addr::new(192, 0, 2, 0),         24, DOCUMENTATION),
    (Ipv4Addr::new(192, 168, 0, 0),       16, PRIVATE),
    (Ipv4Addr::new(198, 18, 0, 0),        15, BENCHMARKING),
    (Ipv4Addr::new(198, 51, 100, 0),      24, DOCUMENTATION),
    (Ipv4Addr::new(203, 0, 113, 0),       24, DOCUMENTATION),
    (Ipv4Addr::new(224, 0, 0, 0),         4,  MULTICAST),
    (Ipv4Addr::new(255, 255, 255, 255),   32, BROADCAST),
    (Ipv4Addr::new(240, 0, 0, 0),         4,  RESERVED_V4),
];

/// IPv6 ranges refused by their own rule: network, prefix length, rule. These are checked before
/// the embedded forms, so `::` and `::1` are not read as IPv4-compatible addresses.
#[rustfmt::skip]
const IPV6_RULES: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),             128, UNSPECIFIED),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1),             128, LOOPBACK),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),     48,  NAT64_LOCAL),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),         64,  DISCARD),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),        32,  TEREDO),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),        23,  IETF_V6),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),    32,  DOCUMENTATION),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),        20,  DOCUMENTATION),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),        7,   UNIQUE_LOCAL),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),        10,  LINK_LOCAL),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),        10,  SITE_LOCAL),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),        8,   MULTICAST),
];

/// IPv6 forms that carry an IPv4 address and are judged by it: network, prefix length, and the
/// bit at which the 32-bit IPv4 address starts.
#[rustfmt::skip]
const IPV6_EMBEDDING_IPV4: &[(Ipv6Addr, u8, u32)] = &[
    // IPv4-mapped, ::ffff:a.b.c.d
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),        96,  96),
    // IPv4-compatible (deprecated), ::a.b.c.d
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),             96,  96),
    // NAT64 well-known prefix, 64:ff9b::a.b.c.d
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),     96,  96),
    // 6to4, 2002:aabb:ccdd::/48
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),        16,  16),
];

/// The global unicast block; IPv6 outside it (and outside the forms above) is reserved.
const GLOBAL_UNICAST: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// Loopback and private ranges, as admitted by [`UrlPolicy::allow_private`].
#[rustfmt::skip]
const PRIVATE_NETS: &[(IpAddr, u8)] = &[
    (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),               8),
    (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),                8),
    (IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)),              12),
    (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)),             16),
    (IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)),     128),
    (IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)), 7),
];

fn in_v4(addr: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(addr) & mask == u32::from(net) & mask
}

fn in_v6(addr: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(addr) & mask == u128::from(net) & mask
}

/// The IPv4 address carried by an IPv6 address, for the forms in [`IPV6_EMBEDDING_IPV4`].
///
/// `::` and `::1` are not IPv4-compatible addresses: they are the unspecified and loopback
/// addresses, and carry no IPv4 address.
fn embedded_ipv4(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    if u128::from(addr) <= 1 {
        return None;
    }
    IPV6_EMBEDDING_IPV4
        .iter()
        .find(|&&(net, len, _)| in_v6(addr, net, len))
        .map(|&(_, _, start)| Ipv4Addr::from((u128::from(addr) >> (96 - start)) as u32))
}

fn refusal_rule_v4(addr: Ipv4Addr) -> Option<&'static str> {
    IPV4_RULES
        .iter()
        .find(|&&(net, len, _)| in_v4(addr, net, len))
        .map(|&(_, _, rule)| rule)
}

fn refusal_rule_v6(addr: Ipv6Addr) -> Option<&'static str> {
    if let Some(&(_, _, rule)) = IPV6_RULES
        .iter()
        .find(|&&(net, len, _)| in_v6(addr, net, len))
    {
        return Some(rule);
    }
    if let Some(v4) = embedded_ipv4(addr) {
        return refusal_rule_v4(v4);
    }
    let (net, len) = GLOBAL_UNICAST;
    if !in_v6(addr, net, len) {
        return Some(RESERVED_V6);
    }
    None
}

/// Why an address is not a global unicast destination, or `None` if it is.
pub(crate) fn refusal_rule(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => refusal_rule_v4(v4),
        IpAddr::V6(v6) => refusal_rule_v6(v6),
    }
}

/// Whether a host name ends in a number, the WHATWG test for "this is an IPv4 address":
/// its last label (ignoring one trailing dot) is all digits, or `0x` followed by hex digits.
fn ends_in_number(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let last = name.rsplit('.').next().unwrap_or(name);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// Which webhook URLs are acceptable, and which addresses a delivery may connect to.
///
/// Each customer account chooses its own webhook URL, and the dialer runs inside a private
/// network, so a URL must never lead a delivery to an internal address. A policy makes two
/// checks:
///
/// - [`UrlPolicy::check_url`], when a URL is saved and before each attempt: only `http` and
///   `https` (and `https` only, unless [`UrlPolicy::allow_http`]), no user name or password in
///   the URL, a length cap, a host. A host written as an IP address is judged at once.
/// - [`UrlPolicy::check_addr`], run by every backend on every address the connection will
///   actually use, after DNS resolution. This is the check that matters: a host *name* is never
///   judged by its spelling. `https://localhost/` or `https://127.0.0.1.nip.io/` pass
///   `check_url` and are refused when the name resolves to a loopback address. The check belongs
///   where the address is chosen (a filter inside the resolver, or addresses resolved once,
///   checked and then pinned for the connection); checking a name and letting the client resolve
///   it again would let a customer's DNS answer differently the second time.
///
/// # Odd spellings of an address
///
/// URLs are parsed by the `url` crate, which follows the WHATWG URL standard. For `http` and
/// `https` it turns every spelling of an IPv4 address into the address itself: `2130706433`,
/// `0x7f000001`, `0177.0.0.1`, `127.1`, `127.0.0.1.`, `%31%32%37.0.0.1` and `127。0。0。1` all
/// become the host `127.0.0.1`, and `[::ffff:127.0.0.1]` becomes an IPv6 host. So they are judged
/// by what they mean. A host *name* that still ends in a number (which `url` does not produce for
/// `http` and `https`) is refused all the same: such a name is an address in disguise.
///
/// # What is refused
///
/// An address is refused unless it is a global unicast destination. The ranges, with the rule
/// named in [`Error::AddressRefused`]:
///
/// - IPv4: `0/8` this network, `10/8`, `172.16/12`, `192.168/16` private, `100.64/10` shared
///   (CGNAT), `127/8` loopback, `169.254/16` link-local, `192.0.0/24` IETF protocol assignments,
///   `192.0.2/24`, `198.51.100/24`, `203.0.113/24` documentation, `198.18/15` benchmarking,
///   `224/4` multicast, `255.255.255.255` broadcast, `240/4` reserved.
/// - IPv6: `::` unspecified, `::1` loopback, `64:ff9b:1::/48` NAT64 local use, `100::/64`
///   discard-only, `2001::/32` Teredo, the rest of `2001::/23` IETF protocol assignments,
///   `2001:db8::/32` and `3fff::/20` documentation, `fc00::/7` unique local, `fe80::/10`
///   link-local, `fec0::/10` site-local, `ff00::/8` multicast, and everything else outside the
///   global unicast block `2000::/3`.
/// - IPv6 that carries an IPv4 address is judged by that IPv4 address: IPv4-mapped
///   `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64 `64:ff9b::/96`, and 6to4 `2002::/16`
///   (the IPv4 address in bits 16 to 48).
///
/// An allowlisted network ([`UrlPolicy::allow_net`], [`UrlPolicy::allow_private`]) admits the
/// addresses inside it even when a rule would refuse them, and IPv6 forms whose embedded IPv4
/// address is inside it. It admits nothing else.
///
/// # Examples
///
/// ```
/// use call_result_webhook::{Error, UrlPolicy};
/// use url::Url;
///
/// let policy = UrlPolicy::new();
/// policy.check_url(&Url::parse("https://crm.example.com/hooks/calls")?)?;
///
/// // An internal address is refused, however it is spelled.
/// let err = policy.check_url(&Url::parse("https://0x7f000001/")?).unwrap_err();
/// assert!(matches!(err, Error::AddressRefused { rule: "loopback", .. }));
///
/// // A receiver on the dialer's own network has to be allowlisted.
/// let on_premises = UrlPolicy::new().allow_net("10.20.0.0/16".parse()?);
/// on_premises.check_url(&Url::parse("https://10.20.1.5/webhook")?)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct UrlPolicy {
    https_required: bool,
    allowlist: Vec<IpNet>,
    max_url_len: usize,
}

impl PartialEq for UrlPolicy {
    /// Two policies are equal when they admit the same URLs and addresses: the same `https`
    /// rule, the same URL length cap, and the same allowlisted networks in any order (a network
    /// given twice counts once).
    fn eq(&self, other: &Self) -> bool {
        let nets = |policy: &UrlPolicy| {
            let mut nets = policy.allowlist.clone();
            nets.sort_unstable();
            nets.dedup();
            nets
        };
        self.https_required == other.https_required
            && self.max_url_len == other.max_url_len
            && nets(self) == nets(other)
    }
}

impl Eq for UrlPolicy {}

impl Default for UrlPolicy {
    /// `https` required, nothing allowlisted, URLs of at most 2048 bytes.
    fn default() -> Self {
        UrlPolicy {
            https_required: true,
            allowlist: Vec::new(),
            max_url_len: DEFAULT_MAX_URL_LEN,
        }
    }
}

impl UrlPolicy {
    /// The default policy: `https` required, nothing allowlisted, URLs of at most 2048 bytes.
    pub fn new() -> Self {
        UrlPolicy::default()
    }

    /// Permits `http://` URLs as well as `https://` ones (`false` requires `https` again).
    #[must_use]
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.https_required = !allow;
        self
    }

    /// Admits the addresses in `net` even where a rule would refuse them, for on-premises
    /// receivers and tests. IPv6 forms that carry an IPv4 address inside `net` are admitted too.
    #[must_use]
    pub fn allow_net(mut self, net: IpNet) -> Self {
        self.allowlist.push(net.trunc());
        self
    }

    /// Admits loopback (`127/8`, `::1`) and private ranges (`10/8`, `172.16/12`, `192.168/16`,
    /// `fc00::/7`). Link-local, CGNAT and the other ranges stay refused.
    #[must_use]
    pub fn allow_private(mut self) -> Self {
        for &(addr, len) in PRIVATE_NETS {
            let net = IpNet::new(addr, len).expect("prefix lengths in PRIVATE_NETS are valid");
            self.allowlist.push(net);
        }
        self
    }

    /// Caps the length of a URL, in bytes of its normalised form.
    #[must_use]
    pub fn max_url_len(mut self, bytes: usize) -> Self {
        self.max_url_len = bytes;
        self
    }

    /// Whether only `https` URLs are accepted.
    pub fn https_required(&self) -> bool {
        self.https_required
    }

    /// Checks a webhook URL before it is saved or used.
    ///
    /// Refuses, as [`Error::InvalidUrl`]: a scheme other than `http` or `https` (and `http`
    /// unless [`allow_http`](Self::allow_http)), a user name or password in the URL (never
    /// repeated in the error), a URL longer than the cap, and a URL with no host. When the host
    /// is an IP address, it is also checked with [`check_addr`](Self::check_addr), which refuses
    /// as [`Error::AddressRefused`].
    ///
    /// A host name passes whatever it resolves to (`localhost` included): the addresses it
    /// resolves to are checked with [`check_addr`](Self::check_addr) when connecting.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] for a refused scheme, userinfo, length or missing host, and
    /// [`Error::AddressRefused`] for an IP-literal host the address rules refuse.
    pub fn check_url(&self, url: &Url) -> Result<()> {
        match url.scheme() {
            "https" => {}
            "http" if !self.https_required => {}
            "http" => return Err(Error::url("http is not allowed, the URL must use https")),
            other => {
                let shown = other.get(..16).unwrap_or(other);
                return Err(Error::url(format_args!(
                    "scheme {shown:?} is not allowed, only http and https"
                )));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::url(
                "a user name or password in the URL is not allowed; \
                 set them as the account's webhook credentials",
            ));
        }
        let len = url.as_str().len();
        if len > self.max_url_len {
            return Err(Error::url(format_args!(
                "the URL is {len} bytes, over the cap of {} bytes",
                self.max_url_len
            )));
        }
        let host = url.host_str().unwrap_or_default();
        match url.host() {
            None => Err(Error::url("the URL has no host")),
            Some(Host::Domain(name)) => self.check_host_name(name),
            Some(Host::Ipv4(addr)) => self.check_addr(host, IpAddr::V4(addr)),
            Some(Host::Ipv6(addr)) => self.check_addr(host, IpAddr::V6(addr)),
        }
    }

    /// A host name is not judged by its spelling, unless it is an address in disguise.
    fn check_host_name(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::url("the URL has no host"));
        }
        let bare = name.strip_suffix('.').unwrap_or(name);
        let bare = bare
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(bare);
        if let Ok(addr) = bare.parse::<IpAddr>() {
            return self.check_addr(name, addr);
        }
        if ends_in_number(name) {
            return Err(Error::url(
                "the host name ends in a number, so it is an IP address spelled oddly; \
                 write the address in dotted form",
            ));
        }
        Ok(())
    }

    /// Checks an address a connection is about to use: every backend runs this on every
    /// address, after DNS resolution, before connecting.
    ///
    /// Refuses an address that is not a global unicast destination (the ranges are listed on
    /// [`UrlPolicy`]) unless it is allowlisted, as [`Error::AddressRefused`] naming `host`, the
    /// address and the rule.
    ///
    /// # Errors
    ///
    /// [`Error::AddressRefused`] when `addr` is not a global unicast address and no allowlisted
    /// network holds it.
    pub fn check_addr(&self, host: &str, addr: IpAddr) -> Result<()> {
        let Some(rule) = refusal_rule(addr) else {
            return Ok(());
        };
        if self.is_allowlisted(addr) {
            return Ok(());
        }
        Err(Error::AddressRefused {
            host: host.to_owned(),
            addr,
            rule,
        })
    }

    fn is_allowlisted(&self, addr: IpAddr) -> bool {
        let listed = |addr: IpAddr| self.allowlist.iter().any(|net| net.contains(&addr));
        listed(addr)
            || match addr {
                IpAddr::V6(v6) => embedded_ipv4(v6).is_some_and(|v4| listed(IpAddr::V4(v4))),
                IpAddr::V4(_) => false,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_equal_when_they_admit_the_same() {
        let a = UrlPolicy::new()
            .allow_http(true)
            .allow_net("127.0.0.1/32".parse().unwrap())
            .allow_net("10.0.0.0/8".parse().unwrap());
        let b = UrlPolicy::new()
            .allow_net("10.0.0.0/8".parse().unwrap())
            .allow_net("127.0.0.1/32".parse().unwrap())
            .allow_net("127.0.0.1/32".parse().unwrap())
            .allow_http(true);
        assert_eq!(a, b);
        assert_eq!(UrlPolicy::new(), UrlPolicy::default());
        assert_ne!(a, a.clone().allow_http(false));
        assert_ne!(a, a.clone().max_url_len(100));
        assert_ne!(a, a.clone().allow_net("192.168.0.0/16".parse().unwrap()));
        assert_ne!(UrlPolicy::new(), UrlPolicy::new().allow_private());
    }
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    /// Asserts `AddressRefused` with this rule and returns its host and address.
    #[track_caller]
    fn assert_refused(result: Result<()>, rule: &str) -> (String, IpAddr) {
        match result {
            Err(Error::AddressRefused {
                host,
                addr,
                rule: got,
            }) => {
                assert_eq!(got, rule, "wrong rule for {addr}");
                (host, addr)
            }
            other => panic!("expected AddressRefused ({rule}), got {other:?}"),
        }
    }

    /// Asserts `InvalidUrl` and returns its reason.
    #[track_caller]
    fn assert_invalid_url(result: Result<()>) -> String {
        match result {
            Err(Error::InvalidUrl { reason }) => reason,
            other => panic!("expected InvalidUrl, got {other:?}"),
        }
    }

    /// Addresses that must be refused, with the rule that refuses them.
    const REFUSED_ADDRS: &[(&str, &str)] = &[
        ("0.0.0.0", "this network (0/8)"),
        ("0.255.255.255", "this network (0/8)"),
        ("10.0.0.1", "private (RFC 1918)"),
        ("10.255.255.255", "private (RFC 1918)"),
        ("100.64.0.1", "shared address space (CGNAT, 100.64/10)"),
        ("100.127.255.254", "shared address space (CGNAT, 100.64/10)"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("169.254.169.254", "link-local"),
        ("172.16.0.1", "private (RFC 1918)"),
        ("172.31.255.255", "private (RFC 1918)"),
        ("192.0.0.8", "IETF protocol assignments (192.0.0/24)"),
        ("192.0.0.170", "IETF protocol assignments (192.0.0/24)"),
        ("192.0.2.1", "documentation"),
        ("192.168.0.1", "private (RFC 1918)"),
        ("192.168.255.255", "private (RFC 1918)"),
        ("198.18.0.1", "benchmarking (198.18/15)"),
        ("198.19.255.255", "benchmarking (198.18/15)"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved (240/4)"),
        ("255.255.255.254", "reserved (240/4)"),
        ("255.255.255.255", "broadcast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private (RFC 1918)"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:0.0.0.0", "this network (0/8)"),
        ("::127.0.0.1", "loopback"),
        ("::192.168.1.1", "private (RFC 1918)"),
        ("::2", "this network (0/8)"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("64:ff9b::6440:1", "shared address space (CGNAT, 100.64/10)"),
        ("64:ff9b:1::1", "NAT64 local use (64:ff9b:1::/48)"),
        ("64:ff9b:1::808:808", "NAT64 local use (64:ff9b:1::/48)"),
        ("2002:7f00:1::1", "loopback"),
        ("2002:a00:1::", "private (RFC 1918)"),
        ("2002:c0a8:101:1::1", "private (RFC 1918)"),
        ("2002:e000:1::", "multicast"),
        ("2001::1", "Teredo (2001::/32)"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo (2001::/32)"),
        ("2001:2::1", "IETF protocol assignments (2001::/23)"),
        ("2001:1ff::1", "IETF protocol assignments (2001::/23)"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("100::1", "discard-only (100::/64)"),
        ("fc00::1", "unique local (fc00::/7)"),
        ("fd12:3456::1", "unique local (fc00::/7)"),
        ("fe80::1", "link-local"),
        ("febf:ffff::1", "link-local"),
        ("fec0::1", "site-local (fec0::/10, deprecated)"),
        ("ff02::1", "multicast"),
        ("ff05::2", "multicast"),
        ("::ffff:0:a00:1", "reserved (outside 2000::/3)"),
        ("4000::1", "reserved (outside 2000::/3)"),
        ("5f00::1", "reserved (outside 2000::/3)"),
    ];

    /// URLs whose host must be refused, the rule, and the address it means.
    const REFUSED_URLS: &[(&str, &str, &str)] = &[
        ("https://2130706433/", "loopback", "127.0.0.1"),
        ("https://0x7f000001/", "loopback", "127.0.0.1"),
        ("https://0177.0.0.1/", "loopback", "127.0.0.1"),
        ("https://127.1/", "loopback", "127.0.0.1"),
        ("https://0x7f.1/", "loopback", "127.0.0.1"),
        ("https://127.0.0.1./", "loopback", "127.0.0.1"),
        ("https://%31%32%37.0.0.1/", "loopback", "127.0.0.1"),
        (
            "https://127\u{3002}0\u{3002}0\u{3002}1/",
            "loopback",
            "127.0.0.1",
        ),
        (
            "https://[::ffff:127.0.0.1]/",
            "loopback",
            "::ffff:127.0.0.1",
        ),
        (
            "https://[0:0:0:0:0:ffff:7f00:1]/",
            "loopback",
            "::ffff:127.0.0.1",
        ),
        ("https://[::1]:8443/hook", "loopback", "::1"),
        ("https://[::]/", "unspecified", "::"),
        ("https://0/", "this network (0/8)", "0.0.0.0"),
        (
            "https://10.0.0.1:8443/hook",
            "private (RFC 1918)",
            "10.0.0.1",
        ),
        ("https://3232235777/", "private (RFC 1918)", "192.168.1.1"),
        (
            "https://169.254.169.254/latest/",
            "link-local",
            "169.254.169.254",
        ),
        ("https://0xa9fea9fe/", "link-local", "169.254.169.254"),
        (
            "https://100.100.100.200/",
            "shared address space (CGNAT, 100.64/10)",
            "100.100.100.200",
        ),
        ("https://[fd00::1]/", "unique local (fc00::/7)", "fd00::1"),
        (
            "https://[64:ff9b::a00:1]/",
            "private (RFC 1918)",
            "64:ff9b::a00:1",
        ),
        (
            "https://[2002:a9fe:a9fe::]/",
            "link-local",
            "2002:a9fe:a9fe::",
        ),
        ("https://[fe80::1]/", "link-local", "fe80::1"),
        ("https://[ff02::1]/", "multicast", "ff02::1"),
    ];

    /// URLs refused as invalid before any address is looked at (default policy), with a word
    /// the reason must contain.
    const INVALID_URLS: &[(&str, &str)] = &[
        ("http://crm.example.com/hook", "must use https"),
        ("http://127.0.0.1/hook", "must use https"),
        ("ftp://crm.example.com/hook", "scheme \"ftp\""),
        ("ws://crm.example.com/hook", "scheme \"ws\""),
        ("file:///etc/passwd", "scheme \"file\""),
        ("data:text/plain,hello", "scheme \"data\""),
        ("javascript:alert(1)", "scheme \"javascript\""),
        ("gopher://127.0.0.1/", "scheme \"gopher\""),
        (
            "https://alice:s3cr3t@crm.example.com/",
            "user name or password",
        ),
        ("https://alice@crm.example.com/", "user name or password"),
        ("https://:s3cr3t@crm.example.com/", "user name or password"),
    ];

    #[test]
    fn refuses_every_non_global_address_with_its_rule() {
        let policy = UrlPolicy::new();
        for &(addr, rule) in REFUSED_ADDRS {
            let (host, got) = assert_refused(policy.check_addr("receiver.example", ip(addr)), rule);
            assert_eq!(host, "receiver.example");
            assert_eq!(got, ip(addr));
            assert_eq!(refusal_rule(ip(addr)), Some(rule), "{addr}");
        }
    }

    #[test]
    fn refuses_every_internal_url_by_what_it_means() {
        let policy = UrlPolicy::new();
        for &(input, rule, addr) in REFUSED_URLS {
            let parsed = url(input);
            let (host, got) = assert_refused(policy.check_url(&parsed), rule);
            assert_eq!(got, ip(addr), "{input}");
            assert_eq!(Some(host.as_str()), parsed.host_str(), "{input}");
        }
    }

    #[test]
    fn refuses_invalid_urls() {
        let policy = UrlPolicy::new();
        for &(input, expected) in INVALID_URLS {
            let reason = assert_invalid_url(policy.check_url(&url(input)));
            assert!(reason.contains(expected), "{input}: {reason}");
        }
    }

    #[test]
    fn url_crate_turns_odd_spellings_into_addresses() {
        // The URL-time check relies on this: for http and https, the url crate leaves no
        // IP-looking host name behind.
        for input in [
            "https://2130706433/",
            "https://0x7f000001/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://127.0.0.1./",
        ] {
            assert_eq!(
                url(input).host(),
                Some(Host::Ipv4(Ipv4Addr::LOCALHOST)),
                "{input}"
            );
        }
        assert_eq!(
            url("https://[::ffff:127.0.0.1]/").host(),
            Some(Host::Ipv6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()))
        );
        assert_eq!(
            url("https://localhost/").host(),
            Some(Host::Domain("localhost"))
        );
    }

    #[test]
    fn public_addresses_pass() {
        let policy = UrlPolicy::new();
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "9.9.9.9",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(refusal_rule(ip(addr)), None, "{addr}");
            assert!(policy.check_addr("receiver.example", ip(addr)).is_ok());
        }
        for input in [
            "https://1.1.1.1/hook",
            "https://[2606:4700::1111]/hook",
            "https://crm.example.com:8443/hooks/calls?account=42",
        ] {
            policy.check_url(&url(input)).unwrap();
        }
    }

    #[test]
    fn host_names_pass_at_url_time_and_their_addresses_are_judged_at_connect_time() {
        let policy = UrlPolicy::new();
        for input in [
            "https://localhost/",
            "https://localhost./",
            "https://127.0.0.1.nip.io/",
        ] {
            policy.check_url(&url(input)).unwrap();
        }
        assert_refused(policy.check_addr("localhost", ip("127.0.0.1")), "loopback");
        assert_refused(policy.check_addr("localhost", ip("::1")), "loopback");
        let (host, _) = assert_refused(
            policy.check_addr("127.0.0.1.nip.io", ip("127.0.0.1")),
            "loopback",
        );
        assert_eq!(host, "127.0.0.1.nip.io");
    }

    #[test]
    fn host_names_that_are_addresses_in_disguise_are_refused() {
        // The url crate never leaves these for http and https; the check stands behind it.
        let policy = UrlPolicy::new();
        assert_refused(policy.check_host_name("127.0.0.1"), "loopback");
        assert_refused(policy.check_host_name("127.0.0.1."), "loopback");
        assert_refused(policy.check_host_name("[::1]"), "loopback");
        assert_refused(policy.check_host_name("10.1.2.3"), "private (RFC 1918)");
        for name in [
            "2130706433",
            "0x7f000001",
            "127.1",
            "0177.0.0.1",
            "1.2.0x7f",
            "0x",
        ] {
            assert_invalid_url(policy.check_host_name(name));
        }
        for name in [
            "localhost",
            "example.com",
            "1e100.net",
            "0x7f.example",
            "a0x1",
        ] {
            policy.check_host_name(name).unwrap();
        }
        assert_invalid_url(policy.check_host_name(""));
    }

    #[test]
    fn allowlist_admits_exactly_what_it_names() {
        let policy = UrlPolicy::new().allow_net("127.0.0.1/32".parse().unwrap());
        for admitted in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            policy.check_addr("h", ip(admitted)).unwrap();
        }
        assert_refused(policy.check_addr("h", ip("127.0.0.2")), "loopback");
        assert_refused(policy.check_addr("h", ip("::1")), "loopback");
        assert_refused(policy.check_addr("h", ip("10.0.0.1")), "private (RFC 1918)");
        assert_refused(policy.check_addr("h", ip("::ffff:127.0.0.2")), "loopback");

        let v6 = UrlPolicy::new().allow_net("fd00:1::/64".parse().unwrap());
        v6.check_addr("h", ip("fd00:1::5")).unwrap();
        assert_refused(
            v6.check_addr("h", ip("fd00:2::5")),
            "unique local (fc00::/7)",
        );
        assert_refused(v6.check_addr("h", ip("127.0.0.1")), "loopback");

        // `::` and `::1` carry no IPv4 address: allowlisting 0/8 does not admit them.
        let zero = UrlPolicy::new().allow_net("0.0.0.0/8".parse().unwrap());
        zero.check_addr("h", ip("0.0.0.1")).unwrap();
        zero.check_addr("h", ip("::ffff:0.0.0.1")).unwrap();
        assert_refused(zero.check_addr("h", ip("::1")), "loopback");
        assert_refused(zero.check_addr("h", ip("::")), "unspecified");

        // Host bits in the allowlisted network do not matter.
        let sloppy = UrlPolicy::new().allow_net("10.20.30.40/16".parse().unwrap());
        sloppy.check_addr("h", ip("10.20.0.1")).unwrap();
        assert_refused(
            sloppy.check_addr("h", ip("10.21.0.1")),
            "private (RFC 1918)",
        );

        let local = UrlPolicy::new()
            .allow_http(true)
            .allow_net("127.0.0.1/32".parse().unwrap());
        local.check_url(&url("http://127.0.0.1:8080/hook")).unwrap();
        local
            .check_url(&url("http://2130706433:8080/hook"))
            .unwrap();
        assert_refused(
            local.check_url(&url("http://127.0.0.2:8080/hook")),
            "loopback",
        );
    }

    #[test]
    fn allow_private_admits_loopback_and_private_ranges_only() {
        let policy = UrlPolicy::new().allow_private();
        for admitted in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "::1",
            "fd12::1",
            "::ffff:192.168.1.1",
        ] {
            policy.check_addr("h", ip(admitted)).unwrap();
        }
        for (refused, rule) in [
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared address space (CGNAT, 100.64/10)"),
            ("0.0.0.0", "this network (0/8)"),
            ("224.0.0.1", "multicast"),
            ("fe80::1", "link-local"),
            ("::", "unspecified"),
        ] {
            assert_refused(policy.check_addr("h", ip(refused)), rule);
        }
    }

    #[test]
    fn http_is_refused_unless_allowed() {
        let http = url("http://crm.example.com/hook");
        let policy = UrlPolicy::new();
        assert!(policy.https_required());
        let reason = assert_invalid_url(policy.check_url(&http));
        assert!(reason.contains("https"), "{reason}");

        let relaxed = UrlPolicy::new().allow_http(true);
        assert!(!relaxed.https_required());
        relaxed.check_url(&http).unwrap();
        relaxed
            .check_url(&url("https://crm.example.com/hook"))
            .unwrap();
        assert_invalid_url(relaxed.check_url(&url("ftp://crm.example.com/hook")));
        assert_refused(relaxed.check_url(&url("http://127.1/")), "loopback");

        let strict_again = relaxed.allow_http(false);
        assert!(strict_again.https_required());
        assert_invalid_url(strict_again.check_url(&http));
    }

    #[test]
    fn userinfo_is_refused_without_being_repeated() {
        let policy = UrlPolicy::new().allow_http(true);
        for input in [
            "https://alice:Pa55w0rd-XYZZY@crm.example.com/hook",
            "http://alice:Pa55w0rd-XYZZY@crm.example.com/hook",
            "https://:Pa55w0rd-XYZZY@crm.example.com/hook",
            "https://alice@crm.example.com/hook",
            "https://alice:Pa55w0rd-XYZZY@127.0.0.1/hook",
        ] {
            let err = policy.check_url(&url(input)).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{input}: {err:?}");
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("Pa55w0rd"), "{input}: {shown}");
                assert!(!shown.contains("alice"), "{input}: {shown}");
            }
        }
    }

    #[test]
    fn over_long_urls_are_refused() {
        let policy = UrlPolicy::new();
        let base = "https://crm.example.com/";
        let at_cap = format!("{base}{}", "a".repeat(2048 - base.len()));
        let over = format!("{at_cap}b");
        policy.check_url(&url(&at_cap)).unwrap();
        let reason = assert_invalid_url(policy.check_url(&url(&over)));
        assert!(
            reason.contains("2049") && reason.contains("2048"),
            "{reason}"
        );
        assert!(!reason.contains("crm.example.com"), "{reason}");

        let short = UrlPolicy::new().max_url_len(30);
        short
            .check_url(&url("https://crm.example.com/hook"))
            .unwrap();
        assert_invalid_url(short.check_url(&url("https://crm.example.com/hooks/calls")));
    }

    /// The refused IPv4 ranges, written independently of the rule table.
    const REFUSED_V4_NETS: &[&str] = &[
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
    ];

    fn refused_v4() -> impl Strategy<Value = Ipv4Addr> {
        (0..REFUSED_V4_NETS.len(), any::<u32>()).prop_map(|(i, bits)| {
            let net: ipnet::Ipv4Net = REFUSED_V4_NETS[i].parse().unwrap();
            let host_bits = u32::from(net.hostmask());
            Ipv4Addr::from(u32::from(net.network()) | (bits & host_bits))
        })
    }

    /// Each IPv6 form that carries `v4`; `tail` fills the bits 6to4 leaves free.
    fn embeddings(v4: Ipv4Addr, tail: u128) -> [Ipv6Addr; 4] {
        let v4 = u128::from(u32::from(v4));
        let nat64 = u128::from(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0));
        let six_to_four = u128::from(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0));
        [
            Ipv6Addr::from(0xffff_0000_0000 | v4),
            Ipv6Addr::from(v4),
            Ipv6Addr::from(nat64 | v4),
            Ipv6Addr::from(six_to_four | (v4 << 80) | (tail & ((1 << 80) - 1))),
        ]
    }

    proptest! {
        #[test]
        fn embedded_refused_ipv4_gets_the_ipv4_verdict(v4 in refused_v4(), tail in any::<u128>()) {
            let rule = refusal_rule(IpAddr::V4(v4));
            prop_assert!(rule.is_some(), "{} not refused", v4);
            for v6 in embeddings(v4, tail) {
                let got = refusal_rule(IpAddr::V6(v6));
                prop_assert!(got.is_some(), "{} ({}) not refused", v6, v4);
                // `::` and `::1` keep their own names; every other form takes the IPv4 rule.
                if u128::from(v6) > 1 {
                    prop_assert_eq!(got, rule, "{} ({})", v6, v4);
                }
                let err = UrlPolicy::new().check_addr("h", IpAddr::V6(v6));
                prop_assert!(matches!(err, Err(Error::AddressRefused { .. })), "{}", v6);
            }
        }

        #[test]
        fn embedded_ipv4_of_any_kind_gets_the_ipv4_verdict(v4 in any::<u32>(), tail in any::<u128>()) {
            let v4 = Ipv4Addr::from(v4);
            prop_assume!(u32::from(v4) > 1);
            let rule = refusal_rule(IpAddr::V4(v4));
            for v6 in embeddings(v4, tail) {
                prop_assert_eq!(refusal_rule(IpAddr::V6(v6)), rule, "{} ({})", v6, v4);
            }
        }

        #[test]
        fn allowlist_admits_only_its_network(bits in any::<u32>()) {
            let addr = Ipv4Addr::from(0x0a00_0000 | (bits & 0x00ff_ffff));
            let policy = UrlPolicy::new().allow_net("10.1.0.0/16".parse().unwrap());
            let inside = addr.octets()[1] == 1;
            prop_assert_eq!(policy.check_addr("h", IpAddr::V4(addr)).is_ok(), inside);
            prop_assert_eq!(policy.check_addr("h", IpAddr::V6(addr.to_ipv6_mapped())).is_ok(), inside);
        }
    }
}
