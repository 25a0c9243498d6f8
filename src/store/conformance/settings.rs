//! The checks of [`Settings`]: versions from one counter, compare-and-set saves, the cursor
//! to follow changes from, pages of accounts and batches of saves. (Pauses that hold claims
//! are checked with the claims.)

use crate::ids::AccountId;
use crate::store::{AccountSave, SaveOutcome, Settings, SettingsSnapshot, Versioned};

/// The version a save that must go through was written at.
pub(super) fn saved(outcome: SaveOutcome) -> u64 {
    match outcome {
        SaveOutcome::Saved { version } => version,
        SaveOutcome::Stale => panic!("a save at the stored version was refused as stale"),
    }
}

/// The accounts' JSON, sorted.
fn accounts(snapshot: &SettingsSnapshot) -> Vec<&str> {
    let mut all: Vec<&str> = snapshot.accounts.iter().map(|r| r.json.as_str()).collect();
    all.sort();
    all
}

/// The health records' accounts and JSON, sorted.
fn health(snapshot: &SettingsSnapshot) -> Vec<(&str, &str)> {
    let mut all: Vec<(&str, &str)> = snapshot
        .health
        .iter()
        .map(|(a, r)| (a.as_str(), r.json.as_str()))
        .collect();
    all.sort();
    all
}

pub(super) fn versioned(json: &str, version: u64) -> Versioned {
    Versioned {
        json: json.to_owned(),
        version,
    }
}

