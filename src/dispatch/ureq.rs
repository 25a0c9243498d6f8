//! The blocking backend: ureq 3 with rustls, usable with no runtime at all, and from async code
//! through a thread of its own per request.
//!
//! Every address the connection may use, resolved or literal, passes `GuardedResolver` before
//! it is connected to: ureq asks its resolver for IP literals too, and connects only to the
//! addresses the resolver returns. TLS is our own rustls configuration (`GuardedTls`), the same
//! as the hyper backend's. With a [`Proxy`], `ProxyTunnel` opens a `CONNECT` tunnel through it to
//! one of those admitted addresses in place of the direct TCP connection.

use crate::limits::{DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_BODY_PREFIX_LIMIT, DEFAULT_MAX_CONCURRENCY};
use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::ureq::config::Config;
use ::ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ::ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    TcpConnector, Transport, TransportAdapter,
};
use ::ureq::{Agent, Timeout};
use bytes::Bytes;
use http::{Request, Uri};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::dispatch::body::{BodyEnd, Prefix, settle};
use crate::dispatch::guard::{
    DnsError, Guard, bare_host, candidates, check_target, error_chain, io_kind_in, is_dns, port_of,
    refusal_in, tls_error_kind, tls_kind,
};
use crate::dispatch::proxy::{Proxy, is_proxy, open_tunnel_blocking};
use crate::dispatch::resolve::{Resolve, SharedResolver};
use crate::dispatch::tls::{Certificate, client_config};
use crate::dispatch::{
    AttemptTimeout, BlockingDispatcher, BodyOutcome, Dispatcher, ReceiverResponse, TransportError,
    TransportErrorKind,
};
use crate::policy::UrlPolicy;
use crate::request::USER_AGENT;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections kept per receiver: the worker's default bound on attempts in flight.
const IDLE_PER_RECEIVER: usize = DEFAULT_MAX_CONCURRENCY;
/// Idle pooled connections kept in all.
const IDLE_IN_ALL: usize = 4 * DEFAULT_MAX_CONCURRENCY;

/// Sends webhook requests with ureq 3 (feature `ureq`): blocking, no async runtime needed.
///
/// - [`BlockingDispatcher::dispatch_blocking`] sends on the calling thread.
/// - [`Dispatcher::dispatch`] sends on a thread of its own and awaits the result, so an async
///   executor's threads are never blocked; it works on any executor.
/// - Connections are pooled per receiver; TLS is rustls with the `ring` provider, certificates
///   validated against the Mozilla (webpki) roots and any root added with
///   [`add_root_certificate`](UreqDispatcherBuilder::add_root_certificate). Proxy settings from
///   the environment are ignored unless given through [`Proxy::from_env`]: with a
///   [`proxy`](UreqDispatcherBuilder::proxy), each connection is a `CONNECT` tunnel through it
///   to an address the policy admitted.
/// - A connect timeout (default 5 s) and a whole-attempt timeout (default 15 s) that covers
///   resolving, connecting, sending, the response head and the bounded body read. An
///   [`AttemptTimeout`] extension on the request replaces the whole-attempt default.
/// - Every attempt is held to one [`UrlPolicy`]: the builder's, else the one adopted from the
///   `Webhooks` engine ([`BlockingDispatcher::adopt_policy`]), else the default (`https` only
///   and no internal addresses): the URL before the attempt, and each address, resolved or
///   literal, inside ureq's resolver, so only admitted addresses are ever connected to. Names
///   are resolved by the builder's [`Resolve`] (the system resolver by default).
/// - Redirects are never followed and status codes are never errors: a 3xx, 4xx or 5xx comes
///   back as the [`ReceiverResponse`].
/// - At most `body_prefix_limit` bytes of the response body are read (default
///   [`DEFAULT_BODY_PREFIX_LIMIT`]); the rest is never read.
/// - A 2xx is a response as soon as its status line and headers arrive: a body that then
///   breaks off or outlasts the attempt's time limit is noted in
///   [`ReceiverResponse::body_outcome`], and the response returned at the limit at the latest.
///   For any other status, a body that breaks off before the prefix is read is a
///   [`TransportErrorKind::Io`] error and one that outlasts the limit a
///   [`TransportErrorKind::Timeout`].
///
/// Cloning is cheap and clones share the connection pool.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use call_result_webhook::{
///     BlockingDispatcher, CallResult, DeliveryId, PreferencesUpdate, UreqDispatcher,
///     preferences::Preferences, request::{EncodedBody, build_request},
/// };
///
/// let dispatcher = UreqDispatcher::builder()
///     .connect_timeout(Duration::from_secs(5))
///     .timeout(Duration::from_secs(15))
///     .build();
///
/// let preferences = Preferences::from_update(
///     PreferencesUpdate::new().enabled(true).url("https://crm.example/hook").credentials("user", "passwd"),
/// )?;
/// let call = CallResult::builder().reference("123").build();
/// let body = EncodedBody::encode(&call, &preferences)?;
/// let request = build_request(&preferences, &DeliveryId::generate(), &body)?;
///
/// let response = dispatcher.dispatch_blocking(request)?;
/// println!("{}", response.status());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct UreqDispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    agent: Agent,
    guard: Guard,
    resolver: Option<SharedResolver>,
    proxy: Option<Arc<Proxy>>,
    extra_roots: usize,
    connect_timeout: Duration,
    timeout: Duration,
    body_prefix_limit: usize,
}

