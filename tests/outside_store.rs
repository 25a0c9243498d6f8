//! A fourth store, written outside the crate with nothing but its public API, passes the whole
//! conformance suite; and the suite catches each rule such a store might break.
//!
//! `Outside` keeps its deliveries in a [`MemoryStore`] and adds what a store shared by
//! several processes has: it announces writes ([`Notices`]) and has a poll interval. A
//! [`Flaw`] switch makes it break one rule, and the tests below see the check of that rule
//! fail: each check fails when its rule is broken.
#![cfg(feature = "test-util")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use call_result_webhook::jiff::{SignedDuration, Timestamp};
use call_result_webhook::limits::DELIVERED_ID_RETENTION;
use call_result_webhook::store::{
    AccountRecords, AccountSave, AttemptQuery, AttemptRecord, Claim, ClaimRequest, ClaimToken,
    Delivery, DeliveryFilter, DeliveryStats, Fingerprint, LoggedAttempt, NewDelivery, NextStep,
    Notice, NoticeSink, Notices, Outbox, SaveOutcome, Settings, SettingsSnapshot, Versioned,
    conformance,
};
use call_result_webhook::{AccountId, CampaignId, DeliveryId, Error, MemoryStore, Result};

/// A rule `Outside` breaks, when told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// None: it follows every rule.
    None,
    /// Claims a paused account's deliveries (it saves every health unpaused).
    ClaimsPaused,
    /// Never full, whatever it was asked to hold.
    Unbounded,
    /// Forgets a delivered id a whole retention early.
    ForgetsEarly,
    /// Never forgets a delivered id.
    NeverForgets,
    /// Says it announces writes, and announces none.
    Silent,
    /// Announces writes, and has no poll interval to find a lost notice with.
    NeverPolls,
    /// Saves settings whatever version the save expected: the last save wins, unseen.
    LastSaveWins,
    /// Reads the attempts log oldest first.
    LogsOldestFirst,
}

/// A store over a [`MemoryStore`], written as a dialer would write its own.
struct Outside {
    inner: MemoryStore,
    flaw: Flaw,
    /// [`Flaw::NeverForgets`] only: the fingerprint of every call result stored, by id...
    fingerprints: Mutex<HashMap<DeliveryId, Fingerprint>>,
    /// ...and those of delivered ones, remembered for ever, as a store that keeps only a
    /// delivered delivery's id and fingerprint does (without ever forgetting them).
    forever: Mutex<HashMap<DeliveryId, Fingerprint>>,
    sinks: Mutex<Vec<NoticeSink>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Outside {
    fn new(max_pending: usize, flaw: Flaw) -> Outside {
        let inner = match flaw {
            Flaw::Unbounded => MemoryStore::new(),
            _ => MemoryStore::with_max_pending(max_pending),
        };
        Outside {
            inner,
            flaw,
            fingerprints: Mutex::new(HashMap::new()),
            forever: Mutex::new(HashMap::new()),
            sinks: Mutex::new(Vec::new()),
        }
    }

    fn announce(&self, notice: Notice) {
        if self.flaw == Flaw::Silent {
            return;
        }
        for sink in lock(&self.sinks).iter() {
            sink(notice.clone());
        }
    }

    /// `saved`, announced if it wrote.
    fn saved(&self, saved: Result<SaveOutcome>) -> Result<SaveOutcome> {
        if let Ok(SaveOutcome::Saved { .. }) = saved {
            self.announce(Notice::SettingsChanged);
        }
        saved
    }
}

impl Outbox for Outside {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        let mut fresh = Vec::with_capacity(deliveries.len());
        {
            let forever = lock(&self.forever);
            for d in deliveries {
                match forever.get(&d.id) {
                    Some(kept) if *kept == d.fingerprint() => {}
                    Some(_) => {
                        return Err(Error::IdConflict {
                            id: d.id.to_string(),
                        });
                    }
                    None => fresh.push(d.clone()),
                }
            }
        }
        self.inner.insert(&fresh)?;
        if self.flaw == Flaw::NeverForgets {
            let mut fingerprints = lock(&self.fingerprints);
            for d in &fresh {
                fingerprints.entry(d.id.clone()).or_insert(d.fingerprint());
            }
        }
        if !fresh.is_empty() {
            self.announce(Notice::DueWork);
        }
        Ok(())
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
        let outcomes: Vec<(DeliveryId, ClaimToken, AttemptRecord)> = outcomes
            .iter()
            .map(|(id, token, record)| {
                let mut record = record.clone();
                if self.flaw == Flaw::ForgetsEarly && record.next == NextStep::Delivered {
                    let retention = SignedDuration::try_from(DELIVERED_ID_RETENTION).unwrap();
                    record.at -= retention;
                }
                (id.clone(), *token, record)
            })
            .collect();
        let answers = self.inner.record_attempts(&outcomes);
        if self.flaw == Flaw::NeverForgets {
            let fingerprints = lock(&self.fingerprints);
            let mut forever = lock(&self.forever);
            for ((id, _, record), answer) in outcomes.iter().zip(&answers) {
                if answer.is_ok() && record.next == NextStep::Delivered {
                    forever.insert(id.clone(), fingerprints[id]);
                }
            }
        }
        answers
    }

