//! The store's own tokio runtime, on its own thread: it runs the connection pool, every
//! statement and the LISTEN connections. The synchronous trait methods hand their work to it
//! and wait for the answer on a oneshot channel; no caller's thread ever enters a runtime.

use std::future::Future;
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use crate::error::{Error, Result};

/// A current-thread runtime driven by one dedicated thread until the driver is dropped.
#[derive(Debug)]
pub(super) struct Driver {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

impl Driver {
    pub(super) fn start() -> Result<Driver> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::store("starting the outbox's database runtime", e))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("outbox-postgres".into())
            .spawn(move || {
                // Runs every task until the driver is dropped (the sender with it), then drops
                // them all, closing their connections.
                let _ = runtime.block_on(stopped);
                drop(runtime);
            })
            .map_err(|e| Error::store("starting the outbox's database thread", e))?;
        let thread_id = thread.thread().id();
        Ok(Driver {
            handle,
            stop: Some(stop),
            thread: Some(thread),
            thread_id,
        })
    }

    /// Runs `work` on the runtime and waits for its answer.
    ///
    /// # Errors
    ///
    /// What `work` answers, or [`Error::Store`] if the runtime stopped first or `work` was
    /// called from the runtime's own thread (a notice sink calling back into the store),
    /// where waiting would stall the very work it waits for.
    pub(super) fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        if self.on_own_thread() {
            return Err(Error::Store {
                message: "the outbox was called from its own database thread (a notice sink \
                          must return at once, not call the store)"
                    .into(),
                source: None,
            });
        }
        let (answer, answered) = oneshot::channel();
        drop(self.handle.spawn(async move {
            // The caller always waits; nothing to do if it is gone.
            let _ = answer.send(work.await);
        }));
        answer_of(answered)
    }

    /// [`run`](Self::run) within `limit`: past it the work is dropped (its connection goes
    /// back to the pool, or is closed, mid-statement) and the answer is
    /// [`Error::StoreTimeout`] for `call_timeout`.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run), or [`Error::StoreTimeout`].
    pub(super) fn run_within<T, F>(&self, limit: Duration, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        self.run(async move {
            tokio::time::timeout(limit, work)
                .await
                .unwrap_or(Err(Error::StoreTimeout {
                    bound: "call_timeout",
                    limit,
                }))
        })
    }

    /// Whether the calling thread is the runtime's own, where waiting for it would stall it.
    pub(super) fn on_own_thread(&self) -> bool {
        std::thread::current().id() == self.thread_id
    }

    /// Starts `task` on the runtime; it ends when it returns or the driver is dropped.
    pub(super) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(task));
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // Dropped from a task of its own runtime (a sink holding the last handle to the
            // store): the thread stops on its own once this task returns.
            if !self.on_own_thread() {
                let _ = thread.join();
            }
        }
    }
}

/// Waits for the answer of work started on the driver's runtime.
///
/// # Errors
///
/// What the work answers, or [`Error::Store`] if its task ended without answering (the
/// runtime stopped).
pub(super) fn answer_of<T>(answered: oneshot::Receiver<Result<T>>) -> Result<T> {
    answered.recv().map_err(|_| Error::Store {
        message: "the outbox's database task ended without an answer".into(),
        source: None,
    })?
}

/// [`answer_of`] within `limit` (the caller's deadline on work it did not start itself, such
/// as a submit's group).
///
/// # Errors
///
/// As [`answer_of`], or [`Error::StoreTimeout`] for `call_timeout` past `limit`.
pub(super) fn answer_within<T>(
    answered: oneshot::Receiver<Result<T>>,
    limit: Duration,
) -> Result<T> {
    match answered.recv_timeout(limit) {
        Ok(answer) => answer,
        Err(oneshot::RecvTimeoutError::Timeout) => Err(Error::StoreTimeout {
            bound: "call_timeout",
            limit,
        }),
        Err(oneshot::RecvTimeoutError::Disconnected) => Err(Error::Store {
            message: "the outbox's database task ended without an answer".into(),
            source: None,
        }),
    }
}
