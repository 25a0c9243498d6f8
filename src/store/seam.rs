//! The store seam for a fleet: an [`Outbox`] (the queue: insert, claim, record, admin queries,
//! counts), [`Settings`] (accounts' settings and endpoints' health, shared by every process)
//! and [`Notices`] (how the processes sharing a store hear of each other's writes).
//!
//! Several processes may share one store (PostgreSQL). They meet here:
//!
//! - **Claims.** A process takes due work with [`Outbox::claim`]: each claimed delivery gets a
//!   lease (no other process may claim it until the lease runs out) and a fresh
//!   [`ClaimToken`], a fencing token. An outcome is recorded only with the token of the current
//!   claim: a process presumed dead, whose lease ran out and whose delivery was claimed again,
//!   cannot overwrite the newer attempt ([`Error::LeaseLost`](crate::Error::LeaseLost)).
//! - **Settings.** A change saved through any process is read by every other one from
//!   [`Settings::changes_since`], polled at the store's [`Notices::poll_interval`] and, where
//!   the store can, announced at once through [`Notice::SettingsChanged`] ([`Notices`]).
//! - **Wake-ups.** A store shared by several processes tells each of them about new due work
//!   ([`Notice::DueWork`]) so that an idle fleet starts a submit's first attempt at once, not at
//!   the next poll.
//! - **Clocks.** Every time that crosses the seam ([`ClaimRequest::now`], a delivery's and an
//!   attempt's times, [`Claim::lease_until`], [`Outbox::next_due`]'s answer) is on the
//!   caller's clock. A store shared by processes on several hosts compares times on one clock
//!   of its own and translates at its boundary: the PostgreSQL store keeps every time on the
//!   database server's clock and moves each by this process's measured offset from it, so a
//!   process's own clock only measures durations from its now. A store on one host (SQLite,
//!   memory) keeps the caller's clock: one host, one clock.
//!
//! Nothing above the seam knows how many processes there are.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::error::Result;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{
    AttemptQuery, AttemptRecord, Delivery, DeliveryFilter, DeliveryStats, LoggedAttempt,
    NewDelivery,
};

/// A fencing token: names one claim of one delivery. Every claim of a delivery gets a token
/// greater than any before it in the same store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimToken(u64);

impl ClaimToken {
    /// The token with this number (stores make them; the worker only hands them back).
    pub fn new(n: u64) -> Self {
        ClaimToken(n)
    }

    /// Its number.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The delivery, as stored (its attempts so far, its body).
    pub delivery: Delivery,
    /// The fencing token to record the attempt's outcome with.
    pub token: ClaimToken,
    /// Until when no other process may claim it.
    pub lease_until: Timestamp,
}

/// What [`Outbox::claim`] is asked for.
///
/// Made with a struct literal; `..ClaimRequest::default()` leaves out skip lists and the
/// per-account bound.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClaimRequest<'a> {
    /// The store's notion of now: deliveries due at or before it, and leases that ran out
    /// before it, qualify.
    pub now: Timestamp,
    /// At most this many.
    pub limit: usize,
    /// How long the lease lasts: the attempt's time limit and a margin.
    pub lease: Duration,
    /// Accounts to leave out: held (switched off, no URL, paused endpoint) or with all of this
    /// process's places for their endpoint in use.
    pub skip: &'a [AccountId],
    /// At most this many of one account's deliveries in flight at once, counting those in
    /// [`in_flight`](ClaimRequest::in_flight): a claim takes at most the difference of any
    /// account, so that a process never claims more of one endpoint than it may start (and
    /// gives none back). A store shared by several processes applies it over all of them:
    /// every process's claims count, until their outcome, their release or their lease's
    /// end. `None`: no bound per account.
    pub per_account: Option<usize>,
    /// How many deliveries of each account are in flight in this process now (accounts not
    /// listed: none), for [`per_account`](ClaimRequest::per_account).
    pub in_flight: &'a [(AccountId, usize)],
    /// Claims of this process whose requests have finished while their outcomes are still
    /// being recorded (not counted in [`in_flight`](ClaimRequest::in_flight)). A store that
    /// applies [`per_account`](ClaimRequest::per_account) over a fleet may give their places
    /// at the endpoint to this claim's deliveries: the outcome recorded later frees nothing
    /// that was given on. The deliveries themselves stay claimed until their outcomes.
    pub finished: &'a [ClaimToken],
}