impl UreqDispatcher {
    /// A dispatcher with the default settings.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts configuring a dispatcher.
    pub fn builder() -> UreqDispatcherBuilder {
        UreqDispatcherBuilder {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_ATTEMPT_TIMEOUT,
            body_prefix_limit: DEFAULT_BODY_PREFIX_LIMIT,
            policy: None,
            resolver: None,
            roots: Vec::new(),
            proxy: None,
        }
    }
}

impl Default for UreqDispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for UreqDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UreqDispatcher")
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("timeout", &self.inner.timeout)
            .field("body_prefix_limit", &self.inner.body_prefix_limit)
            .field("policy", self.inner.guard.policy())
            .field(
                "resolver",
                &self.inner.resolver.as_ref().map_or("system", |_| "custom"),
            )
            .field("proxy", &self.inner.proxy)
            .field("extra_roots", &self.inner.extra_roots)
            .finish_non_exhaustive()
    }
}

impl BlockingDispatcher for UreqDispatcher {
    fn dispatch_blocking(
        &self,
        request: Request<Bytes>,
    ) -> Result<ReceiverResponse, TransportError> {
        let inner = &*self.inner;
        let limit = request
            .extensions()
            .get::<AttemptTimeout>()
            .map_or(inner.timeout, |t| t.0);
        check_target(request.uri())?;
        inner.guard.check_uri(request.uri())?;

        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, &body[..]);
        let request = inner
            .agent
            .configure_request(request)
            .timeout_global(Some(limit))
            .build();
        let response = inner.agent.run(request).map_err(classify)?;

        let (parts, body) = response.into_parts();
        let mut prefix = Prefix::new(inner.body_prefix_limit);
        let end = read_prefix(body, &mut prefix);
        settle(parts, prefix, end, limit)
    }

    /// Adopts `policy` when the builder was given none and none was adopted before; from then
    /// on every attempt, and every address the resolver answers, is held to it. Clones share
    /// the adopted policy, and so do this trait and [`Dispatcher`]: adopting through either
    /// adopts for both.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidConfig`] with field `policy` when the dispatcher holds a
    /// different policy, set on its builder or adopted before; the one it holds stays in force.
    fn adopt_policy(&self, policy: &UrlPolicy) -> Result<(), crate::Error> {
        self.inner.guard.adopt(policy)
    }
}

