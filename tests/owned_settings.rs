//! Settings the dialer owns, on the durable stores (SQLite, and PostgreSQL with two instances
//! on one schema): every account listed once by pages while saves go on, filtered by
//! indicator; whole settings put in batches of a thousand and more, idempotently and in one
//! transaction; a stale put refused; the new-campaign setting kept across a restart.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod pg_support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use call_result_webhook::campaign::{OffReason, WebhookIndicator};
use call_result_webhook::owned_settings::{
    AccountQuery, AccountSettings, Expected, PutOutcome, SettingsPut,
};
use call_result_webhook::store::{AccountSave, Settings, SqliteStore, Store};
use call_result_webhook::{
    AccountId, CallResult, Error, PreferencesUpdate, Principal, UrlPolicy, Webhooks,
};
use pg_support::Database;

/// More accounts than a page holds many times over, and than one filtered read.
const ACCOUNTS: usize = 1_200;

fn sync() -> Principal {
    Principal::administrator("dialer-sync")
}

fn build(store: impl Store) -> Webhooks {
    Webhooks::builder()
        .store(store)
        .policy(UrlPolicy::new())
        .build()
        .unwrap()
}

fn id(i: usize) -> AccountId {
    format!("acct-{i:05}").into()
}

/// Account `i` as the dialer keeps it: every seventh switched off, every eleventh with no URL.
fn settings(i: usize) -> AccountSettings {
    let mut prefs = PreferencesUpdate::new()
        .enabled(!i.is_multiple_of(7))
        .credentials("dialer", format!("secret-{i}"));
    if !i.is_multiple_of(11) {
        prefs = prefs.url(&format!("https://crm{i}.example/hook"));
    }
    AccountSettings::new(prefs).campaign(format!("camp-{}", i % 3), true)
}

fn all_puts() -> Vec<SettingsPut> {
    (0..ACCOUNTS)
        .map(|i| SettingsPut::new(id(i), settings(i)))
        .collect()
}

/// Walks every account by pages of `limit` with `query`, returning the ids in order.
fn walk(webhooks: &Webhooks, query: AccountQuery, limit: usize) -> Vec<AccountId> {
    walk_with(webhooks, query, limit, || {})
}

/// [`walk`], calling `between` before each page.
fn walk_with(
    webhooks: &Webhooks,
    query: AccountQuery,
    limit: usize,
    mut between: impl FnMut(),
) -> Vec<AccountId> {
    let mut listed = Vec::new();
    let mut query = query.limit(limit);
    loop {
        between();
        let page = webhooks.list_accounts_blocking(&query).unwrap();
        assert!(page.accounts.len() <= limit);
        listed.extend(page.accounts.iter().map(|a| a.settings.id().clone()));
        match page.next {
            Some(next) => query = query.after(next),
            None => return listed,
        }
    }
}

/// Every one of the first [`ACCOUNTS`] listed exactly once, and nothing listed twice.
fn assert_once_each(listed: &[AccountId]) {
    let mut counts: HashMap<&AccountId, usize> = HashMap::new();
    for a in listed {
        *counts.entry(a).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "listed more than once: {twice:?}");
    let missing: Vec<_> = (0..ACCOUNTS)
        .map(id)
        .filter(|a| !counts.contains_key(a))
        .collect();
    assert!(missing.is_empty(), "never listed: {missing:?}");
}

/// Seeds every account in one batch; each is saved.
fn seed(webhooks: &Webhooks) {
    let answers = webhooks
        .put_settings_batch_blocking(&sync(), all_puts())
        .unwrap();
    assert_eq!(answers.len(), ACCOUNTS);
    assert!(answers.iter().all(|a| a.as_ref().unwrap().is_saved()));
}

/// Pages through every account while `writer` saves settings: existing accounts changed,
/// new ones added before and after every page.
fn paging_while_saving(lister: &Webhooks, writer: &Webhooks) {
    seed(writer);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = AtomicUsize::new(0);
    let saves = std::thread::scope(|scope| {
        let saver = scope.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let existing = id((n * 37) % ACCOUNTS);
                writer
                    .set_campaign_webhook_blocking(
                        &sync(),
                        &existing,
                        &format!("moved-{n}").into(),
                        true,
                    )
                    .unwrap();
                for new in [
                    format!("acct-{:05}-new", n * 13 % ACCOUNTS),
                    format!("zz-{n}"),
                ] {
                    writer
                        .put_settings_blocking(
                            &sync(),
                            &new.into(),
                            AccountSettings::default(),
                            Expected::Any,
                        )
                        .unwrap();
                }
                n += 1;
                rounds.store(n, Ordering::SeqCst);
            }
            n
        });
        // Each page waits for a round of saves after the page before.
        let mut seen = 0;
        let listed = walk_with(lister, AccountQuery::new(), 97, || {
            while rounds.load(Ordering::SeqCst) == seen {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            seen = rounds.load(Ordering::SeqCst);
        });
        stop.store(true, Ordering::SeqCst);
        assert_once_each(&listed);
        let sorted: BTreeSet<&AccountId> = listed.iter().collect();
        assert_eq!(sorted.len(), listed.len());
        saver.join().unwrap()
    });
    assert!(
        saves >= ACCOUNTS / 97,
        "a round of saves between every two pages"
    );
    eprintln!("walked {ACCOUNTS}+ accounts by pages of 97 while {saves} rounds of saves ran");
}

