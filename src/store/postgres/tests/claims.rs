//! Claims and outcomes: batches of outcomes, the commit setting, the bound per endpoint
//! across stores, and a failed recording's server message.

use super::*;

/// A batch's outcomes go in two statements, whatever its size: several of one campaign count
/// once each, the latest failure's reason wins, an id twice in one batch is recorded once
/// (the second is not under a current claim) and an outdated token changes nothing.
#[test]
fn a_batch_of_outcomes_counts_each_once_and_answers_each() {
    let db = db!();
    let store = db.open();
    let acme = AccountId::new("acme");
    let batch: Vec<NewDelivery> = (0..6)
        .map(|i| new(&format!("d{i}"), "acme", &i.to_string(), t(0)))
        .collect();
    store.insert(&batch).unwrap();
    let claims = claim(&store, t(0), 10, &[]);
    assert_eq!(claims.len(), 6);
    let outcome = |i: usize, at: i64, next: NextStep, error: Option<&str>| {
        (
            claims[i].delivery.id.clone(),
            claims[i].token,
            record(t(at), next, error),
        )
    };
    let stale = ClaimToken::new(claims[5].token.get() + 1_000);
    let answers = store.record_attempts(&[
        outcome(0, 1, NextStep::Delivered, None),
        outcome(1, 4, NextStep::Delivered, Some("HTTP 503 before")),
        outcome(2, 2, NextStep::Failed, Some("HTTP 410 earlier")),
        outcome(3, 3, NextStep::Failed, Some("HTTP 404 later")),
        outcome(4, 2, NextStep::RetryAt(t(60)), Some("HTTP 503")),
        // The same id again in the batch: its claim ended with the first.
        outcome(0, 5, NextStep::Failed, Some("HTTP 500")),
        (
            claims[5].delivery.id.clone(),
            stale,
            record(t(5), NextStep::Delivered, None),
        ),
    ]);
    assert!(answers[..5].iter().all(Result::is_ok), "{answers:?}");
    assert!(
        matches!(&answers[5], Err(Error::LeaseLost { id }) if id == claims[0].delivery.id.as_str()),
        "{answers:?}"
    );
    assert!(
        matches!(&answers[6], Err(Error::LeaseLost { .. })),
        "{answers:?}"
    );
    let stats = store.stats(&acme, None).unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.failed), (2, 2, 2));
    assert_eq!(stats.last_success_at, Some(t(4)));
    assert_eq!(stats.last_failure_at, Some(t(4)));
    assert_eq!(
        stats.last_failure_reason.as_deref(),
        Some("HTTP 503 before")
    );
    // The stale outcome left its delivery claimed under the current token.
    let answer = store.record_attempts(&[outcome(5, 6, NextStep::Delivered, None)]);
    assert!(answer[0].is_ok(), "{answer:?}");
    assert_eq!(store.stats(&acme, None).unwrap().delivered, 3);
}

