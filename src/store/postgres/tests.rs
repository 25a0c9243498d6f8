//! Against a real PostgreSQL server: `CALL_RESULT_WEBHOOK_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/postgres`. Each test works in a fresh schema of its own
//! and drops it at the end. Without a server, each test prints `SKIPPED: ...` and returns.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use tokio_postgres::NoTls;

use super::*;
use crate::encoding::{EncodedBody, Encoding};
use crate::store::{NextStep, Notice};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn url() -> String {
    std::env::var("CALL_RESULT_WEBHOOK_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// A fresh schema on the test server, dropped with the value.
pub(super) struct Db {
    url: String,
    pub(super) schema: String,
}

/// Runs `f` on a runtime of its own, on a thread of its own (so that a test may call it from
/// inside another runtime).
fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a test runtime")
                    .block_on(f)
            })
            .join()
            .expect("the test runtime's thread")
    })
}

impl Db {
    /// `None` (after saying so) when no server answers.
    pub(super) fn new() -> Option<Db> {
        let url = url();
        let probe = block_on(async {
            let (client, conn) =
                tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(&url, NoTls))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        });
        if let Err(e) = probe {
            // CI sets this: there, a missing server is a failure, not a skip.
            if std::env::var_os("CALL_RESULT_WEBHOOK_REQUIRE_DATABASE").is_some() {
                panic!("no PostgreSQL at {}: {e}", redacted(&url));
            }
            println!("SKIPPED: no PostgreSQL at {}: {e}", redacted(&url));
            return None;
        }
        let schema = format!("crwh_test_{:016x}", getrandom::u64().expect("random"));
        Some(Db { url, schema })
    }

    pub(super) fn builder(&self) -> PostgresStoreBuilder {
        PostgresStore::builder(&self.url)
            .schema(&self.schema)
            .pool_size(4)
    }

    pub(super) fn open(&self) -> PostgresStore {
        self.builder().open_blocking().expect("open the store")
    }

    /// Runs `sql` (simple protocol) on a connection of its own; answers each row's columns as
    /// text.
    pub(super) fn sql(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            let messages = client.simple_query(sql).await.expect(sql);
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        })
    }

    /// The first column of the first row of `sql`.
    pub(super) fn scalar(&self, sql: &str) -> String {
        self.sql(sql)[0][0].clone().unwrap_or_default()
    }

    pub(super) fn s(&self) -> String {
        sql::quote_ident(&self.schema)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.s());
        let _ = block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await?;
            tokio::spawn(conn);
            client.batch_execute(&drop_schema).await
        });
    }
}

macro_rules! db {
    () => {
        match Db::new() {
            Some(db) => db,
            None => return,
        }
    };
}

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

fn new(id: &str, account: &str, body: &str, due: Timestamp) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::new(id).unwrap(),
        account: account.into(),
        campaign: "spring".into(),
        body: EncodedBody::from_parts(Bytes::from(body.to_owned()), Encoding::Form),
        created_at: due,
        next_attempt_at: due,
    }
}

fn claim(store: &PostgresStore, now: Timestamp, limit: usize, skip: &[AccountId]) -> Vec<Claim> {
    store
        .claim(&ClaimRequest {
            now,
            limit,
            lease: Duration::from_secs(30),
            skip,
            ..ClaimRequest::default()
        })
        .unwrap()
}

fn ids(claims: &[Claim]) -> Vec<&str> {
    claims.iter().map(|c| c.delivery.id.as_str()).collect()
}

fn record(at: Timestamp, next: NextStep, error: Option<&str>) -> AttemptRecord {
    AttemptRecord {
        at,
        status: Some(if error.is_some() { 503 } else { 200 }),
        error: error.map(str::to_owned),
        next,
    }
}

#[test]
fn migrates_on_open_and_reopens() {
    let db = db!();
    let store = db.open();
    let s = db.s();
    assert_eq!(
        db.scalar(&format!(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM {s}.schema_version"
        )),
        "1,2,3"
    );
    store.insert(&[new("a", "acme", "x=1", t(0))]).unwrap();
    drop(store);
    let store = db.open();
    let listed = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].body.bytes().as_ref(), b"x=1");
    assert_eq!(listed[0].created_at, t(0));
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM {s}.schema_version")),
        "3"
    );
}

#[test]
fn stores_opening_at_once_migrate_once() {
    let db = db!();
    let opened: Vec<Result<PostgresStore>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| db.builder().open_blocking()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for store in &opened {
        assert!(store.is_ok(), "{:?}", store.as_ref().err());
    }
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM {}.schema_version", db.s())),
        "3"
    );
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let db = db!();
    let store = db.open();
    store.insert(&[new("a", "acme", "x=1", t(0))]).unwrap();
    drop(store);
    let s = db.s();
    db.sql(&format!(
        "INSERT INTO {s}.schema_version (version, release) VALUES (99, 'future')"
    ));
    let before = db.sql(&format!(
        "SELECT (SELECT count(*) FROM {s}.schema_version), (SELECT count(*) FROM {s}.deliveries), \
         (SELECT count(*) FROM pg_tables WHERE schemaname = '{}')",
        db.schema
    ));
    let err = db.builder().open_blocking().unwrap_err();
    assert!(
        matches!(&err, Error::Store { message, .. } if message.contains("version 99")
            && message.contains("newer")),
        "{err}"
    );
    let after = db.sql(&format!(
        "SELECT (SELECT count(*) FROM {s}.schema_version), (SELECT count(*) FROM {s}.deliveries), \
         (SELECT count(*) FROM pg_tables WHERE schemaname = '{}')",
        db.schema
    ));
    assert_eq!(before, after);
}

