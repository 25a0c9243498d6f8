//! Campaign Management: each campaign with the webhook icon named by its status, its counts
//! and last failure, and its Additional Settings' "Enable WebHook".

use std::collections::BTreeSet;
use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::access::{Refusal, Signed, check_change};
use super::html::{self, Esc};
use super::{Portal, PortalUser, Shared};
use crate::campaign::WebhookIndicator;
use crate::ids::CampaignId;
use crate::store::DeliveryStats;

/// The screen's title, as the product page names it.
const TITLE: &str = "Campaign Management";

/// One campaign as the screen and the JSON API show it.
#[derive(Debug, serde::Serialize)]
pub(super) struct CampaignRow {
    pub(super) campaign: CampaignId,
    /// Its "Enable WebHook".
    pub(super) enabled: bool,
    /// Active, Failing, Paused or Off: the icon's name.
    pub(super) status: &'static str,
    /// Why it is off, when it is.
    pub(super) off_reason: Option<&'static str>,
    pub(super) stats: DeliveryStats,
    /// The indicator itself, for the icon.
    #[serde(skip)]
    pub(super) indicator: WebhookIndicator,
}

/// The account's campaigns: those with a switch of their own and those the dialer named, in
/// the order of their ids.
pub(super) async fn rows(portal: &Portal, user: &PortalUser) -> Result<Vec<CampaignRow>, Refusal> {
    let account = portal.webhooks.account(&user.account);
    let mut campaigns: BTreeSet<CampaignId> = user.campaigns.iter().cloned().collect();
    if let Some(account) = &account {
        campaigns.extend(account.campaigns().map(|(c, _)| c.clone()));
    }
    let mut rows = Vec::with_capacity(campaigns.len());
    for campaign in campaigns {
        let indicator = portal.webhooks.indicator(&user.account, Some(&campaign));
        let status = portal
            .webhooks
            .status(&user.account, Some(&campaign))
            .await?;
        rows.push(CampaignRow {
            enabled: account
                .as_ref()
                .is_some_and(|a| a.campaign_webhook_enabled(&campaign)),
            status: html::indicator_name(indicator),
            off_reason: match indicator {
                WebhookIndicator::Off(reason) => Some(reason.describe()),
                _ => None,
            },
            stats: status.stats,
            indicator,
            campaign,
        });
    }
    Ok(rows)
}

/// `GET /campaigns`.
pub(super) async fn show(State(portal): State<Shared>, Signed(user): Signed, uri: Uri) -> Response {
    let rows = match rows(&portal, &user).await {
        Ok(rows) => rows,
        Err(refusal) => return refusal.page(Some(&user)),
    };
    let mut body = String::new();
    if uri.query() == Some("notice=saved") {
        html::message(&mut body, "notice", "Saved.");
    }
    render(&mut body, &portal, &user, &rows);
    html::page(StatusCode::OK, TITLE, Some(&user), &body).into_response()
}

fn render(out: &mut String, portal: &Portal, user: &PortalUser, rows: &[CampaignRow]) {
    if rows.is_empty() {
        out.push_str("<p>No campaign yet.</p>");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>Campaign</th><th>WebHook</th><th>Pending</th><th>Delivered</th>\
         <th>Failed</th><th>Last failure</th><th>Additional Settings</th></tr></thead><tbody>",
    );
    let admin = user.principal.is_administrator();
    let token = portal.options.key.csrf_token(user);
    for row in rows {
        let _ = write!(out, "<tr><td>{}</td><td>", Esc(row.campaign.as_str()));
        html::icon(out, row.indicator);
        let _ = write!(out, " {}", row.status);
        if let Some(reason) = row.off_reason {
            let _ = write!(out, " <span class=\"hint\">({})</span>", Esc(reason));
        }
        let failure = match (&row.stats.last_failure_at, &row.stats.last_failure_reason) {
            (None, _) => "-".to_owned(),
            (at, reason) => format!(
                "{}: {}",
                html::time(*at),
                reason.as_deref().unwrap_or("unknown")
            ),
        };
        let _ = write!(
            out,
            "</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>",
            row.stats.pending,
            row.stats.delivered,
            row.stats.failed,
            Esc(&failure)
        );
        let checked = if row.enabled { " checked" } else { "" };
        out.push_str("<form method=\"post\" action=\"campaign-webhook\">");
        if admin {
            html::csrf_field(out, &token);
            out.push_str("<fieldset>");
        } else {
            out.push_str("<fieldset disabled>");
        }
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"campaign\" value=\"{0}\">\
             <label><input type=\"checkbox\" name=\"enabled\" value=\"on\"{checked}> Enable WebHook\
             </label></fieldset>",
            Esc(row.campaign.as_str())
        );
        if admin {
            out.push_str("<button type=\"submit\">Save</button>");
        }
        out.push_str("</form></td></tr>");
    }
    out.push_str("</tbody></table>");
}

/// What a switch asks: the campaign, on or off, and the token.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Switch {
    pub(super) campaign: CampaignId,
    #[serde(default)]
    pub(super) enabled: bool,
}

/// Switches a campaign's "Enable WebHook", for the form and the API alike.
pub(super) async fn apply(
    portal: &Portal,
    user: &PortalUser,
    switch: &Switch,
) -> Result<(), Refusal> {
    portal
        .webhooks
        .set_campaign_webhook(
            &user.principal,
            &user.account,
            &switch.campaign,
            switch.enabled,
        )
        .await?;
    Ok(())
}

/// `POST /campaign-webhook`: the Additional Settings form's save.
pub(super) async fn switch(
    State(portal): State<Shared>,
    Signed(user): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if let Err(refusal) = check_change(&portal, &user, &headers, field("csrf")) {
        return refusal.page(Some(&user));
    }
    let Some(campaign) = field("campaign") else {
        return Refusal::new(StatusCode::BAD_REQUEST, "Which campaign?").page(Some(&user));
    };
    let switch = Switch {
        campaign: campaign.into(),
        enabled: field("enabled").is_some(),
    };
    match apply(&portal, &user, &switch).await {
        Ok(()) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, "campaigns?notice=saved")],
        )
            .into_response(),
        Err(refusal) => refusal.page(Some(&user)),
    }
}
