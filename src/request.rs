//! Preferences + call result + delivery id -> the exact `http::Request` to send. No I/O: the same
//! inputs give the same bytes.
//!
//! # What an account can choose
//!
//! - **Method**: `POST` with the keys in the body (the default), or `GET` with them appended to
//!   the URL's own query ([`Method`]).
//! - **Authentication**: see [`AuthScheme`](crate::auth::AuthScheme).
//! - **Custom headers**: up to [`MAX_CUSTOM_HEADERS`](crate::limits::MAX_CUSTOM_HEADERS) name/value pairs ([`CustomHeader`]), some
//!   of them secret. A header the crate sets itself is refused ([`is_reserved_header`]).
//! - **Key names**: any of the ten keys renamed ([`KeyNames`](crate::payload::KeyNames)).
//!
//! # Limits
//!
//! Every call result is checked when it is encoded, that is when it is submitted, so an
//! oversized one is refused with a clear error before anything is stored or sent: each text
//! field at most [`MAX_FIELD_BYTES`] (1 KiB) of UTF-8, `ResultNotes` at most [`MAX_NOTES_BYTES`]
//! (32 KiB), and the whole encoded body at most [`MAX_BODY_BYTES`] (64 KiB; percent-encoding can
//! triple a field). Header values are built only from checked inputs: credentials refuse CR, LF
//! and NUL, a [`DeliveryId`] holds only `A-Z a-z 0-9 _ - .`, the timestamp is a number and the
//! signature is base64, so no value the crate builds can split or end a header.

use crate::limits::{MAX_BODY_BYTES, MAX_FIELD_BYTES, MAX_NOTES_BYTES};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT as USER_AGENT_HEADER};
use http::{HeaderValue, Request};
use jiff::Timestamp;

#[doc(no_inline)]
pub use crate::encoding::EncodedBody;
use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::ids::DeliveryId;
use crate::payload::{CallResult, PAYLOAD_KEYS, mask_phone};
use crate::preferences::{Preferences, WebhookUrl};

// Where accounts choose them, in `preferences`; kept here too, where they were first.
#[doc(no_inline)]
pub use crate::preferences::{CustomHeader, Method, is_reserved_header};
use crate::signing::header::WEBHOOK_ID;

/// The `User-Agent` every request carries: `call-result-webhook/<version>`.
pub const USER_AGENT: &str = concat!("call-result-webhook/", env!("CARGO_PKG_VERSION"));

/// A request extension: the whole-attempt time limit for this one request.
///
/// Backends ([`Dispatcher`](crate::Dispatcher)s) use it in place of their configured default when
/// present; [`build_request_at`] sets it to the account's attempt timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimeout(pub Duration);

// Encoding a call result under an account's preferences sits here, beside the request it
// becomes: `encoding` below knows bytes and encodings only.
impl EncodedBody {
    /// Encodes `call` under the account's encoding, key names, time zone and personal-data
    /// options (`PhoneCalled` masked and `ResultNotes` left out when the account asks, see
    /// [`Preferences`]), after checking each field as it will be sent against its cap
    /// ([`MAX_FIELD_BYTES`], [`MAX_NOTES_BYTES`]) and the whole body against [`MAX_BODY_BYTES`].
    ///
    /// For an account sending [`Method::Get`], the keys are form-encoded as
    /// [`Encoding::Query`], to be appended to the URL's query, and the account's URL with
    /// that query must fit in [`MAX_GET_URL_LEN`](crate::limits::MAX_GET_URL_LEN).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCallResult`] naming the field when a field is over its cap,
    /// [`Error::BodyTooLarge`] when the encoded body is over [`MAX_BODY_BYTES`], and
    /// [`Error::UrlTooLong`] when a `GET`'s URL with the query would be over
    /// [`MAX_GET_URL_LEN`](crate::limits::MAX_GET_URL_LEN). Nothing is ever truncated.
    pub fn encode(call: &CallResult, preferences: &Preferences) -> Result<EncodedBody> {
        let mut fields = call.fields(preferences.time_zone());
        if preferences.mask_phone()
            && let Some(masked) = fields.get("PhoneCalled").map(mask_phone)
        {
            fields.set("PhoneCalled", Some(masked));
        }
        if preferences.omit_result_notes() {
            fields.set("ResultNotes", None);
        }
        // Only lengths matter here: the bytes, not the text, so nothing is validated twice.
        for (&field, value) in PAYLOAD_KEYS.iter().zip(fields.bytes()) {
            let cap = if field == "ResultNotes" {
                MAX_NOTES_BYTES
            } else {
                MAX_FIELD_BYTES
            };
            if let Some(v) = value.filter(|v| v.len() > cap) {
                return Err(Error::InvalidCallResult {
                    field,
                    reason: format!("{} bytes, over the cap of {cap}", v.len()),
                });
            }
        }
        let encoding = match preferences.method() {
            Method::Post => preferences.encoding(),
            Method::Get => Encoding::Query,
        };
        let bytes = encoding.encode_named(&fields, preferences.key_names());
        if bytes.len() > MAX_BODY_BYTES {
            return Err(Error::BodyTooLarge {
                size: bytes.len(),
                limit: MAX_BODY_BYTES,
            });
        }
        if encoding == Encoding::Query
            && let Some(url) = preferences.url()
        {
            url.query_separator(bytes.len())?;
        }
        Ok(EncodedBody::from_parts(bytes, encoding))
    }
}

