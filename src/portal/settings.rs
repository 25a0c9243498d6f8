//! Settings > Preferences > WebHook: the screen, its save, and the save the JSON API shares.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::access::{Refusal, Signed, check_change};
use super::html::{self, Esc};
use super::settings_form::{FieldError, SettingsInput, SettingsView, digest, to_update};
use super::{Portal, PortalUser, Shared};
use crate::error::Error;
use crate::preferences::{AuditRecord, Preferences};
use std::sync::Arc;

/// The screen's title, as the product page names it.
pub(super) const TITLE: &str = "Settings > Preferences > WebHook";

/// The account's preferences in force here (the defaults for an account never saved), with
/// its audit log.
pub(super) fn current(portal: &Portal, user: &PortalUser) -> (Preferences, Vec<AuditRecord>) {
    match portal.webhooks.account(&user.account) {
        Some(a) => (a.preferences().clone(), a.audit_log().to_vec()),
        None => (Preferences::default(), Vec::new()),
    }
}

/// Why a save was not made.
pub(super) enum NotSaved {
    /// A value refused, beside its field: `400`.
    Field(FieldError),
    /// The settings changed since the form was rendered: `409`.
    Stale,
    /// Refused before anything was looked at, or the save failed.
    Refused(Refusal),
}

/// The message of a save over someone else's newer change.
pub(super) const STALE: &str = "Someone else saved these settings after this page was loaded. \
     Nothing was saved: the form now shows their settings; make your change again.";

/// Saves `input` over the account's preferences, if they are still those the input's digest
/// names: through the crate's compare-and-set (as
/// [`Webhooks::update_preferences`](crate::Webhooks::update_preferences)), audited with the
/// principal's name. The digest is checked twice: against the settings in force here, before
/// the update is made from them, and against the settings as stored, inside the
/// compare-and-set, so that a save made through another process in between is not
/// overwritten unseen.
pub(super) async fn apply(
    portal: &Shared,
    user: &PortalUser,
    input: &SettingsInput,
) -> Result<AuditRecord, NotSaved> {
    let (preferences, _) = current(portal, user);
    let Some(given) = input.digest.clone() else {
        return Err(NotSaved::Stale);
    };
    let fresh = |portal: &Portal, p: &Preferences, given: &str| {
        super::csrf::Key::same(&digest(&portal.options.key, p), given)
    };
    if !fresh(portal, &preferences, &given) {
        return Err(NotSaved::Stale);
    }
    let update =
        to_update(input, &preferences, portal.webhooks.engine.policy()).map_err(NotSaved::Field)?;
    let theirs = Arc::clone(portal);
    portal
        .webhooks
        .update_preferences_if(&user.principal, &user.account, update, move |stored| {
            fresh(&theirs, stored, &given)
        })
        .await
        .map_err(|e| match e {
            Error::SettingsStale { .. } => NotSaved::Stale,
            e => match FieldError::from_error(&e) {
                Some(field) => NotSaved::Field(field),
                None => NotSaved::Refused(Refusal::from(e)),
            },
        })
}

/// `GET /settings`.
pub(super) async fn show(State(portal): State<Shared>, Signed(user): Signed, uri: Uri) -> Response {
    let notice = match uri.query() {
        Some("notice=saved") => Some("Saved."),
        _ => None,
    };
    let (preferences, audit) = current(&portal, &user);
    let mut body = String::new();
    if let Some(notice) = notice {
        html::message(&mut body, "notice", notice);
    }
    let view = SettingsView::of(&preferences);
    let digest = digest(&portal.options.key, &preferences);
    form(&mut body, &portal, &user, &view, &digest, None);
    audit_log(&mut body, &audit);
    html::page(StatusCode::OK, TITLE, Some(&user), &body).into_response()
}

/// `POST /settings`: the form's save. On success, back to the screen (`303`); otherwise the
/// form again, with why.
pub(super) async fn save(
    State(portal): State<Shared>,
    Signed(user): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (input, csrf) = match SettingsInput::from_form(&body) {
        Ok(parsed) => parsed,
        Err(message) => {
            return Refusal::new(StatusCode::BAD_REQUEST, message).page(Some(&user));
        }
    };
    if let Err(refusal) = check_change(&portal, &user, &headers, csrf.as_deref()) {
        return refusal.page(Some(&user));
    }
    let (status, problem, field) = match apply(&portal, &user, &input).await {
        Ok(_) => {
            return (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "settings?notice=saved")],
            )
                .into_response();
        }
        Err(NotSaved::Stale) => (StatusCode::CONFLICT, STALE.to_owned(), None),
        Err(NotSaved::Field(field)) => (
            StatusCode::BAD_REQUEST,
            "Nothing was saved: a value was refused.".to_owned(),
            Some(field),
        ),
        Err(NotSaved::Refused(refusal)) => (refusal.status, refusal.message, None),
    };
    let (preferences, audit) = current(&portal, &user);
    let mut view = SettingsView::of(&preferences);
    if field.is_some() {
        // Refused, not stale: show what was typed, so it can be corrected.
        input.overlay(&mut view);
    }
    let digest = digest(&portal.options.key, &preferences);
    let mut page = String::new();
    html::message(&mut page, "problem", &problem);
    form(&mut page, &portal, &user, &view, &digest, field.as_ref());
    audit_log(&mut page, &audit);
    html::page(status, TITLE, Some(&user), &page).into_response()
}

