//! Both HTTP backends against a real receiver on 127.0.0.1: what goes on the wire, what comes
//! back, and how failures are sorted.
#![cfg(any(feature = "hyper", feature = "ureq"))]

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use call_result_webhook::{
    CallResult, DeliveryId, PreferencesUpdate, UrlPolicy,
    auth::AuthScheme,
    dispatch::{AttemptTimeout, BodyOutcome, ReceiverResponse, TransportError, TransportErrorKind},
    encoding::Encoding,
    payload::PAYLOAD_KEYS,
    preferences::Preferences,
    request::{EncodedBody, USER_AGENT, build_request},
};
use http::Request;
use support::backends::{BACKENDS, Backend, Dispatchers, Names, Setup, expect_err};
use support::{AfterReply, RawReceiver, Receiver, Reply, loopback_policy, unused_url};

#[cfg(feature = "hyper")]
use call_result_webhook::HyperDispatcher;
#[cfg(feature = "ureq")]
use call_result_webhook::{BlockingDispatcher, Dispatcher as _, UreqDispatcher};

/// One dispatcher of each backend under the loopback policy, the builders' defaults otherwise.
fn loopback() -> Setup {
    Setup::defaults().policy(loopback_policy())
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

/// A call result whose values exercise the encoders: reserved characters, non-ASCII, newlines.
fn tricky_call() -> CallResult {
    CallResult::builder()
        .campaign_name("Winter Sale & Co = 100% + more")
        .logged_at(ts("2019-06-19T16:11:07Z"))
        .call_start(ts("2019-06-19T15:01:00Z"))
        .call_end(ts("2019-06-19T15:03:00Z"))
        .phone_called("+61 7 3105 1xxx")
        .reference("ref/123?x=1#frag")
        .result("Temporarily Unavailable")
        .result_notes("Line one\nLine two\r\nÜnïcödé ✓ 日本語 a+b=c&d;e")
        .wrap_up_by_name("agent@pinetree.net.au")
        .wrap_up_reason_name("Payment Taken")
        .build()
}

/// What `tricky_call` must decode to for an account in Australia/Brisbane (UTC+10).
const TRICKY_EXPECTED: [(&str, &str); 10] = [
    ("CampaignName", "Winter Sale & Co = 100% + more"),
    ("LogDateTime", "2019-06-19T16:11:07"),
    ("CallStart", "2019-06-20 01:01:00"),
    ("CallEnd", "2019-06-20 01:03:00"),
    ("PhoneCalled", "+61 7 3105 1xxx"),
    ("Reference", "ref/123?x=1#frag"),
    ("Result", "Temporarily Unavailable"),
    (
        "ResultNotes",
        "Line one\nLine two\r\nÜnïcödé ✓ 日本語 a+b=c&d;e",
    ),
    ("WrapUpByName", "agent@pinetree.net.au"),
    ("WrapUpReasonName", "Payment Taken"),
];

/// The request for `call` to `url` under `update`, with delivery id `id`.
fn request_to(url: &str, update: PreferencesUpdate, id: &str) -> Request<Bytes> {
    let preferences = Preferences::from_update(
        update
            .enabled(true)
            .url(url)
            .time_zone("Australia/Brisbane"),
    )
    .unwrap();
    let body = EncodedBody::encode(&tricky_call(), &preferences).unwrap();
    build_request(&preferences, &DeliveryId::new(id).unwrap(), &body).unwrap()
}

fn simple_request(url: &str) -> Request<Bytes> {
    request_to(url, PreferencesUpdate::new(), "msg_simple")
}

fn with_timeout(mut request: Request<Bytes>, timeout: Duration) -> Request<Bytes> {
    request.extensions_mut().insert(AttemptTimeout(timeout));
    request
}

/// Every backend of `h`, sent a request to a receiver that answers with the raw bytes `reply`
/// and closes, fails with `kind` and says `message`.
fn every_backend_fails_on(
    h: &Dispatchers,
    reply: impl Into<Vec<u8>>,
    kind: TransportErrorKind,
    message: &str,
    what: &str,
) {
    let receiver = RawReceiver::start(reply, AfterReply::Close);
    for &backend in BACKENDS {
        let request = with_timeout(simple_request(&receiver.url()), Duration::from_secs(5));
        let err = expect_err(h.send(backend, request), backend);
        assert_eq!(err.kind(), kind, "{backend:?} {what}: {err} ({err:?})");
        assert_eq!(err.to_string(), message, "{backend:?} {what}");
    }
}

#[test]
fn form_body_basic_auth_and_every_header_exactly() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        let request = request_to(
            &receiver.url_for("/calls/in?account=7&x=a%20b"),
            PreferencesUpdate::new().credentials("dialer", "pässwörd✓ & =+/:"),
            "msg_form_1",
        );
        let sent_len = request.body().len();
        let response = h.send(backend, request).unwrap();
        assert_eq!(response.status(), 200, "{backend:?}");

        let seen = receiver.wait_for(1, Duration::from_secs(5));
        assert_eq!(seen.len(), 1, "{backend:?}");
        let r = &seen[0];
        assert_eq!(r.method, "POST", "{backend:?}");
        assert_eq!(r.target, "/calls/in?account=7&x=a%20b", "{backend:?}");
        assert_eq!(
            r.header_names(),
            [
                "authorization",
                "content-length",
                "content-type",
                "host",
                "user-agent",
                "webhook-id"
            ],
            "{backend:?}"
        );
        let expected_auth = format!("Basic {}", STANDARD.encode("dialer:pässwörd✓ & =+/:"));
        assert_eq!(
            r.header("authorization"),
            Some(&*expected_auth),
            "{backend:?}"
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/x-www-form-urlencoded"),
            "{backend:?}"
        );
        assert_eq!(r.header("content-length"), Some(&*sent_len.to_string()));
        assert_eq!(r.header("host"), Some(&*receiver.addr().to_string()));
        assert_eq!(r.header("user-agent"), Some(USER_AGENT), "{backend:?}");
        assert_eq!(r.header("webhook-id"), Some("msg_form_1"), "{backend:?}");

        let form = r.form();
        let expected: Vec<(String, String)> = TRICKY_EXPECTED
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(form, expected, "{backend:?}");
    }
}

