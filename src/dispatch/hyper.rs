//! The async backend: hyper 1 and hyper-util's pooled client on tokio, TLS through rustls.
//!
//! Every address the connection may use passes one check point of ours before it is connected
//! to: `GuardedConnector` resolves names (through the builder's [`Resolve`]), checks every
//! address, resolved or literal, and connects only to the admitted ones. What is checked is
//! exactly what is connected to; nothing is looked up twice. With a [`Proxy`], the connector
//! asks the proxy for a `CONNECT` tunnel to an admitted address instead of connecting to it, and
//! TLS (hyper-rustls, above the connector) goes through the tunnel.

use crate::limits::{DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_BODY_PREFIX_LIMIT};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::hyper::body::{Body as _, Incoming};
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::dispatch::body::{BodyEnd, Prefix, settle};
use crate::dispatch::guard::{
    DnsError, Guard, bare_host, candidates, check_target, error_chain, io_kind_in, is_dns, port_of,
    refusal_in, tls_kind,
};
use crate::dispatch::proxy::{Proxy, is_proxy, open_tunnel};
use crate::dispatch::resolve::{Resolve, SharedResolver};
use crate::dispatch::tls::{Certificate, client_config};
use crate::dispatch::{
    AttemptTimeout, BodyOutcome, Dispatcher, ReceiverResponse, TransportError, TransportErrorKind,
};
use crate::error::BoxError;
use crate::policy::UrlPolicy;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

type HttpsClient = Client<SharedConnector, Full<Bytes>>;

/// Sends webhook requests with hyper 1 on a tokio runtime (feature `hyper`).
///
/// - Connections are pooled and reused per receiver; TLS is rustls with the `ring` provider,
///   certificates validated against the Mozilla (webpki) roots and any root added with
///   [`add_root_certificate`](HyperDispatcherBuilder::add_root_certificate). Both `http` and
///   `https` URLs can be connected to.
/// - A connect timeout (default 5 s) and a whole-attempt timeout (default 15 s) that covers
///   connecting, sending, the response head and the bounded body read. An [`AttemptTimeout`]
///   extension on the request replaces the whole-attempt default for that request.
/// - Every attempt is held to one [`UrlPolicy`]: the builder's, else the one adopted from the
///   `Webhooks` engine ([`Dispatcher::adopt_policy`]), else the default (`https` only and no
///   internal addresses): the URL before the attempt, and each address, resolved or literal,
///   before it is connected to. Names are resolved once per connection, through the
///   builder's [`Resolve`] (the system resolver by default) on tokio's blocking pool, and only
///   the admitted addresses are connected to.
/// - With a [`proxy`](HyperDispatcherBuilder::proxy), each connection is a `CONNECT` tunnel
///   through it to an admitted address, opened only after the policy admitted it.
/// - Redirects are never followed: a 3xx comes back as the [`ReceiverResponse`].
/// - At most `body_prefix_limit` bytes of the response body are read (default
///   [`DEFAULT_BODY_PREFIX_LIMIT`]); the rest is never read.
/// - A 2xx is a response as soon as its status line and headers arrive: a body that then
///   breaks off or outlasts the attempt's time limit is noted in
///   [`ReceiverResponse::body_outcome`], and the response returned at the limit at the latest.
///   For any other status, a body that breaks off before the prefix is read is a
///   [`TransportErrorKind::Io`] error and one that outlasts the limit a
///   [`TransportErrorKind::Timeout`].
///
/// It can be built anywhere; [`Dispatcher::dispatch`] must run inside a tokio runtime with the
/// time driver enabled. Cloning is cheap and clones share the connection pool.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use call_result_webhook::{
///     CallResult, DeliveryId, Dispatcher, HyperDispatcher, PreferencesUpdate,
///     preferences::Preferences, request::{EncodedBody, build_request},
/// };
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let dispatcher = HyperDispatcher::builder()
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
/// let response = dispatcher.dispatch(request).await?;
/// println!("{}", response.status());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HyperDispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: HttpsClient,
    guard: Guard,
    resolver: SharedResolver,
    proxy: Option<Arc<Proxy>>,
    extra_roots: usize,
    connect_timeout: Duration,
    timeout: Duration,
    body_prefix_limit: usize,
}

impl HyperDispatcher {
    /// A dispatcher with the default settings.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts configuring a dispatcher.
    pub fn builder() -> HyperDispatcherBuilder {
        HyperDispatcherBuilder {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_ATTEMPT_TIMEOUT,
            body_prefix_limit: DEFAULT_BODY_PREFIX_LIMIT,
            policy: None,
            resolver: SharedResolver::system(),
            roots: Vec::new(),
            proxy: None,
        }
    }

