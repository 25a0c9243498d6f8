//! Two engines on one store, as two processes of a fleet: a change that meets the other's
//! save is applied again to the stored record, so neither is lost.

use std::collections::VecDeque;
use std::sync::{Arc, Barrier, Mutex};

use jiff::Timestamp;

use super::SAVE_ATTEMPTS;
use crate::account::Account;
use crate::delivery::classify::Verdict;
use crate::delivery::core::Core;
use crate::delivery::events::PauseReason;
use crate::delivery::health::EndpointHealth;
use crate::delivery::{Clock, ManualClock};
use crate::engine::{Engine, Limits};
use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::limits::DEFAULT_PAUSE_AFTER;
use crate::policy::UrlPolicy;
use crate::preferences::{PreferencesUpdate, Principal};
use crate::store::{
    AccountRecords, AttemptRecord, Claim, ClaimRequest, ClaimToken, Delivery, DeliveryFilter,
    DeliveryStats, MemoryStore, NewDelivery, Outbox, SaveOutcome, Settings, SettingsSnapshot,
    Store, Versioned,
};
use crate::sync::lock;

fn t0() -> Timestamp {
    "2024-03-01T00:00:00Z".parse().unwrap()
}

/// An engine on `store`, as a process of its own would start one.
fn engine(store: Arc<dyn Store>) -> Arc<Engine> {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t0()));
    let limits = Limits {
        max_concurrency: 4,
        per_endpoint: 2,
        pause_after: DEFAULT_PAUSE_AFTER,
        attempt_retention: crate::limits::DEFAULT_ATTEMPT_RETENTION,
    };
    Arc::new(Engine::new(store, UrlPolicy::new(), clock, None, limits, Arc::new(())).unwrap())
}

type Meddle = Box<dyn FnOnce() + Send>;

/// A store that, before a save, runs what another process does at that moment: the save then
/// finds the record saved since it was read.
struct Meddling {
    inner: Arc<MemoryStore>,
    before_save: Mutex<VecDeque<Meddle>>,
}

impl Meddling {
    fn new(inner: &Arc<MemoryStore>) -> Arc<Meddling> {
        Arc::new(Meddling {
            inner: Arc::clone(inner),
            before_save: Mutex::new(VecDeque::new()),
        })
    }

    /// Before the next save (one that has no meddling of its own waiting), runs `meddle`.
    fn before_next_save(&self, meddle: impl FnOnce() + Send + 'static) {
        lock(&self.before_save).push_back(Box::new(meddle));
    }

    fn meddle(&self) {
        let next = lock(&self.before_save).pop_front();
        if let Some(meddle) = next {
            meddle();
        }
    }
}

impl Outbox for Meddling {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        self.inner.insert(deliveries)
    }
    fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>> {
        self.inner.claim(request)
    }
    fn next_due(&self, now: Timestamp, skip: &[AccountId]) -> Result<Option<Timestamp>> {
        self.inner.next_due(now, skip)
    }
    fn record_attempts(
        &self,
        outcomes: &[(DeliveryId, ClaimToken, AttemptRecord)],
    ) -> Vec<Result<()>> {
        self.inner.record_attempts(outcomes)
    }
    fn release(&self, claims: &[(DeliveryId, ClaimToken)]) -> Result<()> {
        self.inner.release(claims)
    }
    fn extend_leases(&self, claims: &[(DeliveryId, ClaimToken)], until: Timestamp) -> Result<()> {
        self.inner.extend_leases(claims, until)
    }
    fn has_pending(&self) -> Result<bool> {
        self.inner.has_pending()
    }
    fn list(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>> {
        self.inner.list(filter, limit)
    }
    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64> {
        self.inner.requeue_failed(filter, now)
    }
    fn remove(&self, filter: &DeliveryFilter) -> Result<u64> {
        self.inner.remove(filter)
    }
    fn attempts(
        &self,
        query: &crate::store::AttemptQuery,
    ) -> Result<Vec<crate::store::LoggedAttempt>> {
        self.inner.attempts(query)
    }
    fn prune_attempts(&self, before: Timestamp, limit: usize) -> Result<u64> {
        self.inner.prune_attempts(before, limit)
    }
    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats> {
        self.inner.stats(account, campaign)
    }
}

impl crate::store::Notices for Meddling {}

