//! The portal's test bench: the portal mounted under `/webhooks` in an axum application on
//! 127.0.0.1 with a stand-in login, a receiver on 127.0.0.1 that records what it gets and
//! answers as scripted, and a tiny HTTP/1.1 client on std's `TcpStream`.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use call_result_webhook::portal::{self, PortalOptions, PortalUser};
use call_result_webhook::{HyperDispatcher, MemoryStore, Principal, UrlPolicy, Webhooks, Worker};

/// The account every signed-in test user acts for.
pub const ACCOUNT: &str = "acme";

/// One answer of the portal.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The value of the hidden input `name` of the page's first form that has one.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no hidden {name} in {}", self.body))
            + marker.len();
        let end = self.body[at..].find('"').expect("a closing quote") + at;
        self.body[at..end].to_owned()
    }
}

/// Who a request is from, as the stand-in login tells the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// No one signed in.
    Nobody,
    /// alice, a full administrator, in her session.
    Admin,
    /// victor, without full administrative permission, in his session.
    Viewer,
}

impl As {
    fn header(self) -> Option<&'static str> {
        match self {
            As::Nobody => None,
            As::Admin => Some("admin"),
            As::Viewer => Some("viewer"),
        }
    }
}

/// The stand-in for the dialer's login: the `x-test-user` header names who is signed in.
async fn login(mut request: Request, next: Next) -> Response {
    let user = match request
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
    {
        Some("admin") => Some(PortalUser::new(
            Principal::administrator("alice"),
            ACCOUNT,
            "session-of-alice",
        )),
        Some("viewer") => Some(PortalUser::new(
            Principal::user("victor"),
            ACCOUNT,
            "session-of-victor",
        )),
        _ => None,
    };
    if let Some(user) = user {
        request
            .extensions_mut()
            .insert(user.campaigns(["spring".into()]));
    }
    next.run(request).await
}

/// The portal on 127.0.0.1 and what is behind it.
pub struct Bench {
    pub addr: SocketAddr,
    pub webhooks: Webhooks,
    pub worker: Option<Worker>,
    runtime: tokio::runtime::Runtime,
}

/// The policy of every bench: loopback receivers over http.
pub fn policy() -> UrlPolicy {
    UrlPolicy::new().allow_http(true).allow_private()
}

impl Bench {
    /// The portal with "Send test", and a worker delivering on the same runtime.
    pub fn start() -> Bench {
        Bench::start_on(Arc::new(MemoryStore::new()))
    }

    /// The same on `store`, which another `Webhooks` (another process, in miniature) may
    /// share.
    pub fn start_on(store: Arc<MemoryStore>) -> Bench {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let webhooks = Webhooks::builder()
            .store(store)
            .policy(policy())
            .build()
            .expect("webhooks");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a port");
        let addr = listener.local_addr().expect("its address");
        let (app, worker) = {
            let _entered = runtime.enter();
            let options = PortalOptions::new()
                .expect("options")
                .send_test(HyperDispatcher::new());
            let portal = portal::router(webhooks.clone(), options).expect("the portal");
            let app = Router::new()
                .nest("/webhooks", portal)
                .layer(axum::middleware::from_fn(login));
            let worker = webhooks
                .start_tokio(HyperDispatcher::new(), runtime.handle())
                .expect("a worker");
            (app, worker)
        };
        runtime.spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Bench {
            addr,
            webhooks,
            worker: Some(worker),
            runtime,
        }
    }

    /// This portal's origin, as a browser on its pages sends it.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn get(&self, who: As, path: &str) -> Answer {
        self.send(who, "GET", path, &[], b"")
    }

    /// A form posted from the portal's own page (the right `Origin`).
    pub fn post_form(&self, who: As, path: &str, fields: &[(&str, &str)]) -> Answer {
        let origin = self.origin();
        self.post_form_from(who, path, fields, Some(&origin))
    }

    /// A form posted with the given `Origin` (none with `None`).
    pub fn post_form_from(
        &self,
        who: As,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(origin) = origin {
            headers.push(("origin", origin));
        }
        self.send(who, "POST", path, &headers, body.as_bytes())
    }

    /// A JSON API change from the portal's origin, with the CSRF token given.
    pub fn post_json(&self, who: As, path: &str, csrf: Option<&str>, body: &str) -> Answer {
        let origin = self.origin();
        let mut headers = vec![
            ("content-type", "application/json"),
            ("origin", origin.as_str()),
        ];
        if let Some(csrf) = csrf {
            headers.push(("x-csrf-token", csrf));
        }
        self.send(who, "POST", path, &headers, body.as_bytes())
    }

    /// The CSRF token of `who`'s session, as the JSON API gives it.
    pub fn csrf(&self, who: As) -> String {
        self.get(who, "/webhooks/api/session").json()["csrf_token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }

    /// One HTTP/1.1 exchange on a fresh connection, as `who`.
    pub fn send(
        &self,
        who: As,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let mut all = headers.to_vec();
        if let Some(user) = who.header() {
            all.push(("x-test-user", user));
        }
        exchange(self.addr, method, path, &all, body)
    }

    /// Waits until `check` holds, for up to 10 s.
    pub fn within(&self, what: &str, mut check: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `future` on the bench's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            let _ = self
                .runtime
                .block_on(worker.shutdown(Duration::from_secs(5)));
        }
    }
}

/// One HTTP/1.1 exchange with `addr` on a fresh connection.
pub fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body).expect("write");
    read_answer(stream)
}

fn read_answer(stream: TcpStream) -> Answer {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("a status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("a header line");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').expect("name: value");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).expect("the body");
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(&raw) } else { raw };
    Answer {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8"),
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..end]).expect("hex"), 16)
            .expect("a chunk size");
        raw = &raw[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub head: String,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// A webhook receiver on 127.0.0.1: answers each request with the next scripted
/// `(status, body)` (the last one again once the script runs out) and records it.
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(script: &[(u16, &str)]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut script: VecDeque<(u16, String)> =
            script.iter().map(|(s, b)| (*s, (*b).to_owned())).collect();
        let recorded = got.clone();
        std::thread::spawn(move || {
            let mut last = (200, String::new());
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (status, body) = script.pop_front().unwrap_or_else(|| last.clone());
                last = (status, body.clone());
                if let Some(request) = serve_one(stream, status, &body) {
                    recorded.lock().unwrap().push(request);
                }
            }
        });
        Receiver { url, got }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

fn serve_one(stream: TcpStream, status: u16, body: &str) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut request_body = vec![0; length];
    reader.read_exact(&mut request_body).ok()?;
    let mut stream = stream;
    let answer = format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).ok()?;
    Some(Received {
        head,
        body: String::from_utf8_lossy(&request_body).into_owned(),
    })
}
