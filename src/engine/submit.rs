//! A call result submitted: checked against both switches, its body encoded once into the
//! bytes every attempt sends, and stored (or handed back for the dialer's own transaction).

use crate::campaign::{OffReason, SendDecision};
use crate::encoding::EncodedBody;
use crate::engine::Engine;
use crate::error::Result;
use crate::ids::{AccountId, CampaignId, DeliveryId};
use crate::payload::CallResult;
use crate::store::NewDelivery;

/// What [`Webhooks::submit`](crate::Webhooks::submit) did with a call result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a skipped call result was not stored"]
pub enum Submitted {
    /// Stored durably; it will be delivered with this `webhook-id`.
    Accepted(DeliveryId),
    /// Not sent and not stored: a switch was off when it was submitted.
    Skipped(OffReason),
}

impl Submitted {
    /// The delivery's id, if it was accepted.
    pub fn id(&self) -> Option<&DeliveryId> {
        match self {
            Submitted::Accepted(id) => Some(id),
            Submitted::Skipped(_) => None,
        }
    }

    /// Whether it was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Submitted::Accepted(_))
    }
}

/// What [`Webhooks::prepare`](crate::Webhooks::prepare) made of a call result: the delivery to store, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a prepared delivery is stored only when you insert it"]
pub enum Prepared {
    /// Both switches are on: store this delivery (in the dialer's own transaction, with
    /// `store::postgres`'s enqueue, or with [`Outbox::insert`](crate::store::Outbox::insert)).
    Ready(NewDelivery),
    /// Not to be sent, and nothing to store: a switch was off.
    Skipped(OffReason),
}

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
}