    /// One attempt, every step of it over by `deadline`; `limit` is the time it was given.
    async fn attempt(
        &self,
        request: Request<Bytes>,
        deadline: tokio::time::Instant,
        limit: Duration,
    ) -> Result<ReceiverResponse, TransportError> {
        let sent =
            tokio::time::timeout_at(deadline, self.inner.client.request(request.map(Full::new)));
        let response = match sent.await {
            Ok(outcome) => outcome.map_err(|e| {
                let is_connect = e.is_connect();
                classify(e, is_connect)
            })?,
            Err(_) => {
                return Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    format!("no response headers within {} ms", limit.as_millis()),
                ));
            }
        };
        let (parts, body) = response.into_parts();
        let mut prefix = Prefix::new(self.inner.body_prefix_limit);
        let end = read_prefix(body, &mut prefix, deadline).await;
        settle(parts, prefix, end, limit)
    }
}

impl Default for HyperDispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HyperDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperDispatcher")
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("timeout", &self.inner.timeout)
            .field("body_prefix_limit", &self.inner.body_prefix_limit)
            .field("policy", self.inner.guard.policy())
            .field("resolver", &self.inner.resolver)
            .field("proxy", &self.inner.proxy)
            .field("extra_roots", &self.inner.extra_roots)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Dispatcher for HyperDispatcher {
    async fn dispatch(&self, request: Request<Bytes>) -> Result<ReceiverResponse, TransportError> {
        let limit = request
            .extensions()
            .get::<AttemptTimeout>()
            .map_or(self.inner.timeout, |t| t.0);
        let deadline = tokio::time::Instant::now() + limit;
        check_target(request.uri())?;
        self.inner.guard.check_uri(request.uri())?;
        self.attempt(request, deadline, limit).await
    }

    /// Adopts `policy` when the builder was given none and none was adopted before; from then
    /// on every attempt, and every connection the connector makes, is held to it. Clones share
    /// the adopted policy.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidConfig`] with field `policy` when the dispatcher holds a
    /// different policy, set on its builder or adopted before; the one it holds stays in force.
    fn adopt_policy(&self, policy: &UrlPolicy) -> Result<(), crate::Error> {
        self.inner.guard.adopt(policy)
    }
}

/// Configures a [`HyperDispatcher`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct HyperDispatcherBuilder {
    connect_timeout: Duration,
    timeout: Duration,
    body_prefix_limit: usize,
    policy: Option<UrlPolicy>,
    resolver: SharedResolver,
    roots: Vec<Certificate>,
    proxy: Option<Proxy>,
}

impl HyperDispatcherBuilder {
    /// The time limit for opening the TCP connection (default 5 s); when a name resolves to
    /// several addresses, it is shared among them.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Resolves host names with `resolver` instead of the system resolver: for a dialer with
    /// its own DNS, and for tests. Every address it answers is still checked against the
    /// [`policy`](Self::policy) before it is connected to, so it cannot lead past it.
    pub fn resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = SharedResolver::custom(resolver);
        self
    }

    shared_builder_setters!();

    /// Builds the dispatcher. Needs no runtime; the first request must be made inside one.
    pub fn build(self) -> HyperDispatcher {
        let guard = Guard::from_builder(self.policy);
        let proxy = self.proxy.map(Arc::new);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(Arc::unwrap_or_clone(client_config(&self.roots)))
            .https_or_http()
            .enable_http1()
            .wrap_connector(GuardedConnector {
                guard: guard.clone(),
                resolver: self.resolver.clone(),
                proxy: proxy.clone(),
                connect_timeout: self.connect_timeout,
            });
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(SharedConnector(Arc::new(connector)));
        HyperDispatcher {
            inner: Arc::new(Inner {
                client,
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

/// Reads the body into `prefix` until it ends, the prefix is full, it breaks off or `deadline`
/// passes; whatever follows is never read.
async fn read_prefix(
    mut body: Incoming,
    prefix: &mut Prefix,
    deadline: tokio::time::Instant,
) -> BodyEnd {
    loop {
        if prefix.is_full() {
            return BodyEnd::of(prefix.outcome_when_full(body.is_end_stream()));
        }
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return BodyEnd::of(BodyOutcome::TimedOut),
            Ok(None) => return BodyEnd::of(BodyOutcome::Complete),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    prefix.push(data);
                }
            }
            Ok(Some(Err(e))) => return BodyEnd::failed(e),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// The TCP connector, and the one check point of this backend: the URL's host is resolved
/// (unless it is an IP literal), every address passes the guard, and only the admitted ones are
/// connected to, in order, sharing the connect timeout, or tunnelled to through the proxy.
/// Nothing else resolves or connects.
#[derive(Debug, Clone)]
struct GuardedConnector {
    guard: Guard,
    resolver: SharedResolver,
    proxy: Option<Arc<Proxy>>,
    connect_timeout: Duration,
}

/// The connector behind one `Arc`. hyper-util clones its connector for every request, even one a
/// pooled connection serves; this makes that clone one reference count rather than one per
/// part (TLS configuration, name resolver, guard...). A real connect clones the parts.
#[derive(Clone)]
struct SharedConnector(Arc<HttpsConnector<GuardedConnector>>);

impl Service<Uri> for SharedConnector {
    type Response = <HttpsConnector<GuardedConnector> as Service<Uri>>::Response;
    type Error = BoxError;
    type Future = <HttpsConnector<GuardedConnector> as Service<Uri>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both layers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        HttpsConnector::clone(&self.0).call(dst)
    }
}

impl Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(dst).await })
    }
}

