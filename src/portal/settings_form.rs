//! Settings > Preferences > WebHook as data, with no I/O: what the screen and the JSON API show
//! of an account's preferences ([`SettingsView`], never a secret), the digest a save is
//! checked against, what a save asks ([`SettingsInput`], from the form or from JSON), and the
//! [`PreferencesUpdate`] it comes to: only the fields that differ from what is in force, so a
//! save changes (and audits) only what the person changed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::auth::AuthScheme;
use crate::encoding::Encoding;
use crate::error::Error;
use crate::policy::UrlPolicy;
use crate::preferences::{Method, Preferences, PreferencesUpdate, RetrySchedule, WebhookUrl};
use crate::signing::SigningSecret;

use super::csrf::Key;

/// One custom header as shown: a secret one's value never is.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct HeaderView {
    pub(super) name: String,
    pub(super) value: Option<String>,
    pub(super) secret: bool,
}

/// An account's preferences as the portal shows them: every value but the secrets, of which
/// only whether they are set.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct SettingsView {
    pub(super) enabled: bool,
    pub(super) url: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password_set: bool,
    pub(super) auth_scheme: &'static str,
    pub(super) token_set: bool,
    pub(super) api_key_header: Option<String>,
    pub(super) encoding: &'static str,
    pub(super) method: &'static str,
    pub(super) time_zone: String,
    pub(super) attempt_timeout_seconds: u64,
    pub(super) retry_schedule: String,
    pub(super) headers: Vec<HeaderView>,
    pub(super) key_names: BTreeMap<String, String>,
    pub(super) signing_secrets: usize,
    pub(super) mask_phone: bool,
    pub(super) omit_result_notes: bool,
    pub(super) new_campaigns_enabled: bool,
}

impl SettingsView {
    pub(super) fn of(p: &Preferences) -> SettingsView {
        SettingsView {
            enabled: p.enabled(),
            url: p.url().map(|u| u.as_str().to_owned()),
            username: p.username().map(str::to_owned),
            password_set: p.has_password(),
            auth_scheme: p.auth_scheme().as_str(),
            token_set: p.has_token(),
            api_key_header: p.api_key_header().map(str::to_owned),
            encoding: p.encoding().as_str(),
            method: p.method().as_str(),
            time_zone: p.time_zone_name().to_owned(),
            attempt_timeout_seconds: p.attempt_timeout().as_secs(),
            retry_schedule: format_delays(p.retry_schedule().delays()),
            headers: p
                .headers()
                .iter()
                .map(|h| HeaderView {
                    name: h.name().to_owned(),
                    value: h.value().map(str::to_owned),
                    secret: h.is_secret(),
                })
                .collect(),
            key_names: p
                .key_names()
                .renames()
                .map(|(k, n)| (k.to_owned(), n.to_owned()))
                .collect(),
            signing_secrets: p.signing_secret_count(),
            mask_phone: p.mask_phone(),
            omit_result_notes: p.omit_result_notes(),
            new_campaigns_enabled: p.new_campaigns_enabled(),
        }
    }

    /// The custom headers that are not secret, one `Name: value` a line, as the form edits them.
    pub(super) fn header_lines(&self) -> String {
        let mut lines = String::new();
        for h in self.headers.iter().filter(|h| !h.secret) {
            lines.push_str(&h.name);
            lines.push_str(": ");
            lines.push_str(h.value.as_deref().unwrap_or(""));
            lines.push('\n');
        }
        lines
    }

    /// The renamed keys, one `Key=name` a line.
    pub(super) fn key_name_lines(&self) -> String {
        self.key_names
            .iter()
            .map(|(k, n)| format!("{k}={n}\n"))
            .collect()
    }
}

