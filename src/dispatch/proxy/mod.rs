//! The egress proxy: [`Proxy`], the `CONNECT` tunnel both backends open through it, and the
//! `NO_PROXY` list.
//!
//! The address policy holds through the proxy: the backend resolves the receiver's name itself,
//! judges every address, and asks the proxy for a tunnel to an admitted address
//! (`CONNECT 203.0.113.7:443`), never to the name. The request, and TLS with the receiver's
//! name, then go through the tunnel unchanged. The proxy is never given a name to resolve, so it
//! cannot lead a delivery to an address the policy refuses.

mod tunnel;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use url::Url;
use zeroize::Zeroizing;

use crate::auth::{AuthScheme, Credentials, Secret};
use crate::dispatch::guard::bare_host;
use crate::error::{Error, Result};

pub(crate) use tunnel::is_proxy;
#[cfg(feature = "hyper")]
pub(crate) use tunnel::open_tunnel;
#[cfg(feature = "ureq")]
pub(crate) use tunnel::open_tunnel_blocking;

/// An HTTP proxy every delivery of a dispatcher goes through, with optional credentials.
///
/// Given to a dispatcher's builder ([`HyperDispatcherBuilder::proxy`],
/// [`UreqDispatcherBuilder::proxy`]); it applies to every account that dispatcher sends for.
/// It is configuration of the dialer: it is never taken from an account.
///
/// For every attempt the backend resolves the receiver's host itself (through the builder's
/// [`Resolve`](crate::dispatch::Resolve)), holds every address to the
/// [`UrlPolicy`](crate::UrlPolicy) as it does without a proxy, and only then connects to the
/// proxy and asks it for a tunnel to an admitted address: `CONNECT 203.0.113.7:443`, never the
/// name. `https` and `http` receivers both go through a `CONNECT` tunnel; TLS is made through
/// the tunnel with the receiver's host name (SNI and certificate checks), and the request keeps
/// its own `Host` header. A refused receiver is refused before the proxy is contacted. The proxy
/// must therefore allow `CONNECT` to the receivers' ports, `80` and others included (Squid's
/// stock configuration allows it to `443` only).
///
/// The proxy's own address is not held to the policy: it may be private or loopback, as a
/// proxy in the dialer's network usually is. Its host name is resolved by the system resolver.
/// Only plain `http://` proxies are supported (no TLS to the proxy, no SOCKS).
///
/// A proxy that cannot be reached, does not answer within the connect timeout, or answers
/// `CONNECT` with anything but a 2xx (a 407 for missing or wrong credentials included) fails the
/// attempt with [`TransportErrorKind::Proxy`](crate::dispatch::TransportErrorKind::Proxy),
/// retried as a connect failure is. The credentials are secrets: `Debug` and errors never show
/// them.
///
/// [`HyperDispatcherBuilder::proxy`]: crate::dispatch::hyper::HyperDispatcherBuilder::proxy
/// [`UreqDispatcherBuilder::proxy`]: crate::dispatch::ureq::UreqDispatcherBuilder::proxy
///
/// # Examples
///
/// ```
/// use call_result_webhook::dispatch::Proxy;
///
/// let proxy = Proxy::http("http://proxy.internal:3128")?
///     .basic_auth("dialer", "s3cret")?
///     .no_proxy("crm.acme.internal, 10.20.0.0/16");
/// assert!(!format!("{proxy:?}").contains("s3cret"));
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[derive(Clone)]
pub struct Proxy {
    /// The proxy for `https` receivers, if any.
    https: Option<Endpoint>,
    /// The proxy for `http` receivers, if any.
    http: Option<Endpoint>,
    no_proxy: NoProxy,
}

/// One proxy server: where it is, and the `Proxy-Authorization` value to send it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    /// The whole header value, `Basic ...`.
    authorization: Option<Secret>,
}

impl Proxy {
    /// A proxy at `url` (`http://host:port`, port 80 when left out) for every receiver, `http`
    /// and `https`. Credentials written in the URL (`http://user:password@host:3128`,
    /// percent-encoded) are used as by [`basic_auth`](Self::basic_auth).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (field `proxy`) when `url` is not an `http://` URL with a host,
    /// or its credentials cannot be sent. The reason never quotes the URL, which may hold a
    /// password.
    pub fn http(url: &str) -> Result<Proxy> {
        let endpoint = Endpoint::parse(url, "proxy")?;
        Ok(Proxy {
            https: Some(endpoint.clone()),
            http: Some(endpoint),
            no_proxy: NoProxy::default(),
        })
    }

