//! An in-memory outbox: for tests and for dialers that accept losing pending results on a crash.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{
    AttemptRecord, Delivery, DeliveryFilter, DeliveryState, DeliveryStats, NewDelivery, NextStep,
    Store,
};

/// Keeps the outbox in the process's memory. Nothing survives a restart.
///
/// Bounded: once `capacity` deliveries are pending, `insert` returns [`Error::StoreFull`] and
/// the call result is not accepted (nothing is dropped silently).
#[derive(Debug)]
pub struct MemoryStore {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    deliveries: HashMap<DeliveryId, Delivery>,
    /// Pending deliveries by account, ordered by when they are due.
    due: HashMap<AccountId, BTreeSet<(Timestamp, DeliveryId)>>,
    /// Counts and last outcomes by (account, campaign); delivered deliveries are only counted.
    stats: HashMap<(AccountId, CampaignId), DeliveryStats>,
    accounts: HashMap<AccountId, String>,
    health: HashMap<AccountId, String>,
    pending: usize,
}

impl MemoryStore {
    /// The default capacity: pending deliveries held before `insert` refuses more.
    pub const DEFAULT_CAPACITY: usize = 1_000_000;

    /// An empty store with [`MemoryStore::DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// An empty store that holds at most `capacity` pending deliveries.
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryStore {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn stats_mut(&mut self, d: &Delivery) -> &mut DeliveryStats {
        self.stats
            .entry((d.account.clone(), d.campaign.clone()))
            .or_default()
    }

    fn unqueue(&mut self, d: &Delivery) {
        if let Some(q) = self.due.get_mut(&d.account) {
            q.remove(&(d.next_attempt_at, d.id.clone()));
            if q.is_empty() {
                self.due.remove(&d.account);
            }
        }
    }

    fn enqueue(&mut self, d: &Delivery) {
        self.due
            .entry(d.account.clone())
            .or_default()
            .insert((d.next_attempt_at, d.id.clone()));
    }

    fn matching(&self, filter: &DeliveryFilter) -> Vec<DeliveryId> {
        let mut found: Vec<&Delivery> = match &filter.id {
            Some(id) => self.deliveries.get(id).into_iter().collect(),
            None => self.deliveries.values().collect(),
        };
        found.retain(|d| filter.matches(d));
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        found.into_iter().map(|d| d.id.clone()).collect()
    }
}

impl Store for MemoryStore {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        let mut inner = self.lock();
        if inner.pending + deliveries.len() > self.capacity {
            return Err(Error::StoreFull {
                capacity: self.capacity,
            });
        }
        if let Some(dup) = deliveries
            .iter()
            .find(|n| inner.deliveries.contains_key(&n.id))
        {
            return Err(Error::Store {
                message: format!("delivery {} already exists", dup.id),
                source: None,
            });
        }
        for new in deliveries {
            let d = Delivery {
                id: new.id.clone(),
                account: new.account.clone(),
                campaign: new.campaign.clone(),
                body: new.body.clone(),
                created_at: new.created_at,
                attempts: 0,
                next_attempt_at: new.next_attempt_at,
                state: DeliveryState::Pending,
                last_status: None,
                last_error: None,
                last_attempt_at: None,
            };
            inner.enqueue(&d);
            inner.stats_mut(&d).pending += 1;
            inner.pending += 1;
            inner.deliveries.insert(d.id.clone(), d);
        }
        Ok(())
    }

    fn due(
        &self,
        account: &AccountId,
        now: Timestamp,
        limit: usize,
        skip: &[DeliveryId],
    ) -> Result<Vec<Delivery>> {
        let inner = self.lock();
        let Some(queue) = inner.due.get(account) else {
            return Ok(Vec::new());
        };
        Ok(queue
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter(|(_, id)| !skip.contains(id))
            .take(limit)
            .filter_map(|(_, id)| inner.deliveries.get(id).cloned())
            .collect())
    }

    fn pending_accounts(&self) -> Result<Vec<(AccountId, Timestamp)>> {
        let inner = self.lock();
        Ok(inner
            .due
            .iter()
            .filter_map(|(a, q)| q.first().map(|(at, _)| (a.clone(), *at)))
            .collect())
    }

