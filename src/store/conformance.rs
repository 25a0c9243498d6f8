//! The behaviour every [`Store`] must show, run against each implementation's own tests.

use bytes::Bytes;
use jiff::Timestamp;

use crate::encoding::Encoding;
use crate::error::Error;
use crate::ids::{AccountId, DeliveryId};
use crate::request::EncodedBody;
use crate::store::{AttemptRecord, DeliveryFilter, DeliveryState, NewDelivery, NextStep, Store};

pub(crate) fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

/// `n` new deliveries of one account and campaign, due one second apart from `t(0)`.
pub(crate) fn new_deliveries(account: &str, campaign: &str, n: usize) -> Vec<NewDelivery> {
    (0..n)
        .map(|i| NewDelivery {
            id: DeliveryId::new(format!("msg_{account}_{campaign}_{i}")).unwrap(),
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

fn record(at: Timestamp, status: Option<u16>, next: NextStep) -> AttemptRecord {
    AttemptRecord {
        at,
        status,
        error: status.filter(|s| *s >= 300).map(|s| format!("HTTP {s}")),
        next,
    }
}

/// Runs every check on fresh stores made by `make`.
pub(crate) fn run_all<S: Store>(make: &dyn Fn() -> S) {
    due_order_limit_and_skip(&make());
    outcomes_move_deliveries(&make());
    replay_keeps_id_and_bytes(&make());
    remove_and_filters(&make());
    insert_is_all_or_nothing(&make());
    settings_and_health_are_replaced(&make());
    unknown_delivery_is_an_error(&make());
    attempts_recorded_together_answer_each(&make());
    the_same_id_twice_is_one_delivery(&make());
    a_delivered_id_is_not_sent_again(&make());
    a_conflicting_id_is_refused_and_nothing_stored(&make());
    a_repeat_beside_a_new_id_stores_the_new_one(&make());
}

/// `d` with another body under the same id.
fn other_body(d: &NewDelivery) -> NewDelivery {
    NewDelivery {
        body: EncodedBody::from_parts(Bytes::from_static(b"Reference=other"), Encoding::Form),
        ..d.clone()
    }
}

fn pending_and_delivered(store: &dyn Store, account: &str) -> (u64, u64) {
    let stats = store.stats(&account.into(), None).unwrap();
    (stats.pending, stats.delivered)
}

fn due_order_limit_and_skip(store: &dyn Store) {
    let mut batch = new_deliveries("acme", "c1", 5);
    batch.reverse();
    store.insert(&batch).unwrap();
    store.insert(&new_deliveries("other", "c1", 1)).unwrap();
    let acme: AccountId = "acme".into();
    let due = store.due(&acme, t(2), 10, &[]).unwrap();
    let refs: Vec<_> = due.iter().map(|d| d.id.as_str().to_owned()).collect();
    assert_eq!(refs, ["msg_acme_c1_0", "msg_acme_c1_1", "msg_acme_c1_2"]);
    assert!(due.iter().all(|d| d.account == acme && d.attempts == 0));
    assert_eq!(store.due(&acme, t(10), 2, &[]).unwrap().len(), 2);
    let skipped = store.due(&acme, t(10), 10, &[due[0].id.clone()]).unwrap();
    assert_eq!(skipped.len(), 4);
    assert!(skipped.iter().all(|d| d.id != due[0].id));
    let mut accounts = store.pending_accounts().unwrap();
    accounts.sort();
    assert_eq!(accounts, [("acme".into(), t(0)), ("other".into(), t(0))]);
}

fn outcomes_move_deliveries(store: &dyn Store) {
    store.insert(&new_deliveries("acme", "c1", 3)).unwrap();
    let acme: AccountId = "acme".into();
    let [a, b, c] = &store.due(&acme, t(5), 10, &[]).unwrap()[..] else {
        panic!("three due");
    };
    store
        .record_attempt(&a.id, &record(t(10), Some(204), NextStep::Delivered))
        .unwrap();
    store
        .record_attempt(&b.id, &record(t(11), Some(503), NextStep::RetryAt(t(100))))
        .unwrap();
    store
        .record_attempt(&c.id, &record(t(12), Some(404), NextStep::Failed))
        .unwrap();

    assert!(store.due(&acme, t(99), 10, &[]).unwrap().is_empty());
    let retried = store.due(&acme, t(100), 10, &[]).unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, b.id);
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(retried[0].last_status, Some(503));
    assert_eq!(retried[0].body, b.body);

    let stats = store.stats(&acme, None).unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.failed), (1, 1, 1));
    assert_eq!(stats.last_success_at, Some(t(10)));
    assert_eq!(stats.last_failure_at, Some(t(12)));
    assert_eq!(stats.last_failure_reason.as_deref(), Some("HTTP 404"));
    assert_eq!(store.pending_accounts().unwrap(), [(acme.clone(), t(100))]);

    let failed = store
        .list(
            &DeliveryFilter::account("acme").state(DeliveryState::Failed),
            10,
        )
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, c.id);
    assert_eq!(failed[0].attempts, 1);
    assert_eq!(failed[0].last_error.as_deref(), Some("HTTP 404"));

    store
        .record_attempt(&b.id, &record(t(101), Some(200), NextStep::Delivered))
        .unwrap();
    let stats = store.stats(&acme, None).unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.failed), (0, 2, 1));
    assert!(store.pending_accounts().unwrap().is_empty());
}