impl GuardedConnector {
    async fn connect(self, dst: Uri) -> Result<TokioIo<TcpStream>, BoxError> {
        let host = bare_host(dst.host().unwrap_or_default()).to_owned();
        let port = port_of(&dst);
        let addrs = if host.parse::<IpAddr>().is_ok() {
            candidates(&self.resolver, &host, port)?
        } else {
            // The resolver blocks: keep it off the runtime's worker threads.
            let (resolver, name) = (self.resolver.clone(), host.clone());
            tokio::task::spawn_blocking(move || candidates(&resolver, &name, port))
                .await
                .map_err(|e| DnsError::new(&host, io::Error::other(e)))??
        };
        let admitted = self.guard.filter(&host, addrs)?;
        let https = dst
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"));
        let stream = match self
            .proxy
            .as_deref()
            .and_then(|p| p.for_target(https, &host))
        {
            // The proxy only ever hears of addresses the guard admitted.
            Some(proxy) => open_tunnel(proxy, &admitted, self.connect_timeout).await?,
            None => connect_in_turn(&admitted, self.connect_timeout).await?,
        };
        Ok(TokioIo::new(stream))
    }
}

/// Connects to the first address that answers, trying them in order; each try gets an equal
/// share of what is left of `timeout`.
async fn connect_in_turn(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Webhook requests are small: send them without waiting for more.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
}

/// Sorts a hyper, hyper-util, rustls or resolver failure before the response headers into a
/// [`TransportErrorKind`], keeping the original behind `source()`. `is_connect` says the failure
/// happened while connecting.
fn classify<E>(err: E, is_connect: bool) -> TransportError
where
    E: StdError + Send + Sync + 'static,
{
    let chain = error_chain(&err);
    if let Some(refused) = refusal_in(&chain) {
        return refused;
    }
    let hyper_error = chain
        .iter()
        .find_map(|e| e.downcast_ref::<::hyper::Error>());
    let kind = if is_proxy(&chain) {
        TransportErrorKind::Proxy
    } else if is_dns(&chain) {
        TransportErrorKind::Dns
    } else if let Some(tls) = tls_kind(&chain) {
        tls
    } else if is_connect {
        match io_kind_in(&chain) {
            Some(TransportErrorKind::Timeout) => TransportErrorKind::ConnectTimeout,
            _ => TransportErrorKind::Connect,
        }
    } else if let Some(h) = hyper_error {
        if is_head_too_large(h) {
            TransportErrorKind::HeadersTooLarge
        } else if h.is_parse() {
            TransportErrorKind::NotHttp
        } else if h.is_timeout() {
            TransportErrorKind::Timeout
        } else if h.is_user() {
            TransportErrorKind::InvalidRequest
        } else if let Some(io) = io_kind_in(&chain) {
            io
        } else if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
            // The connection ended (or its task did) before a whole response head was read.
            TransportErrorKind::ClosedBeforeHeaders
        } else {
            TransportErrorKind::Io
        }
    } else {
        io_kind_in(&chain).unwrap_or(TransportErrorKind::Other)
    };
    TransportError::new(kind, err)
}

