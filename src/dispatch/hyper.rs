//! The async backend: hyper 1 and hyper-util's pooled client on tokio, TLS through rustls.
//!
//! Every address the connection may use passes one check point of ours before it is connected
//! to: names go through [`GuardedResolver`], IP literals through [`GuardedConnector`]. What is
//! checked is exactly what is connected to; nothing is looked up twice.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::hyper::body::Incoming;
use bytes::{Bytes, BytesMut};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::dispatch::guard::{
    DnsError, Guard, bare_host, check_target, error_chain, is_dns, is_tls, refusal_in,
};
use crate::dispatch::{
    AttemptTimeout, DEFAULT_BODY_PREFIX_LIMIT, Dispatcher, Response, TransportError,
    TransportErrorKind,
};
use crate::error::BoxError;
use crate::policy::UrlPolicy;
use crate::preferences::DEFAULT_ATTEMPT_TIMEOUT;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

type HttpsClient = Client<HttpsConnector<GuardedConnector>, Full<Bytes>>;

/// Sends webhook requests with hyper 1 on a tokio runtime (feature `hyper`).
///
/// - Connections are pooled and reused per receiver; TLS is rustls with the `ring` provider and
///   the Mozilla (webpki) roots. Both `http` and `https` URLs can be connected to.
/// - A connect timeout (default 5 s) and a whole-attempt timeout (default 15 s) that covers
///   connecting, sending, the response head and the bounded body read. An [`AttemptTimeout`]
///   extension on the request replaces the whole-attempt default for that request.
/// - Every attempt is held to the builder's [`UrlPolicy`](crate::UrlPolicy) (by default `https`
///   only and no internal addresses): the URL before the attempt, and each address, resolved or
///   literal, before it is connected to. Names are resolved once, through the system resolver on
///   tokio's blocking pool, and only the admitted addresses are connected to.
/// - Redirects are never followed: a 3xx comes back as the [`Response`].
/// - At most `body_prefix_limit` bytes of the response body are read (default
///   [`DEFAULT_BODY_PREFIX_LIMIT`]); the rest is never read.
/// - A response whose body breaks off before the prefix is read is a
///   [`TransportErrorKind::Io`] error, not a response.
///
/// It can be built anywhere; [`Dispatcher::dispatch`] must run inside a tokio runtime with the
/// time driver enabled. Cloning is cheap and clones share the connection pool.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use call_result_webhook::{
///     build_request, Account, CallResult, DeliveryId, Dispatcher, EncodedBody, HyperDispatcher,
///     PreferencesUpdate, Principal,
/// };
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let dispatcher = HyperDispatcher::builder()
///     .connect_timeout(Duration::from_secs(5))
///     .timeout(Duration::from_secs(15))
///     .build();
///
/// let mut account = Account::new("acme");
/// account.update_preferences(
///     &Principal::administrator("alice"),
///     PreferencesUpdate::new().enabled(true).url("https://crm.example/hook").credentials("user", "passwd"),
/// )?;
/// let call = CallResult::builder().reference("123").build();
/// let body = EncodedBody::encode(&call, account.preferences())?;
/// let request = build_request(account.preferences(), &DeliveryId::generate(), &body)?;
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
            policy: UrlPolicy::default(),
        }
    }

    async fn attempt(&self, request: Request<Bytes>) -> Result<Response, TransportError> {
        let response = self
            .inner
            .client
            .request(request.map(Full::new))
            .await
            .map_err(|e| {
                let is_connect = e.is_connect();
                classify(e, is_connect)
            })?;
        let (parts, body) = response.into_parts();
        let prefix = read_prefix(body, self.inner.body_prefix_limit).await?;
        Ok(Response::new(parts.status, parts.headers, prefix))
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
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Dispatcher for HyperDispatcher {
    async fn dispatch(&self, request: Request<Bytes>) -> Result<Response, TransportError> {
        let limit = request
            .extensions()
            .get::<AttemptTimeout>()
            .map_or(self.inner.timeout, |t| t.0);
        check_target(request.uri())?;
        self.inner.guard.check_uri(request.uri())?;
        match tokio::time::timeout(limit, self.attempt(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(TransportError::new(
                TransportErrorKind::Timeout,
                format!("no complete response within {} ms", limit.as_millis()),
            )),
        }
    }
}

/// Configures a [`HyperDispatcher`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct HyperDispatcherBuilder {
    connect_timeout: Duration,
    timeout: Duration,
    body_prefix_limit: usize,
    policy: UrlPolicy,
}

impl HyperDispatcherBuilder {
    /// The time limit for opening the TCP connection (default 5 s); when a name resolves to
    /// several addresses, it is shared among them.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The whole-attempt time limit used when a request carries no [`AttemptTimeout`]
    /// (default 15 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many bytes of a response body are kept (default [`DEFAULT_BODY_PREFIX_LIMIT`]).
    pub fn body_prefix_limit(mut self, bytes: usize) -> Self {
        self.body_prefix_limit = bytes;
        self
    }

    /// The address policy every attempt is held to (default [`UrlPolicy::default`]: `https`
    /// only, no internal addresses). The URL is checked before each attempt, and every address
    /// the connection may use, resolved or written as an IP literal, is checked before it is
    /// connected to; a refusal is a [`TransportErrorKind::Refused`] error whose
    /// [`TransportError::policy_refusal`] is the [`crate::Error::AddressRefused`] or
    /// [`crate::Error::InvalidUrl`].
    pub fn policy(mut self, policy: UrlPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Builds the dispatcher. Needs no runtime; the first request must be made inside one.
    pub fn build(self) -> HyperDispatcher {
        let guard = Guard::new(self.policy);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            guard: guard.clone(),
        });
        // The TLS layer above hands https URIs down to us.
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(GuardedConnector {
                http,
                guard: guard.clone(),
            });
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        HyperDispatcher {
            inner: Arc::new(Inner {
                client,
                guard,
                connect_timeout: self.connect_timeout,
                timeout: self.timeout,
                body_prefix_limit: self.body_prefix_limit,
            }),
        }
    }
}

