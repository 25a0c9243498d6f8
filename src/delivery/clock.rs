//! Where the scheduler reads the time: the system clock, or a manual clock for tests (feature
//! `test-util`).

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;

#[cfg(any(test, feature = "test-util"))]
mod manual;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use manual::ManualClock;

/// The time source of the delivery scheduler.
///
/// Only [`now`](Clock::now) must be written. A clock whose time does not follow real time (like
/// `ManualClock`, feature `test-util`) also answers [`sleep_hint`](Clock::sleep_hint) with `None` and calls the
/// wakers given to [`watch`](Clock::watch) whenever its time moves, so the scheduler sleeps
/// until then instead of for a real duration.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// How long, in real time, the scheduler may sleep before `until` is reached on this
    /// clock; `None` when only a call to a watcher's [`ClockWaker::wake`] can tell.
    ///
    /// The default follows real time: the time from [`now`](Clock::now) to `until`.
    fn sleep_hint(&self, until: Timestamp) -> Option<Duration> {
        Some(Duration::try_from(until.duration_since(self.now())).unwrap_or(Duration::ZERO))
    }

    /// Asks the clock to call `waker` whenever its time moves other than in real time. The
    /// default does nothing.
    fn watch(&self, waker: ClockWaker) {
        let _ = waker;
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
    fn sleep_hint(&self, until: Timestamp) -> Option<Duration> {
        (**self).sleep_hint(until)
    }
    fn watch(&self, waker: ClockWaker) {
        (**self).watch(waker)
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
    fn sleep_hint(&self, until: Timestamp) -> Option<Duration> {
        (**self).sleep_hint(until)
    }
    fn watch(&self, waker: ClockWaker) {
        (**self).watch(waker)
    }
}

/// Wakes a scheduler when a [`Clock`]'s time moves. Holding one does not keep the scheduler
/// alive.
#[derive(Clone)]
pub struct ClockWaker(Weak<dyn Fn() + Send + Sync>);

impl ClockWaker {
    pub(crate) fn new(wake: &Arc<dyn Fn() + Send + Sync>) -> Self {
        ClockWaker(Arc::downgrade(wake))
    }

    /// Wakes the scheduler. Returns `false` once the scheduler is gone: the waker can then be
    /// dropped.
    pub fn wake(&self) -> bool {
        match self.0.upgrade() {
            Some(wake) => {
                wake();
                true
            }
            None => false,
        }
    }
}

impl fmt::Debug for ClockWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClockWaker")
            .field("alive", &(self.0.strong_count() > 0))
            .finish()
    }
}

/// The real time, from the operating system. The default clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_hint_follows_real_time() {
        let c = SystemClock;
        let later = c.now() + jiff::SignedDuration::from_secs(10);
        let hint = c.sleep_hint(later).unwrap();
        assert!(hint <= Duration::from_secs(10) && hint > Duration::from_secs(9));
        assert_eq!(c.sleep_hint(Timestamp::UNIX_EPOCH), Some(Duration::ZERO));
    }
}
