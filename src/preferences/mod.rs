//! Account-wide webhook preferences ("Settings > Preferences > WebHook"), who may change them,
//! and the audit record of every change.

use crate::limits::{DEFAULT_ATTEMPT_TIMEOUT, MAX_GET_URL_LEN, MAX_URL_LEN};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::auth::{self, AuthScheme, Credentials, Secret};
use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::payload::KeyNames;
use crate::signing::SigningSecret;

mod header;
mod method;
pub(crate) mod schedule;

pub use header::{CustomHeader, is_reserved_header};
pub(crate) use header::{check_header_count, check_header_name};
pub use method::Method;
pub use schedule::RetrySchedule;
pub(crate) use schedule::random_unit;

/// The most signing secrets an account holds: the current one and, during a rotation, the
/// previous one.
const MAX_SIGNING_SECRETS: usize = 2;

/// The receiver's URL: parsed and checked when set (http or https, a host, no user name or
/// password inside it, no fragment, at most [`MAX_URL_LEN`] bytes).
///
/// Which schemes and addresses are acceptable to *connect* to is decided later, where the
/// connection is made, by the deployment's URL policy.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    /// Parses and checks a webhook URL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] when the text is longer than [`MAX_URL_LEN`], does not parse, is
    /// not `http` or `https`, has no host, or carries a user name, password or fragment. The
    /// error never repeats the URL (it may hold a token).
    pub fn parse(input: &str) -> Result<Self> {
        if input.len() > MAX_URL_LEN {
            return Err(Error::url(format!("longer than {MAX_URL_LEN} bytes")));
        }
        let url = url::Url::parse(input.trim()).map_err(|e| Error::url(e.to_string()))?;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(Error::url(format!(
                    "scheme `{other}` is not allowed: use http or https"
                )));
            }
        }
        if url.host().is_none() {
            return Err(Error::url("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::url(
                "user name or password in the URL: set them as the account's credentials",
            ));
        }
        if url.fragment().is_some() {
            return Err(Error::url("a fragment (#...) is never sent; remove it"));
        }
        Ok(WebhookUrl(url))
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parsed URL (host, port, scheme...).
    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    /// The host as written after normalisation (`http://2130706433/` has host `127.0.0.1`).
    pub fn host_str(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// What goes between this URL and a query of `query_len` bytes appended after its own
    /// (`?`, `&` or nothing), once the whole is known to fit [`MAX_GET_URL_LEN`].
    pub(crate) fn query_separator(&self, query_len: usize) -> Result<&'static str> {
        let separator = match self.0.query() {
            None => "?",
            Some("") => "",
            Some(_) => "&",
        };
        let size = self.as_str().len() + separator.len() + query_len;
        if size > MAX_GET_URL_LEN {
            return Err(Error::UrlTooLong {
                size,
                limit: MAX_GET_URL_LEN,
            });
        }
        Ok(separator)
    }
}

impl fmt::Debug for WebhookUrl {
    /// Shows scheme, host, port and path; the query may carry a token and is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &self.0;
        write!(f, "{}://{}", u.scheme(), u.host_str().unwrap_or_default())?;
        if let Some(port) = u.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(u.path())?;
        if u.query().is_some() {
            f.write_str("?[redacted]")?;
        }
        Ok(())
    }
}

/// Who is asking for a change. Only a principal with full administrative permission may change
/// webhook settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    name: String,
    full_admin: bool,
}

impl Principal {
    /// A user with full administrative permission.
    pub fn administrator(name: impl Into<String>) -> Self {
        Principal {
            name: name.into(),
            full_admin: true,
        }
    }

    /// A user without full administrative permission (supervisor, agent, API key...).
    pub fn user(name: impl Into<String>) -> Self {
        Principal {
            name: name.into(),
            full_admin: false,
        }
    }

    /// The principal's name, as recorded in the audit log.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the principal has full administrative permission.
    pub fn is_administrator(&self) -> bool {
        self.full_admin
    }

