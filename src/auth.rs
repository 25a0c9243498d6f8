//! Credentials, the two readings of the page's `authorization: base64(username/password)`, the
//! other ways a receiver may ask to be authenticated (none, `Bearer <token>`, an API key in a
//! header it names), and the [`Secret`] type that keeps passwords, tokens and keys out of
//! `Debug`, logs and errors.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::limits::MAX_TOKEN_BYTES;

/// A secret string: zeroized on drop, shown as `[redacted]` by `Debug` and `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret's text. Named loudly so that every use is easy to find in review.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The user name and password sent with every webhook POST. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: Secret,
}

impl Credentials {
    /// Credentials from a user name and password.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (field `username` or `password`) when either holds CR, LF or NUL,
    /// which would split or truncate the header. The error names the field, never its value.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Result<Self> {
        let username = username.into();
        let password = Secret::new(password);
        check_header_safe("username", &username)?;
        check_header_safe("password", password.expose_secret())?;
        Ok(Credentials { username, password })
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password, still wrapped.
    pub fn password(&self) -> &Secret {
        &self.password
    }

    /// The `Authorization` header value under `scheme`, marked sensitive so that `http`'s own
    /// `Debug` hides it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (field `username`) under [`AuthScheme::Basic`] when the user
    /// name contains `:`, which Basic authentication cannot carry; (field `auth_scheme`) under
    /// any scheme other than [`AuthScheme::Basic`] and [`AuthScheme::Slash`], which do not
    /// carry a user name and password.
    ///
    /// # Examples
    ///
    /// ```
    /// use call_result_webhook::auth::{AuthScheme, Credentials};
    ///
    /// let creds = Credentials::new("user", "passwd")?;
    /// let basic = creds.authorization(AuthScheme::Basic)?;
    /// assert_eq!(basic.to_str()?, "Basic dXNlcjpwYXNzd2Q=");
    /// let slash = creds.authorization(AuthScheme::Slash)?;
    /// assert_eq!(slash.to_str()?, "dXNlci9wYXNzd2Q="); // base64("user/passwd"), no scheme word
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn authorization(&self, scheme: AuthScheme) -> Result<HeaderValue> {
        let (prefix, separator) = match scheme {
            AuthScheme::Basic => {
                if self.username.contains(':') {
                    return Err(Error::config(
                        "username",
                        "contains ':', which Basic authentication cannot carry; \
                         change the user name or use the `slash` scheme",
                    ));
                }
                ("Basic ", ':')
            }
            AuthScheme::Slash => ("", '/'),
            AuthScheme::None | AuthScheme::Bearer | AuthScheme::ApiKey => {
                return Err(Error::config(
                    "auth_scheme",
                    format!(
                        "a user name and password are sent only under `basic` or `slash`, not `{}`",
                        scheme.as_str()
                    ),
                ));
            }
        };
        let mut raw = Zeroizing::new(String::with_capacity(
            self.username.len() + 1 + self.password.0.len(),
        ));
        raw.push_str(&self.username);
        raw.push(separator);
        raw.push_str(self.password.expose_secret());
        let mut value = Zeroizing::new(String::from(prefix));
        STANDARD.encode_string(raw.as_bytes(), &mut value);
        sensitive(&value, "authorization")
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// How the account authenticates to its receiver: which header carries what.
///
/// | scheme | on the wire |
/// |---|---|
/// | [`Basic`](Self::Basic) (default) | `Authorization: Basic base64(username ":" password)` |
/// | [`Slash`](Self::Slash) | `Authorization: base64(username "/" password)` |
/// | [`None`](Self::None) | no `Authorization` header, whatever credentials are stored |
/// | [`Bearer`](Self::Bearer) | `Authorization: Bearer <token>` |
/// | [`ApiKey`](Self::ApiKey) | `<header the account names>: <key>`, no `Authorization` |
///
/// Under `Basic` and `Slash`, an account with no user name and no password sends no
/// `Authorization` header. The token of `Bearer` and the key of `ApiKey` are set with
/// [`PreferencesUpdate::bearer_token`](crate::PreferencesUpdate::bearer_token) and
/// [`PreferencesUpdate::api_key`](crate::PreferencesUpdate::api_key); they are secrets, like
/// the password.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuthScheme {
    /// RFC 7617 Basic: `Authorization: Basic base64(username ":" password)`, UTF-8. The default:
    /// every receiver framework decodes it.
    #[default]
    Basic,
    /// The page taken literally: `Authorization: base64(username "/" password)` with no scheme
    /// word, for receivers built to the letter of the page.
    Slash,
    /// No authentication header at all, even when credentials are stored (they are kept, for
    /// a switch back).
    None,
    /// RFC 6750: `Authorization: Bearer <token>`.
    Bearer,
    /// An API key in a header the account names, for example `X-Api-Key: <key>`; no
    /// `Authorization` header.
    #[serde(rename = "api-key")]
    ApiKey,
}

impl AuthScheme {
    /// The name used in configuration and on the command line: `basic`, `slash`, `none`,
    /// `bearer` or `api-key`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthScheme::Basic => "basic",
            AuthScheme::Slash => "slash",
            AuthScheme::None => "none",
            AuthScheme::Bearer => "bearer",
            AuthScheme::ApiKey => "api-key",
        }
    }
}

