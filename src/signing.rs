//! Standard Webhooks signatures: HMAC-SHA256 over `"{msg_id}.{timestamp}.{body}"`.
//!
//! The sender adds three headers to every request:
//!
//! - `webhook-id`: the call result's delivery id, the same on every retry;
//! - `webhook-timestamp`: the attempt's time in Unix seconds;
//! - `webhook-signature`: `v1,<base64 of the HMAC-SHA256>` once per secret, space-separated, so
//!   that during a rotation both the old and the new secret sign and either one verifies.
//!
//! The signature covers the exact body bytes that are sent. Signing is always compiled in, so an
//! account's signing secret is never silently ignored. `verify` and `verify_now` (feature
//! `signing`) are the receiver's side of the same scheme: for customers whose receiving server
//! is written in Rust, and for our tests.
//!
//! Secrets are written `whsec_` + standard base64 of 24 to 64 random bytes. A [`SigningSecret`]
//! keeps its key bytes in memory that is zeroed when dropped, and never prints them.

use std::fmt;
use std::str::FromStr;
#[cfg(feature = "signing")]
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
#[cfg(feature = "signing")]
use http::HeaderName;
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// The Standard Webhooks header names: defined here once, used by the signer, the verifier
/// and the request builder.
pub(crate) mod header {
    use http::HeaderName;

    /// The delivery's id, stable across retries, for de-duplication.
    pub(crate) const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
    /// The attempt's time in Unix seconds.
    pub(crate) const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    /// Space-separated `v1,<base64>` signatures.
    pub(crate) const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
}

use header::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

/// The text every serialized secret starts with.
const PREFIX: &str = "whsec_";
/// The only signature version this module produces and checks (symmetric HMAC-SHA256).
const VERSION: &str = "v1";
/// Fewest key bytes a secret may have (192 bits, as the spec requires).
const MIN_KEY_LEN: usize = 24;
/// Most key bytes a secret may have (512 bits, as the spec allows).
const MAX_KEY_LEN: usize = 64;
/// Key bytes in a secret made by [`SigningSecret::generate`].
const GENERATED_KEY_LEN: usize = 32;
/// Bytes in an HMAC-SHA256 tag.
#[cfg(feature = "signing")]
const TAG_LEN: usize = 32;

fn error(message: impl Into<String>) -> Error {
    Error::Signature(message.into())
}

/// A Standard Webhooks signing secret: `whsec_` + base64 of 24 to 64 key bytes.
///
/// Parse one with [`str::parse`] or make a new one with [`SigningSecret::generate`]. The key bytes
/// are zeroed when the value is dropped. `Debug` and `Display` print `whsec_[redacted]`; the only
/// way to get the text back, for storage or to show an administrator once, is
/// [`SigningSecret::to_whsec`].
///
/// # Examples
///
/// ```
/// use call_result_webhook::signing::SigningSecret;
///
/// let secret: SigningSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
/// assert_eq!(secret.to_string(), "whsec_[redacted]");
/// assert_eq!(secret.to_whsec(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
///
/// assert!("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse::<SigningSecret>().is_err());
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[derive(Clone)]
pub struct SigningSecret {
    key: Zeroizing<Vec<u8>>,
}

impl SigningSecret {
    /// Makes a new secret from 32 bytes of the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`Error::Signature`] if the operating system's random source fails.
    pub fn generate() -> Result<Self> {
        let mut key = Zeroizing::new(vec![0u8; GENERATED_KEY_LEN]);
        getrandom::fill(&mut key)
            .map_err(|e| error(format!("the system random source failed: {e}")))?;
        Ok(SigningSecret { key })
    }

    /// The secret's text, `whsec_` + base64 of its key bytes, for storage.
    ///
    /// This is the one way to read the secret back out. The returned `String` is an ordinary,
    /// unzeroed copy: keep it no longer than needed.
    pub fn to_whsec(&self) -> String {
        let mut text = String::with_capacity(PREFIX.len() + self.key.len().div_ceil(3) * 4);
        text.push_str(PREFIX);
        STANDARD.encode_string(&*self.key, &mut text);
        text
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length; `new_from_slice` fails only for fixed-size-key MACs.
        <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC accepts keys of any length")
    }
}