impl ClaimRequest<'_> {
    /// How many more of `account`'s deliveries this claim may take: the per-account bound
    /// less those in flight (unbounded without a per-account bound).
    pub fn room_for(&self, account: &AccountId) -> usize {
        let Some(bound) = self.per_account else {
            return usize::MAX;
        };
        let busy = self
            .in_flight
            .iter()
            .find(|(a, _)| a == account)
            .map_or(0, |(_, n)| *n);
        bound.saturating_sub(busy)
    }
}

/// What a store tells the processes that share it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// New due work (a submit, a replay) may be waiting: claim.
    DueWork,
    /// Settings or health changed: read [`Settings::changes_since`].
    SettingsChanged,
}

/// Called by a store with each [`Notice`]; it must return at once.
pub type NoticeSink = Arc<dyn Fn(Notice) + Send + Sync + 'static>;

/// One stored settings record (an account's settings or an endpoint's health) and the version
/// it was saved at.
///
/// Its `Debug` never shows the JSON: an account's settings hold its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The record as the crate serialized it (JSON): a store keeps it as given and hands it
    /// back unchanged. Its form is the crate's own, not public API.
    pub json: String,
    /// The version it was saved at: greater than that of every save before it in the store.
    pub version: u64,
}

impl std::fmt::Debug for Versioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Versioned")
            .field("json", &format_args!("<{} bytes>", self.json.len()))
            .field("version", &self.version)
            .finish()
    }
}

/// What a compare-and-set save of a settings record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a stale save wrote nothing"]
pub enum SaveOutcome {
    /// Written, at this version.
    Saved {
        /// The record's new version.
        version: u64,
    },
    /// Nothing written: the record was saved since the version the save expected (or it
    /// exists, for a save that expected none). Read it again, apply the change to what is
    /// stored, and save against its version.
    Stale,
}

/// Accounts' settings and endpoints' health as stored, each with its version, and the cursor
/// to follow changes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsSnapshot {
    /// Every account's settings (the crate's JSON, kept as given).
    pub accounts: Vec<Versioned>,
    /// Every endpoint's health record (JSON), by account.
    pub health: Vec<(AccountId, Versioned)>,
    /// Hand this to [`Settings::changes_since`] to learn what changed after this snapshot.
    pub cursor: u64,
}

/// One account's stored records, as [`Settings::accounts_after`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecords {
    /// The account.
    pub account: AccountId,
    /// Its settings (the crate's JSON, kept as given) and their version.
    pub settings: Versioned,
    /// Its endpoint's health and its version, if any was ever saved.
    pub health: Option<Versioned>,
}

/// One save of [`Settings::save_accounts`]: an account's settings, saved if still at the
/// version `expected` (`None`: if none are stored).
///
/// Its `Debug` never shows the JSON: it holds the password.
#[derive(Clone, Copy)]
pub struct AccountSave<'a> {
    /// The account.
    pub account: &'a AccountId,
    /// Its settings (the crate's JSON, kept as given).
    pub settings_json: &'a str,
    /// The version the settings were read at; `None`: none were stored.
    pub expected: Option<u64>,
}

impl std::fmt::Debug for AccountSave<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSave")
            .field("account", self.account)
            .field(
                "settings_json",
                &format_args!("<{} bytes>", self.settings_json.len()),
            )
            .field("expected", &self.expected)
            .finish()
    }
}

