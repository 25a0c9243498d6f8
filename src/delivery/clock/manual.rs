//! [`ManualClock`]: a clock that moves only when told to, for tests (feature `test-util`).

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;

use super::{Clock, ClockWaker};
use crate::sync::lock;

/// A clock that moves only when told to: **for tests**.
///
/// Hand the scheduler an `Arc<ManualClock>` and keep a clone; every [`advance`](Self::advance)
/// or [`set`](Self::set) wakes the scheduler, which then makes the attempts that have become
/// due. A three-day retry schedule runs in milliseconds of real time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use call_result_webhook::delivery::{Clock, ManualClock};
///
/// let clock = ManualClock::new("2024-03-01T09:00:00Z".parse()?);
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now().to_string(), "2024-03-01T09:01:30Z");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ManualClock {
    now: Mutex<Timestamp>,
    watchers: Mutex<Vec<ClockWaker>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: Mutex::new(start),
            watchers: Mutex::new(Vec::new()),
        }
    }

    /// Moves the clock forward by `by` and wakes the schedulers watching it.
    pub fn advance(&self, by: Duration) {
        {
            let mut now = lock(&self.now);
            *now = crate::preferences::schedule::add(*now, by);
        }
        self.wake_all();
    }

    /// Sets the clock to `to` (forward or back) and wakes the schedulers watching it.
    pub fn set(&self, to: Timestamp) {
        *lock(&self.now) = to;
        self.wake_all();
    }

    fn wake_all(&self) {
        let watchers = lock(&self.watchers).clone();
        let alive: Vec<bool> = watchers.iter().map(ClockWaker::wake).collect();
        if alive.contains(&false) {
            lock(&self.watchers).retain(|w| w.0.strong_count() > 0);
        }
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &*lock(&self.now))
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *lock(&self.now)
    }

    fn sleep_hint(&self, until: Timestamp) -> Option<Duration> {
        (until <= self.now()).then_some(Duration::ZERO)
    }

    fn watch(&self, waker: ClockWaker) {
        lock(&self.watchers).push(waker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn manual_clock_moves_only_when_told_and_wakes_watchers() {
        let start: Timestamp = "2024-03-01T00:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = woken.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        clock.watch(ClockWaker::new(&wake));
        assert_eq!(clock.now(), start);
        assert_eq!(clock.sleep_hint(start), Some(Duration::ZERO));
        assert_eq!(
            clock.sleep_hint(start + jiff::SignedDuration::from_secs(1)),
            None
        );
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now(), start + jiff::SignedDuration::from_secs(5));
        clock.set(start);
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        drop(wake);
        clock.advance(Duration::from_secs(1));
        assert!(lock(&clock.watchers).is_empty());
    }
}
