//! What the worker tells the dialer: one [`Event`] per attempt outcome and per endpoint change.

use std::time::Duration;

use jiff::Timestamp;

use crate::ids::{AccountId, CampaignId, DeliveryId};

/// Something the delivery worker did, handed to the callback given to
/// [`WebhooksBuilder::on_event`](crate::WebhooksBuilder::on_event).
///
/// Events carry ids, status codes and short reasons: never a password, an Authorization
/// value, a URL query or a body. Each is emitted after the outcome it reports was written to
/// the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The receiver answered 2xx: the delivery is done.
    AttemptSucceeded {
        /// The delivery (its `webhook-id`).
        delivery: DeliveryId,
        /// The account.
        account: AccountId,
        /// The campaign.
        campaign: CampaignId,
        /// Which attempt this was, counting from 1 over the delivery's life.
        attempt: u32,
        /// The HTTP status.
        status: u16,
        /// How long the attempt took.
        latency: Duration,
    },
    /// An attempt failed.
    AttemptFailed {
        /// The delivery (its `webhook-id`).
        delivery: DeliveryId,
        /// The account.
        account: AccountId,
        /// The campaign.
        campaign: CampaignId,
        /// Which attempt this was, counting from 1 over the delivery's life.
        attempt: u32,
        /// The HTTP status, when the receiver answered.
        status: Option<u16>,
        /// Why it failed, for example `HTTP 503 Service Unavailable` or `timed out`.
        reason: String,
        /// When the next attempt is due; `None` when the delivery failed for good (a
        /// [`Event::DeliveryFailed`] follows) or waits for its endpoint to be resumed.
        next_attempt_at: Option<Timestamp>,
    },
    /// The delivery failed for good and is kept as a dead letter, for replay.
    DeliveryFailed {
        /// The delivery (its `webhook-id`).
        delivery: DeliveryId,
        /// The account.
        account: AccountId,
        /// The campaign.
        campaign: CampaignId,
        /// Attempts made, over the delivery's life.
        attempts: u32,
        /// Why it was given up.
        kind: FailureKind,
        /// The last attempt's failure.
        reason: String,
    },
    /// The account's endpoint was paused: its deliveries wait for an administrator's resume.
    EndpointPaused {
        /// The account.
        account: AccountId,
        /// Why.
        reason: PauseReason,
        /// When.
        at: Timestamp,
    },
    /// An administrator resumed the account's endpoint; what waited is being delivered.
    EndpointResumed {
        /// The account.
        account: AccountId,
        /// The administrator's name.
        by: String,
        /// When.
        at: Timestamp,
    },
    /// The delivery worker stopped on its own: nothing is delivered until a worker is started
    /// again. Submits are still accepted and stored; attempts that were in flight stay pending
    /// and are sent again, with the same `webhook-id`, by the next worker.
    WorkerStopped {
        /// Why, for example "the tokio runtime the worker's attempts ran on has shut down".
        reason: String,
        /// Attempts that were in flight and were released.
        released: usize,
    },
    /// The store keeps failing (a full disk, an I/O error, a corrupt page): the worker makes
    /// no new attempts, keeps the outcomes it could not record in memory (their deliveries are
    /// not attempted again), and tries the store again with a growing pause. Said once per
    /// failure, after a few tries; [`Event::StoreRecovered`] follows when it works again.
    StoreFailing {
        /// The store's error and its causes.
        reason: String,
        /// Whether reading fails too (not only writing): nothing can be claimed.
        reads: bool,
        /// Outcomes held in memory, waiting to be recorded.
        holding: usize,
    },
    /// The store works again: the outcomes held in memory are recorded, attempts resume.
    StoreRecovered {
        /// Outcomes recorded on recovery.
        recorded: usize,
    },
}

/// Why a delivery failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum FailureKind {
    /// The receiver answered with a status that is not retried: a 3xx (never followed) or a
    /// 4xx other than 408, 410, 425 and 429.
    Rejected,
    /// The destination was refused by the address policy, or the request could not be sent as
    /// built; trying again cannot help.
    Refused,
    /// Every attempt of the retry schedule failed.
    Expired,
}

impl FailureKind {
    /// A short word for logs and the UI: `rejected`, `refused`, `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Rejected => "rejected",
            FailureKind::Refused => "refused",
            FailureKind::Expired => "expired",
        }
    }
}

/// Why an endpoint was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum PauseReason {
    /// The receiver answered 410 Gone.
    Gone,
    /// Every attempt failed for longer than the configured time (5 days by default).
    FailingTooLong,
}

impl PauseReason {
    /// A short sentence for the administrator.
    pub fn describe(self) -> &'static str {
        match self {
            PauseReason::Gone => "the receiver answered 410 Gone",
            PauseReason::FailingTooLong => "every attempt has failed for too long",
        }
    }
}
