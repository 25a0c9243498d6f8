//! Changes to accounts' settings and endpoints' health, as compare-and-set against the store,
//! and following the saves of other processes.
//!
//! Every process keeps a copy of each record with the version it was saved at. A change is a
//! function of the record: it is applied to a copy, and the result saved only if the stored
//! record is still at that copy's version. When another process saved first, the stored
//! record is read again and the change applied to it again, so both changes are kept; after
//! [`SAVE_ATTEMPTS`] such rounds the change fails with [`Error::SettingsConflict`]. A copy in
//! force here only ever moves to a newer version, whichever of a save, a re-read or a follow
//! brings it.

use std::sync::atomic::Ordering;

use crate::account::Account;
use crate::delivery::events::Event;
use crate::delivery::health::{Change, EndpointHealth};
use crate::engine::{Engine, Versions};
use crate::error::{Error, Result};
use crate::ids::{AccountId, CampaignId};
use crate::permissions::Principal;
use crate::preferences::{AuditRecord, PreferencesUpdate};
use crate::store::SaveOutcome;
use crate::sync::lock;

mod owned;

pub use owned::{
    AccountListing, AccountPage, AccountQuery, AccountSettings, CampaignListing, DEFAULT_PAGE,
    Expected, MAX_PAGE, PutOutcome, SettingsPut,
};

/// How many times a change is applied to a stored record that other processes keep saving
/// before it fails with [`Error::SettingsConflict`]. Each round re-reads the record just
/// saved, so only a record saved again within every round trip gets this far.
pub(crate) const SAVE_ATTEMPTS: u32 = 16;

/// Waits a random while before a change met by another process's save is applied again,
/// up to a millisecond doubled each round (64 ms at most): two processes changing one record
/// in a tight loop take turns instead of meeting again at once, every round.
fn after_stale(round: u32) {
    let most = 1_000u64 << round.min(6);
    let micros = getrandom::u64().unwrap_or(0) % most;
    std::thread::sleep(std::time::Duration::from_micros(micros));
}

/// A change to an endpoint's health, applied and (if it asked) saved.
struct Applied {
    /// The health last made: the change applied to the newest record read.
    health: EndpointHealth,
    /// The version that health is saved at, or was read at if it was not saved.
    version: Option<u64>,
    /// What the change asked.
    change: Change,
    /// Whether the save went through (`Ok` too when the change asked for none).
    saved: Result<()>,
}

impl Engine {
    /// An administrator's change to an account's settings: read the stored account (new if
    /// never saved), apply `change`, save it against the version read, put it in force here.
    /// When another process saved the account meanwhile, read it again and apply `change`
    /// again, so both changes are kept, and an audit record is only ever returned for a change
    /// that is saved.
    ///
    /// The stored account, not the copy in force here, is what `change` starts from: the copy
    /// may not show another process's latest save yet, and a change that leaves the account
    /// as it is writes nothing (a dialer that sets the same preferences at every start still
    /// starts on a full disk), which only the stored account can tell. Nothing changes when
    /// `change`, a read or the save fails.
    pub(super) fn change_account<T>(
        &self,
        account: &AccountId,
        mut change: impl FnMut(&mut Account) -> Result<T>,
    ) -> Result<T> {
        let mut versions = lock(&self.admin);
        for round in 0..SAVE_ATTEMPTS {
            if round > 0 {
                after_stale(round);
            }
            let (stored, expected) = self.stored_account(account)?;
            let mut next = stored
                .clone()
                .unwrap_or_else(|| Account::new(account.clone()));
            let answer = change(&mut next)?;
            if let (Some(stored), Some(version)) = (stored, expected)
                && next.same_settings(&stored)
            {
                // Nothing to save: what is stored stands, and is what is in force here.
                let newer = self.put_account_in_force(&mut versions, stored, version);
                drop(versions);
                if newer {
                    self.account_changed(account);
                }
                return Ok(answer);
            }
            match self
                .store
                .save_account(account, &next.to_storage_json(), expected)?
            {
                SaveOutcome::Saved { version } => {
                    self.put_account_in_force(&mut versions, next, version);
                    drop(versions);
                    self.account_changed(account);
                    return Ok(answer);
                }
                SaveOutcome::Stale => {
                    tracing::debug!(account = %account, "account settings saved by another process meanwhile; applying the change again");
                }
            }
        }
        Err(Error::SettingsConflict {
            account: account.to_string(),
            record: "settings",
            attempts: SAVE_ATTEMPTS,
        })
    }

    /// The account's settings as stored, and their version (`None`, `None` if never saved).
    fn stored_account(&self, account: &AccountId) -> Result<(Option<Account>, Option<u64>)> {
        Ok(match self.store.load_account(account)? {
            Some(record) => (
                Some(Account::from_storage_json(&record.json)?),
                Some(record.version),
            ),
            None => (None, None),
        })
    }

