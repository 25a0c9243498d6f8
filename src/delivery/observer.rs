//! What delivery records for metrics, through one [`Observer`]: the engine and the scheduler
//! call it at every point worth counting, whatever the features. Without the `metrics`
//! feature it is `()`, whose methods do nothing; with it, the `metrics` facade's recorder
//! (`delivery::metrics`). `delivery::new_observer` chooses.

use std::fmt;
use std::time::Duration;

use crate::delivery::classify::Verdict;
use crate::ids::AccountId;
use crate::store::Outbox;

/// What the engine and the scheduler report as they go. Every method does nothing unless an
/// observer records it.
pub(crate) trait Observer: Send + Sync + fmt::Debug + 'static {
    /// A worker starts (with the store failing, or not): what the last one read is forgotten.
    fn worker_started(&self, _store_failing: bool) {}
    /// An attempt's outcome was recorded, as the events report it (`failed_for_good` when
    /// its delivery failed for good with it).
    fn recorded(
        &self,
        _account: &AccountId,
        _verdict: &Verdict,
        _failed_for_good: bool,
        _took: Duration,
    ) {
    }
    /// Attempts in flight in this process now.
    fn in_flight(&self, _n: usize) {}
    /// The worker reports its store failing, or working again.
    fn store_failing(&self, _failing: bool) {}
    /// An attempt of `account` was claimed or recorded: its pending count changed.
    fn touched(&self, _account: &AccountId) {}
    /// The end of a pass with the store working: reads the store's pending counts when a
    /// reading is due. Returns how long until the next reading is wanted, if one is.
    fn read_pending(
        &self,
        _store: &dyn Outbox,
        _accounts: &dyn Fn() -> Vec<AccountId>,
        _account_count: usize,
    ) -> Option<Duration> {
        None
    }
}

/// `()` records nothing: the observer without the `metrics` feature.
impl Observer for () {}
