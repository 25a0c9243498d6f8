//! Settings the dialer owns: every account listed from the store page by page, and accounts'
//! whole settings put at once, one store transaction per batch; the types of both, public
//! at [`crate::owned_settings`].

use std::collections::{BTreeMap, HashSet};

use crate::account::Account;
use crate::campaign::WebhookIndicator;
use crate::delivery::health::EndpointHealth;
use crate::delivery::status::indicator;
use crate::engine::{Engine, Versions};
use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId};
use crate::permissions::Principal;
use crate::preferences::{AuditRecord, Preferences, PreferencesUpdate};
use crate::store::{AccountSave, DeliveryStats, SaveOutcome};
use crate::sync::lock;

use super::{SAVE_ATTEMPTS, after_stale};

/// The most accounts one page of [`Webhooks::list_accounts`](crate::Webhooks::list_accounts) holds.
pub const MAX_PAGE: usize = 1_000;

/// The accounts a page holds unless [`AccountQuery::limit`] says otherwise.
pub const DEFAULT_PAGE: usize = 100;

/// One account's whole settings, as [`Webhooks::put_settings`](crate::Webhooks::put_settings) stores them: the preferences
/// ([`PreferencesUpdate`](crate::PreferencesUpdate) applied to the defaults, so anything it does not set is the
/// default) and every campaign switch (a campaign not named has no switch of its own, and
/// follows [`PreferencesUpdate::new_campaigns_enabled`](crate::PreferencesUpdate::new_campaigns_enabled), off by default).
///
/// Its `Debug` never shows a password, token or secret.
#[derive(Debug, Default)]
#[must_use = "settings do nothing until they are put"]
pub struct AccountSettings {
    preferences: PreferencesUpdate,
    campaigns: BTreeMap<CampaignId, bool>,
}

impl AccountSettings {
    /// These preferences (applied to the defaults) and no campaign switch.
    pub fn new(preferences: PreferencesUpdate) -> Self {
        AccountSettings {
            preferences,
            campaigns: BTreeMap::new(),
        }
    }

    /// The campaign's "Enable WebHook" switch, on or off.
    pub fn campaign(mut self, campaign: impl Into<CampaignId>, enabled: bool) -> Self {
        self.campaigns.insert(campaign.into(), enabled);
        self
    }

    pub(crate) fn into_parts(self) -> (PreferencesUpdate, BTreeMap<CampaignId, bool>) {
        (self.preferences, self.campaigns)
    }
}

/// Which stored settings a put may replace: the compare of its compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// None: the account has no settings stored yet.
    New,
    /// Those at this version, as read (from [`AccountListing::version`] or a
    /// [`PutOutcome::version`]).
    Version(u64),
    /// Whatever is stored: the caller's settings win. For a dialer whose own database is the
    /// source of truth, reconciling at start-up.
    Any,
}

/// What a put did with one account's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// Saved, at this version; every process follows it within its poll.
    Saved {
        /// The settings' new version.
        version: u64,
        /// The change as audited: who, when, which fields and campaigns.
        audit: AuditRecord,
    },
    /// The settings stored already were those put: nothing written, no new version.
    Unchanged {
        /// The version of the settings stored.
        version: u64,
    },
}

impl PutOutcome {
    /// The version the account's settings are at now: the one to put against next.
    pub fn version(&self) -> u64 {
        match self {
            PutOutcome::Saved { version, .. } | PutOutcome::Unchanged { version } => *version,
        }
    }

    /// Whether anything was written.
    pub fn is_saved(&self) -> bool {
        matches!(self, PutOutcome::Saved { .. })
    }
}

/// One put of [`Webhooks::put_settings_batch`](crate::Webhooks::put_settings_batch).
#[derive(Debug)]
pub struct SettingsPut {
    account: AccountId,
    settings: AccountSettings,
    expected: Expected,
}

impl SettingsPut {
    /// Puts `settings` as `account`'s whole settings, whatever is stored ([`Expected::Any`]).
    pub fn new(account: impl Into<AccountId>, settings: AccountSettings) -> Self {
        SettingsPut {
            account: account.into(),
            settings,
            expected: Expected::Any,
        }
    }

    /// Puts them only over the stored settings `expected` names.
    pub fn expected(mut self, expected: Expected) -> Self {
        self.expected = expected;
        self
    }

    pub(crate) fn into_parts(self) -> (AccountId, AccountSettings, Expected) {
        (self.account, self.settings, self.expected)
    }
}

