//! The behaviour every store must show, as checks a store's own tests run (feature
//! `test-util`).
//!
//! A dialer that writes its own store runs [`run_all`] from a test, with a function that makes
//! a fresh, empty store for each check; or names single checks. A store that several
//! processes share also runs [`concurrent_claims_never_overlap`] with several stores on the
//! same, empty, backing data.
//!
//! Stores have no clock: every check passes its times explicitly, fixed ones from [`t`]. Each
//! panics, with the failed assertion, when the store does not behave.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")] {
//! use std::cell::Cell;
//!
//! use call_result_webhook::SqliteStore;
//! use call_result_webhook::store::conformance;
//!
//! // In a store's test: a fresh, empty store for each check.
//! let dir = std::env::temp_dir().join("outbox-conformance");
//! std::fs::create_dir_all(&dir).unwrap();
//! let made = Cell::new(0);
//! conformance::run_all(&|| {
//!     made.set(made.get() + 1);
//!     SqliteStore::open(dir.join(format!("{}.db", made.get()))).unwrap()
//! });
//! # }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};

use crate::encoding::Encoding;
use crate::error::Error;
use crate::ids::{AccountId, DeliveryId};
use crate::request::EncodedBody;
use crate::store::{
    AttemptRecord, Claim, ClaimRequest, ClaimToken, DeliveryFilter, DeliveryState, NewDelivery,
    NextStep, Outbox, Settings,
};

mod settings;

pub use settings::{
    a_pause_holds_claims_until_saved_unpaused, a_stale_account_save_writes_nothing,
    a_stale_health_save_writes_nothing, accounts_page_by_id_and_save_in_batches,
    settings_and_health_are_replaced, settings_changes_follow_the_cursor,
};

/// The lease of every claim the checks make, but the concurrent one.
const LEASE: Duration = Duration::from_secs(60);

/// The fixed time `secs` seconds after the checks' epoch (2023-11-14T22:13:20Z).
pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("a time within jiff's range")
}

/// `n` new deliveries of one account and campaign, with ids `msg_{account}_{campaign}_{i}`,
/// created and due one second apart from `t(0)`.
pub fn new_deliveries(account: &str, campaign: &str, n: usize) -> Vec<NewDelivery> {
    (0..n)
        .map(|i| NewDelivery {
            id: DeliveryId::new(format!("msg_{account}_{campaign}_{i}"))
                .expect("a valid delivery id"),
            account: account.into(),
            campaign: campaign.into(),
            body: EncodedBody::from_parts(
                Bytes::from(format!("Reference={i}&ResultNotes=%E2%9C%93")),
                Encoding::Form,
            ),
            created_at: t(i as i64),
            next_attempt_at: t(i as i64),
        })
        .collect()
}

/// Runs every check, each on a fresh store made by `make`.
///
/// `make` must return an empty store each time; [`concurrent_claims_never_overlap`] runs with
/// one store here.
pub fn run_all<S: Outbox + Settings>(make: &dyn Fn() -> S) {
    claim_order_limit_and_skip(&make());
    a_claim_holds_until_its_lease_runs_out(&make());
    an_outdated_token_is_fenced_off(&make());
    a_released_claim_is_claimable_at_once(&make());
    an_extended_lease_holds_past_its_old_end(&make());
    next_due_leaves_out_leases_and_skipped_accounts(&make());
    has_pending_follows_deliveries(&make());
    outcomes_move_deliveries(&make());
    replay_keeps_id_and_bytes(&make());
    remove_and_filters(&make());
    insert_is_all_or_nothing(&make());
    unknown_delivery_is_an_error(&make());
    attempts_recorded_together_answer_each(&make());
    the_same_id_twice_is_one_delivery(&make());
    a_delivered_id_is_not_sent_again(&make());
    a_delivered_id_reused_for_another_call_result_is_refused(&make());
    a_claim_takes_at_most_the_room_of_each_account(&make());
    a_claim_finds_the_rest_past_a_skipped_backlog(&make());
    a_conflicting_id_is_refused_and_nothing_stored(&make());
    a_repeat_beside_a_new_id_stores_the_new_one(&make());
    settings_and_health_are_replaced(&make());
    settings_changes_follow_the_cursor(&make());
    a_stale_account_save_writes_nothing(&make());
    a_stale_health_save_writes_nothing(&make());
    a_pause_holds_claims_until_saved_unpaused(&make());
    accounts_page_by_id_and_save_in_batches(&make());
    let store = make();
    concurrent_claims_never_overlap(&[&store]);
}

