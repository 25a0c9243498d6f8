//! How the facade, runners and the clock wake the scheduler, and how the scheduler tells
//! waiters it made progress or stopped.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::delivery::attempt::{Completed, Completion};
use crate::sync::lock;

/// How the facade, runners and the clock wake the scheduler, and how the scheduler tells
/// waiters it made progress.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: Mutex<SignalState>,
    /// The scheduler waits here for work.
    work: Condvar,
    /// `wait_idle` and tests wait here for the scheduler's progress.
    progress: Condvar,
}

#[derive(Debug, Default)]
pub(crate) struct SignalState {
    /// New due work may be in the store (a submit, a replay, another process's notice).
    pub(crate) poked: bool,
    /// Settings or health changed: what is held may have changed.
    pub(crate) settings_changed: bool,
    pub(crate) completions: Vec<Completion>,
    /// Completions the recorder thread recorded, with what recording them gave.
    pub(crate) recorded: Vec<(Completion, Completed)>,
    pub(crate) clock_moved: bool,
    pub(crate) shutdown: Option<Instant>,
    /// Settle requests made and answered.
    pub(crate) requested: u64,
    pub(crate) answered: u64,
    /// Bumped at the end of every pass of the scheduler.
    pub(crate) passes: u64,
    pub(crate) running: bool,
    /// The runtime the attempts ran on is gone: the scheduler must stop.
    pub(crate) runtime_gone: bool,
    /// Why the last worker stopped on its own, if it did (not by `shutdown`).
    pub(crate) stopped_because: Option<String>,
}

impl SignalState {
    fn has_work(&self) -> bool {
        self.poked
            || self.settings_changed
            || !self.completions.is_empty()
            || !self.recorded.is_empty()
            || self.clock_moved
            || self.shutdown.is_some()
            || self.runtime_gone
            || self.requested > self.answered
    }
}

/// Everything taken from the signal in one pass.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) settings_changed: bool,
    pub(crate) completions: Vec<Completion>,
    pub(crate) recorded: Vec<(Completion, Completed)>,
    pub(crate) shutdown: Option<Instant>,
    pub(crate) runtime_gone: bool,
    pub(crate) requested: u64,
}

impl Signal {
    fn with<R>(&self, f: impl FnOnce(&mut SignalState) -> R) -> R {
        let r = f(&mut lock(&self.state));
        self.work.notify_all();
        r
    }

    /// New due work may be waiting. Only the first poke of a pass wakes the scheduler.
    pub(crate) fn poke(&self) {
        let mut s = lock(&self.state);
        if s.poked {
            return;
        }
        s.poked = true;
        drop(s);
        self.work.notify_all();
    }

    /// Settings or health changed (here or in another process): what is held may have changed.
    pub(crate) fn settings_changed(&self) {
        self.with(|s| {
            s.settings_changed = true;
            s.poked = true;
        });
    }

    pub(crate) fn complete(&self, c: Completion) {
        self.with(|s| s.completions.push(c));
    }

    /// The recorder thread recorded these completions.
    pub(crate) fn recorded(&self, results: Vec<(Completion, Completed)>) {
        self.with(|s| s.recorded.extend(results));
    }

    /// What the recorder thread recorded and the scheduler has not taken yet, without waiting.
    pub(crate) fn take_recorded(&self) -> Vec<(Completion, Completed)> {
        std::mem::take(&mut lock(&self.state).recorded)
    }

    pub(crate) fn clock_moved(&self) {
        self.with(|s| s.clock_moved = true);
    }

    pub(crate) fn shutdown(&self, deadline: Instant) {
        self.with(|s| {
            s.shutdown = Some(s.shutdown.map_or(deadline, |d| d.min(deadline)));
        });
    }

    /// The async runtime the attempts run on has shut down: nothing sent there can finish.
    #[cfg(feature = "tokio")]
    pub(crate) fn runtime_gone(&self) {
        self.with(|s| s.runtime_gone = true);
    }

    /// The scheduler starts: a fresh state (completions of a previous worker are kept).
    pub(crate) fn start(&self) {
        self.with(|s| {
            s.running = true;
            s.shutdown = None;
            s.runtime_gone = false;
            s.stopped_because = None;
        });
    }

    /// Waits at most `wait` (for ever if `None`) for something to do and takes it.
    pub(crate) fn take(&self, wait: Option<Duration>) -> Batch {
        let mut s = lock(&self.state);
        let until = wait.map(|w| Instant::now() + w);
        while !s.has_work() {
            match until {
                None => s = self.work.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    s = self
                        .work
                        .wait_timeout(s, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        s.clock_moved = false;
        s.poked = false;
        Batch {
            settings_changed: std::mem::take(&mut s.settings_changed),
            completions: std::mem::take(&mut s.completions),
            recorded: std::mem::take(&mut s.recorded),
            shutdown: s.shutdown.take(),
            runtime_gone: s.runtime_gone,
            requested: s.requested,
        }
    }

    /// The scheduler finished a pass, having handled every request up to `requested`.
    pub(crate) fn pass_done(&self, requested: u64) {
        let mut s = lock(&self.state);
        s.answered = s.answered.max(requested);
        s.passes = s.passes.wrapping_add(1);
        drop(s);
        self.progress.notify_all();
    }

    /// The scheduler stopped: asked to (`because` is `None`) or on its own.
    pub(crate) fn stopped(&self, because: Option<String>) {
        let mut s = lock(&self.state);
        s.running = false;
        s.shutdown = None;
        s.stopped_because = because;
        drop(s);
        self.progress.notify_all();
    }

    /// The count of finished passes, to wait for the next with [`Signal::wait_pass`].
    pub(crate) fn passes(&self) -> (u64, bool) {
        let s = lock(&self.state);
        (s.passes, s.running)
    }

    /// Why the worker stopped on its own, if it did.
    pub(crate) fn stopped_because(&self) -> Option<String> {
        lock(&self.state).stopped_because.clone()
    }

    /// Waits until a pass after `seen` finishes or the scheduler stops, at most `timeout`.
    pub(crate) fn wait_pass(&self, seen: u64, timeout: Duration) {
        let s = lock(&self.state);
        let _ = self
            .progress
            .wait_timeout_while(s, timeout, |s| s.passes == seen && s.running);
    }

    /// Waits until the scheduler has handled everything signalled before this call (or has
    /// stopped). Returns whether it is running.
    #[cfg(test)]
    pub(crate) fn settle(&self) -> bool {
        let mut s = lock(&self.state);
        s.requested += 1;
        let target = s.requested;
        self.work.notify_all();
        let s = self
            .progress
            .wait_while(s, |s| s.answered < target && s.running)
            .unwrap_or_else(|p| p.into_inner());
        s.running
    }
}