/// Which accounts [`Webhooks::list_accounts`](crate::Webhooks::list_accounts) returns: a page of at most
/// [`limit`](AccountQuery::limit) accounts in the order of their ids, after a cursor,
/// optionally only those whose indicator is one of some.
#[derive(Debug, Clone)]
#[must_use = "a query does nothing until it is listed"]
pub struct AccountQuery {
    after: Option<AccountId>,
    limit: usize,
    indicators: Vec<WebhookIndicator>,
    counts: bool,
}

impl Default for AccountQuery {
    fn default() -> Self {
        AccountQuery {
            after: None,
            limit: DEFAULT_PAGE,
            indicators: Vec::new(),
            counts: false,
        }
    }
}

impl AccountQuery {
    /// The first page of every account, [`DEFAULT_PAGE`] at most, without counts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts after this account: the [`AccountPage::next`] of the page before.
    pub fn after(mut self, cursor: AccountId) -> Self {
        self.after = Some(cursor);
        self
    }

    /// At most this many accounts (1 to [`MAX_PAGE`]; beyond, the nearest of those).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.clamp(1, MAX_PAGE);
        self
    }

    /// Only accounts whose account-wide indicator is this one, or one of the others asked
    /// for: `Failing`, `Paused`, `Active`, or `Off` with a given reason.
    pub fn indicator(mut self, indicator: WebhookIndicator) -> Self {
        if !self.indicators.contains(&indicator) {
            self.indicators.push(indicator);
        }
        self
    }

    /// With each account's delivery counts ([`AccountListing::stats`]): one more store read
    /// per account listed.
    pub fn with_counts(mut self, counts: bool) -> Self {
        self.counts = counts;
        self
    }

    pub(crate) fn cursor(&self) -> Option<&AccountId> {
        self.after.as_ref()
    }

    pub(crate) fn page_limit(&self) -> usize {
        self.limit
    }

    pub(crate) fn indicators(&self) -> &[WebhookIndicator] {
        &self.indicators
    }

    pub(crate) fn wants_counts(&self) -> bool {
        self.counts
    }
}

/// One page of accounts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AccountPage {
    /// The accounts, in the order of their ids.
    pub accounts: Vec<AccountListing>,
    /// Where the next page starts ([`AccountQuery::after`]); `None` once every account was
    /// read. A filtered page may hold fewer accounts than asked, even none, with a `next`:
    /// one call reads a bounded number of accounts.
    pub next: Option<AccountId>,
}

/// One account as [`Webhooks::list_accounts`](crate::Webhooks::list_accounts) lists it: its settings as stored, their
/// version, and its status. Never a password: [`Account`]'s `Debug` and accessors do not
/// show one.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AccountListing {
    /// The account's settings, as stored.
    pub settings: Account,
    /// Their version: what a put of this account's settings expects
    /// ([`Expected::Version`]).
    pub version: u64,
    /// The account-wide indicator: `Off` with the reason while the webhook is off or has no
    /// URL, else the endpoint's `Paused`, `Failing` or `Active`.
    pub indicator: WebhookIndicator,
    /// The endpoint's health, as stored.
    pub endpoint: EndpointHealth,
    /// Each campaign with a switch of its own, and its indicator.
    pub campaigns: Vec<CampaignListing>,
    /// The account's counts, when asked for ([`AccountQuery::with_counts`]).
    pub stats: Option<DeliveryStats>,
}

/// One campaign of an [`AccountListing`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CampaignListing {
    /// The campaign.
    pub campaign: CampaignId,
    /// Its "Enable WebHook" switch.
    pub enabled: bool,
    /// Its indicator: the icon beside it.
    pub indicator: WebhookIndicator,
}

/// How many accounts one call to [`Engine::list_accounts`] reads at most when a filter
/// leaves most of them out: the call returns what it found with the cursor to go on from.
pub(crate) const LIST_SCAN_BUDGET: usize = 10_000;

/// How many accounts a filtered listing reads from the store at once.
const FILTERED_READ: usize = 500;

/// One put of a batch, checked, and what came of it so far.
struct Entry {
    account: AccountId,
    preferences: Preferences,
    campaigns: BTreeMap<CampaignId, bool>,
    expected: Expected,
    /// `None` while it is still to be saved.
    outcome: Option<Result<PutOutcome>>,
}