    pub(crate) fn require_admin(&self, action: &'static str) -> Result<()> {
        if self.full_admin {
            Ok(())
        } else {
            Err(Error::PermissionDenied {
                principal: self.name.clone(),
                action,
            })
        }
    }
}

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
    /// The first invalid value of `update`: [`Error::InvalidConfig`], [`Error::InvalidUrl`]
    /// or [`Error::InvalidHeader`].
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

    /// The preferences after `update`, and the names of the fields it changed. `self` is left
    /// as it was whatever happens.
    pub(crate) fn with_update(
        &self,
        update: PreferencesUpdate,
    ) -> Result<(Preferences, Vec<&'static str>)> {
        if let Some(err) = update.error {
            return Err(err);
        }
        let mut next = self.clone();
        let mut changed = Vec::new();
        if let Some(v) = update.enabled {
            if next.enabled != v {
                changed.push("enabled");
            }
            next.enabled = v;
        }
        if let Some(v) = update.url {
            if next.url != v {
                changed.push("url");
            }
            next.url = v;
        }
        if let Some(v) = update.credentials {
            if next.username() != v.as_ref().map(Credentials::username) {
                changed.push("username");
            }
            let old_pw = next.credentials.as_ref().map(Credentials::password);
            if old_pw != v.as_ref().map(Credentials::password) {
                changed.push("password");
            }
            next.credentials = v;
        }
        if let Some(v) = update.auth_scheme {
            if next.auth_scheme != v {
                changed.push("auth_scheme");
            }
            next.auth_scheme = v;
        }
        if let Some(v) = update.encoding {
            if next.encoding != v {
                changed.push("encoding");
            }
            next.encoding = v;
        }
        if let Some(v) = update.time_zone {
            if next.time_zone != v {
                changed.push("time_zone");
            }
            next.time_zone = v;
        }
        if let Some(v) = update.attempt_timeout {
            if next.attempt_timeout != v {
                changed.push("attempt_timeout");
            }
            next.attempt_timeout = v;
        }
        if let Some(v) = update.retry_schedule {
            if next.retry_schedule != v {
                changed.push("retry_schedule");
            }
            next.retry_schedule = v;
        }
        {
            let before = next.signing_secrets.clone();
            for change in update.signing {
                match change {
                    SigningChange::Set(secret) => next.signing_secrets = vec![secret],
                    SigningChange::Rotate(secret) => {
                        next.signing_secrets.insert(0, secret);
                        next.signing_secrets.truncate(MAX_SIGNING_SECRETS);
                    }
                    SigningChange::Clear => next.signing_secrets.clear(),
                }
            }
            if next.signing_secrets != before {
                changed.push("signing_secret");
            }
        }
        if let Some(v) = update.mask_phone {
            if next.mask_phone != v {
                changed.push("mask_phone");
            }
            next.mask_phone = v;
        }
        if let Some(v) = update.omit_result_notes {
            if next.omit_result_notes != v {
                changed.push("omit_result_notes");
            }
            next.omit_result_notes = v;
        }
        if let Some(v) = update.new_campaigns_enabled {
            if next.new_campaigns_enabled != v {
                changed.push("new_campaigns_enabled");
            }
            next.new_campaigns_enabled = v;
        }
        if let Some(v) = update.method {
            if next.method != v {
                changed.push("method");
            }
            next.method = v;
        }
        if update.reset_key_names || !update.key_renames.is_empty() {
            let kept = if update.reset_key_names {
                Vec::new()
            } else {
                next.key_names
                    .renames()
                    .map(|(k, n)| (k, n.to_owned()))
                    .collect()
            };
            let renames = kept
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n))
                .chain(update.key_renames);
            // Duplicates are checked on the result, so two keys can swap names in one update.
            let names = KeyNames::from_renames(renames)?;
            if next.key_names != names {
                changed.push("key_names");
            }
            next.key_names = names;
        }
        if !update.headers.is_empty() {
            let before = next.headers.clone();
            for change in update.headers {
                match change {
                    HeaderChange::Set(header) => {
                        match next.headers.iter_mut().find(|h| h.name() == header.name()) {
                            Some(slot) => *slot = header,
                            None => next.headers.push(header),
                        }
                    }
                    HeaderChange::Remove(name) => next.headers.retain(|h| h.header_name() != name),
                    HeaderChange::Clear => next.headers.clear(),
                }
            }
            check_header_count(next.headers.len())?;
            if next.headers != before {
                changed.push("headers");
            }
        }
        if let Some(v) = update.token {
            if next.token.as_ref() != Some(&v) {
                changed.push("token");
            }
            next.token = Some(v);
        }
        if let Some(v) = update.api_key_header {
            if next.api_key_header.as_ref() != Some(&v) {
                changed.push("api_key_header");
            }
            next.api_key_header = Some(v);
        }
        // Validated as a whole, so the order of the setters never matters.
        next.auth_header = next.derive_auth_header()?;
        Ok((next, changed))
    }

    /// The authentication header the scheme asks for, from the values it needs.
    fn derive_auth_header(&self) -> Result<Option<(HeaderName, HeaderValue)>> {
        let scheme = self.auth_scheme;
        Ok(match scheme {
            AuthScheme::Basic | AuthScheme::Slash => self
                .credentials
                .as_ref()
                .map(|c| c.authorization(scheme))
                .transpose()?
                .map(|v| (AUTHORIZATION, v)),
            AuthScheme::None => None,
            AuthScheme::Bearer => {
                let token = self
                    .token
                    .as_ref()
                    .ok_or_else(|| Error::config("token", "bearer authentication needs a token"))?;
                Some((AUTHORIZATION, auth::bearer(token)?))
            }
            AuthScheme::ApiKey => {
                let (Some(name), Some(key)) = (&self.api_key_header, &self.token) else {
                    return Err(Error::config(
                        "api_key",
                        "API key authentication needs a header name and a key",
                    ));
                };
                if self.headers.iter().any(|h| h.header_name() == name) {
                    return Err(Error::InvalidHeader {
                        name: name.to_string(),
                        reason: "it is both the API key's header and a custom header".into(),
                    });
                }
                Some((
                    name.clone(),
                    auth::sensitive(key.expose_secret(), "api_key")?,
                ))
            }
        })
    }

    pub(crate) fn to_stored(&self) -> StoredPreferences {
        StoredPreferences {
            enabled: self.enabled,
            url: self.url.as_ref().map(|u| u.as_str().to_owned()),
            username: self.username().map(str::to_owned),
            password: self
                .credentials
                .as_ref()
                .map(|c| c.password().expose_secret().to_owned()),
            auth_scheme: self.auth_scheme,
            encoding: self.encoding,
            time_zone: self.time_zone_name().to_owned(),
            attempt_timeout_ms: self.attempt_timeout.as_millis() as u64,
            retry_delays_ms: (self.retry_schedule != RetrySchedule::default())
                .then(|| self.retry_schedule.to_millis()),
            signing_secrets: self
                .signing_secrets
                .iter()
                .map(SigningSecret::to_whsec)
                .collect(),
            mask_phone: self.mask_phone,
            omit_result_notes: self.omit_result_notes,
            new_campaigns_enabled: self.new_campaigns_enabled,
            method: self.method,
            key_names: self
                .key_names
                .renames()
                .map(|(k, n)| (k.to_owned(), n.to_owned()))
                .collect(),
            headers: self
                .headers
                .iter()
                .map(|h| StoredHeader {
                    name: h.name().to_owned(),
                    value: h.text().expose_secret().to_owned(),
                    secret: h.is_secret(),
                })
                .collect(),
            token: self.token.as_ref().map(|t| t.expose_secret().to_owned()),
            api_key_header: self.api_key_header.as_ref().map(|h| h.as_str().to_owned()),
        }
    }

    pub(crate) fn from_stored(stored: &StoredPreferences) -> Result<Preferences> {
        let mut update = PreferencesUpdate::new()
            .enabled(stored.enabled)
            .auth_scheme(stored.auth_scheme)
            .encoding(stored.encoding)
            .time_zone(&stored.time_zone)
            .attempt_timeout(Duration::from_millis(stored.attempt_timeout_ms))
            .mask_phone(stored.mask_phone)
            .omit_result_notes(stored.omit_result_notes)
            .new_campaigns_enabled(stored.new_campaigns_enabled)
            .method(stored.method);
        for (key, name) in &stored.key_names {
            update = update.key_name(key, name);
        }
        for header in &stored.headers {
            update = if header.secret {
                update.secret_header(&header.name, header.value.as_str())
            } else {
                update.header(&header.name, header.value.as_str())
            };
        }
        if let Some(token) = &stored.token {
            update.token = update
                .keep(auth::check_token("token", token).map(|()| Secret::new(token.as_str())));
        }
        if let Some(name) = &stored.api_key_header {
            update.api_key_header = update.keep(check_header_name(name));
        }
        if let Some(url) = &stored.url {
            update = update.url(url);
        }
        if let Some(ms) = &stored.retry_delays_ms {
            update = update.retry_schedule(RetrySchedule::from_millis(ms)?);
        }
        if stored.username.is_some() || stored.password.is_some() {
            update = update.credentials(
                stored.username.clone().unwrap_or_default(),
                stored.password.clone().unwrap_or_default(),
            );
        }
        let mut preferences = Preferences::default().with_update(update)?.0;
        if stored.signing_secrets.len() > MAX_SIGNING_SECRETS {
            return Err(Error::config(
                "signing_secret",
                format!("at most {MAX_SIGNING_SECRETS} signing secrets can be stored"),
            ));
        }
        preferences.signing_secrets = stored
            .signing_secrets
            .iter()
            .map(|text| text.parse::<SigningSecret>())
            .collect::<Result<_>>()?;
        Ok(preferences)
    }
}

impl Preferences {
    /// The names of the fields (as audited) in which `other` differs from `self`: for a
    /// change that replaces the preferences whole.
    pub(crate) fn changed_fields(&self, other: &Preferences) -> Vec<&'static str> {
        let fields = |p: &Preferences| match serde_json::to_value(p.to_stored()) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let (before, after) = (fields(self), fields(other));
        STORED_FIELDS
            .iter()
            .filter(|(stored, _)| before.get(*stored) != after.get(*stored))
            .map(|(_, audited)| *audited)
            .collect()
    }
}

