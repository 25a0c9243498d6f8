//! Reliable delivery: the retry schedule, outcome classification, endpoint health, events,
//! status, the injectable clock, and the worker that ties them to a store and a dispatcher.

mod classify;
pub(crate) mod clock;
mod events;
mod health;
pub(crate) mod schedule;
mod status;

pub use clock::{Clock, ClockWaker, ManualClock, SystemClock};
pub use events::{Event, FailureKind, PauseReason};
pub use health::{DEFAULT_PAUSE_AFTER, EndpointHealth, Pause};
pub use schedule::{MAX_RETRIES, MAX_RETRY_DELAY, RETRY_AFTER_CAP, RETRY_JITTER, RetrySchedule};
pub use status::{DeadLetter, Status};
