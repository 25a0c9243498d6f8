//! The outbox: where accepted call results wait until a receiver answers 2xx or an administrator
//! gives up on them.
//!
//! A [`Store`] is an [`Outbox`] (the queue), [`Settings`] (accounts and endpoints' health) and
//! [`Notices`] (how processes sharing the store hear of each other's writes). All three are
//! synchronous and object-safe; the crate keeps a store as `Arc<dyn Store>`. The delivery
//! worker calls it from its own thread and the facade from tokio's blocking pool, never from
//! an async task. Several processes may share one store (PostgreSQL): they meet at claims
//! with leases and fencing tokens (see [`Outbox`]).
//!
//! # Writing a store
//!
//! The three traits' docs are the specification, method by method; [`conformance`] (feature
//! `test-util`) checks it, and every store of this crate passes it. A store written outside
//! the crate follows the same rules with the same public pieces:
//!
//! - **Idempotent insert.** An id already stored is a repeat when it carries the same call
//!   result ([`NewDelivery::is_same_call_result`], [`Delivery::is_same_call_result`]) and
//!   [`Error::IdConflict`](crate::Error::IdConflict) when not.
//! - **Retention.** A delivered delivery keeps only its id and its [`Fingerprint`] for
//!   [`DELIVERED_ID_RETENTION`](crate::limits::DELIVERED_ID_RETENTION), measured on the times
//!   its writes carry (a store has no clock), and is forgotten afterwards, at most
//!   [`PRUNE_BATCH`](crate::limits::PRUNE_BATCH) at a time.
//! - **Bounded.** Past its most pending deliveries, an insert is
//!   [`Error::StoreFull`](crate::Error::StoreFull) and stores nothing.
//! - **Claims.** Due first, leased, fenced by a [`ClaimToken`]; accounts paused by
//!   [`Settings::save_health`], skipped or at their [`ClaimRequest::room_for`] are left out.
//! - **The attempts log.** Each outcome recorded is logged (with it, or gathered a moment
//!   later), read back newest first by [`AttemptQuery`] and forgotten oldest first by
//!   [`Outbox::prune_attempts`].
//! - **Compare-and-set settings** from one version counter ([`SaveOutcome`]).
//! - **Times** cross the seam as [`Timestamp`]s; a store that keeps integers uses
//!   [`to_nanos`], [`from_nanos`] and [`clamp_nanos`], as the SQLite and PostgreSQL stores do.
//!
//! A store that one process uses alone writes `impl Notices for MyStore {}`.

mod attempt_log;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod conformance;
mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
mod seam;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
mod sqlite;

pub(crate) use attempt_log::answer_excerpt;
pub use attempt_log::{AttemptCursor, AttemptQuery, AttemptState, LoggedAttempt};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
pub use seam::{
    AccountRecords, AccountSave, Claim, ClaimRequest, ClaimToken, Notice, NoticeSink, Notices,
    Outbox, SaveOutcome, Settings, SettingsSnapshot, Versioned,
};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{CommitMode, SqliteStore, SqliteStoreBuilder};

use jiff::Timestamp;

use crate::encoding::EncodedBody;
use crate::error::Result;
use crate::ids::{AccountId, CampaignId, DeliveryId};

/// A delivery as it is first stored, at submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The id sent as `webhook-id` on every attempt.
    pub id: DeliveryId,
    /// The account whose preferences (URL, credentials) each attempt uses.
    pub account: AccountId,
    /// The campaign the call belonged to.
    pub campaign: CampaignId,
    /// The exact bytes every attempt sends, fixed at submit.
    pub body: EncodedBody,
    /// When the dialer submitted it.
    pub created_at: Timestamp,
    /// When the first attempt is due (normally `created_at`).
    pub next_attempt_at: Timestamp,
}

