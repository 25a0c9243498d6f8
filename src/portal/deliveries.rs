//! Deliveries: every attempt of the account, newest first, paged by a cursor, filtered by
//! campaign and state; above them the account's counts and last outcomes, and the number of
//! dead letters.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::access::{Refusal, Signed};
use super::html::{self, Esc};
use super::{Portal, PortalUser, Shared, campaigns, dead_letters};
use crate::delivery::Status;
use crate::ids::CampaignId;
use crate::limits::ATTEMPT_PAGE;
use crate::store::{AttemptCursor, AttemptQuery, AttemptState, LoggedAttempt};

/// The screen's title.
const TITLE: &str = "Deliveries";

/// How many characters of a receiver's answer a row of the table shows (the JSON API has all
/// the log keeps).
const ANSWER_SHOWN: usize = 120;

/// What the screen shows: one campaign's attempts or the whole account's, of one state or
/// all, the page before a cursor or the newest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Filter {
    pub(super) campaign: Option<CampaignId>,
    pub(super) state: Option<AttemptState>,
    pub(super) before: Option<AttemptCursor>,
}

/// The query as sent: every field text, empty meaning "any".
#[derive(Debug, Default, serde::Deserialize)]
struct Query {
    campaign: Option<String>,
    state: Option<String>,
    before: Option<String>,
}

impl Filter {
    /// The filter in the query (`?campaign=...&state=...&before=...`; an empty field is "any").
    ///
    /// # Errors
    ///
    /// A `400` refusal for a query that cannot be read, an unknown state, a cursor that is
    /// not a number or a campaign id that may not be stored.
    pub(super) fn of(uri: &Uri) -> Result<Filter, Refusal> {
        let bad = |why: String| Refusal::new(StatusCode::BAD_REQUEST, why);
        let query: Query = match uri.query() {
            Some(q) => serde_urlencoded::from_str(q)
                .map_err(|_| bad("the query of this page cannot be read".into()))?,
            None => Query::default(),
        };
        let given = |v: Option<String>| v.filter(|v| !v.is_empty());
        let campaign = given(query.campaign)
            .map(|c| CampaignId::parse(c).map_err(|e| bad(e.to_string())))
            .transpose()?;
        let state = given(query.state)
            .map(|s| s.parse::<AttemptState>().map_err(|e| bad(e.to_string())))
            .transpose()?;
        let before = given(query.before)
            .map(|c| c.parse::<AttemptCursor>().map_err(|e| bad(e.to_string())))
            .transpose()?;
        Ok(Filter {
            campaign,
            state,
            before,
        })
    }

    /// The link to this filter's page before `cursor` (or its newest page, with `None`).
    fn link(&self, before: Option<AttemptCursor>) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(c) = &self.campaign {
            pairs.push(("campaign", c.as_str().to_owned()));
        }
        if let Some(s) = self.state {
            pairs.push(("state", s.as_str().to_owned()));
        }
        if let Some(b) = before {
            pairs.push(("before", b.to_string()));
        }
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        if query.is_empty() {
            "deliveries".to_owned()
        } else {
            format!("deliveries?{query}")
        }
    }
}

/// One page of the attempts log, and the cursor of the next one if there are more.
pub(super) struct Page {
    pub(super) attempts: Vec<LoggedAttempt>,
    pub(super) next: Option<AttemptCursor>,
}

/// The page of the signed-in account's attempts that `filter` names.
pub(super) async fn page(
    portal: &Portal,
    user: &PortalUser,
    filter: &Filter,
) -> Result<Page, Refusal> {
    let mut query = AttemptQuery::account(user.account.clone()).limit(ATTEMPT_PAGE + 1);
    query.campaign = filter.campaign.clone();
    query.state = filter.state;
    query.before = filter.before;
    let mut attempts = portal.webhooks.attempts(&query).await?;
    let next = if attempts.len() > ATTEMPT_PAGE {
        attempts.truncate(ATTEMPT_PAGE);
        attempts.last().map(|a| a.cursor)
    } else {
        None
    };
    Ok(Page { attempts, next })
}

/// An attempt's outcome in words: its HTTP status, or why it failed without one.
pub(super) fn outcome(a: &LoggedAttempt) -> String {
    match (a.status, &a.error) {
        (_, Some(error)) => error.clone(),
        (Some(status), None) => format!("HTTP {status}"),
        (None, None) => "-".to_owned(),
    }
}

/// A state's word on the screen.
fn state_name(state: AttemptState) -> &'static str {
    match state {
        AttemptState::Delivered => "Delivered",
        AttemptState::Retrying => "Retrying",
        AttemptState::Failed => "Failed",
    }
}

