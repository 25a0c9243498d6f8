//! The headers an account adds to every request ([`CustomHeader`]), and the checks every header
//! name and value an account chooses passes: an HTTP token, never a header the crate sets
//! itself ([`is_reserved_header`]), no control character, within the limits.

use std::fmt;

use http::{HeaderName, HeaderValue};

use crate::auth::Secret;
use crate::error::{Error, Result};
use crate::limits::{MAX_CUSTOM_HEADERS, MAX_HEADER_NAME_BYTES, MAX_HEADER_VALUE_BYTES};

/// One header an account adds to every request: a name that is an HTTP token (at most
/// [`MAX_HEADER_NAME_BYTES`], never one the crate sets itself, see [`is_reserved_header`]) and a
/// value with no control character (at most [`MAX_HEADER_VALUE_BYTES`]).
///
/// A secret header's value is zeroized on drop, shown as `[redacted]` by `Debug`, never
/// returned by [`value`](Self::value), and sent as a sensitive [`HeaderValue`]. Names are
/// case-insensitive and sent in lower case.
///
/// # Examples
///
/// ```
/// use call_result_webhook::{Error, preferences::CustomHeader};
///
/// let tenant = CustomHeader::new("X-Tenant", "acme")?;
/// assert_eq!((tenant.name(), tenant.value()), ("x-tenant", Some("acme")));
///
/// let signed = CustomHeader::secret("X-Shared-Secret", "s3cr3t")?;
/// assert_eq!(signed.value(), None);
/// assert!(!format!("{signed:?}").contains("s3cr3t"));
///
/// // The crate's own headers cannot be replaced, and the error names the header.
/// let err = CustomHeader::new("Content-Type", "text/plain").unwrap_err();
/// assert!(matches!(&err, Error::InvalidHeader { name, .. } if name == "Content-Type"));
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone)]
pub struct CustomHeader {
    name: HeaderName,
    text: Secret,
    secret: bool,
    value: HeaderValue,
}

impl CustomHeader {
    /// A header whose value is not secret: shown in `Debug` and by [`value`](Self::value).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidHeader`] naming the header when the name is empty, longer than
    /// [`MAX_HEADER_NAME_BYTES`], not an HTTP token or reserved ([`is_reserved_header`]), or
    /// when the value is longer than [`MAX_HEADER_VALUE_BYTES`] or holds CR, LF, NUL or another
    /// control character. The error never holds the value.
    pub fn new(name: &str, value: impl Into<String>) -> Result<CustomHeader> {
        Self::build(name, value.into(), false)
    }

    /// A header whose value is secret (a shared key, say): zeroized on drop, redacted in every
    /// `Debug`, sent as a sensitive header value.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn secret(name: &str, value: impl Into<String>) -> Result<CustomHeader> {
        Self::build(name, value.into(), true)
    }

    fn build(name: &str, value: String, secret: bool) -> Result<CustomHeader> {
        let text = Secret::new(value);
        let header_name = check_header_name(name)?;
        let mut value = check_header_value(name, text.expose_secret())?;
        value.set_sensitive(secret);
        Ok(CustomHeader {
            name: header_name,
            text,
            secret,
            value,
        })
    }

    /// The header's name, in lower case.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The header's value, or `None` for a secret header.
    pub fn value(&self) -> Option<&str> {
        (!self.secret).then(|| self.text.expose_secret())
    }

    /// Whether the value is secret.
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    pub(crate) fn header_name(&self) -> &HeaderName {
        &self.name
    }

    /// The value's text, secret or not: for the stored form only.
    pub(crate) fn header_value(&self) -> &HeaderValue {
        &self.value
    }

    pub(crate) fn text(&self) -> &Secret {
        &self.text
    }
}

impl PartialEq for CustomHeader {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.secret == other.secret && self.text == other.text
    }
}

impl Eq for CustomHeader {}

impl fmt::Debug for CustomHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.secret {
            "[redacted]"
        } else {
            self.text.expose_secret()
        };
        write!(f, "{}: {value:?}", self.name)
    }
}

/// Whether the crate sets the header `name` itself (case-insensitive), so an account may not
/// set it: `Authorization`, `Content-Type`, `Content-Length`, `Host`, `Transfer-Encoding`,
/// `Connection`, `User-Agent`, every `webhook-*`, and the other headers that belong to the
/// connection rather than the request (`Proxy-Authorization`, `Proxy-Connection`,
/// `Keep-Alive`, `TE`, `Trailer`, `Upgrade`, `Expect`).
///
/// ```
/// use call_result_webhook::preferences::is_reserved_header;
///
/// assert!(is_reserved_header("authorization") && is_reserved_header("Webhook-Signature"));
/// assert!(!is_reserved_header("X-Api-Key"));
/// ```
pub fn is_reserved_header(name: &str) -> bool {
    const RESERVED: [&str; 14] = [
        "authorization",
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
        "connection",
        "user-agent",
        "proxy-authorization",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
    ];
    let prefix = "webhook-";
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name))
        || name
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// A header name as an error may show it: the name itself when it is a short HTTP token,
/// otherwise the part before the first character a name may not hold (where a pasted value
/// would start), then `…`.
fn shown_name(name: &str) -> String {
    let valid = name
        .char_indices()
        .find(|&(_, c)| !is_tchar(c))
        .map_or(name.len(), |(i, _)| i)
        .min(MAX_HEADER_NAME_BYTES);
    if valid == name.len() {
        name.to_owned()
    } else {
        format!("{}…", &name[..valid])
    }
}

