//! The events a `Webhooks` emitted, collected in order (each with the moment it came) for a
//! test to read or wait on.
//!
//! Shared with the unit tests of `src/delivery`, which include this file with `#[path]`: the
//! crate is `under_test` here, `crate` there and `call_result_webhook` in `tests/`.
#![allow(dead_code)]

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::under_test::{Event, WebhooksBuilder, jiff::Timestamp};

/// A generous bound for "this happens": only a broken or hung test waits this long.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// Locks `mutex`, whether or not a panicking test poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every event so far; clones share the log.
#[derive(Clone, Default)]
pub(crate) struct Events(Arc<Log>);

#[derive(Default)]
struct Log {
    events: Mutex<Vec<(Instant, Event)>>,
    added: Condvar,
}

impl Events {
    /// `builder`, sending its events here.
    pub(crate) fn sink(&self, builder: WebhooksBuilder) -> WebhooksBuilder {
        let events = self.clone();
        builder.on_event(move |e| events.push(e))
    }

    pub(crate) fn push(&self, event: &Event) {
        lock(&self.0.events).push((Instant::now(), event.clone()));
        self.0.added.notify_all();
    }

    /// The events so far, in order.
    pub(crate) fn all(&self) -> Vec<Event> {
        lock(&self.0.events)
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The events so far, each with the moment it came.
    pub(crate) fn timed(&self) -> Vec<(Instant, Event)> {
        lock(&self.0.events).clone()
    }

    /// Waits until `done` holds for the events so far and returns them; panics after
    /// [`PATIENCE`].
    #[track_caller]
    pub(crate) fn wait_until(&self, what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + PATIENCE;
        let mut log = lock(&self.0.events);
        loop {
            let events: Vec<Event> = log.iter().map(|(_, e)| e.clone()).collect();
            if done(&events) {
                return events;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "waited {PATIENCE:?} for {what}: {events:#?}"
            );
            log = self
                .0
                .added
                .wait_timeout(log, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until `n` events match `matches` and returns those; panics after [`PATIENCE`].
    #[track_caller]
    pub(crate) fn wait(&self, n: usize, matches: impl Fn(&Event) -> bool) -> Vec<Event> {
        let all = self.wait_until(&format!("{n} events"), |events| {
            events.iter().filter(|e| matches(e)).count() >= n
        });
        all.into_iter().filter(|e| matches(e)).collect()
    }

    /// Waits for `n` failed attempts and returns them.
    #[track_caller]
    pub(crate) fn failures(&self, n: usize) -> Vec<Event> {
        self.wait(n, |e| matches!(e, Event::AttemptFailed { .. }))
    }

    /// Waits for `n` successful attempts and returns them.
    #[track_caller]
    pub(crate) fn successes(&self, n: usize) -> Vec<Event> {
        self.wait(n, |e| matches!(e, Event::AttemptSucceeded { .. }))
    }
}

/// When a failed attempt's delivery is tried next (`None`: never).
pub(crate) fn next_attempt(event: &Event) -> Option<Timestamp> {
    match event {
        Event::AttemptFailed {
            next_attempt_at, ..
        } => *next_attempt_at,
        other => panic!("not a failure: {other:?}"),
    }
}