fn record(at: Timestamp, status: Option<u16>, next: NextStep) -> AttemptRecord {
    AttemptRecord {
        at,
        status,
        error: status.filter(|s| *s >= 300).map(|s| format!("HTTP {s}")),
        next,
    }
}

/// Claims at most `limit` deliveries due at `now` with the checks' lease, leaving out `skip`.
fn claim<S: Outbox + ?Sized>(
    store: &S,
    now: Timestamp,
    limit: usize,
    skip: &[AccountId],
) -> Vec<Claim> {
    store
        .claim(&ClaimRequest {
            now,
            limit,
            lease: LEASE,
            skip,
            ..ClaimRequest::default()
        })
        .expect("claim")
}

/// Records one outcome under `claim`'s token.
fn record_one<S: Outbox + ?Sized>(
    store: &S,
    claim: &Claim,
    record: AttemptRecord,
) -> crate::error::Result<()> {
    let id = claim.delivery.id.clone();
    let mut answers = store.record_attempts(&[(id, claim.token, record)]);
    assert_eq!(answers.len(), 1, "one answer per outcome");
    answers.remove(0)
}

fn ids(claims: &[Claim]) -> Vec<&str> {
    claims.iter().map(|c| c.delivery.id.as_str()).collect()
}

/// `d`, due at another time.
fn due_at(d: &NewDelivery, at: Timestamp) -> NewDelivery {
    NewDelivery {
        next_attempt_at: at,
        ..d.clone()
    }
}

/// `d` with another body under the same id.
fn other_body(d: &NewDelivery) -> NewDelivery {
    NewDelivery {
        body: EncodedBody::from_parts(Bytes::from_static(b"Reference=other"), Encoding::Form),
        ..d.clone()
    }
}

fn pending_and_delivered<S: Outbox + ?Sized>(store: &S, account: &str) -> (u64, u64) {
    let stats = store.stats(&account.into(), None).expect("stats");
    (stats.pending, stats.delivered)
}

/// A claim takes the earliest due deliveries over every account, at most `limit`, leaving out
/// skipped accounts; each with a distinct token and a lease until `now + lease`.
pub fn claim_order_limit_and_skip<S: Outbox + ?Sized>(store: &S) {
    let mut batch = new_deliveries("acme", "c1", 5);
    batch.reverse();
    store.insert(&batch).unwrap();
    let other = new_deliveries("other", "c1", 1);
    let half_past_one = t(1) + SignedDuration::from_millis(500);
    store.insert(&[due_at(&other[0], half_past_one)]).unwrap();
    let acme: AccountId = "acme".into();

    assert!(claim(store, t(2), 0, &[]).is_empty(), "a limit of 0");
    let claims = claim(store, t(2), 10, &[]);
    assert_eq!(
        ids(&claims),
        [
            "msg_acme_c1_0",
            "msg_acme_c1_1",
            "msg_other_c1_0",
            "msg_acme_c1_2"
        ]
    );
    for c in &claims {
        assert_eq!(c.lease_until, t(62));
        assert_eq!(c.delivery.attempts, 0);
        assert_eq!(c.delivery.state, DeliveryState::Pending);
    }
    assert_eq!(claims[0].delivery.body, batch[4].body);
    let mut tokens: Vec<ClaimToken> = claims.iter().map(|c| c.token).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), claims.len(), "distinct tokens");

    assert!(
        claim(store, t(2), 10, &[]).is_empty(),
        "all due are claimed"
    );
    assert_eq!(ids(&claim(store, t(10), 1, &[])), ["msg_acme_c1_3"]);
    assert!(
        claim(store, t(10), 10, std::slice::from_ref(&acme)).is_empty(),
        "other's one is claimed, acme is skipped"
    );
    let held: Vec<_> = claims
        .iter()
        .map(|c| (c.delivery.id.clone(), c.token))
        .collect();
    store.release(&held).unwrap();
    assert_eq!(
        ids(&claim(store, t(10), 10, std::slice::from_ref(&acme))),
        ["msg_other_c1_0"]
    );
    assert_eq!(
        ids(&claim(store, t(10), 10, &["other".into(), "nobody".into()])),
        [
            "msg_acme_c1_0",
            "msg_acme_c1_1",
            "msg_acme_c1_2",
            "msg_acme_c1_4"
        ]
    );
}