/// The form. A viewer's is disabled, with no Save and no token.
fn form(
    out: &mut String,
    portal: &Portal,
    user: &PortalUser,
    v: &SettingsView,
    digest: &str,
    error: Option<&FieldError>,
) {
    let admin = user.principal.is_administrator();
    out.push_str("<form method=\"post\" action=\"settings\">");
    if admin {
        html::csrf_field(out, &portal.options.key.csrf_token(user));
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"digest\" value=\"{}\">",
            Esc(digest)
        );
        out.push_str("<fieldset>");
    } else {
        out.push_str("<fieldset disabled>");
    }
    page_fields(out, v, error);
    authorization(out, v, error);
    request(out, v, error);
    custom_headers(out, v, error);
    keys_and_switches(out, v, error);
    signing_secret(out, v, error);
    err(out, error, "form");
    out.push_str("</fieldset>");
    if admin {
        out.push_str("<p><button type=\"submit\">Save</button></p>");
    }
    out.push_str("</form>");
}

/// The message of `error`, if it belongs beside `field`.
fn err(out: &mut String, error: Option<&FieldError>, field: &str) {
    if let Some(e) = error.filter(|e| e.field == field) {
        let _ = write!(
            out,
            "<p class=\"error\" id=\"{field}-error\" role=\"alert\">{}</p>",
            Esc(&e.message)
        );
    }
}

/// The product page's own fields: Enable Web Hook, URL, User Name, Password.
fn page_fields(out: &mut String, v: &SettingsView, error: Option<&FieldError>) {
    checkbox(out, "enabled", "Enable Web Hook", v.enabled);
    text(out, "url", "URL", v.url.as_deref().unwrap_or(""), "url");
    err(out, error, "url");
    text(
        out,
        "username",
        "User Name",
        v.username.as_deref().unwrap_or(""),
        "text",
    );
    secret(out, "password", "Password", v.password_set);
    err(out, error, "password");
}

/// Authorization: its kind, the token or API key, and the API key's header.
fn authorization(out: &mut String, v: &SettingsView, error: Option<&FieldError>) {
    out.push_str("<h2>Authorization</h2>");
    select(
        out,
        "auth_scheme",
        "Authorization kind",
        v.auth_scheme,
        &[
            ("basic", "Basic (user name and password)"),
            ("slash", "base64(username/password), as the page's sample"),
            ("none", "None"),
            ("bearer", "Bearer token"),
            ("api-key", "API key in a header"),
        ],
    );
    err(out, error, "auth_scheme");
    secret(out, "token", "Bearer token or API key", v.token_set);
    err(out, error, "token");
    text(
        out,
        "api_key_header",
        "API key header",
        v.api_key_header.as_deref().unwrap_or(""),
        "text",
    );
    err(out, error, "api_key_header");
}

/// Request: method, body encoding, time zone, attempt timeout and retry schedule.
fn request(out: &mut String, v: &SettingsView, error: Option<&FieldError>) {
    out.push_str("<h2>Request</h2>");
    select(
        out,
        "method",
        "Method",
        v.method,
        &[
            ("post", "POST (keys in the body)"),
            ("get", "GET (keys in the query)"),
        ],
    );
    err(out, error, "method");
    select(
        out,
        "encoding",
        "Body encoding",
        v.encoding,
        &[
            ("form", "Form (application/x-www-form-urlencoded)"),
            ("json", "JSON"),
        ],
    );
    err(out, error, "encoding");
    text(out, "time_zone", "Time zone", &v.time_zone, "text");
    err(out, error, "time_zone");
    text(
        out,
        "attempt_timeout_seconds",
        "Attempt timeout (seconds, 1 to 30)",
        &v.attempt_timeout_seconds.to_string(),
        "text",
    );
    err(out, error, "attempt_timeout_seconds");
    text(
        out,
        "retry_schedule",
        "Retry schedule (delays before each retry, e.g. 5s, 5m, 30m, 2h)",
        &v.retry_schedule,
        "text",
    );
    err(out, error, "retry_schedule");
}

