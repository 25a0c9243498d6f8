//! A real HTTP/1.1 receiver on 127.0.0.1 for tests: the customer's server, played by hyper.
//!
//! It runs on a thread of its own with its own tokio runtime, so sync tests, current-thread
//! async tests and multi-thread async tests can all use it. It records every request and
//! answers from a script.
//!
//! ```ignore
//! mod support;
//! use support::{Receiver, Reply};
//!
//! let receiver = Receiver::start();
//! receiver.script([Reply::status(503).header("retry-after", "2"), Reply::status(204)]);
//! // ... send two requests to receiver.url_for("/hook") ...
//! let seen = receiver.wait_for(2, Duration::from_secs(5));
//! assert_eq!(seen[0].target, "/hook");
//! ```
//!
//! - Replies are taken from the script in order of arrival; once it is empty, the default reply
//!   ([`Reply::ok`] unless [`Receiver::set_default`] says otherwise) answers.
//! - A reply can wait before answering ([`Reply::delay`]), never answer ([`Reply::hang`]),
//!   reset the connection part-way through its body ([`Reply::reset_mid_body`]) or before any
//!   response ([`Reply::reset`]), or redirect ([`Reply::redirect`]).
//! - A request is recorded once its body has arrived, before it is answered, so a request that
//!   is never answered is still seen.
//! - [`Receiver::respond_with`] answers from a function of the request instead of the default
//!   (after the script), for receivers that decide per request (per `webhook-id`, at random).
//! - Any reply can stop part-way through its body: [`Reply::then_reset`], [`Reply::then_stall`].
//!
//! Dropping the receiver stops it and closes every connection.
//!
//! [`RawReceiver`] answers with raw bytes instead, for what no HTTP server would send: garbage,
//! a megabyte of headers, a status line cut in half.
//!
//! Beside the receivers, every helper more than one test file needs is here, once:
//! - `fixtures`: an administrator, the test account and campaign, a call result (`call` with
//!   a reference, `sample_call` with a little of everything), the loopback policy, an account
//!   switched on, an account's saved settings ([`Saved`]), and [`Instance`] (a `Webhooks` with
//!   its worker running); all re-exported here.
//! - [`backends`]: every HTTP backend of the build, built the same way ([`backends::Setup`]),
//!   and a resolver for test names ([`backends::Names`]).
//! - [`events`]: the events a `Webhooks` emitted, to read and wait on.
//! - [`scripted`]: a receiver in process that answers as a rule says; `harness` (feature
//!   `test-util`): a dialer in miniature around it, on a `MemoryStore` and a `ManualClock`.
//!   `src/delivery/tests.rs` includes these and `events` with `#[path]`, so the unit tests
//!   there and the tests here share one copy.
//! - [`security`] (feature `hyper` or `ureq`): what the security tests share (a listener that
//!   counts connections, refusal checks, a TLS receiver, an engine on a real backend).
//! - [`faulty_store`]: a `MemoryStore` whose calls fail on demand.
//! - [`within`] waits for a condition; [`CpuHog`] loads the machine.
//!
//! Each test binary uses a part of this module, hence `dead_code` allowed for all of it.
#![allow(dead_code)]

pub mod backends;
pub mod events;
pub mod faulty_store;
mod fixtures;
#[cfg(feature = "test-util")]
pub mod harness;
pub mod scripted;
#[cfg(any(feature = "hyper", feature = "ureq"))]
pub mod security;

/// The crate, by the name `events.rs`, `scripted.rs` and `harness.rs` use for it (the unit
/// tests of `src/delivery` include them too, and name `crate` so).
use call_result_webhook as under_test;

// Unused in the test binaries that need no fixture.
#[allow(unused_imports)]
pub use fixtures::*;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request method.
    pub method: Method,
    /// Path and query, exactly as sent (`/hook?x=1`).
    pub target: String,
    /// Every header, names lowercased.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When the request head arrived.
    pub at: Instant,
    /// Which connection carried it: 1 for the first accepted, 2 for the next, ...
    pub connection: u64,
    /// The sender's end of that connection.
    pub peer: SocketAddr,
}

impl Recorded {
    /// The header's value as text, if present (and the only one of its name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        assert!(
            values.next().is_none(),
            "header {name} appears more than once"
        );
        Some(first.to_str().expect("header value is not visible ASCII"))
    }

    /// The header names present, sorted.
    pub fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is not UTF-8")
    }

    /// The body decoded as `application/x-www-form-urlencoded`, pairs in order.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is not JSON")
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    delay: Duration,
    action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Respond,
    Hang,
    ResetBeforeResponse,
    ResetMidBody,
    StallMidBody,
}