/// A claimed delivery is not claimed again while its lease holds (`lease_until > now`); from
/// the lease's end it is, with a greater token.
pub fn a_claim_holds_until_its_lease_runs_out<S: Outbox + ?Sized>(store: &S) {
    store.insert(&new_deliveries("acme", "c1", 1)).unwrap();
    let first = claim(store, t(0), 10, &[]);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].lease_until, t(60));
    assert!(claim(store, t(30), 10, &[]).is_empty());
    assert!(claim(store, t(59), 10, &[]).is_empty());
    let second = claim(store, t(60), 10, &[]);
    assert_eq!(ids(&second), ids(&first));
    assert!(second[0].token > first[0].token, "a greater token");
    assert_eq!(second[0].lease_until, t(120));
    assert!(
        claim(store, t(61), 10, &[]).is_empty(),
        "the new lease holds"
    );
}

/// An outcome under a token that is no longer current (the lease ran out and the delivery was
/// claimed again, or the outcome was recorded already) is refused with
/// [`Error::LeaseLost`] and changes nothing; the current claim's outcome is recorded.
pub fn an_outdated_token_is_fenced_off<S: Outbox + ?Sized>(store: &S) {
    store.insert(&new_deliveries("acme", "c1", 1)).unwrap();
    let old = claim(store, t(0), 10, &[]).remove(0);
    let new = claim(store, t(61), 10, &[]).remove(0);
    let err = record_one(store, &old, record(t(62), Some(204), NextStep::Delivered)).unwrap_err();
    assert!(
        matches!(&err, Error::LeaseLost { id } if id == old.delivery.id.as_str()),
        "{err:?}"
    );
    let kept = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].attempts, kept[0].state, kept[0].last_status),
        (0, DeliveryState::Pending, None)
    );
    assert_eq!(pending_and_delivered(store, "acme"), (1, 0));

    record_one(
        store,
        &new,
        record(t(63), Some(503), NextStep::RetryAt(t(100))),
    )
    .unwrap();
    let retried = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert_eq!(
        (retried[0].attempts, retried[0].last_status),
        (1, Some(503))
    );
    // Recorded: the claim is over, its token no longer current.
    let again = record_one(store, &new, record(t(64), Some(204), NextStep::Delivered));
    assert!(matches!(again, Err(Error::LeaseLost { .. })), "{again:?}");
    assert_eq!(pending_and_delivered(store, "acme"), (1, 0));
    let third = claim(store, t(100), 10, &[]).remove(0);
    assert!(third.token > new.token);
    record_one(
        store,
        &third,
        record(t(101), Some(204), NextStep::Delivered),
    )
    .unwrap();
    assert_eq!(pending_and_delivered(store, "acme"), (0, 1));
}

/// A released claim may be claimed again at once; a release under a token that is no longer
/// current is ignored.
pub fn a_released_claim_is_claimable_at_once<S: Outbox + ?Sized>(store: &S) {
    store.insert(&new_deliveries("acme", "c1", 2)).unwrap();
    let first = claim(store, t(1), 10, &[]);
    assert_eq!(first.len(), 2);
    store
        .release(&[(first[0].delivery.id.clone(), first[0].token)])
        .unwrap();
    let again = claim(store, t(2), 10, &[]);
    assert_eq!(ids(&again), [first[0].delivery.id.as_str()]);
    assert!(again[0].token > first[1].token);
    // The old token is no longer current: its release changes nothing.
    store
        .release(&[(first[0].delivery.id.clone(), first[0].token)])
        .unwrap();
    assert!(claim(store, t(3), 10, &[]).is_empty());
    let unknown = DeliveryId::new("msg_missing").unwrap();
    store.release(&[(unknown, again[0].token)]).unwrap();
    store.release(&[]).unwrap();
}

