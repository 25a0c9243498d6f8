//! Unit tests of the SQLite store: durability, group commit, migrations, query plans.

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
    }
}

#[test]
fn conforms_with_group_commit() {
    let dirs = RefCell::new(Vec::new());
    conformance::run_all(&|max_pending| {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::builder(in_dir(&dir))
            .max_pending(max_pending)
            .open()
            .unwrap();
        dirs.borrow_mut().push(dir);
        store
    });
}

#[test]
fn conforms_with_one_commit_per_write() {
    let dirs = RefCell::new(Vec::new());
    conformance::run_all(&|max_pending| {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::builder(in_dir(&dir))
            .commit(CommitMode::PerSubmit)
            .max_pending(max_pending)
            .open()
            .unwrap();
        dirs.borrow_mut().push(dir);
        store
    });
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

#[test]
fn reopening_finds_everything_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let store = SqliteStore::open(&path).unwrap();
    let batch: Vec<_> = (0..6)
        .map(|i| {
            exact(
                i,
                ["acme", "bolt"][i as usize % 2],
                ["c1", "c2"][i as usize / 3],
            )
        })
        .collect();
    store.insert(&batch).unwrap();
    let later = Timestamp::from_nanosecond(1_700_000_100_000_000_001).unwrap();
    store
        .record_attempt(&batch[0].id, &attempt(later, 204, NextStep::Delivered))
        .unwrap();
    store
        .record_attempt(&batch[1].id, &attempt(later, 503, NextStep::RetryAt(later)))
        .unwrap();
    store
        .record_attempt(&batch[2].id, &attempt(later, 410, NextStep::Failed))
        .unwrap();
    let _ = store
        .save_account(&"acme".into(), r#"{"password":"hunter2"}"#, None)
        .unwrap();
    let _ = store
        .save_account(&"bolt".into(), r#"{"v":1}"#, None)
        .unwrap();
    let _ = store
        .save_health(&"acme".into(), r#"{"paused":true}"#, true, None)
        .unwrap();
    let before = snapshot(&store);
    assert_eq!(before.deliveries.len(), 5);
    assert!(!format!("{store:?}").contains("hunter2"));
    drop(store);
    // Every connection closed: SQLite checkpointed and removed the log.
    assert!(!Path::new(&format!("{}-wal", path.display())).exists());

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(snapshot(&store), before);
    for new in &batch[1..] {
        let found = store
            .list(
                &DeliveryFilter::account(new.account.clone()).id(new.id.clone()),
                1,
            )
            .unwrap();
        assert_eq!(found[0].body, new.body, "{}", new.id);
        assert_eq!(found[0].created_at, new.created_at);
    }
}

#[test]
fn concurrent_inserts_are_all_kept() {
    const THREADS: usize = 16;
    const EACH: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(in_dir(&dir)).unwrap());
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let store = &store;
            s.spawn(move || {
                for d in new_deliveries(&format!("a{}", thread % 4), &format!("t{thread}"), EACH) {
                    store.insert(&[d]).unwrap();
                }
            });
        }
    });
    let mut total = 0;
    for account in 0..4 {
        let account = format!("a{account}");
        let stats = store.stats(&account.as_str().into(), None).unwrap();
        let due = store
            .due(&account.as_str().into(), t(1_000_000), usize::MAX, &[])
            .unwrap();
        assert_eq!(stats.pending, (THREADS / 4 * EACH) as u64);
        assert_eq!(due.len(), THREADS / 4 * EACH);
        total += due.len();
    }
    assert_eq!(total, THREADS * EACH);
    let commits = store.transactions_committed();
    assert!(
        commits < (THREADS * EACH) as u64,
        "{commits} commits: no write shared one"
    );
}

#[test]
fn attempts_recorded_together_share_commits() {
    const N: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(in_dir(&dir)).unwrap();
    store.insert(&new_deliveries("acme", "c1", N)).unwrap();
    let claims = store
        .claim(&ClaimRequest {
            now: t(1_000_000),
            limit: N,
            lease: Duration::from_secs(60),
            skip: &[],
            ..ClaimRequest::default()
        })
        .unwrap();
    let records: Vec<_> = claims
        .iter()
        .map(|c| {
            let record = AttemptRecord {
                at: t(2_000),
                status: Some(204),
                error: None,
                next: NextStep::Delivered,
            };
            (c.delivery.id.clone(), c.token, record)
        })
        .collect();
    let before = store.transactions_committed();
    let answers = store.record_attempts(&records);
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let commits = store.transactions_committed() - before;
    // All are queued before the first answer is awaited: the writer takes them in batches.
    assert!(
        commits < (N / 2) as u64,
        "{commits} commits for {N} records"
    );
    let stats = store.stats(&"acme".into(), None).unwrap();
    assert_eq!((stats.pending, stats.delivered), (0, N as u64));
}

