//! The JSON API beside each screen, for a dialer that draws its own: the same reads, the same
//! changes through the same checks (`Origin`, the CSRF token in the `x-csrf-token` header,
//! full administrative permission), never a secret.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /api/session` | `{principal, administrator, account, csrf_token}` |
//! | `GET /api/settings` | `{settings, digest, audit}` |
//! | `POST /api/settings` | a body as the form's fields (`digest` required); `{settings, digest, audit}`, or `400 {error, field}`, or `409 {error}` |
//! | `GET /api/campaigns` | `[{campaign, enabled, status, off_reason, stats}]` |
//! | `POST /api/campaign-webhook` | `{campaign, enabled}`; `{campaign, enabled}` |
//! | `GET /api/deliveries[?campaign=C&state=S&before=N]` | `{status, campaigns, dead_letters, attempts, next}`: `status` and `dead_letters` of one campaign with `campaign` (`dead_letters` is `null` for a viewer); `attempts`, newest first, each `{cursor, at, webhook_id, campaign, attempt, state, status, outcome, duration_ms, answer}`; `next`, the `before` of the next page or `null` |
//! | `GET /api/dead-letters` | `[dead letter]`, `403` for a viewer |
//! | `POST /api/replay`, `POST /api/remove` | `{id}` or `{}` for all; `{count}` |
//! | `POST /api/resume` | `{was_paused}` |
//! | `POST /api/send-test` | `{webhook_id, status, body_start, error, elapsed_ms}` |

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;

use super::access::{CSRF_HEADER, Refusal, Signed, check_change, json};
use super::campaigns::{self, Switch};
use super::dead_letters::{self, Action, list};
use super::deliveries::{self, Filter};
use super::settings::{NotSaved, STALE, apply, current};
use super::settings_form::{SettingsInput, SettingsView, digest};
use super::{Portal, PortalUser, Shared, send_test};

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/session", get(session))
        .route("/api/settings", get(settings).post(save_settings))
        .route("/api/campaigns", get(campaign_list))
        .route("/api/campaign-webhook", post(campaign_switch))
        .route("/api/deliveries", get(deliveries))
        .route("/api/dead-letters", get(dead_letter_list))
        .route(
            "/api/replay",
            post(|s: State<Shared>, u: Signed, h: HeaderMap, b: Bytes| {
                act(Action::Replay, s, u, h, b)
            }),
        )
        .route(
            "/api/remove",
            post(|s: State<Shared>, u: Signed, h: HeaderMap, b: Bytes| {
                act(Action::Remove, s, u, h, b)
            }),
        )
        .route("/api/resume", post(resume))
        .route("/api/send-test", post(send))
}

/// The CSRF token an API change carries.
fn token(headers: &HeaderMap) -> Option<&str> {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
}

/// Checks a change and reads its JSON body (`{}` when empty).
fn change<T: serde::de::DeserializeOwned>(
    portal: &Portal,
    user: &PortalUser,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Refusal> {
    check_change(portal, user, headers, token(headers))?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the JSON body could not be read: {e}"),
        )
    })
}

fn answer<T: serde::Serialize>(result: Result<T, Refusal>) -> Response {
    match result {
        Ok(value) => json(StatusCode::OK, &value),
        Err(refusal) => refusal.json(),
    }
}

async fn session(State(portal): State<Shared>, Signed(user): Signed) -> Response {
    json(
        StatusCode::OK,
        &json!({
            "principal": user.principal.name(),
            "administrator": user.principal.is_administrator(),
            "account": user.account,
            "csrf_token": portal.options.key.csrf_token(&user),
        }),
    )
}

/// The settings in force, their digest and audit log.
fn settings_answer(portal: &Portal, user: &PortalUser) -> serde_json::Value {
    let (preferences, audit) = current(portal, user);
    json!({
        "settings": SettingsView::of(&preferences),
        "digest": digest(&portal.options.key, &preferences),
        "audit": audit,
    })
}

async fn settings(State(portal): State<Shared>, Signed(user): Signed) -> Response {
    json(StatusCode::OK, &settings_answer(&portal, &user))
}