/// A batch's outcomes go in two statements, whatever its size: several of one campaign count
/// once each, the latest failure's reason wins, an id twice in one batch is recorded once
/// (the second is not under a current claim) and an outdated token changes nothing.
#[test]
fn a_batch_of_outcomes_counts_each_once_and_answers_each() {
    let db = db!();
    let store = db.open();
    let acme = AccountId::new("acme");
    let batch: Vec<NewDelivery> = (0..6)
        .map(|i| new(&format!("d{i}"), "acme", &i.to_string(), t(0)))
        .collect();
    store.insert(&batch).unwrap();
    let claims = claim(&store, t(0), 10, &[]);
    assert_eq!(claims.len(), 6);
    let outcome = |i: usize, at: i64, next: NextStep, error: Option<&str>| {
        (
            claims[i].delivery.id.clone(),
            claims[i].token,
            record(t(at), next, error),
        )
    };
    let stale = ClaimToken::new(claims[5].token.get() + 1_000);
    let answers = store.record_attempts(&[
        outcome(0, 1, NextStep::Delivered, None),
        outcome(1, 4, NextStep::Delivered, Some("HTTP 503 before")),
        outcome(2, 2, NextStep::Failed, Some("HTTP 410 earlier")),
        outcome(3, 3, NextStep::Failed, Some("HTTP 404 later")),
        outcome(4, 2, NextStep::RetryAt(t(60)), Some("HTTP 503")),
        // The same id again in the batch: its claim ended with the first.
        outcome(0, 5, NextStep::Failed, Some("HTTP 500")),
        (
            claims[5].delivery.id.clone(),
            stale,
            record(t(5), NextStep::Delivered, None),
        ),
    ]);
    assert!(answers[..5].iter().all(Result::is_ok), "{answers:?}");
    assert!(
        matches!(&answers[5], Err(Error::LeaseLost { id }) if id == claims[0].delivery.id.as_str()),
        "{answers:?}"
    );
    assert!(
        matches!(&answers[6], Err(Error::LeaseLost { .. })),
        "{answers:?}"
    );
    let stats = store.stats(&acme, None).unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.failed), (2, 2, 2));
    assert_eq!(stats.last_success_at, Some(t(4)));
    assert_eq!(stats.last_failure_at, Some(t(4)));
    assert_eq!(
        stats.last_failure_reason.as_deref(),
        Some("HTTP 503 before")
    );
    // The stale outcome left its delivery claimed under the current token.
    let answer = store.record_attempts(&[outcome(5, 6, NextStep::Delivered, None)]);
    assert!(answer[0].is_ok(), "{answer:?}");
    assert_eq!(store.stats(&acme, None).unwrap().delivered, 3);
}

