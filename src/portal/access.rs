//! Who may see and change what: the signed-in user from the request's extensions (`401`
//! without), the checks every change passes (`Origin`, CSRF token, full administrative
//! permission), the headers every answer carries, and how a refusal is answered.

use std::sync::LazyLock;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::html::{self, STYLE};
use super::{Portal, PortalUser};
use crate::error::{Error, Result};

/// The header that carries the CSRF token of a JSON API change.
pub(super) const CSRF_HEADER: &str = "x-csrf-token";

/// The Content-Security-Policy of every answer: nothing may load or run but the portal's own
/// inline stylesheet, admitted by its hash; no script at all; forms post only to the portal's
/// origin; no page may frame it.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
    HeaderValue::try_from(format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    ))
    .expect("the policy is ASCII")
});

/// Adds the security headers to every answer, refusals included.
pub(super) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: under it a browser sends `Origin: null` on the portal's own form
        // posts, which the Origin check refuses. `same-origin` sends no referrer elsewhere.
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Why a request is not answered as asked: its status and a message for the person. The
/// message never holds a secret (the crate's errors name fields, never values).
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }

    /// The refusal as an HTML page.
    pub(super) fn page(&self, user: Option<&PortalUser>) -> Response {
        html::problem(self.status, user, &self.message).into_response()
    }

    /// The refusal as a JSON answer, `{"error": message}`.
    pub(super) fn json(&self) -> Response {
        json(self.status, &serde_json::json!({ "error": self.message }))
    }
}

impl From<Error> for Refusal {
    /// A crate error as the person sees it: `403` for a permission, `409` for a conflict,
    /// `400` for a value refused, `500` for a store failure (its cause left out: it may name
    /// the database).
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            Error::SettingsConflict { .. } | Error::SettingsStale { .. } => StatusCode::CONFLICT,
            Error::InvalidConfig { .. }
            | Error::InvalidId { .. }
            | Error::InvalidUrl { .. }
            | Error::InvalidHeader { .. }
            | Error::AddressRefused { .. }
            | Error::UrlTooLong { .. }
            | Error::NotConfigured { .. }
            | Error::BodyTooLarge { .. }
            | Error::InvalidCallResult { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(error = %e, "portal: the request failed");
            "the webhook settings could not be read or saved; try again".to_owned()
        } else {
            e.to_string()
        };
        Refusal { status, message }
    }
}

/// A JSON answer.
pub(super) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The signed-in user, from the request's extensions. Without one, `401` (as JSON under
/// `/api/`, as a page elsewhere).
pub(super) struct Signed(pub(super) PortalUser);

impl<S: Send + Sync> FromRequestParts<S> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        match parts.extensions.get::<PortalUser>() {
            Some(user) => Ok(Signed(user.clone())),
            None => {
                let refusal = Refusal::new(StatusCode::UNAUTHORIZED, "Please sign in first.");
                Err(if parts.uri.path().starts_with("/api/") {
                    refusal.json()
                } else {
                    refusal.page(None)
                })
            }
        }
    }
}

/// The checks every change passes, in this order: it comes from the portal's origin, it
/// carries the session's CSRF token, and its principal has full administrative permission.
pub(super) fn check_change(
    portal: &Portal,
    user: &PortalUser,
    headers: &HeaderMap,
    token: Option<&str>,
) -> std::result::Result<(), Refusal> {
    if !origin_allowed(portal.options.origin.as_deref(), headers) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "This change did not come from this site's own pages (its Origin is missing or \
             another site's), so it was not made.",
        ));
    }
    let token_ok = token.is_some_and(|t| portal.options.key.csrf_matches(user, t));
    if !token_ok {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this site (its security token does \
             not match); reload the page and try again.",
        ));
    }
    if !user.principal.is_administrator() {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "Changing webhook settings needs full administrative permissions.",
        ));
    }
    Ok(())
}

/// Whether the request's `Origin` is the configured origin or, with none configured, names the
/// request's own `Host`. A missing or `null` origin is refused.
fn origin_allowed(configured: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match configured {
        Some(configured) => origin.eq_ignore_ascii_case(configured),
        None => {
            let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            authority.is_some_and(|a| !a.is_empty() && a.eq_ignore_ascii_case(host))
        }
    }
}

/// Checks a configured origin: `scheme://host[:port]`, as a browser sends it.
pub(super) fn check_origin_setting(origin: &str) -> Result<()> {
    let parsed =
        url::Url::parse(origin).map_err(|_| Error::config("origin", "is not a URL's origin"))?;
    if parsed.origin().ascii_serialization() != origin {
        return Err(Error::config(
            "origin",
            "must be scheme://host[:port] with no path, as a browser's Origin header",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        h
    }

    #[test]
    fn origin_must_be_the_configured_one_or_the_host() {
        let host = "dialer.example:8443";
        assert!(origin_allowed(
            None,
            &headers(Some("https://dialer.example:8443"), host)
        ));
        assert!(!origin_allowed(
            None,
            &headers(Some("https://evil.example"), host)
        ));
        assert!(!origin_allowed(None, &headers(Some("null"), host)));
        assert!(!origin_allowed(None, &headers(None, host)));
        let configured = Some("https://dialer.example");
        assert!(origin_allowed(
            configured,
            &headers(Some("https://dialer.example"), "x")
        ));
        assert!(!origin_allowed(
            configured,
            &headers(Some("http://dialer.example"), "x")
        ));
    }

    #[test]
    fn a_configured_origin_is_an_origin() {
        assert!(check_origin_setting("https://dialer.example").is_ok());
        assert!(check_origin_setting("http://127.0.0.1:8080").is_ok());
        assert!(check_origin_setting("https://dialer.example/portal").is_err());
        assert!(check_origin_setting("dialer.example").is_err());
    }
}