impl Reply {
    /// `200 OK`, empty body.
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// This status, empty body.
    pub fn status(code: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(code).expect("a valid status code"),
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
            action: Action::Respond,
        }
    }

    /// A redirect: `code` (301, 302, 307, 308...) with `Location: location`.
    pub fn redirect(code: u16, location: &str) -> Reply {
        Reply::status(code).header("location", location)
    }

    /// Takes the request and never answers, holding the connection open.
    pub fn hang() -> Reply {
        Reply {
            action: Action::Hang,
            ..Reply::ok()
        }
    }

    /// Takes the request and resets the connection without answering.
    pub fn reset() -> Reply {
        Reply {
            action: Action::ResetBeforeResponse,
            ..Reply::ok()
        }
    }

    /// Sends `200`, a `Content-Length` of 1024 and 16 bytes of body, then resets the connection.
    pub fn reset_mid_body() -> Reply {
        Reply::ok().body("partial response").then_reset()
    }

    /// Sends `200`, a `Content-Length` of 1024 and 16 bytes of body, then nothing more, holding
    /// the connection open: the head arrives, the body never completes.
    pub fn stall_mid_body() -> Reply {
        Reply::ok().body("partial response").then_stall()
    }

    /// Announces a `Content-Length` of 1024, sends this reply's body (shorter than that) as the
    /// first part, then resets the connection.
    pub fn then_reset(mut self) -> Reply {
        self.action = Action::ResetMidBody;
        self
    }

    /// Announces a `Content-Length` of 1024, sends this reply's body (shorter than that) as the
    /// first part, then nothing more, holding the connection open.
    pub fn then_stall(mut self) -> Reply {
        self.action = Action::StallMidBody;
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            HeaderValue::from_str(value).expect("a valid header value"),
        ));
        self
    }

    /// Sets the response body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    /// Waits this long after the request arrived before answering (or resetting).
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A receiver listening on `127.0.0.1`, on a port the system chose.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
    connections: AtomicU64,
}

/// Chooses the reply to a request from the request itself.
type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct State {
    script: VecDeque<Reply>,
    default: Reply,
    responder: Option<Responder>,
    requests: Vec<Recorded>,
    /// Requests read and not answered yet (nor given up by their client), and the most at once.
    in_flight: usize,
    most_in_flight: usize,
    answers: Vec<Answered>,
}

/// One answer the receiver handed back: which request (its index in
/// [`Receiver::requests`]), with what status, and when.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    pub request: usize,
    pub status: u16,
    pub at: Instant,
}