/// The digest of the preferences a form was rendered from: everything shown, and the secrets
/// that are not (the password, token, Authorization value, secret header values and signing
/// secrets), under the portal's key. A change to any of them, by anyone, changes it.
pub(super) fn digest(key: &Key, p: &Preferences) -> String {
    let shown = serde_json::to_vec(&SettingsView::of(p)).unwrap_or_default();
    let auth_name = p.auth_header().map(|(name, _)| name.as_str().as_bytes());
    let secrets: Vec<String> = p
        .signing_secrets()
        .iter()
        .map(SigningSecret::to_whsec)
        .collect();
    // Every secret the form does not show (the password, the token, the Authorization value,
    // secret header values, signing secrets): a change to any of them makes the form stale.
    let mut parts: Vec<&[u8]> = vec![&shown, auth_name.unwrap_or_default()];
    parts.extend(p.secret_values());
    parts.extend(secrets.iter().map(String::as_bytes));
    key.digest(&parts)
}

/// What a save asks. `None` leaves a setting as it is; an empty password, token or signing
/// secret keeps the one stored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SettingsInput {
    /// The digest of the settings the form was rendered from (required).
    pub(super) digest: Option<String>,
    pub(super) enabled: Option<bool>,
    pub(super) url: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<Secretish>,
    pub(super) auth_scheme: Option<String>,
    pub(super) token: Option<Secretish>,
    pub(super) api_key_header: Option<String>,
    pub(super) encoding: Option<String>,
    pub(super) method: Option<String>,
    pub(super) time_zone: Option<String>,
    pub(super) attempt_timeout_seconds: Option<u64>,
    pub(super) retry_schedule: Option<String>,
    /// The custom headers that are not secret, one `Name: value` a line: replaces them all.
    pub(super) headers: Option<String>,
    /// Secret headers to stop sending, by name.
    #[serde(default)]
    pub(super) remove_secret_headers: Vec<String>,
    pub(super) secret_header_name: Option<String>,
    pub(super) secret_header_value: Option<Secretish>,
    /// The renamed keys, one `Key=name` a line: replaces every rename.
    pub(super) key_names: Option<String>,
    /// `replace`, `rotate` (the new secret signs beside the current one) or `clear`.
    pub(super) signing_action: Option<String>,
    pub(super) signing_secret: Option<Secretish>,
    pub(super) mask_phone: Option<bool>,
    pub(super) omit_result_notes: Option<bool>,
    pub(super) new_campaigns_enabled: Option<bool>,
}

/// A secret as a save carries it: zeroized when dropped, never in `Debug`.
#[derive(Default)]
pub(super) struct Secretish(zeroize::Zeroizing<String>);

impl<'de> serde::Deserialize<'de> for Secretish {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secretish::new)
    }
}

impl Secretish {
    fn new(value: String) -> Self {
        Secretish(zeroize::Zeroizing::new(value))
    }

    /// The secret, or `None` when the field was left empty (keep the stored one).
    fn given(&self) -> Option<&str> {
        (!self.0.is_empty()).then_some(self.0.as_str())
    }
}

