//! What the backends share: the check point every destination passes before a connection is
//! made, the check that a request is one we can send at all, and the reading of a backend's error
//! chain that finds a refusal or a failed lookup inside it.

use std::collections::HashSet;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use http::Uri;
use url::Url;

use crate::dispatch::resolve::SharedResolver;
use crate::dispatch::{TransportError, TransportErrorKind};
use crate::policy::UrlPolicy;

/// The request must name an `http` or `https` URL with a host; anything else is not ours to send.
pub(crate) fn check_target(uri: &Uri) -> Result<(), TransportError> {
    let scheme_ok = matches!(
        uri.scheme_str(),
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https")
    );
    if !scheme_ok {
        return Err(TransportError::new(
            TransportErrorKind::InvalidRequest,
            "the request URI must be an absolute http or https URL",
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(TransportError::new(
            TransportErrorKind::InvalidRequest,
            "the request URI has no host",
        ));
    }
    Ok(())
}

/// The most URLs a [`Guard`] remembers as admitted; when full it forgets them all and starts
/// again.
const ADMITTED_CAP: usize = 1024;

/// The check point every destination passes before a connection is made: the dispatcher's
/// [`UrlPolicy`], shared cheaply by the resolver, the connector and the dispatcher.
///
/// The policy is the one set on the builder, else the one adopted from the `Webhooks` engine
/// ([`Guard::adopt`]), else [`UrlPolicy::default`]. Every clone shares one cell, so a policy
/// adopted through the dispatcher is the one its connector or resolver reads at the next
/// connection.
#[derive(Clone)]
pub(crate) struct Guard(Arc<Cell>);

struct Cell {
    /// The builder's policy, or the default one when the builder was given none.
    base: Enforced,
    /// Whether `base` was given to the builder (and so cannot be replaced by adoption).
    explicit: bool,
    /// The policy adopted from the engine; set at most once, and only when `explicit` is false.
    adopted: OnceLock<Enforced>,
}

/// One policy, and the URLs it has admitted.
struct Enforced {
    policy: UrlPolicy,
    /// URLs this policy has admitted. A policy never changes, so an admission stays true, and
    /// checking a URL seen before is a lookup rather than a parse (which cost a tenth of the
    /// hyper backend's throughput on loopback). Two `Uri`s are equal only when the scheme and
    /// authority match up to ASCII case and the path and query match exactly, so they parse
    /// to the same URL. Refusals are not kept: they are checked afresh every time. Kept beside
    /// its policy, so an admission under one policy never answers for another.
    admitted: RwLock<HashSet<Uri>>,
}

impl Enforced {
    fn new(policy: UrlPolicy) -> Self {
        Enforced {
            policy,
            admitted: RwLock::new(HashSet::new()),
        }
    }
}

impl fmt::Debug for Guard {
    /// The policy only: the admitted URLs may carry tokens in their queries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("policy", self.policy())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard holding `policy`, set explicitly on a builder.
    pub(crate) fn new(policy: UrlPolicy) -> Self {
        Guard::with(policy, true)
    }

    /// A guard for a builder's policy setting: explicit when there is one, otherwise
    /// [`UrlPolicy::default`] until a policy is adopted.
    pub(crate) fn from_builder(policy: Option<UrlPolicy>) -> Self {
        match policy {
            Some(policy) => Guard::new(policy),
            None => Guard::with(UrlPolicy::default(), false),
        }
    }

    fn with(policy: UrlPolicy, explicit: bool) -> Self {
        Guard(Arc::new(Cell {
            base: Enforced::new(policy),
            explicit,
            adopted: OnceLock::new(),
        }))
    }

    fn current(&self) -> &Enforced {
        self.0.adopted.get().unwrap_or(&self.0.base)
    }

    /// The policy being enforced now.
    pub(crate) fn policy(&self) -> &UrlPolicy {
        &self.current().policy
    }

    /// Takes `policy` from the `Webhooks` engine: adopted when the builder set none and none
    /// was adopted before; accepted when it equals the one held; refused otherwise, and then
    /// the policy held stays in force.
    pub(crate) fn adopt(&self, policy: &UrlPolicy) -> Result<(), crate::Error> {
        let held = if self.0.explicit {
            &self.0.base.policy
        } else {
            &self
                .0
                .adopted
                .get_or_init(|| Enforced::new(policy.clone()))
                .policy
        };
        if held == policy {
            return Ok(());
        }
        let reason = if self.0.explicit {
            "the dispatcher was built with a different URL policy than the one given to \
             Webhooks::builder().policy(); set the policy once, on the Webhooks builder"
        } else {
            "the dispatcher already adopted a different URL policy than the one given to \
             Webhooks::builder().policy(); share one dispatcher only between engines with \
             the same policy"
        };
        Err(crate::Error::config("policy", reason))
    }

    /// Checks the request's URL as a whole ([`UrlPolicy::check_url`]) before each attempt.
    pub(crate) fn check_uri(&self, uri: &Uri) -> Result<(), crate::Error> {
        let current = self.current();
        let known = current
            .admitted
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(uri);
        if known {
            return Ok(());
        }
        let url = Url::parse(&uri.to_string()).map_err(|e| crate::Error::InvalidUrl {
            reason: e.to_string(),
        })?;
        current.policy.check_url(&url)?;
        let mut admitted = current
            .admitted
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if admitted.len() >= ADMITTED_CAP {
            admitted.clear();
        }
        admitted.insert(uri.clone());
        Ok(())
    }

    /// Checks one address the connection is about to use ([`UrlPolicy::check_addr`]). `host`
    /// is the URL's host without brackets.
    pub(crate) fn check_addr(&self, host: &str, addr: IpAddr) -> Result<(), crate::Error> {
        self.policy().check_addr(host, addr)
    }

    /// Keeps the admissible addresses, in order; refuses the lookup when none is.
    pub(crate) fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, crate::Error> {
        let mut kept = Vec::new();
        let mut refusal = None;
        for addr in addrs {
            match self.check_addr(host, addr.ip()) {
                Ok(()) => kept.push(addr),
                Err(e) => {
                    tracing::debug!(host, addr = %addr.ip(), error = %e, "address refused");
                    refusal.get_or_insert(e);
                }
            }
        }
        match refusal {
            Some(e) if kept.is_empty() => Err(e),
            _ => Ok(kept),
        }
    }
}

/// The addresses a connection to `host:port` may use: the address itself when `host` is an IP
/// literal (never resolved), otherwise the resolver's answer. Nothing is checked here: every
/// address still goes through [`Guard::filter`] before it is connected to. `host` is bare.
pub(crate) fn candidates(
    resolver: &SharedResolver,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, DnsError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs = resolver
        .resolve(host, port)
        .map_err(|e| DnsError::new(host, e))?;
    if addrs.is_empty() {
        return Err(DnsError::new(host, io::Error::other("no addresses")));
    }
    Ok(addrs)
}

/// The port a connection to `uri` uses: the URI's own, or the scheme's default.
pub(crate) fn port_of(uri: &Uri) -> u16 {
    uri.port_u16().unwrap_or_else(|| {
        if uri
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            443
        } else {
            80
        }
    })
}

/// `host` without the brackets of an IPv6 literal.
pub(crate) fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Name resolution failed. Shows the host name, nothing else from the URL.
#[derive(Debug)]
pub(crate) struct DnsError {
    host: String,
    source: io::Error,
}

impl DnsError {
    pub(crate) fn new(host: &str, source: io::Error) -> Self {
        DnsError {
            host: host.to_owned(),
            source,
        }
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not resolve `{}`", self.host)
    }
}

impl StdError for DnsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// The error and its causes, looking inside `io::Error`s too (an `io::Error`'s `source()` skips
/// the error it wraps).
pub(crate) fn error_chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> Vec<&'a (dyn StdError + 'static)> {
    let mut chain = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        if chain.len() == 32 {
            break;
        }
        chain.push(e);
        next = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    chain
}

