//! The health of each account's endpoint: consecutive failures, failing since when, paused.

use std::time::Duration;

use jiff::Timestamp;

use crate::delivery::events::PauseReason;
use crate::error::{Error, Result};

/// The health of one account's endpoint, as the worker sees it.
///
/// Every failed attempt (any status but 2xx, or no answer) adds to the streak; a 2xx ends it.
/// Once an endpoint has failed every attempt for the configured time (5 days by default), or
/// answered 410 Gone, it is paused: its deliveries stay pending and are not attempted until an
/// administrator calls [`Webhooks::resume_endpoint`](crate::Webhooks::resume_endpoint).
///
/// Stored (as JSON, through [`Settings::save_health`](crate::store::Settings::save_health)) when a streak
/// starts or ends and when the endpoint is paused or resumed, so a pause outlives a restart.
/// The failure count in between is kept in memory only.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct EndpointHealth {
    /// Failed attempts since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When the current streak of failures began.
    #[serde(default)]
    pub failing_since: Option<Timestamp>,
    /// When and why the endpoint was paused, if it is.
    #[serde(default)]
    pub paused: Option<Pause>,
}

/// When and why an endpoint was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Pause {
    /// When it was paused.
    pub at: Timestamp,
    /// Why.
    pub reason: PauseReason,
}

/// What a change to an endpoint's health asks of the worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// Save the record: a streak began or ended, or the pause changed.
    pub(crate) persist: bool,
    /// The endpoint has just been paused, for this reason.
    pub(crate) paused: Option<PauseReason>,
}

impl EndpointHealth {
    /// Whether deliveries to this endpoint wait for an administrator.
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// Whether the latest attempts failed.
    pub fn is_failing(&self) -> bool {
        self.consecutive_failures > 0 || self.failing_since.is_some()
    }

    pub(crate) fn on_success(&mut self) -> Change {
        let persist = self.failing_since.is_some();
        self.consecutive_failures = 0;
        self.failing_since = None;
        Change {
            persist,
            paused: None,
        }
    }

    pub(crate) fn on_failure(&mut self, now: Timestamp, pause_after: Duration) -> Change {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let mut change = Change::default();
        let since = *self.failing_since.get_or_insert_with(|| {
            change.persist = true;
            now
        });
        let failing_for = Duration::try_from(now.duration_since(since)).unwrap_or_default();
        if self.paused.is_none() && self.consecutive_failures > 1 && failing_for >= pause_after {
            change = self.pause(now, PauseReason::FailingTooLong);
        }
        change
    }

    pub(crate) fn pause(&mut self, now: Timestamp, reason: PauseReason) -> Change {
        let newly = self.paused.is_none();
        if newly {
            self.paused = Some(Pause { at: now, reason });
        }
        Change {
            persist: newly,
            paused: newly.then_some(reason),
        }
    }

    /// Resumes: not paused, no streak. Returns whether it was paused.
    pub(crate) fn resume(&mut self) -> bool {
        let was = self.paused.is_some();
        *self = EndpointHealth::default();
        was
    }

    /// A new URL is a new endpoint: the streak of the old one ends (a pause stays until an
    /// administrator resumes).
    pub(crate) fn url_changed(&mut self) -> bool {
        let persist = self.failing_since.is_some();
        self.consecutive_failures = 0;
        self.failing_since = None;
        persist
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("health always serializes")
    }

    pub(crate) fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| Error::store("stored endpoint health is not valid", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::DEFAULT_PAUSE_AFTER;

    fn t(hours: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + hours * 3600).unwrap()
    }

    #[test]
    fn a_streak_is_saved_when_it_starts_and_ends() {
        let mut h = EndpointHealth::default();
        assert_eq!(h.on_success(), Change::default());
        let c = h.on_failure(t(0), DEFAULT_PAUSE_AFTER);
        assert!(c.persist && c.paused.is_none());
        assert!(!h.on_failure(t(1), DEFAULT_PAUSE_AFTER).persist);
        assert_eq!((h.consecutive_failures, h.failing_since), (2, Some(t(0))));
        assert!(h.is_failing() && !h.is_paused());
        assert!(h.on_success().persist);
        assert_eq!(h, EndpointHealth::default());
    }

    #[test]
    fn failing_for_the_configured_time_pauses_once() {
        let mut h = EndpointHealth::default();
        h.on_failure(t(0), DEFAULT_PAUSE_AFTER);
        assert_eq!(
            h.on_failure(t(5 * 24 - 1), DEFAULT_PAUSE_AFTER).paused,
            None
        );
        let c = h.on_failure(t(5 * 24), DEFAULT_PAUSE_AFTER);
        assert_eq!(c.paused, Some(PauseReason::FailingTooLong));
        assert!(c.persist && h.is_paused());
        assert_eq!(h.paused.unwrap().at, t(5 * 24));
        assert_eq!(
            h.on_failure(t(5 * 24 + 1), DEFAULT_PAUSE_AFTER).paused,
            None
        );
        // A success does not resume: only an administrator does.
        h.on_success();
        assert!(h.is_paused());
        assert!(h.resume());
        assert!(!h.is_paused() && !h.is_failing());
        assert!(!h.resume());
    }

    #[test]
    fn gone_pauses_at_once_and_survives_json() {
        let mut h = EndpointHealth::default();
        h.on_failure(t(0), DEFAULT_PAUSE_AFTER);
        let c = h.pause(t(1), PauseReason::Gone);
        assert_eq!(c.paused, Some(PauseReason::Gone));
        assert_eq!(h.pause(t(2), PauseReason::Gone).paused, None);
        let back = EndpointHealth::from_json(&h.to_json()).unwrap();
        assert_eq!(back, h);
        assert_eq!(
            EndpointHealth::from_json("{}").unwrap(),
            EndpointHealth::default()
        );
        assert!(EndpointHealth::from_json("nope").is_err());
    }

    #[test]
    fn a_new_url_ends_the_streak_but_not_the_pause() {
        let mut h = EndpointHealth::default();
        h.on_failure(t(0), DEFAULT_PAUSE_AFTER);
        h.pause(t(0), PauseReason::Gone);
        assert!(h.url_changed());
        assert!(!h.is_failing() && h.is_paused());
    }
}