/// Request, continued: the custom headers, the secret ones' removal (by name, never a value)
/// and a secret header added.
fn custom_headers(out: &mut String, v: &SettingsView, error: Option<&FieldError>) {
    textarea(
        out,
        "headers",
        "Custom headers (one Name: value a line)",
        &v.header_lines(),
    );
    for h in v.headers.iter().filter(|h| h.secret) {
        let _ = write!(
            out,
            "<label><input type=\"checkbox\" name=\"remove_secret_header\" value=\"{0}\"> \
             Stop sending the secret header {0} <span class=\"hint\">(its value is set and \
             never shown)</span></label>",
            Esc(&h.name)
        );
    }
    text(
        out,
        "secret_header_name",
        "Add a secret header: name",
        "",
        "text",
    );
    secret(
        out,
        "secret_header_value",
        "Add a secret header: value",
        false,
    );
    err(out, error, "headers");
}

/// Request, continued: key names, and what is masked, left out or switched on.
fn keys_and_switches(out: &mut String, v: &SettingsView, error: Option<&FieldError>) {
    textarea(
        out,
        "key_names",
        "Key names (one Key=name a line, e.g. PhoneCalled=phone)",
        &v.key_name_lines(),
    );
    err(out, error, "key_names");
    checkbox(out, "mask_phone", "Mask PhoneCalled", v.mask_phone);
    checkbox(
        out,
        "omit_result_notes",
        "Leave out ResultNotes",
        v.omit_result_notes,
    );
    checkbox(
        out,
        "new_campaigns_enabled",
        "Enable WebHook on campaigns never set",
        v.new_campaigns_enabled,
    );
}

/// Signing secret: how many are set (never one of them), and a change.
fn signing_secret(out: &mut String, v: &SettingsView, error: Option<&FieldError>) {
    out.push_str("<h2>Signing secret</h2>");
    let _ = write!(
        out,
        "<p>{}</p>",
        match v.signing_secrets {
            0 => "Requests are not signed.",
            1 => "A signing secret is set (never shown).",
            _ => "Two signing secrets are set, during a rotation (never shown).",
        }
    );
    select(
        out,
        "signing_action",
        "Signing secret change",
        "keep",
        &[
            ("keep", "Keep"),
            ("replace", "Replace with the secret below"),
            (
                "rotate",
                "Rotate: sign with the secret below beside the current one",
            ),
            ("clear", "Remove every signing secret"),
        ],
    );
    secret(
        out,
        "signing_secret",
        "New signing secret (whsec_...)",
        false,
    );
    err(out, error, "signing_secret");
}

fn checkbox(out: &mut String, name: &str, label: &str, on: bool) {
    let checked = if on { " checked" } else { "" };
    let _ = write!(
        out,
        "<label><input type=\"checkbox\" name=\"{name}\" value=\"on\"{checked}> {}</label>",
        Esc(label)
    );
}

fn text(out: &mut String, name: &str, label: &str, value: &str, kind: &str) {
    let _ = write!(
        out,
        "<label for=\"{name}\">{}</label><input type=\"{kind}\" id=\"{name}\" name=\"{name}\" \
         value=\"{}\" aria-describedby=\"{name}-error\">",
        Esc(label),
        Esc(value)
    );
}

/// A secret's field: always empty; the hint says whether one is set, and that empty keeps it.
fn secret(out: &mut String, name: &str, label: &str, set: bool) {
    let hint = if set {
        "set; leave empty to keep it"
    } else {
        "not set"
    };
    let _ = write!(
        out,
        "<label for=\"{name}\">{} <span class=\"hint\">({hint})</span></label>\
         <input type=\"password\" id=\"{name}\" name=\"{name}\" value=\"\" \
         autocomplete=\"new-password\" aria-describedby=\"{name}-error\">",
        Esc(label)
    );
}

fn textarea(out: &mut String, name: &str, label: &str, value: &str) {
    let _ = write!(
        out,
        "<label for=\"{name}\">{}</label><textarea id=\"{name}\" name=\"{name}\" rows=\"3\" \
         aria-describedby=\"{name}-error\">{}</textarea>",
        Esc(label),
        Esc(value)
    );
}

fn select(out: &mut String, name: &str, label: &str, value: &str, options: &[(&str, &str)]) {
    let _ = write!(
        out,
        "<label for=\"{name}\">{}</label><select id=\"{name}\" name=\"{name}\" \
         aria-describedby=\"{name}-error\">",
        Esc(label)
    );
    for (option, text) in options {
        let selected = if *option == value { " selected" } else { "" };
        let _ = write!(
            out,
            "<option value=\"{option}\"{selected}>{}</option>",
            Esc(text)
        );
    }
    out.push_str("</select>");
}

/// The latest changes: who, when, which fields (never a value).
fn audit_log(out: &mut String, audit: &[AuditRecord]) {
    out.push_str("<h2>Changes</h2>");
    if audit.is_empty() {
        out.push_str("<p>No change yet.</p>");
        return;
    }
    out.push_str("<table><thead><tr><th>When</th><th>Who</th><th>What</th></tr></thead><tbody>");
    for record in audit.iter().rev().take(20) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            Esc(&html::time(Some(record.at))),
            Esc(&record.principal),
            Esc(&record.fields.join(", "))
        );
    }
    out.push_str("</tbody></table>");
}