#[test]
fn json_body_slash_auth() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        let request = request_to(
            &receiver.url_for("/hook"),
            PreferencesUpdate::new()
                .credentials("user", "passwd")
                .auth_scheme(AuthScheme::Slash)
                .encoding(Encoding::Json),
            "msg_json_1",
        );
        h.send(backend, request).unwrap();

        let r = &receiver.wait_for(1, Duration::from_secs(5))[0];
        // The page taken literally: base64 of "user/passwd", no scheme word.
        assert_eq!(
            r.header("authorization"),
            Some("dXNlci9wYXNzd2Q="),
            "{backend:?}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let json = r.json();
        let object = json.as_object().unwrap();
        assert_eq!(object.len(), 10, "{backend:?}");
        for (key, value) in TRICKY_EXPECTED {
            assert_eq!(object[key], value, "{backend:?} {key}");
        }
        // Wire order, read from the raw text.
        let text = r.text();
        let positions: Vec<usize> = PAYLOAD_KEYS
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{backend:?}");
    }
}

#[test]
fn no_credentials_no_authorization_header() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        h.send(backend, simple_request(&receiver.url())).unwrap();
        let r = &receiver.wait_for(1, Duration::from_secs(5))[0];
        assert!(r.headers.get("authorization").is_none(), "{backend:?}");
        assert_eq!(
            r.header_names(),
            [
                "content-length",
                "content-type",
                "host",
                "user-agent",
                "webhook-id"
            ],
            "{backend:?}"
        );
    }
}

#[test]
fn a_redirect_is_returned_and_never_followed() {
    let h = loopback().build();
    for &backend in BACKENDS {
        for code in [301, 302, 303, 307, 308] {
            let target = Receiver::start();
            let receiver = Receiver::start();
            receiver.script([Reply::redirect(code, &target.url_for("/elsewhere"))]);
            let response = h.send(backend, simple_request(&receiver.url())).unwrap();
            assert_eq!(response.status(), code, "{backend:?}");
            assert_eq!(
                response.headers()["location"],
                target.url_for("/elsewhere").as_str()
            );
            assert_eq!(receiver.requests().len(), 1, "{backend:?}");
            assert!(
                target.requests().is_empty(),
                "{backend:?} followed a {code}"
            );
        }
    }
}

