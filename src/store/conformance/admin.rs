//! The checks of an administrator's queries: what is pending, replays, lists and removals.

use crate::ids::DeliveryId;
use crate::store::{DeliveryFilter, DeliveryState, NextStep, Outbox};

use super::{claim, new_deliveries, record, record_one, t};

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