/// Whether hyper refused the response head as too large. hyper's `is_parse_too_large` exists only
/// with its `server` feature, which this crate does not enable (a test build gets it through
/// the dev-dependencies, a user's build does not), so the parse error is told by its message;
/// `tests/backends.rs` sends the case for real.
fn is_head_too_large(err: &::hyper::Error) -> bool {
    err.is_parse() && err.to_string() == "message head is too large"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_outside_a_runtime_and_debug_shows_settings() {
        let d = HyperDispatcher::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(3))
            .body_prefix_limit(10)
            .build();
        let shown = format!("{d:?}");
        assert!(shown.contains("connect_timeout: 2s"), "{shown}");
        assert!(shown.contains("timeout: 3s"), "{shown}");
        assert!(shown.contains("body_prefix_limit: 10"), "{shown}");
        let _cheap = d.clone();
    }

    #[test]
    fn failures_are_sorted_by_kind() {
        let tls = rustls::Error::General("bad record".into());
        let wrapped = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, tls));
        assert_eq!(
            classify(wrapped, true).kind(),
            TransportErrorKind::TlsHandshake
        );

        let dns = DnsError::new("nowhere.invalid", io::Error::other("not found"));
        assert_eq!(
            classify(io::Error::other(dns), true).kind(),
            TransportErrorKind::Dns
        );

        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, cert);
        assert_eq!(classify(wrapped, true).kind(), TransportErrorKind::Tls);

        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(classify(refused, true).kind(), TransportErrorKind::Connect);
        let slow = io::Error::new(io::ErrorKind::TimedOut, "connecting timed out");
        assert_eq!(
            classify(slow, true).kind(),
            TransportErrorKind::ConnectTimeout
        );
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(reset, false).kind(), TransportErrorKind::Reset);
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
        assert_eq!(
            classify(eof, false).kind(),
            TransportErrorKind::ClosedBeforeHeaders
        );
    }

    #[test]
    fn a_policy_refusal_becomes_refused_with_the_refusal_as_source() {
        let refusal = crate::Error::AddressRefused {
            host: "internal.example".into(),
            addr: "10.0.0.1".parse().unwrap(),
            rule: "private",
        };
        let err = classify(io::Error::other(refusal), true);
        assert_eq!(err.kind(), TransportErrorKind::Refused);
        assert!(matches!(
            err.policy_refusal(),
            Some(crate::Error::AddressRefused {
                rule: "private",
                ..
            })
        ));
    }

    fn refusal(err: BoxError) -> crate::Error {
        match err.downcast::<crate::Error>() {
            Ok(e) => *e,
            Err(other) => panic!("not a policy refusal: {other}"),
        }
    }

    fn connector(policy: UrlPolicy, resolver: SharedResolver) -> GuardedConnector {
        GuardedConnector {
            guard: Guard::new(policy),
            resolver,
            proxy: None,
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn an_ip_literal_is_refused_by_the_connector_before_any_connection() {
        let mut connector = connector(
            UrlPolicy::new().allow_http(true),
            SharedResolver::custom(|_: &str, _: u16| -> io::Result<Vec<SocketAddr>> {
                panic!("an IP literal is never resolved")
            }),
        );
        for uri in [
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "https://10.0.0.1/",
        ] {
            let err = connector.call(uri.parse().unwrap()).await.unwrap_err();
            assert!(
                matches!(refusal(err), crate::Error::AddressRefused { .. }),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn a_name_is_refused_when_every_address_it_resolves_to_is() {
        let mut refusing = connector(UrlPolicy::new(), SharedResolver::system());
        let err = refusing
            .call("http://localhost:9/".parse().unwrap())
            .await
            .unwrap_err();
        match refusal(err) {
            crate::Error::AddressRefused { host, rule, .. } => {
                assert_eq!(host, "localhost");
                assert_eq!(rule, "loopback");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn only_admitted_addresses_are_connected_to() {
        let admitted = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let (admitted, refused) = (
            admitted.local_addr().unwrap(),
            refused.local_addr().unwrap(),
        );
        // The resolver offers a refused (but listening) address first: it is dropped, never
        // tried, and the admitted one is connected to.
        let mut connector = connector(
            UrlPolicy::new().allow_net("127.0.0.1/32".parse().unwrap()),
            SharedResolver::custom(move |_: &str, _: u16| Ok(vec![refused, admitted])),
        );
        let stream = connector
            .call("http://receiver.test/".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(stream.into_inner().peer_addr().unwrap(), admitted);
    }

    #[tokio::test]
    async fn a_failed_lookup_is_dns() {
        let mut failing = connector(
            UrlPolicy::new(),
            SharedResolver::custom(|_: &str, _: u16| Err(io::Error::other("SERVFAIL"))),
        );
        let err = failing
            .call("https://void.test/".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            classify(io::Error::other(err), true).kind(),
            TransportErrorKind::Dns
        );
    }
}