#[async_trait::async_trait]
impl Dispatcher for UreqDispatcher {
    /// Sends on a new thread and awaits the outcome without blocking the executor. If the
    /// future is dropped, the thread still finishes the attempt (within its time limit) and the
    /// outcome is discarded.
    async fn dispatch(&self, request: Request<Bytes>) -> Result<ReceiverResponse, TransportError> {
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        std::thread::Builder::new()
            .name("call-result-webhook-ureq".into())
            .spawn(move || {
                // A receiver that is gone was dropped with its future: the outcome has no taker.
                let _ = tx.send(this.dispatch_blocking(request));
            })
            .map_err(|e| TransportError::new(TransportErrorKind::Other, e))?;
        rx.await.unwrap_or_else(|oneshot::RecvError| {
            Err(TransportError::new(
                TransportErrorKind::Other,
                "the sending thread ended without an outcome",
            ))
        })
    }

    /// As [`BlockingDispatcher::adopt_policy`]: one policy for both traits.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidConfig`] with field `policy` when the dispatcher holds a
    /// different policy, set on its builder or adopted before.
    fn adopt_policy(&self, policy: &UrlPolicy) -> Result<(), crate::Error> {
        self.inner.guard.adopt(policy)
    }
}

/// Configures a [`UreqDispatcher`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct UreqDispatcherBuilder {
    connect_timeout: Duration,
    timeout: Duration,
    body_prefix_limit: usize,
    policy: Option<UrlPolicy>,
    resolver: Option<SharedResolver>,
    roots: Vec<Certificate>,
    proxy: Option<Proxy>,
}

impl UreqDispatcherBuilder {
    /// The time limit for opening the connection, TLS included (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Resolves host names with `resolver` instead of the system resolver: for a dialer with
    /// its own DNS, and for tests. Every address it answers is still checked against the
    /// [`policy`](Self::policy) before it is connected to, so it cannot lead past it. It is
    /// called on the sending thread and is not interrupted by the attempt's timeout.
    pub fn resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = Some(SharedResolver::custom(resolver));
        self
    }

    shared_builder_setters!();

    /// Builds the dispatcher.
    pub fn build(self) -> UreqDispatcher {
        let guard = Guard::from_builder(self.policy);
        let config = Config::builder()
            // Status codes are the caller's to classify; 3xx is never followed.
            .http_status_as_error(false)
            .max_redirects(0)
            // Never ureq's proxy, nor one from the environment: `ProxyTunnel` is the only way
            // through a proxy, and only to addresses the resolver admitted.
            .proxy(None)
            // Send what the request carries and nothing of ureq's own.
            .accept("")
            .accept_encoding("")
            .user_agent(USER_AGENT)
            .timeout_connect(Some(self.connect_timeout))
            .timeout_global(Some(self.timeout))
            // Keep an idle connection for every attempt the worker has in flight by default,
            // rather than ureq's 3 per receiver and 10 in all: with more sender threads or
            // receivers than that, every request past them reconnected (and shook hands again).
            .max_idle_connections_per_host(IDLE_PER_RECEIVER)
            .max_idle_connections(IDLE_IN_ALL)
            .build();
        let resolver = GuardedResolver {
            guard: guard.clone(),
            custom: self.resolver.clone(),
            system: DefaultResolver::default(),
        };
        let proxy = self.proxy.map(Arc::new);
        // A tunnel through the proxy, or else TCP, to the addresses the resolver admitted;
        // then our TLS. No other proxy, no other TLS.
        let connector = ()
            .chain(ProxyTunnel {
                proxy: proxy.clone(),
            })
            .chain(TcpConnector::default())
            .chain(GuardedTls {
                config: client_config(&self.roots),
            });
        let agent = Agent::with_parts(config, connector, resolver);
        UreqDispatcher {
            inner: Arc::new(Inner {
                agent,
                guard,
                resolver: self.resolver,
                proxy,
                extra_roots: self.roots.len(),
                connect_timeout: self.connect_timeout,
                timeout: self.timeout,
                body_prefix_limit: self.body_prefix_limit,
            }),
        }
    }
}