/// The guard's refusal found somewhere in a backend's error chain, rebuilt as a
/// [`TransportError`] of kind `Refused` whose source is the refusal itself.
pub(crate) fn refusal_in(chain: &[&(dyn StdError + 'static)]) -> Option<TransportError> {
    let refusal = match chain
        .iter()
        .find_map(|e| e.downcast_ref::<crate::Error>())?
    {
        crate::Error::AddressRefused { host, addr, rule } => crate::Error::AddressRefused {
            host: host.clone(),
            addr: *addr,
            rule,
        },
        crate::Error::InvalidUrl { reason } => crate::Error::InvalidUrl {
            reason: reason.clone(),
        },
        _ => return None,
    };
    Some(TransportError::from(refusal))
}

/// Whether a failed lookup or a TLS failure is somewhere in the chain.
pub(crate) fn is_dns(chain: &[&(dyn StdError + 'static)]) -> bool {
    chain.iter().any(|e| e.is::<DnsError>())
}

/// The kind of a TLS failure somewhere in the chain, if rustls reported one: the receiver's
/// certificate refused ([`TransportErrorKind::Tls`]), or any other handshake failure.
pub(crate) fn tls_kind(chain: &[&(dyn StdError + 'static)]) -> Option<TransportErrorKind> {
    chain
        .iter()
        .find_map(|e| e.downcast_ref::<rustls::Error>())
        .map(tls_error_kind)
}

/// [`TransportErrorKind::Tls`] for a refused certificate, [`TransportErrorKind::TlsHandshake`]
/// for anything else rustls reports.
pub(crate) fn tls_error_kind(err: &rustls::Error) -> TransportErrorKind {
    match err {
        rustls::Error::InvalidCertificate(_) => TransportErrorKind::Tls,
        _ => TransportErrorKind::TlsHandshake,
    }
}

/// The kind of the first I/O failure in the chain that says more than "I/O error", for a
/// failure before the response headers were complete; `None` when the chain holds no I/O error.
pub(crate) fn io_kind_in(chain: &[&(dyn StdError + 'static)]) -> Option<TransportErrorKind> {
    let mut kinds = chain
        .iter()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .map(|e| io_kind(e.kind()))
        .peekable();
    kinds.peek()?;
    Some(
        kinds
            .find(|k| *k != TransportErrorKind::Io)
            .unwrap_or(TransportErrorKind::Io),
    )
}

/// The kind of an I/O failure before the response headers were complete. Both backends sort
/// through this, so the same receiver behaviour reads the same on either.
pub(crate) fn io_kind(kind: io::ErrorKind) -> TransportErrorKind {
    use io::ErrorKind as K;
    match kind {
        K::ConnectionReset | K::ConnectionAborted => TransportErrorKind::Reset,
        // Read to the end before the headers were complete, or the receiver closed before
        // taking the whole request.
        K::UnexpectedEof | K::BrokenPipe => TransportErrorKind::ClosedBeforeHeaders,
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
            TransportErrorKind::Connect
        }
        K::TimedOut => TransportErrorKind::Timeout,
        _ => TransportErrorKind::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adoption_takes_the_first_policy_and_refuses_a_different_one() {
        let http = UrlPolicy::new().allow_http(true);
        let unset = Guard::from_builder(None);
        assert_eq!(unset.policy(), &UrlPolicy::default());
        let clone = unset.clone();
        unset.adopt(&http).unwrap();
        // Clones share the cell: the connector or resolver sees what the dispatcher adopted.
        assert_eq!(clone.policy(), &http);
        unset.adopt(&http).unwrap();
        let Err(crate::Error::InvalidConfig { field, reason }) = clone.adopt(&UrlPolicy::new())
        else {
            panic!("a second, different policy must be refused");
        };
        assert_eq!(field, "policy");
        assert!(reason.contains("already adopted"), "{reason}");
        assert_eq!(unset.policy(), &http);

        let explicit = Guard::from_builder(Some(UrlPolicy::new()));
        explicit.adopt(&UrlPolicy::default()).unwrap();
        let err = explicit.adopt(&http).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid policy: the dispatcher was built with a different URL policy than the one \
             given to Webhooks::builder().policy(); set the policy once, on the Webhooks builder"
        );
        assert_eq!(explicit.policy(), &UrlPolicy::new());
    }

    #[test]
    fn an_admission_under_the_default_policy_does_not_answer_for_the_adopted_one() {
        let guard = Guard::from_builder(None);
        let long: Uri = format!("https://crm.example/{}", "a".repeat(100))
            .parse()
            .unwrap();
        guard.check_uri(&long).unwrap();
        guard.adopt(&UrlPolicy::new().max_url_len(50)).unwrap();
        assert!(matches!(
            guard.check_uri(&long),
            Err(crate::Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn target_must_be_absolute_http_or_https() {
        for bad in ["/relative", "ftp://example.com/", "mailto:a@b"] {
            let uri: Uri = bad.parse().unwrap();
            let err = check_target(&uri).unwrap_err();
            assert_eq!(err.kind(), TransportErrorKind::InvalidRequest, "{bad}");
        }
        for good in ["http://example.com/", "HTTPS://example.com:8443/x?y=1"] {
            assert!(check_target(&good.parse().unwrap()).is_ok(), "{good}");
        }
    }

    #[test]
    fn chain_looks_inside_io_errors() {
        let tls = rustls::Error::General("bad record".into());
        let wrapped = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, tls));
        assert_eq!(
            tls_kind(&error_chain(&wrapped)),
            Some(TransportErrorKind::TlsHandshake)
        );
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, cert);
        assert_eq!(
            tls_kind(&error_chain(&wrapped)),
            Some(TransportErrorKind::Tls)
        );

        let dns = io::Error::other(DnsError::new("nowhere.invalid", io::Error::other("x")));
        let chain = error_chain(&dns);
        assert!(is_dns(&chain) && tls_kind(&chain).is_none());
    }

    #[test]
    fn io_failures_are_sorted_by_what_the_connection_did() {
        use io::ErrorKind as K;
        for (kind, expected) in [
            (K::ConnectionReset, TransportErrorKind::Reset),
            (K::ConnectionAborted, TransportErrorKind::Reset),
            (K::UnexpectedEof, TransportErrorKind::ClosedBeforeHeaders),
            (K::BrokenPipe, TransportErrorKind::ClosedBeforeHeaders),
            (K::ConnectionRefused, TransportErrorKind::Connect),
            (K::TimedOut, TransportErrorKind::Timeout),
            (K::InvalidData, TransportErrorKind::Io),
        ] {
            assert_eq!(io_kind(kind), expected, "{kind:?}");
        }
        // The wrapper says nothing; the error it wraps does.
        let wrapped = io::Error::other(io::Error::new(K::ConnectionReset, "reset"));
        assert_eq!(
            io_kind_in(&error_chain(&wrapped)),
            Some(TransportErrorKind::Reset)
        );
        let plain = io::Error::other("odd");
        assert_eq!(
            io_kind_in(&error_chain(&plain)),
            Some(TransportErrorKind::Io)
        );
        let none = DnsError::new("x.invalid", io::Error::other("y"));
        assert_eq!(io_kind_in(&[&none]), None);
    }

    #[test]
    fn a_refusal_deep_in_the_chain_becomes_refused_with_the_refusal_as_source() {
        let refusal = crate::Error::AddressRefused {
            host: "internal.example".into(),
            addr: "10.0.0.1".parse().unwrap(),
            rule: "private",
        };
        let wrapped = io::Error::other(io::Error::other(refusal));
        let err = refusal_in(&error_chain(&wrapped)).unwrap();
        assert_eq!(err.kind(), TransportErrorKind::Refused);
        assert!(matches!(
            err.policy_refusal(),
            Some(crate::Error::AddressRefused {
                rule: "private",
                ..
            })
        ));
    }

    #[test]
    fn the_guard_keeps_admitted_addresses_and_refuses_when_none_is_left() {
        let guard = Guard::new(UrlPolicy::new().allow_net("127.0.0.0/8".parse().unwrap()));
        let loopback6: SocketAddr = "[::1]:80".parse().unwrap();
        let loopback4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let private: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert_eq!(
            guard.filter("localhost", [loopback6, loopback4]).unwrap(),
            [loopback4]
        );
        match guard.filter("internal", [private, loopback6]) {
            Err(crate::Error::AddressRefused { host, addr, .. }) => {
                assert_eq!(host, "internal");
                assert_eq!(addr, private.ip());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_guard_checks_the_whole_url() {
        let guard = Guard::new(UrlPolicy::default());
        let http: Uri = "http://crm.example/hook".parse().unwrap();
        assert!(matches!(
            guard.check_uri(&http),
            Err(crate::Error::InvalidUrl { .. })
        ));
        let literal: Uri = "https://10.0.0.1/hook".parse().unwrap();
        assert!(matches!(
            guard.check_uri(&literal),
            Err(crate::Error::AddressRefused { .. })
        ));
        assert!(
            guard
                .check_uri(&"https://crm.example/".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn a_remembered_admission_answers_as_a_fresh_check_would() {
        let policy = || UrlPolicy::new().allow_net("10.1.0.0/16".parse().unwrap());
        let guard = Guard::new(policy());
        let urls = [
            "https://crm.example/hook?token=a",
            "https://CRM.Example/hook?token=a",
            "https://crm.example/Hook?token=a",
            "https://crm.example/hook?token=A",
            "https://10.1.2.3/hook",
            "https://10.2.0.1/hook",
            "https://user@crm.example/hook",
            "https://USER@crm.example/hook",
            "http://crm.example/hook",
            "https://crm.example:8443/hook",
        ];
        // Twice over, in both orders: the second time is answered from what was remembered.
        for round in 0..4 {
            let order: Vec<&str> = if round % 2 == 0 {
                urls.to_vec()
            } else {
                urls.iter().rev().copied().collect()
            };
            for url in order {
                let uri: Uri = url.parse().unwrap();
                let fresh = Guard::new(policy()).check_uri(&uri).is_ok();
                assert_eq!(
                    guard.check_uri(&uri).is_ok(),
                    fresh,
                    "{url} in round {round}"
                );
            }
        }
        // Admitted: the name with three paths or queries (the host's case makes no new URL),
        // the allowed literal and the other port. Refused: the private literal, user info,
        // plain http.
        let remembered = guard.current().admitted.read().unwrap().len();
        assert_eq!(remembered, 5, "only admissions are kept");
        assert!(!format!("{guard:?}").contains("token"));
    }

    #[test]
    fn the_guard_remembers_a_bounded_number_of_urls() {
        let guard = Guard::new(UrlPolicy::new());
        for i in 0..ADMITTED_CAP + 10 {
            let uri: Uri = format!("https://crm.example/hook/{i}").parse().unwrap();
            guard.check_uri(&uri).unwrap();
        }
        assert!(guard.current().admitted.read().unwrap().len() <= ADMITTED_CAP);
    }

    #[test]
    fn literals_are_never_resolved_and_names_are() {
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let resolver = SharedResolver::custom(move |host: &str, port: u16| {
            log.lock().unwrap().push(format!("{host}:{port}"));
            Ok(vec![SocketAddr::from(([192, 0, 2, 7], port))])
        });
        assert_eq!(
            candidates(&resolver, "10.0.0.1", 8080).unwrap(),
            ["10.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            candidates(&resolver, "::1", 443).unwrap(),
            ["[::1]:443".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            candidates(&resolver, "crm.test", 443).unwrap(),
            ["192.0.2.7:443".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(*asked.lock().unwrap(), ["crm.test:443"]);

        let nothing = SharedResolver::custom(|_: &str, _: u16| Ok(Vec::new()));
        let err = candidates(&nothing, "void.test", 80).unwrap_err();
        assert_eq!(err.to_string(), "could not resolve `void.test`");
        let failing = SharedResolver::custom(|_: &str, _: u16| Err(io::Error::other("SERVFAIL")));
        assert!(candidates(&failing, "void.test", 80).is_err());
    }

    #[test]
    fn ports_default_by_scheme() {
        assert_eq!(port_of(&"https://a.test/".parse().unwrap()), 443);
        assert_eq!(port_of(&"HTTP://a.test/".parse().unwrap()), 80);
        assert_eq!(port_of(&"https://a.test:8443/".parse().unwrap()), 8443);
    }

    #[test]
    fn bare_host_strips_ipv6_brackets_only() {
        assert_eq!(bare_host("[::1]"), "::1");
        assert_eq!(bare_host("example.com"), "example.com");
    }
}
