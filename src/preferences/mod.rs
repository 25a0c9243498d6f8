//! Account-wide webhook preferences ("Settings > Preferences > WebHook"): what an account
//! chooses ([`Preferences`]), the receiver's URL ([`WebhookUrl`]), a change to them
//! ([`PreferencesUpdate`]), what is stored of them, and the audit record of every change.
//! Who may change them is [`Principal`]'s concern.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use jiff::tz::TimeZone;

use crate::auth::{AuthScheme, Credentials, Secret};
use crate::encoding::Encoding;
use crate::error::Result;
use crate::limits::DEFAULT_ATTEMPT_TIMEOUT;
use crate::payload::KeyNames;
use crate::signing::SigningSecret;

mod audit;
mod header;
mod method;
pub(crate) mod schedule;
mod stored;
#[cfg(test)]
mod tests;
mod update;
mod url;

pub use audit::AuditRecord;
pub use header::{CustomHeader, is_reserved_header};
pub(crate) use header::{check_header_count, check_header_name};
pub use method::Method;
pub use schedule::RetrySchedule;
pub(crate) use schedule::random_unit;
pub(crate) use stored::StoredPreferences;
pub use update::PreferencesUpdate;
pub use url::WebhookUrl;

/// Who may change preferences; kept here too, where it was first.
#[doc(no_inline)]
pub use crate::permissions::Principal;

/// The most signing secrets an account holds: the current one and, during a rotation, the
/// previous one.
const MAX_SIGNING_SECRETS: usize = 2;

/// One account's webhook preferences. Reading them back never shows the password or a signing
/// secret.
///
/// # Personal data in the payload
///
/// The product page promises every key with its value, so by default `PhoneCalled` is sent
/// exactly as dialled and `ResultNotes` in full. An account that does not want the contact's
/// number or the agent's notes to leave the dialer can ask for less
/// ([`PreferencesUpdate::mask_phone`], [`PreferencesUpdate::omit_result_notes`]): the number is
/// then sent masked like [`mask_phone`](crate::payload::mask_phone) (all but the last three characters
/// become `*`), and the notes as unknown (empty in a form body, `null` in JSON). Both apply to
/// call results submitted after the change; a body already accepted is sent as it was fixed.
/// Whatever these say, `PhoneCalled` never appears unmasked in a log line, an event or a
/// `Debug` output of the crate.
///
/// # What real receivers ask for
///
/// Beside the page's own settings, an account may choose how it authenticates
/// ([`AuthScheme`]: none, Basic, the page's slash form, `Bearer <token>`, or an API key in a
/// header it names), add up to 16 custom headers (some secret), rename any of the ten keys,
/// and send a `GET` with the keys in the query instead of a `POST`
/// ([`Method`]). Each is set by an administrator through [`PreferencesUpdate`] and audited by
/// its field name (`auth_scheme`, `token`, `api_key_header`, `headers`, `key_names`,
/// `method`), never by its value; tokens, keys and secret header values are never shown.
#[derive(Clone)]
pub struct Preferences {
    enabled: bool,
    url: Option<WebhookUrl>,
    credentials: Option<Credentials>,
    auth_scheme: AuthScheme,
    encoding: Encoding,
    time_zone: TimeZone,
    attempt_timeout: Duration,
    retry_schedule: RetrySchedule,
    /// Newest first; at most [`MAX_SIGNING_SECRETS`].
    signing_secrets: Vec<SigningSecret>,
    mask_phone: bool,
    omit_result_notes: bool,
    new_campaigns_enabled: bool,
    method: Method,
    key_names: KeyNames,
    headers: Vec<CustomHeader>,
    /// The bearer token or API key.
    token: Option<Secret>,
    api_key_header: Option<HeaderName>,
    /// Derived from scheme, credentials, token and API key header when they change, so each
    /// request only clones it.
    auth_header: Option<(HeaderName, HeaderValue)>,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            enabled: false,
            url: None,
            credentials: None,
            auth_scheme: AuthScheme::default(),
            encoding: Encoding::default(),
            time_zone: TimeZone::UTC,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            retry_schedule: RetrySchedule::default(),
            signing_secrets: Vec::new(),
            mask_phone: false,
            omit_result_notes: false,
            new_campaigns_enabled: false,
            method: Method::default(),
            key_names: KeyNames::default(),
            headers: Vec::new(),
            token: None,
            api_key_header: None,
            auth_header: None,
        }
    }
}

impl Preferences {
    /// The defaults with `update` applied: a value to encode a body with
    /// ([`EncodedBody::encode`](crate::request::EncodedBody::encode)) and build one request
    /// from ([`build_request`](crate::request::build_request)), for a program that sends
    /// without [`Webhooks`](crate::Webhooks).
    ///
    /// Nothing is saved, audited or permission-checked: these are not an account's settings.
    /// To change an account's settings, which are saved and which every delivery uses, call
    /// [`Webhooks::update_preferences`](crate::Webhooks::update_preferences).
    ///
    /// # Errors
    ///
    /// The first invalid value of `update`: [`Error::InvalidConfig`](crate::Error::InvalidConfig), [`Error::InvalidUrl`](crate::Error::InvalidUrl)
    /// or [`Error::InvalidHeader`](crate::Error::InvalidHeader).
    ///
    /// # Examples
    ///
    /// ```
    /// use call_result_webhook::{PreferencesUpdate, preferences::Preferences};
    ///
    /// let preferences = Preferences::from_update(
    ///     PreferencesUpdate::new().enabled(true).url("https://crm.example/hook").credentials("dialer", "s3cret"),
    /// )?;
    /// assert!(preferences.is_configured() && preferences.has_password());
    /// assert!(!format!("{preferences:?}").contains("s3cret"));
    /// # Ok::<(), call_result_webhook::Error>(())
    /// ```
    pub fn from_update(update: PreferencesUpdate) -> Result<Preferences> {
        Preferences::default()
            .with_update(update)
            .map(|(preferences, _)| preferences)
    }

