//! What happens when an attempt is prepared and when it completes: the request built from
//! the account's current preferences, the verdict on the outcome, the record stored, the
//! endpoint's health, the events, and what the scheduler learns.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use jiff::Timestamp;

use crate::delivery::attempt::{Completed, Completion, Outcome};
use crate::delivery::classify::{Verdict, classify};
use crate::delivery::events::{Event, FailureKind, PauseReason};
use crate::engine::Engine;
use crate::error::{Error, error_chain};
use crate::ids::{AccountId, DeliveryId};
use crate::limits::PRUNE_BATCH;
use crate::preferences::{RetrySchedule, random_unit};
use crate::request::build_request_at;
use crate::store::{AttemptRecord, ClaimToken, Delivery, NextStep, answer_excerpt};

/// How often the attempts log is pruned while a prune finds less than a full batch.
const LOG_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

impl Engine {
    /// The request for one attempt, built from the account's *current* preferences at the
    /// clock's current time; or, when
    /// the URL is refused by the policy or the request cannot be built, the failure to record
    /// without sending anything.
    pub(super) fn prepare_attempt(&self, d: &Delivery) -> Result<Request<Bytes>, Verdict> {
        let accounts = self.accounts();
        let refuse = |reason: String| Verdict::Fail {
            status: None,
            reason,
            kind: FailureKind::Refused,
        };
        let Some(account) = accounts.get(&d.account) else {
            return Err(refuse("the account is unknown".into()));
        };
        let prefs = account.preferences();
        if let Some(url) = prefs.url()
            && let Err(e) = self.policy.check_url(url.as_url())
        {
            return Err(refuse(format!("refused by address policy: {e}")));
        }
        // The attempt's time comes from the engine's clock: it is the signed webhook-timestamp.
        build_request_at(prefs, &d.id, &d.body, self.clock.now()).map_err(|e| refuse(e.to_string()))
    }

    /// Records the outcomes of `completions` in one store call, so that a durable store makes
    /// them durable together, then, in order, updates each endpoint's health and tells the
    /// dialer. Returns, for each completion, what the scheduler needs to know.
    pub(super) fn record_outcomes(&self, completions: &[Completion]) -> Vec<Completed> {
        if completions.is_empty() {
            return Vec::new();
        }
        let now = self.clock.now();
        let decided: Vec<Decided> = completions.iter().map(|c| self.decide(c, now)).collect();
        let writes: Vec<(DeliveryId, ClaimToken, AttemptRecord)> = completions
            .iter()
            .zip(&decided)
            .map(|(c, d)| {
                (
                    c.attempt.delivery.clone(),
                    c.attempt.token,
                    d.record.clone(),
                )
            })
            .collect();
        let mut recorded = self.store.record_attempts(&writes);
        // A store answers once per attempt; one that does not has recorded nothing it did not
        // answer for.
        recorded.truncate(completions.len());
        recorded.resize_with(completions.len(), || {
            Err(Error::Store {
                message: "the store gave no answer for this attempt".into(),
                source: None,
            })
        });
        // Pruning only follows a store that just answered every outcome: during an outage
        // it would only add its own failing call to the recorder's (and a shutdown's) wait.
        let store_answered = recorded
            .iter()
            .all(|r| !matches!(r, Err(Error::Store { .. } | Error::StoreTimeout { .. })));
        let completed = completions
            .iter()
            .zip(decided)
            .zip(recorded)
            .map(|((c, d), r)| self.finish(c, d, r, now))
            .collect();
        if store_answered {
            self.prune_log(now);
        }
        completed
    }