/// The queue part of a store.
///
/// Contract (checked for every store by the conformance suite, [`crate::store::conformance`];
/// each method's docs say the rest):
/// - [`insert`](Outbox::insert) returns once the deliveries are durable (for a durable store),
///   all or none; it is idempotent on the id
///   ([`NewDelivery::is_same_call_result`](crate::store::NewDelivery::is_same_call_result)),
///   and refuses another call result under a known id
///   ([`Error::IdConflict`](crate::Error::IdConflict)).
/// - Bounded: a store holds at most its own number of pending deliveries; an insert past it
///   is [`Error::StoreFull`](crate::Error::StoreFull) and stores nothing. Failed deliveries
///   and remembered ids do not count.
/// - A delivery's body bytes never change after insert.
/// - A claimed delivery is not claimed again until its lease runs out (or it is released);
///   no two live claims of one delivery exist. Claims leave out accounts whose endpoint was
///   last saved paused ([`Settings::save_health`]).
/// - An outcome is recorded only with the delivery's current [`ClaimToken`] (fencing).
/// - A delivered delivery may be forgotten (only counted) right away; its id is remembered,
///   with its [`Fingerprint`](crate::store::Fingerprint), while it was delivered at most
///   [`DELIVERED_ID_RETENTION`](crate::limits::DELIVERED_ID_RETENTION) before the newest time
///   the store's writes carried (a store has no clock), and forgotten after that, at most
///   [`PRUNE_BATCH`](crate::limits::PRUNE_BATCH) in one step, at the store's own pace; a failed
///   delivery is kept until an administrator replays or removes it.
pub trait Outbox: Send + Sync + 'static {
    /// Stores new deliveries durably, all or none, idempotent on each delivery's id.
    ///
    /// An element whose id is already stored is a repeat when it is the same call result
    /// ([`NewDelivery::is_same_call_result`]: the same account, campaign and body, bytes and
    /// encoding), whether the stored delivery is pending or failed. A repeat is a no-op: the
    /// stored delivery is left as it is (its times, attempts and state; a failed one is not
    /// replayed), the counts of [`stats`](Outbox::stats) do not change for it, and the rest of
    /// the batch is stored. An element whose id was delivered within the retention (see
    /// below) is a repeat too when its [`NewDelivery::fingerprint`] is the one kept with the
    /// id, and is never sent again. The same id twice in one batch is stored once. So a
    /// dialer may retry a submit (after a dropped future or a retried transaction) as often
    /// as it likes.
    ///
    /// Repeats take no room: a full store still accepts a batch of them.
    ///
    /// The store has no clock: the newest [`created_at`](NewDelivery::created_at) it was
    /// given (with the other times its writes carry) is what it measures the
    /// [`DELIVERED_ID_RETENTION`](crate::limits::DELIVERED_ID_RETENTION) against. An id
    /// delivered at most that long before it is remembered; an older one may be forgotten,
    /// and a submit under it is then a new delivery.
    ///
    /// # Errors
    ///
    /// Each error means that nothing of the batch was stored:
    /// - [`Error::IdConflict`](crate::Error::IdConflict) if an id is stored, or was delivered
    ///   within the retention, for a different call result (another account, campaign or
    ///   body), or appears twice in the batch with different ones.
    /// - [`Error::StoreFull`](crate::Error::StoreFull) if the new elements (repeats do not
    ///   count) would take the pending deliveries past the store's limit; it names the limit.
    /// - [`Error::Store`](crate::Error::Store) if the storage failed: a time the store cannot
    ///   hold, a write or an fsync that failed, a writer that has stopped.
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()>;

    /// Claims at most `request.limit` pending deliveries that are due and not under a live
    /// lease, earliest due first, leaving out `request.skip`'s accounts and accounts whose
    /// endpoint was last saved paused ([`Settings::save_health`]), and taking at most
    /// [`ClaimRequest::room_for`] of each account. Each gets a new token and a lease until
    /// `now + lease`.
    ///
    /// Its cost must not grow with the deliveries of the accounts it leaves out: a process
    /// whose busiest endpoint is at its bound claims as fast from a backlog of a million as
    /// from one of a thousand.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store); nothing is claimed on error.
    fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>>;

    /// When the earliest pending delivery not under a live lease (at `now`) is due, due yet or
    /// not, leaving out `skip`'s accounts, accounts whose endpoint was last saved paused (as
    /// [`claim`](Outbox::claim) does) and, in a store that bounds accounts over several
    /// processes, those whose every place is taken; `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn next_due(&self, now: Timestamp, skip: &[AccountId]) -> Result<Option<Timestamp>>;

    /// Records attempts' outcomes, each with the token of the claim it was made under, and
    /// answers for each in order; one failing leaves the others recorded. A durable store
    /// makes them durable together.
    ///
    /// Each answer: `Ok(())`, or [`Error::LeaseLost`](crate::Error::LeaseLost) when the token
    /// is no longer the delivery's current one, nothing recorded (its lease ran out and it was
    /// claimed again, or its claim ended with an outcome: an earlier one of the same batch,
    /// or a delivery whose id is still remembered);
    /// [`Error::UnknownDelivery`](crate::Error::UnknownDelivery) when the store does not know
    /// the id (never stored, or removed by an administrator); or
    /// [`Error::Store`](crate::Error::Store).
    ///
    /// An attempt's time ([`AttemptRecord::at`]) is a time the store has seen, for the
    /// retention of delivered ids.
    ///
    /// Each outcome answered `Ok(())` is logged for [`attempts`](Outbox::attempts): its time,
    /// delivery, account, campaign, number (the delivery's attempts so far, this one
    /// included), [`AttemptState::of`] its next step, status, error, duration and answer,
    /// with a cursor greater than that of every attempt logged before it in the store. An
    /// outcome answered otherwise is not logged. The log is the administrator's view, not the
    /// outbox: a store may write it in the same write as the outcome (the PostgreSQL and
    /// memory stores do) or a moment later, gathered (the SQLite store writes a few hundred
    /// at a time, or a quarter of a second's, so that the log costs the recording of
    /// outcomes next to nothing). Either way [`attempts`](Outbox::attempts) lists every
    /// attempt recorded before it is called; a crash may lose the last moment of the log,
    /// never an outcome.
    ///
    /// [`AttemptState::of`]: crate::store::AttemptState::of
    fn record_attempts(
        &self,
        outcomes: &[(DeliveryId, ClaimToken, AttemptRecord)],
    ) -> Vec<Result<()>>;

    /// Gives claims back unattempted (a shutdown): each may be claimed again at once. A token
    /// that is no longer current is ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store); the leases then run out on their own.
    fn release(&self, claims: &[(DeliveryId, ClaimToken)]) -> Result<()>;

    /// Extends the leases of claims to `until` (never shortens one): their attempts are over
    /// but their outcomes could not be recorded yet, and no other process may claim them
    /// again meanwhile and send them a second time. A token that is no longer current is
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store); the leases then run to their old ends.
    fn extend_leases(&self, claims: &[(DeliveryId, ClaimToken)], until: Timestamp) -> Result<()>;

    /// Whether any delivery is pending (held ones included).
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn has_pending(&self) -> Result<bool>;

    /// Deliveries matching `filter`, oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn list(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>>;

    /// Puts failed deliveries matching `filter` back to pending, due at `now`, keeping their
    /// ids and bodies. Returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store); nothing changed on error.
    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64>;

    /// Removes deliveries matching `filter` (an administrator's explicit action). Returns how
    /// many.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store); nothing changed on error.
    fn remove(&self, filter: &DeliveryFilter) -> Result<u64>;

    /// The attempts logged for `query`'s account that match it
    /// ([`AttemptQuery::matches`]: campaign, state, before the cursor), newest (highest
    /// cursor) first, at most `query.limit`. Attempts of every process sharing the store are
    /// listed; a delivery an administrator removed keeps its attempts. Paging by the last
    /// cursor of each page lists every attempt logged before the first page was read exactly
    /// once, whatever is logged or pruned meanwhile (a pruned one is simply gone).
    ///
    /// Its cost grows with the page, not with the log: a store keeps attempts indexed by
    /// account and cursor.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn attempts(&self, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>>;

    /// Forgets at most `limit` logged attempts that finished before `before`, oldest first,
    /// and answers how many it forgot. The engine calls it as outcomes are recorded, with its
    /// clock's now less the dialer's retention; a store shared by several processes lets two
    /// of them prune at once without waiting on each other or failing.
    ///
    /// A store may look at only the `limit` oldest attempts (by cursor) and forget those of
    /// them that qualify, so that one call costs at most `limit` rows whatever the log holds:
    /// an answer of `0` then means none of the oldest qualifies yet. A store may keep its
    /// newest attempt whatever its age, where that is how it never gives a cursor twice (the
    /// SQLite store numbers an attempt one more than the highest it holds).
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store); nothing forgotten on error.
    fn prune_attempts(&self, before: Timestamp, limit: usize) -> Result<u64>;

    /// Counts and last outcomes for `account`, or one campaign of it, over every process.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats>;
}