/// [`Outbox::extend_leases`] keeps a claim past its old end, never shortens one, and ignores
/// a token that is no longer current.
pub fn an_extended_lease_holds_past_its_old_end<S: Outbox + ?Sized>(store: &S) {
    store.insert(&new_deliveries("acme", "c1", 2)).unwrap();
    // Both claimed at t(1) until t(61).
    let first = claim(store, t(1), 10, &[]);
    assert_eq!(first.len(), 2);
    let held = (first[0].delivery.id.clone(), first[0].token);
    store
        .extend_leases(std::slice::from_ref(&held), t(200))
        .unwrap();
    // Shortening is not a thing: the lease still ends at t(200).
    store
        .extend_leases(std::slice::from_ref(&held), t(10))
        .unwrap();
    // At t(100) only the other one's lease has run out.
    let at_100 = claim(store, t(100), 10, &[]);
    assert_eq!(ids(&at_100), [first[1].delivery.id.as_str()]);
    // Its old token extends nothing.
    store
        .extend_leases(&[(first[1].delivery.id.clone(), first[1].token)], t(10_000))
        .unwrap();
    let at_201 = claim(store, t(201), 10, &[]);
    let mut got = ids(&at_201);
    got.sort_unstable();
    assert_eq!(
        got,
        [first[0].delivery.id.as_str(), first[1].delivery.id.as_str()]
    );
    store.extend_leases(&[], t(300)).unwrap();
}

/// [`Outbox::next_due`] is the earliest pending delivery, due or not, leaving out live claims
/// and skipped accounts.
pub fn next_due_leaves_out_leases_and_skipped_accounts<S: Outbox + ?Sized>(store: &S) {
    assert_eq!(store.next_due(t(0), &[]).unwrap(), None);
    store.insert(&new_deliveries("acme", "c1", 3)).unwrap();
    let other = new_deliveries("other", "c1", 1);
    store.insert(&[due_at(&other[0], t(5))]).unwrap();
    let (acme, other): (AccountId, AccountId) = ("acme".into(), "other".into());

    assert_eq!(store.next_due(t(0), &[]).unwrap(), Some(t(0)));
    assert_eq!(ids(&claim(store, t(0), 1, &[])), ["msg_acme_c1_0"]);
    assert_eq!(
        store.next_due(t(0), &[]).unwrap(),
        Some(t(1)),
        "not due yet"
    );
    assert_eq!(
        store.next_due(t(0), std::slice::from_ref(&acme)).unwrap(),
        Some(t(5))
    );
    assert_eq!(
        store
            .next_due(t(0), &[acme.clone(), other.clone()])
            .unwrap(),
        None
    );
    assert_eq!(
        claim(store, t(2), 10, std::slice::from_ref(&other)).len(),
        2
    );
    assert_eq!(store.next_due(t(2), &[]).unwrap(), Some(t(5)));
    assert_eq!(
        store.next_due(t(2), std::slice::from_ref(&other)).unwrap(),
        None
    );
    // Once the first lease has run out, its delivery is the earliest again.
    assert_eq!(store.next_due(t(60), &[]).unwrap(), Some(t(0)));
    assert_eq!(
        store.next_due(t(60), std::slice::from_ref(&acme)).unwrap(),
        Some(t(5))
    );
}

/// [`Outbox::has_pending`] says whether any delivery is pending, claimed or not.
pub fn has_pending_follows_deliveries<S: Outbox + ?Sized>(store: &S) {
    assert!(!store.has_pending().unwrap());
    store.insert(&new_deliveries("acme", "c1", 1)).unwrap();
    assert!(store.has_pending().unwrap());
    let c = claim(store, t(0), 10, &[]).remove(0);
    assert!(store.has_pending().unwrap(), "a claimed one is pending");
    record_one(store, &c, record(t(1), Some(404), NextStep::Failed)).unwrap();
    assert!(!store.has_pending().unwrap(), "a failed one is not");
    store
        .requeue_failed(&DeliveryFilter::account("acme"), t(2))
        .unwrap();
    assert!(store.has_pending().unwrap());
    let c = claim(store, t(2), 10, &[]).remove(0);
    record_one(store, &c, record(t(3), Some(204), NextStep::Delivered)).unwrap();
    assert!(!store.has_pending().unwrap());
}

