//! What the UI shows: a campaign's (or account's) counts and last outcomes, the indicator
//! they refine, and the dead letters an administrator may replay.

use jiff::Timestamp;

use crate::account::Account;
use crate::campaign::{SendDecision, WebhookIndicator, decide};
use crate::delivery::health::EndpointHealth;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{Delivery, DeliveryStats};

/// The webhook's status for one campaign, or for a whole account: what the dialer shows next
/// to the campaign and on Campaign Management, beside the icon
/// ([`Webhooks::indicator`](crate::Webhooks::indicator)).
///
/// Never a secret, never a body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Status {
    /// Pending, delivered and failed counts, last success, last failure and its reason.
    pub stats: DeliveryStats,
    /// Whether pending deliveries are being held: the account's webhook is switched off or
    /// has no URL, or the endpoint is paused. Held deliveries are never dropped; they are sent
    /// once the webhook is on again or the endpoint resumed. A UI shows them as paused.
    pub held: bool,
    /// The endpoint's health: failure streak and pause.
    pub endpoint: EndpointHealth,
    /// Whether the last failure is newer than the last success: `true` when the most recent
    /// outcome was a failure. `false` with a `stats.last_failure_reason` means that failure is
    /// history: a later attempt (a replay, say) succeeded.
    pub failure_is_current: bool,
    /// Why the delivery worker stopped on its own (for example, the async runtime it ran on
    /// shut down), if it did. Nothing is delivered until a worker is started again;
    /// submits are still accepted and stored.
    pub worker_stopped: Option<String>,
    /// The store failure the worker reported and is waiting to recover from, if any: no new
    /// attempts are made meanwhile (see [`Event::StoreFailing`](crate::Event::StoreFailing)).
    pub store_failing: Option<String>,
}

impl Status {
    pub(crate) fn new(
        stats: DeliveryStats,
        held: bool,
        endpoint: EndpointHealth,
        worker_stopped: Option<String>,
        store_failing: Option<String>,
    ) -> Self {
        let failure_is_current = match (stats.last_failure_at, stats.last_success_at) {
            (Some(failure), Some(success)) => failure > success,
            (Some(_), None) => true,
            (None, _) => false,
        };
        Status {
            stats,
            held,
            endpoint,
            failure_is_current,
            worker_stopped,
            store_failing,
        }
    }
}

/// A delivery that failed for good, as an administrator sees it (no body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The delivery's id, sent as `webhook-id`; a replay keeps it.
    pub id: DeliveryId,
    /// The account.
    pub account: AccountId,
    /// The campaign.
    pub campaign: CampaignId,
    /// When the dialer submitted it.
    pub created_at: Timestamp,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's HTTP status, if it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<Timestamp>,
}

impl From<Delivery> for DeadLetter {
    fn from(d: Delivery) -> Self {
        DeadLetter {
            id: d.id,
            account: d.account,
            campaign: d.campaign,
            created_at: d.created_at,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            last_attempt_at: d.last_attempt_at,
        }
    }
}

/// Whether the account's pending deliveries may be attempted now: webhook on, URL set, endpoint
/// not paused. (The campaign switch decides at submit time only.)
pub(crate) fn account_on(account: Option<&Account>) -> SendDecision {
    match account {
        Some(a) => decide(
            a.preferences().enabled(),
            a.preferences().is_configured(),
            true,
        ),
        None => decide(false, false, true),
    }
}

/// The indicator: the switches first (`Off` with the reason), then the endpoint's health.
pub(crate) fn indicator(
    account: Option<&Account>,
    campaign: Option<&CampaignId>,
    health: &EndpointHealth,
) -> WebhookIndicator {
    let decision = match (account, campaign) {
        (Some(a), Some(c)) => a.decide(c),
        (a, None) => account_on(a),
        (None, Some(_)) => decide(false, false, false),
    };
    match decision {
        SendDecision::Skip(reason) => WebhookIndicator::Off(reason),
        SendDecision::Send if health.is_paused() => WebhookIndicator::Paused,
        SendDecision::Send if health.is_failing() => WebhookIndicator::Failing,
        SendDecision::Send => WebhookIndicator::Active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::OffReason;
    use crate::delivery::events::PauseReason;
    use crate::preferences::{PreferencesUpdate, Principal};

    #[test]
    fn indicator_refines_the_switches_with_health() {
        let admin = Principal::administrator("alice");
        let mut a = Account::new("acme");
        let c: CampaignId = "winter".into();
        let fine = EndpointHealth::default();
        assert_eq!(
            indicator(None, Some(&c), &fine),
            WebhookIndicator::Off(OffReason::AccountDisabled)
        );
        a.update_preferences(
            &admin,
            PreferencesUpdate::new()
                .enabled(true)
                .url("https://crm.example/"),
        )
        .unwrap();
        assert_eq!(
            indicator(Some(&a), Some(&c), &fine),
            WebhookIndicator::Off(OffReason::CampaignDisabled)
        );
        assert_eq!(indicator(Some(&a), None, &fine), WebhookIndicator::Active);
        a.set_campaign_webhook(&admin, c.clone(), true).unwrap();
        assert_eq!(
            indicator(Some(&a), Some(&c), &fine),
            WebhookIndicator::Active
        );
        let mut failing = EndpointHealth::default();
        failing.on_failure(Timestamp::UNIX_EPOCH, std::time::Duration::from_secs(60));
        assert_eq!(
            indicator(Some(&a), Some(&c), &failing),
            WebhookIndicator::Failing
        );
        let mut paused = failing.clone();
        paused.pause(Timestamp::UNIX_EPOCH, PauseReason::Gone);
        assert_eq!(
            indicator(Some(&a), Some(&c), &paused),
            WebhookIndicator::Paused
        );
        a.update_preferences(&admin, PreferencesUpdate::new().enabled(false))
            .unwrap();
        assert_eq!(
            indicator(Some(&a), Some(&c), &paused),
            WebhookIndicator::Off(OffReason::AccountDisabled)
        );
    }
}