async fn save_settings(
    State(portal): State<Shared>,
    Signed(user): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let input: SettingsInput = match change(&portal, &user, &headers, &body) {
        Ok(input) => input,
        Err(refusal) => return refusal.json(),
    };
    match apply(&portal, &user, &input).await {
        Ok(_) => json(StatusCode::OK, &settings_answer(&portal, &user)),
        Err(NotSaved::Stale) => json(StatusCode::CONFLICT, &json!({ "error": STALE })),
        Err(NotSaved::Field(field)) => json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": field.message, "field": field.field }),
        ),
        Err(NotSaved::Refused(refusal)) => refusal.json(),
    }
}

async fn campaign_list(State(portal): State<Shared>, Signed(user): Signed) -> Response {
    answer(campaigns::rows(&portal, &user).await)
}

async fn campaign_switch(
    State(portal): State<Shared>,
    Signed(user): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let switch: Switch = match change(&portal, &user, &headers, &body) {
        Ok(switch) => switch,
        Err(refusal) => return refusal.json(),
    };
    answer(
        campaigns::apply(&portal, &user, &switch)
            .await
            .map(|()| json!({ "campaign": switch.campaign, "enabled": switch.enabled })),
    )
}

async fn deliveries(State(portal): State<Shared>, Signed(user): Signed, uri: Uri) -> Response {
    let result = async {
        let query = Filter::of(&uri)?;
        let status = portal
            .webhooks
            .status(&user.account, query.campaign.as_ref())
            .await?;
        let campaigns = campaigns::rows(&portal, &user).await?;
        let letters = list(&portal, &user, query.campaign.as_ref()).await?;
        let page = deliveries::page(&portal, &user, &query).await?;
        let attempts: Vec<serde_json::Value> = page
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "cursor": a.cursor.to_string(),
                    "at": a.at,
                    "webhook_id": a.delivery,
                    "campaign": a.campaign,
                    "attempt": a.number,
                    "state": a.state,
                    "status": a.status,
                    "outcome": deliveries::outcome(a),
                    "duration_ms": a.duration.as_millis() as u64,
                    "answer": a.answer,
                })
            })
            .collect();
        Ok(json!({
            "status": status,
            "campaigns": campaigns,
            "dead_letters": letters,
            "attempts": attempts,
            "next": page.next.map(|c| c.to_string()),
        }))
    };
    answer(result.await)
}

async fn dead_letter_list(State(portal): State<Shared>, Signed(user): Signed) -> Response {
    answer(list(&portal, &user, None).await.and_then(|letters| {
        letters.ok_or_else(|| {
            Refusal::new(
                StatusCode::FORBIDDEN,
                "Dead letters are shown to full administrators only.",
            )
        })
    }))
}

/// One dead letter by its id, or all without one.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Which {
    id: Option<String>,
}

/// `POST /api/replay` and `POST /api/remove`.
async fn act(
    action: Action,
    State(portal): State<Shared>,
    Signed(user): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let which: Which = match change(&portal, &user, &headers, &body) {
        Ok(which) => which,
        Err(refusal) => return refusal.json(),
    };
    answer(
        dead_letters::act(&portal, &user, action, which.id.as_deref())
            .await
            .map(|count| json!({ "count": count })),
    )
}

async fn resume(
    State(portal): State<Shared>,
    Signed(user): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refusal) = change::<serde_json::Value>(&portal, &user, &headers, &body) {
        return refusal.json();
    }
    let result = portal
        .webhooks
        .resume_endpoint(&user.principal, &user.account)
        .await
        .map(|was_paused| json!({ "was_paused": was_paused }))
        .map_err(Refusal::from);
    answer(result)
}

async fn send(
    State(portal): State<Shared>,
    Signed(user): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refusal) = change::<serde_json::Value>(&portal, &user, &headers, &body) {
        return refusal.json();
    }
    answer(send_test::send(&portal, &user).await)
}

// The dead letters module's filter is the one both the form and the API use.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Principal;

    #[test]
    fn a_removal_applies_to_failed_deliveries_of_the_signed_in_account_only() {
        let user = PortalUser::new(Principal::administrator("alice"), "acme", "s");
        let f = dead_letters::filter(&user, Some("msg_1")).unwrap();
        assert_eq!(f.account.as_str(), "acme");
        assert_eq!(f.state, Some(crate::store::DeliveryState::Failed));
        assert_eq!(f.id.as_ref().map(|i| i.as_str()), Some("msg_1"));
        assert!(
            super::super::dead_letters::filter(&user, None)
                .unwrap()
                .id
                .is_none()
        );
    }
}