impl std::fmt::Debug for Secretish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl SettingsInput {
    /// The settings form's fields (`application/x-www-form-urlencoded`): a checkbox left
    /// unticked is off, every text field is present. Returns the input and the CSRF token.
    pub(super) fn from_form(body: &[u8]) -> Result<(SettingsInput, Option<String>), String> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| "the form could not be read".to_owned())?;
        let mut fields: HashMap<String, String> = HashMap::new();
        let mut removed = Vec::new();
        for (name, value) in pairs {
            if name == "remove_secret_header" {
                removed.push(value);
            } else {
                fields.insert(name, value);
            }
        }
        let mut take = |name: &str| fields.remove(name);
        let csrf = take("csrf");
        let tick = |v: Option<String>| Some(v.is_some());
        let timeout = match take("attempt_timeout_seconds") {
            None => None,
            Some(s) => Some(
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| "Attempt timeout must be a whole number of seconds".to_owned())?,
            ),
        };
        let input = SettingsInput {
            digest: take("digest"),
            enabled: tick(take("enabled")),
            url: take("url"),
            username: take("username"),
            password: take("password").map(Secretish::new),
            auth_scheme: take("auth_scheme"),
            token: take("token").map(Secretish::new),
            api_key_header: take("api_key_header"),
            encoding: take("encoding"),
            method: take("method"),
            time_zone: take("time_zone"),
            attempt_timeout_seconds: timeout,
            retry_schedule: take("retry_schedule"),
            headers: take("headers"),
            remove_secret_headers: removed,
            secret_header_name: take("secret_header_name"),
            secret_header_value: take("secret_header_value").map(Secretish::new),
            key_names: take("key_names"),
            signing_action: take("signing_action"),
            signing_secret: take("signing_secret").map(Secretish::new),
            mask_phone: tick(take("mask_phone")),
            omit_result_notes: tick(take("omit_result_notes")),
            new_campaigns_enabled: tick(take("new_campaigns_enabled")),
        };
        Ok((input, csrf))
    }

    /// The values a form re-rendered after a refusal shows in place of the stored ones: what
    /// the person typed, secrets left out.
    pub(super) fn overlay(&self, view: &mut SettingsView) {
        let set = |target: &mut String, from: &Option<String>| {
            if let Some(v) = from {
                target.clone_from(v);
            }
        };
        if let Some(url) = &self.url {
            view.url = Some(url.clone());
        }
        if let Some(username) = &self.username {
            view.username = Some(username.clone());
        }
        if let Some(header) = &self.api_key_header {
            view.api_key_header = Some(header.clone());
        }
        set(&mut view.time_zone, &self.time_zone);
        set(&mut view.retry_schedule, &self.retry_schedule);
        view.enabled = self.enabled.unwrap_or(view.enabled);
    }
}

/// A value a save refused, and the field it belongs beside.
#[derive(Debug)]
pub(super) struct FieldError {
    pub(super) field: &'static str,
    pub(super) message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }

    /// A crate error, beside the field it names.
    pub(super) fn from_error(e: &Error) -> Option<FieldError> {
        let field = match e {
            Error::InvalidUrl { .. } | Error::AddressRefused { .. } | Error::UrlTooLong { .. } => {
                "url"
            }
            Error::InvalidHeader { .. } => "headers",
            Error::InvalidConfig { field, .. } => form_field(field),
            Error::Signature(_) => "signing_secret",
            _ => return None,
        };
        Some(FieldError::new(field, e.to_string()))
    }
}

/// The form's field for a field the crate names.
fn form_field(field: &str) -> &'static str {
    match field {
        "credentials" | "username" | "password" => "password",
        "token" | "api_key" => "token",
        "api_key_header" => "api_key_header",
        "auth_scheme" => "auth_scheme",
        "encoding" => "encoding",
        "method" => "method",
        "time_zone" => "time_zone",
        "attempt_timeout" => "attempt_timeout_seconds",
        "retry_schedule" => "retry_schedule",
        "headers" => "headers",
        "key_names" => "key_names",
        "signing_secret" => "signing_secret",
        _ => "form",
    }
}