/// Each field of [`StoredPreferences`] and the name its change is audited under.
const STORED_FIELDS: &[(&str, &str)] = &[
    ("enabled", "enabled"),
    ("url", "url"),
    ("username", "username"),
    ("password", "password"),
    ("auth_scheme", "auth_scheme"),
    ("encoding", "encoding"),
    ("time_zone", "time_zone"),
    ("attempt_timeout_ms", "attempt_timeout"),
    ("retry_delays_ms", "retry_schedule"),
    ("signing_secrets", "signing_secret"),
    ("mask_phone", "mask_phone"),
    ("omit_result_notes", "omit_result_notes"),
    ("new_campaigns_enabled", "new_campaigns_enabled"),
    ("method", "method"),
    ("key_names", "key_names"),
    ("headers", "headers"),
    ("token", "token"),
    ("api_key_header", "api_key_header"),
];

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

/// The stored form of preferences, password and signing secrets included: only made by an
/// explicit call. Fields added later are optional, so older stored forms still load, and are left
/// out at their default, so the stored form of an account that never used them is unchanged.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredPreferences {
    enabled: bool,
    url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    auth_scheme: AuthScheme,
    encoding: Encoding,
    time_zone: String,
    attempt_timeout_ms: u64,
    /// Absent (stored before schedules were configurable, or the default): the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_delays_ms: Option<Vec<u64>>,
    /// `whsec_` texts, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    signing_secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    mask_phone: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    omit_result_notes: bool,
    /// Absent (stored before it existed, or off): off.
    #[serde(default, skip_serializing_if = "is_false")]
    new_campaigns_enabled: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    method: Method,
    /// Page key to the name it is sent under; only the renamed ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    key_names: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    headers: Vec<StoredHeader>,
    /// The bearer token or API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_key_header: Option<String>,
}

/// A custom header as stored, its value in the clear (secret or not).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredHeader {
    name: String,
    value: String,
    #[serde(default, skip_serializing_if = "is_false")]
    secret: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Drop for StoredPreferences {
    fn drop(&mut self) {
        if let Some(pw) = self.password.as_mut() {
            zeroize::Zeroize::zeroize(pw);
        }
        for secret in &mut self.signing_secrets {
            zeroize::Zeroize::zeroize(secret);
        }
        if let Some(token) = self.token.as_mut() {
            zeroize::Zeroize::zeroize(token);
        }
        for header in &mut self.headers {
            zeroize::Zeroize::zeroize(&mut header.value);
        }
    }
}

/// A change to the custom headers, applied in the order given.
#[derive(Debug, Clone)]
enum HeaderChange {
    Set(CustomHeader),
    Remove(HeaderName),
    Clear,
}

/// A change to the signing secrets, applied in the order given.
#[derive(Debug, Clone)]
enum SigningChange {
    Set(SigningSecret),
    Rotate(SigningSecret),
    Clear,
}

/// A change to an account's preferences. Set only what changes; the first invalid value is
/// kept and returned when the change is applied, and then nothing changes.
///
/// An administrator's change is applied and saved by
/// [`Webhooks::update_preferences`](crate::Webhooks::update_preferences) (or, for a dialer that
/// keeps its accounts itself, [`Webhooks::put_settings`](crate::Webhooks::put_settings)).
/// [`Preferences::from_update`] makes a value of one, saved nowhere, for a program that builds
/// its requests without [`Webhooks`](crate::Webhooks).
///
/// # Examples
///
/// ```
/// use call_result_webhook::{
///     MemoryStore, PreferencesUpdate, Principal, Webhooks, auth::AuthScheme, encoding::Encoding,
/// };
///
/// let webhooks = Webhooks::builder().store(MemoryStore::new()).build()?;
/// let (admin, acme) = (Principal::administrator("alice@acme.example"), "acme".into());
/// // Saved before it returns; `update_preferences(..).await` on an async runtime.
/// webhooks.update_preferences_blocking(
///     &admin,
///     &acme,
///     PreferencesUpdate::new()
///         .enabled(true)
///         .url("https://crm.acme.example/hooks/calls")
///         .credentials("dialer", "correct horse")
///         .auth_scheme(AuthScheme::Basic)
///         .encoding(Encoding::Form)
///         .time_zone("Australia/Brisbane"),
/// )?;
/// let account = webhooks.account(&acme).expect("saved");
/// assert!(account.preferences().has_password());
/// assert!(!format!("{:?}", account.preferences()).contains("correct horse"));
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[derive(Debug, Default)]
#[must_use = "an update does nothing until it is applied"]
pub struct PreferencesUpdate {
    enabled: Option<bool>,
    url: Option<Option<WebhookUrl>>,
    credentials: Option<Option<Credentials>>,
    auth_scheme: Option<AuthScheme>,
    encoding: Option<Encoding>,
    time_zone: Option<TimeZone>,
    attempt_timeout: Option<Duration>,
    retry_schedule: Option<RetrySchedule>,
    signing: Vec<SigningChange>,
    mask_phone: Option<bool>,
    omit_result_notes: Option<bool>,
    new_campaigns_enabled: Option<bool>,
    method: Option<Method>,
    key_renames: Vec<(String, String)>,
    reset_key_names: bool,
    headers: Vec<HeaderChange>,
    token: Option<Secret>,
    api_key_header: Option<HeaderName>,
    error: Option<Error>,
}

impl PreferencesUpdate {
    /// An empty change.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy to apply, for a change that may be applied more than once: a settings change
    /// that meets a newer save by another process is applied again to the stored account. The
    /// first invalid value's error moves to the copy, so the first application returns it, as
    /// applying the update itself would.
    pub(crate) fn take_copy(&mut self) -> PreferencesUpdate {
        PreferencesUpdate {
            enabled: self.enabled,
            url: self.url.clone(),
            credentials: self.credentials.clone(),
            auth_scheme: self.auth_scheme,
            encoding: self.encoding,
            time_zone: self.time_zone.clone(),
            attempt_timeout: self.attempt_timeout,
            retry_schedule: self.retry_schedule.clone(),
            signing: self.signing.clone(),
            mask_phone: self.mask_phone,
            omit_result_notes: self.omit_result_notes,
            new_campaigns_enabled: self.new_campaigns_enabled,
            method: self.method,
            key_renames: self.key_renames.clone(),
            reset_key_names: self.reset_key_names,
            headers: self.headers.clone(),
            token: self.token.clone(),
            api_key_header: self.api_key_header.clone(),
            error: self.error.take(),
        }
    }

    fn keep<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    /// Switches the webhook on or off for the whole account.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// Sets the receiver's URL (see [`WebhookUrl::parse`] for what is accepted).
    pub fn url(mut self, url: &str) -> Self {
        if let Some(u) = self.keep(WebhookUrl::parse(url)) {
            self.url = Some(Some(u));
        }
        self
    }