/// Counts a request in flight from the moment it is read until it is answered, reset, or
/// dropped with its connection.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Receiver {
    /// Starts a receiver answering `200 OK` to everything until told otherwise.
    pub fn start() -> Receiver {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script: VecDeque::new(),
                default: Reply::ok(),
                responder: None,
                requests: Vec::new(),
                in_flight: 0,
                most_in_flight: 0,
                answers: Vec::new(),
            }),
            arrived: Condvar::new(),
            connections: AtomicU64::new(0),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("receiver-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, serving) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime cancels every connection task.
            })
            .expect("spawn receiver thread");
        Receiver {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        self.url_for("/")
    }

    /// `http://127.0.0.1:PORT` followed by `path_and_query`, which starts with `/`.
    pub fn url_for(&self, path_and_query: &str) -> String {
        assert!(path_and_query.starts_with('/'), "path must start with /");
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// Queues replies, answered in order of arrival after any already queued.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) -> &Self {
        self.shared.lock().script.extend(replies);
        self
    }

    /// The reply used once the script is empty (initially [`Reply::ok`]).
    pub fn set_default(&self, reply: Reply) -> &Self {
        self.shared.lock().default = reply;
        self
    }

    /// Answers every request the script does not with `respond(request)` instead of the
    /// default. It runs on the receiver's thread with its state locked: keep it quick, and
    /// never call back into the receiver from it.
    pub fn respond_with(&self, respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        self.shared.lock().responder = Some(Arc::new(respond));
    }

    /// Answers 200 after holding each request for `hold` while the returned switch is on, and
    /// at once after it is turned off: a slow receiver that recovers.
    pub fn slow_until_switched(&self, hold: Duration) -> Arc<AtomicBool> {
        let slow = Arc::new(AtomicBool::new(true));
        let on = slow.clone();
        self.respond_with(move |_| {
            if on.load(Ordering::SeqCst) {
                Reply::ok().delay(hold)
            } else {
                Reply::ok()
            }
        });
        slow
    }

    /// Every request recorded so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// How many connections have been accepted.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests in flight now: read, and neither answered nor reset nor dropped with their
    /// connection yet.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// The most requests that were in flight at any one moment so far. A request counts from
    /// the moment its body has been read until its answer is handed back, so the client had it
    /// in flight for longer: this is never more than the client's own count.
    pub fn most_in_flight(&self) -> usize {
        self.shared.lock().most_in_flight
    }

    /// Every answer handed back so far (a status line sent), in order: not the resets before
    /// an answer, nor the requests never answered.
    pub fn answers(&self) -> Vec<Answered> {
        self.shared.lock().answers.clone()
    }

    /// Blocks until at least `n` requests are recorded and returns them all; panics after
    /// `timeout`. Meant for sync tests; async tests use [`Receiver::wait_for_async`].
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "waited {timeout:?} for {n} requests, got {}",
                state.requests.len()
            );
            state = self
                .shared
                .arrived
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.requests.clone()
    }

    /// [`Receiver::wait_for`] without blocking the calling task's thread (tokio, timer enabled).
    pub async fn wait_for_async(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {n} requests, got {}",
                requests.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `http://127.0.0.1:PORT/` URL where nothing listens: connecting to it is refused.
pub fn unused_url() -> String {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    drop(listener);
    format!("http://{addr}/")
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of file descriptors, for example: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let connection = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        // A second handle on the same socket, so a reply can make the close a reset.
        let Ok(std_stream) = stream.into_std() else {
            continue;
        };
        let Ok(dup) = std_stream.try_clone() else {
            continue;
        };
        let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
            continue;
        };
        let abort = Abort(Arc::new(Mutex::new(Some(TcpSocket::from_std_stream(dup)))));
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn({
                let abort = abort.clone();
                move |request| answer(request, shared.clone(), (connection, peer), abort.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(abort);
        });
    }
}

/// Turns the connection's eventual close into a reset.
#[derive(Clone)]
struct Abort(Arc<Mutex<Option<TcpSocket>>>);

impl Abort {
    fn arm(&self) {
        let taken = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(socket) = taken {
            let _ = socket.set_zero_linger();
        }
    }
}

async fn answer(
    request: hyper::Request<Incoming>,
    shared: Arc<Shared>,
    (connection, peer): (u64, SocketAddr),
    abort: Abort,
) -> Result<hyper::Response<ReplyBody>, io::Error> {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let reply = {
        let mut state = shared.lock();
        let recorded = Recorded {
            method: parts.method,
            target: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_owned()),
            headers: parts.headers,
            body,
            at,
            connection,
            peer,
        };
        let reply = match (state.script.pop_front(), &state.responder) {
            (Some(scripted), _) => scripted,
            (None, Some(respond)) => respond(&recorded),
            (None, None) => state.default.clone(),
        };
        state.requests.push(recorded);
        state.in_flight += 1;
        state.most_in_flight = state.most_in_flight.max(state.in_flight);
        shared.arrived.notify_all();
        (reply, state.requests.len() - 1)
    };
    let (reply, index) = reply;
    let in_flight = InFlight(shared.clone());
    if reply.action == Action::Hang {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(reply.delay).await;
    if reply.action == Action::ResetBeforeResponse {
        abort.arm();
        return Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset by script",
        ));
    }
    shared.lock().answers.push(Answered {
        request: index,
        status: reply.status.as_u16(),
        at: Instant::now(),
    });
    drop(in_flight);
    let mut response = hyper::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    let body = if matches!(reply.action, Action::ResetMidBody | Action::StallMidBody) {
        assert!(
            reply.body.len() < 1024,
            "a cut body is shorter than 1024 bytes"
        );
        response = response.header("content-length", "1024");
        ReplyBody::Partial {
            chunk: Some(reply.body),
            pause: None,
            abort: (reply.action == Action::ResetMidBody).then_some(abort),
        }
    } else {
        ReplyBody::Full(Some(reply.body))
    };
    Ok(response.body(body).expect("a valid response"))
}

