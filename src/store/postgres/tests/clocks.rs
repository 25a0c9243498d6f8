//! Processes whose clocks disagree with the database's.

use super::*;

/// A store whose process clock is `off` from this host's (2 minutes ahead: `+120 s`), and
/// that clock's now.
struct OffClock {
    store: PostgresStore,
    off: jiff::SignedDuration,
}

impl OffClock {
    fn open(db: &Db, off_seconds: i64) -> OffClock {
        let store = db.open();
        let off = jiff::SignedDuration::from_secs(off_seconds);
        // Measured against this host's clock; that process's clock reads `off` more.
        let measured = store.ctx.clock.skew();
        store.ctx.clock.pin(measured - off);
        OffClock { store, off }
    }

    fn now(&self) -> Timestamp {
        Timestamp::now() + self.off
    }

    fn claim(&self, after: Duration) -> Vec<Claim> {
        claim(&self.store, self.now() + after, 10, &[])
    }
}

/// Close enough for times read against real clocks a few statements apart.
fn near(a: Timestamp, b: Timestamp) -> bool {
    a.duration_since(b).unsigned_abs() < Duration::from_secs(2)
}

/// Three processes with clocks 2 minutes ahead, right and 2 minutes behind share leases and
/// due times: every comparison is on the database's clock, each process's own clock only
/// measures durations from its now.
#[test]
fn stores_on_clocks_two_minutes_apart_share_leases_and_due_times() {
    let db = db!();
    let ahead = OffClock::open(&db, 120);
    let right = OffClock::open(&db, 0);
    let behind = OffClock::open(&db, -120);
    right
        .store
        .insert(&[new("a", "acme", "1", right.now())])
        .unwrap();

    // Due at once for every clock; under the ahead one's lease of 30 s for all of them.
    assert!(near(
        behind.store.next_due(behind.now(), &[]).unwrap().unwrap(),
        behind.now()
    ));
    let first = ahead.claim(Duration::ZERO);
    assert_eq!(ids(&first), ["a"]);
    assert!(near(
        first[0].lease_until,
        ahead.now() + Duration::from_secs(30)
    ));
    assert!(behind.claim(Duration::from_secs(25)).is_empty());
    assert!(right.claim(Duration::from_secs(25)).is_empty());
    assert_eq!(behind.store.next_due(behind.now(), &[]).unwrap(), None);
    // Its lease runs out 30 s after the claim, for the process behind too.
    let second = behind.claim(Duration::from_secs(35));
    assert_eq!(ids(&second), ["a"]);

    // A retry in 10 s is due 10 s from now for every clock.
    let retry_at = behind.now() + Duration::from_secs(10);
    let answers = behind.store.record_attempts(&[(
        second[0].delivery.id.clone(),
        second[0].token,
        record(behind.now(), NextStep::RetryAt(retry_at), Some("HTTP 503")),
    )]);
    assert!(answers[0].is_ok(), "{answers:?}");
    for clock in [&ahead, &right, &behind] {
        let due = clock.store.next_due(clock.now(), &[]).unwrap().unwrap();
        assert!(
            near(due, clock.now() + Duration::from_secs(10)),
            "{due} {}",
            clock.now()
        );
        assert!(clock.claim(Duration::from_secs(5)).is_empty());
    }
    assert_eq!(ids(&ahead.claim(Duration::from_secs(15))), ["a"]);
    // Each reads the times on its own clock.
    let listed = behind
        .store
        .list(&DeliveryFilter::account("acme"), 10)
        .unwrap();
    assert!(near(listed[0].created_at, behind.now()));
    assert!(near(listed[0].last_attempt_at.unwrap(), behind.now()));
    let listed = ahead
        .store
        .list(&DeliveryFilter::account("acme"), 10)
        .unwrap();
    assert!(near(listed[0].created_at, ahead.now()));
}

/// A dialer whose clock runs 2 minutes ahead enqueues in its own transaction: the delivery is
/// due at the database's now, not 2 minutes later.
#[test]
fn a_transactional_enqueue_is_due_at_the_databases_now_whatever_the_dialers_clock() {
    let db = db!();
    let store = db.open();
    let ahead = Timestamp::now() + Duration::from_secs(120);
    let mut delivery = new("call-ahead", "acme", "Reference=1", ahead);
    delivery.next_attempt_at = ahead + Duration::from_secs(5);
    block_on(async {
        let (client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        assert_eq!(
            enqueue_in(&client, &db.schema, &delivery).await.unwrap(),
            Enqueued::Stored
        );
    });
    let now = Timestamp::now();
    let due = store.next_due(now, &[]).unwrap().unwrap();
    assert!(
        near(due, now + Duration::from_secs(5)),
        "due {due}, now {now}"
    );
    let listed = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert!(near(listed[0].created_at, now));
}
