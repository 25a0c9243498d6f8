//! The egress proxy: [`Proxy`], the `CONNECT` tunnel both backends open through it, and the
//! `NO_PROXY` list.
//!
//! The address policy holds through the proxy: the backend resolves the receiver's name itself,
//! judges every address, and asks the proxy for a tunnel to an admitted address
//! (`CONNECT 203.0.113.7:443`), never to the name. The request, and TLS with the receiver's
//! name, then go through the tunnel unchanged. The proxy is never given a name to resolve, so it
//! cannot lead a delivery to an address the policy refuses.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use url::Url;
use zeroize::Zeroizing;

use crate::auth::{AuthScheme, Credentials, Secret};
use crate::dispatch::guard::bare_host;
use crate::error::{Error, Result};

/// The most bytes of a proxy's answer to `CONNECT` read before giving up on it.
const MAX_ANSWER: usize = 8 * 1024;

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

    /// The `CONNECT` request for a tunnel to `target`. It holds the credentials: zeroized on drop.
    fn connect_request(&self, target: SocketAddr) -> Zeroizing<Vec<u8>> {
        let mut request = Zeroizing::new(Vec::with_capacity(128));
        let line = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        request.extend_from_slice(line.as_bytes());
        if let Some(authorization) = &self.authorization {
            request.extend_from_slice(b"Proxy-Authorization: ");
            request.extend_from_slice(authorization.expose_secret().as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request
    }

    fn error(&self, target: SocketAddr, what: Failure) -> ProxyError {
        ProxyError {
            proxy: self.address(),
            target,
            what,
            source: None,
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

/// What went wrong with the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The proxy could not be reached (resolved or connected to).
    Unreachable,
    /// The proxy did not answer `CONNECT` in time.
    TimedOut,
    /// The proxy closed the connection or failed while answering `CONNECT`.
    Closed,
    /// The proxy answered `CONNECT` with something that is not an HTTP/1 answer.
    NotHttp,
    /// The proxy answered `CONNECT` with this status, not a 2xx.
    Status(u16),
}

/// The proxy failed an attempt. Shows the proxy's and the target's addresses and what happened,
/// never the credentials.
#[derive(Debug)]
pub(crate) struct ProxyError {
    proxy: String,
    target: SocketAddr,
    what: Failure,
    source: Option<io::Error>,
}

impl ProxyError {
    fn with(mut self, source: io::Error) -> Self {
        self.source = Some(source);
        self
    }

    /// Whether another admitted address of the receiver might fare better: the proxy could
    /// not reach this one.
    fn tries_next_target(&self) -> bool {
        matches!(self.what, Failure::Status(502..=504))
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (proxy, target) = (&self.proxy, self.target);
        match self.what {
            Failure::Unreachable => write!(f, "could not connect to the proxy {proxy}"),
            Failure::TimedOut => write!(
                f,
                "the proxy {proxy} did not open a tunnel to {target} within the connect time limit"
            ),
            Failure::Closed => write!(
                f,
                "the proxy {proxy} closed the connection before answering CONNECT {target}"
            ),
            Failure::NotHttp => write!(
                f,
                "the proxy {proxy} did not answer CONNECT {target} with HTTP/1"
            ),
            // 407 is the standard answer; some proxies (tinyproxy) answer 401 to wrong ones.
            Failure::Status(status @ (401 | 407)) => write!(
                f,
                "the proxy {proxy} answered {status} to CONNECT {target}: proxy credentials \
                 missing or refused"
            ),
            Failure::Status(status) => {
                write!(f, "the proxy {proxy} answered {status} to CONNECT {target}")
            }
        }
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// How far the proxy's answer has come.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The head is not complete yet.
    Partial,
    /// The head is complete: its status, and its length in bytes.
    Head { status: u16, len: usize },
}

/// Reads the proxy's answer to `CONNECT` from what has arrived so far.
fn read_answer(buf: &[u8]) -> std::result::Result<Answer, Failure> {
    // The status line must start as one, even before it is complete.
    let start = b"HTTP/1.";
    let n = buf.len().min(start.len());
    if buf[..n] != start[..n] {
        return Err(Failure::NotHttp);
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_ANSWER {
            Err(Failure::NotHttp)
        } else {
            Ok(Answer::Partial)
        };
    };
    let line = &buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(end)];
    // `HTTP/1.x SSS reason`
    let status = line
        .get(9..12)
        .filter(|_| line.get(8) == Some(&b' ') && line.get(12).is_none_or(|&b| b == b' '))
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or(Failure::NotHttp)?;
    Ok(Answer::Head {
        status,
        len: end + 4,
    })
}

/// What the answer so far means once it is complete: the tunnel is open on a 2xx followed by
/// nothing else (neither end speaks first through it), any other status fails.
fn settle_answer(buf: &[u8]) -> std::result::Result<Option<()>, Failure> {
    match read_answer(buf)? {
        Answer::Partial => Ok(None),
        Answer::Head { status, len } if (200..300).contains(&status) => {
            if buf.len() > len {
                Err(Failure::NotHttp)
            } else {
                Ok(Some(()))
            }
        }
        Answer::Head { status, .. } => Err(Failure::Status(status)),
    }
}

/// Opens a tunnel through `endpoint` to the first of `targets` (admitted addresses of one
/// receiver) it can reach, all within `timeout`; returns the connection to the proxy, now a
/// byte pipe to the receiver.
#[cfg(feature = "hyper")]
pub(crate) async fn open_tunnel(
    endpoint: &Endpoint,
    targets: &[SocketAddr],
    timeout: Duration,
) -> std::result::Result<tokio::net::TcpStream, ProxyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let first = *targets.first().expect("the guard admitted an address");
    let unreachable = |target, e| endpoint.error(target, Failure::Unreachable).with(e);
    let proxies: Vec<SocketAddr> = tokio::time::timeout_at(
        deadline,
        tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    .map_err(|_| endpoint.error(first, Failure::TimedOut))?
    .map_err(|e| unreachable(first, e))?
    .collect();
    let mut last = None;
    for &target in targets {
        let handshake = async {
            let stream = connect_first(&proxies)
                .await
                .map_err(|e| unreachable(target, e))?;
            let request = endpoint.connect_request(target);
            let closed = |e| endpoint.error(target, Failure::Closed).with(e);
            write_all(&stream, &request).await.map_err(closed)?;
            let mut answer = Vec::with_capacity(256);
            let mut chunk = [0u8; 1024];
            loop {
                let n = read_some(&stream, &mut chunk).await.map_err(closed)?;
                if n == 0 {
                    return Err(endpoint.error(target, Failure::Closed));
                }
                answer.extend_from_slice(&chunk[..n]);
                match settle_answer(&answer) {
                    Ok(Some(())) => return Ok(stream),
                    Ok(None) => {}
                    Err(what) => return Err(endpoint.error(target, what)),
                }
            }
        };
        match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.tries_next_target() => last = Some(e),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(endpoint.error(target, Failure::TimedOut)),
        }
    }
    Err(last.unwrap_or_else(|| endpoint.error(first, Failure::Unreachable)))
}

/// Writes all of `buf` (with tokio's `net` feature alone: no `io-util`).
#[cfg(feature = "hyper")]
async fn write_all(stream: &tokio::net::TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what has arrived into `buf`, waiting for at least one byte or the end.
#[cfg(feature = "hyper")]
async fn read_some(stream: &tokio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
    }
}

/// The first of the proxy's addresses that accepts a connection.
#[cfg(feature = "hyper")]
async fn connect_first(addrs: &[SocketAddr]) -> io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("the proxy's name has no address")))
}