/// The settings part of a store: accounts' settings and endpoints' health, shared by every
/// process on the store.
///
/// Contract (checked for every store by the conformance suite):
/// - Every save takes a version from one counter shared by accounts and health: greater than
///   the version of every save before it. A reader that has seen a version has seen every
///   save with a lower one ([`changes_since`](Settings::changes_since) misses nothing).
/// - Saves are compare-and-set: a save states the version it read the record at (`None`: it
///   read none), and writes only if that is still the stored version, answering
///   [`SaveOutcome::Stale`] and writing nothing otherwise. Two processes that change one
///   record at once never overwrite each other's change unseen: the one that finds it stale
///   reads the record again and applies its change to what is stored.
pub trait Settings: Send + Sync + 'static {
    /// An account's settings as stored, with their version; `None` if never saved.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn load_account(&self, account: &AccountId) -> Result<Option<Versioned>>;

    /// An endpoint's health as stored, with its version; `None` if never saved.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn load_health(&self, account: &AccountId) -> Result<Option<Versioned>>;

    /// Saves an account's settings durably if they are still at version `expected` (`None`:
    /// if none are stored), replacing them; [`SaveOutcome::Stale`], writing nothing, if they
    /// were saved since.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store); nothing changed on error.
    fn save_account(
        &self,
        account: &AccountId,
        settings_json: &str,
        expected: Option<u64>,
    ) -> Result<SaveOutcome>;

    /// Saves an endpoint's health durably if it is still at version `expected` (`None`: if
    /// none is stored), replacing it; [`SaveOutcome::Stale`], writing nothing, if it was saved
    /// since. `paused` says whether the endpoint is paused: from then on [`Outbox::claim`] and
    /// [`Outbox::next_due`] leave its account out, in every process, until its health is saved
    /// again unpaused. So a pause holds the whole fleet from the moment it is saved, not a
    /// notice later; and a process holding an older copy cannot undo it unseen.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store); nothing changed on error.
    fn save_health(
        &self,
        account: &AccountId,
        health_json: &str,
        paused: bool,
        expected: Option<u64>,
    ) -> Result<SaveOutcome>;

    /// Saves several accounts' settings, each as [`save_account`](Settings::save_account)
    /// would, and answers for each in order.
    ///
    /// A store that can saves them in one transaction: all the saves that are not stale, or,
    /// on error, none. The default saves them one at a time, so an error may leave the first
    /// ones saved; SQLite and PostgreSQL stores override it with one transaction.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn save_accounts(&self, saves: &[AccountSave<'_>]) -> Result<Vec<SaveOutcome>> {
        saves
            .iter()
            .map(|s| self.save_account(s.account, s.settings_json, s.expected))
            .collect()
    }

    /// At most `limit` accounts' settings, each with its endpoint's health, in the order of
    /// their ids, starting after `after` (`None`: from the first). The next page starts after
    /// the last account of this one: a keyset walk, whose cost does not grow with how many
    /// accounts came before. An account stored throughout a walk is listed exactly once,
    /// however often it is saved meanwhile (a save keeps its place); one first saved during
    /// the walk is listed if its place is after the page being read.
    ///
    /// The order is the store's own order of ids (SQLite's and the memory store's compare
    /// bytes; PostgreSQL's follows the database's collation); each store keeps it the same
    /// from page to page.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn accounts_after(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountRecords>>;

    /// Every account's settings and endpoint's health, with the cursor to follow changes from.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn load_settings(&self) -> Result<SettingsSnapshot>;

    /// What was saved after `cursor` (by any process), as a snapshot of only the changed
    /// records with their versions, and the cursor to ask from next time.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    fn changes_since(&self, cursor: u64) -> Result<SettingsSnapshot>;
}

