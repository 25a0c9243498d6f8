//! Metrics through the [`metrics`](https://docs.rs/metrics/0.24) facade (feature `metrics`).
//!
//! The crate records; it installs no exporter. The dialer installs the one it wants (Prometheus,
//! StatsD, OpenTelemetry...) with that exporter's own crate, before or after building
//! [`Webhooks`](crate::Webhooks). Without a recorder installed, recording costs next to
//! nothing and goes nowhere.
//!
//! | Name | Type | Labels | What it counts |
//! | --- | --- | --- | --- |
//! | `call_result_webhook_attempts_total` | counter | `outcome` | Attempts whose outcome the store recorded, by the class of that outcome: `delivered` (2xx), `retry` (network error, timeout, 408, 425, 429, 5xx, 1xx), `failed` (3xx and other 4xx), `refused` (destination refused by the address policy, or a request that cannot be sent), `gone` (410: the endpoint is paused). The class is the attempt's, not the delivery's: a retryable failure on the schedule's last attempt is `retry` here and `failed` in `deliveries_total`. |
//! | `call_result_webhook_deliveries_total` | counter | `result` | Deliveries finished, once each: `delivered` (answered 2xx), `failed` (failed for good: rejected, refused, or out of retries; kept as a dead letter). |
//! | `call_result_webhook_in_flight` | gauge | none | **This process's**: attempts its worker has in flight, sent or being sent, or answered with their outcome not yet recorded. 0 once the worker stops. Summed over a fleet's processes, the fleet's. |
//! | `call_result_webhook_store_pending` | gauge | none | **The store's, so the whole fleet's**: deliveries pending in the store, submitted by any process on it: waiting for an attempt, in flight, or held (webhook off, endpoint paused). The sum of [`Outbox::stats`]' `pending` over the accounts this process has settings for (on a shared store, every account), re-read by the scheduler at most once a second (see below). Every process on the store reports the same figure: aggregate processes with `max`, never `sum`. |
//! | `call_result_webhook_attempt_duration_seconds` | histogram | none | How long each attempt counted in `attempts_total` took, from sending to the answer (0 for one refused before sending): its count equals the sum of `attempts_total`. |
//! | `call_result_webhook_store_failing` | gauge | none | 1 while the worker reports the store failing ([`Event::StoreFailing`](crate::Event::StoreFailing)), 0 once it works again ([`Event::StoreRecovered`](crate::Event::StoreRecovered)). |
//!
//! With [`WebhooksBuilder::metrics_by_account(true)`](crate::WebhooksBuilder::metrics_by_account),
//! `attempts_total`, `deliveries_total`, `attempt_duration_seconds` and `store_pending` carry an
//! `account` label (the account id) as well, and `store_pending` is then one series per account
//! instead of the total. It is off by default: every account becomes a set of series, which a
//! dialer with thousands of accounts may not want in its monitoring. `in_flight` and
//! `store_failing` describe the process, never an account.
//!
//! # When each is recorded
//!
//! Like [`Event`](crate::Event)s, an attempt is counted once its outcome is recorded in the
//! store, never before: an outcome the store could not record is counted when the worker
//! records it after the store recovers, and one the store refused (the delivery was removed
//! meanwhile, or its claim's lease ran out and another claim took it) is not counted at all.
//! Summed over a fleet of processes on one store, `attempts_total` and `deliveries_total`
//! therefore count each recorded outcome once.
//!
//! # One process, or the fleet
//!
//! A fleet of processes on one store (the `postgres` feature) exports each metric from every
//! process. The counters and `in_flight` are each process's own: `sum` them for the fleet's
//! (each recorded outcome is counted by the one process that recorded it). `store_pending`,
//! as its name says, is the store's: every process reads the same count, so a `sum` over
//! processes would count each pending delivery once per process. Aggregate it with `max`
//! (the freshest reading is usually the highest while deliveries arrive):
//!
//! ```text
//! max(call_result_webhook_store_pending)                       # the fleet's pending deliveries
//! max by (account) (call_result_webhook_store_pending)         # with metrics_by_account(true)
//! sum(call_result_webhook_in_flight)                           # the fleet's attempts in flight
//! sum(rate(call_result_webhook_attempts_total[5m])) by (outcome)
//! ```
//!
//! # How fresh `store_pending` is
//!
//! `store_pending` costs one [`Outbox::stats`] call per account it
//! re-reads, on the scheduler's thread, so it re-reads at most 64 accounts a second: first
//! those whose deliveries the worker claimed or recorded since the last reading, then the
//! others in turn. With up to 64 accounts it is at most about a second old; with more, an
//! account this worker has not touched may be up to one second per 64 accounts old. It is not
//! re-read while the store is failing, nor when no worker runs.
//!
//! The gauges describe one worker: a process with two [`Webhooks`](crate::Webhooks) (two
//! outboxes) should not run both with this feature.
//!
//! # Examples
//!
//! A Prometheus exporter (the `metrics-exporter-prometheus` crate), rendering histograms with
//! buckets; serve `handle.render()` on the dialer's own `/metrics`, or let the exporter's
//! `install` start its own HTTP listener:
//!
//! ```
//! use call_result_webhook::delivery::metrics::ATTEMPT_DURATION_SECONDS;
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//!
//! let buckets = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
//! let handle = PrometheusBuilder::new()
//!     .set_buckets_for_metric(Matcher::Full(ATTEMPT_DURATION_SECONDS.into()), &buckets)?
//!     .install_recorder()?;
//! // ... build `Webhooks`, start its worker ...
//! let text = handle.render();
//! # let _ = text;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::metrics::{Label, Unit, counter, describe_counter, describe_gauge, describe_histogram};

