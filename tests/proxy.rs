//! The egress proxy, through each backend, against a real proxy server: tinyproxy, started by
//! each test on a free port of 127.0.0.1 with a configuration written to a temporary directory,
//! run in the foreground as a child of the test and killed at its end. Its log is the proof of
//! what went through it.
//!
//! The policy admits the receivers on 127.0.0.1 only (an allowlist of 127.0.0.1/32): any other
//! loopback address and every private one stay refused. The proxy's own address is not held to
//! the policy.
//!
//! Without tinyproxy on the PATH the tests say plainly that they did not run and pass; with
//! `CALL_RESULT_WEBHOOK_REQUIRE_PROXY=1` (set by `.ci/run`) they fail instead.
#![cfg(any(feature = "hyper", feature = "ureq"))]

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use call_result_webhook::{
    UrlPolicy,
    dispatch::{Certificate, Proxy, ReceiverResponse, TransportError, TransportErrorKind},
};
use support::Receiver;
use support::backends::{BACKENDS, Dispatchers, Names, Setup, expect_err};
use support::security::tls::{TestCa, TlsReceiver};
use support::security::{Tap, expect_refused, request_to};

const REQUIRE: &str = "CALL_RESULT_WEBHOOK_REQUIRE_PROXY";
const PRIVATE: &str = "private (RFC 1918)";
const LOOPBACK: &str = "loopback";

/// `http` allowed, and of all the internal addresses only 127.0.0.1, where the receivers are.
fn policy() -> UrlPolicy {
    UrlPolicy::new()
        .allow_http(true)
        .allow_net("127.0.0.1/32".parse().unwrap())
}

/// `receiver.test` answers 127.0.0.1 (admitted), `internal.test` 10.0.0.5 and
/// `other-loopback.test` 127.0.0.2 (both refused).
fn names() -> Names {
    let names = Names::new();
    names
        .add("receiver.test", &["127.0.0.1"])
        .add("internal.test", &["10.0.0.5"])
        .add("other-loopback.test", &["127.0.0.2"]);
    names
}

/// One dispatcher of each backend, under [`policy`] and [`names`], sending through `proxy`.
fn through(proxy: &Proxy, roots: &[Certificate]) -> Dispatchers {
    roots
        .iter()
        .fold(Setup::new(policy()), |setup, root| setup.root(root.clone()))
        .resolver(&names())
        .proxy(proxy)
        .build()
}

/// A tinyproxy running as a child of the test.
struct Tinyproxy {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy, asking for `credentials` when given; `None` (after saying so) when it
    /// is not installed and not required.
    fn start(credentials: Option<(&str, &str)>) -> Option<Tinyproxy> {
        let Some(binary) = find_tinyproxy() else {
            if std::env::var(REQUIRE).is_ok_and(|v| v == "1") {
                panic!("tinyproxy is not installed, and {REQUIRE}=1 requires the proxy tests");
            }
            eprintln!(
                "tests/proxy.rs: tinyproxy is not installed: this proxy test DID NOT RUN \
                 (apt-get install tinyproxy; {REQUIRE}=1 makes this a failure)"
            );
            return None;
        };
        // A free port can be taken by someone else before tinyproxy binds it: try again.
        let mut last = String::new();
        for _ in 0..5 {
            match Tinyproxy::try_start(&binary, credentials) {
                Ok(proxy) => return Some(proxy),
                Err(why) => last = why,
            }
        }
        panic!("tinyproxy did not start: {last}");
    }

    fn try_start(binary: &Path, credentials: Option<(&str, &str)>) -> Result<Tinyproxy, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("tinyproxy.log");
        // No ConnectPort line: CONNECT is allowed to every port.
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nAllow 127.0.0.1\n\
             LogFile \"{}\"\nLogLevel Connect\nDisableViaHeader Yes\n",
            log.display()
        );
        if let Some((user, password)) = credentials {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf, config).unwrap();
        let out = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(binary)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let mut proxy = Tinyproxy {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                let said = std::fs::read_to_string(proxy._dir.path().join("stderr"));
                return Err(format!("exited with {status}: {said:?}"));
            }
            // Ready once it listens and has written its start-up lines (so the connection
            // counts below start from a quiet log).
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                std::thread::sleep(Duration::from_millis(50));
                return Ok(proxy);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("did not listen within 10 s".into())
    }

    /// `http://127.0.0.1:PORT`.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Client connections the proxy accepted so far (the readiness probe's included).
    fn connections(&self) -> usize {
        self.log().matches("Connect (file descriptor").count()
    }

    /// `CONNECT` requests for `target` in the log, waiting until there are at least `at_least`
    /// (at most 5 s), then returning how many there are.
    fn tunnels_to(&self, target: SocketAddr, at_least: usize) -> usize {
        let line = format!(": CONNECT {target} HTTP/1.1");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = self.log().matches(&line).count();
            if n >= at_least || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_tinyproxy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join("tinyproxy"))
        .find(|p| p.is_file())
}

