//! The recorder thread: writes outcomes to the store while the scheduler claims and starts the
//! next attempts.
//!
//! Recording an outcome waits for the store to make it durable (an fsync on SQLite, a round
//! trip on PostgreSQL). Done on the scheduler's thread, that wait would come between every
//! finished request and the next claim, so an endpoint's places would sit idle for it. Here the
//! scheduler hands each pass's completions over and goes on; the recorder writes everything
//! handed over while its last write ran in one [`Engine::complete_all`] (one transaction for
//! the lot), and hands the results back through the engine's signal.
//!
//! Nothing changes in what is guaranteed: a delivery stays claimed (its lease, its fencing
//! token) until its outcome is recorded, and the scheduler keeps it among its attempts in
//! flight until the result comes back, so neither this process nor another sends it again
//! meanwhile, and a shutdown waits for it.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::delivery::attempt::{Completed, Completion};
use crate::delivery::core::Core;
use crate::sync::lock;

/// The handle the scheduler keeps: hands completions over, and stops the thread.
pub(super) struct Recorder {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
    /// Completions handed over so far, and how many of them came back recorded.
    handed: u64,
    back: u64,
    /// Settle requests (`requested`, as of a pass) waiting for everything handed over up to
    /// that pass to come back.
    waiting: VecDeque<(u64, u64)>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    completions: Vec<Completion>,
    stop: bool,
}

impl Recorder {
    /// Starts the recorder thread; `None` when the system refuses a thread, and the scheduler
    /// then records on its own thread, as before.
    pub(super) fn start(engine: Arc<dyn Core>) -> Option<Recorder> {
        let queue = Arc::new(Queue::default());
        let theirs = queue.clone();
        let thread = std::thread::Builder::new()
            .name("webhook-recorder".into())
            .spawn(move || record_until_stopped(&*engine, &theirs))
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no recorder thread; the scheduler records outcomes itself");
            })
            .ok()?;
        Some(Recorder {
            queue,
            thread: Some(thread),
            handed: 0,
            back: 0,
            waiting: VecDeque::new(),
        })
    }

    /// Hands completions over to be recorded; their results come back through the signal.
    pub(super) fn record(&mut self, completions: Vec<Completion>) {
        if completions.is_empty() {
            return;
        }
        self.handed += completions.len() as u64;
        lock(&self.queue.state).completions.extend(completions);
        self.queue.ready.notify_one();
    }

    /// Counts results that came back.
    pub(super) fn came_back(&mut self, n: usize) {
        self.back += n as u64;
    }

    /// A pass took settle requests up to `requested` and handed its completions over: which
    /// requests are now answered, everything handed over before them being back. `0` when
    /// none is.
    pub(super) fn answerable(&mut self, requested: u64) -> u64 {
        if self.waiting.back().is_none_or(|(r, _)| *r < requested) {
            self.waiting.push_back((requested, self.handed));
        }
        let mut answered = 0;
        while let Some(&(r, h)) = self.waiting.front() {
            if h > self.back {
                break;
            }
            answered = r;
            self.waiting.pop_front();
        }
        answered
    }

    /// Records what is still queued, then stops the thread and waits for it.
    pub(super) fn stop(mut self) {
        lock(&self.queue.state).stop = true;
        self.queue.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panic is caught around each write; the thread itself does not panic.
            let _ = thread.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.thread.is_some() {
            lock(&self.queue.state).stop = true;
            self.queue.ready.notify_one();
        }
    }
}

/// The thread: waits for completions, records all that are queued at once, hands the results
/// back; after a stop, records what is left and ends.
fn record_until_stopped(engine: &dyn Core, queue: &Queue) {
    loop {
        let completions = {
            let mut state = lock(&queue.state);
            while state.completions.is_empty() && !state.stop {
                state = queue.ready.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.completions.is_empty() {
                return;
            }
            std::mem::take(&mut state.completions)
        };
        let results = catch_unwind(AssertUnwindSafe(|| engine.complete_all(&completions)))
            .unwrap_or_else(|_| {
                // A bug, not the store: each outcome stays with the scheduler, which records it
                // again as it does any outcome the store did not take.
                tracing::error!(
                    held = completions.len(),
                    "recording outcomes panicked; the scheduler keeps them"
                );
                vec![
                    Completed::NotRecorded("recording outcomes panicked".into());
                    completions.len()
                ]
            });
        engine
            .signal()
            .recorded(completions.into_iter().zip(results).collect());
    }
}
