//! Dead letters: the deliveries that failed for good, replayed (same `webhook-id`) or removed,
//! one or all; "Resume" for a paused endpoint; and "Send test".

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::access::{Refusal, Signed, check_change};
use super::html::{self, Esc};
use super::send_test::{self, TestAnswer};
use super::{Portal, PortalUser, Shared};
use crate::delivery::{DeadLetter, Pause};
use crate::ids::{CampaignId, DeliveryId};
use crate::store::{DeliveryFilter, DeliveryState};

/// The screen's title.
const TITLE: &str = "Dead letters";

/// The account's dead letters (one campaign's, with `Some`), oldest first, at most
/// [`PortalOptions::dead_letters_shown`](super::PortalOptions::dead_letters_shown); `None`
/// for a principal who may not see them (the crate shows them to full administrators only).
pub(super) async fn list(
    portal: &Portal,
    user: &PortalUser,
    campaign: Option<&CampaignId>,
) -> Result<Option<Vec<DeadLetter>>, Refusal> {
    if !user.principal.is_administrator() {
        return Ok(None);
    }
    let mut filter = DeliveryFilter::account(user.account.clone());
    if let Some(campaign) = campaign {
        filter = filter.campaign(campaign.clone());
    }
    let letters = portal
        .webhooks
        .dead_letters(&user.principal, &filter, portal.options.dead_letters_shown)
        .await?;
    Ok(Some(letters))
}

/// The dead letters a replay or removal applies to: one by its id, or all of the account's.
/// Only failed deliveries: a removal here never drops a pending one.
pub(super) fn filter(user: &PortalUser, id: Option<&str>) -> Result<DeliveryFilter, Refusal> {
    let mut filter = DeliveryFilter::account(user.account.clone()).state(DeliveryState::Failed);
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        filter = filter.id(DeliveryId::new(id)?);
    }
    Ok(filter)
}

/// `GET /dead-letters`.
pub(super) async fn show(State(portal): State<Shared>, Signed(user): Signed, uri: Uri) -> Response {
    let notice = match uri.query() {
        Some("notice=replayed") => {
            Some("Replayed: they will be sent again with the same webhook-id.")
        }
        Some("notice=removed") => Some("Removed."),
        Some("notice=resumed") => Some("Resumed: the deliveries that waited are being sent."),
        Some("notice=not-paused") => Some("The endpoint was not paused."),
        _ => None,
    };
    screen(&portal, &user, notice, None).await
}

/// The screen, with a notice or the answer of a test send.
async fn screen(
    portal: &Portal,
    user: &PortalUser,
    notice: Option<&str>,
    test: Option<&TestAnswer>,
) -> Response {
    let letters = match list(portal, user, None).await {
        Ok(letters) => letters,
        Err(refusal) => return refusal.page(Some(user)),
    };
    let status = match portal.webhooks.status(&user.account, None).await {
        Ok(status) => status,
        Err(e) => return Refusal::from(e).page(Some(user)),
    };
    let buttons = Buttons {
        admin: user.principal.is_administrator(),
        token: portal.options.key.csrf_token(user),
    };
    let mut out = String::new();
    if let Some(notice) = notice {
        html::message(&mut out, "notice", notice);
    }
    if let Some(pause) = &status.endpoint.paused {
        paused(&mut out, pause, &buttons);
    }
    match &letters {
        None => out.push_str("<p>Dead letters are shown to full administrators only.</p>"),
        Some(letters) if letters.is_empty() => out.push_str("<p>No dead letter.</p>"),
        Some(letters) => {
            table(&mut out, letters, &buttons);
            actions(
                &mut out,
                letters.len(),
                portal.options.dead_letters_shown,
                &buttons,
            );
        }
    }
    if portal.options.dispatcher.is_some() {
        send_test_section(&mut out, test, &buttons);
    }
    html::page(StatusCode::OK, TITLE, Some(user), &out).into_response()
}

/// The screen's buttons: each a form of its own with the session's CSRF token, for a full
/// administrator only (none at all for a viewer).
struct Buttons {
    admin: bool,
    token: String,
}

impl Buttons {
    /// A button posting to `action`, for the dead letter `id` (all without one).
    fn put(&self, out: &mut String, action: &str, id: Option<&str>, label: &str) {
        if !self.admin {
            return;
        }
        let _ = write!(
            out,
            "<form method=\"post\" action=\"{action}\" class=\"inline\">"
        );
        html::csrf_field(out, &self.token);
        if let Some(id) = id {
            let _ = write!(
                out,
                "<input type=\"hidden\" name=\"id\" value=\"{}\">",
                Esc(id)
            );
        }
        let _ = write!(out, "<button type=\"submit\">{label}</button></form>");
    }
}

/// The paused endpoint: since when and why, and "Resume".
fn paused(out: &mut String, pause: &Pause, buttons: &Buttons) {
    let _ = write!(
        out,
        "<p class=\"problem\">The endpoint is paused since {} ({:?}): deliveries wait.</p>",
        Esc(&pause.at.to_string()),
        pause.reason
    );
    buttons.put(out, "resume", None, "Resume");
}

/// The dead letters' table, one row each.
fn table(out: &mut String, letters: &[DeadLetter], buttons: &Buttons) {
    out.push_str(
        "<p>What the receiver answered to each attempt: \
         <a href=\"deliveries?state=failed\">Deliveries, failed</a>.</p>\
         <table><thead><tr><th>webhook-id</th><th>Campaign</th><th>Submitted</th>\
         <th>Attempts</th><th>Last status</th><th>Last error</th><th>Last attempt</th>\
         <th></th></tr></thead><tbody>",
    );
    for d in letters {
        row(out, d, buttons);
    }
    out.push_str("</tbody></table>");
}

