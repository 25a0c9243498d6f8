//! One attempt, as the scheduler hands it to a runner and takes it back: who it is for, what
//! came of it, and what the scheduler learns once its outcome is recorded.

use std::time::Duration;

use jiff::Timestamp;

use crate::delivery::classify::Verdict;
use crate::dispatch::{ReceiverResponse, TransportError};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{ClaimToken, Delivery};

/// One attempt in flight: who it is for and its tracing span.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) delivery: DeliveryId,
    pub(crate) account: AccountId,
    pub(crate) campaign: CampaignId,
    /// Counting from 1 over the delivery's life.
    pub(crate) number: u32,
    /// The claim it is made under: its outcome is recorded with this fencing token.
    pub(crate) token: ClaimToken,
    pub(crate) span: tracing::Span,
}

impl Attempt {
    pub(crate) fn new(d: &Delivery, token: ClaimToken) -> Self {
        let number = d.attempts.saturating_add(1);
        let span = tracing::info_span!(
            "webhook_attempt",
            delivery_id = %d.id,
            account = %d.account,
            campaign = %d.campaign,
            attempt = number,
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        Attempt {
            delivery: d.id.clone(),
            account: d.account.clone(),
            campaign: d.campaign.clone(),
            number,
            token,
            span,
        }
    }
}

/// What came of an attempt.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Sent: the receiver's answer or the transport failure.
    Sent(Result<ReceiverResponse, TransportError>),
    /// Not sent: refused before sending.
    NotSent(Verdict),
}

/// An attempt and its outcome, reported by a runner.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) attempt: Attempt,
    pub(crate) outcome: Outcome,
    pub(crate) latency: Duration,
}

/// What the scheduler learns from a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Completed {
    /// Delivered or failed for good.
    Done,
    /// Pending again, due at this time.
    RetryAt(Timestamp),
    /// Removed by an administrator meanwhile.
    Forgotten,
    /// The store could not record it (why): the scheduler keeps the outcome and records it
    /// once the store recovers; the delivery is not attempted again meanwhile.
    NotRecorded(String),
}
