//! What an administrator does with stored deliveries (replay, remove, list the dead letters)
//! and what the dialer reads of them (status and indicator). Every function here may touch
//! the store, so each is synchronous and the facade runs it on a blocking thread for async
//! callers.

use crate::campaign::WebhookIndicator;
use crate::delivery::status::{DeadLetter, Status, indicator};
use crate::engine::Engine;
use crate::error::Result;
use crate::ids::{AccountId, CampaignId};
use crate::permissions::Principal;
use crate::store::{AttemptQuery, DeliveryFilter, DeliveryState, LoggedAttempt};

impl Engine {
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

    pub(crate) fn attempts(&self, query: &AttemptQuery) -> Result<Vec<LoggedAttempt>> {
        self.store.attempts(query)
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
        let held = stats.pending > 0 && !super::open(acc, Some(&endpoint));
        Ok(Status::new(
            stats,
            held,
            endpoint,
            self.signal.stopped_because(),
            self.store_problem().map(|p| p.cause),
        ))
    }

    pub(crate) fn indicator(
        &self,
        account: &AccountId,
        campaign: Option<&CampaignId>,
    ) -> WebhookIndicator {
        let endpoint = self.health_of(account);
        indicator(self.accounts().get(account), campaign, &endpoint)
    }
}