/// Whether two call results are the same: same account, campaign and body (bytes and
/// encoding). Their ids and times do not count.
fn same_call_result(
    (account, campaign, body): (&AccountId, &CampaignId, &EncodedBody),
    other: &NewDelivery,
) -> bool {
    *account == other.account && *campaign == other.campaign && *body == other.body
}

impl NewDelivery {
    /// Whether `other` is the same call result: same account, campaign and body (bytes and
    /// encoding); ids and times do not count.
    ///
    /// A store's [`Outbox::insert`] answers with it: an element whose id is stored already,
    /// or appears earlier in the batch, is a repeat (stored once, a no-op) when this holds,
    /// and [`Error::IdConflict`](crate::Error::IdConflict) when not. For an id delivered
    /// within the retention, of which only the [`Fingerprint`] is kept, compare
    /// [`fingerprint`](NewDelivery::fingerprint)s instead.
    pub fn is_same_call_result(&self, other: &NewDelivery) -> bool {
        same_call_result((&self.account, &self.campaign, &self.body), other)
    }

    /// What a store keeps of a delivered call result, beside its id, to tell a repeat from
    /// another call result reusing the id: see [`Fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.account, &self.campaign, &self.body)
    }
}

/// SHA-256 over a call result's account, campaign, body encoding and body bytes, each
/// separated by a NUL byte (the ids and the encoding's name hold none).
///
/// A store keeps it with each id delivered within the
/// [`DELIVERED_ID_RETENTION`](crate::limits::DELIVERED_ID_RETENTION): a submit under that id
/// is a no-op when its fingerprint is the same and [`Error::IdConflict`](crate::Error::IdConflict)
/// when not. The PostgreSQL store computes the same bytes in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a call result with these parts.
    pub fn of(account: &AccountId, campaign: &CampaignId, body: &EncodedBody) -> Fingerprint {
        Fingerprint::of_parts(
            account.as_str(),
            campaign.as_str(),
            body.encoding().as_str(),
            body.bytes(),
        )
    }

    /// The fingerprint of a call result as a store keeps its parts: account, campaign, the
    /// encoding's name (`form`, `json`) and the body's bytes.
    pub fn of_parts(account: &str, campaign: &str, encoding: &str, body: &[u8]) -> Fingerprint {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        for part in [account.as_bytes(), campaign.as_bytes(), encoding.as_bytes()] {
            hash.update(part);
            hash.update([0]);
        }
        hash.update(body);
        Fingerprint(hash.finalize().into())
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum DeliveryState {
    /// Waiting for its next attempt (held while the account is off or its endpoint paused).
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Failed for good (permanent 4xx, refused address, schedule exhausted): kept for replay.
    Failed,
}

impl DeliveryState {
    /// The state's name as stored: `pending`, `delivered`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    /// The state an outbox row's `state` column names: a row is pending or failed (a
    /// delivered one keeps only its id), so anything else is not the store's writing.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn of_outbox_row(state: &str) -> Option<DeliveryState> {
        match state {
            "pending" => Some(DeliveryState::Pending),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

impl std::str::FromStr for DeliveryState {
    type Err = crate::error::Error;

    /// The state [`DeliveryState::as_str`] names.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) for any other text: not a store's writing.
    fn from_str(name: &str) -> Result<DeliveryState> {
        match name {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            _ => Err(crate::error::Error::Store {
                message: format!("unknown delivery state {name:?}"),
                source: None,
            }),
        }
    }
}

/// A time as the SQLite and PostgreSQL stores keep it: integer nanoseconds since the Unix
/// epoch, which holds the years 1678 to 2261. [`from_nanos`] reads it back.
///
/// # Errors
///
/// [`Error::Store`](crate::Error::Store) for a time outside those years: the write that
/// carries it stores nothing.
pub fn to_nanos(at: Timestamp) -> Result<i64> {
    i64::try_from(at.as_nanosecond()).map_err(|_| crate::error::Error::Store {
        message: format!("time {at} is outside the years 1678 to 2261 that the outbox stores"),
        source: None,
    })
}

/// Like [`to_nanos`], for a bound in a query (due by, leased until): a time past the range
/// stands for everything before or after it.
pub fn clamp_nanos(at: Timestamp) -> i64 {
    let nanos = at.as_nanosecond();
    nanos.clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

/// The time [`to_nanos`] wrote.
///
/// # Errors
///
/// [`Error::Store`](crate::Error::Store) if `nanos` is past the times a [`Timestamp`] holds
/// (not a time [`to_nanos`] wrote).
pub fn from_nanos(nanos: i64) -> Result<Timestamp> {
    Timestamp::from_nanosecond(nanos.into())
        .map_err(|e| crate::error::Error::store("reading a stored time", e))
}

/// A stored delivery with its progress so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The id sent as `webhook-id`.
    pub id: DeliveryId,
    /// The owning account.
    pub account: AccountId,
    /// The campaign.
    pub campaign: CampaignId,
    /// The exact bytes to send.
    pub body: EncodedBody,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (meaningful while pending).
    pub next_attempt_at: Timestamp,
    /// Where it stands.
    pub state: DeliveryState,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, if it did (never a secret, never a body).
    pub last_error: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<Timestamp>,
}

impl Delivery {
    /// Whether `new` is the call result stored here: same account, campaign and body (bytes
    /// and encoding). See [`NewDelivery::is_same_call_result`].
    pub fn is_same_call_result(&self, new: &NewDelivery) -> bool {
        same_call_result((&self.account, &self.campaign, &self.body), new)
    }

    /// What a store keeps of this call result once it is delivered: see [`Fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.account, &self.campaign, &self.body)
    }
}

/// What the worker learned from one attempt, and what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// When the attempt finished.
    pub at: Timestamp,
    /// The HTTP status, if a response came back.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The delivery's next step.
    pub next: NextStep,
    /// How long the attempt took, from the start of sending to the answer or the failure
    /// (for the attempts log).
    pub duration: std::time::Duration,
    /// The start of the receiver's answer, as the attempts log keeps it
    /// ([`LoggedAttempt::answer`]); empty when none came back.
    pub answer: String,
}

/// A delivery's next step after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Delivered: count it and stop.
    Delivered,
    /// Try again at this time.
    RetryAt(Timestamp),
    /// Failed for good: keep it as a dead letter.
    Failed,
}