/// Outcomes move deliveries on: delivered (counted), retried later (claimable then, with the
/// attempt counted), failed (kept, listed).
pub fn outcomes_move_deliveries<S: Outbox + ?Sized>(store: &S) {
    store.insert(&new_deliveries("acme", "c1", 3)).unwrap();
    let acme: AccountId = "acme".into();
    let [a, b, c] = &claim(store, t(5), 10, &[])[..] else {
        panic!("three due");
    };
    record_one(store, a, record(t(10), Some(204), NextStep::Delivered)).unwrap();
    record_one(
        store,
        b,
        record(t(11), Some(503), NextStep::RetryAt(t(100))),
    )
    .unwrap();
    record_one(store, c, record(t(12), Some(404), NextStep::Failed)).unwrap();

    assert!(claim(store, t(99), 10, &[]).is_empty());
    assert_eq!(store.next_due(t(99), &[]).unwrap(), Some(t(100)));
    let retried = claim(store, t(100), 10, &[]);
    assert_eq!(ids(&retried), [b.delivery.id.as_str()]);
    let r = &retried[0].delivery;
    assert_eq!((r.attempts, r.last_status), (1, Some(503)));
    assert_eq!(r.last_attempt_at, Some(t(11)));
    assert_eq!(r.body, b.delivery.body);

    let stats = store.stats(&acme, None).unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.failed), (1, 1, 1));
    assert_eq!(stats.last_success_at, Some(t(10)));
    assert_eq!(stats.last_failure_at, Some(t(12)));
    assert_eq!(stats.last_failure_reason.as_deref(), Some("HTTP 404"));

    let failed = store
        .list(
            &DeliveryFilter::account("acme").state(DeliveryState::Failed),
            10,
        )
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, c.delivery.id);
    assert_eq!(failed[0].attempts, 1);
    assert_eq!(failed[0].last_error.as_deref(), Some("HTTP 404"));

    record_one(
        store,
        &retried[0],
        record(t(101), Some(200), NextStep::Delivered),
    )
    .unwrap();
    let stats = store.stats(&acme, None).unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.failed), (0, 2, 1));
    assert_eq!(store.next_due(t(101), &[]).unwrap(), None);
}

/// A replay puts failed deliveries back to pending, due at its `now`, with their ids and
/// bytes; only the filter's.
pub fn replay_keeps_id_and_bytes<S: Outbox + ?Sized>(store: &S) {
    let batch = new_deliveries("acme", "c1", 2);
    store.insert(&batch).unwrap();
    store.insert(&new_deliveries("acme", "c2", 1)).unwrap();
    for c in claim(store, t(5), 10, &[]) {
        record_one(store, &c, record(t(6), Some(404), NextStep::Failed)).unwrap();
    }
    let n = store
        .requeue_failed(&DeliveryFilter::account("acme").campaign("c1"), t(50))
        .unwrap();
    assert_eq!(n, 2);
    assert!(claim(store, t(49), 10, &[]).is_empty(), "due at the replay");
    let due = claim(store, t(50), 10, &[]);
    assert_eq!(due.len(), 2);
    for (c, original) in due.iter().zip(&batch) {
        assert_eq!(c.delivery.id, original.id);
        assert_eq!(c.delivery.body, original.body);
        assert_eq!(c.delivery.state, DeliveryState::Pending);
    }
    let c2 = store.stats(&"acme".into(), Some(&"c2".into())).unwrap();
    assert_eq!((c2.pending, c2.failed), (0, 1));
    // Replaying one by id, then nothing left to replay.
    let one = DeliveryFilter::account("acme").id(DeliveryId::new("msg_acme_c2_0").unwrap());
    assert_eq!(store.requeue_failed(&one, t(60)).unwrap(), 1);
    assert_eq!(store.requeue_failed(&one, t(60)).unwrap(), 0);
    // Another account's filter never reaches these.
    assert_eq!(
        store
            .requeue_failed(&DeliveryFilter::account("other"), t(60))
            .unwrap(),
        0
    );
}

/// Listing honours its limit and filter; removing takes only the filter's deliveries.
pub fn remove_and_filters<S: Outbox + ?Sized>(store: &S) {
    store.insert(&new_deliveries("acme", "c1", 2)).unwrap();
    store.insert(&new_deliveries("acme", "c2", 2)).unwrap();
    let listed = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(
        store
            .list(&DeliveryFilter::account("acme"), 3)
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .remove(&DeliveryFilter::account("acme").campaign("c2"))
            .unwrap(),
        2
    );
    let stats = store.stats(&"acme".into(), None).unwrap();
    assert_eq!(stats.pending, 2);
    let left = claim(store, t(100), 10, &[]);
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|c| c.delivery.campaign == "c1".into()));
}

/// A batch with one bad element stores nothing.
pub fn insert_is_all_or_nothing<S: Outbox + ?Sized>(store: &S) {
    let batch = new_deliveries("acme", "c1", 2);
    store.insert(&batch[..1]).unwrap();
    // A fresh delivery beside one that conflicts with what is stored: neither is stored.
    assert!(
        store
            .insert(&[batch[1].clone(), other_body(&batch[0])])
            .is_err()
    );
    assert_eq!(store.stats(&"acme".into(), None).unwrap().pending, 1);
}