    /// "Enable Web Hook".
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    /// The receiver's URL, if set.
    pub fn url(&self) -> Option<&WebhookUrl> {
        self.url.as_ref()
    }
    /// The user name sent, if credentials are set.
    pub fn username(&self) -> Option<&str> {
        self.credentials.as_ref().map(Credentials::username)
    }
    /// Whether a password is set (its value is never shown).
    pub fn has_password(&self) -> bool {
        self.credentials
            .as_ref()
            .is_some_and(|c| !c.password().is_empty())
    }
    /// How the account authenticates: which header carries what (see [`AuthScheme`]).
    pub fn auth_scheme(&self) -> AuthScheme {
        self.auth_scheme
    }
    /// Whether a bearer token or API key is set (its value is never shown).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
    /// The header an API key is sent in ([`AuthScheme::ApiKey`]), in lower case, if set.
    pub fn api_key_header(&self) -> Option<&str> {
        self.api_key_header.as_ref().map(HeaderName::as_str)
    }
    /// The custom headers sent with every request, in the order they were first set.
    pub fn headers(&self) -> &[CustomHeader] {
        &self.headers
    }
    /// The names the ten keys are sent under.
    pub fn key_names(&self) -> &KeyNames {
        &self.key_names
    }
    /// Whether call results go as a `POST` body (the default) or a `GET` query.
    pub fn method(&self) -> Method {
        self.method
    }
    /// The body encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
    /// The account's time zone, used for `CallStart` and `CallEnd`.
    pub fn time_zone(&self) -> &TimeZone {
        &self.time_zone
    }
    /// The IANA name of the account's time zone.
    pub fn time_zone_name(&self) -> &str {
        self.time_zone.iana_name().unwrap_or("UTC")
    }
    /// The whole-attempt time limit (1 to 30 s, default 15 s).
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }
    /// When failed deliveries are tried again (the default: ten attempts over about three days).
    pub fn retry_schedule(&self) -> &RetrySchedule {
        &self.retry_schedule
    }
    /// Whether a URL is set, i.e. there is somewhere to send to.
    pub fn is_configured(&self) -> bool {
        self.url.is_some()
    }
    /// How many signing secrets are set: 0 (requests are not signed), 1, or 2 during a rotation
    /// (both signatures are sent). The secrets themselves are never shown.
    pub fn signing_secret_count(&self) -> usize {
        self.signing_secrets.len()
    }
    /// Whether `PhoneCalled` is sent masked (all but the last three characters as `*`).
    /// Off by default.
    pub fn mask_phone(&self) -> bool {
        self.mask_phone
    }
    /// Whether `ResultNotes` is left out (sent as unknown). Off by default.
    pub fn omit_result_notes(&self) -> bool {
        self.omit_result_notes
    }
    /// Whether a campaign whose own switch was never set counts as switched on. Off by
    /// default, as on the product page: a new campaign's "Enable WebHook" starts off.
    pub fn new_campaigns_enabled(&self) -> bool {
        self.new_campaigns_enabled
    }

    /// The authentication header's value, whatever its name.
    #[cfg(test)]
    pub(crate) fn authorization(&self) -> Option<&HeaderValue> {
        self.auth_header.as_ref().map(|(_, v)| v)
    }

    /// The authentication header: `Authorization`, or the API key's own header.
    pub(crate) fn auth_header(&self) -> Option<&(HeaderName, HeaderValue)> {
        self.auth_header.as_ref()
    }

    pub(crate) fn signing_secrets(&self) -> &[SigningSecret] {
        &self.signing_secrets
    }

    /// Every secret value a request of this account carries, as a receiver could echo it back:
    /// the authentication header's value and its credential alone (after the scheme word),
    /// the password, the token, and the values of secret custom headers. What the attempts
    /// log blanks out of a receiver's answer.
    pub(crate) fn secret_values(&self) -> Vec<&[u8]> {
        let mut secrets = Vec::new();
        if let Some((_, value)) = &self.auth_header {
            let value = value.as_bytes();
            secrets.push(value);
            if let Some(space) = value.iter().position(|b| *b == b' ') {
                secrets.push(&value[space + 1..]);
            }
        }
        if let Some(c) = &self.credentials {
            secrets.push(c.password().expose_secret().as_bytes());
        }
        if let Some(token) = &self.token {
            secrets.push(token.expose_secret().as_bytes());
        }
        for h in self.headers.iter().filter(|h| h.is_secret()) {
            secrets.push(h.header_value().as_bytes());
        }
        // The longest first: a credential inside a longer header value goes with it.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
    }
}

impl fmt::Debug for Preferences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Preferences")
            .field("enabled", &self.enabled)
            .field("url", &self.url)
            .field("username", &self.username())
            .field("password", &self.has_password().then_some("[redacted]"))
            .field("auth_scheme", &self.auth_scheme)
            .field("encoding", &self.encoding)
            .field("time_zone", &self.time_zone_name())
            .field("attempt_timeout", &self.attempt_timeout)
            .field("retry_schedule", &self.retry_schedule)
            .field("signing_secrets", &self.signing_secrets.len())
            .field("mask_phone", &self.mask_phone)
            .field("omit_result_notes", &self.omit_result_notes)
            .field("new_campaigns_enabled", &self.new_campaigns_enabled)
            .field("method", &self.method)
            .field("key_names", &self.key_names)
            .field("headers", &self.headers)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("api_key_header", &self.api_key_header)
            .finish()
    }
}
