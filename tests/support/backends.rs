//! Every HTTP backend of this build, built the same way: [`Setup`] says how (policy, time
//! limit, body prefix, resolver, roots, proxy), [`Dispatchers`] holds one dispatcher of each
//! kind and a runtime for the async ones, and [`Names`] resolves test names without real DNS.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use call_result_webhook::{
    UrlPolicy,
    dispatch::{Certificate, Proxy, ReceiverResponse, TransportError},
};
use http::Request;

#[cfg(feature = "hyper")]
use call_result_webhook::HyperDispatcher;
#[cfg(feature = "ureq")]
use call_result_webhook::{BlockingDispatcher, UreqDispatcher};

/// Every way a request can be sent in this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    #[cfg(feature = "hyper")]
    Hyper,
    #[cfg(feature = "ureq")]
    UreqBlocking,
    #[cfg(feature = "ureq")]
    UreqAsync,
}

pub const BACKENDS: &[Backend] = &[
    #[cfg(feature = "hyper")]
    Backend::Hyper,
    #[cfg(feature = "ureq")]
    Backend::UreqBlocking,
    #[cfg(feature = "ureq")]
    Backend::UreqAsync,
];

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `builder` (either backend's: they have the same setters, and no trait in common) with what
/// `setup` sets, built.
macro_rules! configured {
    ($setup:expr, $builder:expr) => {{
        let setup: &Setup = $setup;
        let mut b = setup
            .roots
            .iter()
            .fold($builder, |b, root| b.add_root_certificate(root.clone()));
        if let Some(timeout) = setup.timeout {
            b = b.timeout(timeout);
        }
        if let Some(bytes) = setup.body_prefix_limit {
            b = b.body_prefix_limit(bytes);
        }
        if let Some(policy) = &setup.policy {
            b = b.policy(policy.clone());
        }
        if let Some(names) = &setup.resolver {
            b = b.resolver(names.clone());
        }
        if let Some(proxy) = &setup.proxy {
            b = b.proxy(proxy.clone());
        }
        b.build()
    }};
}

/// How to build the dispatchers: the same settings for every backend. What is not set is the
/// builder's default.
#[derive(Clone, Default)]
pub struct Setup {
    pub policy: Option<UrlPolicy>,
    pub timeout: Option<Duration>,
    pub body_prefix_limit: Option<usize>,
    pub resolver: Option<Names>,
    pub roots: Vec<Certificate>,
    pub proxy: Option<Proxy>,
}

impl Setup {
    /// Under `policy`, each attempt limited to 5 s.
    pub fn new(policy: UrlPolicy) -> Setup {
        Setup::defaults()
            .policy(policy)
            .timeout(Duration::from_secs(5))
    }

    /// Nothing set: the builders' defaults, and no policy (as a `Webhooks` engine wants the
    /// dispatchers, to hand them its own).
    pub fn defaults() -> Setup {
        Setup::default()
    }

    pub fn policy(mut self, policy: UrlPolicy) -> Setup {
        self.policy = Some(policy);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Setup {
        self.timeout = Some(timeout);
        self
    }

    pub fn body_prefix_limit(mut self, bytes: usize) -> Setup {
        self.body_prefix_limit = Some(bytes);
        self
    }

    pub fn resolver(mut self, names: &Names) -> Setup {
        self.resolver = Some(names.clone());
        self
    }

    pub fn root(mut self, root: Certificate) -> Setup {
        self.roots.push(root);
        self
    }

    pub fn proxy(mut self, proxy: &Proxy) -> Setup {
        self.proxy = Some(proxy.clone());
        self
    }

    pub fn build(&self) -> Dispatchers {
        Dispatchers {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            #[cfg(feature = "hyper")]
            hyper: self.hyper(),
            #[cfg(feature = "ureq")]
            ureq: self.ureq(),
        }
    }

    #[cfg(feature = "hyper")]
    pub fn hyper(&self) -> HyperDispatcher {
        configured!(self, HyperDispatcher::builder())
    }

    #[cfg(feature = "ureq")]
    pub fn ureq(&self) -> UreqDispatcher {
        configured!(self, UreqDispatcher::builder())
    }
}

/// One dispatcher of each kind and a runtime to drive the async ones.
pub struct Dispatchers {
    pub rt: tokio::runtime::Runtime,
    #[cfg(feature = "hyper")]
    pub hyper: HyperDispatcher,
    #[cfg(feature = "ureq")]
    pub ureq: UreqDispatcher,
}

impl Dispatchers {
    pub fn send(
        &self,
        backend: Backend,
        request: Request<Bytes>,
    ) -> Result<ReceiverResponse, TransportError> {
        match backend {
            #[cfg(feature = "hyper")]
            Backend::Hyper => {
                use call_result_webhook::Dispatcher as _;
                self.rt.block_on(self.hyper.dispatch(request))
            }
            #[cfg(feature = "ureq")]
            Backend::UreqBlocking => self.ureq.dispatch_blocking(request),
            #[cfg(feature = "ureq")]
            Backend::UreqAsync => {
                use call_result_webhook::Dispatcher as _;
                self.rt.block_on(self.ureq.dispatch(request))
            }
        }
    }

    /// Hands `policy` to the dispatcher through the trait `backend` is used through, as the
    /// `Webhooks` engine does when a worker starts.
    pub fn adopt(
        &self,
        backend: Backend,
        policy: &UrlPolicy,
    ) -> Result<(), call_result_webhook::Error> {
        match backend {
            #[cfg(feature = "hyper")]
            Backend::Hyper => call_result_webhook::Dispatcher::adopt_policy(&self.hyper, policy),
            #[cfg(feature = "ureq")]
            Backend::UreqBlocking => BlockingDispatcher::adopt_policy(&self.ureq, policy),
            #[cfg(feature = "ureq")]
            Backend::UreqAsync => call_result_webhook::Dispatcher::adopt_policy(&self.ureq, policy),
        }
    }
}

/// The transport error, or a panic naming the status that came back instead.
#[track_caller]
pub fn expect_err(
    outcome: Result<ReceiverResponse, TransportError>,
    what: impl fmt::Display,
) -> TransportError {
    match outcome {
        Ok(r) => panic!(
            "{what}: expected a transport error, got status {}",
            r.status()
        ),
        Err(e) => e,
    }
}

/// The addresses a name answers, each with its own port or the one asked for.
type Answer = Vec<(IpAddr, Option<u16>)>;

/// An injected resolver: a fixed table of names, each answering its addresses on the port it
/// is asked for (or the port given with the address). A name not in the table is not found.
/// It counts the questions, so a test can see that a name was resolved again.
#[derive(Clone, Default)]
pub struct Names {
    table: Arc<Mutex<HashMap<String, Answer>>>,
    asked: Arc<AtomicUsize>,
}

impl Names {
    pub fn new() -> Names {
        Names::default()
    }

    /// `name` answers `addrs`, on the port asked for.
    pub fn add(&self, name: &str, addrs: &[&str]) -> &Names {
        let parsed = addrs.iter().map(|a| (a.parse().unwrap(), None)).collect();
        self.set(name, parsed);
        self
    }

    /// `name` answers exactly `addrs` (addresses with their ports).
    pub fn add_with_ports(&self, name: &str, addrs: &[SocketAddr]) -> &Names {
        let parsed = addrs.iter().map(|a| (a.ip(), Some(a.port()))).collect();
        self.set(name, parsed);
        self
    }

    fn set(&self, name: &str, addrs: Answer) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), addrs);
    }

    /// How many questions were asked.
    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

impl call_result_webhook::dispatch::Resolve for Names {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        match table.get(host) {
            Some(addrs) => Ok(addrs
                .iter()
                .map(|&(ip, p)| SocketAddr::new(ip, p.unwrap_or(port)))
                .collect()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} is not in the test's table"),
            )),
        }
    }
}