/// An outcome for a delivery the store does not hold (never inserted, or removed while
/// claimed) is [`Error::UnknownDelivery`].
pub fn unknown_delivery_is_an_error<S: Outbox + ?Sized>(store: &S) {
    let id = DeliveryId::new("msg_missing").unwrap();
    let answers = store.record_attempts(&[(
        id,
        ClaimToken::new(1),
        record(t(0), Some(200), NextStep::Delivered),
    )]);
    assert!(
        matches!(answers[..], [Err(Error::UnknownDelivery(_))]),
        "{answers:?}"
    );

    store.insert(&new_deliveries("acme", "c1", 1)).unwrap();
    let c = claim(store, t(0), 10, &[]).remove(0);
    assert_eq!(store.remove(&DeliveryFilter::account("acme")).unwrap(), 1);
    let err = record_one(store, &c, record(t(1), Some(200), NextStep::Delivered)).unwrap_err();
    assert!(matches!(err, Error::UnknownDelivery(_)), "{err:?}");
    assert_eq!(pending_and_delivered(store, "acme"), (0, 0));
    assert!(!store.has_pending().unwrap());
}

/// Outcomes recorded together are answered one by one, in order: one failing leaves the
/// others recorded.
pub fn attempts_recorded_together_answer_each<S: Outbox + ?Sized>(store: &S) {
    store.insert(&new_deliveries("acme", "c1", 3)).unwrap();
    let acme: AccountId = "acme".into();
    let [a, b, c] = &claim(store, t(5), 10, &[])[..] else {
        panic!("three due");
    };
    let missing = DeliveryId::new("msg_missing").unwrap();
    let answers = store.record_attempts(&[
        (
            a.delivery.id.clone(),
            a.token,
            record(t(10), Some(204), NextStep::Delivered),
        ),
        (
            missing,
            a.token,
            record(t(10), Some(204), NextStep::Delivered),
        ),
        (
            b.delivery.id.clone(),
            b.token,
            record(t(11), Some(503), NextStep::RetryAt(t(100))),
        ),
        (
            c.delivery.id.clone(),
            c.token,
            record(t(12), Some(404), NextStep::Failed),
        ),
    ]);
    assert_eq!(answers.len(), 4);
    assert!(
        answers[0].is_ok() && answers[2].is_ok() && answers[3].is_ok(),
        "{answers:?}"
    );
    assert!(matches!(answers[1], Err(Error::UnknownDelivery(_))));
    let stats = store.stats(&acme, None).unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.failed), (1, 1, 1));
    assert_eq!(
        ids(&claim(store, t(100), 10, &[])),
        [b.delivery.id.as_str()]
    );
    assert!(store.record_attempts(&[]).is_empty());
}

/// A resubmission under a stored id, later or twice in one batch, is one delivery; a failed
/// one is not replayed by it.
pub fn the_same_id_twice_is_one_delivery<S: Outbox + ?Sized>(store: &S) {
    let batch = new_deliveries("acme", "c1", 1);
    store.insert(&batch).unwrap();
    // A retried submit, later and with its own times: the stored one stands.
    let retried = NewDelivery {
        created_at: t(30),
        next_attempt_at: t(30),
        ..batch[0].clone()
    };
    store.insert(std::slice::from_ref(&retried)).unwrap();
    // The same id twice in one batch counts once too.
    store.insert(&[retried.clone(), retried]).unwrap();
    assert_eq!(pending_and_delivered(store, "acme"), (1, 0));
    let due = claim(store, t(100), 10, &[]);
    assert_eq!(due.len(), 1);
    assert_eq!(
        (&due[0].delivery.id, due[0].delivery.created_at),
        (&batch[0].id, t(0))
    );
    assert_eq!(due[0].delivery.body, batch[0].body);
    let fresh = new_deliveries("acme", "c2", 1);
    store.insert(&[fresh[0].clone(), fresh[0].clone()]).unwrap();
    assert_eq!(pending_and_delivered(store, "acme"), (2, 0));

    // A failed one is left failed: a resubmission does not replay it.
    record_one(store, &due[0], record(t(40), Some(404), NextStep::Failed)).unwrap();
    store.insert(&batch).unwrap();
    let stats = store.stats(&"acme".into(), None).unwrap();
    assert_eq!((stats.pending, stats.failed), (1, 1));
}