/// The resolver (ureq's system resolver, or the builder's [`Resolve`]), then the guard on every
/// address it returns, IP literals included. ureq connects only to what this returns.
#[derive(Debug)]
struct GuardedResolver {
    guard: Guard,
    custom: Option<SharedResolver>,
    system: DefaultResolver,
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ::ureq::Error> {
        let host = bare_host(uri.host().unwrap_or_default());
        let dns = |e: DnsError| ::ureq::Error::Other(Box::new(e));
        let resolved: Vec<SocketAddr> = match (&self.custom, host.parse::<IpAddr>()) {
            (Some(custom), _) => candidates(custom, host, port_of(uri)).map_err(dns)?,
            // An IP literal needs no lookup; the system resolver would start a thread for one
            // on every request, since a time limit is set.
            (None, Ok(ip)) => vec![SocketAddr::new(ip, port_of(uri))],
            (None, Err(_)) => self
                .system
                .resolve(uri, config, timeout)
                .map_err(|e| match e {
                    ::ureq::Error::Io(io) => dns(DnsError::new(host, io)),
                    other => other,
                })?
                .iter()
                .copied()
                .collect(),
        };
        let kept = self
            .guard
            .filter(host, resolved)
            .map_err(|refusal| ::ureq::Error::Other(Box::new(refusal)))?;
        let mut addrs = self.empty();
        // ureq holds at most 16 addresses.
        for addr in kept.into_iter().take(16) {
            addrs.push(addr);
        }
        Ok(addrs)
    }
}

/// The `CONNECT` tunnel through the proxy to one of the addresses the resolver admitted, when
/// the dispatcher has a proxy for this receiver; otherwise nothing, and `TcpConnector` connects
/// directly.
#[derive(Debug)]
struct ProxyTunnel {
    proxy: Option<Arc<Proxy>>,
}

impl Connector for ProxyTunnel {
    type Out = TunnelTransport;

    fn connect(
        &self,
        details: &ConnectionDetails<'_>,
        _chained: Option<()>,
    ) -> Result<Option<Self::Out>, ::ureq::Error> {
        let host = bare_host(details.uri.host().unwrap_or_default());
        let Some(proxy) = self
            .proxy
            .as_deref()
            .and_then(|p| p.for_target(details.needs_tls(), host))
        else {
            return Ok(None);
        };
        let admitted: Vec<SocketAddr> = details.addrs.iter().copied().collect();
        let timeout = details.timeout.not_zero().map(|t| *t);
        let stream = open_tunnel_blocking(proxy, &admitted, timeout)
            .map_err(|e| ::ureq::Error::Other(Box::new(e)))?;
        let stream = Arc::new(stream);
        (details.register_shutdown)(Arc::downgrade(&stream) as Weak<dyn ShutdownHandle>)?;
        Ok(Some(TunnelTransport {
            stream,
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
        }))
    }
}

/// A tunnel through the proxy: a TCP connection to the proxy that now carries bytes to and from
/// the receiver.
struct TunnelTransport {
    /// Shared (weakly) with the agent, which may shut it down.
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
}

impl fmt::Debug for TunnelTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelTransport").finish_non_exhaustive()
    }
}

impl Transport for TunnelTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(
        &mut self,
        amount: usize,
        timeout: NextTimeout,
    ) -> Result<(), ::ureq::Error> {
        let timeout = timeout.for_write();
        self.stream
            .set_write_timeout(timeout.not_zero().map(|t| *t))?;
        let output = &self.buffers.output()[..amount];
        (&*self.stream)
            .write_all(output)
            .map_err(|e| timed_out(e, timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ::ureq::Error> {
        let timeout = timeout.for_read();
        self.stream
            .set_read_timeout(timeout.not_zero().map(|t| *t))?;
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match (&*self.stream).read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other.map_err(|e| timed_out(e, timeout))?,
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        // Open when nothing is waiting to be read and the peer has not closed: a pooled
        // connection holds no unread bytes.
        let mut probe = [0u8; 1];
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let open = matches!(
            (&*self.stream).read(&mut probe),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        );
        open && self.stream.set_nonblocking(false).is_ok()
    }
}

/// ureq's timeout error for a read or write that ran out of time, otherwise the I/O error.
fn timed_out(err: io::Error, timeout: NextTimeout) -> ::ureq::Error {
    match err.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            ::ureq::Error::Timeout(timeout.reason)
        }
        _ => err.into(),
    }
}