    /// The proxy the environment names, read only when this is called: `https_proxy` (or
    /// `HTTPS_PROXY`) for `https` receivers, `http_proxy` (or `HTTP_PROXY`) for `http`
    /// receivers, and `no_proxy` (or `NO_PROXY`) as by [`no_proxy`](Self::no_proxy). The
    /// lowercase name wins when both are set; an empty value counts as unset. A URL without a
    /// scheme (`proxy.internal:3128`) is taken as `http://`. `None` when neither proxy
    /// variable is set: a receiver of the other scheme is then connected to directly.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (field `HTTPS_PROXY` or `HTTP_PROXY`) when the variable holds
    /// no usable `http://` proxy URL. The reason never quotes the value.
    pub fn from_env() -> Result<Option<Proxy>> {
        Proxy::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Proxy>> {
        let read = |lower: &str, upper: &str| {
            var(lower)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| var(upper).filter(|v| !v.trim().is_empty()))
        };
        let https = read("https_proxy", "HTTPS_PROXY")
            .map(|url| Endpoint::parse(&url, "HTTPS_PROXY"))
            .transpose()?;
        let http = read("http_proxy", "HTTP_PROXY")
            .map(|url| Endpoint::parse(&url, "HTTP_PROXY"))
            .transpose()?;
        if https.is_none() && http.is_none() {
            return Ok(None);
        }
        let no_proxy = read("no_proxy", "NO_PROXY")
            .map(|list| NoProxy::parse(&list))
            .unwrap_or_default();
        Ok(Some(Proxy {
            https,
            http,
            no_proxy,
        }))
    }

    /// Sends `Proxy-Authorization: Basic ...` with `username` and `password` to the proxy,
    /// replacing any credentials the URL carried.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (field `proxy_credentials`) when either holds CR, LF or NUL, or
    /// the user name holds `:`, which Basic authentication cannot carry. The reason never
    /// quotes either.
    pub fn basic_auth(mut self, username: &str, password: &str) -> Result<Proxy> {
        let authorization = basic(username, password)?;
        for endpoint in [&mut self.https, &mut self.http].into_iter().flatten() {
            endpoint.authorization = Some(authorization.clone());
        }
        Ok(self)
    }

    /// Connects directly, without the proxy, to the receivers `list` names: entries separated
    /// by commas or spaces, each a host name that matches itself and its subdomains
    /// (`example.com` and `.example.com` both match `example.com` and `crm.example.com`), an
    /// IP address or a CIDR block that matches a receiver written as an IP address, or `*` for
    /// every receiver. Replaces any list given before. The address policy holds either way.
    pub fn no_proxy(mut self, list: &str) -> Proxy {
        self.no_proxy = NoProxy::parse(list);
        self
    }

    /// The proxy to tunnel through to `host` (bare, without brackets), or `None` to connect
    /// directly.
    pub(crate) fn for_target(&self, https: bool, host: &str) -> Option<&Endpoint> {
        let endpoint = if https { &self.https } else { &self.http };
        endpoint.as_ref().filter(|_| !self.no_proxy.matches(host))
    }
}

impl fmt::Debug for Proxy {
    /// Where the proxies are and whether credentials are set, never the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("https", &self.https)
            .field("http", &self.http)
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &format_args!("{}", self.address()))
            .field("authorization", &self.authorization)
            .finish()
    }
}

/// The `Basic` value for `username` and `password`, checked as an account's credentials are.
fn basic(username: &str, password: &str) -> Result<Secret> {
    let redacted = |_: Error| {
        Error::config(
            "proxy_credentials",
            "the proxy's user name or password holds CR, LF or NUL, or the user name holds ':'",
        )
    };
    let header = Credentials::new(username, password)
        .and_then(|c| c.authorization(AuthScheme::Basic))
        .map_err(redacted)?;
    let value = header
        .to_str()
        .map_err(|_| Error::config("proxy_credentials", "not a valid header value"))?;
    Ok(Secret::new(value))
}