/// A delivered id is not stored again within the retention, whatever the resubmission carries.
pub fn a_delivered_id_is_not_sent_again<S: Outbox + ?Sized>(store: &S) {
    let batch = new_deliveries("acme", "c1", 1);
    store.insert(&batch).unwrap();
    let c = claim(store, t(0), 10, &[]).remove(0);
    record_one(store, &c, record(t(10), Some(204), NextStep::Delivered)).unwrap();
    store.insert(&batch).unwrap();
    // Even a later submit under the id, within the retention, is not sent again.
    let retried = NewDelivery {
        created_at: t(3_600),
        next_attempt_at: t(3_600),
        ..batch[0].clone()
    };
    store.insert(&[retried]).unwrap();
    assert_eq!(pending_and_delivered(store, "acme"), (0, 1));
    assert!(claim(store, t(1_000_000), 10, &[]).is_empty());
    assert_eq!(store.next_due(t(1_000_000), &[]).unwrap(), None);
    assert!(!store.has_pending().unwrap());
    assert!(
        store
            .list(&DeliveryFilter::account("acme"), 10)
            .unwrap()
            .is_empty()
    );
}

/// An id delivered within the retention and submitted again for a different call result is
/// refused with [`Error::IdConflict`] (never silently dropped), and nothing of its batch is
/// stored; the same call result again is still a no-op.
pub fn a_delivered_id_reused_for_another_call_result_is_refused<S: Outbox + ?Sized>(store: &S) {
    let batch = new_deliveries("acme", "c1", 1);
    store.insert(&batch).unwrap();
    let c = claim(store, t(0), 10, &[]).remove(0);
    record_one(store, &c, record(t(10), Some(204), NextStep::Delivered)).unwrap();
    let fresh = new_deliveries("acme", "c2", 1);
    for reused in [
        other_body(&batch[0]),
        NewDelivery {
            campaign: "c9".into(),
            ..batch[0].clone()
        },
        NewDelivery {
            account: "other".into(),
            ..batch[0].clone()
        },
    ] {
        let refused = store.insert(&[fresh[0].clone(), reused.clone()]);
        assert!(
            matches!(&refused, Err(Error::IdConflict { id }) if id == reused.id.as_str()),
            "{refused:?}"
        );
        // Alone too (a store may take single submits another way).
        let refused = store.insert(std::slice::from_ref(&reused));
        assert!(
            matches!(&refused, Err(Error::IdConflict { id }) if id == reused.id.as_str()),
            "{refused:?}"
        );
    }
    assert_eq!(pending_and_delivered(store, "acme"), (0, 1));
    store.insert(&batch).unwrap();
    assert_eq!(pending_and_delivered(store, "acme"), (0, 1));
    assert!(!store.has_pending().unwrap());
}

/// A claim takes at most [`ClaimRequest::room_for`] of each account: the per-account bound
/// less those in flight; the other accounts' deliveries fill the rest, earliest due first.
pub fn a_claim_takes_at_most_the_room_of_each_account<S: Outbox + ?Sized>(store: &S) {
    store.insert(&new_deliveries("big", "c", 20)).unwrap();
    store.insert(&new_deliveries("busy", "c", 5)).unwrap();
    store.insert(&new_deliveries("small", "c", 3)).unwrap();
    let in_flight = [(AccountId::new("busy"), 2)];
    let claims = store
        .claim(&ClaimRequest {
            now: t(100),
            limit: 64,
            lease: LEASE,
            per_account: Some(4),
            in_flight: &in_flight,
            ..ClaimRequest::default()
        })
        .expect("claim");
    let mut per: HashMap<&str, usize> = HashMap::new();
    for c in &claims {
        *per.entry(c.delivery.account.as_str()).or_default() += 1;
    }
    assert_eq!(per.get("big"), Some(&4), "{per:?}");
    assert_eq!(per.get("busy"), Some(&2), "{per:?}");
    assert_eq!(per.get("small"), Some(&3), "{per:?}");
    // Each account's earliest.
    let mut big: Vec<&str> = claims
        .iter()
        .filter(|c| c.delivery.account.as_str() == "big")
        .map(|c| c.delivery.id.as_str())
        .collect();
    big.sort_unstable();
    assert_eq!(
        big,
        ["msg_big_c_0", "msg_big_c_1", "msg_big_c_2", "msg_big_c_3"]
    );
}

