//! The checks of inserts: all or nothing, idempotent on the id, conflicts refused, a full
//! store, and the retention of delivered ids.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

use crate::encoding::{EncodedBody, Encoding};
use crate::error::Error;
use crate::ids::DeliveryId;
use crate::limits::DELIVERED_ID_RETENTION;
use crate::store::{DeliveryFilter, NewDelivery, NextStep, Outbox};

use super::{claim, ids, new_deliveries, other_body, pending_and_delivered, record, record_one, t};

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

/// A store made to hold at most `max_pending` pending deliveries (2 or more) refuses an
/// insert past them with [`Error::StoreFull`], naming the limit, and stores nothing of the
/// batch; repeats take no room; every account's deliveries count; a delivery that leaves
/// pending (delivered or failed) gives its place back.
///
/// # Panics
///
/// If `max_pending` is under 2, or the store does not behave.
pub fn a_full_store_refuses_new_deliveries<S: Outbox + ?Sized>(store: &S, max_pending: usize) {
    assert!(max_pending >= 2, "a check of a full store needs room for 2");
    let full = |result: crate::error::Result<()>| {
        assert!(
            matches!(result, Err(Error::StoreFull { max_pending: m }) if m == max_pending),
            "StoreFull {{ max_pending: {max_pending} }} expected, got {result:?}"
        );
    };
    let pending = |account: &str| store.stats(&account.into(), None).expect("stats").pending;
    let batch = new_deliveries("acme", "c1", max_pending + 2);
    let m = max_pending;
    store.insert(&batch[..m - 1]).unwrap();
    // One place left: a batch of two new ones takes none of it.
    full(store.insert(&batch[m - 1..m + 1]));
    assert_eq!(
        pending("acme"),
        (m - 1) as u64,
        "nothing of a refused batch"
    );
    store.insert(&batch[m - 1..m]).unwrap();
    assert_eq!(pending("acme"), m as u64);
    full(store.insert(&batch[m..m + 1]));
    full(store.insert(&new_deliveries("other", "c1", 1)));
    // A repeat needs no room, alone or all together; beside a new one, the batch is refused.
    store.insert(&batch[..1]).unwrap();
    store.insert(&batch[..m]).unwrap();
    full(store.insert(&batch[..m + 1]));
    assert_eq!(pending("acme"), m as u64);
    assert_eq!(pending("other"), 0);
    assert!(
        store
            .list(&DeliveryFilter::account("acme"), m + 2)
            .unwrap()
            .iter()
            .all(|d| batch[..m].iter().any(|b| b.id == d.id)),
        "only the accepted ones are stored"
    );

    // Delivered and failed deliveries are not pending: their places are free again.
    let claims = claim(store, t(1_000), 2, &[]);
    assert_eq!(claims.len(), 2);
    record_one(
        store,
        &claims[0],
        record(t(1_001), Some(204), NextStep::Delivered),
    )
    .unwrap();
    record_one(
        store,
        &claims[1],
        record(t(1_001), Some(404), NextStep::Failed),
    )
    .unwrap();
    store.insert(&batch[m..m + 2]).unwrap();
    assert_eq!(pending("acme"), m as u64);
    full(store.insert(&new_deliveries("other", "c1", 1)));
}

/// How many rounds of writes [`a_delivered_id_is_forgotten_after_the_retention`] makes within
/// the retention, each followed by a look: enough for a store that forgets every few dozen
/// writes to have forgotten once.
const ROUNDS_WITHIN: usize = 40;
/// How many rounds of writes past the retention a store may take to forget, at most (and
/// [`FORGET_WITHIN`] at most).
const ROUNDS_PAST: usize = 100;
/// How long a store may take to forget, at most: a store may forget in the background.
const FORGET_WITHIN: Duration = Duration::from_secs(10);

/// One round of writes at `at`: a delivery of another account submitted, claimed and
/// delivered, so that every kind of write a store measures the retention against (a submit's
/// creation, an attempt's time) carries `at`.
fn writes_at<S: Outbox + ?Sized>(store: &S, round: &str, at: Timestamp) {
    let id = DeliveryId::new(format!("msg_filler_{round}")).expect("a valid delivery id");
    let filler = NewDelivery {
        id,
        account: "filler".into(),
        created_at: at,
        next_attempt_at: at,
        ..new_deliveries("filler", "c1", 1).remove(0)
    };
    store.insert(std::slice::from_ref(&filler)).unwrap();
    let claims = claim(store, at, 10, &[]);
    assert_eq!(
        ids(&claims),
        [filler.id.as_str()],
        "the round's one delivery"
    );
    record_one(
        store,
        &claims[0],
        record(at, Some(204), NextStep::Delivered),
    )
    .unwrap();
}

/// A delivered id is remembered while it was delivered at most [`DELIVERED_ID_RETENTION`]
/// before the newest time the store's writes carried: a submit under it stores nothing,
/// through 40 rounds of writes at exactly that newest time (a round: another account's
/// delivery submitted, claimed and delivered, then the id submitted again). Once writes
/// carry a later time, the store forgets it within 100 rounds and 10 seconds (at its own
/// pace, in the background if it likes): a submit under it is a new delivery, claimed and
/// delivered as any other, and remembered again.
pub fn a_delivered_id_is_forgotten_after_the_retention<S: Outbox + ?Sized>(store: &S) {
    let retention = SignedDuration::try_from(DELIVERED_ID_RETENTION).expect("7 days");
    let once = new_deliveries("acme", "c1", 1).remove(0);
    let submitted_at = |at: Timestamp| NewDelivery {
        created_at: at,
        next_attempt_at: at,
        ..once.clone()
    };
    store.insert(std::slice::from_ref(&once)).unwrap();
    let c = claim(store, t(0), 10, &[]).remove(0);
    let delivered_at = t(10);
    record_one(
        store,
        &c,
        record(delivered_at, Some(204), NextStep::Delivered),
    )
    .unwrap();

    // Writes carry the last moment of the retention: the id is remembered.
    let edge = delivered_at + retention;
    for round in 0..ROUNDS_WITHIN {
        writes_at(store, &format!("within_{round}"), edge);
        store.insert(&[submitted_at(edge)]).unwrap();
        assert_eq!(
            pending_and_delivered(store, "acme"),
            (0, 1),
            "an id delivered the retention before the newest write is remembered \
             (round {round})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // Writes carry a later time: the id is forgotten, and a submit under it is new.
    let deadline = Instant::now() + FORGET_WITHIN;
    let mut round = 0;
    loop {
        let at = edge + SignedDuration::from_secs(1) + SignedDuration::from_millis(round as i64);
        writes_at(store, &format!("past_{round}"), at);
        store.insert(&[submitted_at(at)]).unwrap();
        if pending_and_delivered(store, "acme") == (1, 1) {
            break;
        }
        round += 1;
        assert!(
            round < ROUNDS_PAST && Instant::now() < deadline,
            "an id delivered more than the retention before the newest write is still \
             remembered after {round} rounds of writes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let later = t(1_000_000_000);
    let again = claim(store, later, 10, &[]);
    assert_eq!(
        ids(&again),
        [once.id.as_str()],
        "a new delivery under the id"
    );
    assert_eq!(again[0].delivery.body, once.body);
    assert_eq!(again[0].delivery.attempts, 0);
    record_one(
        store,
        &again[0],
        record(later, Some(204), NextStep::Delivered),
    )
    .unwrap();
    store.insert(&[submitted_at(later)]).unwrap();
    assert_eq!(
        pending_and_delivered(store, "acme"),
        (0, 2),
        "delivered again: remembered again"
    );
}
