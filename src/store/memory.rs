//! An in-memory outbox: for tests and for dialers that accept losing pending results on a crash.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::limits::DELIVERED_ID_RETENTION;
use crate::store::{
    AttemptRecord, Delivery, DeliveryFilter, DeliveryState, DeliveryStats, NewDelivery, NextStep,
    PRUNE_BATCH, Store,
};

/// Keeps the outbox in the process's memory. Nothing survives a restart.
///
/// Bounded: once [`max_pending`](MemoryStore::max_pending) deliveries are pending, `insert`
/// returns [`Error::StoreFull`] and the call result is not accepted (nothing is dropped
/// silently).
#[derive(Debug)]
pub struct MemoryStore {
    max_pending: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every delivery kept, by id. A B-tree rather than a hash map: it grows a node at a time,
    /// where a hash map would now and then move every entry to a table twice the size while
    /// `insert` holds the lock, stalling every submitter for milliseconds. Each delivery is
    /// made (and its memory first touched) before the lock is taken, and read copies are made
    /// after it is released.
    deliveries: BTreeMap<DeliveryId, Arc<Delivery>>,
    /// Pending deliveries by account, ordered by when they are due.
    due: HashMap<AccountId, BTreeSet<(Timestamp, DeliveryId)>>,
    /// Counts and last outcomes by account, then campaign; delivered deliveries are only
    /// counted. Nested so that a lookup needs no owned key.
    stats: HashMap<AccountId, HashMap<CampaignId, DeliveryStats>>,
    accounts: HashMap<AccountId, String>,
    health: HashMap<AccountId, String>,
    pending: usize,
    /// The ids of delivered deliveries, with when they were delivered, so that a resubmission
    /// is not sent again; forgotten after [`DELIVERED_ID_RETENTION`].
    delivered: BTreeMap<DeliveryId, Timestamp>,
    /// The same, ordered by delivery time, oldest first, for forgetting.
    delivered_by_time: BTreeSet<(Timestamp, DeliveryId)>,
    /// The newest time a write has carried (a submit's creation, an attempt, a replay's now).
    /// The store has no clock: delivered ids are kept for the retention before this.
    newest: Option<Timestamp>,
}

/// Whether two new deliveries are the same call result: same account, campaign and body.
fn same_new(a: &NewDelivery, b: &NewDelivery) -> bool {
    a.account == b.account && a.campaign == b.campaign && a.body == b.body
}

/// Whether a stored delivery and a new one are the same call result: same account, campaign
/// and body (bytes and encoding).
fn same_call_result(stored: &Delivery, new: &NewDelivery) -> bool {
    stored.account == new.account && stored.campaign == new.campaign && stored.body == new.body
}

impl MemoryStore {
    /// The default [`max_pending`](MemoryStore::max_pending): the most deliveries that may be
    /// pending at once.
    pub const DEFAULT_MAX_PENDING: usize = 1_000_000;

    /// An empty store with [`MemoryStore::DEFAULT_MAX_PENDING`].
    pub fn new() -> Self {
        Self::with_max_pending(Self::DEFAULT_MAX_PENDING)
    }