/// The notices part of a store: how the processes that share a store hear of each other's
/// writes, as River's driver has a listener beside its executor.
///
/// A store that one process uses alone needs none of it, and says so with an empty
/// `impl Notices for MyStore {}`: the defaults announce nothing and poll nothing.
///
/// Contract (checked for every store by the conformance suite,
/// [`notices_follow_writes`](crate::store::conformance::notices_follow_writes)):
/// - A store that other processes write to answers [`poll_interval`](Notices::poll_interval)
///   with `Some`: each process then reads [`Settings::changes_since`] and looks for due work
///   at least that often, notices or not.
/// - A store that announces writes says so: [`subscribe`](Notices::subscribe) returns `true`,
///   and it has a poll interval (a notice may be lost; polling is what finds it). From then
///   on every process subscribed, the writer's own included, hears [`Notice::DueWork`] after
///   a write that makes work due ([`Outbox::insert`] of a new delivery,
///   [`Outbox::requeue_failed`] that replays one, [`Outbox::release`] that gives one back)
///   and [`Notice::SettingsChanged`] after a save that writes ([`Settings::save_account`],
///   [`Settings::save_health`], [`Settings::save_accounts`]), within seconds. A notice is a
///   hint: one more than needed costs a read.
/// - A store that announces nothing returns `false` and never calls the sink; a store that
///   other processes write to and announces nothing is followed by polling alone.
pub trait Notices: Send + Sync + 'static {
    /// Starts telling `sink` about [`Notice`]s, where the store can, and returns whether it
    /// will (`true`), or whether it announces nothing (`false`: the default, which keeps
    /// nothing of `sink`).
    ///
    /// The delivery engine subscribes when it starts following a store that has a
    /// [`poll_interval`](Notices::poll_interval). The store may call `sink` from any thread
    /// of its own; `sink` returns at once.
    fn subscribe(&self, _sink: NoticeSink) -> bool {
        false
    }

    /// How often to read [`Settings::changes_since`] and look for due work in case a notice
    /// was lost; `None` (the default) for a store no other process writes to.
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
}