    /// Puts `account` in force here at `version`, unless a copy as new is in force already.
    /// Returns whether it was put in force.
    fn put_account_in_force(
        &self,
        versions: &mut Versions,
        account: Account,
        version: u64,
    ) -> bool {
        let id = account.id().clone();
        if versions.get(&id).is_some_and(|held| *held >= version) {
            return false;
        }
        self.accounts_mut().insert(id.clone(), account);
        versions.insert(id, version);
        true
    }

    /// An attempt's outcome changes the endpoint's health: `change` is applied to the health
    /// in force here (with the failures counted since its last save) and saved if it asks.
    /// When another process saved the health meanwhile, `change` is applied to the stored
    /// health instead: a streak that grows, a pause, are functions of it, and a pause stored
    /// by another process is never undone by this process's older copy.
    ///
    /// The change stays in force here even if it could not be saved (the error is logged):
    /// a pause holds this process at least, and the next save carries it.
    pub(super) fn change_health_in_force(
        &self,
        account: &AccountId,
        mut change: impl FnMut(&mut EndpointHealth) -> Change,
    ) -> Change {
        let mut versions = lock(&self.health_saves);
        let before = self.health_of(account);
        let version = versions.get(account).copied();
        let applied = self.apply_health(account, before.clone(), version, &mut change);
        if let Err(e) = &applied.saved {
            tracing::error!(account = %account, error = %e, "could not save endpoint health");
        }
        let paused_changed = before.is_paused() != applied.health.is_paused();
        self.put_health_in_force(&mut versions, account, applied.health, applied.version);
        drop(versions);
        if paused_changed {
            self.account_changed(account);
        }
        applied.change
    }

    /// An administrator's change to an endpoint's health (a resume, a new URL's end of the
    /// streak): `change` is applied to the stored health, which may be newer than the copy in
    /// force here, saved if it asks, and put in force. Nothing changes here on error.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the store cannot be read or written;
    /// [`Error::SettingsConflict`] when other processes kept saving the health first.
    pub(super) fn change_stored_health(
        &self,
        account: &AccountId,
        mut change: impl FnMut(&mut EndpointHealth) -> Change,
    ) -> Result<Change> {
        let mut versions = lock(&self.health_saves);
        let (stored, version) = self.stored_health(account)?;
        let applied = self.apply_health(account, stored, version, &mut change);
        applied.saved?;
        let paused_changed = self.health_of(account).is_paused() != applied.health.is_paused();
        self.put_health_in_force(&mut versions, account, applied.health, applied.version);
        drop(versions);
        if paused_changed {
            self.account_changed(account);
        }
        Ok(applied.change)
    }

    /// Applies `change` to `health` (read at `version`) and saves the result if the change
    /// asks, against that version; on a newer save by another process, reads the stored
    /// health and starts again from it, at most [`SAVE_ATTEMPTS`] times.
    fn apply_health(
        &self,
        account: &AccountId,
        mut health: EndpointHealth,
        mut version: Option<u64>,
        change: &mut impl FnMut(&mut EndpointHealth) -> Change,
    ) -> Applied {
        let mut attempts = 0;
        loop {
            let mut next = health.clone();
            let made = change(&mut next);
            let applied = |health, version, saved| Applied {
                health,
                version,
                change: made,
                saved,
            };
            if !made.persist {
                // Kept here only: a failure counted between saves.
                return applied(next, version, Ok(()));
            }
            let json = next.to_json();
            match self
                .store
                .save_health(account, &json, next.is_paused(), version)
            {
                Ok(SaveOutcome::Saved { version }) => {
                    return applied(next, Some(version), Ok(()));
                }
                Ok(SaveOutcome::Stale) => {}
                Err(e) => return applied(next, version, Err(e)),
            }
            attempts += 1;
            if attempts == SAVE_ATTEMPTS {
                let conflict = Error::SettingsConflict {
                    account: account.to_string(),
                    record: "endpoint health",
                    attempts,
                };
                return applied(next, version, Err(conflict));
            }
            tracing::debug!(account = %account, "endpoint health saved by another process meanwhile; applying the change again");
            if attempts > 1 {
                // Met more than once: take turns with the other saver.
                after_stale(attempts);
            }
            match self.stored_health(account) {
                Ok((stored, stored_version)) => (health, version) = (stored, stored_version),
                Err(e) => return applied(next, version, Err(e)),
            }
        }
    }

    /// The endpoint's health as stored, and its version (the default, unversioned, if none
    /// was ever saved).
    fn stored_health(&self, account: &AccountId) -> Result<(EndpointHealth, Option<u64>)> {
        Ok(match self.store.load_health(account)? {
            Some(record) => (
                EndpointHealth::from_json(&record.json)?,
                Some(record.version),
            ),
            None => (EndpointHealth::default(), None),
        })
    }

