//! What the scheduler asks of the application core: the seam between `delivery` (the
//! scheduler, its runners and its recorder) and the engine above it, which implements it.
//! The scheduler knows this trait, never the engine.

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use crate::delivery::attempt::{Completed, Completion};
use crate::delivery::classify::Verdict;
use crate::delivery::clock::Clock;
use crate::delivery::events::Event;
use crate::delivery::observer::Observer;
use crate::delivery::signal::Signal;
use crate::ids::AccountId;
use crate::store::{Delivery, Store};

/// A store failure the worker reported: what failed and whether reads fail too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreProblem {
    pub(crate) cause: String,
    /// Reads (claims) fail, not only writes: nothing pending can be delivered until the store
    /// is repaired.
    pub(crate) reads: bool,
}

/// What the scheduler, its runners and its recorder ask of the application core.
pub(crate) trait Core: Send + Sync + 'static {
    // What the core and the scheduler share.

    /// The outbox the scheduler claims from and records to.
    fn store(&self) -> &dyn Store;
    /// The time attempts are made and recorded at.
    fn clock(&self) -> &dyn Clock;
    /// How the scheduler is woken, and tells waiters it made progress or stopped.
    fn signal(&self) -> &Signal;
    /// Hands `event` to the dialer's callback.
    fn emit(&self, event: Event);

    // The worker's own state, kept where the facade reads it.

    /// Takes the one worker place; `false` if a worker is running already.
    fn claim_worker(&self) -> bool;
    fn release_worker(&self);
    /// Attempts in flight, as the scheduler last published.
    fn in_flight(&self) -> usize;
    fn set_in_flight(&self, n: usize);
    /// The store failure the worker reported and has not seen recover from, if any.
    fn store_problem(&self) -> Option<StoreProblem>;
    /// The store failure the worker reports, or `None` once the store works again.
    fn set_store_problem(&self, problem: Option<StoreProblem>);

    // Which deliveries may be attempted, and how.

    /// How many requests one endpoint may have in flight at once.
    fn per_endpoint(&self) -> usize;
    /// The held accounts (webhook off, no URL, endpoint paused): left out of claims.
    fn held_accounts(&self) -> Vec<AccountId>;
    /// Bumped whenever the held accounts change.
    fn held_version(&self) -> u64;
    /// Whether the account's pending deliveries may be attempted now.
    fn lane_open(&self, account: &AccountId) -> bool;
    /// How long a claim's lease lasts.
    fn lease(&self) -> Duration;
    /// The request for one attempt, or the failure to record without sending anything.
    fn prepare(&self, d: &Delivery) -> Result<Request<Bytes>, Verdict>;
    /// Records the outcomes of `completions` together; for each, what the scheduler learns.
    fn complete_all(&self, completions: &[Completion]) -> Vec<Completed>;

    // What is counted.

    /// What the metrics are recorded through.
    fn observer(&self) -> &dyn Observer;
    /// Every account this process has settings for.
    fn account_ids(&self) -> Vec<AccountId>;
    /// How many accounts this process has settings for.
    fn account_count(&self) -> usize;
}
