//! The checks of processes that share a store: claims and saves at once, a save through one
//! process seen by every other, and notices.

use std::collections::HashMap;
use std::sync::{Arc, Barrier, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ids::{AccountId, DeliveryId};
use crate::store::{
    AccountSave, Claim, ClaimRequest, DeliveryFilter, NextStep, Notice, NoticeSink, Outbox,
    SaveOutcome, Settings, Store,
};

use super::settings::{saved, versioned};
use super::{claim, ids, new_deliveries, record, record_one, t};

/// Eight threads claim from `stores` (thread `i` from `stores[i % stores.len()]`), with a
/// lease longer than the check, until nothing is left: every delivery is claimed exactly
/// once.
///
/// `stores` are stores on the same backing data, which must hold no deliveries: one store for
/// a store used by one process, several (one per process) for a store a fleet shares.
///
/// # Panics
///
/// If `stores` is empty, or a delivery is claimed twice or never.
pub fn concurrent_claims_never_overlap<S: Outbox + ?Sized>(stores: &[&S]) {
    const THREADS: usize = 8;
    const ACCOUNTS: usize = 4;
    const EACH: usize = 60;
    assert!(!stores.is_empty(), "at least one store");
    let now = t(1_000);
    for account in 0..ACCOUNTS {
        stores[0]
            .insert(&new_deliveries(&format!("concurrent{account}"), "c1", EACH))
            .unwrap();
    }
    let claimed: Vec<Vec<String>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                let store = stores[i % stores.len()];
                s.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let claims = store
                            .claim(&ClaimRequest {
                                now,
                                limit: 1 + i % 4,
                                lease: Duration::from_secs(24 * 3600),
                                skip: &[],
                                ..ClaimRequest::default()
                            })
                            .expect("claim");
                        if claims.is_empty() {
                            // Another thread may hold what this one read: ask again until
                            // nothing unclaimed is left.
                            if store.next_due(now, &[]).expect("next_due").is_none() {
                                return mine;
                            }
                            std::thread::yield_now();
                        }
                        mine.extend(claims.into_iter().map(|c| c.delivery.id.to_string()));
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a claiming thread panicked"))
            .collect()
    });
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in claimed.iter().flatten() {
        *counts.entry(id).or_insert(0) += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    assert_eq!(counts.len(), ACCOUNTS * EACH, "every delivery claimed");
    for store in stores {
        assert!(claim(*store, now, 100, &[]).is_empty());
    }
}

/// Eight threads save one record at once, each through `stores[i % stores.len()]` and
/// expecting the version they all read: exactly one save is [`SaveOutcome::Saved`], every
/// other [`SaveOutcome::Stale`], and the record holds the winner's JSON at the winner's
/// version. So for a record none of them found (`expected: None`), for an account's settings
/// and for an endpoint's health, over several rounds.
///
/// `stores` are stores on the same backing data, as for [`concurrent_claims_never_overlap`].
///
/// # Panics
///
/// If `stores` is empty, or two saves at one version both win, or none does.
pub fn concurrent_saves_at_one_version_one_wins<S: Settings + ?Sized>(stores: &[&S]) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 5;
    assert!(!stores.is_empty(), "at least one store");
    // Saves `record` from every thread at once, each expecting `expected`; answers the
    // winner's thread and version.
    let race = |save: &(dyn Fn(&S, usize) -> SaveOutcome + Sync)| -> (usize, u64) {
        let start = Barrier::new(THREADS);
        let outcomes: Vec<SaveOutcome> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..THREADS)
                .map(|i| {
                    let (store, start) = (stores[i % stores.len()], &start);
                    s.spawn(move || {
                        start.wait();
                        save(store, i)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a saving thread panicked"))
                .collect()
        });
        let won: Vec<(usize, u64)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                SaveOutcome::Saved { version } => Some((i, *version)),
                SaveOutcome::Stale => None,
            })
            .collect();
        assert_eq!(
            won.len(),
            1,
            "exactly one of {THREADS} saves at one version wins: {outcomes:?}"
        );
        won[0]
    };
    for round in 0..ROUNDS {
        let account = AccountId::new(format!("race{round}"));
        let json = |i: usize| format!(r#"{{"thread":{i}}}"#);
        // Created by one thread only.
        let (first, v1) = race(&|store, i| {
            store
                .save_account(&account, &json(i), None)
                .expect("save_account")
        });
        let stored = stores[0].load_account(&account).unwrap();
        assert_eq!(stored, Some(versioned(&json(first), v1)), "the winner's");
        // Changed at the version all read: one wins.
        let (second, v2) = race(&|store, i| {
            store
                .save_account(&account, &json(i), Some(v1))
                .expect("save_account")
        });
        assert!(v2 > v1);
        let stored = stores[stores.len() - 1].load_account(&account).unwrap();
        assert_eq!(stored, Some(versioned(&json(second), v2)), "the winner's");
        // An endpoint's health, paused by half of them.
        let (third, h1) = race(&|store, i| {
            store
                .save_health(&account, &json(i), i % 2 == 0, None)
                .expect("save_health")
        });
        let (fourth, h2) = race(&|store, i| {
            store
                .save_health(&account, &json(i), i % 2 == 1, Some(h1))
                .expect("save_health")
        });
        assert!(h2 > h1 && h1 > v2);
        for store in stores {
            assert_eq!(
                store.load_health(&account).unwrap(),
                Some(versioned(&json(fourth), h2)),
                "the winner's, not {third}'s"
            );
        }
    }
}