    /// Forgets logged attempts older than the retention, at most
    /// [`PRUNE_BATCH`](crate::limits::PRUNE_BATCH) at a time: after a recording, once every
    /// [`LOG_PRUNE_INTERVAL`], or at once again while a prune finds a full batch to forget.
    /// Off the recording's path: the outcomes are recorded before it, and it is skipped after a
    /// recording the store failed.
    fn prune_log(&self, now: Timestamp) {
        let Ok(mut next) = self.next_log_prune.try_lock() else {
            return;
        };
        if next.is_some_and(|at| now < at) {
            return;
        }
        let retention = jiff::SignedDuration::try_from(self.limits.attempt_retention)
            .unwrap_or(jiff::SignedDuration::MAX);
        let before = now.checked_sub(retention).unwrap_or(Timestamp::MIN);
        let later = now
            .checked_add(LOG_PRUNE_INTERVAL)
            .unwrap_or(Timestamp::MAX);
        *next = match self.store.prune_attempts(before, PRUNE_BATCH) {
            Ok(n) if n >= PRUNE_BATCH as u64 => None,
            Ok(_) => Some(later),
            Err(e) => {
                tracing::warn!(error = %e, "could not forget old logged attempts; will try again");
                Some(later)
            }
        };
    }

    /// When the attempt after attempt `number` of a delivery of `account` is due under its retry
    /// schedule (the default one if the account is gone), or `None` when none is left.
    fn next_attempt_at(
        &self,
        account: &AccountId,
        number: u32,
        now: Timestamp,
        retry_after: Option<Duration>,
    ) -> Option<Timestamp> {
        let accounts = self.accounts();
        let default;
        let schedule = match accounts.get(account) {
            Some(acc) => acc.preferences().retry_schedule(),
            None => {
                default = RetrySchedule::default();
                &default
            }
        };
        schedule.next_attempt_at(number, now, retry_after, random_unit())
    }

    /// What an attempt's outcome means: the verdict, and the record to store.
    fn decide(&self, c: &Completion, now: Timestamp) -> Decided {
        let a = &c.attempt;
        let verdict = match &c.outcome {
            Outcome::Sent(result) => classify(result, now),
            Outcome::NotSent(verdict) => verdict.clone(),
        };
        let mut failed_for_good = None;
        let (next, error) = match &verdict {
            Verdict::Delivered { .. } => (NextStep::Delivered, None),
            Verdict::Retry {
                reason,
                retry_after,
                ..
            } => match self.next_attempt_at(&a.account, a.number, now, *retry_after) {
                Some(at) => (NextStep::RetryAt(at), Some(reason.clone())),
                None => {
                    let reason = format!("{reason}; no retries left");
                    failed_for_good = Some((FailureKind::Expired, reason.clone()));
                    (NextStep::Failed, Some(reason))
                }
            },
            Verdict::Fail { reason, kind, .. } => {
                failed_for_good = Some((*kind, reason.clone()));
                (NextStep::Failed, Some(reason.clone()))
            }
            // The delivery waits, due at once, for the endpoint to be resumed.
            Verdict::Gone { reason } => (NextStep::RetryAt(now), Some(reason.clone())),
        };
        let record = AttemptRecord {
            at: now,
            status: verdict.status(),
            error,
            next,
            duration: c.latency,
            answer: self.answer_excerpt(c),
        };
        a.span.record("status", verdict.status());
        a.span.record("latency_ms", c.latency.as_millis() as u64);
        let paused_first = matches!(verdict, Verdict::Gone { .. })
            .then(|| self.update_health(&a.account, &verdict, now));
        Decided {
            paused_first,
            verdict,
            record,
            failed_for_good,
        }
    }

    /// The start of the receiver's answer as the attempts log keeps it, the account's own
    /// secrets blanked out (a receiver that echoes the request would show them).
    fn answer_excerpt(&self, c: &Completion) -> String {
        let Outcome::Sent(Ok(response)) = &c.outcome else {
            return String::new();
        };
        let body = response.body_prefix();
        if body.is_empty() {
            return String::new();
        }
        let accounts = self.accounts();
        let secrets = accounts
            .get(&c.attempt.account)
            .map(|a| a.preferences().secret_values())
            .unwrap_or_default();
        answer_excerpt(body, &secrets)
    }

