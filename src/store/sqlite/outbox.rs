//! [`Outbox`] and [`Settings`] for [`SqliteStore`]: claims with leases and fencing tokens kept
//! in memory (the file is this store's alone), settings followed by a version counter.

use std::sync::mpsc::Receiver;

use jiff::Timestamp;
use rusqlite::OptionalExtension;

use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{
    AccountRecords, AccountSave, AttemptQuery, AttemptRecord, Claim, ClaimRequest, ClaimToken,
    Delivery, DeliveryFilter, DeliveryStats, LoggedAttempt, NewDelivery, Notices, Outbox,
    SaveOutcome, Settings, SettingsSnapshot, Versioned,
};

use super::claims::NotCurrent;
use super::due::Search;
use super::rows::{
    ACCOUNTS_AFTER, FIND_DELIVERY, HAS_PENDING, LOAD_ACCOUNT, LOAD_HEALTH, SETTINGS_CURSOR,
    from_nanos,
};
use super::writer::{Op, SavedVersions, writer_stopped};
use super::{SqliteStore, accounts_since, health_since, load_versioned, version_of};

impl SqliteStore {
    /// Whether a delivery with this id is stored (pending or failed).
    fn is_stored(&self, id: &DeliveryId) -> Result<bool> {
        self.read("looking up a delivery", |conn| {
            conn.prepare_cached(FIND_DELIVERY)?
                .query_row([id.as_str()], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
        })
    }

    /// Why an outcome under a token that is not current is refused: the delivery is not
    /// stored at all, or another claim (or none) is current.
    fn not_current(&self, id: &DeliveryId, why: NotCurrent) -> Error {
        let lost = || Error::LeaseLost { id: id.to_string() };
        match why {
            NotCurrent::Superseded => lost(),
            NotCurrent::Unclaimed => match self.is_stored(id) {
                Ok(true) => lost(),
                Ok(false) => Error::UnknownDelivery(id.to_string()),
                Err(e) => e,
            },
        }
    }

    fn settings_since(&self, after: i64) -> Result<SettingsSnapshot> {
        self.read("loading settings", |conn| {
            // The cursor first: whatever is saved after it has a greater version, so it is
            // found next time even if it is also read now.
            let cursor: i64 = conn
                .prepare_cached(SETTINGS_CURSOR)?
                .query_row([], |r| r.get(0))?;
            Ok(SettingsSnapshot {
                accounts: accounts_since(conn, after)?,
                health: health_since(conn, after)?,
                cursor: u64::try_from(cursor.max(after)).unwrap_or(0),
            })
        })
    }
}

/// Claims live in this store's memory: the file is locked to one store, so no other process
/// claims from it, and after a restart nothing is claimed.
impl Outbox for SqliteStore {
    fn insert(&self, deliveries: &[NewDelivery]) -> Result<()> {
        self.insert_deliveries(deliveries)
    }

    fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let lease_until = request
            .now
            .checked_add(request.lease)
            .map_err(|e| Error::store("computing a lease's end", e))?;
        // Held across the read: a delivery whose outcome is committed keeps its claim until
        // the claim is forgotten under this lock, so the read never offers it again.
        let skip = self.skip_with_paused(request.skip);
        let mut claims = self.claims();
        let due = self.read("claiming due deliveries", |conn| {
            Search::new(conn, &claims, request.now, &skip, &self.search_hints)
                .with_room(request)
                .claimable(request.limit)
        })?;
        Ok(due
            .into_iter()
            .map(|delivery| {
                let token = claims.grant(delivery.id.as_str(), lease_until);
                Claim {
                    delivery,
                    token,
                    lease_until,
                }
            })
            .collect())
    }

    fn next_due(&self, now: Timestamp, skip: &[AccountId]) -> Result<Option<Timestamp>> {
        let skip = &self.skip_with_paused(skip)[..];
        let claims = self.claims();
        self.read("finding the next due delivery", |conn| {
            Search::new(conn, &claims, now, skip, &self.search_hints)
                .next_unclaimed()?
                .map(|at| from_nanos(at, 1))
                .transpose()
        })
    }

    /// Checks every token, queues every outcome under a current one before waiting for any
    /// (one transaction and one fsync for the lot), then forgets the claims recorded.
    fn record_attempts(
        &self,
        outcomes: &[(DeliveryId, ClaimToken, AttemptRecord)],
    ) -> Vec<Result<()>> {
        let checked: Vec<std::result::Result<(), NotCurrent>> = {
            let mut claims = self.claims();
            outcomes
                .iter()
                .map(|(id, token, _)| claims.begin_recording(id.as_str(), *token))
                .collect()
        };
        let queued: Vec<Result<Receiver<Result<u64>>>> = outcomes
            .iter()
            .zip(&checked)
            .map(|((id, _, record), current)| match current {
                Ok(()) => self.queue_record(id, record),
                Err(why) => Err(self.not_current(id, *why)),
            })
            .collect();
        let answers: Vec<Result<()>> = queued
            .into_iter()
            .map(|answer| answer?.recv().map_err(|_| writer_stopped())?.map(drop))
            .collect();
        let mut claims = self.claims();
        for (((id, token, _), current), answer) in outcomes.iter().zip(&checked).zip(&answers) {
            if current.is_ok() {
                // A removed delivery has nothing left to claim either.
                let done = matches!(answer, Ok(()) | Err(Error::UnknownDelivery(_)));
                claims.finish_recording(id.as_str(), *token, done);
            }
        }
        answers
    }

