//! The checks of claims: due order, limits, skips, leases, releases, room per account, and
//! paused accounts left out.

use std::collections::HashMap;

use jiff::SignedDuration;

use crate::ids::{AccountId, DeliveryId};
use crate::store::{
    ClaimRequest, ClaimToken, DeliveryState, NewDelivery, NextStep, Outbox, SaveOutcome, Settings,
};

use super::settings::{saved, versioned};
use super::{LEASE, claim, due_at, ids, new_deliveries, record, t};

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

/// A claim naming a finished request of this process ([`ClaimRequest::finished`]: its
/// outcome not recorded yet) may give that request's place at the endpoint to another
/// delivery, never the finished request's own delivery: it stays claimed, and its outcome is
/// still recorded under its token.
pub fn a_finished_request_keeps_its_claim<S: Outbox + ?Sized>(store: &S) {
    store.insert(&new_deliveries("acme", "c1", 3)).unwrap();
    let bounded = |now, finished: &[ClaimToken]| {
        store
            .claim(&ClaimRequest {
                now,
                limit: 10,
                lease: LEASE,
                per_account: Some(1),
                finished,
                ..ClaimRequest::default()
            })
            .expect("claim")
    };
    let first = bounded(t(1), &[]);
    assert_eq!(first.len(), 1, "one place");
    let second = bounded(t(2), &[first[0].token]);
    assert!(second.len() <= 1, "still one place: {:?}", ids(&second));
    assert!(
        second.iter().all(|c| c.delivery.id != first[0].delivery.id),
        "the finished request's delivery stays claimed"
    );
    let answers = store.record_attempts(&[(
        first[0].delivery.id.clone(),
        first[0].token,
        record(t(3), Some(200), NextStep::Delivered),
    )]);
    assert!(answers[0].is_ok(), "recorded under its token: {answers:?}");
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

/// An account whose due deliveries are spread over another account's long backlog gets its
/// whole room in one claim, each delivery once, earliest first, whichever of them sit early in
/// the due order and whichever late: a store that reads the due order in a bounded window
/// must still find the rest past it.
pub fn a_claim_fills_an_accounts_room_across_a_backlog<S: Outbox + ?Sized>(store: &S) {
    let spread = new_deliveries("spread", "c", 6);
    // Two due first, then a long backlog of another account, then the other four.
    let early: Vec<NewDelivery> = spread[..2].iter().map(|d| due_at(d, t(0))).collect();
    store.insert(&early).unwrap();
    let backlog: Vec<NewDelivery> = new_deliveries("held", "c", 600)
        .iter()
        .map(|d| due_at(d, t(10)))
        .collect();
    for chunk in backlog.chunks(200) {
        store.insert(chunk).unwrap();
    }
    let late: Vec<NewDelivery> = spread[2..]
        .iter()
        .enumerate()
        .map(|(i, d)| due_at(d, t(1_000 + i as i64)))
        .collect();
    store.insert(&late).unwrap();
    let claims = store
        .claim(&ClaimRequest {
            now: t(2_000),
            limit: 64,
            lease: LEASE,
            per_account: Some(4),
            ..ClaimRequest::default()
        })
        .expect("claim");
    let mut spread_ids: Vec<&str> = claims
        .iter()
        .filter(|c| c.delivery.account.as_str() == "spread")
        .map(|c| c.delivery.id.as_str())
        .collect();
    spread_ids.sort_unstable();
    assert_eq!(
        spread_ids,
        [
            "msg_spread_c_0",
            "msg_spread_c_1",
            "msg_spread_c_2",
            "msg_spread_c_3"
        ],
        "the room of 4, the earliest first, each once"
    );
    let held = claims
        .iter()
        .filter(|c| c.delivery.account.as_str() == "held")
        .count();
    assert_eq!(held, 4, "the other account's room too");
    let mut all: Vec<&str> = claims.iter().map(|c| c.delivery.id.as_str()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), claims.len(), "no delivery claimed twice");
}

/// A pause saved with an endpoint's health leaves its account out of claims and of
/// `next_due`, whatever its deliveries' due times, until the health is saved unpaused; the
/// other accounts are claimed as before, and their due times answered. A stale save neither
/// pauses nor resumes.
pub fn a_pause_holds_claims_until_saved_unpaused<S: Outbox + Settings + ?Sized>(store: &S) {
    let acme: AccountId = "acme".into();
    // acme's are due first: a store that claimed them would take them before the others.
    store.insert(&new_deliveries("acme", "c1", 2)).unwrap();
    let others: Vec<NewDelivery> = new_deliveries("other", "c1", 2)
        .iter()
        .enumerate()
        .map(|(i, d)| due_at(d, t(5 + i as i64)))
        .collect();
    store.insert(&others).unwrap();
    let h1 = saved(store.save_health(&acme, "unpaused", false, None).unwrap());
    assert_eq!(store.next_due(t(0), &[]).unwrap(), Some(t(0)), "not paused");
    let h2 = saved(store.save_health(&acme, "paused", true, Some(h1)).unwrap());
    assert_eq!(
        store.next_due(t(0), &[]).unwrap(),
        Some(t(5)),
        "next_due leaves the paused account out"
    );
    assert_eq!(
        ids(&claim(store, t(10), 1, &[])),
        ["msg_other_c1_0"],
        "a claim leaves the paused account out"
    );
    assert_eq!(ids(&claim(store, t(10), 10, &[])), ["msg_other_c1_1"]);
    assert!(claim(store, t(10), 10, &[]).is_empty(), "a paused account");
    assert_eq!(store.next_due(t(10), &[]).unwrap(), None);
    // An older copy, unpaused, cannot undo the pause.
    assert_eq!(
        store
            .save_health(&acme, "unpaused", false, Some(h1))
            .unwrap(),
        SaveOutcome::Stale
    );
    assert!(claim(store, t(10), 10, &[]).is_empty(), "still paused");
    assert_eq!(store.next_due(t(10), &[]).unwrap(), None, "still paused");
    let h3 = saved(
        store
            .save_health(&acme, "resumed", false, Some(h2))
            .unwrap(),
    );
    assert_eq!(store.next_due(t(10), &[]).unwrap(), Some(t(0)), "resumed");
    assert_eq!(
        ids(&claim(store, t(10), 10, &[])),
        ["msg_acme_c1_0", "msg_acme_c1_1"]
    );
    // A stale pause holds nothing either.
    store.insert(&new_deliveries("acme", "c2", 1)).unwrap();
    assert_eq!(
        store.save_health(&acme, "paused", true, Some(h2)).unwrap(),
        SaveOutcome::Stale
    );
    assert_eq!(ids(&claim(store, t(10), 10, &[])), ["msg_acme_c2_0"]);
    assert_eq!(
        store.load_health(&acme).unwrap(),
        Some(versioned("resumed", h3))
    );
}