/// Deliveries due after a long backlog of an account the claim leaves out (at its bound, or
/// held) are claimed, earliest first, and `next_due` finds them: the backlog hides nothing.
/// (How fast is the store's own business; the claim's cost should not grow with the
/// backlog left out.)
pub fn a_claim_finds_the_rest_past_a_skipped_backlog<S: Outbox + ?Sized>(store: &S) {
    let backlog = new_deliveries("held", "c", 600);
    for chunk in backlog.chunks(200) {
        store.insert(chunk).unwrap();
    }
    let later: Vec<NewDelivery> = new_deliveries("open", "c", 3)
        .iter()
        .enumerate()
        .map(|(i, d)| due_at(d, t(1_000 + i as i64)))
        .collect();
    store.insert(&later).unwrap();
    let skip = [AccountId::new("held")];
    assert_eq!(store.next_due(t(0), &skip).unwrap(), Some(t(1_000)));
    let claims = claim(store, t(2_000), 2, &skip);
    assert_eq!(ids(&claims), ["msg_open_c_0", "msg_open_c_1"]);
    assert_eq!(store.next_due(t(2_000), &skip).unwrap(), Some(t(1_002)));
    let claims = claim(store, t(2_000), 10, &skip);
    assert_eq!(ids(&claims), ["msg_open_c_2"]);
    assert_eq!(store.next_due(t(2_000), &skip).unwrap(), None);
    assert!(claim(store, t(2_000), 10, &skip).is_empty());
    // Without the skip, the held account's earliest come first.
    let claims = claim(store, t(2_000), 2, &[]);
    assert_eq!(ids(&claims), ["msg_held_c_0", "msg_held_c_1"]);
}

/// An id stored for another call result (account, campaign, body bytes or encoding) is
/// refused with [`Error::IdConflict`], and nothing of the batch is stored.
pub fn a_conflicting_id_is_refused_and_nothing_stored<S: Outbox + ?Sized>(store: &S) {
    let stored = new_deliveries("acme", "c1", 1);
    store.insert(&stored).unwrap();
    let fresh = new_deliveries("acme", "c2", 1);
    let conflicting = [
        other_body(&stored[0]),
        NewDelivery {
            campaign: "c9".into(),
            ..stored[0].clone()
        },
        NewDelivery {
            account: "other".into(),
            ..stored[0].clone()
        },
        NewDelivery {
            body: EncodedBody::from_parts(stored[0].body.bytes().clone(), Encoding::Json),
            ..stored[0].clone()
        },
    ];
    for conflict in conflicting {
        let err = store
            .insert(&[fresh[0].clone(), conflict.clone()])
            .unwrap_err();
        assert!(
            matches!(&err, Error::IdConflict { id } if id == stored[0].id.as_str()),
            "{err:?}"
        );
        assert!(matches!(
            store.insert(&[conflict.clone(), fresh[0].clone()]),
            Err(Error::IdConflict { .. })
        ));
    }
    // Two call results under one new id in one batch.
    assert!(matches!(
        store.insert(&[fresh[0].clone(), other_body(&fresh[0])]),
        Err(Error::IdConflict { .. })
    ));
    assert_eq!(pending_and_delivered(store, "acme"), (1, 0));
    assert_eq!(pending_and_delivered(store, "other"), (0, 0));
    let kept = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (&kept[0].id, &kept[0].body),
        (&stored[0].id, &stored[0].body)
    );
    assert!(
        store
            .list(&DeliveryFilter::account("other"), 10)
            .unwrap()
            .is_empty()
    );
}

/// Repeats (delivered or pending) beside a new id: the new one is stored, the repeats change
/// nothing.
pub fn a_repeat_beside_a_new_id_stores_the_new_one<S: Outbox + ?Sized>(store: &S) {
    let batch = new_deliveries("acme", "c1", 3);
    store.insert(&batch[..1]).unwrap();
    let c = claim(store, t(0), 10, &[]).remove(0);
    record_one(store, &c, record(t(5), Some(200), NextStep::Delivered)).unwrap();
    store.insert(&batch[1..2]).unwrap();
    // A delivered repeat, a pending repeat and a new one.
    store.insert(&batch).unwrap();
    assert_eq!(pending_and_delivered(store, "acme"), (2, 1));
    assert_eq!(
        ids(&claim(store, t(100), 10, &[])),
        [batch[1].id.as_str(), batch[2].id.as_str()]
    );
}

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