    fn release(&self, claims: &[(DeliveryId, ClaimToken)]) -> Result<()> {
        self.inner.release(claims)?;
        if !claims.is_empty() {
            self.announce(Notice::DueWork);
        }
        Ok(())
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
        let n = self.inner.requeue_failed(filter, now)?;
        if n > 0 {
            self.announce(Notice::DueWork);
        }
        Ok(n)
    }

    fn remove(&self, filter: &DeliveryFilter) -> Result<u64> {
        self.inner.remove(filter)
    }

    fn attempts(&self, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>> {
        let mut page = self.inner.attempts(query)?;
        if self.flaw == Flaw::LogsOldestFirst {
            page.reverse();
        }
        Ok(page)
    }

    fn prune_attempts(&self, before: Timestamp, limit: usize) -> Result<u64> {
        self.inner.prune_attempts(before, limit)
    }

    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats> {
        self.inner.stats(account, campaign)
    }
}

impl Settings for Outside {
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
        let expected = match self.flaw {
            Flaw::LastSaveWins => self.inner.load_account(account)?.map(|v| v.version),
            _ => expected,
        };
        self.saved(self.inner.save_account(account, settings_json, expected))
    }

    fn save_health(
        &self,
        account: &AccountId,
        health_json: &str,
        paused: bool,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        let paused = paused && self.flaw != Flaw::ClaimsPaused;
        let expected = match self.flaw {
            Flaw::LastSaveWins => self.inner.load_health(account)?.map(|v| v.version),
            _ => expected,
        };
        self.saved(
            self.inner
                .save_health(account, health_json, paused, expected),
        )
    }

    fn save_accounts(&self, saves: &[AccountSave<'_>]) -> Result<Vec<SaveOutcome>> {
        let outcomes = self.inner.save_accounts(saves)?;
        if outcomes
            .iter()
            .any(|o| matches!(o, SaveOutcome::Saved { .. }))
        {
            self.announce(Notice::SettingsChanged);
        }
        Ok(outcomes)
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

impl Notices for Outside {
    fn subscribe(&self, sink: NoticeSink) -> bool {
        lock(&self.sinks).push(sink);
        true
    }

    fn poll_interval(&self) -> Option<Duration> {
        match self.flaw {
            Flaw::NeverPolls => None,
            _ => Some(Duration::from_secs(1)),
        }
    }
}

fn flawed(flaw: Flaw) -> impl Fn(usize) -> Outside {
    move |max_pending| Outside::new(max_pending, flaw)
}

#[test]
fn a_store_written_outside_the_crate_passes_the_whole_suite() {
    conformance::run_all(&flawed(Flaw::None));
}

/// The same store shared: every "process" of the fleet is an `Arc` of one store.
#[test]
fn shared_through_arcs_it_passes_the_fleet_checks() {
    conformance::run_fleet(&|| {
        let one = Arc::new(Outside::new(conformance::ROOMY, Flaw::None));
        vec![Arc::clone(&one), Arc::clone(&one), one]
    });
}

#[test]
#[should_panic(expected = "next_due leaves the paused account out")]
fn the_suite_catches_a_store_that_claims_paused_accounts() {
    conformance::run_claims(&flawed(Flaw::ClaimsPaused));
}

#[test]
#[should_panic(expected = "every recorded attempt of the account, newest first")]
fn the_suite_catches_a_store_that_reads_its_attempts_log_oldest_first() {
    conformance::run_log(&flawed(Flaw::LogsOldestFirst));
}

#[test]
#[should_panic(expected = "StoreFull { max_pending: 3 } expected")]
fn the_suite_catches_a_store_that_is_never_full() {
    conformance::run_insert(&flawed(Flaw::Unbounded));
}

#[test]
#[should_panic(expected = "the retention before the newest write is remembered")]
fn the_suite_catches_a_store_that_forgets_a_delivered_id_early() {
    conformance::a_delivered_id_is_forgotten_after_the_retention(&Outside::new(
        conformance::ROOMY,
        Flaw::ForgetsEarly,
    ));
}

#[test]
#[should_panic(expected = "is still remembered after 100 rounds")]
fn the_suite_catches_a_store_that_never_forgets_a_delivered_id() {
    conformance::a_delivered_id_is_forgotten_after_the_retention(&Outside::new(
        conformance::ROOMY,
        Flaw::NeverForgets,
    ));
}

#[test]
#[should_panic(expected = "heard no DueWork after an insert")]
fn the_suite_catches_a_store_that_says_it_announces_and_does_not() {
    conformance::run_fleet(&|| vec![Outside::new(conformance::ROOMY, Flaw::Silent)]);
}

#[test]
#[should_panic(expected = "a store that announces writes polls too")]
fn the_suite_catches_a_store_that_announces_and_never_polls() {
    conformance::run_fleet(&|| vec![Outside::new(conformance::ROOMY, Flaw::NeverPolls)]);
}

#[test]
#[should_panic(expected = "created twice")]
fn the_suite_catches_a_stale_save_that_writes() {
    conformance::run_settings(&flawed(Flaw::LastSaveWins));
}

#[test]
#[should_panic(expected = "saves at one version wins")]
fn the_suite_catches_two_saves_at_one_version_that_both_win() {
    conformance::concurrent_saves_at_one_version_one_wins(&[&Outside::new(
        conformance::ROOMY,
        Flaw::LastSaveWins,
    )]);
}