/// The blocking twin of [`open_tunnel`]: the tunnel through `endpoint` to the first of
/// `targets` it can reach, all within `timeout` (none when `None`). The stream's read and
/// write timeouts are cleared before it is returned.
#[cfg(feature = "ureq")]
pub(crate) fn open_tunnel_blocking(
    endpoint: &Endpoint,
    targets: &[SocketAddr],
    timeout: Option<Duration>,
) -> std::result::Result<std::net::TcpStream, ProxyError> {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpStream, ToSocketAddrs as _};
    use std::time::Instant;

    let deadline = timeout.map(|t| Instant::now() + t);
    let first = *targets.first().expect("the guard admitted an address");
    let unreachable = |target, e| endpoint.error(target, Failure::Unreachable).with(e);
    let proxies: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| unreachable(first, e))?
        .collect();
    // What is left of the time limit, never zero (a zero timeout means none to std).
    let left = |target| match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(endpoint.error(target, Failure::TimedOut)),
        },
    };
    let timed_out = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        )
    };
    let mut last = None;
    for &target in targets {
        let attempt = || {
            let mut stream = None;
            let mut failure = None;
            for addr in &proxies {
                let tried = match left(target)? {
                    Some(limit) => TcpStream::connect_timeout(addr, limit),
                    None => TcpStream::connect(addr),
                };
                match tried {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) if timed_out(&e) => {
                        return Err(endpoint.error(target, Failure::TimedOut).with(e));
                    }
                    Err(e) => failure = Some(e),
                }
            }
            let mut stream = stream.ok_or_else(|| {
                unreachable(
                    target,
                    failure.unwrap_or_else(|| io::Error::other("the proxy's name has no address")),
                )
            })?;
            let failed = |e: io::Error| {
                let what = if timed_out(&e) {
                    Failure::TimedOut
                } else {
                    Failure::Closed
                };
                endpoint.error(target, what).with(e)
            };
            stream.set_write_timeout(left(target)?).map_err(failed)?;
            stream
                .write_all(&endpoint.connect_request(target))
                .map_err(failed)?;
            let mut answer = Vec::with_capacity(256);
            let mut chunk = [0u8; 1024];
            loop {
                stream.set_read_timeout(left(target)?).map_err(failed)?;
                let n = match stream.read(&mut chunk) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(failed(e)),
                };
                if n == 0 {
                    return Err(endpoint.error(target, Failure::Closed));
                }
                answer.extend_from_slice(&chunk[..n]);
                match settle_answer(&answer) {
                    Ok(Some(())) => {
                        stream.set_read_timeout(None).map_err(failed)?;
                        stream.set_write_timeout(None).map_err(failed)?;
                        let _ = stream.set_nodelay(true);
                        return Ok(stream);
                    }
                    Ok(None) => {}
                    Err(what) => return Err(endpoint.error(target, what)),
                }
            }
        };
        match attempt() {
            Ok(stream) => return Ok(stream),
            Err(e) if e.tries_next_target() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| endpoint.error(first, Failure::Unreachable)))
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
    fn the_answer_to_connect_opens_the_tunnel_only_on_a_2xx_with_nothing_after_it() {
        assert_eq!(settle_answer(b"HTTP/1.1 200 Connec"), Ok(None));
        assert_eq!(
            settle_answer(b"HTTP/1.0 200 Connection established\r\n\r\n"),
            Ok(Some(()))
        );
        assert_eq!(
            settle_answer(b"HTTP/1.1 200\r\nVia: x\r\n\r\n"),
            Ok(Some(()))
        );
        assert_eq!(
            settle_answer(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n<html>"),
            Err(Failure::Status(407))
        );
        assert_eq!(
            settle_answer(b"HTTP/1.1 200 OK\r\n\r\nextra"),
            Err(Failure::NotHttp)
        );
        assert_eq!(settle_answer(b"SSH-2.0-OpenSSH"), Err(Failure::NotHttp));
        assert_eq!(
            settle_answer(b"HTTP/1.1 2000 x\r\n\r\n"),
            Err(Failure::NotHttp)
        );
        let endless = [b"HTTP/1.1 200 OK\r\n".as_slice(), &[b'a'; MAX_ANSWER]].concat();
        assert_eq!(settle_answer(&endless), Err(Failure::NotHttp));
    }

    #[test]
    fn the_error_names_the_proxy_and_the_target_never_the_credentials() {
        let proxy = Proxy::http("http://dialer:s3cret@127.0.0.1:3128").unwrap();
        let endpoint = proxy.for_target(true, "a.test").unwrap();
        let err = endpoint.error(target(), Failure::Status(407));
        let shown = format!("{err} {err:?}");
        assert!(
            shown.contains("407") && shown.contains("127.0.0.1:3128"),
            "{shown}"
        );
        assert!(shown.contains("203.0.113.7:443"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("ZGlh"),
            "{shown}"
        );
        assert!(
            endpoint
                .error(target(), Failure::Status(502))
                .tries_next_target()
        );
        assert!(!err.tries_next_target());
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%40b").unwrap().as_str(), "a@b");
        assert_eq!(percent_decode("100%").unwrap().as_str(), "100%");
        assert_eq!(percent_decode("%zz").unwrap().as_str(), "%zz");
        assert!(percent_decode("%ff").is_none());
    }
}