/// A claim's and a batch of outcomes' transactions commit without waiting for the flush,
/// unless the builder asks them to; nothing else changes the session's setting.
#[test]
fn claims_and_outcomes_commit_without_waiting_for_the_flush_unless_asked() {
    let db = db!();
    let s = db.s();
    drop(db.open());
    db.sql(&format!(
        "INSERT INTO {s}.deliveries (id, account, campaign, body, encoding, created_at, \
         next_attempt_at, attempts, state) VALUES ('d1', 'acme', 'spring', 'x', 'form', 0, 0, \
         0, 'pending')"
    ));
    for (synchronous, expected) in [(false, "off"), (true, "on")] {
        let sql = sql::Statements::new(&db.schema, synchronous);
        let walks = [
            (
                &sql.claim_head,
                "(1, 2, ARRAY[]::text[], 10, 10, ARRAY[]::text[], ARRAY[]::bigint[], \
                 ARRAY[]::bigint[], 100)",
            ),
            (
                &sql.claim_by_account,
                "(1, 2, ARRAY[]::text[], 10, 10, ARRAY[]::text[], ARRAY[]::bigint[], \
                 ARRAY[]::bigint[])",
            ),
        ];
        for (statement, args) in walks {
            let rows = db.sql(&format!(
                "BEGIN; SET LOCAL synchronous_commit = local; PREPARE q AS {statement}; \
                 EXECUTE q{args}; SHOW synchronous_commit; ROLLBACK"
            ));
            let shown = rows.last().and_then(|r| r[0].clone());
            assert_eq!(shown.as_deref(), Some(expected), "{statement}");
        }
        let rows = db.sql(&format!(
            "BEGIN; SET LOCAL synchronous_commit = local; {}; SHOW synchronous_commit; ROLLBACK",
            sql.progress_commit
        ));
        assert_eq!(
            rows.last().and_then(|r| r[0].clone()).as_deref(),
            Some(expected)
        );
    }
    // The store's own claims and outcomes still work end to end with it.
    let store = db.open();
    let claims = claim(&store, t(0), 10, &[]);
    assert_eq!(ids(&claims), ["d1"]);
    let answers = store.record_attempts(&[(
        claims[0].delivery.id.clone(),
        claims[0].token,
        record(t(1), NextStep::Delivered, None),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
}

/// `per_account` bounds one endpoint's attempts over every process on the schema: a slot
/// taken by one store's claim is not another's until its outcome, its release or its
/// lease's end; an extended lease keeps its slot.
/// A claim may give the endpoint slot of one of its process's finished requests (its outcome
/// still being written) to a new delivery; the outcome written later then frees nothing, so
/// the bound still counts requests in flight over the fleet.
#[test]
fn a_finished_requests_slot_goes_to_the_next_claim_and_its_outcome_frees_nothing() {
    let db = db!();
    let (one, two) = (db.open(), db.open());
    let batch: Vec<NewDelivery> = (0..4)
        .map(|i| new(&format!("d{i}"), "acme", &i.to_string(), t(0)))
        .collect();
    one.insert(&batch).unwrap();
    let claim = |store: &PostgresStore, now: Timestamp, finished: &[ClaimToken]| {
        store
            .claim(&ClaimRequest {
                now,
                limit: 10,
                lease: Duration::from_secs(30),
                per_account: Some(1),
                finished,
                ..ClaimRequest::default()
            })
            .unwrap()
    };
    let first = claim(&one, t(0), &[]);
    assert_eq!(first.len(), 1);
    assert!(claim(&one, t(1), &[]).is_empty(), "the one slot is taken");
    // Another process's finished token frees nothing here, and a token of no slot neither.
    assert!(claim(&two, t(1), &[ClaimToken::new(u64::MAX / 4)]).is_empty());
    // Its request over, the first claim's slot goes to the next delivery.
    let second = claim(&one, t(2), &[first[0].token]);
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].delivery.id, first[0].delivery.id);
    // Its outcome, written now, leaves the slot to the second (no process finds room).
    let answers = one.record_attempts(&[(
        first[0].delivery.id.clone(),
        first[0].token,
        record(t(4), NextStep::Delivered, None),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
    assert!(
        claim(&two, t(5), &[]).is_empty(),
        "the second holds the slot"
    );
    let answers = one.record_attempts(&[(
        second[0].delivery.id.clone(),
        second[0].token,
        record(t(6), NextStep::Delivered, None),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
    assert_eq!(
        claim(&two, t(7), &[]).len(),
        1,
        "free again once the second's outcome is in"
    );
}

#[test]
fn the_bound_per_endpoint_holds_across_stores() {
    let db = db!();
    let (one, two) = (db.open(), db.open());
    let batch: Vec<NewDelivery> = (0..8)
        .map(|i| new(&format!("d{i}"), "acme", &i.to_string(), t(0)))
        .chain([new("other", "globex", "x", t(0))])
        .collect();
    one.insert(&batch).unwrap();
    let bounded = |store: &PostgresStore, now: Timestamp| {
        store
            .claim(&ClaimRequest {
                now,
                limit: 10,
                lease: Duration::from_secs(30),
                per_account: Some(2),
                ..ClaimRequest::default()
            })
            .unwrap()
    };
    let accounts = |claims: &[Claim]| -> Vec<String> {
        claims
            .iter()
            .map(|c| c.delivery.account.as_str().to_owned())
            .collect()
    };
    let first = bounded(&one, t(0));
    assert_eq!(accounts(&first), ["acme", "acme", "globex"]);
    // The other process finds acme's two places taken.
    assert!(bounded(&two, t(1)).is_empty());
    // An outcome frees one place, for any process.
    let answers = one.record_attempts(&[(
        first[0].delivery.id.clone(),
        first[0].token,
        record(t(2), NextStep::Delivered, None),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
    let second = bounded(&two, t(3));
    assert_eq!(accounts(&second), ["acme"]);
    // A release frees its place at once.
    one.release(&[(first[1].delivery.id.clone(), first[1].token)])
        .unwrap();
    let third = bounded(&two, t(4));
    assert_eq!(accounts(&third), ["acme"]);
    assert!(bounded(&one, t(5)).is_empty());
    // An extended lease keeps its place past its old end; a lease that ran out frees it.
    two.extend_leases(&[(third[0].delivery.id.clone(), third[0].token)], t(100))
        .unwrap();
    // (globex's lease from t(0) ran out too.)
    let later = bounded(&one, t(40));
    assert_eq!(
        accounts(&later),
        ["acme", "globex"],
        "acme: only the place of the lease that ran out"
    );
    assert!(bounded(&two, t(41)).is_empty());
    // Without a bound, nothing is held back.
    let unbounded = one
        .claim(&ClaimRequest {
            now: t(200),
            limit: 10,
            lease: Duration::from_secs(30),
            ..ClaimRequest::default()
        })
        .unwrap();
    assert_eq!(unbounded.len(), 8, "{:?}", accounts(&unbounded));
    // next_due leaves out an endpoint whose every place is taken.
    let three = db.open();
    let s = db.s();
    db.sql(&format!(
        "UPDATE {s}.endpoint_slots SET lease_until = 9223372036854775000, claim_token = 1"
    ));
    assert_eq!(three.next_due(t(300), &[]).unwrap(), None);
    db.sql(&format!(
        "UPDATE {s}.endpoint_slots SET lease_until = NULL, claim_token = NULL WHERE slot = 1"
    ));
    assert!(three.next_due(t(300), &[]).unwrap().is_some());
}

/// Subscribes `store` and waits until its LISTEN connection is up; answers the notices.
fn subscribed(db: &Db, store: &PostgresStore) -> mpsc::Receiver<Notice> {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    store.subscribe(Arc::new(move |notice| {
        let _ = tx.lock().unwrap().send(notice);
    }));
    let listening = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN {}'",
        db.s().replace('\'', "''")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.scalar(&listening) == "0" {
        assert!(
            Instant::now() < deadline,
            "the LISTEN connection never came up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Listening starts with one of each notice (for whatever was announced before): drain
    // them, so a test sees only what comes after.
    while rx.try_recv().is_ok() {}
    rx
}

fn expect_notice(rx: &mpsc::Receiver<Notice>, want: Notice) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(notice) if notice == want => return,
            Ok(_) => continue,
            Err(_) => panic!("no {want:?} within 1 s"),
        }
    }
}

#[test]
fn an_insert_wakes_a_subscribed_store() {
    let db = db!();
    let a = db.open();
    let b = db.open();
    let notices = subscribed(&db, &b);
    a.insert(&[new("a", "acme", "1", t(0))]).unwrap();
    expect_notice(&notices, Notice::DueWork);
    // A repeat stores nothing and announces nothing.
    a.insert(&[new("a", "acme", "1", t(0))]).unwrap();
    assert!(notices.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn the_dialer_enqueues_inside_its_own_transaction() {
    let db = db!();
    let store = db.open();
    let s = db.s();
    db.sql(&format!("CREATE TABLE {s}.calls (id text PRIMARY KEY)"));
    let delivery = new("call-1", "acme", "Reference=1", t(0));
    block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        let insert_call = format!("INSERT INTO {s}.calls (id) VALUES ('call-1')");

        let tx = client.transaction().await.unwrap();
        tx.batch_execute(&insert_call).await.unwrap();
        enqueue_in(&tx, &db.schema, &delivery).await.unwrap();
        tx.rollback().await.unwrap();
        let calls: i64 = client
            .query_one(&format!("SELECT count(*) FROM {s}.calls"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(calls, 0);
        assert!(!store.has_pending().unwrap());

        let tx = client.transaction().await.unwrap();
        tx.batch_execute(&insert_call).await.unwrap();
        assert_eq!(
            enqueue_in(&tx, &db.schema, &delivery).await.unwrap(),
            Enqueued::Stored
        );
        assert_eq!(
            enqueue_in(&tx, &db.schema, &delivery).await.unwrap(),
            Enqueued::AlreadyStored
        );
        tx.commit().await.unwrap();
        assert_eq!(
            enqueue_in(&client, &db.schema, &delivery).await.unwrap(),
            Enqueued::AlreadyStored
        );

        // The statement itself, as a sqlx user runs it.
        let sql = enqueue_statement(&db.schema);
        let params = EnqueueParams::new(&delivery).unwrap();
        let outcome: String = client
            .query_one(&sql, &params.as_params())
            .await
            .unwrap()
            .get(0);
        assert_eq!(outcome, "duplicate");
        let other = new("call-1", "acme", "Reference=2", t(0));
        let params = EnqueueParams::new(&other).unwrap();
        let outcome: String = client
            .query_one(&sql, &params.as_params())
            .await
            .unwrap()
            .get(0);
        assert_eq!(outcome, "conflict");
        let err = enqueue_in(&client, &db.schema, &other).await.unwrap_err();
        assert!(matches!(err, Error::IdConflict { .. }));
        assert!(!format!("{params:?}").contains("Reference"));
    });
    assert_eq!(db.scalar(&format!("SELECT count(*) FROM {s}.calls")), "1");
    let listed = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].body.bytes().as_ref(), b"Reference=1");
    assert_eq!(
        store.stats(&AccountId::new("acme"), None).unwrap().pending,
        1
    );
    // Due at the database's now (the dialer's times keep only their distance).
    let claimed = claim(&store, Timestamp::now(), 10, &[]);
    assert_eq!(ids(&claimed), ["call-1"]);
    // Delivered: the same call result again is "already delivered", another one a conflict.
    let answers = store.record_attempts(&[(
        claimed[0].delivery.id.clone(),
        claimed[0].token,
        record(t(1), NextStep::Delivered, None),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
    let other = new("call-1", "acme", "Reference=2", t(0));
    block_on(async {
        let (client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        assert_eq!(
            enqueue_in(&client, &db.schema, &delivery).await.unwrap(),
            Enqueued::AlreadyDelivered
        );
        let err = enqueue_in(&client, &db.schema, &other).await.unwrap_err();
        assert!(matches!(err, Error::IdConflict { .. }), "{err:?}");
    });
    assert!(!store.has_pending().unwrap());
}

#[test]
fn the_transactional_enqueue_refuses_ids_the_database_would_refuse() {
    let db = db!();
    let store = db.open();
    let mut bad = new("call-1", "acme", "Reference=1", t(0));
    bad.campaign = CampaignId::new("winter\0sale");
    block_on(async {
        let (client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        let err = enqueue_in(&client, &db.schema, &bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidId {
                    field: "campaign_id",
                    ..
                }
            ),
            "{err:?}"
        );
        bad.campaign = CampaignId::new("winter-sale");
        bad.account = AccountId::new("");
        let err = enqueue_in(&client, &db.schema, &bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidId {
                    field: "account_id",
                    ..
                }
            ),
            "{err:?}"
        );
    });
    assert!(!store.has_pending().unwrap());
}

#[tokio::test]
async fn works_when_called_from_inside_a_tokio_runtime() {
    let db = db!();
    // Opening and calling from a runtime's thread: the store never nests a runtime.
    let store = db.open();
    store.insert(&[new("a", "acme", "1", t(0))]).unwrap();
    assert!(store.has_pending().unwrap());
    drop(store);
}

#[test]
fn the_password_never_shows() {
    let url = "postgres://dialer:s3cr3t-pw@127.0.0.1:1/outbox?connect_timeout=1";
    let builder = PostgresStore::builder(url);
    let shown = format!("{builder:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("dialer@127.0.0.1:1/outbox"), "{shown}");
    let err = builder.open_blocking().unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(" / {e} / {e:?}"));
        source = e.source();
    }
    assert!(!chain.contains("s3cr3t"), "{chain}");
    assert!(chain.contains("127.0.0.1:1"), "{chain}");
    let bad = PostgresStore::builder("postgres://u:pw@h/db")
        .schema("Robert'); DROP")
        .open_blocking();
    assert!(matches!(
        bad,
        Err(Error::InvalidConfig {
            field: "schema",
            ..
        })
    ));
}

/// Answers 200 after 2 ms, in process: the load on the database is a real worker's.
struct SlowOk;

impl crate::BlockingDispatcher for SlowOk {
    fn dispatch_blocking(
        &self,
        _: http::Request<Bytes>,
    ) -> std::result::Result<crate::dispatch::ReceiverResponse, crate::dispatch::TransportError>
    {
        std::thread::sleep(Duration::from_millis(2));
        Ok(crate::dispatch::ReceiverResponse::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            Bytes::new(),
        ))
    }
}

/// Run by hand: `cargo test --features postgres --lib store::postgres::tests::explain --
/// --ignored --nocapture`. Loads 1,000,000 pending deliveries over 500 accounts, lets two
/// workers deliver from them for 20 s (the default bounds: the claims skip accounts at their
/// bound, rows are leased, deleted and updated under them, autovacuum as configured), and
/// prints the plans of both walks of the claim and of `next_due` while they run: each must
/// use its index, never a sequential scan of `deliveries`.
#[test]
#[ignore = "loads a million rows; run by hand"]
fn explain_claim_and_next_due_on_a_million_pending() {
    let db = db!();
    let store = db.open();
    let s = db.s();
    db.sql(&format!(
        "INSERT INTO {s}.deliveries (id, account, campaign, body, encoding, created_at, \
             next_attempt_at, state) \
         SELECT 'd' || i, 'acct' || (i % 500), 'c', 'Reference=1'::bytea, 'form', \
             i::bigint * 1000, i::bigint * 1000, 'pending' FROM generate_series(1, 1000000) AS i; \
         INSERT INTO {s}.stats_deltas (account, campaign, pending) \
         SELECT 'acct' || a, 'c', 2000 FROM generate_series(0, 499) AS a; \
         ANALYZE {s}.deliveries"
    ));
    let admin = crate::Principal::administrator("explain");
    let policy = crate::UrlPolicy::new().allow_http(true).allow_private();
    let mut running = Vec::new();
    for n in 0..2 {
        let webhooks = crate::Webhooks::builder()
            .store(db.open())
            .policy(policy.clone())
            .build()
            .unwrap();
        if n == 0 {
            for a in 0..500 {
                let account = AccountId::new(format!("acct{a}"));
                webhooks
                    .update_preferences_blocking(
                        &admin,
                        &account,
                        crate::PreferencesUpdate::new()
                            .url("http://127.0.0.1:9/calls")
                            .enabled(true),
                    )
                    .unwrap();
                webhooks
                    .set_campaign_webhook_blocking(&admin, &account, &"c".into(), true)
                    .unwrap();
            }
        }
        let worker = webhooks.start_threads(SlowOk, 64).unwrap();
        running.push((webhooks, worker));
    }
    std::thread::sleep(Duration::from_secs(20));
    let delivered = db.scalar(&format!("SELECT count(*) FROM {s}.delivered_ids"));
    println!("delivered while loading the plans' data: {delivered}");
    let sql = sql::Statements::new(&db.schema, false);
    let mut plans = Vec::new();
    // Custom plans (the first executions of a prepared statement) and the generic plan the
    // server may switch to after five.
    for mode in ["force_custom_plan", "force_generic_plan"] {
        for (name, statement, args, index) in [
            (
                "claim, head",
                &sql.claim_head,
                "($NOW, $NOW + 30000000000, ARRAY['acct1','acct2']::text[], 64, 4, \
                 ARRAY['acct3']::text[], ARRAY[2]::bigint[], ARRAY[]::bigint[], 320)",
                "deliveries_due",
            ),
            (
                "claim, account by account",
                &sql.claim_by_account,
                "($NOW, $NOW + 30000000000, ARRAY['acct1','acct2']::text[], 64, 4, \
                 ARRAY['acct3']::text[], ARRAY[2]::bigint[], ARRAY[]::bigint[])",
                "deliveries_account_due",
            ),
            (
                "next_due, head",
                &sql.next_due_head,
                "($NOW, ARRAY['acct1']::text[], 320)",
                "deliveries_due",
            ),
            (
                "next_due, account by account",
                &sql.next_due_by_account,
                "($NOW, ARRAY['acct1']::text[])",
                "deliveries_account_due",
            ),
        ] {
            let now = Timestamp::now().as_nanosecond().to_string();
            let args = args.replace("$NOW", &now);
            let explain = format!(
                "BEGIN; SET LOCAL plan_cache_mode = {mode}; PREPARE q AS {statement}; \
                 EXPLAIN (ANALYZE, BUFFERS) EXECUTE q{args}; ROLLBACK"
            );
            let plan: Vec<String> = db
                .sql(&explain)
                .into_iter()
                .map(|row| row[0].clone().unwrap_or_default())
                .collect();
            println!("--- {name} ({mode})\n{}", plan.join("\n"));
            plans.push((index, plan.join("\n")));
        }
    }
    for (_, worker) in &running {
        worker.shutdown_blocking(Duration::from_secs(10)).unwrap();
    }
    for (index, plan) in &plans {
        assert!(plan.contains(index), "{plan}");
        assert!(!plan.contains("Seq Scan on deliveries"), "{plan}");
    }
    drop(running);
    drop(store);
}

#[test]
fn conforms() {
    let Some(probe) = Db::new() else { return };
    drop(probe);
    // Each check on a fresh schema; the schemas are dropped once the suite is done.
    let schemas = Mutex::new(Vec::new());
    crate::store::conformance::run_all(&|max_pending| {
        let db = Db::new().expect("the server answered a moment ago");
        let store = db
            .builder()
            .max_pending(max_pending)
            .open_blocking()
            .expect("open the store");
        schemas.lock().unwrap().push(db);
        store
    });
}

/// The fleet's checks with two processes on one schema: claims and saves at once, a save
/// seen by the other, and notices heard by both.
#[test]
fn two_stores_on_one_schema_conform_as_a_fleet() {
    let Some(probe) = Db::new() else { return };
    drop(probe);
    let schemas = Mutex::new(Vec::new());
    crate::store::conformance::run_fleet(&|| {
        let db = Db::new().expect("the server answered a moment ago");
        let stores = vec![db.open(), db.open()];
        schemas.lock().unwrap().push(db);
        stores
    });
}

#[test]
fn concurrent_submits_commit_together_and_each_gets_its_own_answer() {
    const THREADS: usize = 16;
    const EACH: usize = 40;
    let db = db!();
    let store = Arc::new(db.open());
    // Stored before: a repeat of it is a no-op; another call result under its id is refused.
    store
        .insert(&[new("taken", "acme", "first", t(0))])
        .unwrap();
    let answers: Vec<Vec<(String, Result<()>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|thread| {
                let store = Arc::clone(&store);
                scope.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let d = match (thread, i) {
                                (0, 0) => new("taken", "acme", "first", t(0)),
                                (1, 0) => new("taken", "acme", "another", t(0)),
                                _ => new(&format!("t{thread}-{i}"), "acme", "x", t(1)),
                            };
                            let id = d.id.to_string();
                            (id, store.insert(&[d]))
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (thread, answers) in answers.iter().enumerate() {
        for (i, (id, answer)) in answers.iter().enumerate() {
            match (thread, i) {
                (1, 0) => assert!(
                    matches!(answer, Err(Error::IdConflict { id }) if id == "taken"),
                    "{answer:?}"
                ),
                _ => assert!(answer.is_ok(), "{id}: {answer:?}"),
            }
        }
    }
    let stats = store.stats(&AccountId::new("acme"), None).unwrap();
    assert_eq!(stats.pending, (THREADS * EACH - 1) as u64);
    let taken = store
        .list(
            &DeliveryFilter::account("acme").id(DeliveryId::new("taken").unwrap()),
            1,
        )
        .unwrap();
    assert_eq!(taken[0].body.bytes().as_ref(), b"first");
}

/// Two processes change one account's settings at once, through two stores on one schema:
/// each save that meets the other's is applied again to the stored account, so every change
/// is kept, and audited once.
#[test]
fn two_processes_changing_one_account_at_once_keep_every_change() {
    use crate::account::Account;
    use crate::{PreferencesUpdate, Principal, Webhooks};

    const ROUNDS: usize = 25;
    let db = db!();
    let build = || Webhooks::builder().store(db.open()).build().unwrap();
    let (a, b) = (build(), build());
    let acme = AccountId::new("acme");
    let admin = Principal::administrator("alice");
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            start.wait();
            for i in 0..ROUNDS {
                let campaign = format!("a{i}").into();
                a.set_campaign_webhook_blocking(&admin, &acme, &campaign, true)
                    .unwrap();
            }
        });
        s.spawn(|| {
            start.wait();
            for i in 1..=ROUNDS {
                let timeout = Duration::from_secs(i as u64);
                let update = PreferencesUpdate::new().attempt_timeout(timeout);
                b.update_preferences_blocking(&admin, &acme, update)
                    .unwrap();
            }
        });
    });
    let stored = db.open().load_account(&acme).unwrap().unwrap();
    let stored = Account::from_storage_json(&stored.json).unwrap();
    assert_eq!(stored.campaigns().count(), ROUNDS);
    assert_eq!(
        stored.preferences().attempt_timeout(),
        Duration::from_secs(ROUNDS as u64)
    );
    assert_eq!(stored.audit_log().len(), 2 * ROUNDS);
}

#[test]
fn a_failed_recording_keeps_the_servers_sqlstate_message_and_detail_for_each_outcome() {
    let db = db!();
    let store = db.open();
    store
        .insert(&[new("a", "acme", "x=1", t(0)), new("b", "acme", "x=2", t(0))])
        .unwrap();
    let claims = claim(&store, t(0), 10, &[]);
    assert_eq!(claims.len(), 2);
    // Every change to a delivery is refused from now on, with a SQLSTATE and a detail.
    db.sql(&format!(
        "CREATE FUNCTION {s}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'no outcomes today' USING ERRCODE = 'P0001', \
             DETAIL = 'a test trigger'; END $$; \
         CREATE TRIGGER refuse BEFORE UPDATE OR DELETE ON {s}.deliveries \
           FOR EACH ROW EXECUTE FUNCTION {s}.refuse()",
        s = db.s()
    ));
    let outcomes: Vec<_> = claims
        .iter()
        .map(|c| {
            (
                c.delivery.id.clone(),
                c.token,
                record(t(1), NextStep::Delivered, None),
            )
        })
        .collect();
    for answer in store.record_attempts(&outcomes) {
        let e = answer.expect_err("refused by the trigger");
        let chain = crate::error::error_chain(&e);
        assert!(
            chain.contains("ERROR P0001: no outcomes today (detail: a test trigger)"),
            "{chain}"
        );
    }
}

/// The session every pooled connection runs (generic plans) keeps the claim on the due
/// index of a table that has no statistics at all, where a custom plan would read and sort
/// the whole backlog.
#[test]
fn the_claim_walks_the_due_index_of_a_table_without_statistics() {
    let db = db!();
    drop(db.open());
    let s = db.s();
    db.sql(&format!(
        "INSERT INTO {s}.deliveries (id, account, campaign, body, encoding, created_at, \
             next_attempt_at, state) \
         SELECT 'd' || i, 'acct' || (i % 50), 'c', '\\x00'::bytea, 'form', i, i, 'pending' \
         FROM generate_series(1, 50000) AS i"
    ));
    let analyzed = db.scalar(&format!(
        "SELECT (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL \
             OR last_vacuum IS NOT NULL OR last_autovacuum IS NOT NULL)::text \
         FROM pg_stat_user_tables WHERE schemaname = '{}' AND relname = 'deliveries'",
        db.schema
    ));
    let sql = sql::Statements::new(&db.schema, false);
    let plan_with = |setup: &str| -> String {
        let now = 1_000_000_i64;
        let explain = format!(
            "BEGIN; {setup}; PREPARE q AS {}; \
             EXPLAIN EXECUTE q({now}, {now} + 1000, ARRAY[]::text[], 64, 4, \
                 ARRAY[]::text[], ARRAY[]::bigint[], ARRAY[]::bigint[], 320); ROLLBACK",
            sql.claim_head
        );
        db.sql(&explain)
            .into_iter()
            .map(|row| row[0].clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ours = plan_with(&ops::Bounds::default().session_setup());
    assert!(ours.contains("Index Scan using deliveries_due"), "{ours}");
    assert!(
        !ours.contains("Bitmap Index Scan on deliveries_due"),
        "{ours}"
    );
    assert!(
        !ours.contains("Bitmap Index Scan on deliveries_account_due"),
        "{ours}"
    );
    // The outcomes and the lease changes look rows up by key alone.
    let setup = ops::Bounds::default().session_setup();
    for (statement, args) in [
        (
            &sql.record_delivered,
            "(ARRAY['d1','d2'], ARRAY[1,2]::bigint[], ARRAY[1,1]::bigint[], \
             ARRAY[NULL,NULL]::text[], ARRAY[NULL,NULL]::integer[], ARRAY[NULL,NULL]::text[], \
             ARRAY[NULL,NULL]::bigint[])",
        ),
        (
            &sql.record_kept,
            "(ARRAY['d1','d2'], ARRAY[1,2]::bigint[], ARRAY[1,1]::bigint[], \
             ARRAY['HTTP 503',NULL]::text[], ARRAY[503,NULL]::integer[], \
             ARRAY['pending','failed']::text[], ARRAY[2,NULL]::bigint[])",
        ),
        (&sql.release, "(ARRAY['d1','d2'], ARRAY[1,2]::bigint[])"),
        (&sql.extend, "(ARRAY['d1','d2'], ARRAY[1,2]::bigint[], 5)"),
    ] {
        let plan = db
            .sql(&format!(
                "BEGIN; {setup}; PREPARE q AS {statement}; EXPLAIN EXECUTE q{args}; ROLLBACK"
            ))
            .into_iter()
            .map(|row| row[0].clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(plan.contains("deliveries_pkey"), "{plan}");
        assert!(!plan.contains("on deliveries_due"), "{plan}");
        assert!(!plan.contains("on deliveries_account_due"), "{plan}");
    }
    if analyzed == "false" {
        // What the session setting avoids, shown on the same table: a custom plan without
        // statistics reads the backlog.
        let custom = plan_with("SET LOCAL plan_cache_mode = force_custom_plan");
        println!("a custom plan without statistics:\n{custom}");
    }
}

/// A schema a release of version 1 made, with work in it, is migrated on open: its pending
/// deliveries, counts and delivered ids are kept and claimable, and a delivered id kept
/// without a fingerprint stays a no-op for any call result under it.
#[test]
fn a_version_1_schema_with_work_in_it_is_migrated_and_keeps_it() {
    let db = db!();
    let s = db.s();
    db.sql(&format!(
        "CREATE SCHEMA {s}; \
         CREATE TABLE {s}.schema_version (version integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now(), release text NOT NULL); \
         {v1} \
         INSERT INTO {s}.schema_version (version, release) VALUES (1, '0.1.0'); \
         INSERT INTO {s}.deliveries (id, account, campaign, body, encoding, created_at, \
             next_attempt_at, state) VALUES ('old-1', 'acme', 'c', 'x=1', 'form', 1, 1, 'pending'); \
         INSERT INTO {s}.stats (account, campaign, pending, delivered) VALUES ('acme', 'c', 1, 5); \
         INSERT INTO {s}.delivered_ids (id, delivered_at) VALUES ('old-0', {now})",
        v1 = sql::with_schema(schema::MIGRATIONS[0], &db.schema),
        now = Timestamp::now().as_nanosecond(),
    ));
    let store = db.open();
    assert_eq!(
        db.scalar(&format!(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM {s}.schema_version"
        )),
        "1,2,3"
    );
    let stats = store.stats(&AccountId::new("acme"), None).unwrap();
    assert_eq!((stats.pending, stats.delivered), (1, 5));
    let claimed = claim(&store, t(0), 10, &[]);
    assert_eq!(ids(&claimed), ["old-1"]);
    // Delivered before fingerprints were kept: any call result under it is a no-op.
    store
        .insert(&[new("old-0", "acme", "anything", t(0))])
        .unwrap();
    assert_eq!(ids(&claim(&store, t(0), 10, &[])), Vec::<&str>::new());
}

/// A store whose process clock is `off` from this host's (2 minutes ahead: `+120 s`), and
/// that clock's now.
struct OffClock {
    store: PostgresStore,
    off: jiff::SignedDuration,
}

impl OffClock {
    fn open(db: &Db, off_seconds: i64) -> OffClock {
        let store = db.open();
        let off = jiff::SignedDuration::from_secs(off_seconds);
        // Measured against this host's clock; that process's clock reads `off` more.
        let measured = store.ctx.clock.skew();
        store.ctx.clock.pin(measured - off);
        OffClock { store, off }
    }

    fn now(&self) -> Timestamp {
        Timestamp::now() + self.off
    }

    fn claim(&self, after: Duration) -> Vec<Claim> {
        claim(&self.store, self.now() + after, 10, &[])
    }
}

/// Close enough for times read against real clocks a few statements apart.
fn near(a: Timestamp, b: Timestamp) -> bool {
    a.duration_since(b).unsigned_abs() < Duration::from_secs(2)
}

/// Three processes with clocks 2 minutes ahead, right and 2 minutes behind share leases and
/// due times: every comparison is on the database's clock, each process's own clock only
/// measures durations from its now.
#[test]
fn stores_on_clocks_two_minutes_apart_share_leases_and_due_times() {
    let db = db!();
    let ahead = OffClock::open(&db, 120);
    let right = OffClock::open(&db, 0);
    let behind = OffClock::open(&db, -120);
    right
        .store
        .insert(&[new("a", "acme", "1", right.now())])
        .unwrap();

    // Due at once for every clock; under the ahead one's lease of 30 s for all of them.
    assert!(near(
        behind.store.next_due(behind.now(), &[]).unwrap().unwrap(),
        behind.now()
    ));
    let first = ahead.claim(Duration::ZERO);
    assert_eq!(ids(&first), ["a"]);
    assert!(near(
        first[0].lease_until,
        ahead.now() + Duration::from_secs(30)
    ));
    assert!(behind.claim(Duration::from_secs(25)).is_empty());
    assert!(right.claim(Duration::from_secs(25)).is_empty());
    assert_eq!(behind.store.next_due(behind.now(), &[]).unwrap(), None);
    // Its lease runs out 30 s after the claim, for the process behind too.
    let second = behind.claim(Duration::from_secs(35));
    assert_eq!(ids(&second), ["a"]);

    // A retry in 10 s is due 10 s from now for every clock.
    let retry_at = behind.now() + Duration::from_secs(10);
    let answers = behind.store.record_attempts(&[(
        second[0].delivery.id.clone(),
        second[0].token,
        record(behind.now(), NextStep::RetryAt(retry_at), Some("HTTP 503")),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
    for clock in [&ahead, &right, &behind] {
        let due = clock.store.next_due(clock.now(), &[]).unwrap().unwrap();
        assert!(
            near(due, clock.now() + Duration::from_secs(10)),
            "{due} {}",
            clock.now()
        );
        assert!(clock.claim(Duration::from_secs(5)).is_empty());
    }
    assert_eq!(ids(&ahead.claim(Duration::from_secs(15))), ["a"]);
    // Each reads the times on its own clock.
    let listed = behind
        .store
        .list(&DeliveryFilter::account("acme"), 10)
        .unwrap();
    assert!(near(listed[0].created_at, behind.now()));
    assert!(near(listed[0].last_attempt_at.unwrap(), behind.now()));
    let listed = ahead
        .store
        .list(&DeliveryFilter::account("acme"), 10)
        .unwrap();
    assert!(near(listed[0].created_at, ahead.now()));
}

/// A dialer whose clock runs 2 minutes ahead enqueues in its own transaction: the delivery is
/// due at the database's now, not 2 minutes later.
#[test]
fn a_transactional_enqueue_is_due_at_the_databases_now_whatever_the_dialers_clock() {
    let db = db!();
    let store = db.open();
    let ahead = Timestamp::now() + Duration::from_secs(120);
    let mut delivery = new("call-ahead", "acme", "Reference=1", ahead);
    delivery.next_attempt_at = ahead + Duration::from_secs(5);
    block_on(async {
        let (client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        assert_eq!(
            enqueue_in(&client, &db.schema, &delivery).await.unwrap(),
            Enqueued::Stored
        );
    });
    let now = Timestamp::now();
    let due = store.next_due(now, &[]).unwrap().unwrap();
    assert!(
        near(due, now + Duration::from_secs(5)),
        "due {due}, now {now}"
    );
    let listed = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert!(near(listed[0].created_at, now));
}