/// TLS with the crate's rustls configuration, over the TCP connection ureq made to an admitted
/// address, or the tunnel to one. Plain `http` passes through.
struct GuardedTls {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for GuardedTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedTls").finish_non_exhaustive()
    }
}

impl<In: Transport> Connector<In> for GuardedTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails<'_>,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ::ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = bare_host(details.uri.host().unwrap_or_default());
        let name = ServerName::try_from(host)
            .map_err(|_| ::ureq::Error::Tls("the host is not a valid TLS server name"))?
            .to_owned();
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// A TLS connection for ureq.
struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(
        &mut self,
        amount: usize,
        timeout: NextTimeout,
    ) -> Result<(), ::ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ::ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// Reads the body into `prefix` until it ends, the prefix is full, it breaks off or the
/// attempt's time limit (ureq's global timeout) passes; whatever follows is never read.
fn read_prefix(body: ::ureq::Body, prefix: &mut Prefix) -> BodyEnd {
    let announced = body.content_length();
    let mut reader = body.into_reader();
    let mut read = 0u64;
    // A read returns what has arrived, up to the buffer's size: it never waits for more than
    // one byte, so a body that stalls after the prefix limit is not waited on.
    let mut chunk = [0u8; 8 * 1024];
    loop {
        if prefix.is_full() {
            return BodyEnd::of(prefix.outcome_when_full(announced == Some(read)));
        }
        match reader.read(&mut chunk) {
            Ok(0) => return BodyEnd::of(BodyOutcome::Complete),
            Ok(n) => {
                read += n as u64;
                prefix.push(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return match ::ureq::Error::from(e) {
                    ::ureq::Error::Timeout(_) => BodyEnd::of(BodyOutcome::TimedOut),
                    ::ureq::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
                        BodyEnd::of(BodyOutcome::TimedOut)
                    }
                    other => BodyEnd::failed(other),
                };
            }
        }
    }
}

