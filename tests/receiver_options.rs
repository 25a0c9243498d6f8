//! What real receivers and networks ask for, proven on the wire: each auth kind, custom headers,
//! renamed keys and GET with a query, sent by the real hyper and ureq dispatchers to a receiver
//! on 127.0.0.1 and read back with independent parsers (`form_urlencoded::parse`, serde_json).
//! What is refused is refused before anything is sent, and no token, API key or secret header
//! value ever shows in a `Debug` or an error.
#![cfg(all(feature = "hyper", feature = "ureq"))]

mod support;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use call_result_webhook::{
    CallResult, DeliveryId, Error, MemoryStore, PreferencesUpdate, Principal, UreqDispatcher,
    Webhooks,
    account::Account,
    auth::AuthScheme,
    encoding::Encoding,
    limits::MAX_GET_URL_LEN,
    payload::PAYLOAD_KEYS,
    request::{CustomHeader, EncodedBody, Method, build_request},
};
use http::Request;
use support::backends::{BACKENDS, Backend, Dispatchers, Setup};
use support::{Receiver, Recorded, Saved, account, admin, ids, loopback_policy, switch_on};

const TOKEN: &str = "tok-Bearer-7f3a9c-SECRET";
const API_KEY: &str = "key-ApiKey-51bd02-SECRET";
const SHARED: &str = "shared-Header-e4c8-SECRET";

/// Sends `request` through `backend` and returns what the receiver saw of it.
fn send(
    dispatchers: &Dispatchers,
    backend: Backend,
    receiver: &Receiver,
    request: Request<Bytes>,
) -> Recorded {
    let before = receiver.requests().len();
    let response = dispatchers
        .send(backend, request)
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    assert_eq!(response.status(), 200, "{backend:?}");
    let seen = receiver.wait_for(before + 1, Duration::from_secs(5));
    assert_eq!(seen.len(), before + 1, "{backend:?}");
    seen[before].clone()
}

/// A call result whose values exercise the encoders: reserved characters, non-ASCII, a newline.
fn awkward_call() -> CallResult {
    CallResult::builder()
        .campaign_name("Winter Sale & Co = 100%")
        .logged_at("2019-06-19T16:11:07Z".parse().unwrap())
        .phone_called("+61 7 3105 1xxx")
        .reference("ref/123?x=1#frag")
        .result("Connected")
        .result_notes("Line one\nÜnïcödé ✓ a+b=c&d")
        .build()
}

/// The ten values of `awkward_call()` as a form body carries them, in order.
fn expected_values() -> [&'static str; 10] {
    [
        "Winter Sale & Co = 100%",
        "2019-06-19T16:11:07",
        "",
        "",
        "+61 7 3105 1xxx",
        "ref/123?x=1#frag",
        "Connected",
        "Line one\nÜnïcödé ✓ a+b=c&d",
        "",
        "",
    ]
}

fn request_for(account: &Account) -> Request<Bytes> {
    let body = EncodedBody::encode(&awkward_call(), account.preferences()).unwrap();
    build_request(account.preferences(), &DeliveryId::generate(), &body).unwrap()
}

/// A JSON object's members in the order they were written (serde_json's own map sorts them).
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Ordered(pairs))
            }
        }
        d.deserialize_map(Visit)
    }
}