#[test]
fn a_failing_write_fails_alone_in_its_batch() {
    const THREADS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let existing = new_deliveries("acme", "dup", 1);
    SqliteStore::open(in_dir(&dir))
        .unwrap()
        .insert(&existing)
        .unwrap();
    // A batch closes when full: exactly the 17 writes below.
    let store = SqliteStore::builder(in_dir(&dir))
        .commit(CommitMode::Group {
            max_batch: THREADS + 1,
            max_wait: Duration::from_secs(10),
        })
        .open()
        .unwrap();
    let commits_before = store.transactions_committed();
    let barrier = Barrier::new(THREADS + 1);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for thread in 0..THREADS {
            let (store, barrier) = (&store, &barrier);
            handles.push(s.spawn(move || {
                let fresh = new_deliveries("acme", &format!("c{thread}"), 2);
                barrier.wait();
                store.insert(&fresh)
            }));
        }
        let (store, barrier, existing) = (&store, &barrier, &existing);
        handles.push(s.spawn(move || {
            // A fresh delivery and another call result under a stored id: all or nothing, so
            // neither is stored.
            let mut mixed = new_deliveries("acme", "mixed", 1);
            mixed.push(NewDelivery {
                body: EncodedBody::from_parts(
                    Bytes::from_static(b"Reference=other"),
                    Encoding::Form,
                ),
                ..existing[0].clone()
            });
            barrier.wait();
            store.insert(&mixed)
        }));
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        store.transactions_committed(),
        commits_before + 1,
        "one batch"
    );
    for ok in &results[..THREADS] {
        ok.as_ref().unwrap();
    }
    match &results[THREADS] {
        Err(Error::IdConflict { id }) => assert_eq!(id, existing[0].id.as_str()),
        other => panic!("{other:?}"),
    }
    let acme: AccountId = "acme".into();
    assert_eq!(
        store.stats(&acme, None).unwrap().pending,
        1 + 2 * THREADS as u64
    );
    assert_eq!(
        store.stats(&acme, Some(&"mixed".into())).unwrap().pending,
        0
    );
    assert!(
        store
            .list(&DeliveryFilter::account("acme").campaign("mixed"), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list(&DeliveryFilter::account("acme"), 100)
            .unwrap()
            .len(),
        1 + 2 * THREADS
    );
}

#[test]
fn a_lone_caller_is_not_kept_waiting_for_company() {
    let max_wait = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::builder(in_dir(&dir))
        .commit(CommitMode::Group {
            max_batch: 64,
            max_wait,
        })
        .open()
        .unwrap();
    let batch = new_deliveries("acme", "c1", 11);
    // The first write may wait for company; after a batch of one, the next ones do not.
    store.insert(&batch[..1]).unwrap();
    let started = Instant::now();
    for d in &batch[1..] {
        store.insert(std::slice::from_ref(d)).unwrap();
    }
    let took = started.elapsed();
    assert!(took < max_wait * 10 / 2, "10 lone writes took {took:?}");
    assert_eq!(store.transactions_committed(), 11);
}

/// A full store's refusals are the conformance suite's; here, the count of pending
/// deliveries it refuses by outlives a restart.
#[test]
fn the_pending_count_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let store = SqliteStore::builder(&path).max_pending(3).open().unwrap();
    let batch = new_deliveries("acme", "c1", 5);
    store.insert(&batch[..3]).unwrap();
    store
        .record_attempt(&batch[0].id, &attempt(t(9), 200, NextStep::Delivered))
        .unwrap();
    store.insert(&batch[3..4]).unwrap();
    drop(store);
    let store = SqliteStore::builder(&path).max_pending(3).open().unwrap();
    assert!(matches!(
        store.insert(&batch[4..]),
        Err(Error::StoreFull { max_pending: 3 })
    ));
    assert_eq!(store.stats(&"acme".into(), None).unwrap().pending, 3);
}

