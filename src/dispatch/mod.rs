//! The transport seam: a [`Dispatcher`] sends one built request and reports what came back.
//!
//! The core never names an HTTP client. Backends live beside this file behind features
//! (`hyper`, `ureq`), and a dialer can plug in its own by implementing [`Dispatcher`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};

use crate::error::BoxError;
use crate::policy::UrlPolicy;

/// The builder setters the backends share word for word, so their docs and behaviour cannot
/// drift apart. Each builder has the fields `timeout`, `body_prefix_limit`, `policy`, `roots` and
/// `proxy`.
#[cfg(any(feature = "hyper", feature = "ureq"))]
macro_rules! shared_builder_setters {
    () => {
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

        /// The address policy every attempt is held to, for a dispatcher used on its own.
        ///
        /// With a [`Webhooks`](crate::Webhooks) engine, leave this unset and give the policy
        /// once, to `Webhooks::builder().policy(...)`: the engine hands it to the dispatcher
        /// through `adopt_policy` when a worker starts. A policy set here is explicit: the
        /// engine's must then be equal to it, or starting the worker fails with
        /// [`crate::Error::InvalidConfig`] (field `policy`). A dispatcher given no policy and
        /// never adopting one holds to [`UrlPolicy::default`]: `https` only, no internal
        /// addresses.
        ///
        /// The URL is checked before each attempt, and every address the connection may use,
        /// resolved or written as an IP literal, is checked before it is connected to; a
        /// refusal is a [`TransportErrorKind::Refused`] error whose
        /// [`TransportError::policy_refusal`] is the [`crate::Error::AddressRefused`] or
        /// [`crate::Error::InvalidUrl`].
        pub fn policy(mut self, policy: UrlPolicy) -> Self {
            self.policy = Some(policy);
            self
        }

        /// Trusts `root` besides the Mozilla roots, for on-premises receivers whose certificate a
        /// private authority signed. Call once per root. Certificates are still fully validated.
        pub fn add_root_certificate(mut self, root: Certificate) -> Self {
            self.roots.push(root);
            self
        }

        /// Sends every delivery through the HTTP proxy `proxy` (none by default, and the
        /// environment is not read: use [`Proxy::from_env`] for that).
        ///
        /// The [`policy`](Self::policy) still holds: the receiver's host is resolved here and
        /// every address judged before the proxy is contacted, and the proxy is asked for a
        /// `CONNECT` tunnel to an admitted address, never to the name; a refused receiver
        /// never reaches the proxy. TLS goes through the tunnel with the receiver's host name.
        /// The proxy's own address is configuration and is not held to the policy. A proxy
        /// that fails or refuses the tunnel is a [`TransportErrorKind::Proxy`] error.
        pub fn proxy(mut self, proxy: Proxy) -> Self {
            self.proxy = Some(proxy);
            self
        }
    };
}

#[cfg(any(feature = "hyper", feature = "ureq"))]
mod body;
#[cfg(any(feature = "hyper", feature = "ureq"))]
mod guard;
#[cfg(feature = "hyper")]
pub mod hyper;
#[cfg(any(feature = "hyper", feature = "ureq"))]
mod proxy;
#[cfg(any(feature = "hyper", feature = "ureq"))]
mod resolve;
#[cfg(any(feature = "hyper", feature = "ureq", feature = "postgres"))]
pub(crate) mod tls;
#[cfg(feature = "ureq")]
pub mod ureq;

#[cfg(any(feature = "hyper", feature = "ureq"))]
pub use proxy::Proxy;
#[cfg(any(feature = "hyper", feature = "ureq"))]
pub use resolve::{Resolve, SystemResolver};
#[cfg(any(feature = "hyper", feature = "ureq", feature = "postgres"))]
pub use tls::Certificate;

/// Set by the request builder, read by every backend.
pub use crate::request::AttemptTimeout;

