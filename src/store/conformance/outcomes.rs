//! The checks of outcomes: fencing tokens, where each outcome moves a delivery, unknown
//! deliveries, and outcomes recorded together.

use crate::error::Error;
use crate::ids::{AccountId, DeliveryId};
use crate::store::{ClaimToken, DeliveryFilter, DeliveryState, NextStep, Outbox};

use super::{claim, ids, new_deliveries, pending_and_delivered, record, record_one, t};

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

/// Outcomes move deliveries on: delivered (counted), retried later (claimable then, with the
/// attempt counted), failed (kept, listed).
pub fn outcomes_move_deliveries<S: Outbox + ?Sized>(store: &S) {
    let mut batch = new_deliveries("acme", "c1", 2);
    batch.extend(new_deliveries("acme", "c2", 3).into_iter().skip(2));
    store.insert(&batch).unwrap();
    let acme: AccountId = "acme".into();
    let [a, b, c] = &claim(store, t(5), 10, &[])[..] else {
        panic!("three due");
    };
    assert_eq!(c.delivery.campaign, "c2".into());
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

    // Each campaign counts its own.
    let c1 = store.stats(&acme, Some(&"c1".into())).unwrap();
    assert_eq!((c1.pending, c1.delivered, c1.failed), (1, 1, 0));
    assert_eq!(c1.last_failure_reason.as_deref(), Some("HTTP 503"));
    let c2 = store.stats(&acme, Some(&"c2".into())).unwrap();
    assert_eq!((c2.pending, c2.delivered, c2.failed), (0, 0, 1));
    assert_eq!(
        (c2.last_success_at, c2.last_failure_at),
        (None, Some(t(12)))
    );
    let other = store.stats(&"other".into(), None).unwrap();
    assert_eq!(other, crate::store::DeliveryStats::default());

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
    // Delivered ones are counted, never listed.
    let delivered = DeliveryFilter::account("acme").state(DeliveryState::Delivered);
    assert!(store.list(&delivered, 10).unwrap().is_empty());
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
/// others recorded. An outcome twice under one claim in a batch is recorded once: the first
/// ends the claim, the second is [`Error::LeaseLost`].
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
    let mut retried = claim(store, t(100), 10, &[]);
    assert_eq!(ids(&retried), [b.delivery.id.as_str()]);
    assert!(store.record_attempts(&[]).is_empty());

    // The same claim's outcome twice in one batch.
    let retried = retried.remove(0);
    let twice = store.record_attempts(&[
        (
            retried.delivery.id.clone(),
            retried.token,
            record(t(101), Some(204), NextStep::Delivered),
        ),
        (
            retried.delivery.id.clone(),
            retried.token,
            record(t(101), Some(404), NextStep::Failed),
        ),
    ]);
    assert!(twice[0].is_ok(), "{twice:?}");
    assert!(
        matches!(twice[1], Err(Error::LeaseLost { .. })),
        "{twice:?}"
    );
    let stats = store.stats(&acme, None).unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.failed), (0, 2, 1));
}
