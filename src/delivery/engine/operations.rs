//! What the facade asks of the engine: accept call results, change settings, replay, remove,
//! and report status. Every function here may touch the store, so each is synchronous and the
//! facade runs it on a blocking thread for async callers.

use crate::account::Account;
use crate::campaign::{OffReason, SendDecision, WebhookIndicator};
use crate::delivery::engine::Engine;
use crate::delivery::events::Event;
use crate::delivery::health::EndpointHealth;
use crate::delivery::status::{DeadLetter, Status, indicator};
use crate::error::Result;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::payload::CallResult;
use crate::preferences::{AuditRecord, PreferencesUpdate, Principal};
use crate::request::EncodedBody;
use crate::store::{DeliveryFilter, DeliveryState, NewDelivery};
use crate::sync::lock;
use crate::webhooks::{Prepared, Submitted};

impl Engine {
    /// Checks both switches and encodes the body once: the delivery to store under `id`, or
    /// why nothing is to be stored. No I/O.
    pub(crate) fn prepare_submit(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
        call: &CallResult,
        id: DeliveryId,
    ) -> Result<Prepared> {
        let body = {
            let accounts = self.accounts();
            let Some(acc) = accounts.get(account) else {
                return Ok(Prepared::Skipped(OffReason::AccountNotConfigured));
            };
            if let SendDecision::Skip(reason) = acc.decide(campaign) {
                return Ok(Prepared::Skipped(reason));
            }
            EncodedBody::encode(call, acc.preferences())?
        };
        let now = self.clock.now();
        Ok(Prepared::Ready(NewDelivery {
            id,
            account: account.clone(),
            campaign: campaign.clone(),
            body,
            created_at: now,
            next_attempt_at: now,
        }))
    }

    /// Checks both switches, encodes the body once and stores the delivery under `id`. A
    /// delivery already stored under `id` for the same call result is left as it is.
    pub(crate) fn submit(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
        call: &CallResult,
        id: DeliveryId,
    ) -> Result<Submitted> {
        let delivery = match self.prepare_submit(account, campaign, call, id.clone())? {
            Prepared::Ready(delivery) => delivery,
            Prepared::Skipped(reason) => return Ok(Submitted::Skipped(reason)),
        };
        self.store.insert(std::slice::from_ref(&delivery))?;
        tracing::debug!(delivery_id = %id, account = %account, campaign = %campaign, "call result accepted");
        self.signal.poke();
        Ok(Submitted::Accepted(id))
    }

    /// A copy of the account's settings, if any were ever saved.
    pub(crate) fn account(&self, id: &AccountId) -> Option<Account> {
        self.accounts().get(id).cloned()
    }

    /// An administrator's change to an account's settings, under the admin lock: read the
    /// account (new if never saved), apply `change`, save it (only when something changed: a
    /// dialer that sets the same preferences at every start writes nothing, so it still starts
    /// on a full disk and delivers its backlog), then put it in force here. Nothing changes
    /// when `change` or the save fails.
    fn change_account<T>(
        &self,
        account: &AccountId,
        change: impl FnOnce(&mut Account) -> Result<T>,
    ) -> Result<T> {
        let _admin = lock(&self.admin);
        let stored = self.account(account);
        let mut next = stored
            .clone()
            .unwrap_or_else(|| Account::new(account.clone()));
        let answer = change(&mut next)?;
        if stored.is_none_or(|before| !next.same_settings(&before)) {
            self.store.save_account(account, &next.to_storage_json())?;
        }
        self.accounts_mut().insert(account.clone(), next);
        Ok(answer)
    }

    pub(crate) fn update_preferences(
        &self,
        who: &Principal,
        account: &AccountId,
        update: PreferencesUpdate,
    ) -> Result<AuditRecord> {
        let now = self.clock.now();
        let (record, url_changed) = self.change_account(account, |next| {
            let old_url = next.preferences().url().cloned();
            let record = next.update_preferences_at(who, update, now)?;
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
        let mut all = lock(&self.health);
        if let Some(health) = all.get_mut(account)
            && health.url_changed()
            && let Err(e) = self
                .store
                .save_health(account, &health.to_json(), health.is_paused())
        {
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
        let was_paused = {
            let mut all = lock(&self.health);
            let mut health = all.get(account).cloned().unwrap_or_default();
            if health == EndpointHealth::default() {
                return Ok(false);
            }
            let was_paused = health.resume();
            self.store
                .save_health(account, &health.to_json(), health.is_paused())?;
            all.insert(account.clone(), health);
            was_paused
        };
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

    pub(crate) fn replay(&self, who: &Principal, filter: &DeliveryFilter) -> Result<u64> {
        who.require_admin("replay webhook deliveries")?;
        let n = self.store.requeue_failed(filter, self.clock.now())?;
        self.signal.poke();
        Ok(n)
    }

    pub(crate) fn remove(&self, who: &Principal, filter: &DeliveryFilter) -> Result<u64> {
        who.require_admin("remove webhook deliveries")?;
        let n = self.store.remove(filter)?;
        self.signal.poke();
        Ok(n)
    }

    pub(crate) fn dead_letters(
        &self,
        who: &Principal,
        filter: &DeliveryFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        who.require_admin("list failed webhook deliveries")?;
        let filter = filter.clone().state(DeliveryState::Failed);
        Ok(self
            .store
            .list(&filter, limit)?
            .into_iter()
            .map(DeadLetter::from)
            .collect())
    }

    pub(crate) fn status(
        &self,
        account: &AccountId,
        campaign: Option<&CampaignId>,
    ) -> Result<Status> {
        let stats = self.store.stats(account, campaign)?;
        let endpoint = self.health_of(account);
        let accounts = self.accounts();
        let acc = accounts.get(account);
        let indicator = indicator(acc, campaign, &endpoint);
        let held = stats.pending > 0 && !super::open(acc, Some(&endpoint));
        Ok(Status::new(
            indicator,
            stats,
            held,
            endpoint,
            self.signal.stopped_because(),
            self.store_problem().map(|p| p.cause),
        ))
    }

    pub(crate) fn indicator(&self, account: &AccountId, campaign: &CampaignId) -> WebhookIndicator {
        let endpoint = self.health_of(account);
        indicator(self.accounts().get(account), Some(campaign), &endpoint)
    }
}
