//! The conformance suite, several stores on one schema, and notices.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::*;
use crate::store::Notice;

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