/// Builds the request for one attempt made now, by the system clock: [`build_request_at`] with
/// [`Timestamp::now`].
///
/// # Errors
///
/// As [`build_request_at`].
///
/// # Examples
///
/// ```
/// use call_result_webhook::{
///     CallResult, DeliveryId, PreferencesUpdate, preferences::Preferences,
///     request::{EncodedBody, build_request},
/// };
///
/// let preferences = Preferences::from_update(
///     PreferencesUpdate::new().enabled(true).url("https://crm.example/hook").credentials("user", "passwd"),
/// )?;
/// let call = CallResult::builder().reference("123").build();
/// let body = EncodedBody::encode(&call, &preferences)?;
/// let id = DeliveryId::new("msg_example")?;
/// let request = build_request(&preferences, &id, &body)?;
///
/// assert_eq!(request.method(), "POST");
/// assert_eq!(request.uri(), "https://crm.example/hook");
/// assert_eq!(request.headers()["authorization"], "Basic dXNlcjpwYXNzd2Q=");
/// assert_eq!(request.headers()["content-type"], "application/x-www-form-urlencoded");
/// assert_eq!(request.headers()["webhook-id"], "msg_example");
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
pub fn build_request(
    preferences: &Preferences,
    id: &DeliveryId,
    body: &EncodedBody,
) -> Result<Request<Bytes>> {
    build_request_at(preferences, id, body, Timestamp::now())
}

/// Builds the request for one attempt made at `now`: `POST` to the account's current URL, with
/// `Content-Type` for the body's encoding, the account's current authentication header
/// ([`AuthScheme`](crate::auth::AuthScheme): `Authorization`, an API key's own header, or
/// none), `webhook-id`, `User-Agent`, and the account's custom headers (secret ones marked
/// sensitive).
///
/// A body encoded for a `GET` ([`Encoding::Query`]) is sent as `GET` to the account's current
/// URL with the query appended after the URL's own (`?x=1` becomes `?x=1&CampaignName=...`),
/// with no body and no `Content-Type`.
///
/// When the account has signing secrets, it also carries
/// `webhook-timestamp` (`now` in Unix seconds) and `webhook-signature`: one `v1,` signature per
/// secret over `webhook-id`, the timestamp and the exact body bytes, as Standard Webhooks
/// specifies. A `GET` has no body, so its signature is over the empty body: it proves the
/// sender and the time, **not the query**. The delivery worker passes its own clock's time, so
/// the timestamp is the attempt's. ([`DeliveryId`] admits no `.`, so every id signs
/// unambiguously.)
///
/// The account's attempt timeout travels as an [`AttemptTimeout`] extension for the backend.
///
/// # Errors
///
/// [`Error::NotConfigured`] when the account has no URL, [`Error::InvalidUrl`] when its URL
/// cannot be sent as an HTTP request target, [`Error::UrlTooLong`] when a `GET`'s URL with the
/// query is over [`MAX_GET_URL_LEN`](crate::limits::MAX_GET_URL_LEN) (the URL was changed after the call result was submitted),
/// and [`Error::Signature`] when the request cannot be signed (for example a timestamp before
/// 1970).
#[cfg_attr(
    feature = "signing",
    doc = r#"
