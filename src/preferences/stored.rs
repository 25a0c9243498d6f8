//! What is stored of an account's preferences: [`StoredPreferences`], every value in the
//! clear (password, token, secrets), zeroized on drop; older stored forms still load.

use std::collections::BTreeMap;
use std::time::Duration;

use super::MAX_SIGNING_SECRETS;
use super::{Method, Preferences, PreferencesUpdate, RetrySchedule, check_header_name};
use crate::auth::{self, AuthScheme, Secret};
use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::signing::SigningSecret;

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

impl Preferences {
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