impl PartialEq for SigningSecret {
    /// Compares the key bytes in time that depends only on their length.
    fn eq(&self, other: &Self) -> bool {
        // `ct_eq` on slices is false at once for different lengths, as a length is not secret.
        self.key.as_slice().ct_eq(other.key.as_slice()).into()
    }
}

impl Eq for SigningSecret {}

impl FromStr for SigningSecret {
    type Err = Error;

    /// Parses `whsec_` + standard base64 (with padding) of 24 to 64 bytes. Whitespace around the
    /// text, as left by a copy and paste, is ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Signature`] when the prefix is missing, the rest is not standard base64, or the
    /// key is shorter than 24 or longer than 64 bytes. The error never repeats the input.
    fn from_str(text: &str) -> Result<Self> {
        let encoded = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| error("a signing secret must start with `whsec_`"))?;
        let mut key = Zeroizing::new(Vec::with_capacity(encoded.len() / 4 * 3 + 3));
        // The decode error is dropped on purpose: it can name an offending character of the secret.
        STANDARD
            .decode_vec(encoded, &mut key)
            .map_err(|_| error("a signing secret must be `whsec_` followed by standard base64"))?;
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return Err(error(format!(
                "a signing secret must hold {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes, this one holds {}",
                key.len()
            )));
        }
        Ok(SigningSecret { key })
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_[redacted]")
    }
}

impl fmt::Display for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_[redacted]")
    }
}

/// An HMAC-SHA256 state that has absorbed `"{msg_id}.{timestamp}.{body}"`.
fn signed_content(
    secret: &SigningSecret,
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
) -> HmacSha256 {
    let mut mac = secret.mac();
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for one message: `v1,<base64>` once per secret, space-separated.
///
/// The signature is HMAC-SHA256 over `"{msg_id}.{timestamp}.{body}"`, with `timestamp` in Unix
/// seconds written in decimal and `body` the exact bytes that are sent. Pass two secrets during a
/// rotation and the value carries both signatures; a receiver holding either secret accepts it.
/// With no secrets the value is empty.
///
/// `sign` checks nothing about its inputs. The id must not contain `.` (a `.` would let another
/// id, timestamp and body produce the same signed text); [`sign_headers`] checks that and the
/// other header rules, and is what a sender should call.
///
/// # Examples
///
/// The example from the Standard Webhooks reference test suite:
///
/// ```
/// use call_result_webhook::signing::{SigningSecret, sign};
///
/// let secret: SigningSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
/// let value = sign(
///     "msg_p5jXN8AQM9LWM0D4loKWxJek",
///     1614265330,
///     br#"{"test": 2432232314}"#,
///     &[secret],
/// );
/// assert_eq!(value, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
pub fn sign(msg_id: &str, timestamp: i64, body: &[u8], secrets: &[SigningSecret]) -> HeaderValue {
    let timestamp = timestamp.to_string();
    let mut value = String::with_capacity(secrets.len() * (VERSION.len() + 2 + 44));
    for (i, secret) in secrets.iter().enumerate() {
        if i > 0 {
            value.push(' ');
        }
        let tag = signed_content(secret, msg_id, &timestamp, body)
            .finalize()
            .into_bytes();
        value.push_str(VERSION);
        value.push(',');
        STANDARD.encode_string(tag, &mut value);
    }
    // `v1`, `,`, spaces and the base64 alphabet are all valid header bytes.
    HeaderValue::try_from(value).expect("a signature header is visible ASCII")
}

/// Sets `webhook-id`, `webhook-timestamp` and `webhook-signature` on `headers`, replacing any
/// already there.
///
/// # Errors
///
/// [`Error::Signature`], leaving `headers` untouched, when `secrets` is empty, when `msg_id` is
/// empty or holds anything but visible ASCII other than `.`, or when `timestamp` is negative.
///
/// # Examples
///
/// ```
/// use call_result_webhook::signing::{SigningSecret, sign_headers};
/// use http::HeaderMap;
///
/// let secret = SigningSecret::generate()?;
/// let mut headers = HeaderMap::new();
/// sign_headers(&mut headers, "msg_1", 1_700_000_000, b"Result=Connected", &[secret])?;
/// assert_eq!(headers["webhook-id"], "msg_1");
/// assert_eq!(headers["webhook-timestamp"], "1700000000");
/// assert!(headers["webhook-signature"].to_str().unwrap().starts_with("v1,"));
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
pub fn sign_headers(
    headers: &mut HeaderMap,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    secrets: &[SigningSecret],
) -> Result<()> {
    if secrets.is_empty() {
        return Err(error("no signing secret to sign with"));
    }
    check_msg_id(msg_id)?;
    if timestamp < 0 {
        return Err(error("the webhook timestamp is before 1970"));
    }
    let id = HeaderValue::from_str(msg_id)
        .map_err(|_| error("the webhook id is not a valid header value"))?;
    let signature = sign(msg_id, timestamp, body, secrets);
    headers.insert(WEBHOOK_ID, id);
    headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
    headers.insert(WEBHOOK_SIGNATURE, signature);
    Ok(())
}

/// A webhook id both sides accept: non-empty visible ASCII without spaces or `.`. A `.` would
/// make the signed text `id.timestamp.body` ambiguous: an id of `msg.1700000000` and a body
/// starting `1700000600.` could be re-split to pass with a fresh timestamp.
fn check_msg_id(msg_id: &str) -> Result<()> {
    if msg_id.is_empty() {
        return Err(error("the webhook id is empty"));
    }
    if !msg_id.bytes().all(|b| b.is_ascii_graphic() && b != b'.') {
        return Err(error(
            "the webhook id must be visible ASCII without spaces or `.`",
        ));
    }
    Ok(())
}

/// The one value of a header that must appear exactly once, as text.
#[cfg(feature = "signing")]
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<&'h str> {
    let mut values = headers.get_all(name).iter();
    let value = values
        .next()
        .ok_or_else(|| error(format!("missing {name} header")))?;
    if values.next().is_some() {
        return Err(error(format!("more than one {name} header")));
    }
    let text = value
        .to_str()
        .map_err(|_| error(format!("{name} header is not visible ASCII")))?;
    if text.is_empty() {
        return Err(error(format!("{name} header is empty")));
    }
    Ok(text)
}