/// A claim's and a batch of outcomes' transactions commit without waiting for the flush,
/// unless the builder asks them to; nothing else changes the session's setting.
#[test]
fn claims_and_outcomes_commit_without_waiting_for_the_flush_unless_asked() {
    let db = db!();
    let s = db.s();
    drop(db.open());
    db.sql(&format!(
        "INSERT INTO {s}.deliveries (id, account, campaign, body, encoding, created_at, \
         next_attempt_at, attempts, state) VALUES ('d1', 'acme', 'spring', 'x', 'form', 0, 0, \
         0, 'pending')"
    ));
    for (synchronous, expected) in [(false, "off"), (true, "on")] {
        let sql = sql::Statements::new(&db.schema, synchronous);
        let walks = [
            (
                &sql.claim_head,
                "(1, 2, ARRAY[]::text[], 10, 10, ARRAY[]::text[], ARRAY[]::bigint[], \
                 ARRAY[]::bigint[], 100)",
            ),
            (
                &sql.claim_by_account,
                "(1, 2, ARRAY[]::text[], 10, 10, ARRAY[]::text[], ARRAY[]::bigint[], \
                 ARRAY[]::bigint[])",
            ),
        ];
        for (statement, args) in walks {
            let rows = db.sql(&format!(
                "BEGIN; SET LOCAL synchronous_commit = local; PREPARE q AS {statement}; \
                 EXECUTE q{args}; SHOW synchronous_commit; ROLLBACK"
            ));
            let shown = rows.last().and_then(|r| r[0].clone());
            assert_eq!(shown.as_deref(), Some(expected), "{statement}");
        }
        let rows = db.sql(&format!(
            "BEGIN; SET LOCAL synchronous_commit = local; {}; SHOW synchronous_commit; ROLLBACK",
            sql.progress_commit
        ));
        assert_eq!(
            rows.last().and_then(|r| r[0].clone()).as_deref(),
            Some(expected)
        );
    }
    // The store's own claims and outcomes still work end to end with it.
    let store = db.open();
    let claims = claim(&store, t(0), 10, &[]);
    assert_eq!(ids(&claims), ["d1"]);
    let answers = store.record_attempts(&[(
        claims[0].delivery.id.clone(),
        claims[0].token,
        record(t(1), NextStep::Delivered, None),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
}

/// `per_account` bounds one endpoint's attempts over every process on the schema: a slot
/// taken by one store's claim is not another's until its outcome, its release or its
/// lease's end; an extended lease keeps its slot.
/// A claim may give the endpoint slot of one of its process's finished requests (its outcome
/// still being written) to a new delivery; the outcome written later then frees nothing, so
/// the bound still counts requests in flight over the fleet.
#[test]
fn a_finished_requests_slot_goes_to_the_next_claim_and_its_outcome_frees_nothing() {
    let db = db!();
    let (one, two) = (db.open(), db.open());
    let batch: Vec<NewDelivery> = (0..4)
        .map(|i| new(&format!("d{i}"), "acme", &i.to_string(), t(0)))
        .collect();
    one.insert(&batch).unwrap();
    let claim = |store: &PostgresStore, now: Timestamp, finished: &[ClaimToken]| {
        store
            .claim(&ClaimRequest {
                now,
                limit: 10,
                lease: Duration::from_secs(30),
                per_account: Some(1),
                finished,
                ..ClaimRequest::default()
            })
            .unwrap()
    };
    let first = claim(&one, t(0), &[]);
    assert_eq!(first.len(), 1);
    assert!(claim(&one, t(1), &[]).is_empty(), "the one slot is taken");
    // Another process's finished token frees nothing here, and a token of no slot neither.
    assert!(claim(&two, t(1), &[ClaimToken::new(u64::MAX / 4)]).is_empty());
    // Its request over, the first claim's slot goes to the next delivery.
    let second = claim(&one, t(2), &[first[0].token]);
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].delivery.id, first[0].delivery.id);
    // Its outcome, written now, leaves the slot to the second (no process finds room).
    let answers = one.record_attempts(&[(
        first[0].delivery.id.clone(),
        first[0].token,
        record(t(4), NextStep::Delivered, None),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
    assert!(
        claim(&two, t(5), &[]).is_empty(),
        "the second holds the slot"
    );
    let answers = one.record_attempts(&[(
        second[0].delivery.id.clone(),
        second[0].token,
        record(t(6), NextStep::Delivered, None),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
    assert_eq!(
        claim(&two, t(7), &[]).len(),
        1,
        "free again once the second's outcome is in"
    );
}

#[test]
fn the_bound_per_endpoint_holds_across_stores() {
    let db = db!();
    let (one, two) = (db.open(), db.open());
    let batch: Vec<NewDelivery> = (0..8)
        .map(|i| new(&format!("d{i}"), "acme", &i.to_string(), t(0)))
        .chain([new("other", "globex", "x", t(0))])
        .collect();
    one.insert(&batch).unwrap();
    let bounded = |store: &PostgresStore, now: Timestamp| {
        store
            .claim(&ClaimRequest {
                now,
                limit: 10,
                lease: Duration::from_secs(30),
                per_account: Some(2),
                ..ClaimRequest::default()
            })
            .unwrap()
    };
    let accounts = |claims: &[Claim]| -> Vec<String> {
        claims
            .iter()
            .map(|c| c.delivery.account.as_str().to_owned())
            .collect()
    };
    let first = bounded(&one, t(0));
    assert_eq!(accounts(&first), ["acme", "acme", "globex"]);
    // The other process finds acme's two places taken.
    assert!(bounded(&two, t(1)).is_empty());
    // An outcome frees one place, for any process.
    let answers = one.record_attempts(&[(
        first[0].delivery.id.clone(),
        first[0].token,
        record(t(2), NextStep::Delivered, None),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
    let second = bounded(&two, t(3));
    assert_eq!(accounts(&second), ["acme"]);
    // A release frees its place at once.
    one.release(&[(first[1].delivery.id.clone(), first[1].token)])
        .unwrap();
    let third = bounded(&two, t(4));
    assert_eq!(accounts(&third), ["acme"]);
    assert!(bounded(&one, t(5)).is_empty());
    // An extended lease keeps its place past its old end; a lease that ran out frees it.
    two.extend_leases(&[(third[0].delivery.id.clone(), third[0].token)], t(100))
        .unwrap();
    // (globex's lease from t(0) ran out too.)
    let later = bounded(&one, t(40));
    assert_eq!(
        accounts(&later),
        ["acme", "globex"],
        "acme: only the place of the lease that ran out"
    );
    assert!(bounded(&two, t(41)).is_empty());
    // Without a bound, nothing is held back.
    let unbounded = one
        .claim(&ClaimRequest {
            now: t(200),
            limit: 10,
            lease: Duration::from_secs(30),
            ..ClaimRequest::default()
        })
        .unwrap();
    assert_eq!(unbounded.len(), 8, "{:?}", accounts(&unbounded));
    // next_due leaves out an endpoint whose every place is taken.
    let three = db.open();
    let s = db.s();
    db.sql(&format!(
        "UPDATE {s}.endpoint_slots SET lease_until = 9223372036854775000, claim_token = 1"
    ));
    assert_eq!(three.next_due(t(300), &[]).unwrap(), None);
    db.sql(&format!(
        "UPDATE {s}.endpoint_slots SET lease_until = NULL, claim_token = NULL WHERE slot = 1"
    ));
    assert!(three.next_due(t(300), &[]).unwrap().is_some());
}

#[test]
fn a_failed_recording_keeps_the_servers_sqlstate_message_and_detail_for_each_outcome() {
    let db = db!();
    let store = db.open();
    store
        .insert(&[new("a", "acme", "x=1", t(0)), new("b", "acme", "x=2", t(0))])
        .unwrap();
    let claims = claim(&store, t(0), 10, &[]);
    assert_eq!(claims.len(), 2);
    // Every change to a delivery is refused from now on, with a SQLSTATE and a detail.
    db.sql(&format!(
        "CREATE FUNCTION {s}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'no outcomes today' USING ERRCODE = 'P0001', \
             DETAIL = 'a test trigger'; END $$; \
         CREATE TRIGGER refuse BEFORE UPDATE OR DELETE ON {s}.deliveries \
           FOR EACH ROW EXECUTE FUNCTION {s}.refuse()",
        s = db.s()
    ));
    let outcomes: Vec<_> = claims
        .iter()
        .map(|c| {
            (
                c.delivery.id.clone(),
                c.token,
                record(t(1), NextStep::Delivered, None),
            )
        })
        .collect();
    for answer in store.record_attempts(&outcomes) {
        let e = answer.expect_err("refused by the trigger");
        let chain = crate::error::error_chain(&e);
        assert!(
            chain.contains("ERROR P0001: no outcomes today (detail: a test trigger)"),
            "{chain}"
        );
    }
}
