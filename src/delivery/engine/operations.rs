//! What the facade asks of the engine: accept call results, change settings, replay, remove,
//! and report status. Every function here may touch the store, so each is synchronous and the
//! facade runs it on a blocking thread for async callers.

use crate::account::Account;
use crate::campaign::{OffReason, SendDecision, WebhookIndicator};
use crate::delivery::engine::Engine;
use crate::delivery::events::Event;
use crate::delivery::health::{Change, EndpointHealth};
use crate::delivery::status::{DeadLetter, Status, indicator};
use crate::error::Result;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::payload::CallResult;
use crate::preferences::{AuditRecord, PreferencesUpdate, Principal};
use crate::request::EncodedBody;
use crate::store::{DeliveryFilter, DeliveryState, NewDelivery};
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

    pub(crate) fn update_preferences(
        &self,
        who: &Principal,
        account: &AccountId,
        update: PreferencesUpdate,
    ) -> Result<AuditRecord> {
        let now = self.clock.now();
        let mut update = update;
        let (record, url_changed) = self.change_account(account, |next| {
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
    pub(super) fn end_failure_streak(&self, account: &AccountId) {
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