#[test]
fn status_codes_come_back_as_responses_with_headers_and_body() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.script([
            Reply::status(404).body("no such hook\nsecond line"),
            Reply::status(410),
            Reply::status(503).header("retry-after", "120"),
            Reply::status(429).header("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
            Reply::status(500),
            Reply::status(204),
        ]);
        let mut statuses = Vec::new();
        let mut responses = Vec::new();
        for _ in 0..6 {
            let r = h.send(backend, simple_request(&receiver.url())).unwrap();
            statuses.push(r.status().as_u16());
            responses.push(r);
        }
        assert_eq!(statuses, [404, 410, 503, 429, 500, 204], "{backend:?}");
        assert_eq!(
            &responses[0].body_prefix()[..],
            b"no such hook\nsecond line"
        );
        assert_eq!(responses[2].headers()["retry-after"], "120");
        assert_eq!(
            responses[3].headers()["retry-after"],
            "Wed, 21 Oct 2015 07:28:00 GMT"
        );
    }
}

#[test]
fn a_receiver_that_never_answers_hits_the_attempt_timeout() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.set_default(Reply::hang());
        let started = Instant::now();
        let request = with_timeout(simple_request(&receiver.url()), Duration::from_millis(300));
        let err = expect_err(h.send(backend, request), backend);
        assert_eq!(
            err.kind(),
            TransportErrorKind::Timeout,
            "{backend:?}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{backend:?}");
        assert_eq!(receiver.requests().len(), 1, "{backend:?}");
    }
}

#[test]
fn the_builder_timeout_applies_when_the_request_carries_none() {
    #[cfg(feature = "hyper")]
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let receiver = Receiver::start();
        receiver.set_default(Reply::hang());
        let d = HyperDispatcher::builder()
            .timeout(Duration::from_millis(300))
            .policy(loopback_policy())
            .build();
        let mut request = simple_request(&receiver.url());
        request.extensions_mut().clear();
        let started = Instant::now();
        use call_result_webhook::Dispatcher as _;
        let err = rt.block_on(d.dispatch(request)).unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    #[cfg(feature = "ureq")]
    {
        let receiver = Receiver::start();
        receiver.set_default(Reply::hang());
        let d = UreqDispatcher::builder()
            .timeout(Duration::from_millis(300))
            .policy(loopback_policy())
            .build();
        let mut request = simple_request(&receiver.url());
        request.extensions_mut().clear();
        let started = Instant::now();
        let err = d.dispatch_blocking(request).unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

/// The attempt's time limit in the body tests, and what "returned within it" allows on top.
const BODY_LIMIT: Duration = Duration::from_millis(400);
const SLACK: Duration = Duration::from_millis(1500);

fn expect_ok(
    outcome: Result<ReceiverResponse, TransportError>,
    backend: Backend,
) -> ReceiverResponse {
    match outcome {
        Ok(r) => r,
        Err(e) => panic!("{backend:?}: expected a response, got `{e}` ({e:?})"),
    }
}

#[test]
fn a_2xx_whose_body_stalls_is_delivered_at_the_time_limit_and_noted() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        // The head and 16 bytes arrive at once; the other 1008 announced bytes never do.
        receiver.set_default(Reply::stall_mid_body());
        let request = with_timeout(simple_request(&receiver.url()), BODY_LIMIT);
        let started = Instant::now();
        let r = expect_ok(h.send(backend, request), backend);
        let took = started.elapsed();
        assert_eq!(r.status(), 200, "{backend:?}");
        assert_eq!(r.body_outcome(), BodyOutcome::TimedOut, "{backend:?}");
        assert_eq!(r.body_outcome().to_string(), "body timed out");
        assert_eq!(&r.body_prefix()[..], b"partial response", "{backend:?}");
        assert!(took < BODY_LIMIT + SLACK, "{backend:?} took {took:?}");
        assert!(
            took >= BODY_LIMIT / 2,
            "{backend:?} returned after {took:?}"
        );
    }
}

