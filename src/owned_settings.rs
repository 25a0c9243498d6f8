//! Settings the dialer owns: for a dialer that keeps its accounts in its own database, behind
//! its own administration screens, and mirrors them here.
//!
//! - [`Webhooks::list_accounts`] lists every account of the store (the fleet's, not only what
//!   this process has seen) with its campaigns and status, page by page, optionally only
//!   those showing some indicators.
//! - [`Webhooks::put_settings`] puts one account's whole settings at once: what is given is
//!   what is stored (preferences and campaign switches; anything not given is the default),
//!   compared and set against the version the caller read ([`Expected`]).
//! - [`Webhooks::put_settings_batch`] puts many, for reconciling every account at start-up:
//!   idempotent (a put of what is stored writes nothing and takes no new version), one store
//!   transaction per batch, one outcome per account.
//!
//! Every put is checked as an administrator's change is: only a full administrator may, every
//! id and value is checked, a new URL must pass the [`UrlPolicy`](crate::UrlPolicy), and the
//! change is audited under the [`Principal`]'s name.
//!
//! # Examples
//!
//! ```
//! use call_result_webhook::{MemoryStore, PreferencesUpdate, Principal, Webhooks};
//! use call_result_webhook::owned_settings::{AccountQuery, AccountSettings, Expected, PutOutcome};
//!
//! let webhooks = Webhooks::builder().store(MemoryStore::new()).build()?;
//! let dialer = Principal::administrator("dialer-sync");
//! let settings = || {
//!     AccountSettings::new(
//!         PreferencesUpdate::new().enabled(true).url("https://crm.example/hook"),
//!     )
//!     .campaign("winter", true)
//! };
//! let put = webhooks.put_settings_blocking(&dialer, &"acme".into(), settings(), Expected::New)?;
//! assert!(matches!(put, PutOutcome::Saved { .. }));
//! // The same again changes nothing.
//! let again = webhooks.put_settings_blocking(&dialer, &"acme".into(), settings(), Expected::Any)?;
//! assert_eq!(again, PutOutcome::Unchanged { version: put.version() });
//!
//! let page = webhooks.list_accounts_blocking(&AccountQuery::new())?;
//! assert_eq!(page.accounts[0].settings.id().as_str(), "acme");
//! assert_eq!(page.next, None);
//! # Ok::<(), call_result_webhook::Error>(())
//! ```

use crate::blocking::twins;
use crate::error::{Error, Result};
use crate::ids::AccountId;
use crate::preferences::Principal;
use crate::webhooks::Webhooks;

pub use crate::engine::{
    AccountListing, AccountPage, AccountQuery, AccountSettings, CampaignListing, DEFAULT_PAGE,
    Expected, MAX_PAGE, PutOutcome, SettingsPut,
};

