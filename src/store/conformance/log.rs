//! The checks of the attempts log: every recorded attempt logged with what it was, read newest
//! first, paged by cursor, filtered, one account at a time, pruned oldest first.

use std::collections::HashSet;
use std::time::Duration;

use crate::store::{AttemptCursor, AttemptQuery, AttemptState, LoggedAttempt, NextStep, Outbox};

use super::{claim, new_deliveries, record, record_one, t};

/// Reads every page of `query` at `page` a time, checking that each page is newest first and
/// continues where the last ended.
fn all_pages<S: Outbox + ?Sized>(
    store: &S,
    query: &AttemptQuery,
    page: usize,
) -> Vec<LoggedAttempt> {
    let mut all: Vec<LoggedAttempt> = Vec::new();
    let mut query = query.clone().limit(page);
    loop {
        let got = store.attempts(&query).expect("reading the attempts log");
        assert!(got.len() <= page, "a page holds at most its limit");
        for pair in got.windows(2) {
            assert!(
                pair[0].cursor > pair[1].cursor,
                "newest (highest cursor) first"
            );
        }
        if let (Some(last), Some(first)) = (all.last(), got.first()) {
            assert!(
                first.cursor < last.cursor,
                "a page continues after the last one"
            );
        }
        let Some(last) = got.last() else {
            return all;
        };
        query = query.before(last.cursor);
        let full = got.len() == page;
        all.extend(got);
        if !full {
            return all;
        }
    }
}

/// Each outcome recorded is logged with its time, delivery, account, campaign, number, state,
/// status, error, duration and answer; an outcome refused (an outdated token, an unknown
/// delivery) is not; each account reads its own attempts only, newest first.
pub fn every_recorded_attempt_is_logged_newest_first<S: Outbox + ?Sized>(store: &S) {
    let mut batch = new_deliveries("acme", "c1", 2);
    batch.extend(new_deliveries("acme", "c2", 1));
    batch.extend(new_deliveries("zenith", "c1", 1));
    store.insert(&batch).unwrap();
    let claims = claim(store, t(5), 10, &[]);
    let of = |id: &str| {
        claims
            .iter()
            .find(|c| c.delivery.id.as_str() == id)
            .expect("claimed")
    };
    let (a, b, c, z) = (
        of("msg_acme_c1_0"),
        of("msg_acme_c1_1"),
        of("msg_acme_c2_0"),
        of("msg_zenith_c1_0"),
    );
    record_one(store, a, record(t(10), Some(204), NextStep::Delivered)).unwrap();
    record_one(
        store,
        b,
        record(t(11), Some(503), NextStep::RetryAt(t(100))),
    )
    .unwrap();
    record_one(store, c, record(t(12), Some(404), NextStep::Failed)).unwrap();
    record_one(store, z, record(t(13), None, NextStep::RetryAt(t(100)))).unwrap();
    // Refused: outcomes again under claims whose outcomes ended them (tokens no longer current).
    assert!(record_one(store, b, record(t(14), Some(204), NextStep::Delivered)).is_err());
    assert!(record_one(store, a, record(t(15), Some(204), NextStep::Delivered)).is_err());

    let acme = store.attempts(&AttemptQuery::account("acme")).unwrap();
    let seen: Vec<(&str, u32, AttemptState, Option<u16>)> = acme
        .iter()
        .map(|l| (l.delivery.as_str(), l.number, l.state, l.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("msg_acme_c2_0", 1, AttemptState::Failed, Some(404)),
            ("msg_acme_c1_1", 1, AttemptState::Retrying, Some(503)),
            ("msg_acme_c1_0", 1, AttemptState::Delivered, Some(204)),
        ],
        "every recorded attempt of the account, newest first, none of the refused ones"
    );
    let failed = &acme[0];
    assert_eq!(failed.account, "acme".into());
    assert_eq!(failed.campaign, "c2".into());
    assert_eq!(failed.at, t(12));
    assert_eq!(failed.error.as_deref(), Some("HTTP 404"));
    assert_eq!(failed.duration, Duration::from_millis(12));
    assert_eq!(failed.answer, "answer 404");
    assert_eq!(acme[2].error, None);

    let zenith = store.attempts(&AttemptQuery::account("zenith")).unwrap();
    assert_eq!(zenith.len(), 1, "one account never reads another's");
    assert_eq!((zenith[0].status, zenith[0].answer.as_str()), (None, ""));
    assert!(
        store
            .attempts(&AttemptQuery::account("nobody"))
            .unwrap()
            .is_empty()
    );

    // The retried delivery's second attempt is its number 2, and the newest.
    let again = claim(store, t(100), 10, &[]);
    let b2 = again
        .iter()
        .find(|c| c.delivery.id.as_str() == "msg_acme_c1_1")
        .expect("due again");
    record_one(store, b2, record(t(101), Some(200), NextStep::Delivered)).unwrap();
    let newest = store
        .attempts(&AttemptQuery::account("acme").limit(1))
        .unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(
        (
            newest[0].delivery.as_str(),
            newest[0].number,
            newest[0].state
        ),
        ("msg_acme_c1_1", 2, AttemptState::Delivered)
    );
    assert!(newest[0].cursor > acme[0].cursor);
}