#[test]
fn a_non_2xx_whose_body_stalls_is_a_timeout_within_the_time_limit() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.set_default(Reply::status(503).body("overloaded").then_stall());
        let request = with_timeout(simple_request(&receiver.url()), BODY_LIMIT);
        let started = Instant::now();
        let err = expect_err(h.send(backend, request), backend);
        let took = started.elapsed();
        assert_eq!(
            err.kind(),
            TransportErrorKind::Timeout,
            "{backend:?}: {err}"
        );
        assert!(took < BODY_LIMIT + SLACK, "{backend:?} took {took:?}");
    }
}

#[test]
fn a_2xx_reset_mid_body_is_delivered_and_noted() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.set_default(Reply::reset_mid_body());
        let request = with_timeout(simple_request(&receiver.url()), Duration::from_secs(5));
        let r = expect_ok(h.send(backend, request), backend);
        assert_eq!(r.status(), 200, "{backend:?}");
        assert_eq!(r.body_outcome(), BodyOutcome::Failed, "{backend:?}");
        // Whatever arrived before the reset (a reset may drop what was still unread).
        assert!(
            b"partial response".starts_with(r.body_prefix()),
            "{backend:?}: {:?}",
            r.body_prefix()
        );
        assert_eq!(receiver.requests().len(), 1, "{backend:?}");
    }
}

#[test]
fn a_non_2xx_reset_mid_body_is_still_io() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.set_default(Reply::status(500).body("partial").then_reset());
        let err = expect_err(h.send(backend, simple_request(&receiver.url())), backend);
        assert_eq!(err.kind(), TransportErrorKind::Io, "{backend:?}: {err}");
        assert_eq!(err.to_string(), "I/O error");
    }
}

#[test]
fn a_2xx_longer_than_the_prefix_is_delivered_truncated() {
    let long: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let h = loopback().body_prefix_limit(100).build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.script([
            Reply::ok().body(long.clone()),
            Reply::status(201).body(long[..100].to_vec()),
            Reply::status(202).body(long[..99].to_vec()),
            Reply::status(204),
        ]);
        let r = expect_ok(h.send(backend, simple_request(&receiver.url())), backend);
        assert_eq!(r.status(), 200, "{backend:?}");
        assert_eq!(r.body_outcome(), BodyOutcome::Truncated, "{backend:?}");
        assert_eq!(&r.body_prefix()[..], &long[..100], "{backend:?}");
        // Exactly the limit, its length announced: all of it arrived.
        let r = expect_ok(h.send(backend, simple_request(&receiver.url())), backend);
        assert_eq!(r.body_outcome(), BodyOutcome::Complete, "{backend:?}");
        assert_eq!(&r.body_prefix()[..], &long[..100], "{backend:?}");
        let r = expect_ok(h.send(backend, simple_request(&receiver.url())), backend);
        assert_eq!(r.body_outcome(), BodyOutcome::Complete, "{backend:?}");
        assert_eq!(r.body_prefix().len(), 99, "{backend:?}");
        let r = expect_ok(h.send(backend, simple_request(&receiver.url())), backend);
        assert_eq!(
            (r.status().as_u16(), r.body_outcome()),
            (204, BodyOutcome::Complete),
            "{backend:?}"
        );
    }
}

/// A 200 status line, `headers` and the blank line that ends them.
fn head_with(headers: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{headers}\r\n").into_bytes()
}

#[test]
fn a_megabyte_of_headers_is_headers_too_large() {
    let h = loopback().build();
    let big_values: String = (0..16)
        .map(|i| format!("x-big-{i}: {}\r\n", "v".repeat(64 * 1024)))
        .collect();
    let many_names: String = (0..10_000)
        .map(|i| format!("x-header-{i:05}: {}\r\n", "v".repeat(90)))
        .collect();
    for (what, headers) in [
        ("16 headers of 64 KiB", big_values),
        ("10,000 headers", many_names),
    ] {
        assert!(headers.len() >= 1_000_000, "{what}");
        every_backend_fails_on(
            &h,
            head_with(&headers),
            TransportErrorKind::HeadersTooLarge,
            "response headers too large",
            what,
        );
    }
}

#[test]
fn garbage_is_not_http() {
    let h = loopback().build();
    for (what, reply) in [
        ("HTTP/0.9-style garbage", &b"garbage\r\n\r\n"[..]),
        ("garbage, then close", &b"garbage"[..]),
        ("a status line with no code", &b"HTTP/1.1 OK\r\n\r\n"[..]),
        ("a status code of letters", &b"HTTP/1.1 2x0 OK\r\n\r\n"[..]),
    ] {
        every_backend_fails_on(
            &h,
            reply,
            TransportErrorKind::NotHttp,
            "not an HTTP response",
            what,
        );
    }
}

