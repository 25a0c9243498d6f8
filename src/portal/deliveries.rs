//! Deliveries: what the store can tell of the account's deliveries today.
//!
//! The attempts log the issue asks for (every attempt, newest first, paged, filtered by state
//! and campaign, delivered ones kept for a retention period) will be backed by an attempts
//! table the store seam does not have yet. Until then this screen shows the account's counts
//! and last outcomes, each campaign's, and the dead letters with their last attempt; the
//! route and its JSON twin stay when the table arrives.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::access::Signed;
use super::campaigns;
use super::dead_letters;
use super::html::{self, Esc};
use crate::delivery::Status;
use crate::ids::CampaignId;

/// The screen's title.
const TITLE: &str = "Deliveries";

/// What the screen shows: one campaign's deliveries, or the whole account's.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Filter {
    pub(super) campaign: Option<CampaignId>,
}

impl Filter {
    /// The filter in the query (`?campaign=...`; empty or unreadable is the whole account).
    pub(super) fn of(uri: &Uri) -> Filter {
        let filter: Filter = uri
            .query()
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        Filter {
            campaign: filter.campaign.filter(|c| !c.as_str().is_empty()),
        }
    }
}

/// `GET /deliveries[?campaign=...]`.
pub(super) async fn show(State(portal): State<Shared>, Signed(user): Signed, uri: Uri) -> Response {
    let filter = Filter::of(&uri);
    let campaign = filter.campaign.as_ref();
    let status = match portal.webhooks.status(&user.account, campaign).await {
        Ok(status) => status,
        Err(e) => return super::access::Refusal::from(e).page(Some(&user)),
    };
    let rows = match campaigns::rows(&portal, &user).await {
        Ok(rows) => rows,
        Err(refusal) => return refusal.page(Some(&user)),
    };
    let letters = match dead_letters::list(&portal, &user, campaign).await {
        Ok(letters) => letters,
        Err(refusal) => return refusal.page(Some(&user)),
    };
    let mut out = String::new();
    out.push_str(
        "<form method=\"get\" action=\"deliveries\"><label for=\"campaign\">Campaign</label>\
         <select id=\"campaign\" name=\"campaign\"><option value=\"\">All campaigns</option>",
    );
    for row in &rows {
        let selected = if Some(&row.campaign) == campaign {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<option value=\"{0}\"{selected}>{0}</option>",
            Esc(row.campaign.as_str())
        );
    }
    out.push_str("</select> <button type=\"submit\">Show</button></form>");
    summary(&mut out, &status);
    out.push_str(
        "<h2>By campaign</h2><table><thead><tr><th>Campaign</th><th>Pending</th>\
         <th>Delivered</th><th>Failed</th><th>Last success</th><th>Last failure</th></tr>\
         </thead><tbody>",
    );
    for row in &rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            Esc(row.campaign.as_str()),
            row.stats.pending,
            row.stats.delivered,
            row.stats.failed,
            Esc(&html::time(row.stats.last_success_at)),
            Esc(&html::time(row.stats.last_failure_at)),
        );
    }
    out.push_str("</tbody></table><h2>Failed for good</h2>");
    match letters {
        None => out.push_str("<p>Dead letters are shown to full administrators only.</p>"),
        Some(letters) => {
            let _ = write!(
                out,
                "<p>{} dead letters; <a href=\"dead-letters\">replay or remove them</a>.</p>",
                letters.len()
            );
        }
    }
    html::page(StatusCode::OK, TITLE, Some(&user), &out).into_response()
}

/// The account's counts and last outcomes.
fn summary(out: &mut String, status: &Status) {
    let s = &status.stats;
    let _ = write!(
        out,
        "<table><tbody><tr><th>Pending</th><td>{}</td></tr><tr><th>Delivered</th><td>{}</td></tr>\
         <tr><th>Failed</th><td>{}</td></tr><tr><th>Last success</th><td>{}</td></tr>\
         <tr><th>Last failure</th><td>{}</td></tr><tr><th>Reason</th><td>{}</td></tr>\
         </tbody></table>",
        s.pending,
        s.delivered,
        s.failed,
        Esc(&html::time(s.last_success_at)),
        Esc(&html::time(s.last_failure_at)),
        Esc(s.last_failure_reason.as_deref().unwrap_or("-")),
    );
    if status.held {
        out.push_str(
            "<p class=\"problem\">Pending deliveries are held: the webhook is off, has no URL, \
             or the endpoint is paused. They are sent once it is on again.</p>",
        );
    }
    if let Some(stopped) = &status.worker_stopped {
        let _ = write!(
            out,
            "<p class=\"problem\">The delivery worker stopped: {}</p>",
            Esc(stopped)
        );
    }
}
