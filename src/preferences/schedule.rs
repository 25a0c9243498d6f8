//! When a failed delivery is tried again: the retry schedule, its jitter, and `Retry-After`.

use crate::limits::{MAX_RETRIES, MAX_RETRY_DELAY, RETRY_AFTER_CAP, RETRY_JITTER};
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

use crate::error::{Error, Result};

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;

/// The default delays before each retry (the first attempt is at once): 5 s, 5 min, 30 min,
/// 2 h, 5 h, 10 h, 14 h, 20 h, 24 h. Ten attempts over about three days.
const DEFAULT_DELAYS: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * MINUTE),
    Duration::from_secs(30 * MINUTE),
    Duration::from_secs(2 * HOUR),
    Duration::from_secs(5 * HOUR),
    Duration::from_secs(10 * HOUR),
    Duration::from_secs(14 * HOUR),
    Duration::from_secs(20 * HOUR),
    Duration::from_secs(24 * HOUR),
];

/// When a delivery that failed with a retryable outcome is tried again.
///
/// The first attempt is made at once. After a retryable failure (network error, timeout, 408,
/// 425, 429, 5xx) the next attempt waits for the next delay of the schedule, spread by
/// [`RETRY_JITTER`] (±20%). When the receiver sends `Retry-After` (seconds or an HTTP date),
/// the wait is the longer of the two:
///
/// ```text
/// next attempt = now + max(delay ± 20%, min(Retry-After, 24 h))
/// ```
///
/// `Retry-After` never adds attempts and never shortens a wait; an unreadable value is ignored.
/// When a delivery fails after its last delay it fails for good as *expired* and is kept as a
/// dead letter.
///
/// The default is [the schedule of the Standard Webhooks
/// example](https://www.standardwebhooks.com/): at once, then 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 14 h, 20 h and 24 h, ten attempts over about three days. Each account may have its own
/// (see [`PreferencesUpdate::retry_schedule`](crate::PreferencesUpdate::retry_schedule)).
///
/// A replayed dead letter continues its schedule where it stopped; one that had used up its
/// schedule starts it again from the beginning.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use call_result_webhook::delivery::RetrySchedule;
///
/// let schedule = RetrySchedule::default();
/// assert_eq!(schedule.attempts(), 10);
/// assert_eq!(schedule.delay_before_retry(1), Some(Duration::from_secs(5)));
/// assert_eq!(schedule.delay_before_retry(10), None);
///
/// let quick = RetrySchedule::new([Duration::from_millis(50), Duration::from_millis(100)])?;
/// assert_eq!(quick.attempts(), 3);
/// # Ok::<(), call_result_webhook::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            delays: DEFAULT_DELAYS.to_vec(),
        }
    }
}

impl fmt::Debug for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.delays).finish()
    }
}

impl RetrySchedule {
    /// A schedule with these delays before the 2nd, 3rd, ... attempt. No delays means one
    /// attempt only. At most [`MAX_RETRIES`] delays of at most [`MAX_RETRY_DELAY`] each.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] with more than [`MAX_RETRIES`] delays or a delay over
    /// [`MAX_RETRY_DELAY`].
    pub fn new(delays: impl IntoIterator<Item = Duration>) -> Result<Self> {
        let delays: Vec<Duration> = delays.into_iter().take(MAX_RETRIES + 1).collect();
        if delays.len() > MAX_RETRIES {
            return Err(Error::config(
                "retry_schedule",
                format!("at most {MAX_RETRIES} retries"),
            ));
        }
        if delays.iter().any(|d| *d > MAX_RETRY_DELAY) {
            return Err(Error::config(
                "retry_schedule",
                "a delay may be at most 7 days",
            ));
        }
        Ok(RetrySchedule { delays })
    }

    /// The delays before each retry, without jitter.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How many attempts a delivery gets in all: the first and one per delay.
    pub fn attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delay (before jitter) after failed attempt number `attempt` (1-based), or `None` if
    /// that was the last attempt of the schedule.
    ///
    /// Attempts are counted over the delivery's life, replays included; a delivery that used up
    /// its schedule and was replayed starts it again.
    pub fn delay_before_retry(&self, attempt: u32) -> Option<Duration> {
        let position = (attempt.max(1) - 1) % self.attempts();
        self.delays.get(position as usize).copied()
    }