    /// An empty store that holds at most `max_pending` pending deliveries: the most deliveries
    /// that may be pending at once. A submit beyond it is refused with [`Error::StoreFull`] and
    /// nothing is stored. A hard limit, not a preallocation: nothing is reserved up front.
    pub fn with_max_pending(max_pending: usize) -> Self {
        MemoryStore {
            max_pending,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The most deliveries that may be pending at once; a submit beyond it is refused with
    /// [`Error::StoreFull`] and nothing is stored.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        crate::sync::lock(&self.inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn stats_mut(&mut self, d: &Delivery) -> &mut DeliveryStats {
        if !self.stats.contains_key(&d.account) {
            self.stats.insert(d.account.clone(), HashMap::new());
        }
        let campaigns = self.stats.get_mut(&d.account).expect("inserted above");
        if !campaigns.contains_key(&d.campaign) {
            campaigns.insert(d.campaign.clone(), DeliveryStats::default());
        }
        campaigns.get_mut(&d.campaign).expect("inserted above")
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
        self.enqueue_key(&d.account, (d.next_attempt_at, d.id.clone()));
    }

    fn enqueue_key(&mut self, account: &AccountId, key: (Timestamp, DeliveryId)) {
        match self.due.get_mut(account) {
            Some(queue) => {
                queue.insert(key);
            }
            None => {
                self.due.insert(account.clone(), BTreeSet::from([key]));
            }
        }
    }

    /// Moves the store's clock forward to `at`, if it is newer, and forgets at most
    /// [`PRUNE_BATCH`] delivered ids older than the retention.
    fn saw(&mut self, at: Timestamp) {
        let newest = self.newest.map_or(at, |newest| newest.max(at));
        self.newest = Some(newest);
        let Ok(before) = newest.checked_sub(DELIVERED_ID_RETENTION) else {
            return;
        };
        for _ in 0..PRUNE_BATCH {
            match self.delivered_by_time.first() {
                Some((delivered_at, _)) if *delivered_at < before => {
                    if let Some((_, id)) = self.delivered_by_time.pop_first() {
                        self.delivered.remove(&id);
                    }
                }
                _ => break,
            }
        }
    }

    /// Remembers that `id` was delivered at `at`.
    fn remember_delivered(&mut self, id: DeliveryId, at: Timestamp) {
        if let Some(earlier) = self.delivered.get(&id).copied() {
            if earlier >= at {
                return;
            }
            self.delivered_by_time.remove(&(earlier, id.clone()));
        }
        self.delivered_by_time.insert((at, id.clone()));
        self.delivered.insert(id, at);
    }

    /// Records one attempt's outcome: [`Store::record_attempt`] under the lock.
    fn record(&mut self, id: &DeliveryId, record: &AttemptRecord) -> Result<()> {
        let Some(mut shared) = self.deliveries.remove(id) else {
            return Err(Error::UnknownDelivery(id.to_string()));
        };
        // A copy only if a reader still holds this one.
        let d = Arc::make_mut(&mut shared);
        // Leave the old state...
        match d.state {
            DeliveryState::Pending => {
                self.unqueue(d);
                self.stats_mut(d).pending -= 1;
                self.pending -= 1;
            }
            DeliveryState::Failed => self.stats_mut(d).failed -= 1,
            DeliveryState::Delivered => {}
        }
        d.attempts += 1;
        d.last_status = record.status;
        d.last_error = record.error.clone();
        d.last_attempt_at = Some(record.at);
        if record.error.is_some() {
            let stats = self.stats_mut(d);
            stats.last_failure_at = Some(record.at);
            stats.last_failure_reason = record.error.clone();
        }
        // ...and enter the new one.
        match record.next {
            NextStep::Delivered => {
                let stats = self.stats_mut(d);
                stats.delivered += 1;
                stats.last_success_at = Some(record.at);
                // Delivered deliveries are only counted, not kept; their ids are remembered
                // for a while, so a resubmission is not sent again.
                self.remember_delivered(id.clone(), record.at);
            }
            NextStep::RetryAt(at) => {
                d.next_attempt_at = at;
                d.state = DeliveryState::Pending;
                self.stats_mut(d).pending += 1;
                self.pending += 1;
                self.enqueue(d);
                self.deliveries.insert(id.clone(), shared);
            }
            NextStep::Failed => {
                d.state = DeliveryState::Failed;
                self.stats_mut(d).failed += 1;
                self.deliveries.insert(id.clone(), shared);
            }
        }
        self.saw(record.at);
        Ok(())
    }

    fn matching(&self, filter: &DeliveryFilter) -> Vec<DeliveryId> {
        let mut found: Vec<&Delivery> = match &filter.id {
            Some(id) => self.deliveries.get(id).map(|d| &**d).into_iter().collect(),
            None => self.deliveries.values().map(|d| &**d).collect(),
        };
        found.retain(|d| filter.matches(d));
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        found.into_iter().map(|d| d.id.clone()).collect()
    }
}

impl Store for MemoryStore {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        // Everything that allocates is done before the lock is taken: a submitter holds it
        // only to update the maps, so concurrent submitters rarely have to wait for it.
        //
        // An id twice in the batch: the second must be the same call result, and is a repeat.
        let mut repeated = vec![false; deliveries.len()];
        if deliveries.len() > 1 {
            let mut first: HashMap<&DeliveryId, &NewDelivery> = HashMap::new();
            for (new, repeated) in deliveries.iter().zip(&mut repeated) {
                match first.get(&new.id) {
                    Some(earlier) if same_new(earlier, new) => {
                        *repeated = true;
                    }
                    Some(_) => {
                        return Err(Error::IdConflict {
                            id: new.id.to_string(),
                        });
                    }
                    None => {
                        first.insert(&new.id, new);
                    }
                }
            }
        }
        let prepared: Vec<(DeliveryId, Arc<Delivery>, (Timestamp, DeliveryId))> = deliveries
            .iter()
            .map(|new| {
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
                let key = (new.next_attempt_at, new.id.clone());
                (new.id.clone(), Arc::new(d), key)
            })
            .collect();
        let newest = deliveries.iter().map(|d| d.created_at).max();
        let mut inner = self.lock();
        // A repeat of a stored or recently delivered id is left as it is; another call result
        // under a stored id refuses the batch.
        for (new, repeated) in deliveries.iter().zip(&mut repeated) {
            if *repeated {
                continue;
            }
            if let Some(stored) = inner.deliveries.get(&new.id) {
                if !same_call_result(stored, new) {
                    return Err(Error::IdConflict {
                        id: new.id.to_string(),
                    });
                }
                *repeated = true;
            } else if inner.delivered.contains_key(&new.id) {
                *repeated = true;
            }
        }
        let added = repeated.iter().filter(|r| !**r).count();
        if inner.pending + added > self.max_pending {
            return Err(Error::StoreFull {
                max_pending: self.max_pending,
            });
        }
        for ((id, d, key), repeated) in prepared.into_iter().zip(repeated) {
            if repeated {
                continue;
            }
            inner.enqueue_key(&d.account, key);
            inner.stats_mut(&d).pending += 1;
            inner.pending += 1;
            inner.deliveries.insert(id, d);
        }
        if let Some(newest) = newest {
            inner.saw(newest);
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
        let found: Vec<Arc<Delivery>> = {
            let inner = self.lock();
            let Some(queue) = inner.due.get(account) else {
                return Ok(Vec::new());
            };
            queue
                .iter()
                .take_while(|(at, _)| *at <= now)
                .filter(|(_, id)| !skip.contains(id))
                .take(limit)
                .filter_map(|(_, id)| inner.deliveries.get(id).cloned())
                .collect()
        };
        Ok(found.iter().map(|d| Delivery::clone(d)).collect())
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
        self.lock().record(id, record)
    }

