//! Name resolution for the backends: the [`Resolve`] hook and the system resolver behind it.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// Turns a host name into the addresses a delivery may connect to.
///
/// Both backends take one ([`HyperDispatcherBuilder::resolver`], [`UreqDispatcherBuilder::resolver`]);
/// the default is [`SystemResolver`], the operating system's resolver. A dialer with its own DNS
/// (a service registry, a split-horizon resolver, a cache) plugs it in here, and tests use it so
/// that a name never reaches real DNS.
///
/// The resolver only proposes. Every address it returns is then held to the dispatcher's
/// [`UrlPolicy`](crate::UrlPolicy) before anything is connected to, and only the admitted
/// addresses are used, so a resolver, whatever it answers, cannot lead a delivery to a refused
/// address. Each new connection asks the resolver again and judges the new answer: what was
/// checked is what is connected to. Host names written as IP addresses are never resolved; they
/// are judged as written.
///
/// The call blocks: the hyper backend runs it on tokio's blocking pool, the ureq backend on the
/// sending thread. It should answer within the connect timeout.
///
/// Any `Fn(&str, u16) -> io::Result<Vec<SocketAddr>>` is a resolver.
///
/// [`HyperDispatcherBuilder::resolver`]: crate::dispatch::hyper::HyperDispatcherBuilder::resolver
/// [`UreqDispatcherBuilder::resolver`]: crate::dispatch::ureq::UreqDispatcherBuilder::resolver
///
/// # Examples
///
/// ```
/// use std::io;
/// use std::net::SocketAddr;
/// use call_result_webhook::dispatch::Resolve;
///
/// // The dialer's own directory of on-premises receivers.
/// let directory = |host: &str, port: u16| -> io::Result<Vec<SocketAddr>> {
///     match host {
///         "crm.acme.internal" => Ok(vec![SocketAddr::from(([10, 20, 0, 5], port))]),
///         _ => Err(io::Error::new(io::ErrorKind::NotFound, "unknown host")),
///     }
/// };
/// assert_eq!(directory.resolve("crm.acme.internal", 443)?, [SocketAddr::from(([10, 20, 0, 5], 443))]);
/// # Ok::<(), io::Error>(())
/// ```
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (a name, never an IP literal, without brackets or a trailing
    /// port) for a connection to `port` (the URL's port, or 80 / 443), in the order to try them.
    /// The port of each returned address is the one connected to.
    ///
    /// # Errors
    ///
    /// Any [`io::Error`] when the name cannot be resolved. It, or an empty list, is a failed
    /// lookup ([`TransportErrorKind::Dns`], retried).
    ///
    /// [`TransportErrorKind::Dns`]: crate::dispatch::TransportErrorKind::Dns
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

impl<F> Resolve for F
where
    F: Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
{
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self(host, port)
    }
}

/// The operating system's resolver (`getaddrinfo` through [`ToSocketAddrs`]): the default
/// [`Resolve`] of both backends.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// A shared resolver, as the backends keep it; shows only whether it is the system's.
#[derive(Clone)]
pub(crate) struct SharedResolver {
    inner: Arc<dyn Resolve>,
    custom: bool,
}

impl SharedResolver {
    #[cfg(any(feature = "hyper", test))]
    pub(crate) fn system() -> Self {
        SharedResolver {
            inner: Arc::new(SystemResolver),
            custom: false,
        }
    }

    pub(crate) fn custom(resolver: impl Resolve) -> Self {
        SharedResolver {
            inner: Arc::new(resolver),
            custom: true,
        }
    }

    pub(crate) fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.inner.resolve(host, port)
    }
}

impl fmt::Debug for SharedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.custom { "custom" } else { "system" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_resolve_and_the_system_resolver_knows_localhost() {
        let fixed = |_: &str, port: u16| Ok(vec![SocketAddr::from(([192, 0, 2, 1], port))]);
        assert_eq!(
            fixed.resolve("any.test", 8443).unwrap(),
            [SocketAddr::from(([192, 0, 2, 1], 8443))]
        );
        let local = SystemResolver.resolve("localhost", 9).unwrap();
        assert!(!local.is_empty());
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
        let shared = SharedResolver::custom(fixed);
        assert_eq!(format!("{shared:?}"), "custom");
        assert_eq!(format!("{:?}", SharedResolver::system()), "system");
    }
}