#[test]
fn a_connection_closed_before_the_headers_are_complete_says_so() {
    let h = loopback().build();
    for (what, reply) in [
        ("half a status line", &b"HTTP/1.1 20"[..]),
        ("no byte at all", &b""[..]),
        ("part of the headers", &b"HTTP/1.1 200 OK\r\ncontent-le"[..]),
    ] {
        every_backend_fails_on(
            &h,
            reply,
            TransportErrorKind::ClosedBeforeHeaders,
            "connection closed before the response headers",
            what,
        );
    }
}

#[test]
fn headers_that_never_finish_time_out() {
    let h = loopback().build();
    let receiver = RawReceiver::start(
        &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"[..],
        AfterReply::Hold,
    );
    for &backend in BACKENDS {
        let request = with_timeout(simple_request(&receiver.url()), BODY_LIMIT);
        let started = Instant::now();
        let err = expect_err(h.send(backend, request), backend);
        assert_eq!(
            err.kind(),
            TransportErrorKind::Timeout,
            "{backend:?}: {err}"
        );
        assert!(started.elapsed() < BODY_LIMIT + SLACK, "{backend:?}");
    }
}

#[test]
fn connection_refused_is_connect() {
    let h = loopback().build();
    let url = unused_url();
    for &backend in BACKENDS {
        let err = expect_err(h.send(backend, simple_request(&url)), backend);
        assert_eq!(
            err.kind(),
            TransportErrorKind::Connect,
            "{backend:?}: {err}"
        );
        assert!(err.kind().is_retryable());
    }
}

#[test]
fn a_reset_before_the_answer_is_reset() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.script([Reply::reset()]);
        let err = expect_err(h.send(backend, simple_request(&receiver.url())), backend);
        assert_eq!(err.kind(), TransportErrorKind::Reset, "{backend:?}: {err}");
        assert_eq!(err.to_string(), "connection reset");
        assert!(err.kind().is_retryable());
    }
}

#[test]
fn https_to_a_plain_http_receiver_is_a_tls_handshake_failure() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        let url = format!("https://{}/", receiver.addr());
        let request = with_timeout(simple_request(&url), Duration::from_secs(5));
        let err = expect_err(h.send(backend, request), backend);
        assert_eq!(
            err.kind(),
            TransportErrorKind::TlsHandshake,
            "{backend:?}: {err}"
        );
        assert_eq!(err.to_string(), "TLS handshake failed");
    }
}

#[test]
fn the_body_prefix_is_capped() {
    let long: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let h = loopback().body_prefix_limit(100).build();
    let default = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.set_default(Reply::status(500).body(long.clone()));
        let r = h.send(backend, simple_request(&receiver.url())).unwrap();
        assert_eq!(r.status(), 500);
        assert_eq!(&r.body_prefix()[..], &long[..100], "{backend:?}");

        let r = default
            .send(backend, simple_request(&receiver.url()))
            .unwrap();
        let limit = call_result_webhook::limits::DEFAULT_BODY_PREFIX_LIMIT;
        assert_eq!(&r.body_prefix()[..], &long[..limit], "{backend:?}");
    }
}

#[test]
fn connections_are_reused() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        receiver.set_default(Reply::status(200).body("ok"));
        for _ in 0..3 {
            h.send(backend, simple_request(&receiver.url())).unwrap();
            // A finished connection goes back to hyper-util's pool from its own task; a
            // request made before that opens a new one.
            std::thread::sleep(Duration::from_millis(100));
        }
        let seen = receiver.wait_for(3, Duration::from_secs(5));
        let first = seen[0].connection;
        assert!(seen.iter().all(|r| r.connection == first), "{backend:?}");
    }
}

#[test]
fn a_host_name_goes_through_the_resolver() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        let url = format!("http://localhost:{}/by-name", receiver.addr().port());
        let r = h.send(backend, simple_request(&url)).unwrap();
        assert_eq!(r.status(), 200, "{backend:?}");
        let seen = receiver.wait_for(1, Duration::from_secs(5));
        assert_eq!(seen[0].target, "/by-name");
    }
}