#[cfg(unix)]
#[test]
fn a_file_in_use_is_refused_until_its_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let first = SqliteStore::open(&path).unwrap();
    first.insert(&[exact(1, "acme", "c1")]).unwrap();
    match SqliteStore::open(&path) {
        Err(Error::StoreInUse { what }) => assert_eq!(what, path.display().to_string()),
        other => panic!("a second store on the same file must be refused, got {other:?}"),
    }
    // The refused open changed nothing: the first store still has its delivery.
    assert_eq!(first.stats(&"acme".into(), None).unwrap().pending, 1);
    drop(first);
    let again = SqliteStore::open(&path).unwrap();
    assert_eq!(again.stats(&"acme".into(), None).unwrap().pending, 1);
}

#[test]
fn files_are_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let store = SqliteStore::open(&path).unwrap();
    let _ = store
        .save_account(&"acme".into(), r#"{"password":"hunter2"}"#, None)
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", path.display());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
    }
}

fn set_version(path: &Path, version: i64) {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
}

fn version(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn a_file_from_a_newer_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    drop(SqliteStore::open(&path).unwrap());
    let newer = MIGRATIONS.len() as i64 + 1;
    set_version(&path, newer);
    let err = SqliteStore::open(&path).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Store { .. }));
    assert!(
        message.contains(&format!("schema version {newer}")),
        "{message}"
    );
    assert!(message.contains("newer release"), "{message}");
    assert_eq!(version(&path), newer);
}

#[test]
fn a_database_that_is_not_an_outbox_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        err.to_string().contains("not a call-result-webhook outbox"),
        "{err}"
    );
    let conn = Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "left untouched");
    conn.execute_batch("DROP TABLE invoices; PRAGMA user_version = 3")
        .unwrap();
    drop(conn);
    assert!(
        SqliteStore::open(&path).is_err(),
        "versioned by someone else"
    );

    for path in ["", ":memory:"] {
        assert!(matches!(
            SqliteStore::open(path),
            Err(Error::InvalidConfig { field: "path", .. })
        ));
    }
}

