//! Durability: what a reopened file holds, inserts from many threads, and inserts
//! acknowledged before a SIGKILL.

use super::*;

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
                "store::sqlite::tests::durability::crash_child",
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