/// Sends one webhook request. Small, object-safe, and the crate's extension point.
///
/// An implementation must not follow redirects: a 3xx is returned as the response. It reads at
/// most a bounded prefix of the response body and honours an [`AttemptTimeout`] extension on the
/// request when one is present, for the whole attempt, body read included.
///
/// A 2xx is a response as soon as its status line and headers say so: when its body then
/// stalls, breaks off or runs past the time limit, the implementation stops reading and returns
/// it, with the prefix that arrived and the matching [`BodyOutcome`]
/// ([`ReceiverResponse::with_body_outcome`]), never a [`TransportError`].
#[async_trait::async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    /// Sends `request` once and returns the response, or what kind of transport failure stopped it.
    ///
    /// # Errors
    ///
    /// A [`TransportError`] when no HTTP response came back; its [`kind`](TransportError::kind)
    /// says why. A response of any status, 3xx, 4xx and 5xx included, is `Ok`.
    async fn dispatch(&self, request: Request<Bytes>) -> Result<ReceiverResponse, TransportError>;

    /// Takes the one URL policy of the deployment. The [`Webhooks`](crate::Webhooks) engine
    /// calls it once when a worker starts, handing the dispatcher the policy given to
    /// `Webhooks::builder().policy(...)` (or the default one), so the policy is configured in
    /// one place and the dispatcher enforces it on every address it connects to.
    ///
    /// The provided method accepts any policy and does nothing: right for a dispatcher that
    /// checks no addresses (a test double, a proxy that checks them itself). The crate's
    /// backends adopt the policy unless they were built with one of their own.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidConfig`] with field `policy` when the dispatcher holds a
    /// different policy that it cannot give up (one set on its builder, or adopted before);
    /// the worker then does not start.
    fn adopt_policy(&self, policy: &UrlPolicy) -> Result<(), crate::Error> {
        let _ = policy;
        Ok(())
    }
}

#[async_trait::async_trait]
impl<D: Dispatcher + ?Sized> Dispatcher for Arc<D> {
    async fn dispatch(&self, request: Request<Bytes>) -> Result<ReceiverResponse, TransportError> {
        (**self).dispatch(request).await
    }

    fn adopt_policy(&self, policy: &UrlPolicy) -> Result<(), crate::Error> {
        (**self).adopt_policy(policy)
    }
}

#[async_trait::async_trait]
impl<D: Dispatcher + ?Sized> Dispatcher for Box<D> {
    async fn dispatch(&self, request: Request<Bytes>) -> Result<ReceiverResponse, TransportError> {
        (**self).dispatch(request).await
    }

    fn adopt_policy(&self, policy: &UrlPolicy) -> Result<(), crate::Error> {
        (**self).adopt_policy(policy)
    }
}

/// The synchronous twin of [`Dispatcher`], for dialers with no async runtime.
///
/// Same rules: no redirects, a bounded body prefix, [`AttemptTimeout`] honoured, and a 2xx
/// returned as a response whatever its body does afterwards.
pub trait BlockingDispatcher: Send + Sync + 'static {
    /// Sends `request` once, blocking the calling thread until the outcome is known.
    ///
    /// # Errors
    ///
    /// A [`TransportError`] when no HTTP response came back; its [`kind`](TransportError::kind)
    /// says why. A response of any status, 3xx, 4xx and 5xx included, is `Ok`.
    fn dispatch_blocking(
        &self,
        request: Request<Bytes>,
    ) -> Result<ReceiverResponse, TransportError>;

    /// Takes the one URL policy of the deployment: as [`Dispatcher::adopt_policy`]. The
    /// [`Webhooks`](crate::Webhooks) engine calls it once when a worker starts, handing the
    /// dispatcher the policy given to `Webhooks::builder().policy(...)`.
    ///
    /// The provided method accepts any policy and does nothing.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidConfig`] with field `policy` when the dispatcher holds a
    /// different policy that it cannot give up (one set on its builder, or adopted before);
    /// the worker then does not start.
    fn adopt_policy(&self, policy: &UrlPolicy) -> Result<(), crate::Error> {
        let _ = policy;
        Ok(())
    }
}

impl<D: BlockingDispatcher + ?Sized> BlockingDispatcher for Arc<D> {
    fn dispatch_blocking(
        &self,
        request: Request<Bytes>,
    ) -> Result<ReceiverResponse, TransportError> {
        (**self).dispatch_blocking(request)
    }

