//! Where attempts run: a pool of plain threads around a [`BlockingDispatcher`], or tokio tasks
//! around a [`Dispatcher`](crate::Dispatcher) (feature `tokio`).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::Request;

use crate::delivery::attempt::{Attempt, Completion, Outcome};
use crate::delivery::core::Core;
use crate::delivery::worker::Runner;
use crate::dispatch::BlockingDispatcher;
use crate::sync::lock;

/// Runs attempts on `threads` plain threads, each calling the blocking dispatcher.
pub(crate) struct ThreadRunner {
    queue: Arc<Queue>,
}

struct Queue {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
}

struct Job {
    engine: Arc<dyn Core>,
    attempt: Attempt,
    request: Request<Bytes>,
}

impl ThreadRunner {
    pub(crate) fn start(
        dispatcher: Arc<dyn BlockingDispatcher>,
        threads: usize,
    ) -> std::io::Result<Self> {
        let queue = Arc::new(Queue {
            jobs: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
        });
        for i in 0..threads {
            let shared = queue.clone();
            let dispatcher = dispatcher.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("webhook-sender-{i}"))
                .spawn(move || sender(&shared, &*dispatcher));
            if let Err(e) = spawned {
                stop(&queue);
                return Err(e);
            }
        }
        Ok(ThreadRunner { queue })
    }
}

fn sender(queue: &Queue, dispatcher: &dyn BlockingDispatcher) {
    loop {
        let job = {
            let mut jobs = lock(&queue.jobs);
            loop {
                if jobs.1 {
                    return;
                }
                if let Some(job) = jobs.0.pop_front() {
                    break job;
                }
                jobs = queue.ready.wait(jobs).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Job {
            engine,
            attempt,
            request,
        } = job;
        let started = Instant::now();
        let result = attempt
            .span
            .in_scope(|| dispatcher.dispatch_blocking(request));
        engine.signal().complete(Completion {
            attempt,
            outcome: Outcome::Sent(result),
            latency: started.elapsed(),
        });
    }
}

fn stop(queue: &Queue) {
    let mut jobs = lock(&queue.jobs);
    jobs.1 = true;
    // Attempts not yet started stay pending in the store.
    jobs.0.clear();
    drop(jobs);
    queue.ready.notify_all();
}

impl Runner for ThreadRunner {
    fn run(&self, engine: &Arc<dyn Core>, attempt: Attempt, request: Request<Bytes>) {
        lock(&self.queue.jobs).0.push_back(Job {
            engine: engine.clone(),
            attempt,
            request,
        });
        self.queue.ready.notify_one();
    }

    /// Threads finish the attempt they are making (its outcome is no longer recorded) and exit.
    fn stop(&self) {
        stop(&self.queue);
    }
}

#[cfg(feature = "tokio")]
pub(crate) use tokio_runner::TokioRunner;

#[cfg(feature = "tokio")]
mod tokio_runner {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use bytes::Bytes;
    use http::Request;
    use tracing::Instrument;

    use crate::delivery::attempt::{Attempt, Completion, Outcome};
    use crate::delivery::core::Core;
    use crate::delivery::worker::Runner;
    use crate::dispatch::Dispatcher;
    use crate::ids::DeliveryId;
    use crate::sync::lock;

    /// Runs each attempt as a task on the dialer's tokio runtime.
    pub(crate) struct TokioRunner {
        dispatcher: Arc<dyn Dispatcher>,
        handle: tokio::runtime::Handle,
        tasks: Mutex<HashMap<DeliveryId, tokio::task::AbortHandle>>,
        /// A task that only waits, so that the runtime's end is noticed at once: a runtime
        /// that shuts down drops every task, this one's guard included.
        watch: Mutex<Option<(tokio::task::AbortHandle, Arc<AtomicBool>)>>,
    }

    impl TokioRunner {
        pub(crate) fn new(dispatcher: Arc<dyn Dispatcher>, handle: tokio::runtime::Handle) -> Self {
            TokioRunner {
                dispatcher,
                handle,
                tasks: Mutex::new(HashMap::new()),
                watch: Mutex::new(None),
            }
        }
    }

    /// Tells the scheduler the runtime is gone when dropped while armed.
    struct RuntimeWatch {
        engine: Arc<dyn Core>,
        armed: Arc<AtomicBool>,
    }

    impl Drop for RuntimeWatch {
        fn drop(&mut self) {
            if self.armed.load(Ordering::SeqCst) {
                self.engine.signal().runtime_gone();
            }
        }
    }

    impl Runner for TokioRunner {
        fn started(&self, engine: &Arc<dyn Core>) {
            let armed = Arc::new(AtomicBool::new(true));
            let guard = RuntimeWatch {
                engine: engine.clone(),
                armed: armed.clone(),
            };
            // On a runtime already shut down the task is dropped at once, guard and all.
            let task = self.handle.spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
            *lock(&self.watch) = Some((task.abort_handle(), armed));
        }

        fn run(&self, engine: &Arc<dyn Core>, attempt: Attempt, request: Request<Bytes>) {
            let dispatcher = self.dispatcher.clone();
            let engine = engine.clone();
            let id = attempt.delivery.clone();
            let span = attempt.span.clone();
            let task = self.handle.spawn(
                async move {
                    let started = Instant::now();
                    let result = dispatcher.dispatch(request).await;
                    engine.signal().complete(Completion {
                        attempt,
                        outcome: Outcome::Sent(result),
                        latency: started.elapsed(),
                    });
                }
                .instrument(span),
            );
            lock(&self.tasks).insert(id, task.abort_handle());
        }

        fn finished(&self, delivery: &DeliveryId) {
            lock(&self.tasks).remove(delivery);
        }

        /// Aborts the tasks still running: released, their deliveries stay pending.
        fn stop(&self) {
            if let Some((watch, armed)) = lock(&self.watch).take() {
                armed.store(false, Ordering::SeqCst);
                watch.abort();
            }
            for (_, task) in lock(&self.tasks).drain() {
                task.abort();
            }
        }
    }
}