impl Webhooks {
    twins! {
        "Webhooks";

        /// One page of the store's accounts (every process's, read from the store), in the order
        /// of their ids, each with its settings, their version, its campaigns and status; only
        /// those whose indicator the query asks for, if it names any. Walk every account by
        /// passing each page's [`next`](AccountPage::next) to [`AccountQuery::after`] until it is
        /// `None`: each account stored throughout the walk is listed exactly once, however often
        /// it is saved meanwhile. The cost of a page does not grow with the pages before it.
        /// Read only: dropping the future loses nothing.
        ///
        /// # Errors
        ///
        /// [`Error::Store`] when the store cannot be read or holds an account that no longer
        /// passes its checks, [`Error::RuntimeShuttingDown`].
        pub async fn list_accounts(&self, query: &AccountQuery) -> Result<AccountPage>;
        pub fn list_accounts_blocking;
        {
            let (engine, query) = (self.engine.clone(), query.clone());
            move || engine.list_accounts(&query)
        }

        /// Puts one account's whole settings (full administrators only): what `settings` gives is
        /// what is stored, preferences and campaign switches, if what is stored is what
        /// `expected` names. Settings equal to those stored are left alone
        /// ([`PutOutcome::Unchanged`], whatever `expected` says). Saved before this returns; every
        /// process follows within its poll, and pending deliveries use the new settings from
        /// their next attempt.
        ///
        /// **Dropped before it completes**, the put still runs to its end; putting the same
        /// settings again is harmless (it finds them stored).
        ///
        /// # Errors
        ///
        /// Nothing was written when this returns an error:
        /// [`Error::InvalidId`] for an account or campaign id that may not be stored;
        /// [`Error::PermissionDenied`] for a non-administrator; [`Error::InvalidConfig`] or
        /// [`Error::InvalidUrl`] for an invalid setting; an [`Error::AddressRefused`] or
        /// [`Error::InvalidUrl`] from the URL policy; [`Error::SettingsStale`] when the stored
        /// settings are not those `expected` names; [`Error::SettingsConflict`] when other
        /// processes kept saving the account first; [`Error::Store`];
        /// [`Error::RuntimeShuttingDown`].
        pub async fn put_settings(
            &self,
            who: &Principal,
            account: &AccountId,
            settings: AccountSettings,
            expected: Expected,
        ) -> Result<PutOutcome>;
        pub fn put_settings_blocking;
        {
            account.check()?;
            let (engine, who) = (self.engine.clone(), who.clone());
            let put = SettingsPut::new(account.clone(), settings).expected(expected);
            move || one(engine.put_settings(&who, vec![put]))
        }

        /// Puts many accounts' whole settings, each as [`put_settings`](Self::put_settings)
        /// would, and answers for each, in order: for reconciling every account at start-up.
        ///
        /// Idempotent: a put of what is stored writes nothing ([`PutOutcome::Unchanged`]). Each
        /// put is checked on its own: one that fails its checks (an id, a value, the URL policy,
        /// a stale [`Expected`], the same account twice) answers its error and is not stored,
        /// and the others are. Those to write are saved in one store transaction (SQLite,
        /// PostgreSQL): all of them or, on a store error, none. Only a put met by another
        /// process's save of the same account is read and saved again, in a transaction of its
        /// own. A few thousand puts make a reasonable batch.
        ///
        /// **Dropped before it completes**, the batch still runs to its end; putting it again is
        /// harmless.
        ///
        /// # Errors
        ///
        /// [`Error::PermissionDenied`] for a non-administrator (nothing is read or written);
        /// [`Error::Store`] when the store failed (a batch that failed wrote nothing; one saved
        /// in an earlier round, after another process's save, stays saved);
        /// [`Error::RuntimeShuttingDown`].
        pub async fn put_settings_batch(
            &self,
            who: &Principal,
            puts: Vec<SettingsPut>,
        ) -> Result<Vec<Result<PutOutcome>>>;
        pub fn put_settings_batch_blocking;
        {
            let (engine, who) = (self.engine.clone(), who.clone());
            move || engine.put_settings(&who, puts)
        }
    }
}

