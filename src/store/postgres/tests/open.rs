//! Opening a store: migrating a schema (new, concurrent, newer, version 1), opening from a
//! runtime's thread, and a URL's password kept out of what is shown.

use super::*;

#[test]
fn migrates_on_open_and_reopens() {
    let db = db!();
    let store = db.open();
    let s = db.s();
    assert_eq!(
        db.scalar(&format!(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM {s}.schema_version"
        )),
        "1,2,3,4"
    );
    store.insert(&[new("a", "acme", "x=1", t(0))]).unwrap();
    drop(store);
    let store = db.open();
    let listed = store.list(&DeliveryFilter::account("acme"), 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].body.bytes().as_ref(), b"x=1");
    assert_eq!(listed[0].created_at, t(0));
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM {s}.schema_version")),
        "4"
    );
}

#[test]
fn stores_opening_at_once_migrate_once() {
    let db = db!();
    let opened: Vec<Result<PostgresStore>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| db.builder().open_blocking()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for store in &opened {
        assert!(store.is_ok(), "{:?}", store.as_ref().err());
    }
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM {}.schema_version", db.s())),
        "4"
    );
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let db = db!();
    let store = db.open();
    store.insert(&[new("a", "acme", "x=1", t(0))]).unwrap();
    drop(store);
    let s = db.s();
    db.sql(&format!(
        "INSERT INTO {s}.schema_version (version, release) VALUES (99, 'future')"
    ));
    let before = db.sql(&format!(
        "SELECT (SELECT count(*) FROM {s}.schema_version), (SELECT count(*) FROM {s}.deliveries), \
         (SELECT count(*) FROM pg_tables WHERE schemaname = '{}')",
        db.schema
    ));
    let err = db.builder().open_blocking().unwrap_err();
    assert!(
        matches!(&err, Error::Store { message, .. } if message.contains("version 99")
            && message.contains("newer")),
        "{err}"
    );
    let after = db.sql(&format!(
        "SELECT (SELECT count(*) FROM {s}.schema_version), (SELECT count(*) FROM {s}.deliveries), \
         (SELECT count(*) FROM pg_tables WHERE schemaname = '{}')",
        db.schema
    ));
    assert_eq!(before, after);
}

#[tokio::test]
async fn works_when_called_from_inside_a_tokio_runtime() {
    let db = db!();
    // Opening and calling from a runtime's thread: the store never nests a runtime.
    let store = db.open();
    store.insert(&[new("a", "acme", "1", t(0))]).unwrap();
    assert!(store.has_pending().unwrap());
    drop(store);
}

#[test]
fn the_password_never_shows() {
    let url = "postgres://dialer:s3cr3t-pw@127.0.0.1:1/outbox?connect_timeout=1";
    let builder = PostgresStore::builder(url);
    let shown = format!("{builder:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("dialer@127.0.0.1:1/outbox"), "{shown}");
    let err = builder.open_blocking().unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(" / {e} / {e:?}"));
        source = e.source();
    }
    assert!(!chain.contains("s3cr3t"), "{chain}");
    assert!(chain.contains("127.0.0.1:1"), "{chain}");
    let bad = PostgresStore::builder("postgres://u:pw@h/db")
        .schema("Robert'); DROP")
        .open_blocking();
    assert!(matches!(
        bad,
        Err(Error::InvalidConfig {
            field: "schema",
            ..
        })
    ));
}

/// A schema a release of version 1 made, with work in it, is migrated on open: its pending
/// deliveries, counts and delivered ids are kept and claimable, and a delivered id kept
/// without a fingerprint stays a no-op for any call result under it.
#[test]
fn a_version_1_schema_with_work_in_it_is_migrated_and_keeps_it() {
    let db = db!();
    let s = db.s();
    db.sql(&format!(
        "CREATE SCHEMA {s}; \
         CREATE TABLE {s}.schema_version (version integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now(), release text NOT NULL); \
         {v1} \
         INSERT INTO {s}.schema_version (version, release) VALUES (1, '0.1.0'); \
         INSERT INTO {s}.deliveries (id, account, campaign, body, encoding, created_at, \
             next_attempt_at, state) VALUES ('old-1', 'acme', 'c', 'x=1', 'form', 1, 1, 'pending'); \
         INSERT INTO {s}.stats (account, campaign, pending, delivered) VALUES ('acme', 'c', 1, 5); \
         INSERT INTO {s}.delivered_ids (id, delivered_at) VALUES ('old-0', {now})",
        v1 = sql::with_schema(schema::MIGRATIONS[0], &db.schema),
        now = Timestamp::now().as_nanosecond(),
    ));
    let store = db.open();
    assert_eq!(
        db.scalar(&format!(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM {s}.schema_version"
        )),
        "1,2,3,4"
    );
    let stats = store.stats(&AccountId::new("acme"), None).unwrap();
    assert_eq!((stats.pending, stats.delivered), (1, 5));
    let claimed = claim(&store, t(0), 10, &[]);
    assert_eq!(ids(&claimed), ["old-1"]);
    // Delivered before fingerprints were kept: any call result under it is a no-op.
    store
        .insert(&[new("old-0", "acme", "anything", t(0))])
        .unwrap();
    assert_eq!(ids(&claim(&store, t(0), 10, &[])), Vec::<&str>::new());
}
