//! The syncer thread, which makes committed batches durable while the writer applies the next.
//!
//! In group commit the write connection commits with `synchronous = NORMAL`: a commit appends
//! its pages to the write-ahead log without waiting for the disk. The writer then hands the
//! batch's answers here and goes on with the next batch; this thread fsyncs the log (one
//! `fdatasync` for every batch handed over meanwhile) and only then answers the callers. So
//! no caller hears "stored" before its write is on disk, as with `synchronous = FULL`, but the
//! disk's wait overlaps the next batch's work instead of following it.
//!
//! Why this is as durable: what a commit wrote is in the `-wal` file once the commit returns;
//! an fsync of that file afterwards puts it on disk. A checkpoint copies the log into the
//! database file only after syncing the log, and syncs the database file before the log is
//! reset or truncated (SQLite does both in WAL mode with `synchronous = NORMAL`), so a write
//! whose log frames a checkpoint has moved is durable in the database file. A crash before
//! the fsync loses only batches whose callers have not been answered.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};

/// A committed batch: each caller's answer channel and its answer.
pub(super) type Answers = Vec<(SyncSender<Result<u64>>, Result<u64>)>;

/// Why the log could not be made durable, once that happened: every later write fails with
/// it (after a failed fsync the kernel may have dropped the pages it could not write, so
/// nothing written since can be trusted to reach the disk).
pub(super) type Broken = Arc<OnceLock<String>>;

/// The error a write gets once the log could not be made durable.
pub(super) fn broken_error(why: &str) -> Error {
    Error::Store {
        message: format!(
            "the outbox log could not be made durable ({why}); writes are refused until the \
             store is opened again"
        ),
        source: None,
    }
}

/// Answers each batch handed over once the log is fsynced; ends when the writer drops its
/// sender, after answering everything handed over.
pub(super) fn sync_loop(db: &Path, batches: &Receiver<Answers>, broken: &Broken) {
    let wal = wal_path(db);
    let mut dir_synced = false;
    while let Ok(mut answers) = batches.recv() {
        // Everything committed meanwhile shares this fsync.
        while let Ok(more) = batches.try_recv() {
            answers.extend(more);
        }
        let synced = if let Some(why) = broken.get() {
            Err(why.clone())
        } else {
            sync(db, &wal, &mut dir_synced).map_err(|e| {
                let why = e.to_string();
                tracing::error!(error = %why, "fsync of the outbox log failed; refusing further writes");
                broken.get_or_init(|| why).clone()
            })
        };
        for (reply, answer) in answers {
            let answer = match (&synced, answer) {
                (Err(why), Ok(_)) => Err(broken_error(why)),
                (_, answer) => answer,
            };
            // The caller always waits for its answer; nothing to do if it is gone.
            let _ = reply.send(answer);
        }
    }
}

/// Fsyncs the log; the first time, the directory too, so that the log file's own entry is on
/// disk.
fn sync(db: &Path, wal: &Path, dir_synced: &mut bool) -> io::Result<()> {
    File::open(wal)?.sync_data()?;
    if !*dir_synced {
        let dir = match db.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
        *dir_synced = true;
    }
    Ok(())
}

/// The write-ahead log's path: the database's with `-wal` appended.
pub(super) fn wal_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push("-wal");
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn answers_wait_for_the_fsync_and_a_failed_one_refuses_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("outbox.db");
        std::fs::write(wal_path(&db), b"frames").unwrap();
        let broken = Broken::default();
        let (tx, rx) = mpsc::sync_channel(4);
        let (reply, answer) = mpsc::sync_channel(1);
        tx.send(vec![(reply, Ok(3))]).unwrap();
        drop(tx);
        sync_loop(&db, &rx, &broken);
        assert_eq!(answer.recv().unwrap().unwrap(), 3);
        assert!(broken.get().is_none());

        // No log to sync (a stand-in for a failing disk): the write's answer says so, and so
        // does every later one, even with the log back.
        std::fs::remove_file(wal_path(&db)).unwrap();
        let (tx, rx) = mpsc::sync_channel(4);
        let (reply, answer) = mpsc::sync_channel(1);
        let (reply2, answer2) = mpsc::sync_channel(1);
        tx.send(vec![(reply, Ok(1))]).unwrap();
        drop(tx);
        sync_loop(&db, &rx, &broken);
        let err = answer.recv().unwrap().unwrap_err().to_string();
        assert!(err.contains("could not be made durable"), "{err}");
        std::fs::write(wal_path(&db), b"frames").unwrap();
        let (tx, rx) = mpsc::sync_channel(4);
        tx.send(vec![(reply2, Ok(1))]).unwrap();
        drop(tx);
        sync_loop(&db, &rx, &broken);
        assert!(answer2.recv().unwrap().is_err());
    }
}