impl Settings for Meddling {
    fn load_account(&self, account: &AccountId) -> Result<Option<Versioned>> {
        self.inner.load_account(account)
    }
    fn load_health(&self, account: &AccountId) -> Result<Option<Versioned>> {
        self.inner.load_health(account)
    }
    fn save_account(
        &self,
        account: &AccountId,
        settings_json: &str,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        self.meddle();
        self.inner.save_account(account, settings_json, expected)
    }
    fn save_health(
        &self,
        account: &AccountId,
        health_json: &str,
        paused: bool,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        self.meddle();
        self.inner
            .save_health(account, health_json, paused, expected)
    }
    fn accounts_after(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountRecords>> {
        self.inner.accounts_after(after, limit)
    }
    fn load_settings(&self) -> Result<SettingsSnapshot> {
        self.inner.load_settings()
    }
    fn changes_since(&self, cursor: u64) -> Result<SettingsSnapshot> {
        self.inner.changes_since(cursor)
    }
}

fn admin() -> Principal {
    Principal::administrator("alice")
}

fn stored_account(store: &MemoryStore, account: &str) -> Account {
    let record = store.load_account(&account.into()).unwrap().unwrap();
    Account::from_storage_json(&record.json).unwrap()
}

fn stored_health(store: &MemoryStore, account: &str) -> EndpointHealth {
    let record = store.load_health(&account.into()).unwrap().unwrap();
    EndpointHealth::from_json(&record.json).unwrap()
}

fn audited(account: &Account) -> Vec<(String, Vec<String>)> {
    account
        .audit_log()
        .iter()
        .map(|r| (r.principal.clone(), r.fields.clone()))
        .collect()
}

fn failed() -> Verdict {
    Verdict::Retry {
        status: Some(503),
        reason: "HTTP 503".into(),
        retry_after: None,
    }
}

#[test]
fn an_account_saved_meanwhile_is_read_again_and_both_changes_are_kept() {
    let inner = Arc::new(MemoryStore::new());
    let meddling = Meddling::new(&inner);
    let here = engine(meddling.clone());
    let there = engine(inner.clone());
    let acme: AccountId = "acme".into();
    there
        .update_preferences(
            &Principal::administrator("bob"),
            &acme,
            PreferencesUpdate::new()
                .enabled(true)
                .url("https://one.example/hook"),
        )
        .unwrap();

    // Between this process's read and its save, the other saves a campaign switch.
    let (other, id) = (there.clone(), acme.clone());
    meddling.before_next_save(move || {
        let bob = Principal::administrator("bob");
        other
            .set_campaign_webhook(&bob, &id, &"winter".into(), true)
            .unwrap();
    });
    let record = here
        .update_preferences(
            &admin(),
            &acme,
            PreferencesUpdate::new().url("https://two.example/hook"),
        )
        .unwrap();
    assert_eq!(record.fields, ["url"]);

    let stored = stored_account(&inner, "acme");
    assert_eq!(
        stored.preferences().url().unwrap().as_url().as_str(),
        "https://two.example/hook"
    );
    assert!(stored.campaign_webhook_enabled(&"winter".into()));
    assert!(stored.preferences().enabled());
    // One audit record per change saved: none for the application that met the newer save.
    assert_eq!(
        audited(&stored),
        [
            (
                "bob".to_owned(),
                vec!["enabled".to_owned(), "url".to_owned()]
            ),
            ("bob".to_owned(), vec!["campaign:winter".to_owned()]),
            ("alice".to_owned(), vec!["url".to_owned()]),
        ]
    );
    // What is in force here is what is stored.
    let in_force = here.account(&acme).unwrap();
    assert_eq!(audited(&in_force), audited(&stored));
    assert!(in_force.campaign_webhook_enabled(&"winter".into()));
}

#[test]
fn a_change_the_cache_calls_a_no_op_is_saved_against_the_stored_account() {
    let store = Arc::new(MemoryStore::new());
    let (here, there) = (engine(store.clone()), engine(store.clone()));
    let acme: AccountId = "acme".into();
    let switch = |engine: &Engine, on: bool| {
        engine
            .update_preferences(&admin(), &acme, PreferencesUpdate::new().enabled(on))
            .unwrap()
    };
    switch(&here, true);
    // The other process switches it off; this one has not followed yet.
    switch(&there, false);
    assert!(here.account(&acme).unwrap().preferences().enabled());
    // On again: a change against what is stored, saved and audited.
    assert_eq!(switch(&here, true).fields, ["enabled"]);
    assert!(stored_account(&store, "acme").preferences().enabled());
    // On once more: nothing to save.
    let before = store.load_account(&acme).unwrap();
    assert!(switch(&here, true).fields.is_empty());
    assert_eq!(store.load_account(&acme).unwrap(), before);
}

#[test]
fn a_change_that_keeps_meeting_newer_saves_fails_and_saves_nothing() {
    let inner = Arc::new(MemoryStore::new());
    let meddling = Meddling::new(&inner);
    let here = engine(meddling.clone());
    let there = engine(inner.clone());
    let acme: AccountId = "acme".into();
    for i in 0..SAVE_ATTEMPTS {
        let (other, id) = (there.clone(), acme.clone());
        meddling.before_next_save(move || {
            let campaign = format!("c{i}").into();
            other
                .set_campaign_webhook(&admin(), &id, &campaign, true)
                .unwrap();
        });
    }
    let err = here
        .set_campaign_webhook(&admin(), &acme, &"mine".into(), true)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SettingsConflict {
                record: "settings",
                attempts: SAVE_ATTEMPTS,
                ..
            }
        ),
        "{err:?}"
    );
    let stored = stored_account(&inner, "acme");
    assert!(!stored.campaign_webhook_enabled(&"mine".into()));
    assert_eq!(stored.campaigns().count(), SAVE_ATTEMPTS as usize);
}