/// One dead letter, with its own "Replay" and "Remove".
fn row(out: &mut String, d: &DeadLetter, buttons: &Buttons) {
    let _ = write!(
        out,
        "<tr><td class=\"id\">{}</td><td>{}</td><td class=\"nowrap\">{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td class=\"nowrap\">{}</td><td class=\"nowrap\">",
        Esc(d.id.as_str()),
        Esc(d.campaign.as_str()),
        Esc(&html::time_ms(d.created_at)),
        d.attempts,
        d.last_status
            .map_or_else(|| "-".to_owned(), |s| s.to_string()),
        Esc(d.last_error.as_deref().unwrap_or("-")),
        Esc(&d
            .last_attempt_at
            .map_or_else(|| "-".to_owned(), html::time_ms)),
    );
    buttons.put(out, "replay", Some(d.id.as_str()), "Replay");
    buttons.put(out, "remove", Some(d.id.as_str()), "Remove");
    out.push_str("</td></tr>");
}

/// Under the table: whether more are left unlisted, and "Replay all" and "Remove all".
fn actions(out: &mut String, listed: usize, shown: usize, buttons: &Buttons) {
    if listed == shown {
        let _ = write!(
            out,
            "<p>The oldest {listed} are shown; replay or remove them to see the rest.</p>"
        );
    }
    out.push_str("<p>");
    buttons.put(out, "replay", None, "Replay all");
    buttons.put(out, "remove", None, "Remove all");
    out.push_str("</p>");
}

/// "Send test": what it does, its button, and the answer of the last one.
fn send_test_section(out: &mut String, test: Option<&TestAnswer>, buttons: &Buttons) {
    out.push_str(
        "<h2>Send test</h2><p>Sends the product page's sample call result to the URL now, \
         with the account's authentication and signing.</p>",
    );
    buttons.put(out, "send-test", None, "Send test");
    if let Some(test) = test {
        test_answer(out, test);
    }
}

/// What the receiver answered a test send, escaped.
fn test_answer(out: &mut String, test: &TestAnswer) {
    let _ = write!(
        out,
        "<div role=\"status\" id=\"send-test-answer\"><p>webhook-id {} &middot; {} ms &middot; ",
        Esc(&test.webhook_id),
        test.elapsed_ms
    );
    match (test.status, &test.error) {
        (Some(status), _) => {
            let _ = write!(out, "the receiver answered <strong>{status}</strong>.</p>");
        }
        (None, error) => {
            let _ = write!(
                out,
                "no answer: {}</p>",
                Esc(error.as_deref().unwrap_or("unknown"))
            );
        }
    }
    if test.status.is_some() {
        let _ = write!(out, "<pre>{}</pre>", Esc(&test.body_start));
    }
    out.push_str("</div>");
}

/// The form's fields: (csrf, id).
fn form_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    (get("csrf"), get("id"))
}

/// A change from this screen's forms: checked, made, and answered with a redirect to the
/// screen and its notice.
async fn change<F, Fut>(
    portal: Shared,
    user: PortalUser,
    headers: HeaderMap,
    body: Bytes,
    make: F,
) -> Response
where
    F: FnOnce(Shared, PortalUser, Option<String>) -> Fut,
    Fut: Future<Output = Result<&'static str, Refusal>>,
{
    let (csrf, id) = form_fields(&body);
    if let Err(refusal) = check_change(&portal, &user, &headers, csrf.as_deref()) {
        return refusal.page(Some(&user));
    }
    match make(portal, user.clone(), id).await {
        Ok(notice) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("dead-letters?notice={notice}"))],
        )
            .into_response(),
        Err(refusal) => refusal.page(Some(&user)),
    }
}

/// What an administrator does with dead letters.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    /// Back to pending, due now, with the same `webhook-id` and bytes.
    Replay,
    /// Dropped for good.
    Remove,
}

/// Replays or removes the dead letters `id` names (all without one); how many.
pub(super) async fn act(
    portal: &Portal,
    user: &PortalUser,
    action: Action,
    id: Option<&str>,
) -> Result<u64, Refusal> {
    let filter = filter(user, id)?;
    let count = match action {
        Action::Replay => portal.webhooks.replay(&user.principal, &filter).await?,
        Action::Remove => portal.webhooks.remove(&user.principal, &filter).await?,
    };
    Ok(count)
}

/// `POST /replay` and `POST /remove`.
pub(super) async fn act_form(
    action: Action,
    State(portal): State<Shared>,
    Signed(user): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change(portal, user, headers, body, |portal, user, id| async move {
        act(&portal, &user, action, id.as_deref()).await?;
        Ok(match action {
            Action::Replay => "replayed",
            Action::Remove => "removed",
        })
    })
    .await
}

/// `POST /resume`.
pub(super) async fn resume(
    State(portal): State<Shared>,
    Signed(user): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change(portal, user, headers, body, |portal, user, _| async move {
        let was_paused = portal
            .webhooks
            .resume_endpoint(&user.principal, &user.account)
            .await?;
        Ok(if was_paused { "resumed" } else { "not-paused" })
    })
    .await
}

/// `POST /send-test`: sends the sample now and shows the answer on the screen.
pub(super) async fn send_test(
    State(portal): State<Shared>,
    Signed(user): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (csrf, _) = form_fields(&body);
    if let Err(refusal) = check_change(&portal, &user, &headers, csrf.as_deref()) {
        return refusal.page(Some(&user));
    }
    match send_test::send(&portal, &user).await {
        Ok(answer) => screen(&portal, &user, None, Some(&answer)).await,
        Err(refusal) => refusal.page(Some(&user)),
    }
}
