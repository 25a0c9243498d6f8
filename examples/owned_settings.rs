//! The dialer owns its settings: its own database is the source of truth for every account's
//! webhook settings, edited on its own administration screens, and the webhooks mirror it.
//!
//! - **At start:** reconcile. Put every account's settings in one batch; what is stored
//!   already writes nothing, so a restart costs one read per account and no write.
//! - **On change:** mirror. Put the account's whole settings against the version last seen.
//! - **When both sides were edited** (an administrator changed the account through the
//!   webhooks' own API meanwhile): the put is refused as stale; the dialer's database wins, so
//!   it reads the current version, logs what it overwrites, and puts again.
//!
//! Run with `cargo run --example owned_settings`.

use std::collections::BTreeMap;

use call_result_webhook::owned_settings::{
    AccountQuery, AccountSettings, Expected, PutOutcome, SettingsPut,
};
use call_result_webhook::{AccountId, Error, PreferencesUpdate, Principal, SqliteStore, Webhooks};

/// One row of the dialer's own `accounts` table, and the webhooks' version last seen for it.
struct Row {
    enabled: bool,
    url: String,
    username: String,
    password: String,
    campaigns: Vec<(&'static str, bool)>,
    seen_version: Option<u64>,
}

impl Row {
    /// The account's whole settings, as the webhooks are to hold them.
    fn settings(&self) -> AccountSettings {
        let prefs = PreferencesUpdate::new()
            .enabled(self.enabled)
            .url(&self.url)
            .credentials(self.username.as_str(), self.password.as_str());
        self.campaigns
            .iter()
            .fold(AccountSettings::new(prefs), |s, (campaign, on)| {
                s.campaign(*campaign, *on)
            })
    }
}

/// Mirrors one changed row; the dialer's database wins over a concurrent edit.
fn mirror(
    webhooks: &Webhooks,
    sync: &Principal,
    id: &AccountId,
    row: &mut Row,
) -> call_result_webhook::Result<PutOutcome> {
    let expected = row.seen_version.map_or(Expected::New, Expected::Version);
    let put = match webhooks.put_settings_blocking(sync, id, row.settings(), expected) {
        Err(Error::SettingsStale { stored, .. }) => {
            println!("{id}: edited elsewhere (now at {stored:?}); the dialer's settings win");
            let current = stored.map_or(Expected::New, Expected::Version);
            webhooks.put_settings_blocking(sync, id, row.settings(), current)?
        }
        other => other?,
    };
    row.seen_version = Some(put.version());
    Ok(put)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let webhooks = Webhooks::builder()
        .store(SqliteStore::open(dir.path().join("webhooks.sqlite"))?)
        .build()?;
    let sync = Principal::administrator("dialer-sync");

    let mut db: BTreeMap<AccountId, Row> = (1..=3u32)
        .map(|i| {
            let row = Row {
                enabled: true,
                url: format!("https://crm{i}.example/hooks/calls"),
                username: "dialer".into(),
                password: format!("s3cret-{i}"),
                campaigns: vec![("winter", true), ("spring", i.is_multiple_of(2))],
                seen_version: None,
            };
            (AccountId::from(format!("acct-{i}")), row)
        })
        .collect();

    // At start: reconcile every account in one batch, twice (as two restarts would).
    for start in 1..=2 {
        let puts = db
            .iter()
            .map(|(id, row)| SettingsPut::new(id.clone(), row.settings()))
            .collect();
        let answers = webhooks.put_settings_batch_blocking(&sync, puts)?;
        let mut written = 0;
        for ((_, row), answer) in db.iter_mut().zip(answers) {
            let answer = answer?;
            written += usize::from(answer.is_saved());
            row.seen_version = Some(answer.version());
        }
        println!("start {start}: {written} of {} accounts written", db.len());
        assert_eq!(written, if start == 1 { db.len() } else { 0 });
    }

    // On change: the dialer's admin screen switched acct-1's spring campaign on.
    let id = AccountId::from("acct-1");
    let row = db.get_mut(&id).expect("acct-1 is in the dialer's database");
    row.campaigns[1].1 = true;
    mirror(&webhooks, &sync, &id, row)?;

    // Both sides edited: someone switched a campaign through the webhooks' API meanwhile,
    // then the dialer's database changed acct-1's URL.
    webhooks.set_campaign_webhook_blocking(&sync, &id, &"summer".into(), true)?;
    row.url = "https://crm1.example/v2/hooks".into();
    mirror(&webhooks, &sync, &id, row)?;
    let acct1 = webhooks.account(&id).expect("acct-1 is stored");
    assert!(
        !acct1.campaign_webhook_enabled(&"summer".into()),
        "the dialer's settings won"
    );

    // The webhooks' view, every account by pages: settings, version, status; no password.
    let mut query = AccountQuery::new().limit(2);
    loop {
        let page = webhooks.list_accounts_blocking(&query)?;
        for account in &page.accounts {
            let url = account.settings.preferences().url().map(|u| u.as_str());
            println!(
                "{} v{} {:?} {}",
                account.settings.id(),
                account.version,
                account.indicator,
                url.unwrap_or("-")
            );
        }
        match page.next {
            Some(next) => query = query.after(next),
            None => break,
        }
    }
    Ok(())
}