    fn record_attempt(&self, id: &DeliveryId, record: &AttemptRecord) -> Result<()> {
        let mut inner = self.lock();
        let Some(mut d) = inner.deliveries.remove(id) else {
            return Err(Error::UnknownDelivery(id.to_string()));
        };
        // Leave the old state...
        match d.state {
            DeliveryState::Pending => {
                inner.unqueue(&d);
                inner.stats_mut(&d).pending -= 1;
                inner.pending -= 1;
            }
            DeliveryState::Failed => inner.stats_mut(&d).failed -= 1,
            DeliveryState::Delivered => {}
        }
        d.attempts += 1;
        d.last_status = record.status;
        d.last_error = record.error.clone();
        d.last_attempt_at = Some(record.at);
        if record.error.is_some() {
            let stats = inner.stats_mut(&d);
            stats.last_failure_at = Some(record.at);
            stats.last_failure_reason = record.error.clone();
        }
        // ...and enter the new one.
        match record.next {
            NextStep::Delivered => {
                let stats = inner.stats_mut(&d);
                stats.delivered += 1;
                stats.last_success_at = Some(record.at);
                // Delivered deliveries are only counted, not kept.
            }
            NextStep::RetryAt(at) => {
                d.next_attempt_at = at;
                d.state = DeliveryState::Pending;
                inner.stats_mut(&d).pending += 1;
                inner.pending += 1;
                inner.enqueue(&d);
                inner.deliveries.insert(d.id.clone(), d);
            }
            NextStep::Failed => {
                d.state = DeliveryState::Failed;
                inner.stats_mut(&d).failed += 1;
                inner.deliveries.insert(d.id.clone(), d);
            }
        }
        Ok(())
    }

    fn list(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>> {
        let inner = self.lock();
        Ok(inner
            .matching(filter)
            .into_iter()
            .take(limit)
            .filter_map(|id| inner.deliveries.get(&id).cloned())
            .collect())
    }

    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64> {
        let mut inner = self.lock();
        let filter = DeliveryFilter {
            state: Some(DeliveryState::Failed),
            ..filter.clone()
        };
        let ids = inner.matching(&filter);
        for id in &ids {
            let Some(mut d) = inner.deliveries.remove(id) else {
                continue;
            };
            d.state = DeliveryState::Pending;
            d.next_attempt_at = now;
            let stats = inner.stats_mut(&d);
            stats.failed -= 1;
            stats.pending += 1;
            inner.pending += 1;
            inner.enqueue(&d);
            inner.deliveries.insert(d.id.clone(), d);
        }
        Ok(ids.len() as u64)
    }

    fn remove(&self, filter: &DeliveryFilter) -> Result<u64> {
        let mut inner = self.lock();
        let ids = inner.matching(filter);
        for id in &ids {
            let Some(d) = inner.deliveries.remove(id) else {
                continue;
            };
            match d.state {
                DeliveryState::Pending => {
                    inner.unqueue(&d);
                    inner.stats_mut(&d).pending -= 1;
                    inner.pending -= 1;
                }
                DeliveryState::Failed => inner.stats_mut(&d).failed -= 1,
                DeliveryState::Delivered => {}
            }
        }
        Ok(ids.len() as u64)
    }

    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats> {
        let inner = self.lock();
        let mut total = DeliveryStats::default();
        for ((a, c), s) in &inner.stats {
            if a != account || campaign.is_some_and(|want| want != c) {
                continue;
            }
            total.pending += s.pending;
            total.delivered += s.delivered;
            total.failed += s.failed;
            total.last_success_at = total.last_success_at.max(s.last_success_at);
            if s.last_failure_at > total.last_failure_at {
                total.last_failure_at = s.last_failure_at;
                total.last_failure_reason = s.last_failure_reason.clone();
            }
        }
        Ok(total)
    }

    fn save_account(&self, account: &AccountId, settings_json: &str) -> Result<()> {
        self.lock()
            .accounts
            .insert(account.clone(), settings_json.to_owned());
        Ok(())
    }

    fn load_accounts(&self) -> Result<Vec<String>> {
        Ok(self.lock().accounts.values().cloned().collect())
    }

    fn save_health(&self, account: &AccountId, health_json: &str) -> Result<()> {
        self.lock()
            .health
            .insert(account.clone(), health_json.to_owned());
        Ok(())
    }

    fn load_health(&self) -> Result<Vec<(AccountId, String)>> {
        Ok(self
            .lock()
            .health
            .iter()
            .map(|(a, h)| (a.clone(), h.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conforms() {
        crate::store::conformance::run_all(&|| MemoryStore::new());
    }

    #[test]
    fn full_store_refuses_and_keeps_what_it_has() {
        let store = MemoryStore::with_capacity(2);
        let batch = crate::store::conformance::new_deliveries("acme", "c1", 3);
        assert!(matches!(
            store.insert(&batch),
            Err(Error::StoreFull { capacity: 2 })
        ));
        store.insert(&batch[..2]).unwrap();
        assert!(matches!(
            store.insert(&batch[2..]),
            Err(Error::StoreFull { .. })
        ));
        assert_eq!(store.stats(&"acme".into(), None).unwrap().pending, 2);
    }
}
