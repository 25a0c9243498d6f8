//! Preferences + call result + delivery id -> the exact `http::Request` to send. No I/O: the same
//! inputs give the same bytes.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT as USER_AGENT_HEADER};
use http::{HeaderName, HeaderValue, Method, Request};

use crate::dispatch::AttemptTimeout;
use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::ids::DeliveryId;
use crate::payload::{CallResult, PAYLOAD_KEYS};
use crate::preferences::Preferences;

/// The `User-Agent` every request carries: `call-result-webhook/<version>`.
pub const USER_AGENT: &str = concat!("call-result-webhook/", env!("CARGO_PKG_VERSION"));

/// The delivery's id, parsed once rather than on every request.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");

/// The cap on `ResultNotes`, in bytes of UTF-8.
pub const MAX_NOTES_BYTES: usize = 32 * 1024;
/// The cap on every other text field, in bytes of UTF-8.
pub const MAX_FIELD_BYTES: usize = 1024;
/// The cap on the whole encoded body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body of one delivery: the exact bytes every attempt sends, fixed when the call result
/// is submitted, and the encoding that made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBody {
    bytes: Bytes,
    encoding: Encoding,
}

impl EncodedBody {
    /// Encodes `call` under the account's encoding and time zone, after checking each field
    /// against its cap ([`MAX_FIELD_BYTES`], [`MAX_NOTES_BYTES`]) and the whole body against
    /// [`MAX_BODY_BYTES`].
    pub fn encode(call: &CallResult, preferences: &Preferences) -> Result<EncodedBody> {
        let fields = call.fields(preferences.time_zone());
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

/// Builds the request for one attempt: `POST` to the account's current URL, with
/// `Content-Type` for the body's encoding, `Authorization` from the account's current
/// credentials (none if there are none), `webhook-id`, and `User-Agent`.
///
/// The account's attempt timeout travels as an [`AttemptTimeout`] extension for the backend.
///
/// # Examples
///
/// ```
/// use call_result_webhook::{build_request, Account, CallResult, DeliveryId, EncodedBody,
///     PreferencesUpdate, Principal};
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
            Some(&AttemptTimeout(crate::preferences::DEFAULT_ATTEMPT_TIMEOUT))
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
}
