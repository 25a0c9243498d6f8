//! Blocking work for async callers, off their runtime's threads.
//!
//! Inside a tokio runtime (feature `tokio`) the work goes to that runtime's blocking pool;
//! anywhere else (another executor, or no runtime at all) to a short-lived thread of its own.
//! Either way the caller's executor thread only awaits.
//!
//! Dropping the returned future does not stop the work: it runs to its end on its thread, and
//! only its outcome is lost. Every async method of the facade documents what that means for it.

use crate::error::{Error, Result};

/// Runs `work` on a blocking thread and awaits its result. A panic in `work` is resumed in
/// the caller, as if `work` had run inline.
pub(crate) async fn unblock<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    #[cfg(feature = "tokio")]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        return match handle.spawn_blocking(work).await {
            Ok(value) => Ok(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::RuntimeShuttingDown),
        };
    }
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("webhook-blocking".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            // The caller may have stopped waiting; the work is done either way.
            let _ = tx.send(outcome);
        })
        .map_err(|e| Error::config("thread", format!("cannot start a thread: {e}")))?;
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // The thread ended without sending: only a panic while sending could do that.
        Err(_) => Err(Error::RuntimeShuttingDown),
    }
}

/// Writes an operation once and makes both of its public forms from that one definition:
///
/// - the `async fn`, which runs the work on a blocking thread ([`unblock`]), so the caller's
///   runtime only awaits;
/// - its `_blocking` twin, which first refuses a thread of the worker's runtime (the owner's
///   `refuse_blocking`, made with [`refuse_on`]) with [`Error::BlockingInRuntime`] naming the
///   async form, then runs the same work on the calling thread.
///
/// The body is the one definition of the work: it checks what it is given (a `?` there returns
/// from the method, before any work) and ends in a `move` closure that owns what the work
/// needs and returns its `Result`. The twin's docs are written here once for all: a link to
/// the async form, whose docs say the rest, and its `# Errors`. Doc lines given after
/// `pub fn name_blocking` replace the first line.
///
/// ```ignore
/// twins! {
///     "Webhooks";
///
///     /// Puts the failed deliveries matching `filter` back to pending, ...
///     pub async fn replay(&self, who: &Principal, filter: &DeliveryFilter) -> Result<u64>;
///     pub fn replay_blocking;
///     {
///         check_filter(filter)?;
///         let (engine, who, filter) = (self.engine.clone(), who.clone(), filter.clone());
///         move || engine.replay(&who, &filter)
///     }
/// }
/// ```
macro_rules! twins {
    (@blocking $owner:literal [] $name:ident $($rest:tt)*) => {
        $crate::blocking::twins!(@blocking $owner [
            #[doc = concat!(
                "[`", stringify!($name), "`](Self::", stringify!($name),
                ") for callers without an async runtime."
            )]
        ] $name $($rest)*);
    };
    (@blocking $owner:literal [$(#[$first:meta])+] $name:ident $blocking:ident
        (&$self:ident $(, $arg:ident: $arg_ty:ty)*) -> $ret:ty; $work:block) => {
        $(#[$first])+
        ///
        /// # Errors
        ///
        /// [`Error::BlockingInRuntime`](crate::Error::BlockingInRuntime) at once, with nothing
        /// done, on a thread of the runtime the worker's attempts run on (see
        /// ["Async and blocking"](crate::Webhooks#async-and-blocking));
        #[doc = concat!(
            "otherwise as [`", stringify!($name), "`](Self::", stringify!($name),
            "), but for [`Error::RuntimeShuttingDown`](crate::Error::RuntimeShuttingDown)."
        )]
        pub fn $blocking(&$self $(, $arg: $arg_ty)*) -> $crate::error::Result<$ret> {
            $self.refuse_blocking(
                concat!($owner, "::", stringify!($blocking)),
                concat!($owner, "::", stringify!($name), "(..).await"),
            )?;
            let work = $work;
            work()
        }
    };
    ($owner:literal; $(
        $(#[$doc:meta])*
        pub async fn $name:ident(&$self:ident $(, $arg:ident: $arg_ty:ty)* $(,)?)
            -> Result<$ret:ty>;
        $(#[$blocking_doc:meta])*
        pub fn $blocking:ident;
        $work:block
    )*) => {$(
        $(#[$doc])*
        pub async fn $name(&$self $(, $arg: $arg_ty)*) -> $crate::error::Result<$ret> {
            let work = $work;
            $crate::blocking::unblock(work).await?
        }

        $crate::blocking::twins!(@blocking $owner [$(#[$blocking_doc])*] $name $blocking
            (&$self $(, $arg: $arg_ty)*) -> $ret; $work);
    )*};
}
pub(crate) use twins;

/// The runtime a worker's attempts run on: a tokio runtime's handle, or nothing at all without
/// the `tokio` feature.
#[cfg(feature = "tokio")]
pub(crate) type Runtime = tokio::runtime::Handle;
/// The runtime a worker's attempts run on: a tokio runtime's handle, or nothing at all without
/// the `tokio` feature.
#[cfg(not(feature = "tokio"))]
pub(crate) type Runtime = std::convert::Infallible;

/// The one check every `_blocking` method makes before it does anything: called on a thread
/// of `runtime` (the tokio runtime a worker's attempts run on), it would hold a thread those
/// attempts need, or wait for attempts that cannot run while it waits, so it is refused with
/// [`Error::BlockingInRuntime`], naming `instead`, the async method to await there.
///
/// Only the worker's runtime is refused. On another runtime's thread a `_blocking` method
/// holds that thread for the store's work but never deadlocks (no store call needs the
/// caller's runtime, nor nests one); the async method is still the one to call there.
///
/// # Errors
///
/// [`Error::BlockingInRuntime`] on a thread of `runtime`, its blocking pool's included
/// (tokio tells a pool thread from an executor thread to no public API).
pub(crate) fn refuse_on(
    runtime: Option<&Runtime>,
    method: &'static str,
    instead: &'static str,
) -> Result<()> {
    #[cfg(feature = "tokio")]
    if runtime.is_some_and(on_runtime) {
        return Err(Error::BlockingInRuntime { method, instead });
    }
    let _ = (runtime, method, instead);
    Ok(())
}

/// Whether the calling thread belongs to the tokio runtime `runtime`: a blocking wait there
/// would stall the tasks that runtime should be running.
#[cfg(feature = "tokio")]
fn on_runtime(runtime: &tokio::runtime::Handle) -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|current| current.id() == runtime.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_to_end<T>(fut: impl std::future::Future<Output = T>) -> T {
        // A minimal executor: no runtime at all, so the thread path is taken.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn without_a_runtime_the_work_runs_on_a_thread_of_its_own() {
        let caller = std::thread::current().id();
        let worker = poll_to_end(unblock(|| std::thread::current().id())).unwrap();
        assert_ne!(caller, worker);
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn a_panic_reaches_the_caller() {
        poll_to_end(unblock(|| -> u8 { panic!("boom") })).unwrap();
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn inside_tokio_the_blocking_pool_runs_it_and_the_runtime_is_recognised() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let other = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!on_runtime(&handle));
        rt.block_on(async {
            assert!(on_runtime(&handle));
            assert!(!on_runtime(other.handle()));
            let on_pool = unblock(move || on_runtime(&tokio::runtime::Handle::current()))
                .await
                .unwrap();
            // The blocking pool's threads run in the runtime's context too.
            assert!(on_pool);
        });
    }
}