    /// Takes the lock once for the lot.
    fn record_attempts(&self, attempts: &[(DeliveryId, AttemptRecord)]) -> Vec<Result<()>> {
        let mut inner = self.lock();
        attempts
            .iter()
            .map(|(id, record)| inner.record(id, record))
            .collect()
    }

    fn list(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>> {
        let found: Vec<Arc<Delivery>> = {
            let inner = self.lock();
            inner
                .matching(filter)
                .into_iter()
                .take(limit)
                .filter_map(|id| inner.deliveries.get(&id).cloned())
                .collect()
        };
        Ok(found.iter().map(|d| Delivery::clone(d)).collect())
    }

    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64> {
        let mut inner = self.lock();
        let filter = DeliveryFilter {
            state: Some(DeliveryState::Failed),
            ..filter.clone()
        };
        let ids = inner.matching(&filter);
        for id in &ids {
            let Some(mut shared) = inner.deliveries.remove(id) else {
                continue;
            };
            let d = Arc::make_mut(&mut shared);
            d.state = DeliveryState::Pending;
            d.next_attempt_at = now;
            let stats = inner.stats_mut(d);
            stats.failed -= 1;
            stats.pending += 1;
            inner.pending += 1;
            inner.enqueue(d);
            inner.deliveries.insert(id.clone(), shared);
        }
        inner.saw(now);
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
        let campaigns = inner.stats.get(account).into_iter().flatten();
        for (c, s) in campaigns {
            if campaign.is_some_and(|want| want != c) {
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
        let store = MemoryStore::with_max_pending(2);
        let batch = crate::store::conformance::new_deliveries("acme", "c1", 3);
        assert!(matches!(
            store.insert(&batch),
            Err(Error::StoreFull { max_pending: 2 })
        ));
        store.insert(&batch[..2]).unwrap();
        assert!(matches!(
            store.insert(&batch[2..]),
            Err(Error::StoreFull { .. })
        ));
        assert_eq!(store.stats(&"acme".into(), None).unwrap().pending, 2);
        // A full store still takes a resubmission: it needs no room.
        store.insert(&batch[..2]).unwrap();
        assert_eq!(store.stats(&"acme".into(), None).unwrap().pending, 2);
    }

    #[test]
    fn a_delivered_id_is_forgotten_after_the_retention() {
        use crate::limits::DELIVERED_ID_RETENTION;
        use crate::store::conformance::t;

        let store = MemoryStore::new();
        let batch = crate::store::conformance::new_deliveries("acme", "c1", 2);
        store.insert(&batch[..1]).unwrap();
        let delivered = AttemptRecord {
            at: t(10),
            status: Some(204),
            error: None,
            next: NextStep::Delivered,
        };
        store.record_attempt(&batch[0].id, &delivered).unwrap();
        assert_eq!(store.lock().delivered.len(), 1);

        // The store's clock is the newest time it has seen: a submit just inside the
        // retention keeps the id, one past it forgets it.
        let at = |time: Timestamp| NewDelivery {
            created_at: time,
            next_attempt_at: time,
            ..batch[1].clone()
        };
        store.insert(&[at(t(10) + DELIVERED_ID_RETENTION)]).unwrap();
        store.insert(&batch[..1]).unwrap();
        assert_eq!(store.stats(&"acme".into(), None).unwrap().pending, 1);
        store.insert(&[at(t(11) + DELIVERED_ID_RETENTION)]).unwrap();
        assert!(store.lock().delivered.is_empty());
        assert!(store.lock().delivered_by_time.is_empty());
        store.insert(&batch[..1]).unwrap();
        let stats = store.stats(&"acme".into(), None).unwrap();
        assert_eq!((stats.pending, stats.delivered), (2, 1));
    }
}