#[test]
fn a_request_that_is_not_an_absolute_http_url_is_invalid() {
    let h = loopback().build();
    for &backend in BACKENDS {
        let mut request = simple_request("http://127.0.0.1:9/");
        *request.uri_mut() = "/relative/only".parse().unwrap();
        let err = expect_err(h.send(backend, request), backend);
        assert_eq!(
            err.kind(),
            TransportErrorKind::InvalidRequest,
            "{backend:?}"
        );
        assert!(!err.kind().is_retryable());
    }
}

#[test]
fn errors_never_show_the_password() {
    let h = loopback().build();
    let url = unused_url();
    for &backend in BACKENDS {
        let request = request_to(
            &url,
            PreferencesUpdate::new().credentials("dialer", "s3cr3t-Pa55"),
            "msg_secret",
        );
        let auth = request.headers()["authorization"]
            .to_str()
            .unwrap()
            .to_owned();
        let err = expect_err(h.send(backend, request), backend);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cr3t-Pa55"), "{backend:?}: {shown}");
        assert!(!shown.contains(&auth[6..]), "{backend:?}: {shown}");
    }
}

#[test]
fn the_default_policy_refuses_http_and_internal_addresses_before_connecting() {
    let h = Setup::defaults()
        .policy(UrlPolicy::default())
        .body_prefix_limit(1024)
        .build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        // Plain http: https is required.
        let err = expect_err(h.send(backend, simple_request(&receiver.url())), backend);
        assert_eq!(err.kind(), TransportErrorKind::Refused, "{backend:?}");
        assert!(
            matches!(
                err.policy_refusal(),
                Some(call_result_webhook::Error::InvalidUrl { .. })
            ),
            "{backend:?}: {err}"
        );
        // https to a loopback literal: the address is refused.
        let url = format!("https://{}/", receiver.addr());
        let err = expect_err(h.send(backend, simple_request(&url)), backend);
        assert_eq!(err.kind(), TransportErrorKind::Refused, "{backend:?}");
        assert!(
            matches!(
                err.policy_refusal(),
                Some(call_result_webhook::Error::AddressRefused {
                    rule: "loopback",
                    ..
                })
            ),
            "{backend:?}: {err}"
        );
        assert!(!err.kind().is_retryable());
        assert_eq!(receiver.connections(), 0, "{backend:?}");
    }
}

#[test]
fn a_name_that_resolves_to_a_refused_address_is_never_connected_to() {
    // http allowed, loopback not: `localhost` passes the URL check and is refused once resolved.
    let h = Setup::defaults()
        .policy(UrlPolicy::new().allow_http(true))
        .body_prefix_limit(1024)
        .build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        let url = format!("http://localhost:{}/", receiver.addr().port());
        let err = expect_err(h.send(backend, simple_request(&url)), backend);
        assert_eq!(
            err.kind(),
            TransportErrorKind::Refused,
            "{backend:?}: {err}"
        );
        match err.policy_refusal() {
            Some(call_result_webhook::Error::AddressRefused { host, addr, rule }) => {
                assert_eq!(host, "localhost");
                assert!(addr.is_loopback(), "{addr}");
                assert_eq!(*rule, "loopback");
            }
            other => panic!("{backend:?}: {other:?}"),
        }
        assert_eq!(receiver.connections(), 0, "{backend:?}");
    }
}

#[test]
fn an_allowlisted_address_is_connected_to() {
    let policy = UrlPolicy::new()
        .allow_http(true)
        .allow_net("127.0.0.1/32".parse().unwrap());
    let h = Setup::defaults()
        .policy(policy)
        .body_prefix_limit(1024)
        .build();
    for &backend in BACKENDS {
        let receiver = Receiver::start();
        // `localhost` may also resolve to ::1, which is not allowlisted: only 127.0.0.1 is used.
        let url = format!("http://localhost:{}/", receiver.addr().port());
        let r = h.send(backend, simple_request(&url)).unwrap();
        assert_eq!(r.status(), 200, "{backend:?}");
    }
}