    fn extend_leases(&self, claims: &[(DeliveryId, ClaimToken)], until: Timestamp) -> Result<()> {
        let mut held = self.claims();
        for (id, token) in claims {
            held.extend(id.as_str(), *token, until);
        }
        Ok(())
    }

    fn release(&self, claims: &[(DeliveryId, ClaimToken)]) -> Result<()> {
        let mut held = self.claims();
        for (id, token) in claims {
            held.release(id.as_str(), *token);
        }
        Ok(())
    }

    fn has_pending(&self) -> Result<bool> {
        self.read("looking for pending deliveries", |conn| {
            conn.prepare_cached(HAS_PENDING)?
                .query_row([], |r| r.get(0))
        })
    }

    fn list(&self, filter: &DeliveryFilter, limit: usize) -> Result<Vec<Delivery>> {
        self.list_deliveries(filter, limit)
    }

    fn attempts(&self, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>> {
        self.read_attempts(query)
    }

    fn prune_attempts(&self, before: Timestamp, limit: usize) -> Result<u64> {
        self.prune_logged(before, limit)
    }

    fn requeue_failed(&self, filter: &DeliveryFilter, now: Timestamp) -> Result<u64> {
        self.requeue(filter, now)
    }

    fn remove(&self, filter: &DeliveryFilter) -> Result<u64> {
        self.remove_matching(filter)
    }

    fn stats(&self, account: &AccountId, campaign: Option<&CampaignId>) -> Result<DeliveryStats> {
        self.read_stats(account, campaign)
    }
}

/// Every save takes a version from one counter, so [`changes_since`](Settings::changes_since)
/// answers exactly.
impl Settings for SqliteStore {
    fn load_account(&self, account: &AccountId) -> Result<Option<Versioned>> {
        self.read("loading account settings", |conn| {
            load_versioned(conn, LOAD_ACCOUNT, account)
        })
    }

    fn load_health(&self, account: &AccountId) -> Result<Option<Versioned>> {
        self.read("loading endpoint health", |conn| {
            load_versioned(conn, LOAD_HEALTH, account)
        })
    }

    fn save_account(
        &self,
        account: &AccountId,
        settings_json: &str,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        self.save(Op::SaveAccount(
            account.clone(),
            settings_json.to_owned(),
            expected,
        ))
    }

    /// Holds the set of paused accounts across the save, so that claims see the pause from
    /// the moment it is saved, and two saves put their pauses in force in the order they
    /// were saved.
    fn save_health(
        &self,
        account: &AccountId,
        health_json: &str,
        paused: bool,
        expected: Option<u64>,
    ) -> Result<SaveOutcome> {
        let mut set = crate::sync::lock(&self.paused);
        let outcome = self.save(Op::SaveHealth(
            account.clone(),
            health_json.to_owned(),
            paused,
            expected,
        ))?;
        if let SaveOutcome::Saved { .. } = outcome {
            if paused {
                set.insert(account.clone());
            } else {
                set.remove(account);
            }
        }
        Ok(outcome)
    }

    /// One write of the writer thread: the saves commit together, or none does.
    fn save_accounts(&self, saves: &[AccountSave<'_>]) -> Result<Vec<SaveOutcome>> {
        if saves.is_empty() {
            return Ok(Vec::new());
        }
        let versions = SavedVersions::default();
        let owned = saves
            .iter()
            .map(|s| (s.account.clone(), s.settings_json.to_owned(), s.expected))
            .collect();
        self.write(Op::SaveAccounts(owned, versions.clone()))?;
        let versions = std::mem::take(&mut *crate::sync::lock(&versions));
        Ok(versions
            .into_iter()
            .map(|version| match version {
                0 => SaveOutcome::Stale,
                version => SaveOutcome::Saved { version },
            })
            .collect())
    }

    fn accounts_after(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountRecords>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("listing accounts", |conn| {
            let mut stmt = conn.prepare_cached(ACCOUNTS_AFTER)?;
            // Every id is longer than the empty string: the first page starts after it.
            let after = after.map_or("", AccountId::as_str);
            let rows = stmt.query_map(rusqlite::params![after, limit], |row| {
                let health = match row.get::<_, Option<String>>(3)? {
                    Some(json) => Some(Versioned {
                        json,
                        version: version_of(row, 4)?,
                    }),
                    None => None,
                };
                Ok(AccountRecords {
                    account: AccountId::new(row.get::<_, String>(0)?),
                    settings: Versioned {
                        json: row.get(1)?,
                        version: version_of(row, 2)?,
                    },
                    health,
                })
            })?;
            rows.collect()
        })
    }

    fn load_settings(&self) -> Result<SettingsSnapshot> {
        self.settings_since(-1)
    }

    fn changes_since(&self, cursor: u64) -> Result<SettingsSnapshot> {
        self.settings_since(i64::try_from(cursor).unwrap_or(i64::MAX))
    }
}

/// One process uses the file, so nothing changes behind this store's back: no notices, no
/// polling.
impl Notices for SqliteStore {}