/// Checks a request's Standard Webhooks headers against its body: the receiver's side of [`sign`].
///
/// It passes when all of these hold:
///
/// - `webhook-id` and `webhook-timestamp` are each present once, and the timestamp is a decimal
///   number of Unix seconds;
/// - the timestamp is no more than `tolerance` (whole seconds) before or after `now` (Unix
///   seconds), so a captured request cannot be replayed later;
/// - at least one `v1,` signature in `webhook-signature` is the HMAC-SHA256 of
///   `"{id}.{timestamp}.{body}"` under one of `secrets`. Signatures of other versions are ignored,
///   and comparisons take constant time.
///
/// Otherwise it fails with an [`Error::Signature`] that says which check failed. A timestamp too
/// old and one too far in the future give different messages. No message holds a secret or the
/// expected signature. `body` must be the raw bytes received, before any parsing.
///
/// Use [`verify_now`] to check against the system clock.
///
/// # Errors
///
/// [`Error::Signature`] when `secrets` is empty, when a header is missing, repeated, empty or
/// malformed, when the timestamp is outside `tolerance`, or when no signature matches.
///
/// # Examples
///
/// ```
/// use call_result_webhook::{
///     limits::DEFAULT_SIGNATURE_TOLERANCE, signing::{SigningSecret, sign_headers, verify},
/// };
/// use http::HeaderMap;
///
/// let secret: SigningSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
/// let body = b"CampaignName=Winter+Sale&Result=Connected";
/// let mut headers = HeaderMap::new();
/// sign_headers(&mut headers, "msg_2", 1_700_000_000, body, &[secret.clone()])?;
///
/// // A receiver one minute later accepts it...
/// verify(&headers, body, &[secret.clone()], DEFAULT_SIGNATURE_TOLERANCE, 1_700_000_060)?;
/// // ...but not a changed body, nor the same request replayed an hour later.
/// assert!(verify(&headers, b"Result=Busy", &[secret.clone()], DEFAULT_SIGNATURE_TOLERANCE, 1_700_000_060).is_err());
/// assert!(verify(&headers, body, &[secret], DEFAULT_SIGNATURE_TOLERANCE, 1_700_003_600).is_err());
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[cfg(feature = "signing")]
#[cfg_attr(docsrs, doc(cfg(feature = "signing")))]
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SigningSecret],
    tolerance: Duration,
    now: i64,
) -> Result<()> {
    if secrets.is_empty() {
        return Err(error("no signing secret to verify with"));
    }
    let msg_id = single(headers, &WEBHOOK_ID)?;
    check_msg_id(msg_id)?;
    let timestamp_text = single(headers, &WEBHOOK_TIMESTAMP)?;

    // Digits only: no sign, no spaces, no exponent. The signed text is the header as received.
    if !timestamp_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(
            "webhook-timestamp header is not a whole number of Unix seconds",
        ));
    }
    let timestamp: i64 = timestamp_text
        .parse()
        .map_err(|_| error("webhook-timestamp header is out of range"))?;
    let age = i128::from(now) - i128::from(timestamp);
    let tolerance_secs = i128::from(tolerance.as_secs());
    if age > tolerance_secs {
        return Err(error(format!(
            "webhook-timestamp is too old: {age} s before now, the tolerance is {tolerance_secs} s"
        )));
    }
    if -age > tolerance_secs {
        return Err(error(format!(
            "webhook-timestamp is too new: {} s after now, the tolerance is {tolerance_secs} s",
            -age
        )));
    }

    let mut saw_signature_header = false;
    let mut saw_v1 = false;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for value in headers.get_all(&WEBHOOK_SIGNATURE) {
        saw_signature_header = true;
        let text = value
            .to_str()
            .map_err(|_| error("webhook-signature header is not visible ASCII"))?;
        for entry in text.split_ascii_whitespace() {
            let Some((version, encoded)) = entry.split_once(',') else {
                continue;
            };
            if version != VERSION {
                continue;
            }
            saw_v1 = true;
            // A v1 entry that is not base64 of a whole tag cannot match anything: skip it.
            match STANDARD.decode(encoded) {
                Ok(tag) if tag.len() == TAG_LEN => candidates.push(tag),
                _ => {}
            }
        }
    }
    if !saw_signature_header {
        return Err(error("missing webhook-signature header"));
    }
    if !saw_v1 {
        return Err(error("webhook-signature header has no `v1,` signature"));
    }

    for secret in secrets {
        let mac = signed_content(secret, msg_id, timestamp_text, body);
        for candidate in &candidates {
            // `verify_slice` compares in constant time (and fails at once on a wrong length).
            if mac.clone().verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(error("no v1 signature matches any of the signing secrets"))
}

/// [`verify`] against the system clock.
///
/// # Errors
///
/// As [`verify`]: [`Error::Signature`] naming the check that failed.
///
/// # Examples
///
/// ```
/// use call_result_webhook::{
///     limits::DEFAULT_SIGNATURE_TOLERANCE, signing::{SigningSecret, sign_headers, verify_now},
/// };
/// use http::HeaderMap;
///
/// let secret = SigningSecret::generate()?;
/// let now = std::time::SystemTime::now()
///     .duration_since(std::time::UNIX_EPOCH)
///     .unwrap()
///     .as_secs() as i64;
/// let mut headers = HeaderMap::new();
/// sign_headers(&mut headers, "msg_3", now, b"{}", &[secret.clone()])?;
/// verify_now(&headers, b"{}", &[secret], DEFAULT_SIGNATURE_TOLERANCE)?;
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[cfg(feature = "signing")]
#[cfg_attr(docsrs, doc(cfg(feature = "signing")))]
pub fn verify_now(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SigningSecret],
    tolerance: Duration,
) -> Result<()> {
    verify(
        headers,
        body,
        secrets,
        tolerance,
        jiff::Timestamp::now().as_second(),
    )
}

#[cfg(test)]
mod tests;