/// Filtered pages: only the accounts showing the indicators asked for, every one of them.
fn filtering(webhooks: &Webhooks) {
    seed(webhooks);
    let off = walk(
        webhooks,
        AccountQuery::new().indicator(WebhookIndicator::Off(OffReason::AccountDisabled)),
        50,
    );
    let expected: Vec<AccountId> = (0..ACCOUNTS)
        .filter(|i| i.is_multiple_of(7))
        .map(id)
        .collect();
    assert_eq!(off, expected);
    let no_url = walk(
        webhooks,
        AccountQuery::new().indicator(WebhookIndicator::Off(OffReason::AccountNotConfigured)),
        1_000,
    );
    let expected: Vec<AccountId> = (0..ACCOUNTS)
        .filter(|i| !i.is_multiple_of(7) && i.is_multiple_of(11))
        .map(id)
        .collect();
    assert_eq!(no_url, expected);
    let active = walk(
        webhooks,
        AccountQuery::new().indicator(WebhookIndicator::Active),
        100,
    );
    assert_eq!(active.len(), ACCOUNTS - off.len() - no_url.len());
    // Nothing is paused.
    let paused = webhooks
        .list_accounts_blocking(&AccountQuery::new().indicator(WebhookIndicator::Paused))
        .unwrap();
    assert!(paused.accounts.is_empty() && paused.next.is_none());
    // A listing never shows a password.
    let page = webhooks
        .list_accounts_blocking(&AccountQuery::new().limit(20).with_counts(true))
        .unwrap();
    assert!(page.accounts.iter().all(|a| a.stats.is_some()));
    assert!(!format!("{page:?}").contains("secret-"));
}

/// The batch again changes nothing: no new version, nothing to follow.
fn batch_is_idempotent(webhooks: &Webhooks, store: &dyn Settings) {
    seed(webhooks);
    let cursor = store.load_settings().unwrap().cursor;
    let again = webhooks
        .put_settings_batch_blocking(&sync(), all_puts())
        .unwrap();
    assert!(
        again
            .iter()
            .all(|a| matches!(a, Ok(PutOutcome::Unchanged { .. })))
    );
    assert_eq!(
        store.load_settings().unwrap().cursor,
        cursor,
        "no new version"
    );
    assert!(store.changes_since(cursor).unwrap().accounts.is_empty());
    // One account changed in the dialer's database: only it is saved.
    let mut puts = all_puts();
    puts[5] = SettingsPut::new(id(5), settings(5).campaign("spring", true));
    let answers = webhooks.put_settings_batch_blocking(&sync(), puts).unwrap();
    let saved: Vec<usize> = (0..ACCOUNTS)
        .filter(|i| answers[*i].as_ref().unwrap().is_saved())
        .collect();
    assert_eq!(saved, [5]);
}

/// A put against the version read is refused once another save moved it; read again, it goes.
fn stale_put(a: &Webhooks, b: &Webhooks) {
    let acme: AccountId = "acme".into();
    let read = a
        .put_settings_blocking(&sync(), &acme, settings(1), Expected::New)
        .unwrap()
        .version();
    b.set_campaign_webhook_blocking(&sync(), &acme, &"other".into(), true)
        .unwrap();
    let err = a
        .put_settings_blocking(&sync(), &acme, settings(2), Expected::Version(read))
        .unwrap_err();
    assert!(matches!(err, Error::SettingsStale { .. }), "{err:?}");
    let listed = a
        .list_accounts_blocking(&AccountQuery::new().limit(1))
        .unwrap();
    let now = listed.accounts[0].version;
    assert!(now > read);
    a.put_settings_blocking(&sync(), &acme, settings(2), Expected::Version(now))
        .unwrap();
}

