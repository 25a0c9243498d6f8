//! What the security tests share (feature `hyper` or `ureq`), beside [`super::backends`] (one
//! dispatcher of each kind built the same way, with an injected resolver so names never reach
//! real DNS): a listener that only counts connections, the request for a call result, the
//! checks of a refusal, a TLS receiver on 127.0.0.1 with certificates made in the test, and the
//! `Webhooks` engine with a real backend.

use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use call_result_webhook::{
    DeliveryId, PreferencesUpdate, UrlPolicy,
    dispatch::{Certificate, ReceiverResponse, TransportError, TransportErrorKind},
    preferences::Preferences,
    request::{EncodedBody, build_request},
};
use http::Request;

use super::backends::{Backend, Setup, expect_err};
use super::sample_call;

/// A listener on a loopback address that answers nothing and only counts the connections made
/// to it: where a refused delivery would have gone.
pub struct Tap {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tap {
    /// Listens on `ip`, port chosen by the system.
    pub fn on(ip: &str) -> Tap {
        let listener = StdListener::bind((ip.parse::<IpAddr>().unwrap(), 0)).expect("bind tap");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (accepted, stop) = (accepted.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            }
        });
        Tap {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far (waits a moment for stragglers first).
    pub fn connections(&self) -> usize {
        std::thread::sleep(Duration::from_millis(20));
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The preferences `update` makes, switched on and sending to `url`.
pub fn preferences(url: &str, update: PreferencesUpdate) -> Preferences {
    Preferences::from_update(update.enabled(true).url(url)).unwrap()
}

/// The request for [`sample_call`] to `url`, as the crate builds it, with delivery id `msg_test`.
pub fn request_to(url: &str) -> Request<Bytes> {
    request_with(url, PreferencesUpdate::new())
}

/// The request for [`sample_call`] to `url` under `update`.
pub fn request_with(url: &str, update: PreferencesUpdate) -> Request<Bytes> {
    let preferences = preferences(url, update);
    let body = EncodedBody::encode(&sample_call(), &preferences).unwrap();
    build_request(&preferences, &DeliveryId::new("msg_test").unwrap(), &body).unwrap()
}

/// Asserts a refusal by the address policy naming `rule`; returns the refused host and address.
#[track_caller]
pub fn expect_refused(
    outcome: Result<ReceiverResponse, TransportError>,
    rule: &str,
    what: &str,
) -> (String, IpAddr) {
    let err = expect_err(outcome, what);
    assert_eq!(err.kind(), TransportErrorKind::Refused, "{what}: {err}");
    assert!(!err.kind().is_retryable(), "{what}");
    match err.policy_refusal() {
        Some(call_result_webhook::Error::AddressRefused {
            host,
            addr,
            rule: got,
        }) => {
            assert_eq!(*got, rule, "{what}: {err}");
            (host.clone(), *addr)
        }
        other => panic!("{what}: expected AddressRefused ({rule}), got {other:?}"),
    }
}

pub mod tls {
    //! A TLS receiver on 127.0.0.1, and certificates made in the test with rcgen.

    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    /// A certificate authority made for one test.
    pub struct TestCa {
        pub cert: rcgen::Certificate,
        key: KeyPair,
    }

    impl TestCa {
        pub fn new(name: &str) -> TestCa {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            TestCa { cert, key }
        }

        /// The CA as the crate takes it.
        pub fn certificate(&self) -> Certificate {
            Certificate::from_der(self.cert.der()).unwrap()
        }

        /// A server certificate for `names` (DNS names or IP addresses) signed by this CA.
        pub fn issue(&self, names: &[&str]) -> ServerCert {
            self.issue_with(names, |_| {})
        }

        /// As [`TestCa::issue`], with the parameters adjusted first.
        pub fn issue_with(
            &self,
            names: &[&str],
            adjust: impl FnOnce(&mut CertificateParams),
        ) -> ServerCert {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "receiver");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.use_authority_key_identifier_extension = true;
            adjust(&mut params);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
            ServerCert {
                chain: vec![cert.der().clone()],
                key: key.serialize_der(),
            }
        }
    }

    /// A server's certificate chain and private key.
    pub struct ServerCert {
        chain: Vec<CertificateDer<'static>>,
        key: Vec<u8>,
    }

    impl ServerCert {
        /// A self-signed certificate for `names`: no authority vouches for it.
        pub fn self_signed(names: &[&str]) -> ServerCert {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .self_signed(&key)
                .unwrap();
            ServerCert {
                chain: vec![cert.der().clone()],
                key: key.serialize_der(),
            }
        }
    }

    /// What the TLS receiver saw.
    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        handshakes: AtomicUsize,
        requests: Mutex<Vec<(String, Bytes)>>,
    }

    /// An https receiver on 127.0.0.1 answering 200 to every request.
    pub struct TlsReceiver {
        addr: SocketAddr,
        seen: Arc<Seen>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<JoinHandle<()>>,
    }

    impl TlsReceiver {
        pub fn start(cert: &ServerCert) -> TlsReceiver {
            let config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(
                    cert.chain.clone(),
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone())),
                )
                .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let listener = StdListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Seen::default());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = seen.clone();
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let accepting = async {
                        loop {
                            let Ok((tcp, _)) = listener.accept().await else {
                                continue;
                            };
                            serving.connections.fetch_add(1, Ordering::SeqCst);
                            let (acceptor, seen) = (acceptor.clone(), serving.clone());
                            tokio::spawn(async move {
                                let Ok(tls) = acceptor.accept(tcp).await else {
                                    return;
                                };
                                seen.handshakes.fetch_add(1, Ordering::SeqCst);
                                let service = hyper::service::service_fn(
                                    move |req: hyper::Request<hyper::body::Incoming>| {
                                        let seen = seen.clone();
                                        async move {
                                            let path = req.uri().path().to_owned();
                                            let body = req.into_body().collect().await?.to_bytes();
                                            seen.requests
                                                .lock()
                                                .unwrap_or_else(PoisonError::into_inner)
                                                .push((path, body));
                                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                                                Bytes::from_static(b"ok"),
                                            )))
                                        }
                                    },
                                );
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(tls), service)
                                    .await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = accepting => {}
                        _ = stopped => {}
                    }
                });
            });
            TlsReceiver {
                addr,
                seen,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        pub fn port(&self) -> u16 {
            self.addr.port()
        }

        /// TCP connections accepted.
        pub fn connections(&self) -> usize {
            self.seen.connections.load(Ordering::SeqCst)
        }

        /// TLS handshakes completed.
        pub fn handshakes(&self) -> usize {
            self.seen.handshakes.load(Ordering::SeqCst)
        }

        /// Requests received: path and body.
        pub fn requests(&self) -> Vec<(String, Bytes)> {
            self.seen
                .requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    impl Drop for TlsReceiver {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

pub mod engine {
    //! The `Webhooks` engine with a real backend: a worker per backend, events collected.

    use call_result_webhook::{
        AccountId, CallResult, MemoryStore, Principal, Webhooks, Worker, delivery::Clock,
    };

    use super::*;
    use crate::support::events::Events;

    /// A `Webhooks` over a memory store, the events it emits, and the runtime its tokio
    /// workers run on.
    pub struct Engine {
        pub webhooks: Webhooks,
        pub store: Arc<MemoryStore>,
        pub events: Events,
        pub admin: Principal,
        rt: tokio::runtime::Runtime,
    }

    impl Engine {
        pub fn new(policy: UrlPolicy, clock: impl Clock) -> Engine {
            let store = Arc::new(MemoryStore::new());
            let events = Events::default();
            let webhooks = events
                .sink(
                    Webhooks::builder()
                        .store(store.clone())
                        .policy(policy)
                        .clock(clock),
                )
                .build()
                .unwrap();
            Engine {
                webhooks,
                store,
                events,
                admin: crate::support::admin(),
                rt: tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap(),
            }
        }

        /// Account `account`: webhook on with `update` and `url`, campaign `winter` on.
        pub fn configure(&self, account: &str, url: &str, update: PreferencesUpdate) {
            let id: AccountId = account.into();
            self.webhooks
                .update_preferences_blocking(&self.admin, &id, update.enabled(true).url(url))
                .unwrap();
            self.webhooks
                .set_campaign_webhook_blocking(&self.admin, &id, &"winter".into(), true)
                .unwrap();
        }

        /// Submits `call` for campaign `winter`; panics unless it is accepted.
        pub fn submit(&self, account: &str, call: CallResult) -> call_result_webhook::DeliveryId {
            crate::support::scripted::submit_accepted(&self.webhooks, account, call)
        }

        /// A worker sending through `backend`, built from `setup`.
        pub fn start(&self, backend: Backend, setup: &Setup) -> Worker {
            match backend {
                #[cfg(feature = "hyper")]
                Backend::Hyper => self
                    .webhooks
                    .start_tokio(setup.hyper(), self.rt.handle())
                    .unwrap(),
                #[cfg(feature = "ureq")]
                Backend::UreqBlocking => self.webhooks.start_threads(setup.ureq(), 2).unwrap(),
                #[cfg(all(feature = "ureq", feature = "tokio"))]
                Backend::UreqAsync => self
                    .webhooks
                    .start_tokio(setup.ureq(), self.rt.handle())
                    .unwrap(),
                #[cfg(all(feature = "ureq", not(feature = "tokio")))]
                Backend::UreqAsync => self.webhooks.start_threads(setup.ureq(), 2).unwrap(),
            }
        }
    }
}