/// Every message of the error's chain and its `Debug`, for checks that a secret is absent.
fn everything_shown(err: &TransportError) -> String {
    let mut shown = format!("{err:?}");
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        shown.push_str(&format!(" / {e}"));
        next = e.source();
    }
    shown
}

#[track_caller]
fn delivered(outcome: Result<ReceiverResponse, TransportError>, what: &str) {
    match outcome {
        Ok(r) => assert_eq!(r.status(), 200, "{what}"),
        Err(e) => panic!("{what}: {}", everything_shown(&e)),
    }
}

#[test]
fn an_http_receiver_is_reached_through_a_connect_tunnel_with_its_own_host_header() {
    let Some(proxy) = Tinyproxy::start(None) else {
        return;
    };
    let receiver = Receiver::start();
    let port = receiver.addr().port();
    let d = through(&Proxy::http(&proxy.url()).unwrap(), &[]);
    let url = format!("http://receiver.test:{port}/hook");
    for &backend in BACKENDS {
        delivered(d.send(backend, request_to(&url)), &format!("{backend:?}"));
    }
    let requests = receiver.wait_for(BACKENDS.len(), Duration::from_secs(5));
    assert_eq!(requests.len(), BACKENDS.len());
    for r in &requests {
        assert_eq!(r.target, "/hook");
        assert_eq!(r.header("host"), Some(&*format!("receiver.test:{port}")));
        assert!(
            r.text().starts_with("CampaignName=Winter+Sale&"),
            "{}",
            r.text()
        );
        assert!(r.header("proxy-authorization").is_none());
    }
    // Every connection the receiver accepted is a tunnel the proxy opened, to the address the
    // policy admitted: the proxy never heard the name.
    let connections = usize::try_from(receiver.connections()).unwrap();
    assert!(connections >= 1);
    assert_eq!(proxy.tunnels_to(receiver.addr(), connections), connections);
    assert!(!proxy.log().contains("receiver.test"), "{}", proxy.log());
}

#[test]
fn an_https_receiver_is_reached_through_a_connect_tunnel_with_tls_to_its_name() {
    let Some(proxy) = Tinyproxy::start(None) else {
        return;
    };
    let ca = TestCa::new("Acme on-premises CA");
    // A certificate for the name only: TLS through the tunnel is checked against the name.
    let receiver = TlsReceiver::start(&ca.issue(&["receiver.test"]));
    let d = through(&Proxy::http(&proxy.url()).unwrap(), &[ca.certificate()]);
    let url = format!("https://receiver.test:{}/hook", receiver.port());
    for &backend in BACKENDS {
        delivered(d.send(backend, request_to(&url)), &format!("{backend:?}"));
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), BACKENDS.len());
    for (path, body) in &requests {
        assert_eq!(path, "/hook");
        assert!(body.starts_with(b"CampaignName=Winter+Sale&"));
    }
    let target: SocketAddr = ([127, 0, 0, 1], receiver.port()).into();
    let handshakes = receiver.handshakes();
    assert!(handshakes >= 1);
    assert_eq!(
        proxy.tunnels_to(target, receiver.connections()),
        receiver.connections()
    );
    assert!(!proxy.log().contains("receiver.test"), "{}", proxy.log());

    // Without the authority the certificate is refused as ever: the tunnel does not weaken TLS.
    let untrusting = through(&Proxy::http(&proxy.url()).unwrap(), &[]);
    for &backend in BACKENDS {
        let err = expect_err(untrusting.send(backend, request_to(&url)), "untrusted");
        assert_eq!(err.kind(), TransportErrorKind::Tls, "{backend:?}: {err}");
    }
    assert_eq!(receiver.handshakes(), handshakes);
}