    fn adopt_policy(&self, policy: &UrlPolicy) -> Result<(), crate::Error> {
        (**self).adopt_policy(policy)
    }
}

impl<D: BlockingDispatcher + ?Sized> BlockingDispatcher for Box<D> {
    fn dispatch_blocking(
        &self,
        request: Request<Bytes>,
    ) -> Result<ReceiverResponse, TransportError> {
        (**self).dispatch_blocking(request)
    }

    fn adopt_policy(&self, policy: &UrlPolicy) -> Result<(), crate::Error> {
        (**self).adopt_policy(policy)
    }
}

/// What the receiver answered: status, headers, at most a bounded prefix of the body, and what
/// became of the body read ([`BodyOutcome`]).
///
/// A 2xx comes back as a response as soon as its status line and headers have arrived: a body
/// that then stalls, breaks off or runs past the attempt's time limit leaves it a 2xx, with the
/// prefix that did arrive and a [`body_outcome`](Self::body_outcome) saying what happened.
#[derive(Debug, Clone)]
pub struct ReceiverResponse {
    status: StatusCode,
    headers: HeaderMap,
    body_prefix: Bytes,
    body_outcome: BodyOutcome,
}

impl ReceiverResponse {
    /// A response with the given parts and a [`BodyOutcome::Complete`] body; `body_prefix`
    /// should already be capped by the backend. Say otherwise with
    /// [`with_body_outcome`](Self::with_body_outcome).
    pub fn new(status: StatusCode, headers: HeaderMap, body_prefix: Bytes) -> Self {
        ReceiverResponse {
            status,
            headers,
            body_prefix,
            body_outcome: BodyOutcome::Complete,
        }
    }

    /// The same response, noting what became of the body read.
    #[must_use]
    pub fn with_body_outcome(mut self, outcome: BodyOutcome) -> Self {
        self.body_outcome = outcome;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first bytes of the body (bounded by the backend's limit): all of it when
    /// [`body_outcome`](Self::body_outcome) is [`BodyOutcome::Complete`], otherwise what arrived
    /// before the read stopped.
    pub fn body_prefix(&self) -> &Bytes {
        &self.body_prefix
    }

    /// What became of the body read: complete, stopped at the prefix limit, timed out or broken
    /// off. Only a 2xx is ever returned with [`BodyOutcome::TimedOut`] or
    /// [`BodyOutcome::Failed`]; the crate's backends report a broken body of any other status
    /// as a [`TransportError`].
    pub fn body_outcome(&self) -> BodyOutcome {
        self.body_outcome
    }
}

/// What became of reading a response body's prefix. It never changes what the status means: a
/// 2xx is delivered whatever its body did.
///
/// `Display` is a short phrase such as `body timed out`, with no header value or URL in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BodyOutcome {
    /// The whole body arrived and fits in the prefix.
    #[default]
    Complete,
    /// The prefix limit was reached before the end of the body was seen; what follows was not
    /// read. (A body of exactly the limit whose length was not announced reads as truncated.)
    Truncated,
    /// The attempt's time limit passed while the body was still arriving; the prefix is what
    /// came before it.
    TimedOut,
    /// The body broke off: the connection was reset or closed before the announced end, or
    /// its framing was invalid. The prefix is what came before.
    Failed,
}

impl BodyOutcome {
    /// Whether the whole body arrived.
    pub fn is_complete(self) -> bool {
        self == BodyOutcome::Complete
    }

    fn as_str(self) -> &'static str {
        match self {
            BodyOutcome::Complete => "body complete",
            BodyOutcome::Truncated => "body truncated at the prefix limit",
            BodyOutcome::TimedOut => "body timed out",
            BodyOutcome::Failed => "body broke off",
        }
    }
}