use crate::delivery::classify::Verdict;
use crate::delivery::events::FailureKind;
use crate::delivery::observer::Observer;
use crate::ids::AccountId;
use crate::store::Outbox;
use crate::sync::lock;

/// Attempts whose outcome was recorded, by `outcome`: a counter.
pub const ATTEMPTS_TOTAL: &str = "call_result_webhook_attempts_total";
/// Deliveries finished, by `result`: a counter.
pub const DELIVERIES_TOTAL: &str = "call_result_webhook_deliveries_total";
/// Attempts in flight in this process: a gauge, this process's own (`sum` over processes for
/// the fleet's).
pub const IN_FLIGHT: &str = "call_result_webhook_in_flight";
/// Deliveries pending in the store, the whole fleet's: a gauge every process on the store
/// reports alike (`max` over processes, never `sum`).
pub const STORE_PENDING: &str = "call_result_webhook_store_pending";
/// How long each attempt took, in seconds: a histogram.
pub const ATTEMPT_DURATION_SECONDS: &str = "call_result_webhook_attempt_duration_seconds";
/// Whether the worker reports the store failing, 0 or 1: a gauge.
pub const STORE_FAILING: &str = "call_result_webhook_store_failing";

/// How many accounts one reading of `store_pending` re-reads at most.
const PENDING_ACCOUNTS_PER_READING: usize = 64;

/// The shortest time between two readings of `store_pending`.
const PENDING_EVERY: Duration = Duration::from_secs(1);

/// What the engine records with, as the builder set it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metrics {
    by_account: bool,
}

impl Metrics {
    /// Describes every metric to the recorder installed now (one installed later gets the
    /// values without their descriptions).
    pub(crate) fn new(by_account: bool) -> Self {
        describe_counter!(
            ATTEMPTS_TOTAL,
            Unit::Count,
            "Webhook attempts whose outcome was recorded, by outcome class."
        );
        describe_counter!(
            DELIVERIES_TOTAL,
            Unit::Count,
            "Webhook deliveries finished: delivered, or failed for good."
        );
        describe_gauge!(
            IN_FLIGHT,
            Unit::Count,
            "Webhook attempts in flight in this process (this process's own: sum over processes)."
        );
        describe_gauge!(
            STORE_PENDING,
            Unit::Count,
            "Webhook deliveries pending in the store, the whole fleet's (held and in flight \
             included): every process on the store reports the same figure, so aggregate \
             processes with max, not sum."
        );
        describe_histogram!(
            ATTEMPT_DURATION_SECONDS,
            Unit::Seconds,
            "How long each recorded webhook attempt took."
        );
        describe_gauge!(
            STORE_FAILING,
            Unit::Count,
            "1 while the webhook worker reports its store failing, else 0."
        );
        Metrics { by_account }
    }

    fn labels(&self, name: &'static str, value: &'static str, account: &AccountId) -> Vec<Label> {
        let mut labels = vec![Label::new(name, value)];
        if self.by_account {
            labels.push(Label::new("account", account.as_str().to_owned()));
        }
        labels
    }

    /// One attempt, its outcome recorded in the store.
    pub(crate) fn attempt(&self, account: &AccountId, verdict: &Verdict, took: Duration) {
        counter!(
            ATTEMPTS_TOTAL,
            self.labels("outcome", outcome_class(verdict), account)
        )
        .increment(1);
        let labels: Vec<Label> = if self.by_account {
            vec![Label::new("account", account.as_str().to_owned())]
        } else {
            Vec::new()
        };
        ::metrics::histogram!(ATTEMPT_DURATION_SECONDS, labels).record(took.as_secs_f64());
    }