    /// Puts `health` in force here, read or saved at `version`. Called under the lock of
    /// `health_saves`, with a version at least the one in force.
    fn put_health_in_force(
        &self,
        versions: &mut Versions,
        account: &AccountId,
        health: EndpointHealth,
        version: Option<u64>,
    ) {
        lock(&self.health).insert(account.clone(), health);
        match version {
            Some(version) => versions.insert(account.clone(), version),
            None => versions.remove(account),
        };
    }

    /// Reads the settings and health other processes saved since the last read, and puts
    /// in force each record newer than the copy in force here (this process's own saves come
    /// back too, and a copy of the health also holds the failures counted since its last
    /// save). Returns how many records changed.
    pub(crate) fn follow_settings(&self) -> Result<usize> {
        let mut account_versions = lock(&self.admin);
        let cursor = self.settings_cursor.load(Ordering::SeqCst);
        let changes = self.store.changes_since(cursor)?;
        let mut changed = Vec::new();
        for record in &changes.accounts {
            let account = Account::from_storage_json(&record.json)?;
            let id = account.id().clone();
            if self.put_account_in_force(&mut account_versions, account, record.version) {
                changed.push(id);
            }
        }
        {
            let mut health_versions = lock(&self.health_saves);
            for (account, record) in &changes.health {
                if health_versions
                    .get(account)
                    .is_some_and(|held| *held >= record.version)
                {
                    continue;
                }
                let health = EndpointHealth::from_json(&record.json)?;
                self.put_health_in_force(
                    &mut health_versions,
                    account,
                    health,
                    Some(record.version),
                );
                changed.push(account.clone());
            }
        }
        self.settings_cursor
            .store(changes.cursor.max(cursor), Ordering::SeqCst);
        drop(account_versions);
        for account in &changed {
            self.account_changed(account);
        }
        Ok(changed.len())
    }
}

/// The administrators' changes, each saved before it is put in force here.
impl Engine {
    /// A copy of the account's settings, if any were ever saved.
    pub(crate) fn account(&self, id: &AccountId) -> Option<Account> {
        self.accounts().get(id).cloned()
    }

    pub(crate) fn update_preferences(
        &self,
        who: &Principal,
        account: &AccountId,
        update: PreferencesUpdate,
    ) -> Result<AuditRecord> {
        self.update_preferences_if(who, account, update, &|_| true)
    }

    /// [`update_preferences`](Self::update_preferences), made only while `still` holds for
    /// the preferences as stored: checked inside the compare-and-set, on each read of the
    /// stored account, so a save by another process between the caller's look and this
    /// save is seen. [`Error::SettingsStale`] when it does not hold; nothing changes then.
    pub(crate) fn update_preferences_if(
        &self,
        who: &Principal,
        account: &AccountId,
        update: PreferencesUpdate,
        still: &(dyn Fn(&crate::preferences::Preferences) -> bool + Sync),
    ) -> Result<AuditRecord> {
        let now = self.clock.now();
        let mut update = update;
        let (record, url_changed) = self.change_account(account, |next| {
            if !still(next.preferences()) {
                return Err(Error::SettingsStale {
                    account: account.to_string(),
                    expected: None,
                    stored: None,
                });
            }
            let old_url = next.preferences().url().cloned();
            let record = next.update_preferences_at(who, update.take_copy(), now)?;
            let url_changed = next.preferences().url() != old_url.as_ref();
            if url_changed && let Some(url) = next.preferences().url() {
                self.policy.check_url(url.as_url())?;
            }
            Ok((record, url_changed))
        })?;
        if url_changed {
            self.end_failure_streak(account);
        }
        self.account_changed(account);
        Ok(record)
    }

    /// A new URL is a new endpoint: the old one's failure streak no longer says anything.
    fn end_failure_streak(&self, account: &AccountId) {
        let ended = self.change_stored_health(account, |health| Change {
            persist: health.url_changed(),
            paused: None,
        });
        if let Err(e) = ended {
            tracing::error!(account = %account, error = %e, "could not save endpoint health");
        }
    }

    pub(crate) fn set_campaign_webhook(
        &self,
        who: &Principal,
        account: &AccountId,
        campaign: &CampaignId,
        enabled: bool,
    ) -> Result<AuditRecord> {
        let now = self.clock.now();
        self.change_account(account, |next| {
            next.set_campaign_webhook_at(who, campaign.clone(), enabled, now)
        })
    }

    pub(crate) fn resume_endpoint(&self, who: &Principal, account: &AccountId) -> Result<bool> {
        who.require_admin("resume a webhook endpoint")?;
        let mut was_paused = false;
        self.change_stored_health(account, |health| {
            let persist = *health != EndpointHealth::default();
            was_paused = health.resume();
            Change {
                persist,
                paused: None,
            }
        })?;
        if was_paused {
            tracing::info!(account = %account, by = who.name(), "webhook endpoint resumed");
            self.emit(Event::EndpointResumed {
                account: account.clone(),
                by: who.name().to_owned(),
                at: self.clock.now(),
            });
        }
        self.account_changed(account);
        Ok(was_paused)
    }
}

#[cfg(test)]
mod tests;