/// rustls with the `ring` provider, its safe default protocol versions and the webpki roots.
fn tls_config() -> rustls::ClientConfig {
    let roots: rustls::RootCertStore = webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Reads at most `limit` bytes of the body; whatever follows is never read.
async fn read_prefix(mut body: Incoming, limit: usize) -> Result<Bytes, TransportError> {
    let mut prefix = BytesMut::new();
    while prefix.len() < limit {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let take = data.len().min(limit - prefix.len());
                    prefix.extend_from_slice(&data[..take]);
                }
            }
            Some(Err(e)) => return Err(classify(e, false)),
        }
    }
    Ok(prefix.freeze())
}

/// Name resolution through the system resolver (on tokio's blocking pool), then the guard.
#[derive(Debug, Clone)]
struct GuardedResolver {
    guard: Guard,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup = host.clone();
            let resolved = tokio::task::spawn_blocking(move || {
                (lookup.as_str(), 0)
                    .to_socket_addrs()
                    .map(Iterator::collect::<Vec<_>>)
            })
            .await
            .map_err(|e| DnsError::new(&host, io::Error::other(e)))?
            .map_err(|e| DnsError::new(&host, e))?;
            if resolved.is_empty() {
                return Err(DnsError::new(&host, io::Error::other("no addresses")).into());
            }
            Ok(guard.filter(&host, resolved)?.into_iter())
        })
    }
}

/// The TCP connector, with IP-literal hosts checked here: hyper-util connects to them without
/// asking the resolver.
#[derive(Debug, Clone)]
struct GuardedConnector {
    http: HttpConnector<GuardedResolver>,
    guard: Guard,
}

impl Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        if let Some(host) = dst.host() {
            // The same reading of the host that hyper-util uses to skip the resolver.
            let bare = bare_host(host);
            if let Ok(addr) = bare.parse::<IpAddr>()
                && let Err(e) = self.guard.check_addr(bare, addr)
            {
                return Box::pin(async move { Err(e.into()) });
            }
        }
        let connecting = self.http.call(dst);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// Sorts a hyper, hyper-util, rustls or resolver failure into a [`TransportErrorKind`], keeping
/// the original behind `source()`. `is_connect` says the failure happened while connecting.
fn classify<E>(err: E, is_connect: bool) -> TransportError
where
    E: StdError + Send + Sync + 'static,
{
    let chain = error_chain(&err);
    if let Some(refused) = refusal_in(&chain) {
        return refused;
    }
    let kind = if is_dns(&chain) {
        TransportErrorKind::Dns
    } else if is_tls(&chain) {
        TransportErrorKind::Tls
    } else if is_connect {
        TransportErrorKind::Connect
    } else if let Some(h) = chain
        .iter()
        .find_map(|e| e.downcast_ref::<::hyper::Error>())
    {
        if h.is_parse() {
            TransportErrorKind::Other
        } else if h.is_timeout() {
            TransportErrorKind::Timeout
        } else if h.is_user() {
            TransportErrorKind::InvalidRequest
        } else {
            TransportErrorKind::Io
        }
    } else if chain.iter().any(|e| e.is::<io::Error>()) {
        TransportErrorKind::Io
    } else {
        TransportErrorKind::Other
    };
    TransportError::new(kind, err)
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
        assert_eq!(classify(wrapped, true).kind(), TransportErrorKind::Tls);

        let dns = DnsError::new("nowhere.invalid", io::Error::other("not found"));
        assert_eq!(
            classify(io::Error::other(dns), true).kind(),
            TransportErrorKind::Dns
        );

        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(classify(refused, true).kind(), TransportErrorKind::Connect);
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(reset, false).kind(), TransportErrorKind::Io);
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

    #[tokio::test]
    async fn an_ip_literal_is_refused_by_the_connector_before_any_connection() {
        let guard = Guard::new(UrlPolicy::new().allow_http(true));
        let mut connector = GuardedConnector {
            http: HttpConnector::new_with_resolver(GuardedResolver {
                guard: guard.clone(),
            }),
            guard,
        };
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
    async fn a_name_is_refused_by_the_resolver_when_every_address_is() {
        let mut resolver = GuardedResolver {
            guard: Guard::new(UrlPolicy::new()),
        };
        let err = resolver
            .call("localhost".parse().unwrap())
            .await
            .unwrap_err();
        match refusal(err) {
            crate::Error::AddressRefused { host, rule, .. } => {
                assert_eq!(host, "localhost");
                assert_eq!(rule, "loopback");
            }
            other => panic!("{other:?}"),
        }

        let mut admitting = GuardedResolver {
            guard: Guard::new(UrlPolicy::new().allow_net("127.0.0.0/8".parse().unwrap())),
        };
        let addrs: Vec<SocketAddr> = admitting
            .call("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip() == IpAddr::from([127, 0, 0, 1])));
    }
}