#[test]
fn a_pause_saved_meanwhile_is_never_undone_by_an_older_copy() {
    let inner = Arc::new(MemoryStore::new());
    let meddling = Meddling::new(&inner);
    let here = engine(meddling.clone());
    let there = engine(inner.clone());
    let acme: AccountId = "acme".into();
    let now = t0();
    // A streak begins here (saved); the other process has not read it.
    assert_eq!(here.update_health(&acme, &failed(), now), None);
    assert!(stored_health(&inner, "acme").is_failing());

    // As this process records a success, the other is answered 410 and pauses the endpoint.
    let (other, id) = (there.clone(), acme.clone());
    meddling.before_next_save(move || {
        let gone = Verdict::Gone {
            reason: "HTTP 410".into(),
        };
        assert_eq!(
            other.update_health(&id, &gone, now),
            Some(PauseReason::Gone)
        );
    });
    let delivered = Verdict::Delivered { status: 204 };
    assert_eq!(here.update_health(&acme, &delivered, now), None);

    let stored = stored_health(&inner, "acme");
    assert!(stored.is_paused(), "the pause stands: {stored:?}");
    assert!(!stored.is_failing(), "the success ended the streak");
    assert!(here.health_of(&acme).is_paused());
    assert!(!here.lane_open(&acme));
    // The store leaves the account out of claims, in every process.
    inner
        .insert(&crate::store::conformance::new_deliveries("acme", "c1", 1))
        .unwrap();
    assert_eq!(inner.next_due(Timestamp::MAX, &[]).unwrap(), None);
}

#[test]
fn a_resume_reads_the_stored_pause() {
    let store = Arc::new(MemoryStore::new());
    let (here, there) = (engine(store.clone()), engine(store.clone()));
    let acme: AccountId = "acme".into();
    let gone = Verdict::Gone {
        reason: "HTTP 410".into(),
    };
    there.update_health(&acme, &gone, t0());
    assert!(!here.health_of(&acme).is_paused(), "not followed yet");
    assert!(here.resume_endpoint(&admin(), &acme).unwrap());
    assert!(!stored_health(&store, "acme").is_paused());
    assert_eq!(stored_health(&store, "acme"), EndpointHealth::default());
    assert!(!here.resume_endpoint(&admin(), &acme).unwrap());
}

#[test]
fn following_puts_only_newer_records_in_force() {
    let store = Arc::new(MemoryStore::new());
    let (here, there) = (engine(store.clone()), engine(store.clone()));
    let acme: AccountId = "acme".into();
    let now = t0();
    // Three failures here: the first is saved, the next two are counted here only.
    for _ in 0..3 {
        here.update_health(&acme, &failed(), now);
    }
    assert_eq!(here.health_of(&acme).consecutive_failures, 3);
    // Its own save comes back: the count here stays.
    assert_eq!(here.follow_settings().unwrap(), 0);
    assert_eq!(here.health_of(&acme).consecutive_failures, 3);
    // Another process's newer save is put in force, as is its account.
    there
        .update_preferences(&admin(), &acme, PreferencesUpdate::new().enabled(true))
        .unwrap();
    there.resume_endpoint(&admin(), &acme).unwrap();
    assert_eq!(here.follow_settings().unwrap(), 2);
    assert_eq!(here.health_of(&acme), EndpointHealth::default());
    assert!(here.account(&acme).unwrap().preferences().enabled());
}

#[test]
fn two_processes_switching_campaigns_at_once_keep_every_switch() {
    const EACH: usize = 100;
    let store = Arc::new(MemoryStore::new());
    let engines = [engine(store.clone()), engine(store.clone())];
    let acme: AccountId = "acme".into();
    let start = Barrier::new(engines.len());
    std::thread::scope(|s| {
        for (n, engine) in engines.iter().enumerate() {
            let (start, acme) = (&start, &acme);
            s.spawn(move || {
                start.wait();
                for i in 0..EACH {
                    let campaign = format!("p{n}-c{i}").into();
                    engine
                        .set_campaign_webhook(&admin(), acme, &campaign, true)
                        .unwrap();
                }
            });
        }
    });
    let stored = stored_account(&store, "acme");
    assert_eq!(stored.campaigns().count(), 2 * EACH);
    assert!(stored.campaigns().all(|(_, on)| on));
    assert_eq!(stored.audit_log().len(), 2 * EACH);
}