    /// Removes the URL: the account becomes "not configured".
    pub fn clear_url(mut self) -> Self {
        self.url = Some(None);
        self
    }

    /// Sets user name and password. Both empty means no Authorization header.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        let (username, password) = (username.into(), password.into());
        if username.is_empty() && password.is_empty() {
            self.credentials = Some(None);
        } else if let Some(c) = self.keep(Credentials::new(username, password)) {
            self.credentials = Some(Some(c));
        }
        self
    }

    /// Removes the credentials: no Authorization header is sent.
    pub fn clear_credentials(mut self) -> Self {
        self.credentials = Some(None);
        self
    }

    /// Chooses how the account authenticates (see [`AuthScheme`]). [`bearer_token`] and
    /// [`api_key`] choose their scheme themselves; this switches between the schemes without
    /// forgetting what each needs (credentials, token, header). Checked when the update is
    /// applied: `Bearer` needs a token and `ApiKey` a token and a header, set now or before.
    ///
    /// [`bearer_token`]: Self::bearer_token
    /// [`api_key`]: Self::api_key
    pub fn auth_scheme(mut self, scheme: AuthScheme) -> Self {
        self.auth_scheme = Some(scheme);
        self
    }

    /// Chooses the body encoding of a `POST`: [`Encoding::Form`] or [`Encoding::Json`].
    /// [`Encoding::Query`] is refused (field `encoding`): choose [`Method::Get`] with
    /// [`method`](Self::method) instead.
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        if encoding == Encoding::Query {
            self.keep::<()>(Err(Error::config(
                "encoding",
                "`query` is chosen with the GET method, not as an encoding",
            )));
        } else {
            self.encoding = Some(encoding);
        }
        self
    }

    /// Sends `Authorization: Bearer <token>` ([`AuthScheme::Bearer`]). The token is a secret:
    /// zeroized, never shown, audited as `token`.
    ///
    /// The first error is kept and returned when the update is applied:
    /// [`Error::InvalidConfig`] (field `token`) when the token is empty, longer than
    /// [`MAX_TOKEN_BYTES`](crate::limits::MAX_TOKEN_BYTES) or holds a control character.
    ///
    /// # Examples
    ///
    /// ```
    /// use call_result_webhook::{MemoryStore, PreferencesUpdate, Principal, Webhooks, auth::AuthScheme};
    ///
    /// let webhooks = Webhooks::builder().store(MemoryStore::new()).build()?;
    /// let record = webhooks.update_preferences_blocking(
    ///     &Principal::administrator("alice"),
    ///     &"acme".into(),
    ///     PreferencesUpdate::new().url("https://crm.example/hook").bearer_token("eyJhbGciOi.x.y"),
    /// )?;
    /// assert_eq!(record.fields, ["url", "auth_scheme", "token"]);
    /// let account = webhooks.account(&"acme".into()).expect("saved");
    /// assert_eq!(account.preferences().auth_scheme(), AuthScheme::Bearer);
    /// assert!(!format!("{:?}", account.preferences()).contains("eyJhbGciOi"));
    /// # Ok::<(), call_result_webhook::Error>(())
    /// ```
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        let token = Secret::new(token);
        if self
            .keep(auth::check_token("token", token.expose_secret()))
            .is_some()
        {
            self.token = Some(token);
            self.auth_scheme = Some(AuthScheme::Bearer);
        }
        self
    }

    /// Sends the API key `key` in the header `header` (`X-Api-Key: <key>`), with no
    /// `Authorization` header ([`AuthScheme::ApiKey`]). The key is a secret: zeroized, never
    /// shown, audited as `token`; the header name is audited as `api_key_header`.
    ///
    /// The first error is kept and returned when the update is applied:
    /// [`Error::InvalidHeader`] naming the header when it is not an HTTP token, is longer than
    /// [`MAX_HEADER_NAME_BYTES`](crate::limits::MAX_HEADER_NAME_BYTES) or is one the crate sets
    /// itself ([`is_reserved_header`]), or is also a
    /// custom header; [`Error::InvalidConfig`] (field `api_key`) when the key is empty, too
    /// long or holds a control character.
    ///
    /// # Examples
    ///
    /// ```
    /// use call_result_webhook::{MemoryStore, PreferencesUpdate, Principal, Webhooks};
    ///
    /// let webhooks = Webhooks::builder().store(MemoryStore::new()).build()?;
    /// webhooks.update_preferences_blocking(
    ///     &Principal::administrator("alice"),
    ///     &"acme".into(),
    ///     PreferencesUpdate::new().url("https://crm.example/hook").api_key("X-Api-Key", "k-123"),
    /// )?;
    /// let account = webhooks.account(&"acme".into()).expect("saved");
    /// assert_eq!(account.preferences().api_key_header(), Some("x-api-key"));
    /// # Ok::<(), call_result_webhook::Error>(())
    /// ```
    pub fn api_key(mut self, header: &str, key: impl Into<String>) -> Self {
        let key = Secret::new(key);
        let name = self.keep(check_header_name(header));
        let checked = self.keep(auth::check_token("api_key", key.expose_secret()));
        if let (Some(name), Some(())) = (name, checked) {
            self.api_key_header = Some(name);
            self.token = Some(key);
            self.auth_scheme = Some(AuthScheme::ApiKey);
        }
        self
    }

    /// Adds the header `name: value` to every request, or replaces the value of the custom
    /// header of that name (names are case-insensitive). At most
    /// [`MAX_CUSTOM_HEADERS`](crate::limits::MAX_CUSTOM_HEADERS); audited as `headers`.
    ///
    /// The first error is kept and returned when the update is applied: as
    /// [`CustomHeader::new`], and [`Error::InvalidConfig`] (field `headers`) when the account
    /// would have more than 16.
    ///
    /// # Examples
    ///
    /// ```
    /// use call_result_webhook::{Error, MemoryStore, PreferencesUpdate, Principal, Webhooks};
    ///
    /// let webhooks = Webhooks::builder().store(MemoryStore::new()).build()?;
    /// let (admin, acme) = (Principal::administrator("alice"), "acme".into());
    /// webhooks.update_preferences_blocking(
    ///     &admin,
    ///     &acme,
    ///     PreferencesUpdate::new().header("X-Tenant", "acme").secret_header("X-Shared-Key", "k3y"),
    /// )?;
    /// assert_eq!(webhooks.account(&acme).expect("saved").preferences().headers().len(), 2);
    ///
    /// // A header the crate sets itself is refused, and nothing changes.
    /// let err = webhooks
    ///     .update_preferences_blocking(&admin, &acme, PreferencesUpdate::new().header("host", "evil.example"))
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::InvalidHeader { .. }));
    /// assert_eq!(webhooks.account(&acme).expect("saved").preferences().headers().len(), 2);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        if let Some(h) = self.keep(CustomHeader::new(name, value)) {
            self.headers.push(HeaderChange::Set(h));
        }
        self
    }

    /// As [`header`](Self::header), for a value that is secret: zeroized, redacted in every
    /// `Debug`, sent as a sensitive header value.
    pub fn secret_header(mut self, name: &str, value: impl Into<String>) -> Self {
        if let Some(h) = self.keep(CustomHeader::secret(name, value)) {
            self.headers.push(HeaderChange::Set(h));
        }
        self
    }

    /// Stops sending the custom header `name` (case-insensitive); a name not set is no change.
    pub fn remove_header(mut self, name: &str) -> Self {
        // A name that is not a header name cannot be set, so there is nothing to remove.
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            self.headers.push(HeaderChange::Remove(name));
        }
        self
    }

    /// Stops sending every custom header.
    pub fn clear_headers(mut self) -> Self {
        self.headers.push(HeaderChange::Clear);
        self
    }

    /// Sends the payload key `key` (one of the ten, for example `PhoneCalled`) under `name`
    /// (`phone`), in its place, in form and JSON bodies and `GET` queries alike. Renaming a
    /// key to its own name undoes a rename. Audited as `key_names`.
    ///
    /// The first error is kept and returned when the update is applied: as
    /// [`KeyNames::from_renames`], checked on the names the account ends up with (so two keys
    /// may swap names in one update).
    ///
    /// # Examples
    ///
    /// ```
    /// use call_result_webhook::{MemoryStore, PreferencesUpdate, Principal, Webhooks};
    ///
    /// let webhooks = Webhooks::builder().store(MemoryStore::new()).build()?;
    /// webhooks.update_preferences_blocking(
    ///     &Principal::administrator("alice"),
    ///     &"acme".into(),
    ///     PreferencesUpdate::new().key_name("PhoneCalled", "phone").key_name("Reference", "ref"),
    /// )?;
    /// let account = webhooks.account(&"acme".into()).expect("saved");
    /// assert_eq!(account.preferences().key_names().name("PhoneCalled"), Some("phone"));
    /// # Ok::<(), call_result_webhook::Error>(())
    /// ```
    pub fn key_name(mut self, key: &str, name: &str) -> Self {
        // Duplicates are checked when the update is applied, on the names the account ends
        // up with.
        if self.keep(KeyNames::check_rename(key, name)).is_some() {
            self.key_renames.push((key.to_owned(), name.to_owned()));
        }
        self
    }

    /// Sends every key under the page's own name again.
    pub fn clear_key_names(mut self) -> Self {
        self.reset_key_names = true;
        self.key_renames.clear();
        self
    }

    /// Chooses how call results travel: [`Method::Post`] (the default) or [`Method::Get`].
    /// Applies to call results submitted from now on; a body already accepted is sent as it
    /// was fixed. Audited as `method`.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Sets the account's IANA time zone (for example `Australia/Brisbane`), from the bundled
    /// time-zone database.
    pub fn time_zone(mut self, name: &str) -> Self {
        let tz = TimeZone::get(name)
            .map_err(|_| Error::config("time_zone", format!("unknown IANA time zone `{name}`")));
        if let Some(tz) = self.keep(tz) {
            self.time_zone = Some(tz);
        }
        self
    }

    /// Sets the whole-attempt time limit: 1 to 30 seconds.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        let checked = if (Duration::from_secs(1)..=Duration::from_secs(30)).contains(&timeout) {
            Ok(timeout)
        } else {
            Err(Error::config("attempt_timeout", "must be 1 to 30 seconds"))
        };
        if let Some(t) = self.keep(checked) {
            self.attempt_timeout = Some(t);
        }
        self
    }

    /// Sets when failed deliveries are tried again (see [`RetrySchedule`]). Applies to
    /// deliveries already pending from their next failure on.
    pub fn retry_schedule(mut self, schedule: RetrySchedule) -> Self {
        self.retry_schedule = Some(schedule);
        self
    }

    /// Signs every request with `secret` (Standard Webhooks: `webhook-timestamp` and
    /// `webhook-signature`), replacing any secret set before. Applies to pending deliveries from
    /// their next attempt on. The audit names the field `signing_secret`, never the value.
    ///
    /// # Examples
    ///
    /// ```
    /// use call_result_webhook::{
    ///     MemoryStore, PreferencesUpdate, Principal, Webhooks, signing::SigningSecret,
    /// };
    ///
    /// let webhooks = Webhooks::builder().store(MemoryStore::new()).build()?;
    /// let (admin, acme) = (Principal::administrator("alice"), "acme".into());
    /// let first = SigningSecret::generate()?;
    /// webhooks.update_preferences_blocking(&admin, &acme, PreferencesUpdate::new().signing_secret(first))?;
    ///
    /// // Rotation: the new secret signs, and so does the previous one until it is cleared, so
    /// // the receiver can switch over at its own pace.
    /// let second = SigningSecret::generate()?;
    /// let record = webhooks.update_preferences_blocking(
    ///     &admin,
    ///     &acme,
    ///     PreferencesUpdate::new().rotate_signing_secret(second),
    /// )?;
    /// assert_eq!(record.fields, ["signing_secret"]);
    /// assert_eq!(webhooks.account(&acme).expect("saved").preferences().signing_secret_count(), 2);
    /// # Ok::<(), call_result_webhook::Error>(())
    /// ```
    pub fn signing_secret(mut self, secret: SigningSecret) -> Self {
        self.signing.push(SigningChange::Set(secret));
        self
    }

    /// Starts a rotation: `secret` becomes the current signing secret and the current one is
    /// kept as the previous, so every request carries both signatures and a receiver holding
    /// either accepts it. At most two are kept: an older previous secret is dropped. With no
    /// secret set, this is [`signing_secret`](Self::signing_secret).
    pub fn rotate_signing_secret(mut self, secret: SigningSecret) -> Self {
        self.signing.push(SigningChange::Rotate(secret));
        self
    }

    /// Removes every signing secret: requests are no longer signed. To end a rotation, call
    /// this and then [`signing_secret`](Self::signing_secret) with the new secret.
    pub fn clear_signing_secrets(mut self) -> Self {
        self.signing.push(SigningChange::Clear);
        self
    }

    /// Sends `PhoneCalled` masked, all but its last three characters as `*`
    /// (`0731051234` becomes `*******234`), for call results submitted from now on. Off by
    /// default: the product page promises the number as dialled.
    pub fn mask_phone(mut self, mask: bool) -> Self {
        self.mask_phone = Some(mask);
        self
    }

    /// Leaves `ResultNotes` out of the payload (sent as unknown: empty in a form body, `null` in
    /// JSON), for call results submitted from now on. Off by default: the product page
    /// promises the notes.
    pub fn omit_result_notes(mut self, omit: bool) -> Self {
        self.omit_result_notes = Some(omit);
        self
    }

    /// Whether a campaign whose own switch was never set counts as switched on: for a dialer
    /// that decides per account that its new campaigns send call results, without setting
    /// each campaign's switch. Off by default, as on the product page. A campaign whose
    /// switch was set (on or off) keeps it whatever this says.
    pub fn new_campaigns_enabled(mut self, enabled: bool) -> Self {
        self.new_campaigns_enabled = Some(enabled);
        self
    }
}