#[test]
fn an_older_file_is_migrated() {
    // Version 0: an empty file, as an older release that had not yet created it leaves it.
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    Connection::open(&path)
        .unwrap()
        .execute_batch("VACUUM")
        .unwrap();
    assert_eq!(version(&path), 0);
    let store = SqliteStore::open(&path).unwrap();
    store.insert(&new_deliveries("acme", "c1", 1)).unwrap();
    drop(store);
    assert_eq!(version(&path), MIGRATIONS.len() as i64);

    // Version 1 to 2: a file from the release that did not remember delivered ids keeps its
    // deliveries and counts, and remembers from then on.
    let v1 = dir.path().join("v1.db");
    let mut conn = Connection::open(&v1).unwrap();
    migrate(&mut conn, &v1, &MIGRATIONS[..1]).unwrap();
    assert_eq!(version(&v1), 1);
    let old = exact(1, "acme", "c1");
    conn.execute(
        "INSERT INTO deliveries (id, account, campaign, body, encoding, created_at, \
         next_attempt_at, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 'pending')",
        rusqlite::params![
            old.id.as_str(),
            old.account.as_str(),
            old.campaign.as_str(),
            old.body.bytes().as_ref(),
            old.body.encoding().as_str(),
            i64::try_from(old.created_at.as_nanosecond()).unwrap(),
        ],
    )
    .unwrap();
    conn.execute_batch("INSERT INTO stats (account, campaign, pending) VALUES ('acme', 'c1', 1)")
        .unwrap();
    drop(conn);
    let store = SqliteStore::open(&v1).unwrap();
    assert_eq!(version(&v1), MIGRATIONS.len() as i64);
    let due = store.due(&"acme".into(), t(1_000), 10, &[]).unwrap();
    assert_eq!((due.len(), &due[0].body), (1, &old.body));
    store.insert(std::slice::from_ref(&old)).unwrap();
    store
        .record_attempt(&old.id, &attempt(t(1_000), 204, NextStep::Delivered))
        .unwrap();
    store.insert(std::slice::from_ref(&old)).unwrap();
    let stats = store.stats(&"acme".into(), None).unwrap();
    assert_eq!((stats.pending, stats.delivered), (0, 1));
    drop(store);
    let remembered: i64 = Connection::open(&v1)
        .unwrap()
        .query_row("SELECT count(*) FROM delivered_ids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(remembered, 1);

    // A later step runs on a file at the current version and keeps its data.
    let next = "ALTER TABLE deliveries ADD COLUMN signature TEXT; \
                CREATE TABLE endpoints (account TEXT PRIMARY KEY NOT NULL)";
    let mut steps = MIGRATIONS.to_vec();
    steps.push(next);
    let mut conn = Connection::open(&path).unwrap();
    migrate(&mut conn, &path, &steps).unwrap();
    assert_eq!(version(&path), steps.len() as i64);
    let kept: i64 = conn
        .query_row(
            "SELECT count(*) FROM deliveries WHERE signature IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 1);
    // Already there: nothing runs twice.
    migrate(&mut conn, &path, &steps).unwrap();
    // And this release refuses what the later one wrote.
    drop(conn);
    assert!(SqliteStore::open(&path).is_err());
}

/// The retention itself is the conformance suite's; here, forgetting deletes the id's row
/// (every [`PRUNE_EVERY`] commits), and a remembered id outlives a restart.
#[test]
fn a_delivered_id_is_pruned_from_the_file_and_remembered_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let store = SqliteStore::builder(&path)
        .commit(CommitMode::PerSubmit)
        .open()
        .unwrap();
    let remembered = || -> i64 {
        Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM delivered_ids", [], |r| r.get(0))
            .unwrap()
    };
    let old = new_deliveries("acme", "c1", 1);
    store.insert(&old).unwrap();
    store
        .record_attempt(&old[0].id, &attempt(t(10), 204, NextStep::Delivered))
        .unwrap();
    assert_eq!(remembered(), 1);

    // The writer prunes every PRUNE_EVERY commits, so this many lone submits past the
    // retention bring one prune.
    let later = t(11) + DELIVERED_ID_RETENTION;
    for mut d in new_deliveries("acme", "c2", PRUNE_EVERY as usize) {
        d.created_at = later;
        d.next_attempt_at = later;
        store.insert(&[d]).unwrap();
    }
    // The writer pruned before it took this write.
    store.insert(&old).unwrap();
    assert_eq!(remembered(), 0);

    // Delivered again: remembered again, and across a restart.
    store
        .record_attempt(&old[0].id, &attempt(later, 204, NextStep::Delivered))
        .unwrap();
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    store.insert(&old).unwrap();
    assert_eq!(
        store
            .stats(&"acme".into(), Some(&"c1".into()))
            .unwrap()
            .pending,
        0
    );
    assert_eq!(remembered(), 1);
}

#[test]
fn hot_queries_never_scan_the_whole_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(in_dir(&dir)).unwrap();
    let conn = Connection::open(store.path()).unwrap();
    let filter = DeliveryFilter::account("acme").campaign("c1");
    let mut filtered = Vec::new();
    for state in [DeliveryState::Pending, DeliveryState::Failed] {
        let mut sql = String::from("DELETE FROM deliveries");
        push_filter(&mut sql, &filter, state);
        filtered.push(sql);
    }
    let mut queries = vec![
        DUE_BY_TIME,
        EARLIEST_BY_TIME,
        FIRST_PENDING_ACCOUNT,
        NEXT_PENDING_ACCOUNT,
        PENDING_OF_ACCOUNT,
        HAS_PENDING,
        SETTINGS_CURSOR,
        UPDATE_ACCOUNT,
        UPDATE_HEALTH,
        LOAD_ACCOUNT,
        FIND_DELIVERY,
        STATS_CAMPAIGN,
        INSERT_DELIVERY,
        SAME_DELIVERY,
        REMEMBER_DELIVERED,
        PRUNE_DELIVERED,
    ];
    queries.extend(filtered.iter().map(String::as_str));
    for sql in queries {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().unwrap() {
            let step: String = row.get(3).unwrap();
            let scans = ["deliveries", "delivered_ids", "accounts", "health"]
                .iter()
                .any(|table| step.starts_with(&format!("SCAN {table}")));
            assert!(!scans || step.contains("INDEX"), "{sql}: {step}");
        }
    }
}

/// Set for the child process of [`acknowledged_inserts_survive_sigkill`]: the file to write.
const CRASH_CHILD_ENV: &str = "CALL_RESULT_WEBHOOK_SQLITE_CRASH_CHILD";