/// The update `input` asks of preferences `p`: only what differs. A URL is checked against
/// `policy` here, so its refusal stands beside the field.
pub(super) fn to_update(
    input: &SettingsInput,
    p: &Preferences,
    policy: &UrlPolicy,
) -> Result<PreferencesUpdate, FieldError> {
    let mut u = PreferencesUpdate::new();
    let differs = |wanted: Option<bool>, now: bool| wanted.filter(|w| *w != now);
    if let Some(on) = differs(input.enabled, p.enabled()) {
        u = u.enabled(on);
    }
    if let Some(url) = input.url.as_deref().map(str::trim) {
        let now = p.url().map(WebhookUrl::as_str);
        if url.is_empty() {
            if now.is_some() {
                u = u.clear_url();
            }
        } else if now != Some(url) {
            let parsed =
                WebhookUrl::parse(url).map_err(|e| FieldError::new("url", e.to_string()))?;
            policy
                .check_url(parsed.as_url())
                .map_err(|e| FieldError::new("url", e.to_string()))?;
            u = u.url(url);
        }
    }
    u = credentials(input, p, u)?;
    u = authentication(input, p, u)?;
    if let Some(e) = &input.encoding {
        let e: Encoding = e
            .parse()
            .map_err(|e: Error| FieldError::new("encoding", e.to_string()))?;
        if e != p.encoding() {
            u = u.encoding(e);
        }
    }
    if let Some(m) = &input.method {
        let m: Method = m
            .parse()
            .map_err(|e: Error| FieldError::new("method", e.to_string()))?;
        if m != p.method() {
            u = u.method(m);
        }
    }
    if let Some(zone) = input.time_zone.as_deref().map(str::trim)
        && zone != p.time_zone_name()
    {
        u = u.time_zone(zone);
    }
    if let Some(secs) = input.attempt_timeout_seconds
        && Duration::from_secs(secs) != p.attempt_timeout()
    {
        u = u.attempt_timeout(Duration::from_secs(secs));
    }
    if let Some(text) = &input.retry_schedule {
        let delays = parse_delays(text).map_err(|m| FieldError::new("retry_schedule", m))?;
        if delays != p.retry_schedule().delays() {
            let schedule = RetrySchedule::new(delays)
                .map_err(|e| FieldError::new("retry_schedule", e.to_string()))?;
            u = u.retry_schedule(schedule);
        }
    }
    u = headers(input, p, u)?;
    u = key_names(input, p, u)?;
    u = signing(input, u)?;
    if let Some(on) = differs(input.mask_phone, p.mask_phone()) {
        u = u.mask_phone(on);
    }
    if let Some(on) = differs(input.omit_result_notes, p.omit_result_notes()) {
        u = u.omit_result_notes(on);
    }
    if let Some(on) = differs(input.new_campaigns_enabled, p.new_campaigns_enabled()) {
        u = u.new_campaigns_enabled(on);
    }
    Ok(u)
}

/// "User Name" and "Password": a password typed sets both; a user name changed alone needs
/// the password again (the stored one is never read back); both emptied remove them.
fn credentials(
    input: &SettingsInput,
    p: &Preferences,
    u: PreferencesUpdate,
) -> Result<PreferencesUpdate, FieldError> {
    let now = p.username().unwrap_or("");
    let username = input.username.as_deref().unwrap_or(now);
    let password = input.password.as_ref().and_then(Secretish::given);
    Ok(match password {
        Some(password) => u.credentials(username, password),
        None if username == now => u,
        None if username.is_empty() => u.clear_credentials(),
        None if p.has_password() => {
            return Err(FieldError::new(
                "password",
                "Type the password again to change the user name (the stored one is never shown).",
            ));
        }
        None => u.credentials(username, ""),
    })
}

/// The authorization kind, and the bearer token or API key with its header.
fn authentication(
    input: &SettingsInput,
    p: &Preferences,
    mut u: PreferencesUpdate,
) -> Result<PreferencesUpdate, FieldError> {
    let scheme = match &input.auth_scheme {
        Some(s) => s
            .parse::<AuthScheme>()
            .map_err(|e| FieldError::new("auth_scheme", e.to_string()))?,
        None => p.auth_scheme(),
    };
    let header = input
        .api_key_header
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty());
    let header_changed =
        header.is_some_and(|h| Some(h.to_ascii_lowercase().as_str()) != p.api_key_header());
    match input.token.as_ref().and_then(Secretish::given) {
        Some(token) => match scheme {
            AuthScheme::Bearer => u = u.bearer_token(token),
            AuthScheme::ApiKey => {
                let Some(header) = header.or(p.api_key_header()) else {
                    return Err(FieldError::new(
                        "api_key_header",
                        "An API key needs the header it is sent in.",
                    ));
                };
                u = u.api_key(header, token);
            }
            _ => {
                return Err(FieldError::new(
                    "token",
                    "A token or API key is used only with the Bearer or API key kinds.",
                ));
            }
        },
        None if header_changed && scheme == AuthScheme::ApiKey => {
            return Err(FieldError::new(
                "token",
                "Type the API key again to change the header it is sent in.",
            ));
        }
        None => {}
    }
    if scheme != p.auth_scheme() {
        u = u.auth_scheme(scheme);
    }
    Ok(u)
}