impl fmt::Display for BodyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of transport failure happened: no usable response status and headers came back.
///
/// The crate's backends sort the same receiver behaviour into the same kind. `Display` is a
/// short phrase naming the kind (for example `response headers too large`), never a header
/// value or anything of the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// DNS resolution failed.
    Dns,
    /// The TCP connection could not be made: refused, or the receiver was unreachable.
    Connect,
    /// The TCP connection was not made within the connect time limit.
    ConnectTimeout,
    /// The attempt ran past its time limit before the response headers arrived (or, for a
    /// response that is not a 2xx, before its body prefix did).
    Timeout,
    /// The receiver's TLS certificate was refused: not from a trusted authority, not for this
    /// host name, expired or not yet valid.
    Tls,
    /// The TLS handshake failed for another reason than the certificate: the receiver does not
    /// speak TLS on that port, no common protocol version or cipher, an alert from the
    /// receiver, a corrupt TLS record.
    TlsHandshake,
    /// The connection was reset before the response headers arrived.
    Reset,
    /// The connection was closed before the response headers were complete: before any byte
    /// of the response, or part-way through the status line or headers.
    ClosedBeforeHeaders,
    /// The response headers were larger than the backend accepts (in bytes or in number).
    HeadersTooLarge,
    /// What came back is not an HTTP/1 response: HTTP/0.9-style bytes with no status line, an
    /// invalid status line, or header lines that cannot be parsed.
    NotHttp,
    /// Reading or writing failed in a way not sorted above, or the body of a response that is
    /// not a 2xx broke off.
    Io,
    /// The egress proxy failed the attempt: it could not be reached, did not answer within the
    /// connect time limit, or answered `CONNECT` with anything but a 2xx (a 407 for missing or
    /// refused proxy credentials included). Retried, as a connect failure is.
    Proxy,
    /// The URL or a resolved address was refused by the address policy; retrying cannot help.
    Refused,
    /// The request could not be sent as built (bad URI for this backend, for example).
    InvalidRequest,
    /// Anything else.
    Other,
}

impl TransportErrorKind {
    /// Every kind, for tests that must cover each (a new kind is added here once).
    #[cfg(test)]
    pub(crate) const ALL: [TransportErrorKind; 15] = [
        TransportErrorKind::Dns,
        TransportErrorKind::Connect,
        TransportErrorKind::ConnectTimeout,
        TransportErrorKind::Timeout,
        TransportErrorKind::Tls,
        TransportErrorKind::TlsHandshake,
        TransportErrorKind::Reset,
        TransportErrorKind::ClosedBeforeHeaders,
        TransportErrorKind::HeadersTooLarge,
        TransportErrorKind::NotHttp,
        TransportErrorKind::Io,
        TransportErrorKind::Proxy,
        TransportErrorKind::Refused,
        TransportErrorKind::InvalidRequest,
        TransportErrorKind::Other,
    ];

    /// Whether another attempt could succeed where this one failed.
    pub fn is_retryable(self) -> bool {
        !matches!(
            self,
            TransportErrorKind::Refused | TransportErrorKind::InvalidRequest
        )
    }

    fn as_str(self) -> &'static str {
        match self {
            TransportErrorKind::Dns => "DNS resolution failed",
            TransportErrorKind::Connect => "connect failed",
            TransportErrorKind::ConnectTimeout => "connect timed out",
            TransportErrorKind::Timeout => "timed out",
            TransportErrorKind::Tls => "TLS certificate invalid",
            TransportErrorKind::TlsHandshake => "TLS handshake failed",
            TransportErrorKind::Reset => "connection reset",
            TransportErrorKind::ClosedBeforeHeaders => {
                "connection closed before the response headers"
            }
            TransportErrorKind::HeadersTooLarge => "response headers too large",
            TransportErrorKind::NotHttp => "not an HTTP response",
            TransportErrorKind::Io => "I/O error",
            TransportErrorKind::Proxy => "proxy failed",
            TransportErrorKind::Refused => "refused by address policy",
            TransportErrorKind::InvalidRequest => "invalid request",
            TransportErrorKind::Other => "transport error",
        }
    }
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure to get an HTTP response, with its kind and the backend's cause behind `source()`.
///
/// `Display` prints the kind only; the cause is reached through `source()`, so a reporter that
/// walks the chain prints each message once.
#[derive(Debug)]
pub struct TransportError {
    kind: TransportErrorKind,
    source: Option<BoxError>,
}

