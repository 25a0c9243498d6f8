//! Preferences + call result + delivery id -> the exact `http::Request` to send. No I/O: the same
//! inputs give the same bytes.
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
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT as USER_AGENT_HEADER};
use http::{HeaderValue, Method, Request};
use jiff::Timestamp;

use crate::dispatch::AttemptTimeout;
use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::ids::DeliveryId;
use crate::payload::{CallResult, PAYLOAD_KEYS, mask_phone};
use crate::preferences::Preferences;
use crate::signing::header::WEBHOOK_ID;

/// The `User-Agent` every request carries: `call-result-webhook/<version>`.
pub const USER_AGENT: &str = concat!("call-result-webhook/", env!("CARGO_PKG_VERSION"));

/// The body of one delivery: the exact bytes every attempt sends, fixed when the call result
/// is submitted, and the encoding that made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBody {
    bytes: Bytes,
    encoding: Encoding,
}

impl EncodedBody {
    /// Encodes `call` under the account's encoding, time zone and personal-data options
    /// (`PhoneCalled` masked and `ResultNotes` left out when the account asks, see
    /// [`Preferences`]), after checking each field as it will be sent against its cap
    /// ([`MAX_FIELD_BYTES`], [`MAX_NOTES_BYTES`]) and the whole body against [`MAX_BODY_BYTES`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCallResult`] naming the field when a field is over its cap, and
    /// [`Error::BodyTooLarge`] when the encoded body is over [`MAX_BODY_BYTES`].
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
        let encoding = preferences.encoding();
        let bytes = encoding.encode(&fields);
        if bytes.len() > MAX_BODY_BYTES {
            return Err(Error::BodyTooLarge {
                size: bytes.len(),
                limit: MAX_BODY_BYTES,
            });
        }
        Ok(EncodedBody { bytes, encoding })
    }

    /// A body restored from storage.
    pub fn from_parts(bytes: Bytes, encoding: Encoding) -> EncodedBody {
        EncodedBody { bytes, encoding }
    }

    /// The bytes sent.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The encoding that made them.
    pub fn encoding(&self) -> Encoding {
        self.encoding
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
///     CallResult, DeliveryId, PreferencesUpdate, Principal, account::Account,
///     request::{EncodedBody, build_request},
/// };
///
/// let mut account = Account::new("acme");
/// account.update_preferences(
///     &Principal::administrator("alice"),
///     PreferencesUpdate::new().enabled(true).url("https://crm.example/hook").credentials("user", "passwd"),
/// )?;
/// let call = CallResult::builder().reference("123").build();
/// let body = EncodedBody::encode(&call, account.preferences())?;
/// let id = DeliveryId::new("msg_example")?;
/// let request = build_request(account.preferences(), &id, &body)?;
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
/// `Content-Type` for the body's encoding, `Authorization` from the account's current
/// credentials (none if there are none), `webhook-id`, and `User-Agent`.
///
/// When the account has signing secrets, it also carries
/// `webhook-timestamp` (`now` in Unix seconds) and `webhook-signature`: one `v1,` signature per
/// secret over `webhook-id`, the timestamp and the exact body bytes, as Standard Webhooks
/// specifies. The delivery worker passes its own clock's time, so the timestamp is the
/// attempt's. ([`DeliveryId`] admits no `.`, so every id signs unambiguously.)
///
/// The account's attempt timeout travels as an [`AttemptTimeout`] extension for the backend.
///
/// # Errors
///
/// [`Error::NotConfigured`] when the account has no URL, [`Error::InvalidUrl`] when its URL
/// cannot be sent as an HTTP request target, and [`Error::Signature`] when the request cannot
/// be signed (for example a timestamp before 1970).
#[cfg_attr(
    feature = "signing",
    doc = r#"
# Examples

```
use call_result_webhook::{
    CallResult, DeliveryId, PreferencesUpdate, Principal, account::Account,
    limits::DEFAULT_SIGNATURE_TOLERANCE, request::{EncodedBody, build_request_at},
    signing::{SigningSecret, verify},
};
use jiff::Timestamp;

let secret = SigningSecret::generate()?;
let mut account = Account::new("acme");
account.update_preferences(
    &Principal::administrator("alice"),
    PreferencesUpdate::new().url("https://crm.example/hook").signing_secret(secret.clone()),
)?;
let body = EncodedBody::encode(&CallResult::builder().build(), account.preferences())?;
let at = Timestamp::from_second(1_700_000_000)?;
let request = build_request_at(account.preferences(), &DeliveryId::new("msg_1")?, &body, at)?;

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
    let uri: http::Uri = url
        .as_str()
        .parse()
        .map_err(|e: http::uri::InvalidUri| Error::url(e))?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .body(body.bytes.clone())
        .map_err(Error::url)?;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, body.encoding.content_type());
    headers.insert(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
    // DeliveryId only admits header-safe characters.
    headers.insert(
        WEBHOOK_ID,
        HeaderValue::from_str(id.as_str()).expect("delivery ids are header-safe"),
    );
    if let Some(auth) = preferences.authorization() {
        headers.insert(AUTHORIZATION, auth.clone());
    }
    if !preferences.signing_secrets().is_empty() {
        crate::signing::sign_headers(
            headers,
            id.as_str(),
            now.as_second(),
            &body.bytes,
            preferences.signing_secrets(),
        )?;
    }
    request
        .extensions_mut()
        .insert(AttemptTimeout(preferences.attempt_timeout()));
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Account;
    use crate::auth::AuthScheme;
    use crate::preferences::{PreferencesUpdate, Principal};

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