    /// When to try again after failed attempt `attempt` at `now`: the scheduled delay spread by
    /// `unit` (0.0 gives -20%, 1.0 gives +20%), or `Retry-After` if that is longer (capped at
    /// [`RETRY_AFTER_CAP`]). `None` when the schedule is used up.
    pub(crate) fn next_attempt_at(
        &self,
        attempt: u32,
        now: Timestamp,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Timestamp> {
        let delay = jittered(self.delay_before_retry(attempt)?, unit);
        let wait = match retry_after {
            Some(asked) => delay.max(asked.min(RETRY_AFTER_CAP)),
            None => delay,
        };
        Some(add(now, wait))
    }

    pub(crate) fn to_millis(&self) -> Vec<u64> {
        self.delays.iter().map(|d| d.as_millis() as u64).collect()
    }

    pub(crate) fn from_millis(millis: &[u64]) -> Result<Self> {
        RetrySchedule::new(millis.iter().map(|ms| Duration::from_millis(*ms)))
    }
}

/// `delay` spread by ±[`RETRY_JITTER`]: `unit` 0.0 gives the shortest, 1.0 the longest.
pub(crate) fn jittered(delay: Duration, unit: f64) -> Duration {
    let factor = 1.0 - RETRY_JITTER + 2.0 * RETRY_JITTER * unit.clamp(0.0, 1.0);
    delay.mul_f64(factor)
}

/// A uniform random number in `[0, 1]` for jitter.
pub(crate) fn random_unit() -> f64 {
    // Jitter only spreads load; if the OS random source fails, the middle of the range is fine.
    let r = getrandom::u64().unwrap_or(u64::MAX / 2);
    (r >> 11) as f64 / ((1u64 << 53) - 1) as f64
}

pub(crate) fn add(at: Timestamp, wait: Duration) -> Timestamp {
    let wait = jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::MAX);
    at.saturating_add(wait)
        .expect("adding a non-negative duration saturates")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        "2024-03-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn default_is_ten_attempts_over_about_three_days() {
        let s = RetrySchedule::default();
        assert_eq!(s.attempts(), 10);
        let total: Duration = s.delays().iter().sum();
        assert_eq!(
            total,
            Duration::from_secs(5 + 300 + 1800 + (2 + 5 + 10 + 14 + 20 + 24) * 3600)
        );
        assert!(total > Duration::from_secs(3 * 24 * 3600));
        assert!(total < Duration::from_secs(4 * 24 * 3600));
        for (i, d) in DEFAULT_DELAYS.iter().enumerate() {
            assert_eq!(s.delay_before_retry(i as u32 + 1), Some(*d));
        }
        assert_eq!(s.delay_before_retry(10), None);
    }

    #[test]
    fn a_used_up_schedule_starts_again_after_a_replay() {
        let s = RetrySchedule::new([Duration::from_secs(1), Duration::from_secs(2)]).unwrap();
        let delays: Vec<_> = (1..=7).map(|a| s.delay_before_retry(a)).collect();
        let (one, two) = (Some(Duration::from_secs(1)), Some(Duration::from_secs(2)));
        assert_eq!(delays, [one, two, None, one, two, None, one]);
        let once = RetrySchedule::new([]).unwrap();
        assert_eq!(once.attempts(), 1);
        assert_eq!(once.delay_before_retry(1), None);
    }

    #[test]
    fn limits_are_checked() {
        assert!(RetrySchedule::new(vec![Duration::from_secs(1); MAX_RETRIES]).is_ok());
        assert!(matches!(
            RetrySchedule::new(vec![Duration::from_secs(1); MAX_RETRIES + 1]),
            Err(Error::InvalidConfig {
                field: "retry_schedule",
                ..
            })
        ));
        assert!(RetrySchedule::new([MAX_RETRY_DELAY + Duration::from_secs(1)]).is_err());
        let ms = RetrySchedule::from_millis(&[50, 100, 200]).unwrap();
        assert_eq!(ms.to_millis(), [50, 100, 200]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent_over_many_draws() {
        let s = RetrySchedule::default();
        let (mut low, mut high) = (false, false);
        for attempt in 1..10 {
            let base = s.delay_before_retry(attempt).unwrap().as_secs_f64();
            for _ in 0..2000 {
                let at = s
                    .next_attempt_at(attempt, t0(), None, random_unit())
                    .unwrap();
                let waited = at.duration_since(t0()).as_secs_f64();
                assert!(waited >= base * 0.8 - 1e-6, "{waited} < 0.8 * {base}");
                assert!(waited <= base * 1.2 + 1e-6, "{waited} > 1.2 * {base}");
                low |= waited < base * 0.9;
                high |= waited > base * 1.1;
            }
        }
        assert!(low && high, "draws cover both sides of the range");
        assert_eq!(
            jittered(Duration::from_secs(100), 0.0),
            Duration::from_secs(80)
        );
        assert_eq!(
            jittered(Duration::from_secs(100), 1.0),
            Duration::from_secs(120)
        );
        assert_eq!(
            jittered(Duration::from_secs(100), 0.5),
            Duration::from_secs(100)
        );
    }

    #[test]
    fn retry_after_only_lengthens_a_wait_and_is_capped() {
        let s = RetrySchedule::default();
        let after = |attempt, ra: Option<u64>| {
            s.next_attempt_at(attempt, t0(), ra.map(Duration::from_secs), 0.5)
                .map(|at| at.duration_since(t0()).as_secs())
        };
        // 5 s scheduled, 2 s asked: the schedule wins.
        assert_eq!(after(1, Some(2)), Some(5));
        // 5 s scheduled, 60 s asked: Retry-After wins.
        assert_eq!(after(1, Some(60)), Some(60));
        // Asking for two days gets the cap.
        assert_eq!(after(1, Some(2 * 86_400)), Some(86_400));
        // 24 h scheduled beats a capped Retry-After only when longer.
        assert_eq!(after(9, Some(10 * 86_400)), Some(86_400));
        // Retry-After never adds an attempt.
        assert_eq!(after(10, Some(60)), None);
        assert_eq!(after(1, None), Some(5));
    }
}
