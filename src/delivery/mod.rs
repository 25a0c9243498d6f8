//! Reliable delivery: the retry schedule, outcome classification, endpoint health, events,
//! status, the injectable clock, and the worker that ties them to a store and a dispatcher.

pub(crate) mod schedule;

pub use schedule::{MAX_RETRIES, MAX_RETRY_DELAY, RETRY_AFTER_CAP, RETRY_JITTER, RetrySchedule};