    /// One delivery finished (`delivered` or `failed`), its outcome recorded in the store.
    pub(crate) fn delivery(&self, account: &AccountId, result: &'static str) {
        counter!(DELIVERIES_TOTAL, self.labels("result", result, account)).increment(1);
    }

    pub(crate) fn in_flight(&self, n: usize) {
        ::metrics::gauge!(IN_FLIGHT).set(n as f64);
    }

    pub(crate) fn store_failing(&self, failing: bool) {
        ::metrics::gauge!(STORE_FAILING).set(if failing { 1.0 } else { 0.0 });
    }
}

/// The class `attempts_total` counts an attempt's outcome under.
pub(crate) fn outcome_class(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Delivered { .. } => "delivered",
        Verdict::Retry { .. } => "retry",
        Verdict::Fail {
            kind: FailureKind::Refused,
            ..
        } => "refused",
        Verdict::Fail { .. } => "failed",
        Verdict::Gone { .. } => "gone",
    }
}

/// The scheduler's readings of `store_pending`: each account's last count, and which accounts to
/// re-read first.
#[derive(Debug, Default)]
pub(crate) struct PendingReadings {
    counts: HashMap<AccountId, u64>,
    /// Accounts whose deliveries the worker claimed or recorded since their last reading.
    touched: HashSet<AccountId>,
    /// The last account read in turn: the next turn starts after it.
    turn: Option<AccountId>,
    last: Option<Instant>,
}

impl PendingReadings {
    /// The worker claimed or recorded one of the account's deliveries.
    pub(crate) fn touch(&mut self, account: &AccountId) {
        if !self.touched.contains(account) {
            self.touched.insert(account.clone());
        }
    }

    /// How long until the next reading is wanted: `None` when nothing can have changed that
    /// a reading would show (nothing touched, every account read on the last reading).
    pub(crate) fn wanted_in(&self, accounts: usize, now: Instant) -> Option<Duration> {
        let wanted = self.last.is_none()
            || !self.touched.is_empty()
            || accounts > PENDING_ACCOUNTS_PER_READING;
        wanted.then(|| match self.last {
            Some(last) => (last + PENDING_EVERY).saturating_duration_since(now),
            None => Duration::ZERO,
        })
    }

    /// Re-reads up to [`PENDING_ACCOUNTS_PER_READING`] of `accounts()` (every account this
    /// process has settings for, listed only when a reading is due) from `store`, if a second
    /// has passed since the last reading, and publishes the gauge. A store error ends the
    /// reading: the counts read so far stand.
    pub(crate) fn read(
        &mut self,
        metrics: &Metrics,
        store: &dyn Outbox,
        accounts: impl FnOnce() -> Vec<AccountId>,
        now: Instant,
    ) {
        if self.last.is_some_and(|last| now < last + PENDING_EVERY) {
            return;
        }
        self.last = Some(now);
        let mut accounts = accounts();
        accounts.sort_unstable();
        let known: HashSet<&AccountId> = accounts.iter().collect();
        self.counts.retain(|a, _| known.contains(a));
        self.touched.retain(|a| known.contains(a));
        let picked = self.pick(&accounts);
        let mut read = Vec::with_capacity(picked.len());
        for account in picked {
            match store.stats(&account, None) {
                Ok(stats) => {
                    self.touched.remove(&account);
                    self.counts.insert(account.clone(), stats.pending);
                    read.push(account);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not read the pending count for the pending gauge");
                    break;
                }
            }
        }
        if metrics.by_account {
            for account in read {
                let n = self.counts.get(&account).copied().unwrap_or(0);
                ::metrics::gauge!(STORE_PENDING, "account" => account.as_str().to_owned())
                    .set(n as f64);
            }
        } else {
            let total: u64 = self.counts.values().sum();
            ::metrics::gauge!(STORE_PENDING).set(total as f64);
        }
    }

    /// The accounts to re-read: touched ones first, then the others in turn after the last
    /// one read in turn; at most [`PENDING_ACCOUNTS_PER_READING`]. `sorted` is every known
    /// account, sorted.
    fn pick(&mut self, sorted: &[AccountId]) -> Vec<AccountId> {
        let mut picked: Vec<AccountId> = sorted
            .iter()
            .filter(|a| self.touched.contains(*a))
            .take(PENDING_ACCOUNTS_PER_READING)
            .cloned()
            .collect();
        let start = match &self.turn {
            Some(last) => sorted.partition_point(|a| a <= last),
            None => 0,
        };
        let in_turn = sorted[start..].iter().chain(&sorted[..start]);
        for account in in_turn {
            if picked.len() >= PENDING_ACCOUNTS_PER_READING {
                break;
            }
            if !self.touched.contains(account) {
                picked.push(account.clone());
                self.turn = Some(account.clone());
            }
        }
        picked
    }
}

