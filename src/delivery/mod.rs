//! Reliable delivery: outcome classification, endpoint health, events, status, the injectable
//! clock, and the worker that ties them to a store and a dispatcher. (The retry schedule is
//! an account's preference: [`RetrySchedule`] is re-exported here from `preferences`.)
//!
//! The core is runtime-free: one scheduler thread per [`Worker`] does every store call and
//! decides what is due; a runner (plain threads, or tokio tasks with the `tokio` feature) only
//! sends.
//!
//! With the `metrics` feature, `metrics` names what the worker records through the `metrics`
//! facade.

pub(crate) mod attempt;
pub(crate) mod classify;
pub(crate) mod clock;
pub(crate) mod core;
pub(crate) mod events;
pub(crate) mod health;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub(crate) mod observer;
mod recorder;
mod runner;
pub(crate) mod signal;
pub(crate) mod status;
mod worker;

#[cfg(test)]
mod tests;

/// An account's retry schedule, set with its preferences; kept here too, where it was first.
#[doc(no_inline)]
pub use crate::preferences::RetrySchedule;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use clock::ManualClock;
pub use clock::{Clock, ClockWaker, SystemClock};
pub use events::{Event, FailureKind, PauseReason};
pub use health::{EndpointHealth, Pause};
pub use status::{DeadLetter, Status};
pub use worker::{ShutdownReport, Worker};

pub(crate) use runner::ThreadRunner;
#[cfg(feature = "tokio")]
pub(crate) use runner::TokioRunner;

/// The observer the builder chose: the `metrics` facade's recorder (with each account as a
/// label when `by_account`) with the `metrics` feature, `()` without.
pub(crate) fn new_observer(by_account: bool) -> std::sync::Arc<dyn observer::Observer> {
    #[cfg(feature = "metrics")]
    return std::sync::Arc::new(metrics::Recorder::new(by_account));
    #[cfg(not(feature = "metrics"))]
    {
        let _ = by_account;
        std::sync::Arc::new(())
    }
}