/// Which deliveries an administrator's list, replay or removal applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// The account (always required: one account never sees another's deliveries).
    pub account: AccountId,
    /// One campaign only, if set.
    pub campaign: Option<CampaignId>,
    /// One delivery only, if set.
    pub id: Option<DeliveryId>,
    /// Only deliveries in this state, if set.
    pub state: Option<DeliveryState>,
}

impl DeliveryFilter {
    /// Every delivery of `account`.
    pub fn account(account: impl Into<AccountId>) -> Self {
        DeliveryFilter {
            account: account.into(),
            campaign: None,
            id: None,
            state: None,
        }
    }

    /// Narrows to one campaign.
    pub fn campaign(mut self, campaign: impl Into<CampaignId>) -> Self {
        self.campaign = Some(campaign.into());
        self
    }

    /// Narrows to one delivery.
    pub fn id(mut self, id: DeliveryId) -> Self {
        self.id = Some(id);
        self
    }

    /// Narrows to one state.
    pub fn state(mut self, state: DeliveryState) -> Self {
        self.state = Some(state);
        self
    }

    /// Whether `d` matches.
    pub fn matches(&self, d: &Delivery) -> bool {
        d.account == self.account
            && self.campaign.as_ref().is_none_or(|c| *c == d.campaign)
            && self.id.as_ref().is_none_or(|i| *i == d.id)
            && self.state.is_none_or(|s| s == d.state)
    }
}

