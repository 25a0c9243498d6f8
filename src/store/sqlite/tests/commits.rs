//! Group commit: the suite in both commit modes, writes sharing commits, a failing write
//! alone in its batch, and the WAL's limit.

use super::*;

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
                duration: std::time::Duration::from_millis(5),
                answer: String::new(),
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
