//! Account and campaign ids are checked where they enter, on every store alike: a NUL, an id
//! over `limits::MAX_ID_BYTES` and an empty id are refused with `Error::InvalidId` (naming the
//! field) at submit, at configuration and at every read, before anything is stored; and the
//! longest ids accepted, multi-byte UTF-8 included, are stored, read back and delivered. On
//! the memory store, SQLite and (when a server answers, tests/pg_support) PostgreSQL, with a
//! real receiver on 127.0.0.1.
#![cfg(all(feature = "hyper", feature = "sqlite"))]

#[cfg(feature = "postgres")]
mod pg_support;
mod support;

use std::time::Duration;

use call_result_webhook::limits::MAX_ID_BYTES;
use call_result_webhook::store::DeliveryFilter;
use call_result_webhook::{
    AccountId, CampaignId, DeliveryId, Error, MemoryStore, PreferencesUpdate, SqliteStore,
    Submitted, Webhooks, Worker,
};
use support::{Instance, Receiver, admin, call, ids, switch_on};

/// The ids the check refuses, and what each is: a NUL (PostgreSQL refuses it in text), one
/// byte over the cap, 9 KB (over PostgreSQL's index entry), empty, a line break, DEL.
fn refused() -> Vec<(&'static str, String)> {
    vec![
        ("NUL", "win\0ter".to_owned()),
        ("one byte over", "x".repeat(MAX_ID_BYTES + 1)),
        ("multi-byte, over", "é".repeat(MAX_ID_BYTES / 2 + 1)),
        ("9 KB", "a".repeat(9 * 1024)),
        ("empty", String::new()),
        ("line break", "acme\nINFO forged log line".to_owned()),
        ("DEL", "acme\u{7f}".to_owned()),
    ]
}

