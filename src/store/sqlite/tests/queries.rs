//! Queries: pruning delivered ids, the plans of the hot queries, and paging claims.

use super::*;

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

/// The attempts log's rows are written apart from the outcomes, a moment later: without any
/// read within `FLUSH_AFTER`, at once for a read, and at the latest when the store closes; and
/// they are read back after a restart.
#[test]
fn the_attempts_log_is_written_a_moment_after_the_outcomes_and_kept_across_a_restart() {
    use super::super::log::FLUSH_AFTER;
    use crate::store::AttemptQuery;

    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let rows_in_file = || -> i64 {
        Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
            .unwrap()
    };
    let store = SqliteStore::open(&path).unwrap();
    let batch = new_deliveries("acme", "c1", 3);
    store.insert(&batch).unwrap();
    store
        .record_attempt(&batch[0].id, &attempt(t(10), 204, NextStep::Delivered))
        .unwrap();
    // Written within FLUSH_AFTER (and a margin for a loaded machine), with no read asking.
    let deadline = Instant::now() + FLUSH_AFTER * 40;
    while rows_in_file() < 1 {
        assert!(Instant::now() < deadline, "the log's row was never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A read writes what is held first.
    store
        .record_attempt(&batch[1].id, &attempt(t(11), 503, NextStep::RetryAt(t(99))))
        .unwrap();
    assert_eq!(
        store
            .attempts(&AttemptQuery::account("acme"))
            .unwrap()
            .len(),
        2
    );
    assert_eq!(rows_in_file(), 2);
    // Closing writes what is held.
    store
        .record_attempt(&batch[2].id, &attempt(t(12), 404, NextStep::Failed))
        .unwrap();
    drop(store);
    assert_eq!(rows_in_file(), 3);
    let store = SqliteStore::open(&path).unwrap();
    let log = store.attempts(&AttemptQuery::account("acme")).unwrap();
    let statuses: Vec<Option<u16>> = log.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(404), Some(503), Some(204)]);
}