# Examples

```
use call_result_webhook::{
    CallResult, DeliveryId, PreferencesUpdate, preferences::Preferences,
    limits::DEFAULT_SIGNATURE_TOLERANCE, request::{EncodedBody, build_request_at},
    signing::{SigningSecret, verify},
};
use jiff::Timestamp;

let secret = SigningSecret::generate()?;
let preferences = Preferences::from_update(
    PreferencesUpdate::new().url("https://crm.example/hook").signing_secret(secret.clone()),
)?;
let body = EncodedBody::encode(&CallResult::builder().build(), &preferences)?;
let at = Timestamp::from_second(1_700_000_000)?;
let request = build_request_at(&preferences, &DeliveryId::new("msg_1")?, &body, at)?;

assert_eq!(request.headers()["webhook-timestamp"], "1700000000");
// The receiver's side: the headers and the raw body verify with the same secret.
verify(request.headers(), request.body(), &[secret], DEFAULT_SIGNATURE_TOLERANCE, 1_700_000_030)?;
# Ok::<(), Box<dyn std::error::Error>>(())
```
"#
)]
pub fn build_request_at(
    preferences: &Preferences,
    id: &DeliveryId,
    body: &EncodedBody,
    now: Timestamp,
) -> Result<Request<Bytes>> {
    let url = preferences.url().ok_or_else(|| Error::NotConfigured {
        account: String::from("(this account)"),
    })?;
    let get = body.encoding() == Encoding::Query;
    let parse = |target: &str| -> Result<http::Uri> {
        target
            .parse()
            .map_err(|e: http::uri::InvalidUri| Error::url(e))
    };
    let (method, uri, sent) = if get {
        let target = get_url(url, body.bytes())?;
        let uri = http::Uri::try_from(target).map_err(Error::url)?;
        (http::Method::GET, uri, Bytes::new())
    } else {
        (
            http::Method::POST,
            parse(url.as_str())?,
            body.bytes().clone(),
        )
    };
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(sent.clone())
        .map_err(Error::url)?;
    let headers = request.headers_mut();
    if !get {
        headers.insert(CONTENT_TYPE, body.encoding().content_type());
    }
    headers.insert(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
    // DeliveryId only admits header-safe characters.
    headers.insert(
        WEBHOOK_ID,
        HeaderValue::from_str(id.as_str()).expect("delivery ids are header-safe"),
    );
    if let Some((name, value)) = preferences.auth_header() {
        headers.insert(name.clone(), value.clone());
    }
    // Reserved names are refused when set, so none of these replaces a header set above.
    for header in preferences.headers() {
        headers.insert(header.header_name().clone(), header.header_value().clone());
    }
    if !preferences.signing_secrets().is_empty() {
        crate::signing::sign_headers(
            headers,
            id.as_str(),
            now.as_second(),
            &sent,
            preferences.signing_secrets(),
        )?;
    }
    request
        .extensions_mut()
        .insert(AttemptTimeout(preferences.attempt_timeout()));
    Ok(request)
}

/// The account's URL with `query` appended after its own query, checked against
/// [`MAX_GET_URL_LEN`](crate::limits::MAX_GET_URL_LEN).
fn get_url(url: &WebhookUrl, query: &[u8]) -> Result<String> {
    let separator = url.query_separator(query.len())?;
    // The form encoding writes only ASCII.
    let query = std::str::from_utf8(query).map_err(|_| Error::url("the query is not ASCII"))?;
    Ok([url.as_str(), separator, query].concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Account;
    use crate::auth::AuthScheme;
    use crate::limits::MAX_GET_URL_LEN;
    use crate::preferences::{PreferencesUpdate, Principal};
    use http::header::AUTHORIZATION;

    fn account(update: PreferencesUpdate) -> Account {
        let mut a = Account::new("acme");
        a.update_preferences(&Principal::administrator("alice"), update)
            .unwrap();
        a
    }

    fn call() -> CallResult {
        CallResult::builder()
            .campaign_name("Winter Sale")
            .logged_at("2019-06-19T16:11:07Z".parse().unwrap())
            .reference("123")
            .build()
    }

    #[test]
    fn same_inputs_same_bytes_and_headers() {
        let a = account(
            PreferencesUpdate::new()
                .url("https://crm.example/h?x=1")
                .credentials("u", "p"),
        );
        let id = DeliveryId::new("msg_1").unwrap();
        let body = EncodedBody::encode(&call(), a.preferences()).unwrap();
        let r1 = build_request(a.preferences(), &id, &body).unwrap();
        let r2 = build_request(
            a.preferences(),
            &id,
            &EncodedBody::encode(&call(), a.preferences()).unwrap(),
        )
        .unwrap();
        assert_eq!(r1.body(), r2.body());
        assert_eq!(r1.headers(), r2.headers());
        assert_eq!(r1.uri(), "https://crm.example/h?x=1");
        assert_eq!(r1.headers()[USER_AGENT_HEADER], USER_AGENT);
        assert_eq!(
            r1.extensions().get::<AttemptTimeout>(),
            Some(&AttemptTimeout(crate::limits::DEFAULT_ATTEMPT_TIMEOUT))
        );
    }

    #[test]
    fn every_header_is_exact() {
        let a = account(
            PreferencesUpdate::new()
                .url("http://receiver.example:8080/calls")
                .credentials("user", "passwd")
                .auth_scheme(AuthScheme::Slash)
                .encoding(Encoding::Json),
        );
        let id = DeliveryId::new("msg_abc").unwrap();
        let body = EncodedBody::encode(&call(), a.preferences()).unwrap();
        let r = build_request(a.preferences(), &id, &body).unwrap();
        let h = r.headers();
        assert_eq!(h.len(), 4);
        assert_eq!(h[CONTENT_TYPE], "application/json");
        assert_eq!(h[AUTHORIZATION], "dXNlci9wYXNzd2Q=");
        assert_eq!(h["webhook-id"], "msg_abc");
    }

    #[test]
    fn custom_headers_and_auth_kinds_go_on_the_request() {
        let a = account(
            PreferencesUpdate::new()
                .url("https://crm.example/h")
                .header("X-Tenant", "acme")
                .secret_header("X-Shared", "s3cr3t")
                .api_key("X-Api-Key", "k3y"),
        );
        let body = EncodedBody::encode(&call(), a.preferences()).unwrap();
        let r = build_request(a.preferences(), &DeliveryId::generate(), &body).unwrap();
        let h = r.headers();
        assert_eq!(h["x-tenant"], "acme");
        assert!(!h["x-tenant"].is_sensitive());
        assert_eq!(h["x-shared"], "s3cr3t");
        assert!(h["x-shared"].is_sensitive());
        assert_eq!(h["x-api-key"], "k3y");
        assert!(h["x-api-key"].is_sensitive());
        assert!(h.get(AUTHORIZATION).is_none());
        // content-type, user-agent, webhook-id, the key, the two custom headers.
        assert_eq!(h.len(), 6);
    }

    #[test]
    fn get_appends_the_query_after_the_urls_own_with_no_body() {
        for (url, prefix) in [
            (
                "https://crm.example/h",
                "https://crm.example/h?CampaignName=",
            ),
            (
                "https://crm.example/h?",
                "https://crm.example/h?CampaignName=",
            ),
            (
                "https://crm.example/h?x=1&y",
                "https://crm.example/h?x=1&y&CampaignName=",
            ),
        ] {
            let a = account(
                PreferencesUpdate::new()
                    .url(url)
                    .method(Method::Get)
                    .encoding(Encoding::Json)
                    .key_name("PhoneCalled", "phone"),
            );
            let body = EncodedBody::encode(&call(), a.preferences()).unwrap();
            assert_eq!(body.encoding(), Encoding::Query);
            let r = build_request(a.preferences(), &DeliveryId::generate(), &body).unwrap();
            assert_eq!(r.method(), http::Method::GET);
            let uri = r.uri().to_string();
            assert!(uri.starts_with(prefix), "{uri}");
            assert!(uri.contains("&phone=&Reference=123&"), "{uri}");
            assert!(r.body().is_empty());
            assert!(r.headers().get(CONTENT_TYPE).is_none());
        }
    }

    #[test]
    fn a_get_too_long_is_refused_at_submit_and_at_an_attempt_after_the_url_grew() {
        let a = account(
            PreferencesUpdate::new()
                .url("https://crm.example/h")
                .method(Method::Get),
        );
        let notes = CallResult::builder()
            .result_notes("n".repeat(MAX_GET_URL_LEN))
            .build();
        assert!(matches!(
            EncodedBody::encode(&notes, a.preferences()),
            Err(Error::UrlTooLong {
                limit: MAX_GET_URL_LEN,
                ..
            })
        ));
        // The same result is fine as a POST body.
        let post = account(PreferencesUpdate::new().url("https://crm.example/h"));
        assert!(EncodedBody::encode(&notes, post.preferences()).is_ok());

        // Just under the cap at submit, over it once the URL grew.
        let base = "https://crm.example/h".len() + 1;
        let empty = EncodedBody::encode(&CallResult::builder().build(), a.preferences()).unwrap();
        let room = MAX_GET_URL_LEN - base - empty.bytes().len();
        let fits = CallResult::builder().result_notes("n".repeat(room)).build();
        let body = EncodedBody::encode(&fits, a.preferences()).unwrap();
        assert_eq!(base + body.bytes().len(), MAX_GET_URL_LEN);
        assert!(build_request(a.preferences(), &DeliveryId::generate(), &body).is_ok());
        let mut grown = a.clone();
        grown
            .update_preferences(
                &Principal::administrator("alice"),
                PreferencesUpdate::new().url("https://crm.example/hook"),
            )
            .unwrap();
        assert!(matches!(
            build_request(grown.preferences(), &DeliveryId::generate(), &body),
            Err(Error::UrlTooLong { .. })
        ));
    }

    #[test]
    fn no_credentials_no_authorization_header() {
        let a = account(PreferencesUpdate::new().url("https://crm.example/"));
        let body = EncodedBody::encode(&call(), a.preferences()).unwrap();
        let r = build_request(a.preferences(), &DeliveryId::generate(), &body).unwrap();
        assert!(r.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn unconfigured_account_cannot_build() {
        let a = Account::new("acme");
        let body = EncodedBody::encode(&call(), a.preferences()).unwrap();
        assert!(matches!(
            build_request(a.preferences(), &DeliveryId::generate(), &body),
            Err(Error::NotConfigured { .. })
        ));
    }

    #[test]
    fn field_and_body_caps() {
        let a = account(PreferencesUpdate::new().url("https://crm.example/"));
        let long = CallResult::builder()
            .reference("r".repeat(MAX_FIELD_BYTES + 1))
            .build();
        assert!(matches!(
            EncodedBody::encode(&long, a.preferences()),
            Err(Error::InvalidCallResult {
                field: "Reference",
                ..
            })
        ));
        let notes = CallResult::builder()
            .result_notes("n".repeat(MAX_NOTES_BYTES))
            .build();
        assert!(EncodedBody::encode(&notes, a.preferences()).is_ok());
        // Percent-encoding triples the size of notes made of reserved characters.
        let notes = CallResult::builder()
            .result_notes("&".repeat(MAX_NOTES_BYTES))
            .build();
        assert!(matches!(
            EncodedBody::encode(&notes, a.preferences()),
            Err(Error::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn pii_options_mask_the_phone_and_leave_the_notes_out() {
        let call = CallResult::builder()
            .phone_called("0731051234")
            .result_notes("card 4111 1111")
            .reference("123")
            .logged_at("2019-06-19T16:11:07Z".parse().unwrap())
            .build();
        let plain = account(PreferencesUpdate::new().url("https://crm.example/"));
        let body = EncodedBody::encode(&call, plain.preferences()).unwrap();
        let text = std::str::from_utf8(body.bytes()).unwrap();
        assert!(text.contains("PhoneCalled=0731051234&"), "{text}");
        assert!(text.contains("ResultNotes=card+4111+1111&"), "{text}");

        let private = account(
            PreferencesUpdate::new()
                .url("https://crm.example/")
                .mask_phone(true)
                .omit_result_notes(true),
        );
        let body = EncodedBody::encode(&call, private.preferences()).unwrap();
        let text = std::str::from_utf8(body.bytes()).unwrap();
        assert!(text.contains("PhoneCalled=*******234&"), "{text}");
        assert!(text.contains("&ResultNotes=&"), "{text}");
        assert!(
            !text.contains("4111") && !text.contains("0731051"),
            "{text}"
        );

        let json = account(
            PreferencesUpdate::new()
                .url("https://crm.example/")
                .encoding(Encoding::Json)
                .omit_result_notes(true),
        );
        let body = EncodedBody::encode(&call, json.preferences()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(body.bytes()).unwrap();
        assert_eq!(value["ResultNotes"], serde_json::Value::Null);
        assert_eq!(value["PhoneCalled"], "0731051234");
    }

    #[test]
    fn left_out_notes_are_not_held_to_their_cap() {
        let call = CallResult::builder()
            .result_notes("n".repeat(MAX_NOTES_BYTES + 1))
            .build();
        let a = account(PreferencesUpdate::new().url("https://crm.example/"));
        assert!(EncodedBody::encode(&call, a.preferences()).is_err());
        let omitting = account(
            PreferencesUpdate::new()
                .url("https://crm.example/")
                .omit_result_notes(true),
        );
        assert!(EncodedBody::encode(&call, omitting.preferences()).is_ok());
    }

    mod signing {
        use super::*;
        use crate::signing::{SigningSecret, sign};

        const AT: i64 = 1_700_000_000;

        fn at() -> Timestamp {
            Timestamp::from_second(AT).unwrap()
        }

        /// Runs in every build, `--no-default-features` included: a stored signing secret is
        /// never silently ignored.
        #[test]
        fn a_secret_signs_the_request_without_the_signing_feature() {
            let secret = SigningSecret::generate().unwrap();
            let signed = account(
                PreferencesUpdate::new()
                    .url("https://crm.example/")
                    .signing_secret(secret.clone()),
            );
            assert_eq!(signed.preferences().signing_secret_count(), 1);
            let body = EncodedBody::encode(&call(), signed.preferences()).unwrap();
            let id = DeliveryId::new("msg_1").unwrap();
            let r = build_request_at(signed.preferences(), &id, &body, at()).unwrap();
            assert_eq!(r.headers()["webhook-id"], "msg_1");
            assert_eq!(r.headers()["webhook-timestamp"], "1700000000");
            assert_eq!(
                r.headers()["webhook-signature"],
                sign("msg_1", AT, body.bytes(), &[secret])
            );
            assert!(
                r.headers()["webhook-signature"]
                    .to_str()
                    .unwrap()
                    .starts_with("v1,")
            );
        }

        /// The preferences' stored form keeps the secret, and the restored account still signs.
        #[test]
        fn a_stored_secret_still_signs_after_a_restore() {
            let secret = SigningSecret::generate().unwrap();
            let signed = account(
                PreferencesUpdate::new()
                    .url("https://crm.example/")
                    .signing_secret(secret.clone()),
            );
            let restored = Preferences::from_stored(&signed.preferences().to_stored()).unwrap();
            let body = EncodedBody::encode(&call(), &restored).unwrap();
            let id = DeliveryId::new("msg_2").unwrap();
            let r = build_request_at(&restored, &id, &body, at()).unwrap();
            assert_eq!(
                r.headers()["webhook-signature"],
                sign("msg_2", AT, body.bytes(), &[secret])
            );
        }

        #[cfg(feature = "signing")]
        #[test]
        fn unsigned_without_secrets_signed_with_them_at_the_given_time() {
            use crate::limits::DEFAULT_SIGNATURE_TOLERANCE;
            use crate::signing::verify;

            let plain = account(PreferencesUpdate::new().url("https://crm.example/"));
            let body = EncodedBody::encode(&call(), plain.preferences()).unwrap();
            let id = DeliveryId::new("msg_1").unwrap();
            let r = build_request_at(plain.preferences(), &id, &body, at()).unwrap();
            assert!(r.headers().get("webhook-signature").is_none());
            assert!(r.headers().get("webhook-timestamp").is_none());

            let secret = SigningSecret::generate().unwrap();
            let signed = account(
                PreferencesUpdate::new()
                    .url("https://crm.example/")
                    .signing_secret(secret.clone()),
            );
            let r = build_request_at(signed.preferences(), &id, &body, at()).unwrap();
            assert_eq!(r.headers()["webhook-timestamp"], "1700000000");
            assert_eq!(r.headers()["webhook-id"], "msg_1");
            assert_eq!(r.headers().get_all("webhook-id").iter().count(), 1);
            verify(
                r.headers(),
                r.body(),
                &[secret],
                DEFAULT_SIGNATURE_TOLERANCE,
                AT,
            )
            .unwrap();
        }
    }
}