/// The longest ids accepted: 255 bytes each, of 2-, 3- and 4-byte characters.
fn longest() -> (AccountId, CampaignId) {
    let account = format!("{}a", "é".repeat(127));
    let campaign = format!("{}abc", "😀".repeat(63));
    assert_eq!(
        (account.len(), campaign.len()),
        (MAX_ID_BYTES, MAX_ID_BYTES)
    );
    (
        AccountId::parse(account).unwrap(),
        CampaignId::parse(campaign).unwrap(),
    )
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(what: &str, field: &str, result: Result<T, Error>) {
    match result {
        Err(Error::InvalidId { field: f, reason }) => {
            assert_eq!(f, field, "{what}");
            assert!(!reason.contains('\0'), "{what}: the reason repeats the id");
        }
        other => panic!("{what}: expected InvalidId {{ field: {field} }}, got {other:?}"),
    }
}

/// Every way in refuses every bad id, before anything is stored; the good account configured
/// beside them is untouched.
fn bad_ids_are_refused_everywhere(
    store: &str,
    webhooks: &Webhooks,
    runtime: &tokio::runtime::Runtime,
    receiver: &Receiver,
) {
    let (acme, winter) = ids();
    switch_on(
        webhooks,
        &acme,
        &winter,
        PreferencesUpdate::new().url(&receiver.url_for("/hook")),
    );
    let before = webhooks.account(&acme).unwrap().audit_log().len();
    for (what, id) in refused() {
        let what = format!("{store}, {what}");
        let (account, campaign) = (AccountId::new(id.as_str()), CampaignId::new(id.as_str()));
        // Submits, blocking and async, with a fresh id or the caller's, and prepare.
        assert_refused(
            &what,
            "account_id",
            webhooks.submit_blocking(&account, &winter, call("bad account")),
        );
        assert_refused(
            &what,
            "campaign_id",
            webhooks.submit_blocking(&acme, &campaign, call("bad campaign")),
        );
        assert_refused(
            &what,
            "campaign_id",
            runtime.block_on(webhooks.submit(&acme, &campaign, call("bad campaign"))),
        );
        assert_refused(
            &what,
            "account_id",
            runtime.block_on(webhooks.submit_with_id(
                &account,
                &winter,
                call("bad account"),
                DeliveryId::generate(),
            )),
        );
        assert_refused(
            &what,
            "campaign_id",
            webhooks.submit_with_id_blocking(
                &acme,
                &campaign,
                call("bad campaign"),
                DeliveryId::generate(),
            ),
        );
        assert_refused(
            &what,
            "campaign_id",
            webhooks.prepare(&acme, &campaign, &call("x"), DeliveryId::generate()),
        );
        // Configuration.
        let update = || PreferencesUpdate::new().url(&receiver.url_for("/hook"));
        assert_refused(
            &what,
            "account_id",
            webhooks.update_preferences_blocking(&admin(), &account, update()),
        );
        assert_refused(
            &what,
            "account_id",
            runtime.block_on(webhooks.update_preferences(&admin(), &account, update())),
        );
        assert_refused(
            &what,
            "campaign_id",
            webhooks.set_campaign_webhook_blocking(&admin(), &acme, &campaign, true),
        );
        assert_refused(
            &what,
            "account_id",
            runtime.block_on(webhooks.set_campaign_webhook(&admin(), &account, &winter, true)),
        );
        assert_refused(
            &what,
            "account_id",
            webhooks.resume_endpoint_blocking(&admin(), &account),
        );
        // Reads and administration.
        assert_refused(
            &what,
            "account_id",
            webhooks.status_blocking(&account, None),
        );
        assert_refused(
            &what,
            "campaign_id",
            webhooks.status_blocking(&acme, Some(&campaign)),
        );
        let by_campaign = DeliveryFilter::account(acme.clone()).campaign(campaign.clone());
        assert_refused(
            &what,
            "campaign_id",
            webhooks.replay_blocking(&admin(), &by_campaign),
        );
        assert_refused(
            &what,
            "account_id",
            webhooks.remove_blocking(&admin(), &DeliveryFilter::account(account.clone())),
        );
        assert_refused(
            &what,
            "account_id",
            webhooks.dead_letters_blocking(&admin(), &DeliveryFilter::account(account.clone()), 10),
        );
        assert!(webhooks.account(&account).is_none(), "{what}");
    }
    // Nothing was stored, nothing changed.
    let status = webhooks.status_blocking(&acme, None).unwrap();
    assert_eq!(
        (
            status.stats.pending,
            status.stats.delivered,
            status.stats.failed
        ),
        (0, 0, 0),
        "{store}"
    );
    assert_eq!(webhooks.account(&acme).unwrap().audit_log().len(), before);
    assert!(receiver.requests().is_empty(), "{store}");
}

/// The longest ids are configured, submitted, stored and delivered.
fn longest_ids_are_delivered(
    store: &str,
    webhooks: &Webhooks,
    worker: &Worker,
    receiver: &Receiver,
) {
    let (account, campaign) = longest();
    switch_on(
        webhooks,
        &account,
        &campaign,
        PreferencesUpdate::new().url(&receiver.url_for("/longest")),
    );
    // The longest caller's webhook-id too.
    let id = DeliveryId::new("L".repeat(DeliveryId::MAX_LEN)).unwrap();
    let submitted = webhooks
        .submit_with_id_blocking(&account, &campaign, call("longest"), id.clone())
        .unwrap_or_else(|e| panic!("{store}: the longest ids are stored: {e}"));
    assert_eq!(submitted, Submitted::Accepted(id.clone()), "{store}");
    assert!(
        worker.wait_idle_blocking(Duration::from_secs(10)).unwrap(),
        "{store}"
    );
    let requests = receiver.wait_for(1, Duration::from_secs(10));
    assert_eq!(requests.len(), 1, "{store}");
    assert_eq!(
        requests[0].header("webhook-id"),
        Some(id.as_str()),
        "{store}"
    );
    let status = webhooks.status_blocking(&account, Some(&campaign)).unwrap();
    assert_eq!(
        (status.stats.delivered, status.stats.pending),
        (1, 0),
        "{store}"
    );
}

#[test]
fn memory_store_refuses_bad_ids_and_delivers_the_longest() {
    let receiver = Receiver::start();
    let Instance {
        webhooks,
        worker,
        runtime,
    } = Instance::start(MemoryStore::new());
    bad_ids_are_refused_everywhere("memory", &webhooks, &runtime, &receiver);
    longest_ids_are_delivered("memory", &webhooks, &worker, &receiver);
}

#[test]
fn sqlite_store_refuses_bad_ids_and_delivers_the_longest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let receiver = Receiver::start();
    {
        let Instance {
            webhooks,
            worker,
            runtime,
        } = Instance::start(SqliteStore::open(&path).unwrap());
        bad_ids_are_refused_everywhere("sqlite", &webhooks, &runtime, &receiver);
        longest_ids_are_delivered("sqlite", &webhooks, &worker, &receiver);
        worker.shutdown_blocking(Duration::from_secs(5)).unwrap();
    }
    // Read back from the file: the longest account and its campaign switch.
    let webhooks = Webhooks::builder()
        .store(SqliteStore::open(&path).unwrap())
        .build()
        .unwrap();
    let (account, campaign) = longest();
    let stored = webhooks
        .account(&account)
        .expect("the longest account is stored");
    assert!(stored.campaign_webhook_enabled(&campaign));
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_store_refuses_bad_ids_and_delivers_the_longest() {
    let Some(db) = pg_support::Database::new("id checks") else {
        return;
    };
    let receiver = Receiver::start();
    let Instance {
        webhooks,
        worker,
        runtime,
    } = Instance::start(db.store());
    bad_ids_are_refused_everywhere("postgres", &webhooks, &runtime, &receiver);
    longest_ids_are_delivered("postgres", &webhooks, &worker, &receiver);
    // Another process's view, read from the database: the longest account, its campaign
    // switch and its delivery.
    let view = db.fresh_view();
    let (account, campaign) = longest();
    let stored = view
        .account(&account)
        .expect("the longest account is stored");
    assert!(stored.campaign_webhook_enabled(&campaign));
    let status = view.status_blocking(&account, Some(&campaign)).unwrap();
    assert_eq!(status.stats.delivered, 1);
    // The exact bytes are in the tables (the ids hold no quote to escape). A count is `stats`
    // plus the deltas not folded into it yet (the fold runs every 250 ms), read in one
    // statement as the store reads it, so the delivery is counted once whenever it is read.
    let (s, a, c) = (&db.schema, account.as_str(), campaign.as_str());
    let stored = db.query_i64(&format!(
        "SELECT ((SELECT count(*) FROM {s}.accounts WHERE id = '{a}') \
         + (SELECT coalesce(sum(delivered), 0) FROM ( \
              SELECT delivered FROM {s}.stats WHERE account = '{a}' AND campaign = '{c}' \
              UNION ALL \
              SELECT delivered FROM {s}.stats_deltas WHERE account = '{a}' AND campaign = '{c}' \
            ) AS counts))::bigint"
    ));
    assert_eq!(
        stored, 2,
        "the account and its one delivery, under the exact ids"
    );
}