fn sqlite(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
    SqliteStore::open(dir.path().join(name)).unwrap()
}

#[test]
fn sqlite_pages_every_account_once_while_saves_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let webhooks = build(sqlite(&dir, "o.db"));
    paging_while_saving(&webhooks, &webhooks);
}

#[test]
fn sqlite_filters_by_indicator() {
    let dir = tempfile::tempdir().unwrap();
    filtering(&build(sqlite(&dir, "o.db")));
}

#[test]
fn sqlite_batch_put_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(sqlite(&dir, "o.db"));
    batch_is_idempotent(&build(store.clone()), &*store);
}

#[test]
fn sqlite_stale_put_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let webhooks = build(sqlite(&dir, "o.db"));
    stale_put(&webhooks, &webhooks);
}

#[test]
fn sqlite_new_campaign_setting_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (acme, fresh) = ("acme".into(), "fresh".into());
    let call = CallResult::builder().reference("1").build();
    {
        let webhooks = build(sqlite(&dir, "o.db"));
        let on = PreferencesUpdate::new()
            .enabled(true)
            .url("https://crm.example/hook");
        webhooks
            .put_settings_blocking(&sync(), &acme, AccountSettings::new(on), Expected::Any)
            .unwrap();
        assert!(
            !webhooks
                .submit_blocking(&acme, &fresh, call.clone())
                .unwrap()
                .is_accepted(),
            "off by default"
        );
        let on = PreferencesUpdate::new()
            .enabled(true)
            .url("https://crm.example/hook")
            .new_campaigns_enabled(true);
        webhooks
            .put_settings_blocking(&sync(), &acme, AccountSettings::new(on), Expected::Any)
            .unwrap();
    }
    let webhooks = build(sqlite(&dir, "o.db"));
    assert!(
        webhooks
            .submit_blocking(&acme, &fresh, call)
            .unwrap()
            .is_accepted()
    );
}

#[test]
fn postgres_pages_every_account_once_while_another_instance_saves() {
    let Some(db) = Database::new("postgres_pages_every_account_once_while_another_instance_saves")
    else {
        return;
    };
    let (a, b) = (build(db.store()), build(db.store()));
    paging_while_saving(&a, &b);
}

#[test]
fn postgres_filters_by_indicator() {
    let Some(db) = Database::new("postgres_filters_by_indicator") else {
        return;
    };
    filtering(&build(db.store()));
}

#[test]
fn postgres_batch_put_is_idempotent_and_one_transaction() {
    let Some(db) = Database::new("postgres_batch_put_is_idempotent_and_one_transaction") else {
        return;
    };
    let store = Arc::new(db.store());
    batch_is_idempotent(&build(store.clone()), &*store);
    // Every account of the first batch was written by one transaction: one xmin. (The
    // second batch rewrote one row, in a transaction of its own.)
    let writers = db.query_i64(&format!(
        "SELECT count(DISTINCT xmin::text)::bigint FROM {}.accounts",
        db.schema
    ));
    assert_eq!(
        writers, 2,
        "the first batch in one transaction, the change in another"
    );
}

#[test]
fn postgres_batch_that_fails_stores_nothing() {
    let Some(db) = Database::new("postgres_batch_that_fails_stores_nothing") else {
        return;
    };
    let store = db.store();
    let (new, old) = (AccountId::from("new"), AccountId::from("old"));
    let v = match store.save_account(&old, r#"{"v":1}"#, None).unwrap() {
        call_result_webhook::store::SaveOutcome::Saved { version } => version,
        stale => panic!("{stale:?}"),
    };
    // PostgreSQL refuses a NUL in text: the batch's second statement fails after its first
    // (the new account's insert) went through.
    let bad = AccountId::new("bad\0id");
    let failed = store.save_accounts(&[
        AccountSave {
            account: &new,
            settings_json: r#"{"v":"new"}"#,
            expected: None,
        },
        AccountSave {
            account: &old,
            settings_json: r#"{"v":2}"#,
            expected: Some(v),
        },
        AccountSave {
            account: &bad,
            settings_json: r#"{"v":3}"#,
            expected: Some(v),
        },
    ]);
    assert!(failed.is_err());
    assert_eq!(store.load_account(&new).unwrap(), None, "nothing stored");
    assert_eq!(store.load_account(&old).unwrap().unwrap().version, v);
}

#[test]
fn postgres_stale_put_is_refused_across_instances() {
    let Some(db) = Database::new("postgres_stale_put_is_refused_across_instances") else {
        return;
    };
    stale_put(&build(db.store()), &build(db.store()));
}
