//! An in-memory outbox: for tests and for dialers that accept losing pending results on a crash.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::limits::{DELIVERED_ID_RETENTION, PRUNE_BATCH};
use crate::store::attempt_log::MemoryLog;
use crate::store::{
    AccountRecords, AccountSave, AttemptQuery, AttemptRecord, Claim, ClaimRequest, ClaimToken,
    Delivery, DeliveryFilter, DeliveryState, DeliveryStats, Fingerprint, LoggedAttempt,
    NewDelivery, NextStep, Notices, Outbox, SaveOutcome, Settings, SettingsSnapshot, Versioned,
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
    /// Pending deliveries not under a live claim, by account, ordered by when they are due.
    due: HashMap<AccountId, BTreeSet<(Timestamp, DeliveryId)>>,
    /// Each account's earliest entry in `due`: what to claim next is the first of these, so a
    /// claim never looks at more accounts than it skips.
    heads: BTreeSet<(Timestamp, AccountId)>,
    /// Claimed deliveries: their current token and lease. A claimed delivery is out of `due`
    /// until its outcome is recorded, it is released, or its lease runs out.
    claims: HashMap<DeliveryId, (ClaimToken, Timestamp)>,
    /// The same leases, ordered by when they run out.
    leases: BTreeSet<(Timestamp, DeliveryId)>,
    /// The last fencing token given.
    last_token: u64,
    /// Counts and last outcomes by account, then campaign; delivered deliveries are only
    /// counted. Nested so that a lookup needs no owned key.
    stats: HashMap<AccountId, HashMap<CampaignId, DeliveryStats>>,
    /// Settings and health records with the version each was saved at; the accounts in the
    /// order of their ids, for [`Settings::accounts_after`].
    accounts: BTreeMap<AccountId, (String, u64)>,
    health: BTreeMap<AccountId, (String, u64)>,
    /// The last settings version given.
    version: u64,
    /// Accounts whose endpoint was last saved paused: never claimed.
    paused: std::collections::HashSet<AccountId>,
    pending: usize,
    /// The ids of delivered deliveries, with when they were delivered, so that a resubmission
    /// is not sent again; forgotten after [`DELIVERED_ID_RETENTION`].
    delivered: BTreeMap<DeliveryId, (Timestamp, Fingerprint)>,
    /// The same, ordered by delivery time, oldest first, for forgetting.
    delivered_by_time: BTreeSet<(Timestamp, DeliveryId)>,
    /// The newest time a write has carried (a submit's creation, an attempt, a replay's now).
    /// The store has no clock: delivered ids are kept for the retention before this.
    newest: Option<Timestamp>,
    /// The attempts log, at most [`MemoryStore::MAX_LOGGED_ATTEMPTS`].
    log: MemoryLog,
}

impl MemoryStore {
    /// The default [`max_pending`](MemoryStore::max_pending): the most deliveries that may be
    /// pending at once.
    pub const DEFAULT_MAX_PENDING: usize = 1_000_000;

