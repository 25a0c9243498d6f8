//! Following a store that other processes share: their settings changes, pauses and new due
//! work reach this process through the store's notices, and through polling in case a notice
//! is lost.

use std::sync::{Arc, Condvar, Mutex, Weak};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::Notice;
use crate::sync::lock;

/// Starts following the engine's store, if other processes may write to it (the store has a
/// poll interval). A thread reads the changes when a notice says there are some, and at the
/// poll interval at the latest; it ends within one interval of the engine's end.
pub(crate) fn follow(engine: &Arc<Engine>) -> Result<()> {
    let Some(interval) = engine.store().poll_interval() else {
        return Ok(());
    };
    let wake = Arc::new((Mutex::new(false), Condvar::new()));
    let weak: Weak<Engine> = Arc::downgrade(engine);
    {
        let (weak, wake) = (weak.clone(), wake.clone());
        engine
            .store()
            .subscribe(Arc::new(move |notice| match notice {
                Notice::DueWork => {
                    if let Some(engine) = weak.upgrade() {
                        engine.signal().poke();
                    }
                }
                Notice::SettingsChanged => {
                    *lock(&wake.0) = true;
                    wake.1.notify_one();
                }
            }));
    }
    std::thread::Builder::new()
        .name("webhook-settings".into())
        .spawn(move || {
            loop {
                {
                    let woken = lock(&wake.0);
                    let (mut woken, _) = wake
                        .1
                        .wait_timeout_while(woken, interval, |w| !*w)
                        .unwrap_or_else(|p| p.into_inner());
                    *woken = false;
                }
                let Some(engine) = weak.upgrade() else { return };
                if let Err(e) = engine.follow_settings() {
                    tracing::error!(error = %e, "could not read settings changed by other processes");
                }
                // Due work from other processes is looked for at the same pace by the
                // scheduler itself (it waits at most the poll interval), notice or not.
            }
        })
        .map_err(|e| Error::config("store", format!("cannot start the settings thread: {e}")))?;
    Ok(())
}
