//! The per-campaign "Enable WebHook" switch, the decision whether a call result is sent, and the
//! indicator the dialer draws next to a campaign.

/// Whether a call result is to be sent, decided from both switches at submit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendDecision {
    /// Both switches are on and a URL is set: send it.
    Send,
    /// Do not send; the reason says which switch is off.
    Skip(OffReason),
}

impl SendDecision {
    /// Whether the call result is to be sent.
    pub fn is_send(self) -> bool {
        self == SendDecision::Send
    }
}

/// Why the webhook is off for a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum OffReason {
    /// "Enable Web Hook" is off in the account's preferences.
    AccountDisabled,
    /// The account has no webhook URL.
    AccountNotConfigured,
    /// "Enable WebHook" is off on this campaign.
    CampaignDisabled,
}

impl OffReason {
    /// A short sentence for the administrator.
    pub fn describe(self) -> &'static str {
        match self {
            OffReason::AccountDisabled => "the webhook is switched off in the account preferences",
            OffReason::AccountNotConfigured => "the account has no webhook URL",
            OffReason::CampaignDisabled => "the webhook is switched off on this campaign",
        }
    }
}

/// What the dialer shows next to a campaign: the webhook icon and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum WebhookIndicator {
    /// Both switches on; deliveries are succeeding (or none has been tried yet).
    Active,
    /// Both switches on, but the most recent attempts to the endpoint failed.
    Failing,
    /// The endpoint is paused (410 Gone, or failing too long); deliveries wait for an
    /// administrator to resume it.
    Paused,
    /// No icon: the webhook is off for this campaign, for this reason.
    Off(OffReason),
}

impl WebhookIndicator {
    /// Whether the icon is shown (the webhook is on for the campaign).
    pub fn shows_icon(self) -> bool {
        !matches!(self, WebhookIndicator::Off(_))
    }
}

impl From<SendDecision> for WebhookIndicator {
    fn from(decision: SendDecision) -> Self {
        match decision {
            SendDecision::Send => WebhookIndicator::Active,
            SendDecision::Skip(reason) => WebhookIndicator::Off(reason),
        }
    }
}

/// The one rule: a call result is sent only when the account's webhook is enabled, a URL is set
/// and the campaign's switch is on.
pub(crate) fn decide(
    account_enabled: bool,
    configured: bool,
    campaign_enabled: bool,
) -> SendDecision {
    if !account_enabled {
        SendDecision::Skip(OffReason::AccountDisabled)
    } else if !configured {
        SendDecision::Skip(OffReason::AccountNotConfigured)
    } else if !campaign_enabled {
        SendDecision::Skip(OffReason::CampaignDisabled)
    } else {
        SendDecision::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_only_when_every_switch_is_on() {
        for account in [false, true] {
            for configured in [false, true] {
                for campaign in [false, true] {
                    let d = decide(account, configured, campaign);
                    assert_eq!(d.is_send(), account && configured && campaign);
                }
            }
        }
        assert_eq!(
            decide(false, false, false),
            SendDecision::Skip(OffReason::AccountDisabled)
        );
        assert_eq!(
            decide(true, false, true),
            SendDecision::Skip(OffReason::AccountNotConfigured)
        );
        assert_eq!(
            decide(true, true, false),
            SendDecision::Skip(OffReason::CampaignDisabled)
        );
    }

    #[test]
    fn indicator_follows_the_decision() {
        assert!(WebhookIndicator::from(SendDecision::Send).shows_icon());
        let off = WebhookIndicator::from(SendDecision::Skip(OffReason::CampaignDisabled));
        assert_eq!(off, WebhookIndicator::Off(OffReason::CampaignDisabled));
        assert!(!off.shows_icon());
    }
}
