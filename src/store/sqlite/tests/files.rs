//! The file: one store at a time, its permissions, and migrations from older versions.

use super::*;

#[cfg(unix)]
#[test]
fn a_file_in_use_is_refused_until_its_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let first = SqliteStore::open(&path).unwrap();
    first.insert(&[exact(1, "acme", "c1")]).unwrap();
    match SqliteStore::open(&path) {
        Err(Error::StoreInUse { what }) => assert_eq!(what, path.display().to_string()),
        other => panic!("a second store on the same file must be refused, got {other:?}"),
    }
    // The refused open changed nothing: the first store still has its delivery.
    assert_eq!(first.stats(&"acme".into(), None).unwrap().pending, 1);
    drop(first);
    let again = SqliteStore::open(&path).unwrap();
    assert_eq!(again.stats(&"acme".into(), None).unwrap().pending, 1);
}

#[test]
fn files_are_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    let store = SqliteStore::open(&path).unwrap();
    let _ = store
        .save_account(&"acme".into(), r#"{"password":"hunter2"}"#, None)
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", path.display());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
    }
}

fn set_version(path: &Path, version: i64) {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
}

fn version(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn a_file_from_a_newer_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    drop(SqliteStore::open(&path).unwrap());
    let newer = MIGRATIONS.len() as i64 + 1;
    set_version(&path, newer);
    let err = SqliteStore::open(&path).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Store { .. }));
    assert!(
        message.contains(&format!("schema version {newer}")),
        "{message}"
    );
    assert!(message.contains("newer release"), "{message}");
    assert_eq!(version(&path), newer);
}

#[test]
fn a_database_that_is_not_an_outbox_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        err.to_string().contains("not a call-result-webhook outbox"),
        "{err}"
    );
    let conn = Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "left untouched");
    conn.execute_batch("DROP TABLE invoices; PRAGMA user_version = 3")
        .unwrap();
    drop(conn);
    assert!(
        SqliteStore::open(&path).is_err(),
        "versioned by someone else"
    );

    for path in ["", ":memory:"] {
        assert!(matches!(
            SqliteStore::open(path),
            Err(Error::InvalidConfig { field: "path", .. })
        ));
    }
}

#[test]
fn an_older_file_is_migrated() {
    // Version 0: an empty file, as an older release that had not yet created it leaves it.
    let dir = tempfile::tempdir().unwrap();
    let path = in_dir(&dir);
    Connection::open(&path)
        .unwrap()
        .execute_batch("VACUUM")
        .unwrap();
    assert_eq!(version(&path), 0);
    let store = SqliteStore::open(&path).unwrap();
    store.insert(&new_deliveries("acme", "c1", 1)).unwrap();
    drop(store);
    assert_eq!(version(&path), MIGRATIONS.len() as i64);

    // Version 1 to 2: a file from the release that did not remember delivered ids keeps its
    // deliveries and counts, and remembers from then on.
    let v1 = dir.path().join("v1.db");
    let mut conn = Connection::open(&v1).unwrap();
    migrate(&mut conn, &v1, &MIGRATIONS[..1]).unwrap();
    assert_eq!(version(&v1), 1);
    let old = exact(1, "acme", "c1");
    conn.execute(
        "INSERT INTO deliveries (id, account, campaign, body, encoding, created_at, \
         next_attempt_at, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 'pending')",
        rusqlite::params![
            old.id.as_str(),
            old.account.as_str(),
            old.campaign.as_str(),
            old.body.bytes().as_ref(),
            old.body.encoding().as_str(),
            i64::try_from(old.created_at.as_nanosecond()).unwrap(),
        ],
    )
    .unwrap();
    conn.execute_batch("INSERT INTO stats (account, campaign, pending) VALUES ('acme', 'c1', 1)")
        .unwrap();
    drop(conn);
    let store = SqliteStore::open(&v1).unwrap();
    assert_eq!(version(&v1), MIGRATIONS.len() as i64);
    let due = store.due(&"acme".into(), t(1_000), 10, &[]).unwrap();
    assert_eq!((due.len(), &due[0].body), (1, &old.body));
    store.insert(std::slice::from_ref(&old)).unwrap();
    store
        .record_attempt(&old.id, &attempt(t(1_000), 204, NextStep::Delivered))
        .unwrap();
    store.insert(std::slice::from_ref(&old)).unwrap();
    let stats = store.stats(&"acme".into(), None).unwrap();
    assert_eq!((stats.pending, stats.delivered), (0, 1));
    drop(store);
    let remembered: i64 = Connection::open(&v1)
        .unwrap()
        .query_row("SELECT count(*) FROM delivered_ids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(remembered, 1);

    // A later step runs on a file at the current version and keeps its data.
    let next = "ALTER TABLE deliveries ADD COLUMN signature TEXT; \
                CREATE TABLE endpoints (account TEXT PRIMARY KEY NOT NULL)";
    let mut steps = MIGRATIONS.to_vec();
    steps.push(next);
    let mut conn = Connection::open(&path).unwrap();
    migrate(&mut conn, &path, &steps).unwrap();
    assert_eq!(version(&path), steps.len() as i64);
    let kept: i64 = conn
        .query_row(
            "SELECT count(*) FROM deliveries WHERE signature IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 1);
    // Already there: nothing runs twice.
    migrate(&mut conn, &path, &steps).unwrap();
    // And this release refuses what the later one wrote.
    drop(conn);
    assert!(SqliteStore::open(&path).is_err());
}

#[test]
fn settings_saved_before_versions_are_in_every_snapshot() {
    use crate::store::{SaveOutcome, Settings, Versioned};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    let mut conn = Connection::open(&path).unwrap();
    migrate(&mut conn, &path, &MIGRATIONS[..2]).unwrap();
    conn.execute_batch(
        "INSERT INTO accounts (id, settings) VALUES ('acme', '{\"v\":1}'); \
         INSERT INTO health (account, health) VALUES ('acme', 'h1')",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(version(&path), MIGRATIONS.len() as i64);
    let snapshot = Settings::load_settings(&store).unwrap();
    let at = |json: &str, version| Versioned {
        json: json.to_owned(),
        version,
    };
    assert_eq!(snapshot.accounts, [at(r#"{"v":1}"#, 0)]);
    assert_eq!(snapshot.health, [("acme".into(), at("h1", 0))]);
    assert_eq!(snapshot.cursor, 0);
    let none = Settings::changes_since(&store, snapshot.cursor).unwrap();
    assert!(none.accounts.is_empty() && none.health.is_empty());
    // Saved before versions, at version 0: a save against it goes through.
    let saved = Settings::save_health(&store, &"acme".into(), "h2", false, Some(0)).unwrap();
    assert_eq!(saved, SaveOutcome::Saved { version: 1 });
    let changed = Settings::changes_since(&store, snapshot.cursor).unwrap();
    assert!(changed.accounts.is_empty());
    assert_eq!(changed.health, [("acme".into(), at("h2", 1))]);
    assert_eq!(changed.cursor, 1);
    // The counter outlives a restart.
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    let saved = Settings::save_account(&store, &"bolt".into(), r#"{"v":2}"#, None).unwrap();
    assert_eq!(saved, SaveOutcome::Saved { version: 2 });
    let changed = Settings::changes_since(&store, 1).unwrap();
    assert_eq!(
        (changed.accounts, changed.cursor),
        (vec![at(r#"{"v":2}"#, 2)], 2)
    );
}