/// Saving an account's settings or an endpoint's health against its stored version replaces
/// it at a greater version, from one counter for both; the snapshot holds the last of each,
/// with its version.
pub fn settings_and_health_are_replaced<S: Settings + ?Sized>(store: &S) {
    let acme: AccountId = "acme".into();
    let v1 = saved(store.save_account(&acme, r#"{"v":1}"#, None).unwrap());
    let v2 = saved(store.save_account(&acme, r#"{"v":2}"#, Some(v1)).unwrap());
    let v3 = saved(store.save_account(&"b".into(), r#"{"v":3}"#, None).unwrap());
    let h1 = saved(store.save_health(&acme, "h1", false, None).unwrap());
    let h2 = saved(store.save_health(&acme, "h2", false, Some(h1)).unwrap());
    assert!(
        v1 < v2 && v2 < v3 && v3 < h1 && h1 < h2,
        "versions grow from one counter: {v1} {v2} {v3} {h1} {h2}"
    );
    let snapshot = store.load_settings().unwrap();
    assert_eq!(accounts(&snapshot), [r#"{"v":2}"#, r#"{"v":3}"#]);
    let mut records = snapshot.accounts.clone();
    records.sort_by_key(|r| r.version);
    assert_eq!(
        records,
        [versioned(r#"{"v":2}"#, v2), versioned(r#"{"v":3}"#, v3)]
    );
    assert_eq!(snapshot.health, [(acme.clone(), versioned("h2", h2))]);
    assert!(
        snapshot.cursor >= h2,
        "the cursor is past every version read"
    );
    assert_eq!(
        store.load_account(&acme).unwrap(),
        Some(versioned(r#"{"v":2}"#, v2))
    );
    assert_eq!(store.load_health(&acme).unwrap(), Some(versioned("h2", h2)));
    assert_eq!(store.load_account(&"none".into()).unwrap(), None);
    assert_eq!(store.load_health(&"b".into()).unwrap(), None);
}

/// What is saved after a snapshot's cursor is in [`Settings::changes_since`] that cursor, with
/// its version, and not since the cursor it returns.
pub fn settings_changes_follow_the_cursor<S: Settings + ?Sized>(store: &S) {
    let acme: AccountId = "acme".into();
    let empty = store.load_settings().unwrap();
    assert!(empty.accounts.is_empty() && empty.health.is_empty());
    let nothing = store.changes_since(empty.cursor).unwrap();
    assert!(nothing.accounts.is_empty() && nothing.health.is_empty());

    let a1 = saved(store.save_account(&acme, r#"{"v":1}"#, None).unwrap());
    let h1 = saved(store.save_health(&acme, "h1", false, None).unwrap());
    let first = store.load_settings().unwrap();
    assert_eq!(first.accounts, [versioned(r#"{"v":1}"#, a1)]);
    assert_eq!(first.health, [(acme.clone(), versioned("h1", h1))]);
    let changes = store.changes_since(empty.cursor).unwrap();
    assert_eq!(changes.accounts, [versioned(r#"{"v":1}"#, a1)]);
    assert_eq!(changes.health, [(acme.clone(), versioned("h1", h1))]);
    for cursor in [first.cursor, changes.cursor] {
        let none = store.changes_since(cursor).unwrap();
        assert!(
            none.accounts.is_empty() && none.health.is_empty(),
            "nothing saved since {cursor}"
        );
    }

    let b3 = saved(store.save_account(&"b".into(), r#"{"v":3}"#, None).unwrap());
    let later = store.changes_since(first.cursor).unwrap();
    assert_eq!(later.accounts, [versioned(r#"{"v":3}"#, b3)]);
    assert!(later.health.is_empty());
    let a2 = saved(store.save_account(&acme, r#"{"v":2}"#, Some(a1)).unwrap());
    let h2 = saved(store.save_health(&acme, "h2", false, Some(h1)).unwrap());
    let latest = store.changes_since(first.cursor).unwrap();
    assert_eq!(accounts(&latest), [r#"{"v":2}"#, r#"{"v":3}"#]);
    assert_eq!(health(&latest), [("acme", "h2")]);
    let since_later = store.changes_since(later.cursor).unwrap();
    assert_eq!(since_later.accounts, [versioned(r#"{"v":2}"#, a2)]);
    assert_eq!(since_later.health, [(acme.clone(), versioned("h2", h2))]);
    let none = store.changes_since(latest.cursor).unwrap();
    assert!(none.accounts.is_empty() && none.health.is_empty());
}

/// An account's settings are saved only against the version they are stored at: a save that
/// expects none finds them stored, one that expects an older version finds a newer one; each
/// says [`SaveOutcome::Stale`] and writes nothing (no new version, nothing to follow).
pub fn a_stale_account_save_writes_nothing<S: Settings + ?Sized>(store: &S) {
    let acme: AccountId = "acme".into();
    let v1 = saved(store.save_account(&acme, r#"{"v":1}"#, None).unwrap());
    assert_eq!(
        store.save_account(&acme, r#"{"v":"lost"}"#, None).unwrap(),
        SaveOutcome::Stale,
        "created twice"
    );
    let v2 = saved(store.save_account(&acme, r#"{"v":2}"#, Some(v1)).unwrap());
    assert!(v2 > v1);
    let cursor = store.load_settings().unwrap().cursor;
    for stale in [Some(v1), Some(v2 + 1), Some(0), Some(u64::MAX), None] {
        assert_eq!(
            store.save_account(&acme, r#"{"v":"lost"}"#, stale).unwrap(),
            SaveOutcome::Stale,
            "a save expecting {stale:?}, stored at {v2}"
        );
    }
    assert_eq!(
        store.load_account(&acme).unwrap(),
        Some(versioned(r#"{"v":2}"#, v2))
    );
    let none = store.changes_since(cursor).unwrap();
    assert!(
        none.accounts.is_empty() && none.health.is_empty(),
        "a stale save is nothing to follow"
    );
    // Another account's save does not make this one stale.
    saved(store.save_account(&"b".into(), r#"{"v":3}"#, None).unwrap());
    let v4 = saved(store.save_account(&acme, r#"{"v":4}"#, Some(v2)).unwrap());
    let changes = store.changes_since(cursor).unwrap();
    assert_eq!(accounts(&changes), [r#"{"v":3}"#, r#"{"v":4}"#]);
    assert!(changes.cursor >= v4);
}

/// An endpoint's health is saved only against the version it is stored at, as an account's
/// settings are; health and settings of one account are separate records.
pub fn a_stale_health_save_writes_nothing<S: Settings + ?Sized>(store: &S) {
    let acme: AccountId = "acme".into();
    let h1 = saved(store.save_health(&acme, "h1", false, None).unwrap());
    assert_eq!(
        store.save_health(&acme, "lost", false, None).unwrap(),
        SaveOutcome::Stale
    );
    // The account's settings are another record: created, not stale.
    saved(store.save_account(&acme, r#"{"v":1}"#, None).unwrap());
    let h2 = saved(store.save_health(&acme, "h2", false, Some(h1)).unwrap());
    assert!(h2 > h1);
    let cursor = store.load_settings().unwrap().cursor;
    for stale in [Some(h1), Some(h2 + 1), None] {
        assert_eq!(
            store.save_health(&acme, "lost", true, stale).unwrap(),
            SaveOutcome::Stale,
            "a save expecting {stale:?}, stored at {h2}"
        );
    }
    assert_eq!(store.load_health(&acme).unwrap(), Some(versioned("h2", h2)));
    let none = store.changes_since(cursor).unwrap();
    assert!(none.accounts.is_empty() && none.health.is_empty());
}

/// The ids, versions and health of one page of [`Settings::accounts_after`].
fn page<S: Settings + ?Sized>(
    store: &S,
    after: Option<&AccountId>,
    limit: usize,
) -> Vec<(String, String, Option<String>)> {
    store
        .accounts_after(after, limit)
        .unwrap()
        .into_iter()
        .map(|r| {
            assert_eq!(
                r.settings,
                store.load_account(&r.account).unwrap().unwrap(),
                "a page holds the account's stored settings and version"
            );
            assert_eq!(
                r.health,
                store.load_health(&r.account).unwrap(),
                "a page holds the endpoint's stored health and version"
            );
            (
                r.account.as_str().to_owned(),
                r.settings.json,
                r.health.map(|h| h.json),
            )
        })
        .collect()
}

/// Accounts are listed by [`Settings::accounts_after`] in pages, in the order of their ids
/// and each with its endpoint's health: every account once, none missing, while accounts
/// are saved between the pages (an updated account keeps its place). And
/// [`Settings::save_accounts`] saves each account as [`Settings::save_account`] would: new
/// ones and those at their stored version, each at a version of its own from the one
/// counter; a stale one writes nothing.
pub fn accounts_page_by_id_and_save_in_batches<S: Settings + ?Sized>(store: &S) {
    let versions = save_two_dozen_accounts(store);
    pages_list_every_account_once(store, &versions);
    a_batch_saves_each_against_its_version(store, &versions);
}

/// Versions of saved accounts, by id.
type Versions = std::collections::BTreeMap<String, u64>;

/// 24 accounts saved out of order, a health record for two of them and one for no account.
fn save_two_dozen_accounts<S: Settings + ?Sized>(store: &S) -> Versions {
    assert!(store.accounts_after(None, 10).unwrap().is_empty());
    // Saved out of order; ids that sort the same in any collation.
    let mut versions = Versions::new();
    for i in [
        7, 3, 19, 0, 11, 23, 5, 14, 1, 9, 20, 16, 2, 22, 8, 4, 13, 6, 18, 10, 21, 12, 15, 17,
    ] {
        let id = format!("acct{i:02}");
        let v = saved(
            store
                .save_account(&id.as_str().into(), &format!(r#"{{"v":{i}}}"#), None)
                .unwrap(),
        );
        versions.insert(id, v);
    }
    saved(
        store
            .save_health(&"acct03".into(), "h3", false, None)
            .unwrap(),
    );
    saved(
        store
            .save_health(&"acct15".into(), "h15", true, None)
            .unwrap(),
    );
    // A health record without settings is no account to list.
    saved(
        store
            .save_health(&"zz-health-only".into(), "h", false, None)
            .unwrap(),
    );
    versions
}

/// Three pages of 10 list every account once, in the order of ids, while accounts are saved
/// between the pages.
fn pages_list_every_account_once<S: Settings + ?Sized>(store: &S, versions: &Versions) {
    let first = page(store, None, 10);
    assert_eq!(first.len(), 10);
    // Between the pages: one account already listed and one not yet listed are saved again.
    let (a02, a12) = (AccountId::from("acct02"), AccountId::from("acct12"));
    saved(
        store
            .save_account(&a02, r#"{"v":"2b"}"#, Some(versions["acct02"]))
            .unwrap(),
    );
    saved(
        store
            .save_account(&a12, r#"{"v":"12b"}"#, Some(versions["acct12"]))
            .unwrap(),
    );
    let after = AccountId::new(first[9].0.clone());
    let second = page(store, Some(&after), 10);
    let after = AccountId::new(second[9].0.clone());
    let third = page(store, Some(&after), 10);
    assert_eq!(third.len(), 4, "24 accounts in pages of 10");
    let last = AccountId::new(third[3].0.clone());
    assert!(
        page(store, Some(&last), 10).is_empty(),
        "nothing after the last"
    );

    let listed: Vec<&str> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|(id, _, _)| id.as_str())
        .collect();
    let expected: Vec<String> = (0..24).map(|i| format!("acct{i:02}")).collect();
    assert_eq!(listed, expected, "every account once, in the order of ids");
    let json_of = |id: &str| {
        first
            .iter()
            .chain(&second)
            .chain(&third)
            .find(|(a, _, _)| a == id)
            .map(|(_, json, health)| (json.clone(), health.clone()))
            .unwrap()
    };
    assert_eq!(json_of("acct02").0, r#"{"v":2}"#, "listed before its save");
    assert_eq!(
        json_of("acct12").0,
        r#"{"v":"12b"}"#,
        "listed after its save"
    );
    assert_eq!(json_of("acct03").1.as_deref(), Some("h3"));
    assert_eq!(json_of("acct15").1.as_deref(), Some("h15"));
    assert_eq!(json_of("acct04").1, None);
    assert_eq!(page(store, None, 3).len(), 3, "at most the limit");
}

/// Saves in one batch: a new account, one at its stored version, one stale.
fn a_batch_saves_each_against_its_version<S: Settings + ?Sized>(store: &S, versions: &Versions) {
    let cursor = store.load_settings().unwrap().cursor;
    let (new, current, stale) = (
        AccountId::from("batch-new"),
        AccountId::from("acct05"),
        AccountId::from("acct06"),
    );
    let outcomes = store
        .save_accounts(&[
            AccountSave {
                account: &new,
                settings_json: r#"{"v":"new"}"#,
                expected: None,
            },
            AccountSave {
                account: &current,
                settings_json: r#"{"v":"5b"}"#,
                expected: Some(versions["acct05"]),
            },
            AccountSave {
                account: &stale,
                settings_json: r#"{"v":"lost"}"#,
                expected: Some(versions["acct06"] + 1_000),
            },
        ])
        .unwrap();
    assert_eq!(outcomes.len(), 3, "one answer per save");
    assert_eq!(outcomes[2], SaveOutcome::Stale);
    let (vn, vc) = (saved(outcomes[0]), saved(outcomes[1]));
    assert!(
        vn > cursor && vc > cursor && vn != vc,
        "versions from the one counter"
    );
    assert_eq!(
        store.load_account(&new).unwrap(),
        Some(versioned(r#"{"v":"new"}"#, vn))
    );
    assert_eq!(
        store.load_account(&current).unwrap(),
        Some(versioned(r#"{"v":"5b"}"#, vc))
    );
    assert_eq!(
        store.load_account(&stale).unwrap(),
        Some(versioned(r#"{"v":6}"#, versions["acct06"]))
    );
    let changes = store.changes_since(cursor).unwrap();
    assert_eq!(accounts(&changes), [r#"{"v":"5b"}"#, r#"{"v":"new"}"#]);
    assert!(changes.cursor >= vn.max(vc));
    // A batch that expects none for a stored account is stale too; an empty batch is nothing.
    assert_eq!(
        store
            .save_accounts(&[AccountSave {
                account: &new,
                settings_json: r#"{"v":"again"}"#,
                expected: None,
            }])
            .unwrap(),
        [SaveOutcome::Stale]
    );
    assert!(store.save_accounts(&[]).unwrap().is_empty());
}
