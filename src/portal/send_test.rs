//! "Send test": the product page's sample call result, sent now to the account's URL as a
//! delivery would send it, and what the receiver answered.
//!
//! Nothing is stored: the request is the crate's own ([`EncodedBody::encode`] and
//! [`build_request`] on the account's preferences in force, so the same encoding, key names,
//! authentication, custom headers and signature as a delivery), checked against the same
//! [`UrlPolicy`](crate::UrlPolicy) first, and sent through the dispatcher the dialer gave
//! [`PortalOptions::send_test`](super::PortalOptions::send_test), which adopted that policy
//! and checks every address it connects to.

use std::time::Instant;

use super::access::Refusal;
use super::{Portal, PortalUser};
use crate::dispatch::AttemptTimeout;
use crate::ids::DeliveryId;
use crate::payload::{CallResult, PAGE_SAMPLE_JSON};
use crate::request::{EncodedBody, build_request};
use crate::store::answer_excerpt;
use axum::http::StatusCode;

/// How much of the receiver's answer is shown.
const SHOWN_CHARS: usize = 500;

/// What came of a test send. Never a secret: the request is not shown, only its id.
#[derive(Debug, serde::Serialize)]
pub(super) struct TestAnswer {
    /// The `webhook-id` sent.
    pub(super) webhook_id: String,
    /// The receiver's HTTP status, if it answered.
    pub(super) status: Option<u16>,
    /// The start of its answer, as text (undecodable bytes replaced).
    pub(super) body_start: String,
    /// Why no answer came, if none did.
    pub(super) error: Option<String>,
    /// How long it took.
    pub(super) elapsed_ms: u64,
}

/// Sends the sample to the account's URL now.
pub(super) async fn send(portal: &Portal, user: &PortalUser) -> Result<TestAnswer, Refusal> {
    let Some(dispatcher) = &portal.options.dispatcher else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "Send test is not offered by this dialer.",
        ));
    };
    let account = portal.webhooks.account(&user.account).ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "Set the URL first, then send a test.",
        )
    })?;
    let preferences = account.preferences();
    let Some(url) = preferences.url() else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Set the URL first, then send a test.",
        ));
    };
    portal.webhooks.engine.policy().check_url(url.as_url())?;
    let call = CallResult::from_page_json(PAGE_SAMPLE_JSON, preferences.time_zone())?;
    let body = EncodedBody::encode(&call, preferences)?;
    let id = DeliveryId::generate();
    let mut request = build_request(preferences, &id, &body)?;
    request
        .extensions_mut()
        .insert(AttemptTimeout(preferences.attempt_timeout()));
    let started = Instant::now();
    let outcome = dispatcher.dispatch(request).await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(match outcome {
        Ok(response) => TestAnswer {
            webhook_id: id.to_string(),
            status: Some(response.status().as_u16()),
            // As the attempts log keeps it: the account's own secrets blanked out (a
            // receiver that echoes the request would show them).
            body_start: answer_excerpt(response.body_prefix(), &preferences.secret_values())
                .chars()
                .take(SHOWN_CHARS)
                .collect(),
            error: None,
            elapsed_ms,
        },
        Err(e) => TestAnswer {
            webhook_id: id.to_string(),
            status: None,
            body_start: String::new(),
            error: Some(e.to_string()),
            elapsed_ms,
        },
    })
}