#[test]
fn each_auth_kind_arrives_exactly() {
    let receiver = Receiver::start();
    let harness = Setup::defaults().policy(loopback_policy()).build();
    let url = receiver.url_for("/hook");
    /// What the receiver must see: the header's name and its exact value, or no auth header.
    type Expected = Option<(&'static str, String)>;
    let cases: [(&str, PreferencesUpdate, Expected); 5] = [
        (
            "basic",
            PreferencesUpdate::new().credentials("user", "passwd"),
            Some(("authorization", "Basic dXNlcjpwYXNzd2Q=".into())),
        ),
        (
            "slash",
            PreferencesUpdate::new()
                .credentials("user", "passwd")
                .auth_scheme(AuthScheme::Slash),
            Some(("authorization", "dXNlci9wYXNzd2Q=".into())),
        ),
        (
            "none, with credentials stored",
            PreferencesUpdate::new()
                .credentials("user", "passwd")
                .auth_scheme(AuthScheme::None),
            None,
        ),
        (
            "bearer",
            PreferencesUpdate::new()
                .credentials("user", "passwd")
                .bearer_token(TOKEN),
            Some(("authorization", format!("Bearer {TOKEN}"))),
        ),
        (
            "api key",
            PreferencesUpdate::new().api_key("X-Api-Key", API_KEY),
            Some(("x-api-key", API_KEY.into())),
        ),
    ];
    for (what, update, expected) in cases {
        let account = account(update.url(&url));
        for &backend in BACKENDS {
            let request = request_for(&account);
            if let Some((name, _)) = &expected {
                assert!(request.headers()[*name].is_sensitive(), "{what}");
            }
            let seen = send(&harness, backend, &receiver, request);
            match &expected {
                Some((name, value)) => {
                    assert_eq!(
                        seen.header(name),
                        Some(value.as_str()),
                        "{what} {backend:?}"
                    );
                    if *name != "authorization" {
                        assert_eq!(seen.header("authorization"), None, "{what} {backend:?}");
                    }
                }
                None => assert_eq!(seen.header("authorization"), None, "{what} {backend:?}"),
            }
            let extra: Vec<String> = seen
                .header_names()
                .into_iter()
                .filter(|n| n.contains("api-key"))
                .collect();
            assert_eq!(extra.len(), usize::from(what == "api key"), "{what}");
        }
    }
}

#[test]
fn custom_headers_arrive_exactly() {
    let receiver = Receiver::start();
    let harness = Setup::defaults().policy(loopback_policy()).build();
    let tenant = account(
        PreferencesUpdate::new()
            .url(&receiver.url_for("/hook"))
            .credentials("user", "passwd")
            .header("X-Tenant", "acme ✓ (café)")
            .header("X-Empty", "")
            .secret_header("X-Shared-Key", SHARED)
            .header("x-tenant", "acme-2; region=au"),
    );
    for &backend in BACKENDS {
        let request = request_for(&tenant);
        assert!(request.headers()["x-shared-key"].is_sensitive());
        assert!(!request.headers()["x-tenant"].is_sensitive());
        let seen = send(&harness, backend, &receiver, request);
        assert_eq!(
            seen.header("x-tenant"),
            Some("acme-2; region=au"),
            "{backend:?}"
        );
        assert_eq!(seen.header("x-empty"), Some(""), "{backend:?}");
        assert_eq!(seen.header("x-shared-key"), Some(SHARED), "{backend:?}");
        assert_eq!(seen.header("authorization"), Some("Basic dXNlcjpwYXNzd2Q="));
        assert_eq!(
            seen.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
    }
    // A value outside visible ASCII arrives byte for byte.
    let unicode = account(
        PreferencesUpdate::new()
            .url(&receiver.url_for("/hook"))
            .header("X-Tenant", "café ✓"),
    );
    for &backend in BACKENDS {
        let seen = send(&harness, backend, &receiver, request_for(&unicode));
        assert_eq!(seen.headers["x-tenant"].as_bytes(), "café ✓".as_bytes());
    }
}

#[test]
fn renamed_keys_arrive_in_order_in_form_and_json_bodies() {
    let receiver = Receiver::start();
    let harness = Setup::defaults().policy(loopback_policy()).build();
    let renames = [
        ("CampaignName", "campaign"),
        ("PhoneCalled", "phone"),
        ("Reference", "ref & more = ✓"),
        ("WrapUpReasonName", "reason"),
    ];
    let sent_names: Vec<String> = PAYLOAD_KEYS
        .iter()
        .map(|k| {
            renames
                .iter()
                .find(|(from, _)| from == k)
                .map_or(*k, |(_, to)| to)
                .to_owned()
        })
        .collect();
    let mut update = PreferencesUpdate::new().url(&receiver.url_for("/hook"));
    for (key, name) in renames {
        update = update.key_name(key, name);
    }
    let saved = Saved::new(update);
    let form = saved.account();
    saved
        .update(&admin(), PreferencesUpdate::new().encoding(Encoding::Json))
        .unwrap();
    let json = saved.account();
    let expected: Vec<(String, String)> = sent_names
        .iter()
        .cloned()
        .zip(expected_values().map(str::to_owned))
        .collect();
    for &backend in BACKENDS {
        let seen = send(&harness, backend, &receiver, request_for(&form));
        assert_eq!(seen.form(), expected, "{backend:?}");

        let seen = send(&harness, backend, &receiver, request_for(&json));
        let Ordered(pairs) = serde_json::from_slice(&seen.body).unwrap();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, sent_names, "{backend:?}");
        assert_eq!(pairs[4].1, "+61 7 3105 1xxx");
        assert_eq!(pairs[2].1, serde_json::Value::Null);
    }
}

#[cfg(feature = "signing")]
#[test]
fn a_signature_is_over_the_exact_bytes_sent_with_renamed_keys_and_over_nothing_for_get() {
    use call_result_webhook::{limits::DEFAULT_SIGNATURE_TOLERANCE, signing};

    let receiver = Receiver::start();
    let harness = Setup::defaults().policy(loopback_policy()).build();
    let secret = signing::SigningSecret::generate().unwrap();
    let base = PreferencesUpdate::new()
        .url(&receiver.url_for("/hook?x=1"))
        .key_name("PhoneCalled", "phone")
        .signing_secret(secret.clone());
    let saved = Saved::new(base);
    let post = saved.account();
    saved
        .update(&admin(), PreferencesUpdate::new().method(Method::Get))
        .unwrap();
    let get = saved.account();
    let now = jiff::Timestamp::now().as_second();
    for &backend in BACKENDS {
        let seen = send(&harness, backend, &receiver, request_for(&post));
        assert!(seen.text().contains("&phone=%2B61+7+3105+1xxx&"));
        signing::verify(
            &seen.headers,
            &seen.body,
            std::slice::from_ref(&secret),
            DEFAULT_SIGNATURE_TOLERANCE,
            now,
        )
        .unwrap();

        let seen = send(&harness, backend, &receiver, request_for(&get));
        assert!(seen.body.is_empty());
        signing::verify(
            &seen.headers,
            b"",
            std::slice::from_ref(&secret),
            DEFAULT_SIGNATURE_TOLERANCE,
            now,
        )
        .unwrap();
    }
}

#[test]
fn get_sends_the_keys_after_the_urls_own_query_with_no_body() {
    let receiver = Receiver::start();
    let harness = Setup::defaults().policy(loopback_policy()).build();
    let account = account(
        PreferencesUpdate::new()
            .url(&receiver.url_for("/hook?x=1&source=dialer%20one"))
            .credentials("user", "passwd")
            .encoding(Encoding::Json)
            .method(Method::Get)
            .key_name("PhoneCalled", "phone"),
    );
    let mut expected: Vec<(String, String)> = vec![
        ("x".into(), "1".into()),
        ("source".into(), "dialer one".into()),
    ];
    expected.extend(
        PAYLOAD_KEYS
            .iter()
            .map(|k| if *k == "PhoneCalled" { "phone" } else { k })
            .zip(expected_values())
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    for &backend in BACKENDS {
        let seen = send(&harness, backend, &receiver, request_for(&account));
        assert_eq!(seen.method, http::Method::GET, "{backend:?}");
        let (path, query) = seen.target.split_once('?').expect("a query");
        assert_eq!(path, "/hook");
        // Strict: every pair is key=value, nothing left over, nothing percent-decoded twice.
        for pair in query.split('&') {
            assert!(pair.contains('='), "{pair:?} in {query}");
        }
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(pairs, expected, "{backend:?}");
        assert!(seen.body.is_empty(), "{backend:?}");
        assert_eq!(seen.header("content-type"), None, "{backend:?}");
        assert!(
            seen.header("content-length").is_none_or(|v| v == "0"),
            "{backend:?}"
        );
        assert_eq!(seen.header("authorization"), Some("Basic dXNlcjpwYXNzd2Q="));
    }
}

#[test]
fn refused_headers_are_refused_when_set_and_nothing_is_sent() {
    let receiver = Receiver::start();
    let url = receiver.url_for("/hook");
    let saved = Saved::new(PreferencesUpdate::new().url(&url).enabled(true));
    let before = format!("{:?}", saved.account().preferences());
    let refused: Vec<(&str, PreferencesUpdate)> = vec![
        (
            "Authorization",
            PreferencesUpdate::new().header("Authorization", "Bearer x"),
        ),
        (
            "content-type",
            PreferencesUpdate::new().header("content-type", "text/plain"),
        ),
        (
            "Content-Length",
            PreferencesUpdate::new().header("Content-Length", "0"),
        ),
        (
            "HOST",
            PreferencesUpdate::new().header("HOST", "evil.example"),
        ),
        (
            "Transfer-Encoding",
            PreferencesUpdate::new().header("Transfer-Encoding", "chunked"),
        ),
        (
            "Connection",
            PreferencesUpdate::new().header("Connection", "close"),
        ),
        (
            "User-Agent",
            PreferencesUpdate::new().header("User-Agent", "x"),
        ),
        (
            "webhook-id",
            PreferencesUpdate::new().header("webhook-id", "msg_x"),
        ),
        (
            "Webhook-Signature",
            PreferencesUpdate::new().secret_header("Webhook-Signature", "v1,x"),
        ),
        (
            "X-Api-Key",
            PreferencesUpdate::new().header("X-Api-Key", "v\r\nHost: evil"),
        ),
        (
            "X-Api-Key",
            PreferencesUpdate::new().secret_header("X-Api-Key", format!("{SHARED}\n")),
        ),
        (
            "X-Api-Key",
            PreferencesUpdate::new().header("X-Api-Key", "nul\0"),
        ),
        ("Host", PreferencesUpdate::new().api_key("Host", API_KEY)),
    ];
    for (name, update) in refused {
        let err = saved.update(&admin(), update).unwrap_err();
        match &err {
            Error::InvalidHeader { name: n, .. } => assert_eq!(n, name),
            other => panic!("{name}: {other:?}"),
        }
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("evil"),
            "{shown}"
        );
    }
    // Nothing changed, nothing was audited, nothing was sent.
    let account = saved.account();
    assert_eq!(format!("{:?}", account.preferences()), before);
    assert_eq!(account.audit_log().len(), 1);
    assert!(CustomHeader::new("X-Api-Key", "fine").is_ok());
    std::thread::sleep(Duration::from_millis(200));
    assert!(receiver.requests().is_empty());
    assert_eq!(receiver.connections(), 0);
}

#[test]
fn a_get_too_long_is_refused_at_submit_and_never_sent() {
    let receiver = Receiver::start();
    let webhooks = Webhooks::builder()
        .store(MemoryStore::new())
        .policy(loopback_policy())
        .build()
        .unwrap();
    let (acme, winter) = ids();
    switch_on(
        &webhooks,
        &acme,
        &winter,
        PreferencesUpdate::new()
            .url(&receiver.url_for("/hook?x=1"))
            .method(Method::Get),
    );
    let worker = webhooks
        .start_threads(UreqDispatcher::builder().build(), 1)
        .unwrap();

    // Each `&` becomes `%26`: 2 700 of them are over the cap once encoded, though far under
    // every field and body cap.
    let long = CallResult::builder()
        .reference("fits")
        .result_notes("&".repeat(2_700))
        .build();
    let err = webhooks
        .submit_blocking(&acme, &winter, long)
        .expect_err("too long for a GET");
    assert!(
        matches!(err, Error::UrlTooLong { size, limit } if size > limit && limit == MAX_GET_URL_LEN),
        "{err}"
    );

    // A result that fits goes, through the store and the worker, as a GET.
    let fits = CallResult::builder()
        .reference("fits")
        .result_notes("&".repeat(100))
        .build();
    assert!(
        webhooks
            .submit_blocking(&acme, &winter, fits)
            .unwrap()
            .is_accepted()
    );
    assert!(worker.wait_idle_blocking(Duration::from_secs(10)).unwrap());
    let seen = receiver.wait_for(1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    let seen_now = receiver.requests();
    assert_eq!(seen_now.len(), 1, "only the result that fits was sent");
    assert_eq!(seen[0].method, http::Method::GET);
    let query = seen[0].target.split_once('?').unwrap().1;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(pairs[0], ("x".into(), "1".into()));
    assert_eq!(pairs[8], ("ResultNotes".into(), "&".repeat(100)));
    worker.shutdown_blocking(Duration::from_secs(5)).unwrap();
}

#[test]
fn no_debug_or_error_shows_a_token_key_or_secret_header_value() {
    let update = || {
        PreferencesUpdate::new()
            .url("https://crm.example/hook")
            .bearer_token(TOKEN)
            .api_key("X-Api-Key", API_KEY)
            .secret_header("X-Shared-Key", SHARED)
            .header("X-Tenant", "acme")
    };
    let bearer = account(
        PreferencesUpdate::new()
            .url("https://crm.example/hook")
            .secret_header("X-Shared-Key", SHARED)
            .bearer_token(TOKEN),
    );
    let keyed = account(update());
    let header = CustomHeader::secret("X-Shared-Key", SHARED).unwrap();
    let mut shown = vec![
        format!("{:?} {:#?}", bearer.preferences(), bearer.preferences()),
        format!("{:?} {:#?}", keyed.preferences(), keyed.preferences()),
        format!("{bearer:?} {keyed:#?}"),
        format!("{:?}", keyed.audit_log()),
        format!("{:?} {:#?}", update(), update()),
        format!("{header:?} {:?}", header.value()),
        format!("{:?}", request_for(&bearer)),
        format!("{:?}", request_for(&keyed)),
    ];
    let errors = [
        Saved::new(PreferencesUpdate::new())
            .update(&Principal::user("mallory"), update())
            .unwrap_err(),
        Saved::new(PreferencesUpdate::new())
            .update(
                &admin(),
                PreferencesUpdate::new().bearer_token(format!("{TOKEN}\r\n")),
            )
            .unwrap_err(),
        Saved::new(PreferencesUpdate::new())
            .update(
                &admin(),
                PreferencesUpdate::new().api_key("X-Api-Key", format!("{API_KEY}\0")),
            )
            .unwrap_err(),
        CustomHeader::secret("X-Shared-Key", format!("{SHARED}\r\nX: y")).unwrap_err(),
        CustomHeader::secret(&format!("X-Shared-Key: {SHARED}"), "v").unwrap_err(),
    ];
    for err in &errors {
        shown.push(format!("{err} {err:?} {err:#?}"));
    }
    for text in &shown {
        for secret in [TOKEN, API_KEY, SHARED] {
            assert!(!text.contains(secret), "shows {secret}: {text}");
        }
    }
    // The audit names the fields.
    assert_eq!(
        keyed.audit_log()[0].fields,
        ["url", "auth_scheme", "headers", "token", "api_key_header"]
    );
    // The one way out, storage, does hold them: the search looked for text that is there.
    let keyed = Saved::new(update());
    let stored = keyed.stored_json();
    assert!(stored.contains(API_KEY) && stored.contains(SHARED));
    let (back, keyed) = (keyed.reopened(), keyed.account());
    assert_eq!(
        request_for(&back).headers()["x-api-key"],
        request_for(&keyed).headers()["x-api-key"]
    );
}
