//! Unit tests of the SQLite store: durability, group commit, the file and its migrations,
//! queries. Shared here: the queries the tests were first written against and the fixtures.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use rusqlite::Connection;

use super::rows::{
    DUE_BY_TIME, EARLIEST_BY_TIME, FIND_DELIVERY, FIRST_PENDING_ACCOUNT, HAS_PENDING,
    INSERT_DELIVERY, LOAD_ACCOUNT, NEXT_PENDING_ACCOUNT, PENDING_OF_ACCOUNT, PRUNE_DELIVERED,
    REMEMBER_DELIVERED, SAME_DELIVERY, SETTINGS_CURSOR, STATS_CAMPAIGN, UPDATE_ACCOUNT,
    UPDATE_HEALTH, push_filter,
};
use super::schema::{MIGRATIONS, migrate};
use super::writer::PRUNE_EVERY;
use super::{CommitMode, SqliteStore};
use crate::encoding::{EncodedBody, Encoding};
use crate::error::{Error, Result};
use crate::ids::{AccountId, DeliveryId};
use crate::limits::DELIVERED_ID_RETENTION;
use crate::store::conformance::{self, new_deliveries, t};
use crate::store::{
    AttemptRecord, ClaimRequest, Delivery, DeliveryFilter, DeliveryState, DeliveryStats,
    NewDelivery, NextStep, Outbox, Settings,
};

/// The queries these tests were first written against, answered through the fleet seam: what
/// is due without claiming it, and an outcome recorded under a claim, as the worker records.
trait Queries {
    fn due(
        &self,
        account: &AccountId,
        now: Timestamp,
        limit: usize,
        skip: &[DeliveryId],
    ) -> Result<Vec<Delivery>>;
    fn record_attempt(&self, id: &DeliveryId, record: &AttemptRecord) -> Result<()>;
    fn pending_accounts(&self) -> Result<Vec<(AccountId, Timestamp)>>;
    fn load_accounts(&self) -> Result<Vec<String>>;
    fn load_all_health(&self) -> Result<Vec<(AccountId, String)>>;
}

impl Queries for SqliteStore {
    fn due(
        &self,
        account: &AccountId,
        now: Timestamp,
        limit: usize,
        skip: &[DeliveryId],
    ) -> Result<Vec<Delivery>> {
        let filter = DeliveryFilter::account(account.clone()).state(DeliveryState::Pending);
        let mut due = self.list(&filter, usize::MAX)?;
        due.retain(|d| d.next_attempt_at <= now && !skip.contains(&d.id));
        due.sort_by_key(|d| d.next_attempt_at);
        due.truncate(limit);
        Ok(due)
    }

    fn record_attempt(&self, id: &DeliveryId, record: &AttemptRecord) -> Result<()> {
        let claims = self.claim(&ClaimRequest {
            now: Timestamp::MAX,
            limit: usize::MAX,
            lease: Duration::ZERO,
            skip: &[],
            ..ClaimRequest::default()
        })?;
        let mut answer = Err(Error::UnknownDelivery(id.to_string()));
        let mut others = Vec::new();
        for c in claims {
            if &c.delivery.id == id {
                answer = self
                    .record_attempts(&[(c.delivery.id, c.token, record.clone())])
                    .remove(0);
            } else {
                others.push((c.delivery.id, c.token));
            }
        }
        self.release(&others)?;
        answer
    }

    fn pending_accounts(&self) -> Result<Vec<(AccountId, Timestamp)>> {
        let mut earliest: std::collections::BTreeMap<AccountId, Timestamp> = Default::default();
        for account in ["acme", "bolt"] {
            if let Some(d) = self.due(&account.into(), Timestamp::MAX, 1, &[])?.first() {
                earliest.insert(account.into(), d.next_attempt_at);
            }
        }
        Ok(earliest.into_iter().collect())
    }

    fn load_accounts(&self) -> Result<Vec<String>> {
        let accounts = self.load_settings()?.accounts;
        Ok(accounts.into_iter().map(|r| r.json).collect())
    }

    fn load_all_health(&self) -> Result<Vec<(AccountId, String)>> {
        let health = self.load_settings()?.health;
        Ok(health.into_iter().map(|(a, r)| (a, r.json)).collect())
    }
}

fn in_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("outbox.db")
}

/// A delivery whose times carry nanoseconds and whose body is not text.
fn exact(i: u32, account: &str, campaign: &str) -> NewDelivery {
    let created = Timestamp::from_nanosecond(1_700_000_000_123_456_789 + i128::from(i)).unwrap();
    let mut body = vec![0u8, 0xff, 0xfe, b'\n', b'\r'];
    body.extend_from_slice(
        format!("{{\"Reference\":\"{i}\",\"ResultNotes\":\"\u{2713}\"}}").as_bytes(),
    );
    NewDelivery {
        id: DeliveryId::new(format!("msg_{account}_{campaign}_{i}")).unwrap(),
        account: account.into(),
        campaign: campaign.into(),
        body: EncodedBody::from_parts(
            Bytes::from(body),
            if i.is_multiple_of(2) {
                Encoding::Json
            } else {
                Encoding::Form
            },
        ),
        created_at: created,
        next_attempt_at: created,
    }
}

fn attempt(at: Timestamp, status: u16, next: NextStep) -> AttemptRecord {
    AttemptRecord {
        at,
        status: Some(status),
        error: (status >= 300).then(|| format!("HTTP {status}")),
        next,
        duration: std::time::Duration::from_millis(5),
        answer: String::new(),
    }
}

/// Everything a store can tell about its contents, for comparing before and after.
#[derive(Debug, PartialEq)]
struct Snapshot {
    deliveries: Vec<Delivery>,
    stats: Vec<DeliveryStats>,
    pending_accounts: Vec<(AccountId, Timestamp)>,
    accounts: Vec<String>,
    health: Vec<(AccountId, String)>,
}

fn snapshot(store: &SqliteStore) -> Snapshot {
    let mut deliveries = Vec::new();
    let mut stats = Vec::new();
    for account in ["acme", "bolt"] {
        deliveries.extend(store.list(&DeliveryFilter::account(account), 1000).unwrap());
        stats.push(store.stats(&account.into(), None).unwrap());
        for campaign in ["c1", "c2"] {
            stats.push(
                store
                    .stats(&account.into(), Some(&campaign.into()))
                    .unwrap(),
            );
        }
    }
    let mut pending_accounts = store.pending_accounts().unwrap();
    pending_accounts.sort();
    Snapshot {
        deliveries,
        stats,
        pending_accounts,
        accounts: store.load_accounts().unwrap(),
        health: store.load_all_health().unwrap(),
    }
}

mod commits;
mod durability;
mod files;
mod queries;