/// The custom headers: the lines replace the headers that are not secret; secret ones are
/// removed by name or added one at a time.
fn headers(
    input: &SettingsInput,
    p: &Preferences,
    mut u: PreferencesUpdate,
) -> Result<PreferencesUpdate, FieldError> {
    if let Some(text) = &input.headers {
        let mut wanted = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(FieldError::new(
                    "headers",
                    format!("Line {} must be `Name: value`.", i + 1),
                ));
            };
            wanted.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        for h in p.headers().iter().filter(|h| !h.is_secret()) {
            if !wanted.iter().any(|(name, _)| name == h.name()) {
                u = u.remove_header(h.name());
            }
        }
        for (name, value) in wanted {
            let same = p
                .headers()
                .iter()
                .any(|h| h.name() == name && h.value() == Some(value.as_str()));
            if !same {
                u = u.header(&name, value);
            }
        }
    }
    for name in &input.remove_secret_headers {
        u = u.remove_header(name);
    }
    if let Some(name) = input
        .secret_header_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let Some(value) = input
            .secret_header_value
            .as_ref()
            .and_then(Secretish::given)
        else {
            return Err(FieldError::new("headers", "A secret header needs a value."));
        };
        u = u.secret_header(name, value);
    }
    Ok(u)
}

/// The renamed keys: the lines replace every rename.
fn key_names(
    input: &SettingsInput,
    p: &Preferences,
    mut u: PreferencesUpdate,
) -> Result<PreferencesUpdate, FieldError> {
    let Some(text) = &input.key_names else {
        return Ok(u);
    };
    let mut wanted = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, name)) = line.split_once('=') else {
            return Err(FieldError::new(
                "key_names",
                format!(
                    "Line {} must be `Key=name`, for example PhoneCalled=phone.",
                    i + 1
                ),
            ));
        };
        wanted.insert(key.trim().to_owned(), name.trim().to_owned());
    }
    let now: BTreeMap<String, String> = p
        .key_names()
        .renames()
        .map(|(k, n)| (k.to_owned(), n.to_owned()))
        .collect();
    if wanted != now {
        u = u.clear_key_names();
        for (key, name) in &wanted {
            u = u.key_name(key, name);
        }
    }
    Ok(u)
}

/// The signing secret: replaced, rotated in beside the current one, or cleared.
fn signing(input: &SettingsInput, u: PreferencesUpdate) -> Result<PreferencesUpdate, FieldError> {
    let secret = input.signing_secret.as_ref().and_then(Secretish::given);
    let parse = |text: &str| {
        text.parse::<SigningSecret>()
            .map_err(|e| FieldError::new("signing_secret", e.to_string()))
    };
    Ok(
        match (input.signing_action.as_deref().unwrap_or(""), secret) {
            ("clear", _) => u.clear_signing_secrets(),
            ("rotate", Some(s)) => u.rotate_signing_secret(parse(s)?),
            ("replace" | "", Some(s)) => u.signing_secret(parse(s)?),
            ("rotate" | "replace", None) => {
                return Err(FieldError::new(
                    "signing_secret",
                    "Paste the new signing secret (whsec_...).",
                ));
            }
            ("" | "keep", None) => u,
            _ => return Err(FieldError::new("signing_secret", "Unknown signing action.")),
        },
    )
}