/// Host names for the adoption tests: a name is judged by the address it resolves to, in the
/// resolver or connector, after the URL check.
fn directory() -> Names {
    let names = Names::new();
    names
        .add("receiver.test", &["127.0.0.1"])
        .add("loopback2.test", &["127.0.0.2"])
        .add("private.test", &["10.0.0.1"])
        .add("home.test", &["192.168.1.20"])
        .add("metadata.test", &["169.254.169.254"]);
    names
}

/// The policy a `Webhooks` engine would hand its dispatcher: http, and 127.0.0.1 only.
fn engine_policy() -> UrlPolicy {
    UrlPolicy::new()
        .allow_http(true)
        .allow_net("127.0.0.1/32".parse().unwrap())
}

#[test]
fn a_dispatcher_built_without_a_policy_refuses_http_loopback_by_default() {
    for &backend in BACKENDS {
        let h = Setup::defaults().resolver(&directory()).build();
        let receiver = Receiver::start();
        let err = expect_err(h.send(backend, simple_request(&receiver.url())), backend);
        assert_eq!(
            err.kind(),
            TransportErrorKind::Refused,
            "{backend:?}: {err}"
        );
        assert!(
            matches!(
                err.policy_refusal(),
                Some(call_result_webhook::Error::InvalidUrl { .. })
            ),
            "{backend:?}: {err}"
        );
        // https to a name that resolves to loopback: refused where the address is judged.
        let url = format!("https://receiver.test:{}/", receiver.addr().port());
        let err = expect_err(h.send(backend, simple_request(&url)), backend);
        assert!(
            matches!(
                err.policy_refusal(),
                Some(call_result_webhook::Error::AddressRefused {
                    rule: "loopback",
                    ..
                })
            ),
            "{backend:?}: {err}"
        );
        assert_eq!(receiver.connections(), 0, "{backend:?}");
    }
}

#[test]
fn an_adopted_policy_reaches_a_loopback_receiver() {
    for &backend in BACKENDS {
        let h = Setup::defaults().resolver(&directory()).build();
        let receiver = Receiver::start();
        h.adopt(backend, &engine_policy()).unwrap();
        // The URL check and the address check (resolver or connector) both hold to it: the
        // name passes the URL check and is admitted only once resolved to 127.0.0.1.
        for url in [
            receiver.url(),
            format!("http://receiver.test:{}/", receiver.addr().port()),
        ] {
            let r = h.send(backend, simple_request(&url)).unwrap();
            assert_eq!(r.status(), 200, "{backend:?} {url}");
        }
        assert_eq!(receiver.requests().len(), 2, "{backend:?}");
        // Adopting the same policy again, as a second worker would, is accepted.
        h.adopt(backend, &engine_policy()).unwrap();
    }
}

#[test]
fn an_adopted_policy_still_refuses_a_private_address_off_its_allowlist() {
    for &backend in BACKENDS {
        let h = Setup::defaults().resolver(&directory()).build();
        h.adopt(backend, &engine_policy()).unwrap();
        let receiver = Receiver::start();
        // Written as literals (refused by the URL check) and as names (refused where the
        // resolved address is judged, in the resolver or connector).
        for (url, expected) in [
            ("http://10.0.0.1:9/", "private (RFC 1918)"),
            ("http://private.test:9/", "private (RFC 1918)"),
            ("http://192.168.1.20:9/", "private (RFC 1918)"),
            ("http://home.test:9/", "private (RFC 1918)"),
            ("http://169.254.169.254/", "link-local"),
            ("http://metadata.test/", "link-local"),
        ] {
            let request = with_timeout(simple_request(url), Duration::from_secs(2));
            let err = expect_err(h.send(backend, request), backend);
            assert_eq!(
                err.kind(),
                TransportErrorKind::Refused,
                "{backend:?} {url}: {err}"
            );
            match err.policy_refusal() {
                Some(call_result_webhook::Error::AddressRefused { rule, .. }) => {
                    assert_eq!(*rule, expected, "{backend:?} {url}")
                }
                other => panic!("{backend:?} {url}: {other:?}"),
            }
        }
        // 127.0.0.2 is loopback, but only 127.0.0.1 is on the allowlist.
        for host in ["127.0.0.2", "loopback2.test"] {
            let url = format!("http://{host}:{}/", receiver.addr().port());
            let err = expect_err(h.send(backend, simple_request(&url)), backend);
            assert!(
                matches!(
                    err.policy_refusal(),
                    Some(call_result_webhook::Error::AddressRefused {
                        rule: "loopback",
                        ..
                    })
                ),
                "{backend:?} {host}: {err}"
            );
        }
        assert_eq!(receiver.connections(), 0, "{backend:?}");
    }
}