/// A whole body, or a first chunk followed by a reset (or by nothing, when there is no abort).
enum ReplyBody {
    Full(Option<Bytes>),
    Partial {
        chunk: Option<Bytes>,
        pause: Option<Pin<Box<tokio::time::Sleep>>>,
        abort: Option<Abort>,
    },
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ReplyBody::Full(body) => Poll::Ready(
                body.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ReplyBody::Partial {
                chunk,
                pause,
                abort,
            } => {
                if let Some(chunk) = chunk.take() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                let Some(abort) = abort else {
                    return Poll::Pending;
                };
                // Give the first chunk time to reach the client, then reset.
                let pause = pause
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                match pause.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        abort.arm();
                        Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "reset by script",
                        ))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ReplyBody::Full(None))
            || matches!(self, ReplyBody::Full(Some(b)) if b.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Full(body) => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
            // The announced Content-Length is longer than what will be sent.
            ReplyBody::Partial { .. } => SizeHint::default(),
        }
    }
}

/// What a [`RawReceiver`] does once it has written its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReply {
    /// Closes the connection cleanly (FIN): the client reads to the end of what was sent.
    Close,
    /// Holds the connection open, sending nothing more, until the receiver is dropped.
    Hold,
}

/// A receiver on `127.0.0.1` that answers every request with the same raw bytes, whatever they
/// are: for replies no HTTP server would send. It reads each request (head, then a body of its
/// `Content-Length`) before answering, so closing afterwards is a clean close, not a reset.
///
/// Plain `std::net` on threads of its own; dropping it stops them and closes every connection.
pub struct RawReceiver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RawReceiver {
    /// Starts a receiver answering every request with `reply`, then doing `after`.
    pub fn start(reply: impl Into<Vec<u8>>, after: AfterReply) -> RawReceiver {
        let reply: Arc<[u8]> = reply.into().into();
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name(format!("raw-receiver-{}", addr.port()))
            .spawn({
                let (stop, connections) = (stop.clone(), connections.clone());
                move || {
                    let mut served = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                connections.fetch_add(1, Ordering::SeqCst);
                                let (reply, stop) = (reply.clone(), stop.clone());
                                served.push(std::thread::spawn(move || {
                                    serve_raw(stream, &reply, after, &stop)
                                }));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                    for connection in served {
                        let _ = connection.join();
                    }
                }
            })
            .expect("spawn raw receiver thread");
        RawReceiver {
            addr,
            stop,
            connections,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// How many connections have been accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One connection of a [`RawReceiver`]: read a request, answer, close or hold.
fn serve_raw(mut stream: std::net::TcpStream, reply: &[u8], after: AfterReply, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if read_raw_request(&mut stream).is_err() {
        return;
    }
    // The client may give up part-way through a long reply and close: that is its answer.
    let _ = stream.write_all(reply);
    let _ = stream.flush();
    match after {
        AfterReply::Close => {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            // Wait for the client to close its side, so nothing it sends meets a closed socket.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
        AfterReply::Hold => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Reads one request: the head, then as many body bytes as its `Content-Length` says.
fn read_raw_request(stream: &mut std::net::TcpStream) -> io::Result<()> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    let mut body = seen.len() - head_end;
    while body < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        body += n;
    }
    Ok(())
}

/// Threads that keep the cores busy, to make the races of a loaded machine show (a build
/// running beside the tests, a busy CI host): each spins until the hog is dropped or `limit`
/// has passed, whichever comes first, so a test that fails part-way never leaves one behind.
pub struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl CpuHog {
    /// `threads` spinning threads, for at most `limit`.
    pub fn start(threads: usize, limit: Duration) -> CpuHog {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|n| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("cpu-hog-{n}"))
                    .spawn(move || {
                        let started = Instant::now();
                        let mut x = n as u64 | 1;
                        while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
                            for _ in 0..100_000 {
                                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005));
                            }
                        }
                    })
                    .expect("spawn a CPU hog thread")
            })
            .collect();
        CpuHog { stop, threads }
    }

    /// One spinning thread per core, for at most `limit`.
    pub fn per_core(limit: Duration) -> CpuHog {
        CpuHog::start(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
            limit,
        )
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Waits until `done` holds, at most `limit`, looking every 5 ms; returns how long it took.
/// Panics with `what` after `limit`.
pub fn within(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "{what}: not after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}