/// RFC 9110 `tchar`: the characters of a token.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Checks a header name an account chose (a custom header, an API key's header).
pub(crate) fn check_header_name(name: &str) -> Result<HeaderName> {
    let refuse = |reason: String| Error::InvalidHeader {
        name: shown_name(name),
        reason,
    };
    if name.is_empty() {
        return Err(refuse("the name is empty".into()));
    }
    if name.len() > MAX_HEADER_NAME_BYTES {
        return Err(refuse(format!(
            "the name is longer than {MAX_HEADER_NAME_BYTES} bytes"
        )));
    }
    if !name.chars().all(is_tchar) {
        return Err(refuse(
            "the name is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~ only)".into(),
        ));
    }
    if is_reserved_header(name) {
        return Err(refuse(
            "the crate sets this header itself; it cannot be set per account".into(),
        ));
    }
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| refuse("not a header name".into()))
}

/// Checks a custom header's value; the error names the header, never the value.
fn check_header_value(name: &str, value: &str) -> Result<HeaderValue> {
    let refuse = |reason: String| Error::InvalidHeader {
        name: shown_name(name),
        reason,
    };
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err(refuse(format!(
            "the value is longer than {MAX_HEADER_VALUE_BYTES} bytes"
        )));
    }
    if value.contains(['\r', '\n', '\0']) {
        return Err(refuse("the value contains CR, LF or NUL".into()));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse("the value contains a control character".into()));
    }
    HeaderValue::from_str(value).map_err(|_| refuse("not a valid header value".into()))
}

/// Checks a set of custom headers as a whole: at most [`MAX_CUSTOM_HEADERS`].
pub(crate) fn check_header_count(count: usize) -> Result<()> {
    if count > MAX_CUSTOM_HEADERS {
        return Err(Error::config(
            "headers",
            format!("at most {MAX_CUSTOM_HEADERS} custom headers"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_malformed_header_names_are_refused_naming_the_header() {
        for name in [
            "Authorization",
            "CONTENT-TYPE",
            "content-length",
            "Host",
            "Transfer-Encoding",
            "connection",
            "User-Agent",
            "webhook-id",
            "Webhook-Signature",
            "WEBHOOK-ANYTHING",
            "Proxy-Authorization",
            "TE",
        ] {
            let err = CustomHeader::new(name, "v").unwrap_err();
            assert!(
                matches!(&err, Error::InvalidHeader { name: n, .. } if n == name),
                "{name}: {err}"
            );
        }
        let long = "X".repeat(MAX_HEADER_NAME_BYTES + 1);
        let long_shown = format!("{}…", &long[..MAX_HEADER_NAME_BYTES]);
        for (name, shown) in [
            ("", ""),
            ("X-Token: SECRETVALUE", "X-Token…"),
            ("X Token", "X…"),
            ("X-Tökén", "X-T…"),
            ("X-Evil\r\nHost", "X-Evil…"),
            (long.as_str(), long_shown.as_str()),
        ] {
            let err = CustomHeader::new(name, "v").unwrap_err();
            match &err {
                Error::InvalidHeader { name: n, .. } => assert_eq!(n, shown, "{name:?}"),
                other => panic!("{other:?}"),
            }
            assert!(!format!("{err} {err:?}").contains("SECRETVALUE"));
        }
        assert!(CustomHeader::new(&"X".repeat(MAX_HEADER_NAME_BYTES), "v").is_ok());
        assert!(CustomHeader::new("X-Custom_Thing.1!#$%&'*+^`|~", "v").is_ok());
        assert!(is_reserved_header("webhook-") && !is_reserved_header("webhook"));
    }

    #[test]
    fn header_values_refuse_line_breaks_controls_and_length_without_echo() {
        let long = "v".repeat(MAX_HEADER_VALUE_BYTES + 1);
        for value in [
            "SECRETVALUE\r\nX-Evil: 1",
            "SECRETVALUE\n",
            "SECRETVALUE\r",
            "SECRET\0VALUE",
            "SECRET\u{7f}VALUE",
            "SECRET\u{1b}VALUE",
            long.as_str(),
        ] {
            for secret in [false, true] {
                let made = if secret {
                    CustomHeader::secret("X-Thing", value)
                } else {
                    CustomHeader::new("X-Thing", value)
                };
                let err = made.unwrap_err();
                assert!(
                    matches!(&err, Error::InvalidHeader { name, .. } if name == "X-Thing"),
                    "{err}"
                );
                let shown = format!("{err} {err:?}");
                assert!(
                    !shown.contains("SECRET") && !shown.contains("vvvv"),
                    "{shown}"
                );
            }
        }
        let fine = "v".repeat(MAX_HEADER_VALUE_BYTES);
        assert!(CustomHeader::new("X-Thing", fine).is_ok());
        assert!(CustomHeader::new("X-Thing", "").is_ok());
        assert!(CustomHeader::new("X-Thing", "a b\u{e9}✓").is_ok());
    }
}
