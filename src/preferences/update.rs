//! A change to an account's preferences: [`PreferencesUpdate`], the builder an administrator
//! fills in, and how it is applied (every value checked, the first error kept, the fields
//! that changed named for the audit).

use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};
use jiff::tz::TimeZone;

use super::{
    CustomHeader, MAX_SIGNING_SECRETS, Method, Preferences, RetrySchedule, WebhookUrl,
    check_header_count, check_header_name,
};
use crate::auth::{self, AuthScheme, Credentials, Secret};
use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::payload::KeyNames;
use crate::signing::SigningSecret;

/// The names of the fields a change changed, as audited.
type Changed = Vec<&'static str>;

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
    pub(super) token: Option<Secret>,
    pub(super) api_key_header: Option<HeaderName>,
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

    pub(super) fn keep<T>(&mut self, result: Result<T>) -> Option<T> {
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
    /// itself ([`is_reserved_header`](super::is_reserved_header)), or is also a
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

impl Preferences {
    /// The preferences after `update`, and the names of the fields it changed. `self` is left
    /// as it was whatever happens.
    pub(crate) fn with_update(
        &self,
        update: PreferencesUpdate,
    ) -> Result<(Preferences, Vec<&'static str>)> {
        let PreferencesUpdate {
            enabled,
            url,
            credentials,
            auth_scheme,
            encoding,
            time_zone,
            attempt_timeout,
            retry_schedule,
            signing,
            mask_phone,
            omit_result_notes,
            new_campaigns_enabled,
            method,
            key_renames,
            reset_key_names,
            headers,
            token,
            api_key_header,
            error,
        } = update;
        if let Some(err) = error {
            return Err(err);
        }
        let mut next = self.clone();
        let mut changed = Vec::new();
        let c = &mut changed;
        replace(&mut next.enabled, enabled, "enabled", c);
        replace(&mut next.url, url, "url", c);
        if let Some(credentials) = credentials {
            next.set_credentials(credentials, c);
        }
        replace(&mut next.auth_scheme, auth_scheme, "auth_scheme", c);
        replace(&mut next.encoding, encoding, "encoding", c);
        replace(&mut next.time_zone, time_zone, "time_zone", c);
        replace(
            &mut next.attempt_timeout,
            attempt_timeout,
            "attempt_timeout",
            c,
        );
        replace(
            &mut next.retry_schedule,
            retry_schedule,
            "retry_schedule",
            c,
        );
        next.change_signing_secrets(signing, c);
        replace(&mut next.mask_phone, mask_phone, "mask_phone", c);
        replace(
            &mut next.omit_result_notes,
            omit_result_notes,
            "omit_result_notes",
            c,
        );
        let new_campaigns = new_campaigns_enabled;
        replace(
            &mut next.new_campaigns_enabled,
            new_campaigns,
            "new_campaigns_enabled",
            c,
        );
        replace(&mut next.method, method, "method", c);
        next.rename_keys(reset_key_names, key_renames, c)?;
        next.change_headers(headers, c)?;
        replace(&mut next.token, token.map(Some), "token", c);
        replace(
            &mut next.api_key_header,
            api_key_header.map(Some),
            "api_key_header",
            c,
        );
        // Validated as a whole, so the order of the setters never matters.
        next.auth_header = next.derive_auth_header()?;
        Ok((next, changed))
    }

    /// New credentials (or none): the user name and the password are audited apart.
    fn set_credentials(&mut self, credentials: Option<Credentials>, changed: &mut Changed) {
        if self.username() != credentials.as_ref().map(Credentials::username) {
            changed.push("username");
        }
        let old_password = self.credentials.as_ref().map(Credentials::password);
        if old_password != credentials.as_ref().map(Credentials::password) {
            changed.push("password");
        }
        self.credentials = credentials;
    }

    /// The signing secrets after `changes`, applied in order; newest first, at most
    /// [`MAX_SIGNING_SECRETS`].
    fn change_signing_secrets(&mut self, changes: Vec<SigningChange>, changed: &mut Changed) {
        let before = self.signing_secrets.clone();
        for change in changes {
            match change {
                SigningChange::Set(secret) => self.signing_secrets = vec![secret],
                SigningChange::Rotate(secret) => {
                    self.signing_secrets.insert(0, secret);
                    self.signing_secrets.truncate(MAX_SIGNING_SECRETS);
                }
                SigningChange::Clear => self.signing_secrets.clear(),
            }
        }
        if self.signing_secrets != before {
            changed.push("signing_secret");
        }
    }

    /// The key names after `renames`, on top of the current ones unless `reset`.
    fn rename_keys(
        &mut self,
        reset: bool,
        renames: Vec<(String, String)>,
        changed: &mut Changed,
    ) -> Result<()> {
        if !reset && renames.is_empty() {
            return Ok(());
        }
        let kept: Vec<(String, String)> = if reset {
            Vec::new()
        } else {
            self.key_names
                .renames()
                .map(|(k, n)| (k.to_owned(), n.to_owned()))
                .collect()
        };
        // Duplicates are checked on the result, so two keys can swap names in one update.
        let names = KeyNames::from_renames(kept.into_iter().chain(renames))?;
        replace(&mut self.key_names, Some(names), "key_names", changed);
        Ok(())
    }

    /// The custom headers after `changes`, applied in order, checked as a whole.
    fn change_headers(&mut self, changes: Vec<HeaderChange>, changed: &mut Changed) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let before = self.headers.clone();
        for change in changes {
            match change {
                HeaderChange::Set(header) => {
                    match self.headers.iter_mut().find(|h| h.name() == header.name()) {
                        Some(slot) => *slot = header,
                        None => self.headers.push(header),
                    }
                }
                HeaderChange::Remove(name) => self.headers.retain(|h| h.header_name() != name),
                HeaderChange::Clear => self.headers.clear(),
            }
        }
        check_header_count(self.headers.len())?;
        if self.headers != before {
            changed.push("headers");
        }
        Ok(())
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
}

/// Puts `value`, if given, in `slot`, naming `field` in `changed` when that changes it.
fn replace<T: PartialEq>(
    slot: &mut T,
    value: Option<T>,
    field: &'static str,
    changed: &mut Changed,
) {
    if let Some(value) = value {
        if *slot != value {
            changed.push(field);
        }
        *slot = value;
    }
}