impl std::str::FromStr for AuthScheme {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "basic" => Ok(AuthScheme::Basic),
            "slash" => Ok(AuthScheme::Slash),
            "none" => Ok(AuthScheme::None),
            "bearer" => Ok(AuthScheme::Bearer),
            "api-key" => Ok(AuthScheme::ApiKey),
            _ => Err(Error::config(
                "auth_scheme",
                "expected `basic`, `slash`, `none`, `bearer` or `api-key`",
            )),
        }
    }
}

/// Checks a bearer token or API key: not empty, at most [`MAX_TOKEN_BYTES`], and only
/// characters a header value may hold (no CR, LF, NUL or other control character). The error
/// names `field`, never the value.
pub(crate) fn check_token(field: &'static str, token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(Error::config(field, "is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Error::config(
            field,
            format!("longer than {MAX_TOKEN_BYTES} bytes"),
        ));
    }
    if token.chars().any(char::is_control) {
        return Err(Error::config(
            field,
            "contains a control character (CR, LF, NUL, tab...)",
        ));
    }
    Ok(())
}

/// `Authorization: Bearer <token>`, marked sensitive. The token was checked by
/// [`check_token`].
pub(crate) fn bearer(token: &Secret) -> Result<HeaderValue> {
    let mut value = Zeroizing::new(String::with_capacity(7 + token.0.len()));
    value.push_str("Bearer ");
    value.push_str(token.expose_secret());
    sensitive(&value, "token")
}

/// A header value marked sensitive, so that `http`'s own `Debug` hides it. The error names
/// `field`, never the value.
pub(crate) fn sensitive(value: &str, field: &'static str) -> Result<HeaderValue> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| Error::config(field, "not a valid header value"))?;
    header.set_sensitive(true);
    Ok(header)
}