/// Pages by cursor list every attempt exactly once, newest first; a campaign and a state
/// narrow them; a page of 0 is empty.
pub fn the_attempts_log_pages_and_filters<S: Outbox + ?Sized>(store: &S) {
    let mut batch = new_deliveries("acme", "c1", 5);
    batch.extend(new_deliveries("acme", "c2", 4));
    store.insert(&batch).unwrap();
    let claims = claim(store, t(20), 100, &[]);
    assert_eq!(claims.len(), 9);
    for (i, c) in claims.iter().enumerate() {
        let next = match i % 3 {
            0 => NextStep::Delivered,
            1 => NextStep::RetryAt(t(1000)),
            _ => NextStep::Failed,
        };
        let at = t(30 + i as i64);
        record_one(store, c, record(at, Some(200 + i as u16), next)).unwrap();
    }
    let every = all_pages(store, &AttemptQuery::account("acme"), 2);
    assert_eq!(every.len(), 9, "every attempt once over the pages");
    let distinct: HashSet<AttemptCursor> = every.iter().map(|a| a.cursor).collect();
    assert_eq!(distinct.len(), 9);
    let times: Vec<_> = every.iter().map(|a| a.at).collect();
    let mut newest_first = times.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(
        times, newest_first,
        "recorded one after another: newest first"
    );

    let c2 = all_pages(store, &AttemptQuery::account("acme").campaign("c2"), 3);
    assert_eq!(c2.len(), 4);
    assert!(c2.iter().all(|a| a.campaign == "c2".into()));
    for state in [
        AttemptState::Delivered,
        AttemptState::Retrying,
        AttemptState::Failed,
    ] {
        let got = all_pages(store, &AttemptQuery::account("acme").state(state), 2);
        let expected = every.iter().filter(|a| a.state == state).count();
        assert_eq!(got.len(), expected, "{state:?}");
        assert_eq!(expected, 3);
        assert!(got.iter().all(|a| a.state == state));
        let both = AttemptQuery::account("acme").campaign("c1").state(state);
        let got = all_pages(store, &both, 1);
        let expected = every
            .iter()
            .filter(|a| a.state == state && a.campaign == "c1".into())
            .count();
        assert_eq!(got.len(), expected, "c1, {state:?}");
    }
    let none = store
        .attempts(&AttemptQuery::account("acme").limit(0))
        .unwrap();
    assert!(none.is_empty());
    let oldest = every.last().expect("nine");
    let past_oldest = AttemptQuery::account("acme").before(oldest.cursor);
    assert!(store.attempts(&past_oldest).unwrap().is_empty());
}

/// Pruning forgets, oldest first, at most its limit of the attempts that finished before its
/// time, and nothing newer; attempts logged after it still get greater cursors.
pub fn pruning_forgets_the_oldest_attempts_only<S: Outbox + ?Sized>(store: &S) {
    store.insert(&new_deliveries("acme", "c1", 5)).unwrap();
    let claims = claim(store, t(5), 10, &[]);
    for (i, c) in claims.iter().take(4).enumerate() {
        let at = t(10 * (i as i64 + 1));
        record_one(store, c, record(at, Some(204), NextStep::Delivered)).unwrap();
    }
    let before = store.attempts(&AttemptQuery::account("acme")).unwrap();
    assert_eq!(before.len(), 4);
    let highest = before[0].cursor;

    assert_eq!(
        store.prune_attempts(t(10), 10).unwrap(),
        0,
        "none before t(10)"
    );
    assert_eq!(
        store.prune_attempts(t(25), 10).unwrap(),
        2,
        "t(10) and t(20)"
    );
    let left: Vec<_> = store
        .attempts(&AttemptQuery::account("acme"))
        .unwrap()
        .iter()
        .map(|a| a.at)
        .collect();
    assert_eq!(left, [t(40), t(30)]);
    assert_eq!(
        store.prune_attempts(t(100), 1).unwrap(),
        1,
        "at most the limit"
    );
    let left = store.attempts(&AttemptQuery::account("acme")).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].at, t(40), "the oldest went first");
    assert_eq!(store.prune_attempts(t(100), 0).unwrap(), 0);

    record_one(
        store,
        &claims[4],
        record(t(50), Some(204), NextStep::Delivered),
    )
    .unwrap();
    let newest = store.attempts(&AttemptQuery::account("acme")).unwrap();
    assert_eq!(newest.len(), 2);
    assert!(newest[0].cursor > highest, "a cursor is never given twice");
    // Everything is old now: all go, but a store may keep its newest.
    let forgotten = store.prune_attempts(t(1000), 10).unwrap();
    let left = store.attempts(&AttemptQuery::account("acme")).unwrap();
    assert_eq!(forgotten as usize + left.len(), 2);
    assert!(left.len() <= 1, "at most the newest is kept: {left:?}");
    assert!(left.iter().all(|a| a.cursor == newest[0].cursor));

    // A cursor is not given twice, even after the log was pruned to nothing but its newest.
    store.insert(&new_deliveries("zenith", "c2", 1)).unwrap();
    let last = claim(store, t(60), 10, &[]).remove(0);
    record_one(store, &last, record(t(60), Some(204), NextStep::Delivered)).unwrap();
    let after = store
        .attempts(&AttemptQuery::account("zenith").limit(1))
        .unwrap();
    assert!(
        after[0].cursor > newest[0].cursor,
        "{after:?} after {newest:?}"
    );
}