fn replay_keeps_id_and_bytes(store: &dyn Store) {
    let batch = new_deliveries("acme", "c1", 2);
    store.insert(&batch).unwrap();
    store.insert(&new_deliveries("acme", "c2", 1)).unwrap();
    for d in store.due(&"acme".into(), t(5), 10, &[]).unwrap() {
        store
            .record_attempt(&d.id, &record(t(6), Some(404), NextStep::Failed))
            .unwrap();
    }
    let n = store
        .requeue_failed(&DeliveryFilter::account("acme").campaign("c1"), t(50))
        .unwrap();
    assert_eq!(n, 2);
    let due = store.due(&"acme".into(), t(50), 10, &[]).unwrap();
    assert_eq!(due.len(), 2);
    for (d, original) in due.iter().zip(&batch) {
        assert_eq!(d.id, original.id);
        assert_eq!(d.body, original.body);
        assert_eq!(d.state, DeliveryState::Pending);
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

fn remove_and_filters(store: &dyn Store) {
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
    assert!(
        store
            .due(&"acme".into(), t(100), 10, &[])
            .unwrap()
            .iter()
            .all(|d| d.campaign == "c1".into())
    );
}

fn insert_is_all_or_nothing(store: &dyn Store) {
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

fn the_same_id_twice_is_one_delivery(store: &dyn Store) {
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
    let due = store.due(&"acme".into(), t(100), 10, &[]).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].id.clone(), due[0].created_at),
        (batch[0].id.clone(), t(0))
    );
    assert_eq!(due[0].body, batch[0].body);
    let fresh = new_deliveries("acme", "c2", 1);
    store.insert(&[fresh[0].clone(), fresh[0].clone()]).unwrap();
    assert_eq!(pending_and_delivered(store, "acme"), (2, 0));

    // A failed one is left failed: a resubmission does not replay it.
    store
        .record_attempt(&batch[0].id, &record(t(40), Some(404), NextStep::Failed))
        .unwrap();
    store.insert(&batch).unwrap();
    let stats = store.stats(&"acme".into(), None).unwrap();
    assert_eq!((stats.pending, stats.failed), (1, 1));
}

