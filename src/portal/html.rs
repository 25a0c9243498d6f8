//! The pages' HTML: the one escaper every value a customer or receiver controls goes through,
//! the layout around each screen, and the webhook icon.
//!
//! No template engine: each screen writes its HTML with `write!` and wraps every value it did
//! not write itself in [`Esc`].

use std::fmt::{self, Write as _};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::PortalUser;
use crate::campaign::WebhookIndicator;

/// A value written as text into HTML (element content or a quoted attribute): `&`, `<`, `>`,
/// `"` and `'` become character references, so no value ever opens a tag or leaves its
/// attribute.
pub(super) struct Esc<'a>(pub(super) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// The portal's one stylesheet, inline and admitted by its hash in the
/// Content-Security-Policy ([`STYLE_HASH`]).
pub(super) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{background:#1d3557;color:#fff;padding:.6em 1em}header a{color:#fff;margin-right:1.2em}\
main{padding:1em;max-width:70em}label{display:block;margin:.6em 0 .2em;font-weight:600}\
input[type=text],input[type=password],input[type=url],select,textarea{width:28em;max-width:100%}\
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}\
.error{color:#b00020}.notice{background:#e8f5e9;padding:.5em}.problem{background:#fdecea;padding:.5em}\
.hint{color:#555;font-weight:400}.readonly{background:#fff8e1;padding:.5em}\
svg.icon{vertical-align:middle}pre{white-space:pre-wrap;background:#f4f4f4;padding:.5em}\
.filters label{display:inline;margin:0 .4em 0 1em}.filters select{width:auto}\
.nowrap{white-space:nowrap}td.id{font-family:monospace;font-size:.85em;word-break:break-all}\
td.answer{font-family:monospace;font-size:.85em;white-space:pre-wrap;word-break:break-all;\
min-width:16em;max-width:28em}";

/// The navigation: each screen's relative link and name.
const NAV: [(&str, &str); 4] = [
    ("settings", "Settings > Preferences > WebHook"),
    ("campaigns", "Campaign Management"),
    ("deliveries", "Deliveries"),
    ("dead-letters", "Dead letters"),
];

/// An HTML answer.
pub(super) struct Page {
    pub(super) status: StatusCode,
    pub(super) html: String,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            self.html,
        )
            .into_response()
    }
}

/// A whole page: the layout around `body`, with `status`. `user` is `None` on the page that
/// answers a request with no one signed in.
pub(super) fn page(status: StatusCode, title: &str, user: Option<&PortalUser>, body: &str) -> Page {
    let mut html = String::with_capacity(body.len() + 1024);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} - WebHook</title><style>{STYLE}</style></head><body><header><nav>",
        Esc(title)
    );
    for (href, name) in NAV {
        let current = if name == title {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(html, "<a href=\"{href}\"{current}>{}</a>", Esc(name));
    }
    if let Some(user) = user {
        let _ = write!(
            html,
            "<span>{} &middot; account {}</span>",
            Esc(user.principal.name()),
            Esc(user.account.as_str())
        );
    }
    let _ = write!(html, "</nav></header><main><h1>{}</h1>", Esc(title));
    if let Some(user) = user
        && !user.principal.is_administrator()
    {
        html.push_str(
            "<p class=\"readonly\" role=\"note\">Read only: changing webhook settings needs \
             full administrative permissions.</p>",
        );
    }
    html.push_str(body);
    html.push_str("</main></body></html>");
    Page { status, html }
}

/// An error page: the message, escaped, and nothing else of the screen.
pub(super) fn problem(status: StatusCode, user: Option<&PortalUser>, message: &str) -> Page {
    let title = status.canonical_reason().unwrap_or("Error");
    page(
        status,
        title,
        user,
        &format!("<p class=\"problem\" role=\"alert\">{}</p>", Esc(message)),
    )
}

/// A message at the top of a screen: `notice` for what went right, `problem` for what did not.
pub(super) fn message(out: &mut String, class: &str, text: &str) {
    let role = if class == "problem" {
        "alert"
    } else {
        "status"
    };
    let _ = write!(
        out,
        "<p class=\"{class}\" role=\"{role}\">{}</p>",
        Esc(text)
    );
}

/// The hidden CSRF field of every form.
pub(super) fn csrf_field(out: &mut String, token: &str) {
    let _ = write!(
        out,
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        Esc(token)
    );
}

/// The indicator in words: the icon's accessible name.
pub(super) fn indicator_name(indicator: WebhookIndicator) -> &'static str {
    match indicator {
        WebhookIndicator::Active => "Active",
        WebhookIndicator::Failing => "Failing",
        WebhookIndicator::Paused => "Paused",
        WebhookIndicator::Off(_) => "Off",
    }
}

/// The webhook icon, inline SVG, named by the indicator in words (`role="img"`, `aria-label`
/// and `<title>`), coloured by it.
pub(super) fn icon(out: &mut String, indicator: WebhookIndicator) {
    let name = indicator_name(indicator);
    let colour = match name {
        "Active" => "#2e7d32",
        "Failing" => "#c62828",
        "Paused" => "#ef6c00",
        _ => "#9e9e9e",
    };
    let _ = write!(
        out,
        "<svg class=\"icon\" role=\"img\" aria-label=\"{name}\" width=\"20\" height=\"20\" \
         viewBox=\"0 0 24 24\"><title>{name}</title>\
         <circle cx=\"6\" cy=\"17\" r=\"3\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\
         <circle cx=\"18\" cy=\"17\" r=\"3\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\
         <circle cx=\"12\" cy=\"6\" r=\"3\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\
         <path d=\"M12 9l-4.5 6M9 17h6M13.5 8.5l3 6\" stroke=\"{colour}\" stroke-width=\"2\" \
         fill=\"none\"/></svg>"
    );
}

/// A time in UTC to the millisecond, for a table row: `2026-12-08 00:13:04.838 UTC`.
pub(super) fn time_ms(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// A time, as RFC 3339 in UTC, or a dash.
pub(super) fn time(at: Option<jiff::Timestamp>) -> String {
    at.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_character_that_could_leave_text_or_an_attribute() {
        assert_eq!(
            Esc("<img src=x onerror=alert(1)>").to_string(),
            "&lt;img src=x onerror=alert(1)&gt;"
        );
        assert_eq!(Esc("a&b\"c'd").to_string(), "a&amp;b&quot;c&#39;d");
        assert_eq!(Esc("plain é").to_string(), "plain é");
        assert_eq!(Esc("").to_string(), "");
    }

    #[test]
    fn the_icon_is_named_by_the_indicator() {
        let mut out = String::new();
        icon(&mut out, WebhookIndicator::Paused);
        assert!(out.contains("aria-label=\"Paused\""));
        assert!(out.contains("<title>Paused</title>"));
    }
}