/// `GET /deliveries[?campaign=...&state=...&before=...]`.
pub(super) async fn show(State(portal): State<Shared>, Signed(user): Signed, uri: Uri) -> Response {
    let filter = match Filter::of(&uri) {
        Ok(filter) => filter,
        Err(refusal) => return refusal.page(Some(&user)),
    };
    let campaign = filter.campaign.as_ref();
    let status = match portal.webhooks.status(&user.account, campaign).await {
        Ok(status) => status,
        Err(e) => return Refusal::from(e).page(Some(&user)),
    };
    let (rows, letters, page) = match async {
        let rows = campaigns::rows(&portal, &user).await?;
        let letters = dead_letters::list(&portal, &user, campaign).await?;
        let page = page(&portal, &user, &filter).await?;
        Ok::<_, Refusal>((rows, letters, page))
    }
    .await
    {
        Ok(read) => read,
        Err(refusal) => return refusal.page(Some(&user)),
    };
    let mut out = String::new();
    let names: Vec<&CampaignId> = rows.iter().map(|r| &r.campaign).collect();
    filters(&mut out, &filter, &names);
    summary(&mut out, &status);
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
    attempts(&mut out, &filter, &page);
    html::page(StatusCode::OK, TITLE, Some(&user), &out).into_response()
}

/// The filter form (a GET form: it works without script).
fn filters(out: &mut String, filter: &Filter, campaigns: &[&CampaignId]) {
    out.push_str(
        "<form method=\"get\" action=\"deliveries\" class=\"filters\">\
         <label for=\"campaign\">Campaign</label>\
         <select id=\"campaign\" name=\"campaign\"><option value=\"\">All campaigns</option>",
    );
    for c in campaigns {
        let selected = if filter.campaign.as_ref() == Some(*c) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<option value=\"{0}\"{selected}>{0}</option>",
            Esc(c.as_str())
        );
    }
    out.push_str(
        "</select><label for=\"state\">State</label><select id=\"state\" name=\"state\">\
         <option value=\"\">All states</option>",
    );
    for s in [
        AttemptState::Delivered,
        AttemptState::Retrying,
        AttemptState::Failed,
    ] {
        let selected = if filter.state == Some(s) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<option value=\"{}\"{selected}>{}</option>",
            s.as_str(),
            state_name(s)
        );
    }
    out.push_str("</select> <button type=\"submit\">Show</button></form>");
}

/// The attempts table and the links to the newest and the next page.
fn attempts(out: &mut String, filter: &Filter, page: &Page) {
    out.push_str("<h2>Attempts</h2>");
    if page.attempts.is_empty() {
        out.push_str("<p id=\"no-attempts\">No attempts to show.</p>");
    } else {
        out.push_str(
            "<table id=\"attempts\"><thead><tr><th>Time</th><th>webhook-id</th>\
             <th>Campaign</th><th>Attempt</th><th>State</th><th>Outcome</th>\
             <th>Duration</th><th>Answer</th></tr></thead><tbody>",
        );
        for a in &page.attempts {
            let answer: String = a.answer.chars().take(ANSWER_SHOWN).collect();
            let _ = write!(
                out,
                "<tr data-cursor=\"{}\"><td class=\"nowrap\">{}</td><td class=\"id\">{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"nowrap\">{} ms</td>\
                 <td class=\"answer\">{}</td></tr>",
                a.cursor,
                Esc(&html::time_ms(a.at)),
                Esc(a.delivery.as_str()),
                Esc(a.campaign.as_str()),
                a.number,
                state_name(a.state),
                Esc(&outcome(a)),
                a.duration.as_millis(),
                Esc(&answer),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("<p class=\"pages\">");
    if filter.before.is_some() {
        let _ = write!(
            out,
            "<a id=\"newest\" href=\"{}\">Newest attempts</a> ",
            Esc(&filter.link(None))
        );
    }
    if let Some(next) = page.next {
        let _ = write!(
            out,
            "<a id=\"older\" href=\"{}\">Older attempts</a>",
            Esc(&filter.link(Some(next)))
        );
    }
    out.push_str("</p>");
}

/// The account's (or campaign's) counts and last outcomes.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_reads_its_query_and_links_to_its_pages() {
        let uri: Uri = "/deliveries?campaign=winter+sale&state=failed&before=42"
            .parse()
            .unwrap();
        let filter = Filter::of(&uri).unwrap();
        assert_eq!(filter.campaign, Some(CampaignId::new("winter sale")));
        assert_eq!(filter.state, Some(AttemptState::Failed));
        assert_eq!(filter.before, Some(AttemptCursor::new(42)));
        assert_eq!(
            filter.link(Some(AttemptCursor::new(7))),
            "deliveries?campaign=winter+sale&state=failed&before=7"
        );
        let empty = Filter::of(&"/deliveries?campaign=&state=".parse().unwrap()).unwrap();
        assert_eq!(empty, Filter::default());
        assert_eq!(empty.link(None), "deliveries");
        for bad in [
            "?state=pending",
            "?before=-1",
            "?before=x",
            "?campaign=a%0Ab",
        ] {
            let uri: Uri = format!("/deliveries{bad}").parse().unwrap();
            let refusal = Filter::of(&uri).unwrap_err();
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