impl TransportError {
    /// A transport error of `kind` caused by `source`.
    pub fn new(kind: TransportErrorKind, source: impl Into<BoxError>) -> Self {
        TransportError {
            kind,
            source: Some(source.into()),
        }
    }

    /// A transport error of `kind` with no further cause.
    pub fn from_kind(kind: TransportErrorKind) -> Self {
        TransportError { kind, source: None }
    }

    /// What kind of failure this was.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// The address-policy refusal behind a [`TransportErrorKind::Refused`] error, if any.
    pub fn policy_refusal(&self) -> Option<&crate::Error> {
        self.source.as_deref()?.downcast_ref::<crate::Error>()
    }
}

impl fmt::Display for TransportError {
    /// The kind alone, for example `connect failed`. The cause is not repeated here: a reporter
    /// that walks [`source()`](std::error::Error::source) prints it once, after this.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<crate::Error> for TransportError {
    /// A policy refusal (or other crate error) surfaced from inside a backend.
    fn from(err: crate::Error) -> Self {
        let kind = match err {
            crate::Error::AddressRefused { .. } | crate::Error::InvalidUrl { .. } => {
                TransportErrorKind::Refused
            }
            _ => TransportErrorKind::Other,
        };
        TransportError::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Always(StatusCode);

    #[async_trait::async_trait]
    impl Dispatcher for Always {
        async fn dispatch(&self, _: Request<Bytes>) -> Result<ReceiverResponse, TransportError> {
            Ok(ReceiverResponse::new(
                self.0,
                HeaderMap::new(),
                Bytes::new(),
            ))
        }
    }

    fn assert_object_safe(_: &dyn Dispatcher) {}

    #[test]
    fn dispatcher_is_object_safe_and_wraps() {
        let d: Arc<dyn Dispatcher> = Arc::new(Always(StatusCode::NO_CONTENT));
        assert_object_safe(&d);
        let boxed: Box<dyn Dispatcher> = Box::new(d.clone());
        assert_object_safe(&boxed);
    }

    #[test]
    fn refused_is_not_retryable() {
        assert!(!TransportErrorKind::Refused.is_retryable());
        assert!(TransportErrorKind::Timeout.is_retryable());
        assert!(TransportErrorKind::Io.is_retryable());
    }

    #[test]
    fn every_kind_reads_distinctly() {
        use std::collections::HashSet;
        let kinds = TransportErrorKind::ALL;
        let shown: HashSet<String> = kinds.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), kinds.len(), "{shown:?}");
        assert_eq!(
            TransportErrorKind::HeadersTooLarge.to_string(),
            "response headers too large"
        );
        assert!(TransportErrorKind::Reset.is_retryable());
        assert!(TransportErrorKind::NotHttp.is_retryable());
        assert!(TransportErrorKind::Proxy.is_retryable());
    }

    #[test]
    fn a_response_notes_its_body_and_defaults_to_complete() {
        let r = ReceiverResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::new());
        assert_eq!(r.body_outcome(), BodyOutcome::Complete);
        assert!(r.body_outcome().is_complete());
        let r = r.with_body_outcome(BodyOutcome::TimedOut);
        assert_eq!(r.body_outcome(), BodyOutcome::TimedOut);
        assert_eq!(r.body_outcome().to_string(), "body timed out");
        assert!(format!("{r:?}").contains("TimedOut"));
    }

    /// Every message of the chain, as a reporter that walks `source()` prints them.
    fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut messages = Vec::new();
        let mut next = Some(err);
        while let Some(e) = next {
            messages.push(e.to_string());
            next = e.source();
        }
        messages
    }

    #[test]
    fn display_prints_the_kind_and_the_cause_comes_through_source() {
        let err = TransportError::new(TransportErrorKind::Connect, "connection refused");
        assert_eq!(err.to_string(), "connect failed");
        assert_eq!(chain(&err), ["connect failed", "connection refused"]);
        let err = TransportError::from_kind(TransportErrorKind::Timeout);
        assert_eq!(chain(&err), ["timed out"]);
    }
}