/// One change to an account's webhook settings, for audit: who, when, which fields. Never the
/// values, so never a password.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Who made the change.
    pub principal: String,
    /// When it was made.
    pub at: Timestamp,
    /// What changed: preference field names, or `campaign:<id>` for a campaign switch.
    pub fields: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(p: &Preferences, u: PreferencesUpdate) -> Result<Preferences> {
        p.with_update(u).map(|(p, _)| p)
    }

    #[test]
    fn url_rules() {
        assert!(WebhookUrl::parse("https://example.com/hook").is_ok());
        assert!(WebhookUrl::parse("http://example.com:8080/hook?x=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://",
            "not a url",
            "https://example.com/#frag",
        ] {
            assert!(
                matches!(WebhookUrl::parse(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(WebhookUrl::parse(&long).is_err());
    }

    #[test]
    fn userinfo_in_url_is_refused_without_echo() {
        let err = WebhookUrl::parse("https://admin:hunter2@example.com/").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }

    #[test]
    fn debug_of_url_hides_query() {
        let u = WebhookUrl::parse("https://hooks.example.com/catch/123?token=abc").unwrap();
        let shown = format!("{u:?}");
        assert_eq!(shown, "https://hooks.example.com/catch/123?[redacted]");
    }

    #[test]
    fn scheme_and_credentials_are_checked_together_in_any_order() {
        let p = Preferences::default();
        let u = PreferencesUpdate::new()
            .credentials("a:b", "pw")
            .auth_scheme(AuthScheme::Slash);
        assert!(apply(&p, u).is_ok());
        let u = PreferencesUpdate::new().credentials("a:b", "pw");
        assert!(matches!(
            apply(&p, u),
            Err(Error::InvalidConfig {
                field: "username",
                ..
            })
        ));
    }

    #[test]
    fn first_error_is_kept_and_nothing_changes() {
        let p = Preferences::default();
        let u = PreferencesUpdate::new()
            .enabled(true)
            .time_zone("Mars/Olympus")
            .url("gopher://x");
        assert!(matches!(
            p.with_update(u),
            Err(Error::InvalidConfig {
                field: "time_zone",
                ..
            })
        ));
        assert!(!p.enabled());
    }

    #[test]
    fn empty_credentials_mean_no_header() {
        let p = apply(
            &Preferences::default(),
            PreferencesUpdate::new().credentials("", ""),
        )
        .unwrap();
        assert!(p.authorization().is_none());
        assert!(!p.has_password());
    }

    #[test]
    fn changed_fields_are_named_and_password_value_is_not() {
        let p = Preferences::default();
        let (p, changed) = p
            .with_update(
                PreferencesUpdate::new()
                    .enabled(true)
                    .credentials("u", "topsecret"),
            )
            .unwrap();
        assert_eq!(changed, ["enabled", "username", "password"]);
        let (_, changed) = p
            .with_update(PreferencesUpdate::new().credentials("u", "othersecret"))
            .unwrap();
        assert_eq!(changed, ["password"]);
    }

    #[test]
    fn stored_round_trip_keeps_everything() {
        let (p, _) = Preferences::default()
            .with_update(
                PreferencesUpdate::new()
                    .enabled(true)
                    .url("https://example.com/h")
                    .credentials("u", "pw")
                    .auth_scheme(AuthScheme::Slash)
                    .encoding(Encoding::Json)
                    .time_zone("Australia/Perth")
                    .attempt_timeout(Duration::from_secs(7))
                    .retry_schedule(RetrySchedule::from_millis(&[50, 100, 200]).unwrap()),
            )
            .unwrap();
        let back = Preferences::from_stored(&p.to_stored()).unwrap();
        assert_eq!(format!("{p:?}"), format!("{back:?}"));
        assert_eq!(back.retry_schedule().to_millis(), [50, 100, 200]);
        assert_eq!(back.authorization(), p.authorization());
    }

    #[test]
    fn attempt_timeout_bounds() {
        let p = Preferences::default();
        for bad in [Duration::from_millis(999), Duration::from_secs(31)] {
            assert!(apply(&p, PreferencesUpdate::new().attempt_timeout(bad)).is_err());
        }
        let ok = apply(
            &p,
            PreferencesUpdate::new().attempt_timeout(Duration::from_secs(30)),
        )
        .unwrap();
        assert_eq!(ok.attempt_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn preferences_stored_before_retry_schedules_still_load() {
        let old = r#"{"enabled":true,"url":"https://example.com/h","username":null,"password":null,
            "auth_scheme":"basic","encoding":"form","time_zone":"UTC","attempt_timeout_ms":15000}"#;
        let stored: StoredPreferences = serde_json::from_str(old).unwrap();
        let p = Preferences::from_stored(&stored).unwrap();
        assert_eq!(p.retry_schedule(), &RetrySchedule::default());
        // The default is not written, so the stored form stays what older readers know.
        let json = serde_json::to_string(&p.to_stored()).unwrap();
        assert!(!json.contains("retry_delays_ms"));
    }

    #[test]
    fn retry_schedule_change_is_named() {
        let (_, changed) = Preferences::default()
            .with_update(
                PreferencesUpdate::new()
                    .retry_schedule(RetrySchedule::new([Duration::from_secs(1)]).unwrap()),
            )
            .unwrap();
        assert_eq!(changed, ["retry_schedule"]);
    }

    #[test]
    fn pii_options_are_off_by_default_named_in_the_audit_and_stored() {
        let p = Preferences::default();
        assert!(!p.mask_phone() && !p.omit_result_notes());
        let (p, changed) = p
            .with_update(
                PreferencesUpdate::new()
                    .mask_phone(true)
                    .omit_result_notes(true),
            )
            .unwrap();
        assert_eq!(changed, ["mask_phone", "omit_result_notes"]);
        let back = Preferences::from_stored(&p.to_stored()).unwrap();
        assert!(back.mask_phone() && back.omit_result_notes());
        let (_, unchanged) = back
            .with_update(PreferencesUpdate::new().mask_phone(true))
            .unwrap();
        assert!(unchanged.is_empty());
        // At their defaults they are not written: the stored form is what it was before.
        let json = serde_json::to_string(&Preferences::default().to_stored()).unwrap();
        assert!(!json.contains("mask_phone") && !json.contains("omit_result_notes"));
        assert!(!json.contains("signing_secrets"));
    }

    mod options {
        use super::*;
        use crate::limits::MAX_CUSTOM_HEADERS;

        fn header(p: &Preferences) -> Option<(&str, &str)> {
            p.auth_header()
                .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        }

        #[test]
        fn each_auth_kind_makes_its_header_and_needs_what_it_sends() {
            let p = apply(
                &Preferences::default(),
                PreferencesUpdate::new().credentials("user", "passwd"),
            )
            .unwrap();
            assert_eq!(
                header(&p),
                Some(("authorization", "Basic dXNlcjpwYXNzd2Q="))
            );

            let (none, changed) = p
                .with_update(PreferencesUpdate::new().auth_scheme(AuthScheme::None))
                .unwrap();
            assert_eq!(changed, ["auth_scheme"]);
            assert_eq!(header(&none), None);
            assert!(
                none.has_password(),
                "credentials are kept for a switch back"
            );

            let (bearer, changed) = none
                .with_update(PreferencesUpdate::new().bearer_token("t0k"))
                .unwrap();
            assert_eq!(changed, ["auth_scheme", "token"]);
            assert_eq!(header(&bearer), Some(("authorization", "Bearer t0k")));
            assert!(bearer.auth_header().unwrap().1.is_sensitive());

            let (key, changed) = bearer
                .with_update(PreferencesUpdate::new().api_key("X-Api-Key", "k3y"))
                .unwrap();
            assert_eq!(changed, ["auth_scheme", "token", "api_key_header"]);
            assert_eq!(header(&key), Some(("x-api-key", "k3y")));
            assert!(key.auth_header().unwrap().1.is_sensitive());
            assert_eq!(key.api_key_header(), Some("x-api-key"));

            // Switching schemes keeps what each needs.
            let back = apply(
                &key,
                PreferencesUpdate::new().auth_scheme(AuthScheme::Slash),
            )
            .unwrap();
            assert_eq!(header(&back), Some(("authorization", "dXNlci9wYXNzd2Q=")));

            // A scheme without what it sends is refused, and nothing changes.
            let fresh = Preferences::default();
            let err = apply(
                &fresh,
                PreferencesUpdate::new().auth_scheme(AuthScheme::Bearer),
            )
            .unwrap_err();
            assert!(
                matches!(err, Error::InvalidConfig { field: "token", .. }),
                "{err}"
            );
            let err = apply(
                &fresh,
                PreferencesUpdate::new().auth_scheme(AuthScheme::ApiKey),
            )
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidConfig {
                        field: "api_key",
                        ..
                    }
                ),
                "{err}"
            );
        }

        #[test]
        fn bad_tokens_and_key_headers_are_refused_naming_the_field_or_header() {
            let p = Preferences::default();
            for (update, field) in [
                (PreferencesUpdate::new().bearer_token(""), "token"),
                (
                    PreferencesUpdate::new().bearer_token("t\r\nX-Evil: SECRETVALUE"),
                    "token",
                ),
                (
                    PreferencesUpdate::new().api_key("X-Api-Key", "SECRETVALUE\n"),
                    "api_key",
                ),
            ] {
                let err = apply(&p, update).unwrap_err();
                assert!(
                    matches!(&err, Error::InvalidConfig { field: f, .. } if *f == field),
                    "{err}"
                );
                assert!(!format!("{err} {err:?}").contains("SECRETVALUE"));
            }
            for name in ["Authorization", "x api key", "", "Webhook-Id"] {
                let err =
                    apply(&p, PreferencesUpdate::new().api_key(name, "SECRETVALUE")).unwrap_err();
                assert!(matches!(err, Error::InvalidHeader { .. }), "{name}: {err}");
                assert!(!format!("{err} {err:?}").contains("SECRETVALUE"));
            }
            let err = apply(
                &p,
                PreferencesUpdate::new()
                    .header("X-Api-Key", "plain")
                    .api_key("x-api-key", "SECRETVALUE"),
            )
            .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidHeader { name, .. } if name == "x-api-key"),
                "{err}"
            );
        }

        #[test]
        fn custom_headers_are_set_replaced_removed_and_capped() {
            let (p, changed) = Preferences::default()
                .with_update(
                    PreferencesUpdate::new()
                        .header("X-Tenant", "acme")
                        .secret_header("X-Shared", "s3cr3t")
                        .header("x-tenant", "acme-2"),
                )
                .unwrap();
            assert_eq!(changed, ["headers"]);
            let shown: Vec<_> = p.headers().iter().map(|h| (h.name(), h.value())).collect();
            assert_eq!(shown, [("x-tenant", Some("acme-2")), ("x-shared", None)]);
            assert!(!format!("{p:?}").contains("s3cr3t"));

            let (same, changed) = p
                .with_update(PreferencesUpdate::new().header("X-Tenant", "acme-2"))
                .unwrap();
            assert!(changed.is_empty());
            let removed = apply(&same, PreferencesUpdate::new().remove_header("X-TENANT")).unwrap();
            assert_eq!(removed.headers().len(), 1);
            let cleared = apply(&same, PreferencesUpdate::new().clear_headers()).unwrap();
            assert!(cleared.headers().is_empty());

            let mut full = PreferencesUpdate::new();
            for i in 0..MAX_CUSTOM_HEADERS {
                full = full.header(&format!("X-H{i}"), "v");
            }
            let p = apply(&Preferences::default(), full).unwrap();
            assert_eq!(p.headers().len(), MAX_CUSTOM_HEADERS);
            let err =
                apply(&p, PreferencesUpdate::new().header("X-One-Too-Many", "v")).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidConfig {
                        field: "headers",
                        ..
                    }
                ),
                "{err}"
            );
            // Replacing one at the cap is fine.
            assert!(apply(&p, PreferencesUpdate::new().header("X-H0", "w")).is_ok());
        }

        #[test]
        fn key_names_are_checked_on_the_result() {
            let (p, changed) = Preferences::default()
                .with_update(
                    PreferencesUpdate::new()
                        .key_name("PhoneCalled", "Reference")
                        .key_name("Reference", "PhoneCalled"),
                )
                .unwrap();
            assert_eq!(changed, ["key_names"]);
            assert_eq!(p.key_names().name("PhoneCalled"), Some("Reference"));
            // Kept across updates, and checked with the ones kept.
            let err = apply(
                &p,
                PreferencesUpdate::new().key_name("Result", "PhoneCalled"),
            )
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidConfig {
                        field: "key_names",
                        ..
                    }
                ),
                "{err}"
            );
            let p2 = apply(&p, PreferencesUpdate::new().key_name("Result", "outcome")).unwrap();
            assert_eq!(p2.key_names().renames().count(), 3);
            for bad in [("PhoneCalled", ""), ("Phone", "phone")] {
                assert!(apply(&p, PreferencesUpdate::new().key_name(bad.0, bad.1)).is_err());
            }
            let reset = apply(&p2, PreferencesUpdate::new().clear_key_names()).unwrap();
            assert!(reset.key_names().is_default());
        }

        #[test]
        fn method_is_named_and_query_is_not_an_encoding() {
            let (p, changed) = Preferences::default()
                .with_update(PreferencesUpdate::new().method(Method::Get))
                .unwrap();
            assert_eq!(changed, ["method"]);
            assert_eq!(p.method(), Method::Get);
            let err = apply(&p, PreferencesUpdate::new().encoding(Encoding::Query)).unwrap_err();
            assert!(matches!(
                err,
                Error::InvalidConfig {
                    field: "encoding",
                    ..
                }
            ));
        }

        #[test]
        fn every_option_is_stored_and_restored_and_never_shown() {
            let (p, _) = Preferences::default()
                .with_update(
                    PreferencesUpdate::new()
                        .url("https://example.com/h")
                        .api_key("X-Api-Key", "KEY-VALUE-1")
                        .header("X-Tenant", "acme")
                        .secret_header("X-Shared", "SHARED-VALUE-2")
                        .key_name("PhoneCalled", "phone")
                        .method(Method::Get),
                )
                .unwrap();
            let back = Preferences::from_stored(&p.to_stored()).unwrap();
            assert_eq!(format!("{p:?}"), format!("{back:?}"));
            assert_eq!(back.auth_header(), p.auth_header());
            assert_eq!(back.headers(), p.headers());
            assert!(back.headers()[1].is_secret());
            assert_eq!(back.key_names(), p.key_names());
            assert_eq!(back.method(), Method::Get);
            let bearer = apply(&p, PreferencesUpdate::new().bearer_token("TOKEN-VALUE-3")).unwrap();
            let back = Preferences::from_stored(&bearer.to_stored()).unwrap();
            assert_eq!(back.auth_header(), bearer.auth_header());

            let update = PreferencesUpdate::new()
                .bearer_token("TOKEN-VALUE-3")
                .api_key("X-Api-Key", "KEY-VALUE-1")
                .secret_header("X-Shared", "SHARED-VALUE-2");
            let shown = format!("{p:?} {p:#?} {bearer:?} {update:?} {update:#?}");
            for secret in ["KEY-VALUE-1", "SHARED-VALUE-2", "TOKEN-VALUE-3"] {
                assert!(!shown.contains(secret), "{shown}");
            }
            // The search looks for text that is really there: the stored form holds it.
            let json = serde_json::to_string(&bearer.to_stored()).unwrap();
            assert!(json.contains("TOKEN-VALUE-3") && json.contains("SHARED-VALUE-2"));
        }

        #[test]
        fn an_account_stored_by_the_previous_release_loads_and_stores_unchanged() {
            let old = r#"{"enabled":true,"url":"https://example.com/h","username":"u","password":"pw","auth_scheme":"slash","encoding":"json","time_zone":"UTC","attempt_timeout_ms":15000}"#;
            let stored: StoredPreferences = serde_json::from_str(old).unwrap();
            let p = Preferences::from_stored(&stored).unwrap();
            assert_eq!(p.auth_scheme(), AuthScheme::Slash);
            assert_eq!(p.method(), Method::Post);
            assert!(p.headers().is_empty() && p.key_names().is_default() && !p.has_token());
            assert_eq!(serde_json::to_string(&p.to_stored()).unwrap(), old);
        }
    }

    mod signing {
        use super::*;

        fn secret(fill: u8) -> SigningSecret {
            use base64::Engine as _;
            let text = base64::engine::general_purpose::STANDARD.encode([fill; 32]);
            format!("whsec_{text}").parse().unwrap()
        }

        fn held(p: &Preferences) -> Vec<String> {
            p.signing_secrets()
                .iter()
                .map(SigningSecret::to_whsec)
                .collect()
        }

        #[test]
        fn set_rotate_and_clear_keep_at_most_two_newest_first() {
            let (a, b, c) = (secret(1), secret(2), secret(3));
            let p = Preferences::default();
            let (p, changed) = p
                .with_update(PreferencesUpdate::new().signing_secret(a.clone()))
                .unwrap();
            assert_eq!(changed, ["signing_secret"]);
            assert_eq!(held(&p), [a.to_whsec()]);

            let (p, changed) = p
                .with_update(PreferencesUpdate::new().rotate_signing_secret(b.clone()))
                .unwrap();
            assert_eq!(changed, ["signing_secret"]);
            assert_eq!(held(&p), [b.to_whsec(), a.to_whsec()]);
            assert_eq!(p.signing_secret_count(), 2);

            let (p, _) = p
                .with_update(PreferencesUpdate::new().rotate_signing_secret(c.clone()))
                .unwrap();
            assert_eq!(held(&p), [c.to_whsec(), b.to_whsec()]);

            // Setting one alone drops the previous; setting the same again is no change.
            let (same, changed) = p
                .with_update(PreferencesUpdate::new().signing_secret(c.clone()))
                .unwrap();
            assert_eq!(held(&same), [c.to_whsec()]);
            assert_eq!(changed, ["signing_secret"]);
            let (_, changed) = same
                .with_update(PreferencesUpdate::new().signing_secret(c.clone()))
                .unwrap();
            assert!(changed.is_empty());

            // Ending a rotation: clear, then the new one alone.
            let (p, _) = p
                .with_update(
                    PreferencesUpdate::new()
                        .clear_signing_secrets()
                        .signing_secret(c.clone()),
                )
                .unwrap();
            assert_eq!(held(&p), [c.to_whsec()]);
            let (p, changed) = p
                .with_update(PreferencesUpdate::new().clear_signing_secrets())
                .unwrap();
            assert_eq!(changed, ["signing_secret"]);
            assert_eq!(p.signing_secret_count(), 0);

            // Rotating with none set just sets.
            let (p, _) = p
                .with_update(PreferencesUpdate::new().rotate_signing_secret(a.clone()))
                .unwrap();
            assert_eq!(held(&p), [a.to_whsec()]);
        }

        #[test]
        fn secrets_are_stored_in_order_and_never_shown() {
            let (a, b) = (secret(7), secret(8));
            let (p, _) = Preferences::default()
                .with_update(
                    PreferencesUpdate::new()
                        .signing_secret(a.clone())
                        .rotate_signing_secret(b.clone()),
                )
                .unwrap();
            let back = Preferences::from_stored(&p.to_stored()).unwrap();
            assert_eq!(held(&back), [b.to_whsec(), a.to_whsec()]);
            let update = PreferencesUpdate::new().signing_secret(a.clone());
            let shown = format!("{p:?} {back:?} {update:?}");
            for text in [a.to_whsec(), b.to_whsec()] {
                assert!(!shown.contains(&text[6..]), "{shown}");
            }
            assert!(shown.contains("signing_secrets: 2"), "{shown}");
        }

        #[test]
        fn preferences_stored_before_signing_still_load_and_bad_stored_secrets_do_not() {
            let old = r#"{"enabled":true,"url":"https://example.com/h","username":null,"password":null,
                "auth_scheme":"basic","encoding":"form","time_zone":"UTC","attempt_timeout_ms":15000}"#;
            let stored: StoredPreferences = serde_json::from_str(old).unwrap();
            let p = Preferences::from_stored(&stored).unwrap();
            assert_eq!(p.signing_secret_count(), 0);
            assert!(!p.mask_phone() && !p.omit_result_notes());

            let bad = old.replace("15000}", r#"15000,"signing_secrets":["not-a-secret"]}"#);
            let stored: StoredPreferences = serde_json::from_str(&bad).unwrap();
            let err = Preferences::from_stored(&stored).unwrap_err();
            assert!(!err.to_string().contains("not-a-secret"), "{err}");

            let s = secret(9).to_whsec();
            let three = old.replace(
                "15000}",
                &format!(r#"15000,"signing_secrets":["{s}","{s}","{s}"]}}"#),
            );
            let stored: StoredPreferences = serde_json::from_str(&three).unwrap();
            assert!(Preferences::from_stored(&stored).is_err());
        }
    }
}
