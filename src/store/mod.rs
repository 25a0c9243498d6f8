//! The outbox: where accepted call results wait until a receiver answers 2xx or an administrator
//! gives up on them.
//!
//! [`Store`] is synchronous and object-safe. The crate keeps it as `Arc<dyn Store>`; the delivery
//! worker calls it from its own threads (or `spawn_blocking`), never from the dialer's call path
//! except for [`Store::insert`], which must return only once the delivery is durable.

#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod conformance;
mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres;
mod seam;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
pub use seam::{
    Claim, ClaimRequest, ClaimToken, Notice, NoticeSink, Outbox, Settings, SettingsSnapshot,
};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{CommitMode, SqliteStore, SqliteStoreBuilder};

use jiff::Timestamp;

use crate::error::Result;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::request::EncodedBody;

/// The most delivered ids a store forgets in one step once their
/// [`DELIVERED_ID_RETENTION`](crate::limits::DELIVERED_ID_RETENTION) is over, so that no write
/// waits long behind the forgetting.
pub(crate) const PRUNE_BATCH: usize = 1_000;

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

/// The outbox's storage. Implementations: [`MemoryStore`] and, with the
/// `sqlite` feature, `SqliteStore`.
///
/// Contract:
/// - [`insert`](Store::insert) returns only once the delivery survives a crash of the process
///   (for a durable store); an error means it was **not** accepted.
/// - [`insert`](Store::insert) is idempotent on the delivery id: a retried submit never makes
///   a second delivery, and an id delivered within [`DELIVERED_ID_RETENTION`] is not sent
///   again.
/// - A delivery's body bytes never change after insert.
/// - A delivered delivery may be forgotten (only counted) right away, but its id is remembered,
///   with when it was delivered, for at least [`DELIVERED_ID_RETENTION`]; a failed one is kept
///   until an administrator replays or removes it.
/// - A store has no clock. "Within the retention" is measured back from the newest time the
///   store has been given: a submit's `created_at`, an attempt's `at`, a replay's `now`.
///
/// [`DELIVERED_ID_RETENTION`]: crate::limits::DELIVERED_ID_RETENTION
pub trait Store: Send + Sync + 'static {
    /// Stores new deliveries durably, all or none, idempotent on each delivery's id.
    ///
    /// An element whose id is already stored is a no-op when it is the same call result: the
    /// same account, campaign and body (bytes and encoding), whether the stored delivery is
    /// pending or failed. The stored delivery is left as it is (its times, attempts and state;
    /// a failed one is not replayed), the counts of [`stats`](Store::stats) do not change for
    /// it, and the rest of the batch is stored. An element whose id was delivered within the
    /// last [`DELIVERED_ID_RETENTION`] is a no-op too, whatever it carries: only the id of a
    /// delivered delivery is remembered, so it is never sent again. The same id twice in one
    /// batch is stored once. So a dialer may retry a submit (after a dropped future or a
    /// retried transaction) as often as it likes.
    ///
    /// Repeats take no room: a full store still accepts a batch of them.
    ///
    /// # Errors
    ///
    /// Each error means that nothing of the batch was stored:
    /// - [`Error::IdConflict`] if an id is already stored for a different call result
    ///   (another account, campaign or body), or appears twice in the batch with different
    ///   ones.
    /// - [`Error::StoreFull`] if the new elements would take the pending deliveries past the
    ///   store's limit.
    /// - [`Error::Store`] if the storage failed: a time the store cannot hold, a write or an
    ///   fsync that failed, a writer that has stopped.
    ///
    /// [`DELIVERED_ID_RETENTION`]: crate::limits::DELIVERED_ID_RETENTION
    /// [`Error::IdConflict`]: crate::Error::IdConflict
    /// [`Error::StoreFull`]: crate::Error::StoreFull
    /// [`Error::Store`]: crate::Error::Store
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()>;

    /// Pending deliveries of `account` due at or before `now`, earliest due first, at most
    /// `limit`, leaving out those whose ids are in `skip` (already in flight).
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) if the storage could not be read (for a durable store: the file could not be
    /// read, or a stored delivery could not be read back). [`MemoryStore`] never fails.
    fn due(
        &self,
        account: &AccountId,
        now: Timestamp,
        limit: usize,
        skip: &[DeliveryId],
    ) -> Result<Vec<Delivery>>;

    /// Every account with pending deliveries, with the earliest next-attempt time of each.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) if the storage could not be read (for a durable store: the file could not be
    /// read, or a stored time is out of range). [`MemoryStore`] never fails.
    fn pending_accounts(&self) -> Result<Vec<(AccountId, Timestamp)>>;

    /// Records one attempt's outcome and moves the delivery to its next step.
    ///
    /// # Errors
    ///
    /// Nothing is recorded on an error:
    /// - [`Error::UnknownDelivery`](crate::Error::UnknownDelivery) if no delivery with this id
    ///   is stored: never inserted, removed, or already delivered.
    /// - [`Error::Store`](crate::Error::Store) if a time is outside what the store holds, or the write failed (for a
    ///   durable store: the file could not be written or fsynced, or its writer has stopped).
    fn record_attempt(&self, id: &DeliveryId, record: &AttemptRecord) -> Result<()>;

    /// Records several attempts' outcomes, each as [`record_attempt`](Store::record_attempt)
    /// would, and answers for each in order: one failing (an unknown delivery, say) leaves the
    /// others recorded. The delivery worker hands over every outcome it has at once, so that a
    /// durable store can make them durable together, with one write to disk rather than one
    /// each. The default records them one by one.
    ///
    /// # Errors
    ///
    /// None for the call as a whole; each answer holds the error
    /// [`record_attempt`](Store::record_attempt) would have returned for that attempt. A
    /// durable store whose transaction was rolled back answers
    /// [`Error::Store`](crate::Error::Store) for every attempt in it.
    fn record_attempts(&self, attempts: &[(DeliveryId, AttemptRecord)]) -> Vec<Result<()>> {
        attempts
            .iter()
            .map(|(id, record)| self.record_attempt(id, record))
            .collect()
    }

    /// Deliveries matching `filter`, oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) if the storage could not be read (for a durable store: the file could not be
    /// read, or a stored delivery could not be read back). [`MemoryStore`] never fails.
    fn list(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>>;

    /// Puts failed deliveries matching `filter` back to pending, due at `now`, keeping their
    /// ids and bodies. Returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) if `now` is outside the times the store holds, or the write failed (for a
    /// durable store: the file could not be written or fsynced, or its writer has stopped).
    /// Nothing is requeued on an error.
    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64>;

    /// Removes deliveries matching `filter` (an administrator's explicit action). Returns how
    /// many.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) if the write failed (for a durable store: the file could not be written or
    /// fsynced, or its writer has stopped). Nothing is removed on an error.
    fn remove(&self, filter: &DeliveryFilter) -> Result<u64>;

    /// Counts and last outcomes for `account`, or for one campaign of it.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) if the storage could not be read (for a durable store: the file could not be
    /// read, or a stored time is out of range). [`MemoryStore`] never fails.
    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats>;

    /// Saves an account's settings (from [`Account::to_storage_json`](crate::account::Account::to_storage_json))
    /// durably, replacing what was there.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) if the write failed (for a durable store: the file could not be written or
    /// fsynced, or its writer has stopped); what was saved before is kept.
    fn save_account(&self, account: &AccountId, settings_json: &str) -> Result<()>;

    /// Every saved account's settings.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) if the storage could not be read (for a durable store: the file could not be
    /// read, or the settings are not text). [`MemoryStore`] never fails.
    fn load_accounts(&self) -> Result<Vec<String>>;

    /// Saves an account endpoint's health (JSON) so a pause outlives a restart.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) if the write failed (for a durable store: the file could not be written or
    /// fsynced, or its writer has stopped); what was saved before is kept.
    fn save_health(&self, account: &AccountId, health_json: &str) -> Result<()>;

    /// Every saved endpoint health record, by account.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) if the storage could not be read (for a durable store: the file could not be
    /// read, or a record is not text). [`MemoryStore`] never fails.
    fn load_health(&self) -> Result<Vec<(AccountId, String)>>;
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        (**self).insert(deliveries)
    }
    fn due(
        &self,
        account: &AccountId,
        now: Timestamp,
        limit: usize,
        skip: &[DeliveryId],
    ) -> Result<Vec<Delivery>> {
        (**self).due(account, now, limit, skip)
    }
    fn pending_accounts(&self) -> Result<Vec<(AccountId, Timestamp)>> {
        (**self).pending_accounts()
    }
    fn record_attempt(&self, id: &DeliveryId, record: &AttemptRecord) -> Result<()> {
        (**self).record_attempt(id, record)
    }
    fn record_attempts(&self, attempts: &[(DeliveryId, AttemptRecord)]) -> Vec<Result<()>> {
        (**self).record_attempts(attempts)
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
    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats> {
        (**self).stats(account, campaign)
    }
    fn save_account(&self, account: &AccountId, settings_json: &str) -> Result<()> {
        (**self).save_account(account, settings_json)
    }
    fn load_accounts(&self) -> Result<Vec<String>> {
        (**self).load_accounts()
    }
    fn save_health(&self, account: &AccountId, health_json: &str) -> Result<()> {
        (**self).save_health(account, health_json)
    }
    fn load_health(&self) -> Result<Vec<(AccountId, String)>> {
        (**self).load_health()
    }
}