fn a_delivered_id_is_not_sent_again(store: &dyn Store) {
    let batch = new_deliveries("acme", "c1", 1);
    store.insert(&batch).unwrap();
    store
        .record_attempt(&batch[0].id, &record(t(10), Some(204), NextStep::Delivered))
        .unwrap();
    store.insert(&batch).unwrap();
    // Even a later submit under the id, within the retention, is not sent again.
    let retried = NewDelivery {
        created_at: t(3_600),
        next_attempt_at: t(3_600),
        ..batch[0].clone()
    };
    store.insert(&[retried]).unwrap();
    assert_eq!(pending_and_delivered(store, "acme"), (0, 1));
    assert!(
        store
            .due(&"acme".into(), t(1_000_000), 10, &[])
            .unwrap()
            .is_empty()
    );
    assert!(store.pending_accounts().unwrap().is_empty());
    assert!(
        store
            .list(&DeliveryFilter::account("acme"), 10)
            .unwrap()
            .is_empty()
    );
}

fn a_conflicting_id_is_refused_and_nothing_stored(store: &dyn Store) {
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

fn a_repeat_beside_a_new_id_stores_the_new_one(store: &dyn Store) {
    let batch = new_deliveries("acme", "c1", 3);
    store.insert(&batch[..1]).unwrap();
    store
        .record_attempt(&batch[0].id, &record(t(5), Some(200), NextStep::Delivered))
        .unwrap();
    store.insert(&batch[1..2]).unwrap();
    // A delivered repeat, a pending repeat and a new one.
    store.insert(&batch).unwrap();
    assert_eq!(pending_and_delivered(store, "acme"), (2, 1));
    let due = store.due(&"acme".into(), t(100), 10, &[]).unwrap();
    let ids: Vec<_> = due.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids, [batch[1].id.clone(), batch[2].id.clone()]);
}

fn settings_and_health_are_replaced(store: &dyn Store) {
    store.save_account(&"acme".into(), r#"{"v":1}"#).unwrap();
    store.save_account(&"acme".into(), r#"{"v":2}"#).unwrap();
    store.save_account(&"b".into(), r#"{"v":3}"#).unwrap();
    let mut accounts = store.load_accounts().unwrap();
    accounts.sort();
    assert_eq!(accounts, [r#"{"v":2}"#, r#"{"v":3}"#]);
    store.save_health(&"acme".into(), "h1").unwrap();
    store.save_health(&"acme".into(), "h2").unwrap();
    assert_eq!(
        store.load_health().unwrap(),
        [("acme".into(), "h2".to_owned())]
    );
}

fn unknown_delivery_is_an_error(store: &dyn Store) {
    let id = DeliveryId::new("msg_missing").unwrap();
    let err = store
        .record_attempt(&id, &record(t(0), Some(200), NextStep::Delivered))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownDelivery(_)), "{err:?}");
}

fn attempts_recorded_together_answer_each(store: &dyn Store) {
    store.insert(&new_deliveries("acme", "c1", 3)).unwrap();
    let acme: AccountId = "acme".into();
    let [a, b, c] = &store.due(&acme, t(5), 10, &[]).unwrap()[..] else {
        panic!("three due");
    };
    let missing = DeliveryId::new("msg_missing").unwrap();
    let answers = store.record_attempts(&[
        (a.id.clone(), record(t(10), Some(204), NextStep::Delivered)),
        (missing, record(t(10), Some(204), NextStep::Delivered)),
        (
            b.id.clone(),
            record(t(11), Some(503), NextStep::RetryAt(t(100))),
        ),
        (c.id.clone(), record(t(12), Some(404), NextStep::Failed)),
    ]);
    assert_eq!(answers.len(), 4);
    assert!(answers[0].is_ok() && answers[2].is_ok() && answers[3].is_ok());
    assert!(matches!(answers[1], Err(Error::UnknownDelivery(_))));
    let stats = store.stats(&acme, None).unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.failed), (1, 1, 1));
    assert_eq!(store.due(&acme, t(100), 10, &[]).unwrap()[0].id, b.id);
    assert!(store.record_attempts(&[]).is_empty());
}
