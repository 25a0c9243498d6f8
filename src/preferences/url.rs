//! The receiver's URL, as an account sets it.

use std::fmt;

use crate::error::{Error, Result};
use crate::limits::{MAX_GET_URL_LEN, MAX_URL_LEN};

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