/// Delays as the form shows them: `5s, 5m, 30m, 2h`.
pub(super) fn format_delays(delays: &[Duration]) -> String {
    delays
        .iter()
        .map(|d| {
            let ms = d.as_millis();
            match ms {
                0 => "0s".to_owned(),
                ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
                ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
                ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
                ms => format!("{ms}ms"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Delays as typed: numbers with `ms`, `s`, `m`, `h` or `d`, separated by commas or spaces.
pub(super) fn parse_delays(text: &str) -> Result<Vec<Duration>, String> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let split = item
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(|| format!("`{item}` needs a unit: ms, s, m, h or d"))?;
            let (number, unit) = item.split_at(split);
            let n: u64 = number
                .parse()
                .map_err(|_| format!("`{item}` is not a number with a unit"))?;
            let ms = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(format!("`{item}`: the unit must be ms, s, m, h or d")),
            };
            n.checked_mul(ms)
                .map(Duration::from_millis)
                .ok_or_else(|| format!("`{item}` is too long"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_trip() {
        let delays = RetrySchedule::default().delays().to_vec();
        let text = format_delays(&delays);
        assert_eq!(parse_delays(&text).unwrap(), delays);
        assert_eq!(
            parse_delays("250ms 5s,1d").unwrap(),
            [
                Duration::from_millis(250),
                Duration::from_secs(5),
                Duration::from_secs(86_400)
            ]
        );
        assert!(parse_delays("5").is_err());
        assert!(parse_delays("5w").is_err());
    }

    #[test]
    fn the_digest_follows_every_secret_the_form_does_not_show() {
        let key = Key::random().unwrap();
        let base = || {
            PreferencesUpdate::new()
                .enabled(true)
                .url("https://crm.example/hook")
                .credentials("dialer", "s3cret-one")
                .bearer_token("tok-one-1234")
                .secret_header("X-Shared-Key", "key-one-1234")
        };
        let of = |u: PreferencesUpdate| digest(&key, &Preferences::from_update(u).unwrap());
        let first = of(base());
        assert_eq!(of(base()), first, "the same settings, the same digest");
        for (what, changed) in [
            (
                "the password, under bearer",
                base().credentials("dialer", "s3cret-two"),
            ),
            ("the token", base().bearer_token("tok-two-1234")),
            (
                "a secret header's value",
                base().secret_header("X-Shared-Key", "key-two-1234"),
            ),
        ] {
            assert_ne!(of(changed), first, "{what} changed and the digest did not");
        }
        assert!(
            !first.contains("s3cret"),
            "the digest is an HMAC, not the secret"
        );
    }

    #[test]
    fn an_unchanged_form_is_an_empty_update() {
        let p = Preferences::from_update(
            PreferencesUpdate::new()
                .enabled(true)
                .url("https://crm.example/hook")
                .credentials("dialer", "s3cret")
                .header("X-Tenant", "acme"),
        )
        .unwrap();
        let view = SettingsView::of(&p);
        let input = SettingsInput {
            enabled: Some(true),
            url: view.url.clone(),
            username: view.username.clone(),
            password: Some(Secretish::new(String::new())),
            auth_scheme: Some(view.auth_scheme.to_owned()),
            encoding: Some(view.encoding.to_owned()),
            method: Some(view.method.to_owned()),
            time_zone: Some(view.time_zone.clone()),
            attempt_timeout_seconds: Some(view.attempt_timeout_seconds),
            retry_schedule: Some(view.retry_schedule.clone()),
            headers: Some(view.header_lines()),
            key_names: Some(view.key_name_lines()),
            ..SettingsInput::default()
        };
        let update = to_update(&input, &p, &UrlPolicy::new()).unwrap();
        let (after, changed) = p.with_update(update).unwrap();
        assert!(changed.is_empty(), "{changed:?}");
        assert!(after.has_password());
    }

    #[test]
    fn a_user_name_changed_alone_needs_the_password() {
        let p = Preferences::from_update(PreferencesUpdate::new().credentials("dialer", "s3cret"))
            .unwrap();
        let input = SettingsInput {
            username: Some("other".into()),
            ..SettingsInput::default()
        };
        let err = to_update(&input, &p, &UrlPolicy::new()).unwrap_err();
        assert_eq!(err.field, "password");
    }

    #[test]
    fn the_digest_changes_with_a_secret_and_shows_none() {
        let key = Key::from_bytes(&[3; 32]);
        let a = Preferences::from_update(PreferencesUpdate::new().credentials("u", "one")).unwrap();
        let b = Preferences::from_update(PreferencesUpdate::new().credentials("u", "two")).unwrap();
        assert_ne!(digest(&key, &a), digest(&key, &b));
        assert!(!digest(&key, &a).contains("one"));
    }
}
