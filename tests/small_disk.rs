//! A real full disk: the SQLite outbox on a tmpfs of 1 MiB, filled by submits until the file
//! system says it is full, while a worker delivers to a receiver on 127.0.0.1. Nothing is sent
//! twice while the disk is full, the failure is reported, and once the file system grows
//! (remounted larger) every accepted result is delivered exactly once.
//!
//! Mounting needs root (`.ci/run` runs as root and sets `CALL_RESULT_WEBHOOK_REQUIRE_MOUNT`, so
//! there a failed mount fails the test); elsewhere the test says plainly that it did not run.
#![cfg(all(target_os = "linux", feature = "hyper", feature = "sqlite"))]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use call_result_webhook::{
    CallResult, Error, Event, HyperDispatcher, PreferencesUpdate, SqliteStore, Webhooks,
};
use support::events::Events;
use support::{Receiver, Reply, ids, loopback_policy, switch_on, within};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match mounted {
            Ok(status) if status.success() => Some(SmallDisk { dir }),
            other => {
                if std::env::var_os("CALL_RESULT_WEBHOOK_REQUIRE_MOUNT").is_some() {
                    panic!("cannot mount a small tmpfs for the full-disk test: {other:?}");
                }
                eprintln!("small_disk: NOT RUN: cannot mount a tmpfs here (needs root): {other:?}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()
            .expect("mount");
        assert!(status.success(), "remounting the tmpfs larger failed");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_file_system_makes_no_resend_and_delivers_everything_once_it_has_room() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let file: PathBuf = disk.path().join("outbox.sqlite");
    let receiver = Receiver::start();
    receiver.set_default(Reply::ok());
    let events = Events::default();
    let webhooks = events
        .sink(
            Webhooks::builder()
                .store(SqliteStore::open(&file).expect("open the outbox on the small disk"))
                .policy(loopback_policy())
                .max_concurrency(8)
                .per_endpoint_concurrency(4),
        )
        .build()
        .unwrap();
    let (acme, winter) = ids();
    switch_on(
        &webhooks,
        &acme,
        &winter,
        PreferencesUpdate::new().url(&receiver.url_for("/hook")),
    );

    // Fill the disk with accepted results (a few KiB each, notes included), no worker yet.
    let notes = "Paid in full; call back next month. ".repeat(40);
    let mut accepted = Vec::new();
    let refusal = loop {
        let call = CallResult::builder()
            .reference(accepted.len().to_string())
            .result_notes(notes.as_str())
            .build();
        match webhooks.submit_blocking(&acme, &winter, call) {
            Ok(submitted) => accepted.push(submitted.id().expect("accepted").to_string()),
            Err(e) => break e,
        }
        assert!(accepted.len() < 10_000, "the small disk never filled");
    };
    println!(
        "small disk: {} accepted before the file system was full: {refusal}",
        accepted.len()
    );
    assert!(matches!(refusal, Error::Store { .. }), "{refusal:?}");

    // Deliver on a full disk: the first attempts go out, their outcomes cannot be written.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let worker = webhooks
        .start_tokio(HyperDispatcher::builder().build(), runtime.handle())
        .unwrap();
    within(
        "the failure to be reported",
        Duration::from_secs(20),
        || {
            events
                .all()
                .iter()
                .any(|e| matches!(e, Event::StoreFailing { .. }))
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let during = receiver.requests();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &during {
        *per_id
            .entry(r.header("webhook-id").unwrap().to_owned())
            .or_default() += 1;
    }
    println!(
        "small disk full: {} requests for {} ids while the outcomes could not be written",
        during.len(),
        per_id.len()
    );
    assert!(per_id.values().all(|n| *n == 1), "sent twice: {per_id:?}");
    assert!(during.len() <= 8, "new attempts while the store failed");

    // Room again: every accepted result delivered, each exactly once.
    disk.grow("64m");
    within("every accepted result", Duration::from_secs(60), || {
        webhooks
            .status_blocking(&acme, None)
            .is_ok_and(|s| s.stats.delivered == accepted.len() as u64)
    });
    assert!(worker.wait_idle_blocking(Duration::from_secs(10)).unwrap());
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in receiver.requests() {
        *per_id
            .entry(r.header("webhook-id").unwrap().to_owned())
            .or_default() += 1;
    }
    println!(
        "small disk, room again: {} accepted, {} delivered, {} requests",
        accepted.len(),
        per_id.len(),
        per_id.values().sum::<usize>()
    );
    assert_eq!(per_id.len(), accepted.len());
    assert!(per_id.values().all(|n| *n == 1), "sent twice: {per_id:?}");
    assert!(
        events
            .all()
            .iter()
            .any(|e| matches!(e, Event::StoreRecovered { .. }))
    );
    worker.shutdown_blocking(Duration::from_secs(5)).unwrap();
    drop(webhooks);
}