impl Engine {
    /// One page of accounts from the store, as [`AccountQuery`] asks.
    pub(crate) fn list_accounts(&self, query: &AccountQuery) -> Result<AccountPage> {
        let limit = query.page_limit();
        let filter = query.indicators();
        let mut after = query.cursor().cloned();
        let mut accounts = Vec::new();
        let mut scanned = 0;
        loop {
            let want = if filter.is_empty() {
                limit - accounts.len()
            } else {
                FILTERED_READ.max(limit)
            };
            let records = self.store.accounts_after(after.as_ref(), want)?;
            let more = records.len() == want;
            for record in records {
                scanned += 1;
                after = Some(record.account.clone());
                let account = Account::from_storage_json(&record.settings.json)?;
                let endpoint = match &record.health {
                    Some(health) => EndpointHealth::from_json(&health.json)?,
                    None => EndpointHealth::default(),
                };
                let shown = indicator(Some(&account), None, &endpoint);
                if !filter.is_empty() && !filter.contains(&shown) {
                    continue;
                }
                let stats = if query.wants_counts() {
                    Some(self.store.stats(&record.account, None)?)
                } else {
                    None
                };
                let campaigns = account
                    .campaigns()
                    .map(|(campaign, enabled)| CampaignListing {
                        campaign: campaign.clone(),
                        enabled,
                        indicator: indicator(Some(&account), Some(campaign), &endpoint),
                    })
                    .collect();
                accounts.push(AccountListing {
                    version: record.settings.version,
                    indicator: shown,
                    endpoint,
                    campaigns,
                    stats,
                    settings: account,
                });
                if accounts.len() == limit {
                    return Ok(AccountPage {
                        accounts,
                        next: after,
                    });
                }
            }
            if !more {
                return Ok(AccountPage {
                    accounts,
                    next: None,
                });
            }
            if scanned >= LIST_SCAN_BUDGET {
                return Ok(AccountPage {
                    accounts,
                    next: after,
                });
            }
        }
    }

    /// Puts each account's whole settings, as [`Webhooks::put_settings_batch`] says: checks
    /// every put, then, in rounds, reads what is stored, leaves alone what would not change,
    /// and saves the rest in one batch; a save met by another process's is read and decided
    /// again in the next round.
    ///
    /// [`Webhooks::put_settings_batch`]: crate::Webhooks::put_settings_batch
    pub(crate) fn put_settings(
        &self,
        who: &Principal,
        puts: Vec<SettingsPut>,
    ) -> Result<Vec<Result<PutOutcome>>> {
        who.require_admin("replace webhook settings")?;
        let now = self.clock.now();
        let mut entries = check_puts(puts);
        let mut versions = lock(&self.admin);
        let mut made = Made::default();
        let result = (|| {
            for round in 0..SAVE_ATTEMPTS {
                if entries.iter().all(|e| e.outcome.is_some()) {
                    return Ok(());
                }
                if round > 0 {
                    after_stale(round);
                }
                let saving = self.decide_puts(who, &mut entries, &mut versions, &mut made, now)?;
                self.save_puts(saving, &mut entries, &mut versions, &mut made)?;
            }
            Ok(())
        })();
        drop(versions);
        for account in &made.changed {
            self.account_changed(account);
        }
        for account in &made.new_url {
            self.end_failure_streak(account);
        }
        result?;
        Ok(entries
            .into_iter()
            .map(|entry| {
                entry.outcome.unwrap_or_else(|| {
                    Err(Error::SettingsConflict {
                        account: entry.account.to_string(),
                        record: "settings",
                        attempts: SAVE_ATTEMPTS,
                    })
                })
            })
            .collect())
    }

    /// One round's decisions on the puts still open: those unchanged are put in force here
    /// and answered, those refused answered; the rest are returned, to be saved.
    fn decide_puts(
        &self,
        who: &Principal,
        entries: &mut [Entry],
        versions: &mut Versions,
        made: &mut Made,
        now: jiff::Timestamp,
    ) -> Result<Vec<(usize, Save)>> {
        let mut saving = Vec::new();
        for (i, entry) in entries.iter_mut().enumerate() {
            if entry.outcome.is_some() {
                continue;
            }
            match self.decide_put(who, entry, now)? {
                Decided::Unchanged(stored, version) => {
                    // What is stored stands, and is what is in force here.
                    if self.put_account_in_force(versions, stored, version) {
                        made.changed.push(entry.account.clone());
                    }
                    entry.outcome = Some(Ok(PutOutcome::Unchanged { version }));
                }
                Decided::Refused(e) => entry.outcome = Some(Err(e)),
                Decided::Save(save) => saving.push((i, save)),
            }
        }
        Ok(saving)
    }