/// Not a test on its own: the child process of [`acknowledged_inserts_survive_sigkill`].
/// Inserts from several threads until killed, printing each id once `insert` returned.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CRASH_CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(&path).unwrap();
    std::thread::scope(|s| {
        for thread in 0..4 {
            let store = &store;
            s.spawn(move || {
                for i in 0.. {
                    let mut d = exact(i, "acme", &format!("t{thread}"));
                    d.id = DeliveryId::new(format!("{}_{}", d.id, std::process::id())).unwrap();
                    store.insert(std::slice::from_ref(&d)).unwrap();
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {}", d.id).unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[cfg(unix)]
#[test]
fn acknowledged_inserts_survive_sigkill() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let mut acknowledged = HashSet::new();
    for round in 0..4 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "store::sqlite::tests::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (first_tx, first_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            let mut lines = BufReader::new(stdout);
            let mut line = Vec::new();
            // A line cut short by the kill has no newline: it was never acknowledged.
            while lines.read_until(b'\n', &mut line).unwrap() > 0 {
                if let Some(id) = line
                    .strip_prefix(b"ack ")
                    .and_then(|l| l.strip_suffix(b"\n"))
                {
                    acks.push(String::from_utf8(id.to_vec()).unwrap());
                    let _ = first_tx.send(());
                }
                line.clear();
            }
            acks
        });
        first_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child acknowledged nothing");
        let wait_ms = 20 + getrandom::u32().unwrap() % 300;
        std::thread::sleep(Duration::from_millis(u64::from(wait_ms)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        assert!(!acks.is_empty());

        let conn = Connection::open(&path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
        let stored: HashSet<String> = conn
            .prepare("SELECT id FROM deliveries")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        drop(conn);
        eprintln!(
            "round {round}: killed after {wait_ms} ms, {} acknowledged, {} stored",
            acks.len(),
            stored.len()
        );
        acknowledged.extend(acks);
        let lost: Vec<_> = acknowledged.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged ids lost: {lost:?}",
            lost.len()
        );

        // The counters moved in the same transactions as the rows.
        let store = SqliteStore::open(&path).unwrap();
        let stats = store.stats(&"acme".into(), None).unwrap();
        assert_eq!(stats.pending, stored.len() as u64, "round {round}");
    }
}

/// Claims with a lease, through the new seam (the old `Store` is in scope here too).
fn claim_at(store: &SqliteStore, now: Timestamp, limit: usize) -> Vec<crate::store::Claim> {
    crate::store::Outbox::claim(
        store,
        &crate::store::ClaimRequest {
            now,
            limit,
            lease: Duration::from_secs(3_600),
            skip: &[],
            ..ClaimRequest::default()
        },
    )
    .unwrap()
}

#[test]
fn after_a_restart_nothing_is_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let store = SqliteStore::open(&path).unwrap();
    store.insert(&new_deliveries("acme", "c1", 2)).unwrap();
    let before = claim_at(&store, t(10), 10);
    assert_eq!(before.len(), 2);
    assert!(claim_at(&store, t(11), 10).is_empty());
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    let after = claim_at(&store, t(11), 10);
    assert_eq!(after.len(), 2, "claims are not kept on disk");
    assert!(after.iter().all(|c| c.token > before[1].token));
    let stale = (
        before[0].delivery.id.clone(),
        before[0].token,
        attempt(t(12), 204, NextStep::Delivered),
    );
    let answers = crate::store::Outbox::record_attempts(&store, &[stale]);
    assert!(matches!(answers[..], [Err(Error::LeaseLost { .. })]));
}

#[test]
fn claims_page_past_leased_and_skipped_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(in_dir(&dir)).unwrap();
    store.insert(&new_deliveries("held", "c1", 300)).unwrap();
    store.insert(&new_deliveries("acme", "c1", 300)).unwrap();
    // The earliest 250 of acme claimed, held's all skipped: the next claim reads past them.
    let first = crate::store::Outbox::claim(
        &store,
        &crate::store::ClaimRequest {
            now: t(1_000),
            limit: 250,
            lease: Duration::from_secs(3_600),
            skip: &["held".into()],
            ..ClaimRequest::default()
        },
    )
    .unwrap();
    assert_eq!(first.len(), 250);
    assert!(first.iter().all(|c| c.delivery.account == "acme".into()));
    let next = crate::store::Outbox::claim(
        &store,
        &crate::store::ClaimRequest {
            now: t(1_000),
            limit: 10,
            lease: Duration::from_secs(3_600),
            skip: &["held".into()],
            ..ClaimRequest::default()
        },
    )
    .unwrap();
    let ids: Vec<_> = next.iter().map(|c| c.delivery.id.to_string()).collect();
    let expected: Vec<_> = (250..260).map(|i| format!("msg_acme_c1_{i}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(
        crate::store::Outbox::next_due(&store, t(1_000), &["held".into()]).unwrap(),
        Some(t(260))
    );
}

#[test]
fn settings_saved_before_versions_are_in_every_snapshot() {
    use crate::store::{SaveOutcome, Settings, Versioned};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    let mut conn = Connection::open(&path).unwrap();
    migrate(&mut conn, &path, &MIGRATIONS[..2]).unwrap();
    conn.execute_batch(
        "INSERT INTO accounts (id, settings) VALUES ('acme', '{\"v\":1}'); \
         INSERT INTO health (account, health) VALUES ('acme', 'h1')",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(version(&path), MIGRATIONS.len() as i64);
    let snapshot = Settings::load_settings(&store).unwrap();
    let at = |json: &str, version| Versioned {
        json: json.to_owned(),
        version,
    };
    assert_eq!(snapshot.accounts, [at(r#"{"v":1}"#, 0)]);
    assert_eq!(snapshot.health, [("acme".into(), at("h1", 0))]);
    assert_eq!(snapshot.cursor, 0);
    let none = Settings::changes_since(&store, snapshot.cursor).unwrap();
    assert!(none.accounts.is_empty() && none.health.is_empty());
    // Saved before versions, at version 0: a save against it goes through.
    let saved = Settings::save_health(&store, &"acme".into(), "h2", false, Some(0)).unwrap();
    assert_eq!(saved, SaveOutcome::Saved { version: 1 });
    let changed = Settings::changes_since(&store, snapshot.cursor).unwrap();
    assert!(changed.accounts.is_empty());
    assert_eq!(changed.health, [("acme".into(), at("h2", 1))]);
    assert_eq!(changed.cursor, 1);
    // The counter outlives a restart.
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    let saved = Settings::save_account(&store, &"bolt".into(), r#"{"v":2}"#, None).unwrap();
    assert_eq!(saved, SaveOutcome::Saved { version: 2 });
    let changed = Settings::changes_since(&store, 1).unwrap();
    assert_eq!(
        (changed.accounts, changed.cursor),
        (vec![at(r#"{"v":2}"#, 2)], 2)
    );
}

#[test]
fn the_wal_stays_under_its_limit_while_several_threads_write_well_past_it() {
    const THREADS: usize = 8;
    const EACH: usize = 1_500;
    const LIMIT: u64 = SqliteStore::MIN_WAL_LIMIT;
    // One insert changes a handful of pages (the row, the id index, the due index, the
    // counts), each a frame of 4 KiB and a header: a batch holds at most one write per thread.
    const BATCH_WORTH: u64 = THREADS as u64 * 8 * (4096 + 24);
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let store = SqliteStore::builder(&path).wal_limit(LIMIT).open().unwrap();
    assert_eq!(store.wal_limit(), LIMIT);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let done = std::sync::atomic::AtomicBool::new(false);
    let (peak, resets) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let (mut peak, mut last, mut resets) = (0, 0, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
                peak = peak.max(len);
                resets += u32::from(len < last);
                last = len;
                std::thread::sleep(Duration::from_millis(1));
            }
            (peak, resets)
        });
        let writers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let store = &store;
                s.spawn(move || {
                    for d in new_deliveries("acme", &format!("t{thread}"), EACH) {
                        store.insert(&[d]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().unwrap()
    });
    eprintln!("-wal peak {peak} bytes, reset {resets} times, limit {LIMIT}");
    // Each reset follows at least half the limit written: well past the limit in all.
    assert!(resets >= 4, "the log was reset {resets} times");
    assert!(
        peak <= LIMIT + BATCH_WORTH,
        "the log reached {peak} bytes, limit {LIMIT} + one batch {BATCH_WORTH}"
    );
    let stats = store.stats(&"acme".into(), None).unwrap();
    assert_eq!(stats.pending, (THREADS * EACH) as u64);
}

#[test]
fn a_wal_limit_under_the_minimum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::builder(in_dir(&dir))
        .wal_limit(SqliteStore::MIN_WAL_LIMIT - 1)
        .open()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "wal_limit",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !in_dir(&dir).exists(),
        "nothing is created for a refused setting"
    );
}