/// The [`Observer`] with the `metrics` feature: every reading goes to the `metrics` facade.
#[derive(Debug)]
pub(crate) struct Recorder {
    metrics: Metrics,
    /// The `store_pending` gauge's readings, by the running worker.
    pending: Mutex<PendingReadings>,
}

impl Recorder {
    pub(crate) fn new(by_account: bool) -> Self {
        Recorder {
            metrics: Metrics::new(by_account),
            pending: Mutex::new(PendingReadings::default()),
        }
    }
}

impl Observer for Recorder {
    fn worker_started(&self, store_failing: bool) {
        *lock(&self.pending) = PendingReadings::default();
        self.metrics.store_failing(store_failing);
    }

    fn recorded(
        &self,
        account: &AccountId,
        verdict: &Verdict,
        failed_for_good: bool,
        took: Duration,
    ) {
        self.metrics.attempt(account, verdict, took);
        if matches!(verdict, Verdict::Delivered { .. }) {
            self.metrics.delivery(account, "delivered");
        } else if failed_for_good {
            self.metrics.delivery(account, "failed");
        }
    }

    fn in_flight(&self, n: usize) {
        self.metrics.in_flight(n);
    }

    fn store_failing(&self, failing: bool) {
        self.metrics.store_failing(failing);
    }

    fn touched(&self, account: &AccountId) {
        lock(&self.pending).touch(account);
    }

    fn read_pending(
        &self,
        store: &dyn Outbox,
        accounts: &dyn Fn() -> Vec<AccountId>,
        account_count: usize,
    ) -> Option<Duration> {
        let mut pending = lock(&self.pending);
        pending.read(&self.metrics, store, accounts, Instant::now());
        pending.wanted_in(account_count, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<AccountId> {
        names.iter().map(|n| AccountId::from(*n)).collect()
    }

    #[test]
    fn outcome_classes_follow_the_verdict() {
        let fail = |kind| Verdict::Fail {
            status: None,
            reason: String::new(),
            kind,
        };
        assert_eq!(
            outcome_class(&Verdict::Delivered { status: 204 }),
            "delivered"
        );
        let retry = Verdict::Retry {
            status: Some(503),
            reason: String::new(),
            retry_after: None,
        };
        assert_eq!(outcome_class(&retry), "retry");
        assert_eq!(outcome_class(&fail(FailureKind::Rejected)), "failed");
        assert_eq!(outcome_class(&fail(FailureKind::Expired)), "failed");
        assert_eq!(outcome_class(&fail(FailureKind::Refused)), "refused");
        assert_eq!(
            outcome_class(&Verdict::Gone {
                reason: String::new()
            }),
            "gone"
        );
    }

    #[test]
    fn few_accounts_are_all_read_each_time() {
        let mut r = PendingReadings::default();
        let all = ids(&["a", "b", "c"]);
        assert_eq!(r.pick(&all), all);
        r.touch(&AccountId::from("b"));
        assert_eq!(r.pick(&all), ids(&["b", "a", "c"]));
    }

    #[test]
    fn many_accounts_are_read_touched_first_then_in_turn() {
        let mut r = PendingReadings::default();
        let all: Vec<AccountId> = {
            let mut v: Vec<AccountId> = (0..100)
                .map(|n| AccountId::from(format!("acct{n:03}")))
                .collect();
            v.sort_unstable();
            v
        };
        let first = r.pick(&all);
        assert_eq!(first, all[..64].to_vec());
        r.touch(&all[10]);
        let second = r.pick(&all);
        assert_eq!(second.len(), 64);
        assert_eq!(second[0], all[10], "touched first");
        // Then from after the last one read in turn, wrapping around, the touched one left out.
        assert_eq!(second[1..37], all[64..100]);
        let wrapped: Vec<AccountId> = all[..28]
            .iter()
            .filter(|a| **a != all[10])
            .cloned()
            .collect();
        assert_eq!(second[37..], wrapped[..]);
    }

    #[test]
    fn a_reading_is_wanted_only_when_something_may_have_changed() {
        let mut r = PendingReadings::default();
        let now = Instant::now();
        assert_eq!(r.wanted_in(3, now), Some(Duration::ZERO), "never read");
        r.last = Some(now);
        assert_eq!(r.wanted_in(3, now), None, "all read, nothing touched");
        assert_eq!(
            r.wanted_in(65, now),
            Some(PENDING_EVERY),
            "more to read in turn"
        );
        r.touch(&AccountId::from("a"));
        assert_eq!(
            r.wanted_in(3, now + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
    }
}