#[test]
fn the_proxy_credentials_are_sent_and_a_refusal_is_a_retryable_proxy_error_without_them() {
    const PASSWORD: &str = "s3cret-Pr0xy";
    let Some(proxy) = Tinyproxy::start(Some(("dialer", PASSWORD))) else {
        return;
    };
    let receiver = Receiver::start();
    let url = format!("http://receiver.test:{}/hook", receiver.addr().port());

    let cases = [
        ("no credentials", Proxy::http(&proxy.url()).unwrap()),
        (
            "a wrong password",
            Proxy::http(&proxy.url())
                .unwrap()
                .basic_auth("dialer", "wrong-Pa55")
                .unwrap(),
        ),
    ];
    for (what, refused) in cases {
        let d = through(&refused, &[]);
        for &backend in BACKENDS {
            let err = expect_err(d.send(backend, request_to(&url)), what);
            assert_eq!(
                err.kind(),
                TransportErrorKind::Proxy,
                "{backend:?} {what}: {err}"
            );
            assert!(err.kind().is_retryable());
            let shown = everything_shown(&err);
            // tinyproxy answers 407 to missing credentials and 401 to wrong ones.
            assert!(
                shown.contains("credentials missing or refused"),
                "{backend:?} {what}: {shown}"
            );
            assert!(!shown.contains("wrong-Pa55"), "{shown}");
        }
        #[cfg(feature = "ureq")]
        assert!(!format!("{:?}", d.ureq).contains("wrong-Pa55"));
    }
    assert!(receiver.requests().is_empty(), "nothing got past the proxy");

    let with_auth = Proxy::http(&proxy.url())
        .unwrap()
        .basic_auth("dialer", PASSWORD)
        .unwrap();
    let in_url = Proxy::http(&format!(
        "http://dialer:{PASSWORD}@127.0.0.1:{}",
        proxy.port
    ))
    .unwrap();
    for good in [with_auth, in_url] {
        let d = through(&good, &[]);
        for &backend in BACKENDS {
            delivered(d.send(backend, request_to(&url)), &format!("{backend:?}"));
        }
        #[cfg(feature = "hyper")]
        assert!(!format!("{:?}", d.hyper).contains(PASSWORD));
        #[cfg(feature = "ureq")]
        assert!(!format!("{:?}", d.ureq).contains(PASSWORD));
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2 * BACKENDS.len());
    // The proxy's credentials are for the proxy: the receiver never sees them.
    assert!(
        requests
            .iter()
            .all(|r| r.header("proxy-authorization").is_none())
    );
}

#[test]
fn a_receiver_the_policy_refuses_is_refused_before_the_proxy_is_asked() {
    let Some(proxy) = Tinyproxy::start(None) else {
        return;
    };
    // Where a refused loopback delivery would land, and a stand-in proxy that only counts the
    // connections made to it.
    let refused_loopback = Tap::on("127.0.0.2");
    let stand_in = Tap::on("127.0.0.1");
    let real = through(&Proxy::http(&proxy.url()).unwrap(), &[]);
    let counting = through(
        &Proxy::http(&format!("http://{}", stand_in.addr())).unwrap(),
        &[],
    );
    let before = proxy.connections();
    let cases = [
        ("http://internal.test/hook".to_owned(), PRIVATE),
        ("https://internal.test/hook".to_owned(), PRIVATE),
        ("http://10.0.0.5:8080/hook".to_owned(), PRIVATE),
        (
            format!(
                "http://other-loopback.test:{}/hook",
                refused_loopback.port()
            ),
            LOOPBACK,
        ),
    ];
    for d in [&real, &counting] {
        for (url, rule) in &cases {
            for &backend in BACKENDS {
                expect_refused(
                    d.send(backend, request_to(url)),
                    rule,
                    &format!("{backend:?} {url}"),
                );
            }
        }
    }
    assert_eq!(
        stand_in.connections(),
        0,
        "the stand-in proxy was contacted"
    );
    assert_eq!(refused_loopback.connections(), 0);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(proxy.connections(), before, "{}", proxy.log());
    assert!(!proxy.log().contains("CONNECT 10.0.0.5"), "{}", proxy.log());
}

#[test]
fn an_unreachable_proxy_is_a_retryable_proxy_error() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let receiver = Receiver::start();
    let d = through(
        &Proxy::http(&format!("http://127.0.0.1:{port}")).unwrap(),
        &[],
    );
    for url in [
        format!("http://receiver.test:{}/hook", receiver.addr().port()),
        format!("https://receiver.test:{}/hook", receiver.addr().port()),
    ] {
        for &backend in BACKENDS {
            let err = expect_err(d.send(backend, request_to(&url)), &url);
            assert_eq!(
                err.kind(),
                TransportErrorKind::Proxy,
                "{backend:?} {url}: {err}"
            );
            assert!(err.kind().is_retryable());
            let shown = everything_shown(&err);
            assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
        }
    }
    assert!(receiver.requests().is_empty());
}

#[test]
fn a_receiver_on_the_no_proxy_list_is_connected_to_directly() {
    let Some(proxy) = Tinyproxy::start(None) else {
        return;
    };
    let receiver = Receiver::start();
    let before = proxy.connections();
    let d = through(
        &Proxy::http(&proxy.url())
            .unwrap()
            .no_proxy("example.com, .test"),
        &[],
    );
    let url = format!("http://receiver.test:{}/hook", receiver.addr().port());
    for &backend in BACKENDS {
        delivered(d.send(backend, request_to(&url)), &format!("{backend:?}"));
    }
    // Still under the policy: a refused receiver on the list is refused.
    for &backend in BACKENDS {
        expect_refused(
            d.send(backend, request_to("http://internal.test/")),
            PRIVATE,
            "direct",
        );
    }
    assert_eq!(receiver.requests().len(), BACKENDS.len());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(proxy.connections(), before, "{}", proxy.log());
}