    /// Saves one round's accounts in one store transaction and puts those saved in force
    /// here; those another process saved meanwhile stay open, to be decided again.
    fn save_puts(
        &self,
        saving: Vec<(usize, Save)>,
        entries: &mut [Entry],
        versions: &mut Versions,
        made: &mut Made,
    ) -> Result<()> {
        if saving.is_empty() {
            return Ok(());
        }
        let json: Vec<String> = saving
            .iter()
            .map(|(_, save)| save.next.to_storage_json())
            .collect();
        let saves: Vec<AccountSave<'_>> = saving
            .iter()
            .zip(&json)
            .map(|((_, save), json)| AccountSave {
                account: save.next.id(),
                settings_json: json,
                expected: save.expected,
            })
            .collect();
        let outcomes = self.store.save_accounts(&saves)?;
        drop(saves);
        for ((i, save), outcome) in saving.into_iter().zip(outcomes) {
            // Stale: saved by another process meanwhile; read and decided again.
            let SaveOutcome::Saved { version } = outcome else {
                continue;
            };
            let account = save.next.id().clone();
            self.put_account_in_force(versions, save.next, version);
            if save.url_changed {
                made.new_url.push(account.clone());
            }
            made.changed.push(account);
            entries[i].outcome = Some(Ok(PutOutcome::Saved {
                version,
                audit: save.audit,
            }));
        }
        Ok(())
    }

    /// What a put comes to against what is stored now: unchanged, refused (stale, or its URL
    /// refused by the policy), or the account to save against the version read.
    fn decide_put(&self, who: &Principal, entry: &Entry, now: jiff::Timestamp) -> Result<Decided> {
        let (stored, version) = self.stored_account(&entry.account)?;
        let mut next = stored
            .clone()
            .unwrap_or_else(|| Account::new(entry.account.clone()));
        let audit =
            next.replace_settings_at(who, entry.preferences.clone(), entry.campaigns.clone(), now)?;
        if let (Some(stored), Some(version)) = (&stored, version)
            && next.same_settings(stored)
        {
            // What is given is what is stored: nothing to write, whatever version was read.
            return Ok(Decided::Unchanged(stored.clone(), version));
        }
        let fresh = match entry.expected {
            Expected::Any => true,
            Expected::New => version.is_none(),
            Expected::Version(v) => version == Some(v),
        };
        if !fresh {
            return Ok(Decided::Refused(Error::SettingsStale {
                account: entry.account.to_string(),
                expected: match entry.expected {
                    Expected::Version(v) => Some(v),
                    Expected::New | Expected::Any => None,
                },
                stored: version,
            }));
        }
        let old_url = stored.as_ref().and_then(|s| s.preferences().url());
        let url = next.preferences().url();
        let url_changed = url != old_url;
        if url_changed
            && let Some(url) = url
            && let Err(e) = self.policy.check_url(url.as_url())
        {
            return Ok(Decided::Refused(e));
        }
        Ok(Decided::Save(Save {
            next,
            expected: version,
            url_changed,
            audit,
        }))
    }
}

/// What [`Engine::decide_put`] found.
enum Decided {
    /// The stored account, at this version, already holds the settings put.
    Unchanged(Account, u64),
    /// Not to be saved, for this reason.
    Refused(Error),
    /// To be saved.
    Save(Save),
}

/// An account to save against the version it was read at.
struct Save {
    next: Account,
    expected: Option<u64>,
    url_changed: bool,
    /// The change, as audited in `next`.
    audit: AuditRecord,
}

/// What a batch of puts changed here, to tell once the administrators' lock is released.
#[derive(Default)]
struct Made {
    /// Accounts whose settings in force here changed.
    changed: Vec<AccountId>,
    /// Accounts saved with a new URL: a new endpoint.
    new_url: Vec<AccountId>,
}

/// Each put checked on its own (ids, no account twice, the preferences valid), before any
/// store read: one that fails is answered at once.
fn check_puts(puts: Vec<SettingsPut>) -> Vec<Entry> {
    let mut seen = HashSet::new();
    puts.into_iter()
        .map(|put| {
            let (account, settings, expected) = put.into_parts();
            let (update, campaigns) = settings.into_parts();
            let checked = check_put(&account, &campaigns, &mut seen)
                .and_then(|()| Ok(Preferences::default().with_update(update)?.0));
            let (preferences, outcome) = match checked {
                Ok(preferences) => (preferences, None),
                Err(e) => (Preferences::default(), Some(Err(e))),
            };
            Entry {
                account,
                preferences,
                campaigns,
                expected,
                outcome,
            }
        })
        .collect()
}

/// The checks of a put's ids, and that its account is not put twice in one batch.
fn check_put(
    account: &AccountId,
    campaigns: &BTreeMap<CampaignId, bool>,
    seen: &mut HashSet<AccountId>,
) -> Result<()> {
    account.check()?;
    for campaign in campaigns.keys() {
        campaign.check()?;
    }
    if !seen.insert(account.clone()) {
        return Err(Error::config(
            "account_id",
            "the same account is put twice in one batch",
        ));
    }
    Ok(())
}