/// The one answer of a batch of one.
fn one(answers: Result<Vec<Result<PutOutcome>>>) -> Result<PutOutcome> {
    answers?
        .pop()
        .unwrap_or_else(|| Err(Error::config("settings", "no answer for the put")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jiff::Timestamp;

    use super::*;
    use crate::account::Account;
    use crate::campaign::{OffReason, WebhookIndicator};
    use crate::delivery::EndpointHealth;
    use crate::delivery::PauseReason;
    use crate::preferences::PreferencesUpdate;
    use crate::store::{MemoryStore, Settings};
    use crate::{CallResult, Submitted};

    fn admin() -> Principal {
        Principal::administrator("sync")
    }

    fn setup() -> (Webhooks, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let webhooks = Webhooks::builder().store(store.clone()).build().unwrap();
        (webhooks, store)
    }

    fn on(url: &str) -> PreferencesUpdate {
        PreferencesUpdate::new().enabled(true).url(url)
    }

    fn put(
        w: &Webhooks,
        account: &str,
        settings: AccountSettings,
        expected: Expected,
    ) -> Result<PutOutcome> {
        w.put_settings_blocking(&admin(), &account.into(), settings, expected)
    }

    /// Puts the webhook on with `url` alone; the version saved.
    fn put_on(w: &Webhooks, account: &str, url: &str) -> u64 {
        put(w, account, AccountSettings::new(on(url)), Expected::Any)
            .unwrap()
            .version()
    }

    #[test]
    fn what_is_put_is_what_is_stored_and_the_same_again_writes_nothing() {
        let (w, store) = setup();
        let full = || {
            AccountSettings::new(
                on("https://crm.example/a")
                    .credentials("dialer", "pa55-w0rd!")
                    .time_zone("Australia/Brisbane"),
            )
            .campaign("winter", true)
            .campaign("spring", true)
        };
        let first = put(&w, "acme", full(), Expected::New).unwrap();
        let PutOutcome::Saved { version, audit } = &first else {
            panic!("saved: {first:?}")
        };
        assert_eq!(audit.principal, "sync");
        assert!(audit.fields.contains(&"url".to_owned()));
        assert!(audit.fields.contains(&"campaign:winter".to_owned()));
        let cursor = store.load_settings().unwrap().cursor;
        let audits = w.account(&"acme".into()).unwrap().audit_log().len();
        for expected in [Expected::Any, Expected::Version(*version), Expected::New] {
            let again = put(&w, "acme", full(), expected).unwrap();
            assert_eq!(again, PutOutcome::Unchanged { version: *version });
        }
        assert_eq!(
            store.load_settings().unwrap().cursor,
            cursor,
            "no new version"
        );
        assert_eq!(
            w.account(&"acme".into()).unwrap().audit_log().len(),
            audits,
            "nothing audited"
        );

        // Declarative: what is not given is the default, a campaign not named has no switch.
        let second = put(
            &w,
            "acme",
            AccountSettings::new(on("https://crm.example/a")).campaign("winter", true),
            Expected::Version(*version),
        )
        .unwrap();
        let PutOutcome::Saved { audit, .. } = &second else {
            panic!("saved: {second:?}")
        };
        let mut fields = audit.fields.clone();
        fields.sort();
        assert_eq!(
            fields,
            ["campaign:spring", "password", "time_zone", "username"]
        );
        let acme = w.account(&"acme".into()).unwrap();
        assert!(!acme.preferences().has_password());
        assert_eq!(acme.preferences().time_zone_name(), "UTC");
        assert_eq!(
            acme.campaigns()
                .map(|(c, on)| (c.as_str(), on))
                .collect::<Vec<_>>(),
            [("winter", true)]
        );
        let stored = store.load_account(&"acme".into()).unwrap().unwrap();
        assert_eq!(stored.version, second.version());
        assert_eq!(
            Account::from_storage_json(&stored.json)
                .unwrap()
                .audit_log()
                .len(),
            audits + 1,
            "the audit log is kept, with the put added"
        );
    }

    #[test]
    fn a_stale_put_writes_nothing() {
        let (w, store) = setup();
        let v1 = put_on(&w, "acme", "https://a.example/");
        // Another administrator's change meanwhile.
        w.set_campaign_webhook_blocking(&admin(), &"acme".into(), &"c1".into(), true)
            .unwrap();
        let v2 = store.load_account(&"acme".into()).unwrap().unwrap().version;
        assert!(v2 > v1);
        for expected in [Expected::Version(v1), Expected::New] {
            let err = put(
                &w,
                "acme",
                AccountSettings::new(on("https://b.example/")),
                expected,
            )
            .unwrap_err();
            assert!(
                matches!(err, Error::SettingsStale { ref account, stored: Some(v), .. } if account == "acme" && v == v2),
                "{err:?}"
            );
        }
        let stored = store.load_account(&"acme".into()).unwrap().unwrap();
        assert_eq!(stored.version, v2);
        let acme = w.account(&"acme".into()).unwrap();
        assert_eq!(
            acme.preferences().url().unwrap().as_str(),
            "https://a.example/"
        );
        // Read again, put again: the put wins, and the other change is replaced.
        let v3 = put(
            &w,
            "acme",
            AccountSettings::new(on("https://b.example/")),
            Expected::Version(v2),
        )
        .unwrap()
        .version();
        assert!(v3 > v2);
        assert!(
            !w.account(&"acme".into())
                .unwrap()
                .campaign_webhook_enabled(&"c1".into())
        );
    }

    #[test]
    fn a_put_is_checked_as_every_change_is() {
        let (w, store) = setup();
        let agent = Principal::user("bob");
        let denied = w.put_settings_blocking(
            &agent,
            &"acme".into(),
            AccountSettings::new(on("https://a.example/")),
            Expected::Any,
        );
        assert!(matches!(denied, Err(Error::PermissionDenied { .. })));
        let batch = w.put_settings_batch_blocking(
            &agent,
            vec![SettingsPut::new("acme", AccountSettings::default())],
        );
        assert!(matches!(batch, Err(Error::PermissionDenied { .. })));
        // The default policy refuses loopback addresses and plain http.
        let refused = put(
            &w,
            "acme",
            AccountSettings::new(on("https://127.0.0.1/")),
            Expected::Any,
        );
        assert!(
            matches!(refused, Err(Error::AddressRefused { .. })),
            "{refused:?}"
        );
        let http = put(
            &w,
            "acme",
            AccountSettings::new(on("http://crm.example/")),
            Expected::Any,
        );
        assert!(http.is_err());
        let bad_id = put(&w, "", AccountSettings::default(), Expected::Any);
        assert!(matches!(bad_id, Err(Error::InvalidId { .. })));
        let bad_campaign = put(
            &w,
            "acme",
            AccountSettings::default().campaign("with\nnewline", true),
            Expected::Any,
        );
        assert!(matches!(bad_campaign, Err(Error::InvalidId { .. })));
        let bad_zone = put(
            &w,
            "acme",
            AccountSettings::new(PreferencesUpdate::new().time_zone("Mars/Olympus")),
            Expected::Any,
        );
        assert!(matches!(bad_zone, Err(Error::InvalidConfig { .. })));
        assert!(store.load_account(&"acme".into()).unwrap().is_none());
        assert!(w.account(&"acme".into()).is_none());
    }

    #[test]
    fn a_batch_answers_each_put_and_stores_those_that_pass() {
        let (w, store) = setup();
        let v = put_on(&w, "b", "https://b.example/");
        let answers = w
            .put_settings_batch_blocking(
                &admin(),
                vec![
                    SettingsPut::new("a", AccountSettings::new(on("https://a.example/"))),
                    SettingsPut::new("b", AccountSettings::new(on("https://b.example/"))),
                    SettingsPut::new("c", AccountSettings::new(on("https://127.0.0.1/"))),
                    SettingsPut::new("d", AccountSettings::default())
                        .expected(Expected::Version(v)),
                    SettingsPut::new("a", AccountSettings::default()),
                    SettingsPut::new("e", AccountSettings::default().campaign("x", true))
                        .expected(Expected::New),
                ],
            )
            .unwrap();
        assert_eq!(answers.len(), 6);
        assert!(answers[0].as_ref().unwrap().is_saved());
        assert_eq!(
            answers[1].as_ref().unwrap(),
            &PutOutcome::Unchanged { version: v }
        );
        assert!(matches!(answers[2], Err(Error::AddressRefused { .. })));
        assert!(matches!(
            answers[3],
            Err(Error::SettingsStale { stored: None, .. })
        ));
        assert!(matches!(
            answers[4],
            Err(Error::InvalidConfig {
                field: "account_id",
                ..
            })
        ));
        assert!(answers[5].as_ref().unwrap().is_saved());
        let stored: Vec<String> = store
            .accounts_after(None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.account.to_string())
            .collect();
        assert_eq!(stored, ["a", "b", "e"]);
        assert!(
            w.account(&"e".into())
                .unwrap()
                .campaign_webhook_enabled(&"x".into())
        );
    }

    #[test]
    fn a_new_campaign_starts_off_unless_the_account_says_on() {
        let (w, _) = setup();
        let call = CallResult::builder().reference("1").build();
        let (acme, fresh, off) = ("acme".into(), "fresh".into(), "off".into());
        put(
            &w,
            "acme",
            AccountSettings::new(on("https://crm.example/")).campaign("off", false),
            Expected::Any,
        )
        .unwrap();
        let skipped = w.submit_blocking(&acme, &fresh, call.clone()).unwrap();
        assert_eq!(skipped, Submitted::Skipped(OffReason::CampaignDisabled));
        assert_eq!(
            w.indicator(&acme, Some(&fresh)),
            WebhookIndicator::Off(OffReason::CampaignDisabled)
        );

        put(
            &w,
            "acme",
            AccountSettings::new(on("https://crm.example/").new_campaigns_enabled(true))
                .campaign("off", false),
            Expected::Any,
        )
        .unwrap();
        assert!(
            w.submit_blocking(&acme, &fresh, call.clone())
                .unwrap()
                .is_accepted()
        );
        assert_eq!(w.indicator(&acme, Some(&fresh)), WebhookIndicator::Active);
        // A campaign switched off keeps its own switch.
        assert!(!w.submit_blocking(&acme, &off, call).unwrap().is_accepted());
        // The same holds through the one-field update.
        w.update_preferences_blocking(
            &admin(),
            &acme,
            PreferencesUpdate::new().new_campaigns_enabled(false),
        )
        .unwrap();
        assert_eq!(
            w.indicator(&acme, Some(&fresh)),
            WebhookIndicator::Off(OffReason::CampaignDisabled)
        );
    }

    #[test]
    fn listing_filters_by_indicator_and_never_shows_a_password() {
        let (w, store) = setup();
        for (id, url) in [
            ("a", "https://a.example/"),
            ("b", "https://b.example/"),
            ("c", ""),
        ] {
            let prefs = if url.is_empty() {
                PreferencesUpdate::new().enabled(true)
            } else {
                on(url).credentials("dialer", "pa55-w0rd!")
            };
            put(
                &w,
                id,
                AccountSettings::new(prefs).campaign("winter", true),
                Expected::Any,
            )
            .unwrap();
        }
        // b's endpoint paused, as another process saved it.
        let mut paused = EndpointHealth::default();
        paused.pause(Timestamp::UNIX_EPOCH, PauseReason::Gone);
        let _ = store
            .save_health(&"b".into(), &paused.to_json(), true, None)
            .unwrap();

        let all = w
            .list_accounts_blocking(&AccountQuery::new().with_counts(true))
            .unwrap();
        let shown: Vec<(&str, WebhookIndicator)> = all
            .accounts
            .iter()
            .map(|a| (a.settings.id().as_str(), a.indicator))
            .collect();
        assert_eq!(
            shown,
            [
                ("a", WebhookIndicator::Active),
                ("b", WebhookIndicator::Paused),
                ("c", WebhookIndicator::Off(OffReason::AccountNotConfigured)),
            ]
        );
        assert_eq!(all.next, None);
        assert!(all.accounts.iter().all(|a| a.stats.is_some()));
        assert_eq!(
            all.accounts[1].campaigns,
            [CampaignListing {
                campaign: "winter".into(),
                enabled: true,
                indicator: WebhookIndicator::Paused,
            }]
        );
        assert!(!format!("{all:?}").contains("pa55-w0rd!"));

        let paused = w
            .list_accounts_blocking(&AccountQuery::new().indicator(WebhookIndicator::Paused))
            .unwrap();
        assert_eq!(paused.accounts.len(), 1);
        assert_eq!(paused.accounts[0].settings.id().as_str(), "b");
        let either = AccountQuery::new()
            .indicator(WebhookIndicator::Paused)
            .indicator(WebhookIndicator::Off(OffReason::AccountNotConfigured))
            .limit(1);
        let first = w.list_accounts_blocking(&either).unwrap();
        assert_eq!(first.accounts[0].settings.id().as_str(), "b");
        let next = first.next.expect("a full page has a next");
        let second = w.list_accounts_blocking(&either.after(next)).unwrap();
        assert_eq!(second.accounts[0].settings.id().as_str(), "c");
    }

    #[test]
    fn an_old_record_without_the_new_campaign_setting_reads_as_off() {
        let mut a = Account::new("acme");
        a.update_preferences(&admin(), on("https://crm.example/"))
            .unwrap();
        let json = a.to_storage_json();
        assert!(
            !json.contains("new_campaigns_enabled"),
            "left out while off"
        );
        let back = Account::from_storage_json(&json).unwrap();
        assert!(!back.preferences().new_campaigns_enabled());
        a.update_preferences(
            &admin(),
            PreferencesUpdate::new().new_campaigns_enabled(true),
        )
        .unwrap();
        let back = Account::from_storage_json(&a.to_storage_json()).unwrap();
        assert!(back.preferences().new_campaigns_enabled());
        assert!(back.campaign_webhook_enabled(&"any".into()));
    }
}