#[test]
fn a_dispatcher_built_with_a_different_policy_refuses_to_adopt() {
    for &backend in BACKENDS {
        // Built for loopback and private ranges; the engine's policy admits 127.0.0.1 only.
        let h = loopback().build();
        let err = h.adopt(backend, &engine_policy()).unwrap_err();
        match &err {
            call_result_webhook::Error::InvalidConfig { field, reason } => {
                assert_eq!(*field, "policy", "{backend:?}");
                assert!(reason.contains("Webhooks::builder().policy()"), "{reason}");
            }
            other => panic!("{backend:?}: {other:?}"),
        }
        // The builder's policy stays in force: its http loopback receiver is still reached.
        let receiver = Receiver::start();
        let r = h.send(backend, simple_request(&receiver.url())).unwrap();
        assert_eq!(r.status(), 200, "{backend:?}");
        // The same policy, its networks in another order, is no conflict.
        let same = UrlPolicy::new().allow_private().allow_http(true);
        h.adopt(backend, &same).unwrap();
    }
}

#[test]
fn a_second_different_policy_is_refused_after_an_adoption() {
    for &backend in BACKENDS {
        let h = Setup::defaults().resolver(&directory()).build();
        h.adopt(backend, &engine_policy()).unwrap();
        let err = h.adopt(backend, &UrlPolicy::new()).unwrap_err();
        assert!(
            matches!(
                err,
                call_result_webhook::Error::InvalidConfig {
                    field: "policy",
                    ..
                }
            ),
            "{backend:?}: {err:?}"
        );
        // The first adoption stays in force.
        let receiver = Receiver::start();
        let r = h.send(backend, simple_request(&receiver.url())).unwrap();
        assert_eq!(r.status(), 200, "{backend:?}");
    }
}

#[cfg(feature = "ureq")]
#[test]
fn ureq_adopts_one_policy_for_both_of_its_traits() {
    let h = Setup::defaults().resolver(&directory()).build();
    BlockingDispatcher::adopt_policy(&h.ureq, &engine_policy()).unwrap();
    let receiver = Receiver::start();
    let r = h
        .send(Backend::UreqAsync, simple_request(&receiver.url()))
        .unwrap();
    assert_eq!(r.status(), 200);
    // A clone shares it, and a different one through the other trait is a conflict.
    let clone = h.ureq.clone();
    assert!(call_result_webhook::Dispatcher::adopt_policy(&clone, &UrlPolicy::new()).is_err());
}

#[cfg(feature = "hyper")]
#[test]
fn hyper_is_built_outside_a_runtime_and_used_inside_one() {
    let dispatcher = HyperDispatcher::builder().policy(loopback_policy()).build();
    let receiver = Receiver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    use call_result_webhook::Dispatcher as _;
    let r = rt
        .block_on(dispatcher.dispatch(simple_request(&receiver.url())))
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[cfg(feature = "ureq")]
#[tokio::test(flavor = "current_thread")]
async fn the_ureq_async_path_does_not_block_a_current_thread_runtime() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let receiver = Receiver::start();
    receiver.set_default(Reply::ok().delay(Duration::from_millis(600)));
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let dispatcher = UreqDispatcher::builder().policy(loopback_policy()).build();
    let response = dispatcher
        .dispatch(simple_request(&receiver.url()))
        .await
        .unwrap();
    ticker.abort();
    assert_eq!(response.status(), 200);
    // Blocked, the ticker could not have run at all while the request was in flight.
    let ticked = ticks.load(Ordering::SeqCst);
    assert!(ticked >= 5, "the timer ticked only {ticked} times");
    let seen = receiver.wait_for_async(1, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 1);
}

#[cfg(feature = "ureq")]
#[test]
fn ureq_needs_no_runtime_at_all() {
    let receiver = Receiver::start();
    let r = UreqDispatcher::builder()
        .policy(loopback_policy())
        .build()
        .dispatch_blocking(simple_request(&receiver.url()))
        .unwrap();
    assert_eq!(r.status(), 200);
}