/// Counts and last outcomes for one account, or one campaign of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryStats {
    /// Deliveries waiting for an attempt.
    pub pending: u64,
    /// Deliveries answered 2xx.
    pub delivered: u64,
    /// Deliveries failed for good (dead letters).
    pub failed: u64,
    /// When a delivery last succeeded.
    pub last_success_at: Option<Timestamp>,
    /// When an attempt last failed.
    pub last_failure_at: Option<Timestamp>,
    /// Why it failed (never a secret, never a body).
    pub last_failure_reason: Option<String>,
}

/// A whole store: the [`Outbox`], the [`Settings`] and the [`Notices`] of one backend, which
/// is what [`WebhooksBuilder::store`](crate::WebhooksBuilder::store) takes. Implemented for
/// every type that implements the three: [`MemoryStore`], `SqliteStore` (feature `sqlite`)
/// and `PostgresStore` (feature `postgres`), and a dialer's own store (one that no other
/// process writes to adds `impl Notices for MyStore {}`).
pub trait Store: Outbox + Settings + Notices {}

impl<T: Outbox + Settings + Notices + ?Sized> Store for T {}

impl<S: Outbox + ?Sized> Outbox for std::sync::Arc<S> {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        (**self).insert(deliveries)
    }
    fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>> {
        (**self).claim(request)
    }
    fn next_due(&self, now: Timestamp, skip: &[AccountId]) -> Result<Option<Timestamp>> {
        (**self).next_due(now, skip)
    }
    fn record_attempts(
        &self,
        outcomes: &[(DeliveryId, ClaimToken, AttemptRecord)],
    ) -> Vec<Result<()>> {
        (**self).record_attempts(outcomes)
    }
    fn release(&self, claims: &[(DeliveryId, ClaimToken)]) -> Result<()> {
        (**self).release(claims)
    }

    fn extend_leases(&self, claims: &[(DeliveryId, ClaimToken)], until: Timestamp) -> Result<()> {
        (**self).extend_leases(claims, until)
    }
    fn has_pending(&self) -> Result<bool> {
        (**self).has_pending()
    }
    fn list(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>> {
        (**self).list(filter, limit)
    }
    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64> {
        (**self).requeue_failed(filter, now)
    }
    fn remove(&self, filter: &DeliveryFilter) -> Result<u64> {
        (**self).remove(filter)
    }
    fn attempts(&self, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>> {
        (**self).attempts(query)
    }
    fn prune_attempts(&self, before: Timestamp, limit: usize) -> Result<u64> {
        (**self).prune_attempts(before, limit)
    }
    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats> {
        (**self).stats(account, campaign)
    }
}

impl<S: Settings + ?Sized> Settings for std::sync::Arc<S> {
    fn load_account(&self, account: &AccountId) -> Result<Option<Versioned>> {
        (**self).load_account(account)
    }
    fn load_health(&self, account: &AccountId) -> Result<Option<Versioned>> {
        (**self).load_health(account)
    }
    fn save_account(
        &self,
        account: &AccountId,
        settings_json: &str,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        (**self).save_account(account, settings_json, expected)
    }
    fn save_health(
        &self,
        account: &AccountId,
        health_json: &str,
        paused: bool,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        (**self).save_health(account, health_json, paused, expected)
    }
    fn save_accounts(&self, saves: &[AccountSave<'_>]) -> Result<Vec<SaveOutcome>> {
        (**self).save_accounts(saves)
    }
    fn accounts_after(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountRecords>> {
        (**self).accounts_after(after, limit)
    }
    fn load_settings(&self) -> Result<SettingsSnapshot> {
        (**self).load_settings()
    }
    fn changes_since(&self, cursor: u64) -> Result<SettingsSnapshot> {
        (**self).changes_since(cursor)
    }
}

impl<S: Notices + ?Sized> Notices for std::sync::Arc<S> {
    fn subscribe(&self, sink: NoticeSink) -> bool {
        (**self).subscribe(sink)
    }
    fn poll_interval(&self) -> Option<std::time::Duration> {
        (**self).poll_interval()
    }
}
