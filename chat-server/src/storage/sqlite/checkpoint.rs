//! WAL checkpoints on a thread of their own.
//!
//! In WAL mode a commit appends pages to the log and, with
//! `synchronous=NORMAL`, syncs nothing; a checkpoint copies the log back
//! into the database file and syncs it. By default the connection whose
//! commit takes the log past 1,000 pages runs the checkpoint inside that
//! commit, which on this backend is the committer in the middle of a
//! batch: at W1's load that was every fraction of a second, and the batch's
//! senders and every socket of its rooms waited milliseconds for an fsync
//! (benches/README.md, 2026-12-06). Here no writer checkpoints; this thread
//! does, with a connection of its own, in `PASSIVE` mode, which never
//! blocks writers or readers.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use crate::storage::StorageError;

/// How often the log is copied back. At 20 KB of log per commit (five
/// pages) and a thousand commits a second, 100 ms keeps it near 2 MB.
const INTERVAL: Duration = Duration::from_millis(100);

/// Runs checkpoints until dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database file at `path` (already in WAL
    /// mode).
    pub(super) fn start(path: &Path) -> Result<Self, StorageError> {
        let conn = Connection::open(path).map_err(super::batch::sqlite_err)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("chat-checkpoint".into())
            .spawn(move || {
                // Ends when the sender is dropped (no message is ever sent).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StorageError::Unavailable(Box::new(e)))?;
        Ok(Self { _stop: stop })
    }
}
