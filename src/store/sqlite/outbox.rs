//! [`Outbox`] and [`Settings`] for [`SqliteStore`]: claims with leases and fencing tokens kept
//! in memory (the file is this store's alone), settings followed by a version counter.

use std::sync::mpsc::Receiver;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::store::{
    AttemptRecord, Claim, ClaimRequest, ClaimToken, Delivery, DeliveryFilter, DeliveryStats,
    NewDelivery, Outbox, Settings, SettingsSnapshot,
};

use super::claims::{Claims, NotCurrent};
use super::rows::{
    DUE, EARLIEST_PENDING, FIND_DELIVERY, HAS_PENDING, SETTINGS_CURSOR, clamp_nanos,
    delivery_from_row, from_nanos, sql_limit,
};
use super::writer::{Op, writer_stopped};
use super::{SqliteStore, accounts_since, health_since, pending_accounts};

/// Accounts with pending deliveries, leaving out `skip`'s, earliest next attempt first.
fn accounts_by_next(conn: &Connection, skip: &[AccountId]) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut accounts = pending_accounts(conn)?;
    accounts.retain(|(account, _)| !skip.iter().any(|s| s.as_str() == account));
    accounts.sort_unstable_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    Ok(accounts)
}

/// The earliest due deliveries not under a live claim, at most `limit`, earliest first and in
/// insertion order among equals.
///
/// One account at a time through its own index range, in the order of their earliest
/// deliveries, and no further once an account's earliest comes after the `limit`-th found: a
/// held account's deliveries are never read, and of each account only as many as it has
/// claims are read beyond `limit`.
fn claimable(
    conn: &Connection,
    claims: &Claims,
    request: &ClaimRequest<'_>,
) -> rusqlite::Result<Vec<Delivery>> {
    let now = clamp_nanos(request.now);
    let limit = request.limit;
    let held = claims.by_account();
    let mut found: Vec<(i64, i64, Delivery)> = Vec::new();
    let mut stmt = conn.prepare_cached(DUE)?;
    for (account, earliest) in accounts_by_next(conn, request.skip)? {
        if earliest > now {
            break;
        }
        if found.len() >= limit && found.get(limit - 1).is_some_and(|last| earliest > last.0) {
            break;
        }
        let claimed = held.get(&AccountId::new(account.as_str())).copied();
        let fetch = limit.saturating_add(claimed.unwrap_or(0));
        let mut rows = stmt.query(params![account, now, sql_limit(fetch)])?;
        let mut taken = 0;
        while taken < limit {
            let Some(row) = rows.next()? else { break };
            if claims.is_live(row.get_ref(0)?.as_str()?, request.now) {
                continue;
            }
            found.push((row.get(6)?, row.get(12)?, delivery_from_row(row)?));
            taken += 1;
        }
        found.sort_unstable_by_key(|(at, rowid, _)| (*at, *rowid));
        found.truncate(limit);
    }
    Ok(found.into_iter().map(|(_, _, d)| d).collect())
}

/// When the earliest pending delivery not under a live claim at `now` is due, in nanoseconds.
fn next_unclaimed(
    conn: &Connection,
    claims: &Claims,
    now: Timestamp,
    skip: &[AccountId],
) -> rusqlite::Result<Option<i64>> {
    let held = claims.by_account();
    let mut best: Option<i64> = None;
    let mut stmt = conn.prepare_cached(EARLIEST_PENDING)?;
    for (account, earliest) in accounts_by_next(conn, skip)? {
        if best.is_some_and(|b| earliest >= b) {
            break;
        }
        let Some(&claimed) = held.get(&AccountId::new(account.as_str())) else {
            // No claim in this account: its earliest is the earliest left.
            best = Some(earliest);
            break;
        };
        let mut rows = stmt.query(params![account, sql_limit(claimed.saturating_add(1))])?;
        while let Some(row) = rows.next()? {
            if !claims.is_live(row.get_ref(0)?.as_str()?, now) {
                let at: i64 = row.get(1)?;
                best = Some(best.map_or(at, |b| b.min(at)));
                break;
            }
        }
    }
    Ok(best)
}

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
        let request = &ClaimRequest {
            skip: &skip,
            ..*request
        };
        let mut claims = self.claims();
        let due = self.read("claiming due deliveries", |conn| {
            claimable(conn, &claims, request)
        })?;
        Ok(due
            .into_iter()
            .map(|delivery| {
                let token = claims.grant(delivery.id.as_str(), &delivery.account, lease_until);
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
            next_unclaimed(conn, &claims, now, skip)?
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

/// One process uses the file, so nothing changes behind this store's back: no notices, no
/// polling. Every save still takes a version from one counter, so
/// [`changes_since`](Settings::changes_since) answers exactly.
impl Settings for SqliteStore {
    fn save_account(&self, account: &AccountId, settings_json: &str) -> Result<()> {
        self.save(Op::SaveAccount(account.clone(), settings_json.to_owned()))
    }

    fn save_health(&self, account: &AccountId, health_json: &str, paused: bool) -> Result<()> {
        self.save(Op::SaveHealth(
            account.clone(),
            health_json.to_owned(),
            paused,
        ))?;
        let mut set = crate::sync::lock(&self.paused);
        if paused {
            set.insert(account.clone());
        } else {
            set.remove(account);
        }
        Ok(())
    }

    fn load_settings(&self) -> Result<SettingsSnapshot> {
        self.settings_since(-1)
    }

    fn changes_since(&self, cursor: u64) -> Result<SettingsSnapshot> {
        self.settings_since(i64::try_from(cursor).unwrap_or(i64::MAX))
    }
}