    /// After the store's answer: the endpoint's health, the events, and the scheduler's next
    /// step.
    fn finish(
        &self,
        c: &Completion,
        decided: Decided,
        recorded: crate::error::Result<()>,
        now: Timestamp,
    ) -> Completed {
        let a = &c.attempt;
        if let Err(e) = recorded {
            return unrecorded(&a.span, e);
        }
        let Decided {
            verdict,
            record,
            failed_for_good,
            paused_first,
        } = decided;
        let paused = match paused_first {
            Some(paused) => paused,
            None => self.update_health(&a.account, &verdict, now),
        };

        // Recorded: counted, as the events below report it.
        self.observer
            .recorded(&a.account, &verdict, failed_for_good.is_some(), c.latency);

        self.report_attempt(c, &verdict, &record);
        if let Some((kind, reason)) = failed_for_good {
            tracing::warn!(parent: &a.span, kind = kind.as_str(), "webhook delivery failed for good");
            self.emit(Event::DeliveryFailed {
                delivery: a.delivery.clone(),
                account: a.account.clone(),
                campaign: a.campaign.clone(),
                attempts: a.number,
                kind,
                reason,
            });
        }
        if let Some(reason) = paused {
            tracing::warn!(account = %a.account, reason = reason.describe(), "webhook endpoint paused");
            self.emit(Event::EndpointPaused {
                account: a.account.clone(),
                reason,
                at: now,
            });
        }
        match record.next {
            NextStep::RetryAt(at) => Completed::RetryAt(at),
            _ => Completed::Done,
        }
    }

    /// Tells the dialer how the attempt went: delivered, or failed (and when it is tried again).
    fn report_attempt(&self, c: &Completion, verdict: &Verdict, record: &AttemptRecord) {
        let a = &c.attempt;
        if let Verdict::Delivered { status } = verdict {
            tracing::info!(parent: &a.span, outcome = "delivered", "webhook delivered");
            self.emit(Event::AttemptSucceeded {
                delivery: a.delivery.clone(),
                account: a.account.clone(),
                campaign: a.campaign.clone(),
                attempt: a.number,
                status: *status,
                latency: c.latency,
            });
            return;
        }
        let next_attempt_at = match record.next {
            NextStep::RetryAt(at) if !matches!(verdict, Verdict::Gone { .. }) => Some(at),
            _ => None,
        };
        let reason = record.error.clone().unwrap_or_default();
        tracing::warn!(parent: &a.span, outcome = "failed", reason = %reason, next_attempt_at = ?next_attempt_at, "webhook attempt failed");
        self.emit(Event::AttemptFailed {
            delivery: a.delivery.clone(),
            account: a.account.clone(),
            campaign: a.campaign.clone(),
            attempt: a.number,
            status: verdict.status(),
            reason,
            next_attempt_at,
        });
    }

    /// Updates the endpoint's health with an attempt's outcome and saves it when that matters
    /// (see [`Engine::change_health_in_force`]). Returns the reason if this outcome paused the
    /// endpoint.
    pub(super) fn update_health(
        &self,
        account: &AccountId,
        verdict: &Verdict,
        now: Timestamp,
    ) -> Option<PauseReason> {
        let pause_after = self.limits.pause_after;
        let change = self.change_health_in_force(account, |health| match verdict {
            Verdict::Delivered { .. } => health.on_success(),
            Verdict::Gone { .. } => {
                health.on_failure(now, pause_after);
                health.pause(now, PauseReason::Gone)
            }
            _ => health.on_failure(now, pause_after),
        });
        change.paused
    }
}

/// What the scheduler learns of an attempt whose outcome the store did not record.
fn unrecorded(span: &tracing::Span, e: Error) -> Completed {
    match e {
        Error::UnknownDelivery(_) => {
            tracing::debug!(parent: span, "delivery removed while in flight");
            Completed::Forgotten
        }
        Error::LeaseLost { .. } => {
            // Its lease ran out and another claim took it: that claim's outcome stands.
            tracing::warn!(parent: span, "the claim's lease ran out before its outcome was recorded; not recorded");
            Completed::Forgotten
        }
        e => {
            tracing::error!(parent: span, error = %e, "could not record the attempt's outcome; it is kept and recorded when the store recovers");
            Completed::NotRecorded(error_chain(&e))
        }
    }
}

/// An attempt's outcome, decided and not yet recorded.
struct Decided {
    verdict: Verdict,
    record: AttemptRecord,
    failed_for_good: Option<(FailureKind, String)>,
    /// A 410's pause, saved before the outcome is recorded: once the delivery is pending
    /// again, no process may claim it, since the store already leaves the account out.
    paused_first: Option<Option<PauseReason>>,
}