/// Sorts a ureq failure before the response headers into a [`TransportErrorKind`], keeping the
/// original behind `source()`.
fn classify(err: ::ureq::Error) -> TransportError {
    use ::ureq::Error as E;
    // ureq's error reports no `source()`: start from what it wraps.
    let mut chain = vec![&err as &(dyn std::error::Error + 'static)];
    match &err {
        E::Io(io) => chain.extend(error_chain(io)),
        E::Other(inner) => chain.extend(error_chain(&**inner)),
        _ => {}
    }
    if let Some(refused) = refusal_in(&chain) {
        return refused;
    }
    if is_proxy(&chain) {
        return TransportError::new(TransportErrorKind::Proxy, err);
    }
    let kind = match &err {
        E::HostNotFound => TransportErrorKind::Dns,
        E::Timeout(Timeout::Connect) => TransportErrorKind::ConnectTimeout,
        E::Timeout(_) => TransportErrorKind::Timeout,
        E::Rustls(tls) => tls_error_kind(tls),
        E::Tls(_) | E::Pem(_) | E::TlsRequired => TransportErrorKind::TlsHandshake,
        E::ConnectionFailed => TransportErrorKind::Connect,
        E::BadUri(_) | E::Http(_) | E::RequireHttpsOnly(_) | E::BodyExceedsLimit(_) => {
            TransportErrorKind::InvalidRequest
        }
        E::LargeResponseHeader(..) => TransportErrorKind::HeadersTooLarge,
        E::Protocol(proto) => protocol_kind(proto),
        _ if is_dns(&chain) => TransportErrorKind::Dns,
        _ => match tls_kind(&chain) {
            Some(tls) => tls,
            None => io_kind_in(&chain).unwrap_or(TransportErrorKind::Other),
        },
    };
    TransportError::new(kind, err)
}

/// The kind of an error of ureq's HTTP/1 protocol layer (`ureq-proto`, whose error type ureq
/// does not re-export): a request we built that it would not send, too many response headers,
/// or a response that is not HTTP. Told apart by the variant's name, as its `Debug` prints it:
/// ureq is pinned to one minor release, and `tests/backends.rs` sends each case for real.
fn protocol_kind(err: &dyn fmt::Debug) -> TransportErrorKind {
    let shown = format!("{err:?}");
    let variant = shown.split(['(', ' ', '{']).next().unwrap_or_default();
    match variant {
        "HttpParseTooManyHeaders" => TransportErrorKind::HeadersTooLarge,
        // Raised while preparing or sending the request, never by a response.
        "BadHeader"
        | "MethodVersionMismatch"
        | "TooManyHostHeaders"
        | "BadHostHeader"
        | "BadAuthorizationHeader"
        | "OutputOverflow"
        | "BodyContentAfterFinish"
        | "BodyLargerThanContentLength"
        | "BodyNotAllowed"
        | "BodyIsChunked" => TransportErrorKind::InvalidRequest,
        // An unparsable status line or header, an unknown version, conflicting or invalid
        // framing headers, a 100 with headers: not a valid HTTP/1 response.
        _ => TransportErrorKind::NotHttp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_settings() {
        let d = UreqDispatcher::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(3))
            .body_prefix_limit(10)
            .build();
        let shown = format!("{d:?}");
        assert!(shown.contains("connect_timeout: 2s"), "{shown}");
        assert!(shown.contains("timeout: 3s"), "{shown}");
        assert!(shown.contains("body_prefix_limit: 10"), "{shown}");
    }

    #[test]
    fn failures_are_sorted_by_kind() {
        let kind = |e| classify(e).kind();
        assert_eq!(kind(::ureq::Error::HostNotFound), TransportErrorKind::Dns);
        assert_eq!(
            kind(::ureq::Error::Timeout(Timeout::Global)),
            TransportErrorKind::Timeout
        );
        assert_eq!(
            kind(::ureq::Error::Timeout(Timeout::Connect)),
            TransportErrorKind::ConnectTimeout
        );
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            kind(::ureq::Error::Io(refused)),
            TransportErrorKind::Connect
        );
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(kind(::ureq::Error::Io(reset)), TransportErrorKind::Reset);
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "Peer disconnected");
        assert_eq!(
            kind(::ureq::Error::Io(eof)),
            TransportErrorKind::ClosedBeforeHeaders
        );
        assert_eq!(
            kind(::ureq::Error::LargeResponseHeader(70_000, 65_536)),
            TransportErrorKind::HeadersTooLarge
        );
        let tls = rustls::Error::General("bad".into());
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, tls);
        assert_eq!(
            kind(::ureq::Error::Io(wrapped)),
            TransportErrorKind::TlsHandshake
        );
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, cert);
        assert_eq!(kind(::ureq::Error::Io(wrapped)), TransportErrorKind::Tls);
        let dns = DnsError::new("nowhere.invalid", io::Error::other("x"));
        assert_eq!(
            kind(::ureq::Error::Other(Box::new(dns))),
            TransportErrorKind::Dns
        );
    }

    /// Stand-ins printing as `ureq-proto`'s variants do.
    #[derive(Debug)]
    #[allow(dead_code)]
    enum Proto {
        HttpParseTooManyHeaders,
        HttpParseFail(String),
        UnsupportedVersion,
        BadHeader(String),
    }

    #[test]
    fn protocol_errors_are_sorted_by_variant() {
        assert_eq!(
            protocol_kind(&Proto::HttpParseTooManyHeaders),
            TransportErrorKind::HeadersTooLarge
        );
        assert_eq!(
            protocol_kind(&Proto::HttpParseFail("invalid HTTP version".into())),
            TransportErrorKind::NotHttp
        );
        assert_eq!(
            protocol_kind(&Proto::UnsupportedVersion),
            TransportErrorKind::NotHttp
        );
        assert_eq!(
            protocol_kind(&Proto::BadHeader("x".into())),
            TransportErrorKind::InvalidRequest
        );
    }

    #[test]
    fn a_refusal_from_the_resolver_is_refused() {
        let refusal = crate::Error::AddressRefused {
            host: "internal.example".into(),
            addr: "10.0.0.1".parse().unwrap(),
            rule: "private",
        };
        let err = classify(::ureq::Error::Other(Box::new(refusal)));
        assert_eq!(err.kind(), TransportErrorKind::Refused);
        assert!(err.policy_refusal().is_some());
    }

    #[test]
    fn the_resolver_checks_literals_and_names_alike() {
        let resolver = GuardedResolver {
            guard: Guard::new(UrlPolicy::new().allow_http(true)),
            custom: None,
            system: DefaultResolver::default(),
        };
        let config = Config::default();
        for uri in [
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "http://localhost:9/",
        ] {
            let err = resolver
                .resolve(&uri.parse().unwrap(), &config, NextTimeout::default())
                .unwrap_err();
            let err = classify(err);
            assert_eq!(err.kind(), TransportErrorKind::Refused, "{uri}");
            assert!(
                matches!(
                    err.policy_refusal(),
                    Some(crate::Error::AddressRefused {
                        rule: "loopback",
                        ..
                    })
                ),
                "{uri}"
            );
        }
        let admitting = GuardedResolver {
            guard: Guard::new(UrlPolicy::new().allow_net("127.0.0.0/8".parse().unwrap())),
            custom: None,
            system: DefaultResolver::default(),
        };
        let addrs = admitting
            .resolve(
                &"http://localhost:9/".parse().unwrap(),
                &config,
                NextTimeout::default(),
            )
            .unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip() == std::net::IpAddr::from([127, 0, 0, 1]))
        );
    }

    #[test]
    fn a_custom_resolver_proposes_and_the_guard_disposes() {
        let resolver = GuardedResolver {
            guard: Guard::new(
                UrlPolicy::new()
                    .allow_http(true)
                    .allow_net("127.0.0.1/32".parse().unwrap()),
            ),
            custom: Some(SharedResolver::custom(|host: &str, port: u16| {
                assert_ne!(host, "10.9.8.7", "an IP literal is never resolved");
                Ok(vec![
                    std::net::SocketAddr::from(([10, 0, 0, 1], port)),
                    std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                ])
            })),
            system: DefaultResolver::default(),
        };
        let config = Config::default();
        let addrs = resolver
            .resolve(
                &"http://receiver.test:8080/".parse().unwrap(),
                &config,
                NextTimeout::default(),
            )
            .unwrap();
        assert_eq!(
            addrs.iter().copied().collect::<Vec<_>>(),
            [std::net::SocketAddr::from(([127, 0, 0, 1], 8080))]
        );
        let err = resolver
            .resolve(
                &"http://10.9.8.7/".parse().unwrap(),
                &config,
                NextTimeout::default(),
            )
            .unwrap_err();
        assert_eq!(classify(err).kind(), TransportErrorKind::Refused);
    }

    #[test]
    fn an_ip_literal_resolves_to_itself_with_the_schemes_port() {
        let admitting = GuardedResolver {
            guard: Guard::new(
                UrlPolicy::new()
                    .allow_http(true)
                    .allow_net("127.0.0.0/8".parse().unwrap())
                    .allow_net("::1/128".parse().unwrap()),
            ),
            custom: None,
            system: DefaultResolver::default(),
        };
        let config = Config::default();
        for (uri, want) in [
            ("http://127.0.0.1/", "127.0.0.1:80"),
            ("https://127.0.0.1/", "127.0.0.1:443"),
            ("http://127.0.0.2:8080/", "127.0.0.2:8080"),
            ("https://[::1]:9443/", "[::1]:9443"),
        ] {
            let addrs = admitting
                .resolve(&uri.parse().unwrap(), &config, NextTimeout::default())
                .unwrap();
            let want: SocketAddr = want.parse().unwrap();
            assert_eq!(addrs.iter().copied().collect::<Vec<_>>(), [want], "{uri}");
        }
    }
}