/// A save through one process is read through every other at once: its settings from
/// [`Settings::load_account`] and [`Settings::changes_since`], its pause in every process's
/// claims and `next_due`, and a save against the version it replaced is stale in every
/// process.
///
/// `stores` are stores on the same backing data, as for [`concurrent_claims_never_overlap`];
/// with one store, it checks that store alone.
///
/// # Panics
///
/// If `stores` is empty, or a process does not see another's save.
pub fn a_save_through_one_process_holds_in_every_other<S: Outbox + Settings + ?Sized>(
    stores: &[&S],
) {
    assert!(!stores.is_empty(), "at least one store");
    let (first, last) = (stores[0], stores[stores.len() - 1]);
    let acme = AccountId::new("acme");
    let cursor = last.load_settings().unwrap().cursor;
    let v1 = saved(first.save_account(&acme, r#"{"v":1}"#, None).unwrap());
    for store in stores {
        assert_eq!(
            store.load_account(&acme).unwrap(),
            Some(versioned(r#"{"v":1}"#, v1))
        );
        let changes = store.changes_since(cursor).unwrap();
        assert_eq!(changes.accounts, [versioned(r#"{"v":1}"#, v1)]);
        assert_eq!(
            store.save_account(&acme, r#"{"v":"lost"}"#, None).unwrap(),
            SaveOutcome::Stale,
            "created in another process"
        );
    }
    let v2 = saved(last.save_account(&acme, r#"{"v":2}"#, Some(v1)).unwrap());
    assert_eq!(
        first
            .save_account(&acme, r#"{"v":"lost"}"#, Some(v1))
            .unwrap(),
        SaveOutcome::Stale,
        "saved since in another process"
    );
    assert_eq!(
        first.load_account(&acme).unwrap(),
        Some(versioned(r#"{"v":2}"#, v2))
    );

    // A pause saved through one process holds every process's claims at once.
    first.insert(&new_deliveries("acme", "c1", 1)).unwrap();
    let h1 = saved(last.save_health(&acme, "paused", true, None).unwrap());
    for store in stores {
        assert!(
            claim(*store, t(10), 10, &[]).is_empty(),
            "paused everywhere"
        );
        assert_eq!(store.next_due(t(10), &[]).unwrap(), None);
    }
    saved(
        first
            .save_health(&acme, "resumed", false, Some(h1))
            .unwrap(),
    );
    assert_eq!(ids(&claim(last, t(10), 10, &[])), ["msg_acme_c1_0"]);
}

/// What a subscribed sink heard.
#[derive(Default)]
struct Heard {
    notices: Mutex<Vec<Notice>>,
    arrived: Condvar,
}

impl Heard {
    fn sink(self: &Arc<Self>) -> NoticeSink {
        let heard = Arc::clone(self);
        Arc::new(move |notice| {
            lock(&heard.notices).push(notice);
            heard.arrived.notify_all();
        })
    }

    fn clear(&self) {
        lock(&self.notices).clear();
    }

    /// Waits up to [`NOTICE_WITHIN`] for `want`; answers whether it came.
    fn wait_for(&self, want: &Notice) -> bool {
        let deadline = Instant::now() + NOTICE_WITHIN;
        let mut notices = lock(&self.notices);
        loop {
            if notices.contains(want) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            notices = self
                .arrived
                .wait_timeout(notices, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Four threads prune one old attempts log at once (thread `i` through `stores[i %
/// stores.len()]`), a few rows a call: no call fails or waits on another for long, each
/// attempt is forgotten once, and all go (but the newest, which a store may keep).
///
/// # Panics
///
/// If `stores` is empty, a prune fails, the counts disagree, or the log is not pruned within
/// 60 seconds.
pub fn concurrent_prunes_forget_each_attempt_once<S: Outbox + ?Sized>(stores: &[&S]) {
    const THREADS: usize = 4;
    const ATTEMPTS: usize = 120;
    let first = stores[0];
    first
        .insert(&new_deliveries("acme", "prune", ATTEMPTS))
        .expect("insert");
    let claims = claim(first, t(ATTEMPTS as i64), ATTEMPTS, &[]);
    assert_eq!(claims.len(), ATTEMPTS);
    let outcomes: Vec<_> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let at = t(ATTEMPTS as i64 + i as i64);
            (
                c.delivery.id.clone(),
                c.token,
                record(at, Some(204), NextStep::Delivered),
            )
        })
        .collect();
    for answer in first.record_attempts(&outcomes) {
        answer.expect("recorded");
    }
    let all = crate::store::AttemptQuery::account("acme").limit(ATTEMPTS + 1);
    assert_eq!(first.attempts(&all).expect("read").len(), ATTEMPTS);

    let forgotten = std::sync::atomic::AtomicU64::new(0);
    let start = Barrier::new(THREADS);
    let deadline = Instant::now() + Duration::from_secs(60);
    std::thread::scope(|scope| {
        for i in 0..THREADS {
            let (store, forgotten, start) = (stores[i % stores.len()], &forgotten, &start);
            scope.spawn(move || {
                start.wait();
                let mut idle = 0;
                while idle < 20 && Instant::now() < deadline {
                    let n = store
                        .prune_attempts(t(1_000_000), 7)
                        .expect("a prune beside others");
                    forgotten.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    idle = if n == 0 { idle + 1 } else { 0 };
                }
            });
        }
    });
    let left = first.attempts(&all).expect("read").len();
    let forgotten = forgotten.into_inner() as usize;
    assert!(left <= 1, "{left} attempts left after the prunes");
    assert_eq!(forgotten + left, ATTEMPTS, "each attempt forgotten once");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a notice may take to arrive, at most.
const NOTICE_WITHIN: Duration = Duration::from_secs(10);

/// [`Notices`](crate::store::Notices) say what they do: each store is subscribed, and
/// - one whose [`subscribe`](crate::store::Notices::subscribe) says it announces writes has a
///   [`poll_interval`](crate::store::Notices::poll_interval), and hears [`Notice::DueWork`] after an
///   insert of a new delivery, a release and a replay, and [`Notice::SettingsChanged`] after
///   a save of settings, of health and of a batch of settings, each made through any of
///   `stores` (the first and the last take turns), within 10 seconds;
/// - one that says it announces nothing hears nothing.
///
/// `stores` are stores on the same backing data, as for [`concurrent_claims_never_overlap`];
/// with one store, it hears its own writes.
///
/// # Panics
///
/// If `stores` is empty, or a store does not do what it says.
pub fn notices_follow_writes<S: Store + ?Sized>(stores: &[&S]) {
    assert!(!stores.is_empty(), "at least one store");
    let heard: Vec<(bool, Arc<Heard>)> = stores
        .iter()
        .map(|store| {
            let heard = Arc::new(Heard::default());
            let announces = store.subscribe(heard.sink());
            if announces {
                assert!(
                    store.poll_interval().is_some(),
                    "a store that announces writes polls too (a notice may be lost), \
                     and is followed only if it has a poll interval"
                );
            }
            (announces, heard)
        })
        .collect();
    let (first, last) = (stores[0], stores[stores.len() - 1]);
    // Each write, then the notice every announcing store hears after it.
    let expect = |what: &str, want: Notice, write: &dyn Fn()| {
        // Whatever came before (a store may announce what it missed when it subscribes).
        for (_, h) in &heard {
            h.clear();
        }
        write();
        for (i, (announces, h)) in heard.iter().enumerate() {
            if *announces {
                assert!(
                    h.wait_for(&want),
                    "store {i} heard no {want:?} after {what}"
                );
            }
        }
    };
    let acme = AccountId::new("acme");
    expect("an insert", Notice::DueWork, &|| {
        first.insert(&new_deliveries("acme", "c1", 2)).unwrap();
    });
    let claims = claim(last, t(10), 10, &[]);
    assert_eq!(claims.len(), 2);
    expect("a release", Notice::DueWork, &|| {
        last.release(&[(claims[0].delivery.id.clone(), claims[0].token)])
            .unwrap();
    });
    let failed = store_failed(last, &claims[1]);
    expect("a replay", Notice::DueWork, &|| {
        let n = first
            .requeue_failed(&DeliveryFilter::account("acme").id(failed.clone()), t(20))
            .unwrap();
        assert_eq!(n, 1);
    });
    expect("a save of settings", Notice::SettingsChanged, &|| {
        saved(last.save_account(&acme, r#"{"v":1}"#, None).unwrap());
    });
    expect("a save of health", Notice::SettingsChanged, &|| {
        saved(first.save_health(&acme, "h", false, None).unwrap());
    });
    expect("a batch of saves", Notice::SettingsChanged, &|| {
        let other = AccountId::new("other");
        let outcomes = last
            .save_accounts(&[AccountSave {
                account: &other,
                settings_json: r#"{"v":2}"#,
                expected: None,
            }])
            .unwrap();
        assert!(matches!(outcomes[..], [SaveOutcome::Saved { .. }]));
    });
    // A store that announces nothing heard nothing, all along.
    std::thread::sleep(Duration::from_millis(50));
    for (i, (announces, h)) in heard.iter().enumerate() {
        if !*announces {
            let notices = lock(&h.notices);
            assert!(
                notices.is_empty(),
                "store {i} said it announces nothing, and announced {notices:?}"
            );
        }
    }
}

/// Records `claim`'s attempt as failed for good; answers its id.
fn store_failed<S: Outbox + ?Sized>(store: &S, claim: &Claim) -> DeliveryId {
    record_one(store, claim, record(t(11), Some(404), NextStep::Failed)).unwrap();
    claim.delivery.id.clone()
}