    /// The most attempts the store's attempts log keeps: 100,000, the oldest forgotten first
    /// past it (and, as in every store, once the retention is over).
    pub const MAX_LOGGED_ATTEMPTS: usize = 100_000;

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
        self.forget_claim(&d.id);
        let key = (d.next_attempt_at, d.id.clone());
        let Some(q) = self.due.get_mut(&d.account) else {
            return;
        };
        let was_head = q.first() == Some(&key);
        if !q.remove(&key) {
            return;
        }
        if was_head {
            self.heads.remove(&(key.0, d.account.clone()));
            match q.first() {
                Some((at, _)) => {
                    self.heads.insert((*at, d.account.clone()));
                }
                None => {
                    self.due.remove(&d.account);
                }
            }
        }
    }

    /// Drops `id`'s claim, if it has one.
    fn forget_claim(&mut self, id: &DeliveryId) {
        if let Some((_, lease_until)) = self.claims.remove(id) {
            self.leases.remove(&(lease_until, id.clone()));
        }
    }

    /// Puts the deliveries whose lease ran out by `now` back among the claimable ones.
    fn expire_leases(&mut self, now: Timestamp) {
        while let Some((lease_until, id)) = self.leases.first().cloned() {
            if lease_until > now {
                break;
            }
            self.leases.pop_first();
            self.claims.remove(&id);
            if let Some(d) = self.deliveries.get(&id).cloned()
                && d.state == DeliveryState::Pending
            {
                self.enqueue(&d);
            }
        }
    }

    fn enqueue(&mut self, d: &Delivery) {
        self.enqueue_key(&d.account, (d.next_attempt_at, d.id.clone()));
    }

    fn enqueue_key(&mut self, account: &AccountId, key: (Timestamp, DeliveryId)) {
        let at = key.0;
        match self.due.get_mut(account) {
            Some(queue) => {
                let old_head = queue.first().map(|(t, _)| *t);
                queue.insert(key);
                if old_head.is_some_and(|t| at < t) {
                    self.heads
                        .remove(&(old_head.expect("checked"), account.clone()));
                    self.heads.insert((at, account.clone()));
                }
            }
            None => {
                self.due.insert(account.clone(), BTreeSet::from([key]));
                self.heads.insert((at, account.clone()));
            }
        }
    }

    /// Takes the earliest due delivery of `account` out of `due`.
    fn take_head(&mut self, account: &AccountId) -> Option<DeliveryId> {
        let queue = self.due.get_mut(account)?;
        let (at, id) = queue.pop_first()?;
        self.heads.remove(&(at, account.clone()));
        match queue.first() {
            Some((next, _)) => {
                self.heads.insert((*next, account.clone()));
            }
            None => {
                self.due.remove(account);
            }
        }
        Some(id)
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

    /// Remembers that `id` was delivered at `at`, with what was delivered.
    fn remember_delivered(&mut self, id: DeliveryId, at: Timestamp, what: Fingerprint) {
        if let Some((earlier, _)) = self.delivered.get(&id).copied() {
            if earlier >= at {
                return;
            }
            self.delivered_by_time.remove(&(earlier, id.clone()));
        }
        self.delivered_by_time.insert((at, id.clone()));
        self.delivered.insert(id, (at, what));
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
        self.log.log(d, record);
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
                let what = d.fingerprint();
                self.remember_delivered(id.clone(), record.at, what);
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

impl Inner {
    /// Marks in `repeated` each delivery whose id is stored or was delivered lately: a repeat,
    /// left as it is. Another call result under a stored id refuses the batch.
    fn find_repeats(&self, deliveries: &[NewDelivery], repeated: &mut [bool]) -> Result<()> {
        for (new, repeated) in deliveries.iter().zip(repeated) {
            if *repeated {
                continue;
            }
            if let Some(stored) = self.deliveries.get(&new.id) {
                if !stored.is_same_call_result(new) {
                    return Err(Error::IdConflict {
                        id: new.id.to_string(),
                    });
                }
                *repeated = true;
            } else if let Some((_, what)) = self.delivered.get(&new.id) {
                if *what != new.fingerprint() {
                    return Err(Error::IdConflict {
                        id: new.id.to_string(),
                    });
                }
                *repeated = true;
            }
        }
        Ok(())
    }
}

/// Which deliveries of a batch repeat an id earlier in it: each must be the same call result.
fn repeats_within(deliveries: &[NewDelivery]) -> Result<Vec<bool>> {
    let mut repeated = vec![false; deliveries.len()];
    if deliveries.len() > 1 {
        let mut first: HashMap<&DeliveryId, &NewDelivery> = HashMap::new();
        for (new, repeated) in deliveries.iter().zip(&mut repeated) {
            match first.get(&new.id) {
                Some(earlier) if earlier.is_same_call_result(new) => {
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
    Ok(repeated)
}

/// A new delivery as stored: pending, never attempted; with its key in the due order.
fn pending_delivery(new: &NewDelivery) -> (DeliveryId, Arc<Delivery>, (Timestamp, DeliveryId)) {
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
}

impl Outbox for MemoryStore {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        // Everything that allocates is done before the lock is taken: a submitter holds it
        // only to update the maps, so concurrent submitters rarely have to wait for it.
        let mut repeated = repeats_within(deliveries)?;
        let prepared: Vec<(DeliveryId, Arc<Delivery>, (Timestamp, DeliveryId))> =
            deliveries.iter().map(pending_delivery).collect();
        let newest = deliveries.iter().map(|d| d.created_at).max();
        let mut inner = self.lock();
        inner.find_repeats(deliveries, &mut repeated)?;
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

    fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>> {
        let mut claimed: Vec<(Arc<Delivery>, ClaimToken, Timestamp)> = Vec::new();
        {
            let mut inner = self.lock();
            inner.expire_leases(request.now);
            let lease_until = add_lease(request.now, request.lease);
            // How many of each account this claim took, against its room.
            let mut taken: HashMap<AccountId, usize> = HashMap::new();
            // The heads in order; skipped accounts are stepped over, never searched.
            while claimed.len() < request.limit {
                let next = inner
                    .heads
                    .iter()
                    .take_while(|(at, _)| *at <= request.now)
                    .find(|(_, account)| {
                        !request.skip.contains(account)
                            && !inner.paused.contains(account)
                            && taken.get(account).copied().unwrap_or(0) < request.room_for(account)
                    })
                    .map(|(_, account)| account.clone());
                let Some(account) = next else { break };
                let Some(id) = inner.take_head(&account) else {
                    break;
                };
                *taken.entry(account).or_default() += 1;
                inner.last_token += 1;
                let token = ClaimToken::new(inner.last_token);
                inner.claims.insert(id.clone(), (token, lease_until));
                inner.leases.insert((lease_until, id.clone()));
                if let Some(d) = inner.deliveries.get(&id).cloned() {
                    claimed.push((d, token, lease_until));
                }
            }
        }
        Ok(claimed
            .into_iter()
            .map(|(d, token, lease_until)| Claim {
                delivery: Delivery::clone(&d),
                token,
                lease_until,
            })
            .collect())
    }

    fn next_due(&self, now: Timestamp, skip: &[AccountId]) -> Result<Option<Timestamp>> {
        let mut inner = self.lock();
        inner.expire_leases(now);
        // Claimed deliveries are out of `heads` until their lease runs out.
        let due = inner
            .heads
            .iter()
            .find(|(_, account)| !skip.contains(account) && !inner.paused.contains(account))
            .map(|(at, _)| *at);
        Ok(due)
    }

    /// Takes the lock once for the lot.
    fn record_attempts(
        &self,
        outcomes: &[(DeliveryId, ClaimToken, AttemptRecord)],
    ) -> Vec<Result<()>> {
        let mut inner = self.lock();
        outcomes
            .iter()
            .map(|(id, token, record)| {
                if !inner.deliveries.contains_key(id) {
                    // Delivered under another claim (an earlier outcome of the batch, or a
                    // newer claim's): that outcome stands, as in every store.
                    if inner.delivered.contains_key(id) {
                        return Err(Error::LeaseLost { id: id.to_string() });
                    }
                    return Err(Error::UnknownDelivery(id.to_string()));
                }
                match inner.claims.get(id) {
                    Some((current, _)) if current == token => inner.record(id, record),
                    _ => Err(Error::LeaseLost { id: id.to_string() }),
                }
            })
            .collect()
    }

    fn extend_leases(&self, claims: &[(DeliveryId, ClaimToken)], until: Timestamp) -> Result<()> {
        let mut inner = self.lock();
        for (id, token) in claims {
            let Some((current, lease_until)) = inner.claims.get(id).copied() else {
                continue;
            };
            if current == *token && lease_until < until {
                inner.leases.remove(&(lease_until, id.clone()));
                inner.leases.insert((until, id.clone()));
                inner.claims.insert(id.clone(), (current, until));
            }
        }
        Ok(())
    }

    fn release(&self, claims: &[(DeliveryId, ClaimToken)]) -> Result<()> {
        let mut inner = self.lock();
        for (id, token) in claims {
            if inner
                .claims
                .get(id)
                .is_some_and(|(current, _)| current == token)
            {
                inner.forget_claim(id);
                if let Some(d) = inner.deliveries.get(id).cloned()
                    && d.state == DeliveryState::Pending
                {
                    inner.enqueue(&d);
                }
            }
        }
        Ok(())
    }

    fn has_pending(&self) -> Result<bool> {
        Ok(self.lock().pending > 0)
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

    fn attempts(&self, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>> {
        Ok(self.lock().log.read(query))
    }

    fn prune_attempts(&self, before: Timestamp, limit: usize) -> Result<u64> {
        Ok(self.lock().log.prune(before, limit))
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
}

/// Writes `json` as `account`'s record if its version is still `expected` (`None`: if it has
/// none), at the next version from `last`: the compare-and-set of every settings save.
fn compare_and_set(
    records: &mut BTreeMap<AccountId, (String, u64)>,
    last: &mut u64,
    account: &AccountId,
    json: &str,
    expected: Option<u64>,
) -> SaveOutcome {
    if records.get(account).map(|(_, v)| *v) != expected {
        return SaveOutcome::Stale;
    }
    *last += 1;
    records.insert(account.clone(), (json.to_owned(), *last));
    SaveOutcome::Saved { version: *last }
}

fn versioned((json, version): &(String, u64)) -> Versioned {
    Versioned {
        json: json.clone(),
        version: *version,
    }
}

impl Settings for MemoryStore {
    fn load_account(&self, account: &AccountId) -> Result<Option<Versioned>> {
        Ok(self.lock().accounts.get(account).map(versioned))
    }

    fn load_health(&self, account: &AccountId) -> Result<Option<Versioned>> {
        Ok(self.lock().health.get(account).map(versioned))
    }

    fn save_account(
        &self,
        account: &AccountId,
        settings_json: &str,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        let inner = &mut *self.lock();
        Ok(compare_and_set(
            &mut inner.accounts,
            &mut inner.version,
            account,
            settings_json,
            expected,
        ))
    }

    fn save_health(
        &self,
        account: &AccountId,
        health_json: &str,
        paused: bool,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        let inner = &mut *self.lock();
        let outcome = compare_and_set(
            &mut inner.health,
            &mut inner.version,
            account,
            health_json,
            expected,
        );
        if let SaveOutcome::Saved { .. } = outcome {
            if paused {
                inner.paused.insert(account.clone());
            } else {
                inner.paused.remove(account);
            }
        }
        Ok(outcome)
    }

    /// Under one lock: all or none.
    fn save_accounts(&self, saves: &[AccountSave<'_>]) -> Result<Vec<SaveOutcome>> {
        let inner = &mut *self.lock();
        Ok(saves
            .iter()
            .map(|s| {
                compare_and_set(
                    &mut inner.accounts,
                    &mut inner.version,
                    s.account,
                    s.settings_json,
                    s.expected,
                )
            })
            .collect())
    }

    fn accounts_after(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountRecords>> {
        use std::ops::Bound;
        let inner = self.lock();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(inner
            .accounts
            .range::<AccountId, _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(account, record)| AccountRecords {
                account: account.clone(),
                settings: versioned(record),
                health: inner.health.get(account).map(versioned),
            })
            .collect())
    }

    fn load_settings(&self) -> Result<SettingsSnapshot> {
        self.changes_since(0)
    }

    fn changes_since(&self, cursor: u64) -> Result<SettingsSnapshot> {
        let inner = self.lock();
        Ok(SettingsSnapshot {
            accounts: inner
                .accounts
                .values()
                .filter(|(_, v)| *v > cursor)
                .map(versioned)
                .collect(),
            health: inner
                .health
                .iter()
                .filter(|(_, (_, v))| *v > cursor)
                .map(|(a, record)| (a.clone(), versioned(record)))
                .collect(),
            cursor: inner.version,
        })
    }
}

/// One process only: no notices, no polling.
impl Notices for MemoryStore {}

/// `now + lease`, saturating at the largest time jiff holds.
fn add_lease(now: Timestamp, lease: std::time::Duration) -> Timestamp {
    jiff::SignedDuration::try_from(lease)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{EncodedBody, Encoding};

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn new_deliveries(account: &str, n: usize) -> Vec<NewDelivery> {
        (0..n)
            .map(|i| NewDelivery {
                id: DeliveryId::new(format!("msg_{account}_{i}")).unwrap(),
                account: account.into(),
                campaign: "c1".into(),
                body: EncodedBody::from_parts(
                    bytes::Bytes::from(format!("Reference={i}")),
                    Encoding::Form,
                ),
                created_at: t(i as i64),
                next_attempt_at: t(i as i64),
            })
            .collect()
    }

    fn claim(store: &MemoryStore, now: Timestamp, limit: usize, skip: &[AccountId]) -> Vec<Claim> {
        store
            .claim(&ClaimRequest {
                now,
                limit,
                lease: std::time::Duration::from_secs(30),
                skip,
                ..ClaimRequest::default()
            })
            .unwrap()
    }

    #[test]
    fn conforms() {
        crate::store::conformance::run_all(&MemoryStore::with_max_pending);
    }

    /// The retention itself is the conformance suite's; here, the two indexes of delivered
    /// ids stay in step.
    #[test]
    fn forgetting_a_delivered_id_empties_both_of_its_indexes() {
        use crate::limits::DELIVERED_ID_RETENTION;

        let store = MemoryStore::new();
        let batch = new_deliveries("acme", 2);
        store.insert(&batch[..1]).unwrap();
        let claimed = claim(&store, t(10), 1, &[]).remove(0);
        let delivered = AttemptRecord {
            at: t(10),
            status: Some(204),
            error: None,
            next: NextStep::Delivered,
            duration: std::time::Duration::from_millis(3),
            answer: String::new(),
        };
        let answers = store.record_attempts(&[(batch[0].id.clone(), claimed.token, delivered)]);
        assert!(answers[0].is_ok());
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
