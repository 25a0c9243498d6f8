//! A [`MemoryStore`] that fails on demand: every method of `Outbox` and `Settings` passes
//! through to the memory store unless the [`Failures`] beside it says that call fails now.
//! tests/store_faults.rs (a full disk, a corrupt page) and tests/metrics.rs (an outcome that
//! cannot be recorded) use it. tests/outside_store.rs keeps a wrapper of its own: it proves
//! a store can be written with nothing but the crate's public API, so it uses no support module.

use call_result_webhook::jiff::Timestamp;
use call_result_webhook::store::{
    AccountRecords, AttemptQuery, AttemptRecord, Claim, ClaimRequest, ClaimToken, Delivery,
    DeliveryFilter, DeliveryStats, LoggedAttempt, NewDelivery, Notices, Outbox, SaveOutcome,
    Settings, SettingsSnapshot, Versioned,
};
use call_result_webhook::{AccountId, CampaignId, DeliveryId, Error, MemoryStore, Result};

/// What a store method does, for [`Failures`] to decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads the outbox: `claim`, `next_due`, `has_pending`, `list`.
    Read,
    /// Writes the outbox or the settings: `insert`, `record_attempts`, `release`,
    /// `extend_leases`, `requeue_failed`, `remove`, `save_account`, `save_health`.
    Write,
    /// Reads counts or settings: `stats`, `load_account`, `load_health`, `accounts_after`,
    /// `load_settings`, `changes_since`.
    Look,
}

/// Which calls of a [`FaultyStore`] fail, and with what.
pub trait Failures: Send + Sync + 'static {
    /// Whether the call of `method` (its name in `Outbox` or `Settings`) fails now.
    fn fails(&self, method: &'static str, access: Access) -> bool;

    /// The error a failing call answers (once for each answer).
    fn error(&self, method: &'static str, access: Access) -> Error;
}

/// A [`MemoryStore`] whose calls fail while `failures` says so. Its notices are the defaults
/// (polling only).
#[derive(Default)]
pub struct FaultyStore<F> {
    pub inner: MemoryStore,
    pub failures: F,
}

impl<F: Failures> FaultyStore<F> {
    pub fn new(failures: F) -> Self {
        FaultyStore {
            inner: MemoryStore::new(),
            failures,
        }
    }

    fn check(&self, method: &'static str, access: Access) -> Result<()> {
        if self.failures.fails(method, access) {
            return Err(self.failures.error(method, access));
        }
        Ok(())
    }
}

impl<F: Failures> Outbox for FaultyStore<F> {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        self.check("insert", Access::Write)?;
        self.inner.insert(deliveries)
    }
    fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>> {
        self.check("claim", Access::Read)?;
        self.inner.claim(request)
    }
    fn next_due(&self, now: Timestamp, skip: &[AccountId]) -> Result<Option<Timestamp>> {
        self.check("next_due", Access::Read)?;
        self.inner.next_due(now, skip)
    }
    fn record_attempts(
        &self,
        outcomes: &[(DeliveryId, ClaimToken, AttemptRecord)],
    ) -> Vec<Result<()>> {
        let (method, access) = ("record_attempts", Access::Write);
        if self.failures.fails(method, access) {
            return outcomes
                .iter()
                .map(|_| Err(self.failures.error(method, access)))
                .collect();
        }
        self.inner.record_attempts(outcomes)
    }
    fn release(&self, claims: &[(DeliveryId, ClaimToken)]) -> Result<()> {
        self.check("release", Access::Write)?;
        self.inner.release(claims)
    }
    fn extend_leases(&self, claims: &[(DeliveryId, ClaimToken)], until: Timestamp) -> Result<()> {
        self.check("extend_leases", Access::Write)?;
        self.inner.extend_leases(claims, until)
    }
    fn has_pending(&self) -> Result<bool> {
        self.check("has_pending", Access::Read)?;
        self.inner.has_pending()
    }
    fn list(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>> {
        self.check("list", Access::Read)?;
        self.inner.list(filter, limit)
    }
    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64> {
        self.check("requeue_failed", Access::Write)?;
        self.inner.requeue_failed(filter, now)
    }
    fn remove(&self, filter: &DeliveryFilter) -> Result<u64> {
        self.check("remove", Access::Write)?;
        self.inner.remove(filter)
    }
    fn attempts(&self, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>> {
        self.check("attempts", Access::Read)?;
        self.inner.attempts(query)
    }
    fn prune_attempts(&self, before: Timestamp, limit: usize) -> Result<u64> {
        self.check("prune_attempts", Access::Write)?;
        self.inner.prune_attempts(before, limit)
    }
    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats> {
        self.check("stats", Access::Look)?;
        self.inner.stats(account, campaign)
    }
}

impl<F: Failures> Settings for FaultyStore<F> {
    fn load_account(&self, account: &AccountId) -> Result<Option<Versioned>> {
        self.check("load_account", Access::Look)?;
        self.inner.load_account(account)
    }
    fn load_health(&self, account: &AccountId) -> Result<Option<Versioned>> {
        self.check("load_health", Access::Look)?;
        self.inner.load_health(account)
    }
    fn save_account(
        &self,
        account: &AccountId,
        settings_json: &str,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        self.check("save_account", Access::Write)?;
        self.inner.save_account(account, settings_json, expected)
    }
    fn save_health(
        &self,
        account: &AccountId,
        health_json: &str,
        paused: bool,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        self.check("save_health", Access::Write)?;
        self.inner
            .save_health(account, health_json, paused, expected)
    }
    fn accounts_after(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountRecords>> {
        self.check("accounts_after", Access::Look)?;
        self.inner.accounts_after(after, limit)
    }
    fn load_settings(&self) -> Result<SettingsSnapshot> {
        self.check("load_settings", Access::Look)?;
        self.inner.load_settings()
    }
    fn changes_since(&self, cursor: u64) -> Result<SettingsSnapshot> {
        self.check("changes_since", Access::Look)?;
        self.inner.changes_since(cursor)
    }
}

impl<F: Failures> Notices for FaultyStore<F> {}