/// Refuses CR, LF and NUL, which would split or truncate a header built from `value`.
pub(crate) fn check_header_safe(field: &'static str, value: &str) -> Result<()> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(Error::config(field, "contains CR, LF or NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(header: &HeaderValue, prefix: &str) -> String {
        let b64 = header.to_str().unwrap().strip_prefix(prefix).unwrap();
        String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap()
    }

    #[test]
    fn basic_is_rfc7617_with_utf8() {
        let creds = Credentials::new("José", "pässwörd✓").unwrap();
        let h = creds.authorization(AuthScheme::Basic).unwrap();
        assert_eq!(decode(&h, "Basic "), "José:pässwörd✓");
        assert!(h.is_sensitive());
    }

    #[test]
    fn slash_is_the_page_literally() {
        let creds = Credentials::new("user", "passwd").unwrap();
        let h = creds.authorization(AuthScheme::Slash).unwrap();
        assert_eq!(h.to_str().unwrap(), STANDARD.encode("user/passwd"));
        assert!(!h.to_str().unwrap().contains(' '));
    }

    #[test]
    fn colon_in_username_is_refused_under_basic_only() {
        let creds = Credentials::new("a:b", "secret-pw").unwrap();
        let err = creds.authorization(AuthScheme::Basic).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                field: "username",
                ..
            }
        ));
        assert!(!err.to_string().contains("a:b"));
        assert!(creds.authorization(AuthScheme::Slash).is_ok());
        // A colon in the password is fine: RFC 7617 splits at the first colon.
        let creds = Credentials::new("ab", "x:y").unwrap();
        assert_eq!(
            decode(&creds.authorization(AuthScheme::Basic).unwrap(), "Basic "),
            "ab:x:y"
        );
    }

    #[test]
    fn control_characters_are_refused_naming_the_field_not_the_value() {
        for (user, pass, field) in [
            ("a\r\nX-Evil: 1", "pw", "username"),
            ("user", "hunter2\nX-Evil: 1", "password"),
            ("user", "hunter2\0", "password"),
        ] {
            let err = Credentials::new(user, pass).unwrap_err();
            match &err {
                Error::InvalidConfig { field: f, .. } => assert_eq!(*f, field),
                other => panic!("{other:?}"),
            }
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("X-Evil"),
                "{shown}"
            );
        }
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let creds = Credentials::new("user", "s3cr3t-Pa55").unwrap();
        let shown = format!("{creds:?} {} {:?}", creds.password(), creds.password());
        assert!(!shown.contains("s3cr3t-Pa55"), "{shown}");
        assert!(shown.contains("user"));
        let header = creds.authorization(AuthScheme::Basic).unwrap();
        assert!(!format!("{header:?}").contains(header.to_str().unwrap()));
    }

    #[test]
    fn scheme_names_parse_and_round_trip() {
        for scheme in [
            AuthScheme::Basic,
            AuthScheme::Slash,
            AuthScheme::None,
            AuthScheme::Bearer,
            AuthScheme::ApiKey,
        ] {
            assert_eq!(scheme.as_str().parse::<AuthScheme>().unwrap(), scheme);
            let json = serde_json::to_string(&scheme).unwrap();
            assert_eq!(json, format!("\"{}\"", scheme.as_str()));
            assert_eq!(serde_json::from_str::<AuthScheme>(&json).unwrap(), scheme);
        }
        assert!("Bearer".parse::<AuthScheme>().is_err());
        assert!("digest".parse::<AuthScheme>().is_err());
    }

    #[test]
    fn credentials_are_sent_only_under_basic_and_slash() {
        let creds = Credentials::new("user", "passwd").unwrap();
        for scheme in [AuthScheme::None, AuthScheme::Bearer, AuthScheme::ApiKey] {
            assert!(matches!(
                creds.authorization(scheme),
                Err(Error::InvalidConfig {
                    field: "auth_scheme",
                    ..
                })
            ));
        }
    }

    #[test]
    fn tokens_are_checked_without_echo() {
        assert!(check_token("token", "abc.DEF-123_~+/=").is_ok());
        let long = "S".repeat(MAX_TOKEN_BYTES + 1);
        for bad in [
            "",
            "SECRET\r\nX-Evil: 1",
            "SECRET\0",
            "SECRET\t",
            long.as_str(),
        ] {
            let err = check_token("token", bad).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { field: "token", .. }));
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains("SECRET") && !shown.contains("SSS"),
                "{shown}"
            );
        }
        let h = bearer(&Secret::new("t0k3n")).unwrap();
        assert_eq!(h.to_str().unwrap(), "Bearer t0k3n");
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("t0k3n"));
    }
}