impl Endpoint {
    /// Parses a proxy URL; errors name `field`, never the URL.
    fn parse(url: &str, field: &'static str) -> Result<Endpoint> {
        let url = url.trim();
        let parsed = if url.contains("://") {
            Url::parse(url)
        } else {
            Url::parse(&format!("http://{url}"))
        };
        // url's error messages never quote the input.
        let parsed = parsed.map_err(|e| Error::config(field, format!("not a proxy URL: {e}")))?;
        if parsed.scheme() != "http" {
            return Err(Error::config(
                field,
                "only http:// proxies are supported (no TLS to the proxy, no SOCKS)",
            ));
        }
        let host = match parsed.host_str() {
            Some(host) if !host.is_empty() => bare_host(host).to_owned(),
            _ => return Err(Error::config(field, "the proxy URL has no host")),
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        let authorization = if parsed.username().is_empty() && parsed.password().is_none() {
            None
        } else {
            let decode = |s: &str| {
                percent_decode(s).ok_or_else(|| {
                    Error::config(field, "the proxy URL's credentials are not valid UTF-8")
                })
            };
            let username = decode(parsed.username())?;
            let password = decode(parsed.password().unwrap_or_default())?;
            Some(basic(&username, &password)?)
        };
        Ok(Endpoint {
            host,
            port,
            authorization,
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub(crate) fn address(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, self.port).to_string(),
            Err(_) => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Percent-decodes a URL's user name or password.
fn percent_decode(s: &str) -> Option<Zeroizing<String>> {
    let bytes = s.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let hex = |i: usize| bytes.get(i).and_then(|&b| (b as char).to_digit(16));
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(std::mem::take(&mut *out))
        .ok()
        .map(Zeroizing::new)
}

/// The receivers reached without the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NoProxy {
    all: bool,
    /// Lowercase names without a leading or trailing dot.
    names: Vec<String>,
    nets: Vec<IpNet>,
}

impl NoProxy {
    fn parse(list: &str) -> NoProxy {
        let mut no_proxy = NoProxy::default();
        for entry in list.split([',', ' ', '\t', '\n']).map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                no_proxy.all = true;
            } else if let Ok(net) = entry.parse::<IpNet>() {
                no_proxy.nets.push(net);
            } else if let Ok(ip) = bare_host(entry).parse::<IpAddr>() {
                no_proxy.nets.push(IpNet::from(ip));
            } else {
                let name = entry.trim_start_matches("*.").trim_matches('.');
                // A port after a name (`example.com:8080`) is not told apart: the name matches.
                let name = match name.rsplit_once(':') {
                    Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
                    _ => name,
                };
                if !name.is_empty() {
                    no_proxy.names.push(name.to_ascii_lowercase());
                }
            }
        }
        no_proxy
    }

    /// Whether `host` (bare) is reached directly.
    fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.nets.iter().any(|net| net.contains(&ip));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|name| {
            host == *name
                || host
                    .strip_suffix(name.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn target() -> SocketAddr {
        "203.0.113.7:443".parse().unwrap()
    }

    #[test]
    fn a_proxy_url_is_read_with_its_credentials_and_debug_hides_them() {
        let proxy = Proxy::http("http://dialer:s3cr%40t@proxy.internal:3128").unwrap();
        let endpoint = proxy.for_target(true, "crm.example").unwrap();
        assert_eq!(endpoint.address(), "proxy.internal:3128");
        let request = endpoint.connect_request(target());
        let request = std::str::from_utf8(&request).unwrap();
        // base64("dialer:s3cr@t")
        assert_eq!(
            request,
            "CONNECT 203.0.113.7:443 HTTP/1.1\r\nHost: 203.0.113.7:443\r\n\
             Proxy-Authorization: Basic ZGlhbGVyOnMzY3JAdA==\r\n\r\n"
        );
        let shown = format!("{proxy:?}");
        assert!(
            !shown.contains("s3cr") && !shown.contains("ZGlh"),
            "{shown}"
        );
        assert!(shown.contains("proxy.internal:3128"), "{shown}");

        let plain = Proxy::http("proxy.internal").unwrap();
        let endpoint = plain.for_target(false, "crm.example").unwrap();
        assert_eq!(endpoint.address(), "proxy.internal:80");
        assert!(!String::from_utf8_lossy(&endpoint.connect_request(target())).contains("Proxy-"));
        let v6 = Proxy::http("http://[fd00::1]:3128/").unwrap();
        assert_eq!(
            v6.for_target(true, "a.test").unwrap().address(),
            "[fd00::1]:3128"
        );
    }

    #[test]
    fn basic_auth_replaces_the_urls_credentials_and_refuses_what_basic_cannot_carry() {
        let proxy = Proxy::http("http://old:old@proxy.internal:3128")
            .unwrap()
            .basic_auth("user", "passwd")
            .unwrap();
        let request = proxy
            .for_target(false, "a.test")
            .unwrap()
            .connect_request(target());
        assert!(
            String::from_utf8_lossy(&request).contains("Basic dXNlcjpwYXNzd2Q=\r\n"),
            "base64(user:passwd)"
        );
        for (user, pass) in [("a:b", "x"), ("a", "line\r\nbreak"), ("a\n", "x")] {
            let err = Proxy::http("http://p.internal")
                .unwrap()
                .basic_auth(user, pass)
                .unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(shown.contains("proxy_credentials"), "{shown}");
            assert!(!shown.contains("line") && !shown.contains("a:b"), "{shown}");
        }
    }

    #[test]
    fn a_bad_proxy_url_is_refused_without_quoting_it() {
        for bad in [
            "https://proxy.internal:3128",
            "socks5://proxy.internal:1080",
            "http://user:pa%ss@:3128",
            "http://",
        ] {
            let err = Proxy::http(bad).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(shown.contains("proxy"), "{shown}");
            assert!(
                !shown.contains("pa%ss") && !shown.contains("internal"),
                "{bad}: {shown}"
            );
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_environment_is_read_per_scheme_lowercase_first() {
        assert!(Proxy::from_vars(vars(&[])).unwrap().is_none());
        assert!(
            Proxy::from_vars(vars(&[("HTTPS_PROXY", " "), ("NO_PROXY", "*")]))
                .unwrap()
                .is_none()
        );
        let proxy = Proxy::from_vars(vars(&[
            ("https_proxy", "http://lower.internal:3128"),
            ("HTTPS_PROXY", "http://upper.internal:3128"),
            ("HTTP_PROXY", "plain.internal:8080"),
            ("NO_PROXY", "direct.example, 10.0.0.0/8"),
        ]))
        .unwrap()
        .unwrap();
        let at = |https, host| proxy.for_target(https, host).map(Endpoint::address);
        assert_eq!(
            at(true, "crm.example").as_deref(),
            Some("lower.internal:3128")
        );
        assert_eq!(
            at(false, "crm.example").as_deref(),
            Some("plain.internal:8080")
        );
        assert_eq!(at(true, "a.direct.example"), None);
        assert_eq!(at(true, "10.1.2.3"), None);
        assert_eq!(at(true, "11.1.2.3").as_deref(), Some("lower.internal:3128"));

        let only_https = Proxy::from_vars(vars(&[("HTTPS_PROXY", "http://p.internal:3128")]))
            .unwrap()
            .unwrap();
        assert!(only_https.for_target(false, "crm.example").is_none());

        let err =
            Proxy::from_vars(vars(&[("HTTP_PROXY", "https://u:secret@p.internal")])).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                field: "HTTP_PROXY",
                ..
            }
        ));
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn no_proxy_matches_names_their_subdomains_addresses_and_everything() {
        let list = NoProxy::parse(
            ".Example.com, crm.acme.internal:8443  *.corp 192.0.2.1 [::1] 10.0.0.0/8",
        );
        for direct in [
            "example.com",
            "crm.EXAMPLE.com.",
            "crm.acme.internal",
            "hooks.corp",
            "192.0.2.1",
            "::1",
            "10.200.0.1",
        ] {
            assert!(list.matches(direct), "{direct}");
        }
        for proxied in [
            "notexample.com",
            "example.com.evil.test",
            "acme.internal",
            "192.0.2.2",
            "11.0.0.1",
            "corp.test",
        ] {
            assert!(!list.matches(proxied), "{proxied}");
        }
        assert!(NoProxy::parse("a.test, *").matches("anything.test"));
        assert!(!NoProxy::parse("").matches("anything.test"));
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%40b").unwrap().as_str(), "a@b");
        assert_eq!(percent_decode("100%").unwrap().as_str(), "100%");
        assert_eq!(percent_decode("%zz").unwrap().as_str(), "%zz");
        assert!(percent_decode("%ff").is_none());
    }
}
