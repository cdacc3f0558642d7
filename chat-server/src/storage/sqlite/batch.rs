//! The SQLite side of group commit: a batch of appends in one write
//! transaction, run in-process on the committer's thread.
//!
//! sqlx runs every SQLite connection on a thread of its own and hands each
//! statement to it and its answer back, so a batch of five statements was
//! ten hand-offs between threads; on a loaded server those, not SQL, were
//! most of a message's way to storage (benches/results, 2026-12-06 profile:
//! SQLite's engine 1 % of the server's CPU, switching threads 21 %). Here
//! the committer drives SQLite itself through rusqlite (the same bundled
//! library as sqlx's): a batch is a function call on the committer's
//! thread, and its statements stay prepared from one batch to the next.
//!
//! The committer's connection is a second writer beside the write pool's;
//! the two take turns (`sql/turns.rs`).
//!
//! The batch runs the single append's statements (`sql/append.rs`,
//! `statements.rs`) for each message in turn, in one transaction: the
//! room and the sender's membership first, then a stored repeat (holding
//! the write lock, nothing can insert it in between) answered with its
//! original; otherwise the room's next seq, the insert and the sender's
//! read mark. In-process, a
//! statement per message costs microseconds, so the batch needs no
//! multi-row statements whose text would change with its size.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::MessageId;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, named_params};
use sqlx::sqlite::SqlitePool;
use tempfile::TempDir;

use super::checkpoint::Checkpointer;
use super::{SqliteDialect, is_unavailable};
use crate::storage::group_commit::{Applied, BatchAppend, Op, Stored};
use crate::storage::sql::append::append_one;
use crate::storage::sql::change::apply;
use crate::storage::sql::rows::{
    Columns, attachments_text, mentions_text, message_from, refusal_from, send_refused,
};
use crate::storage::sql::statements;
use crate::storage::sql::turns::WriteTurns;
use crate::storage::{Appended, NewMessage, StorageError, StoredMessage};

/// How long the committer's connection waits between looks at a lock that
/// another process (or a write pool rollback still in flight) holds.
const BUSY_PAUSE: Duration = Duration::from_micros(100);

/// Looks before a busy lock fails the batch: 5 s, as the write pool waits.
const BUSY_TRIES: i32 = 50_000;

/// What the committer holds: the write pool, not the storage, so that the
/// storage's handle to the committer is the only thing keeping it alive.
#[derive(Debug)]
pub(super) struct SqliteAppender {
    write: SqlitePool,
    turns: WriteTurns,
    /// The committer's own connection (a mutex only to be `Sync`: the
    /// committer's thread is its one user).
    own: Mutex<Connection>,
    /// Runs the WAL checkpoints for as long as the committer does.
    _checkpoints: Checkpointer,
    /// A throwaway database's directory, removed when the committer ends
    /// (declared last: dropped after the connections).
    _scratch: Option<TempDir>,
}

impl SqliteAppender {
    /// Opens the committer's own connection to the database file at `path`
    /// (already created, migrated and in WAL mode).
    pub(super) fn open(
        path: &Path,
        write: SqlitePool,
        turns: WriteTurns,
        scratch: Option<TempDir>,
        fsync_each_commit: bool,
    ) -> Result<Self, StorageError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_err)?;
        // Checkpoints are `checkpoint.rs`'s, off the committer's way.
        // The same durability as the pools' (`synchronous` in the URL).
        let synchronous = if fsync_each_commit { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = {synchronous}; PRAGMA wal_autocheckpoint = 0;"
        ))
        .map_err(sqlite_err)?;
        conn.busy_handler(Some(pause_while_busy))
            .map_err(sqlite_err)?;
        Ok(Self {
            write,
            turns,
            own: Mutex::new(conn),
            _checkpoints: Checkpointer::start(path)?,
            _scratch: scratch,
        })
    }
}

fn pause_while_busy(tries: i32) -> bool {
    std::thread::sleep(BUSY_PAUSE);
    tries < BUSY_TRIES
}

#[async_trait]
impl BatchAppend for SqliteAppender {
    async fn append_one(&self, message: NewMessage) -> Result<Appended, StorageError> {
        let mut conn = self.turns.writer::<SqliteDialect>(&self.write).await?;
        append_one::<SqliteDialect>(&mut conn, &message).await
    }

    async fn apply(&self, op: &Op) -> Result<Applied, StorageError> {
        let mut conn = self.turns.writer::<SqliteDialect>(&self.write).await?;
        apply::<SqliteDialect>(&mut conn, op).await
    }

    async fn store_batch(&self, fresh: &[&NewMessage]) -> Result<Vec<Stored>, StorageError> {
        let _turn = self.turns.take().await;
        let mut conn = self
            .own
            .lock()
            .map_err(|_| StorageError::Backend("the committer's connection is poisoned".into()))?;
        store(&mut conn, fresh)
    }
}

/// The batch in one write transaction; answers in batch order. `Err`: it
/// rolled back and nothing was stored.
fn store(conn: &mut Connection, batch: &[&NewMessage]) -> Result<Vec<Stored>, StorageError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_err)?;
    let mut stored = Vec::with_capacity(batch.len());
    for m in batch {
        stored.push(store_one(&tx, m)?);
    }
    tx.commit().map_err(sqlite_err)?;
    Ok(stored)
}

/// One message of a batch, inside its transaction.
fn store_one(tx: &rusqlite::Transaction<'_>, m: &NewMessage) -> Result<Stored, StorageError> {
    let access = tx
        .prepare_cached(statements::APPEND_ACCESS)
        .map_err(sqlite_err)?
        .query_row(
            named_params! { "$1": m.room.get(), "$2": m.sender.get() },
            |row| {
                let row = Row(row);
                Ok(refusal_from(&row).and_then(|refused| {
                    Ok((refused, send_refused(&row, m.created_at.unix_micros())?))
                }))
            },
        )
        .optional()
        .map_err(sqlite_err)?;
    // The rule of sending is applied after a repeat is answered: a retry
    // of a stored message gets its original.
    let refused = match access.transpose()? {
        None => return Ok(Stored::NoRoom),
        Some((Some(StorageError::NotMember { kind, state }), _)) => {
            return Ok(Stored::NotMember { kind, state });
        }
        Some((Some(other), _)) => return Err(other),
        Some((None, refused)) => refused,
    };
    if let Some(client_id) = m.client_id.as_deref() {
        let original = tx
            .prepare_cached(statements::MESSAGE_BY_CLIENT_ID)
            .map_err(sqlite_err)?
            .query_row(
                named_params! { "$1": m.sender.get(), "$2": client_id },
                read_message,
            )
            .optional()
            .map_err(sqlite_err)?;
        if let Some(original) = original {
            return Ok(Stored::Original(original?));
        }
    }
    match refused {
        Some(StorageError::Refused(why)) => return Ok(Stored::Refused(why)),
        Some(other) => return Err(other),
        None => {}
    }
    let numbered = tx
        .prepare_cached(statements::NEXT_SEQ)
        .map_err(sqlite_err)?
        .query_row(
            named_params! { "$1": m.room.get(), "$2": m.created_at.unix_micros() },
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()
        .map_err(sqlite_err)?;
    let Some((seq, msg_no, live)) = numbered else {
        return Err(StorageError::Backend(
            "append batch: a room vanished under the write lock".into(),
        ));
    };
    // An unknown sender fails here, and the batch with it: group commit
    // then appends one by one, and only that message is refused.
    let id: i64 = tx
        .prepare_cached(statements::INSERT_MESSAGE)
        .map_err(sqlite_err)?
        .query_row(
            named_params! {
                "$1": m.room.get(),
                "$2": seq,
                "$3": m.sender.get(),
                "$4": m.body.as_str(),
                "$5": m.client_id.as_deref(),
                "$6": m.created_at.unix_micros(),
                "$7": msg_no,
                "$8": m.reply_to.map(MessageId::get),
                "$9": m.thread_root.map(MessageId::get),
                "$10": mentions_text(&m.mentions),
                "$11": attachments_text(&m.attachments),
            },
            |row| row.get(0),
        )
        .map_err(sqlite_err)?;
    tx.prepare_cached(statements::ADVANCE_SENDER_MARK)
        .map_err(sqlite_err)?
        .execute(named_params! {
            "$1": m.room.get(),
            "$2": m.sender.get(),
            "$3": seq,
            "$4": live,
            "$5": m.created_at.unix_micros(),
        })
        .map_err(sqlite_err)?;
    if let Some(root) = m.thread_root {
        tx.prepare_cached(statements::COUNT_THREAD_REPLY)
            .map_err(sqlite_err)?
            .execute(named_params! { "$1": root.get(), "$2": m.created_at.unix_micros() })
            .map_err(sqlite_err)?;
    }
    for user in &m.mentions {
        tx.prepare_cached(statements::INSERT_MENTION)
            .map_err(sqlite_err)?
            .execute(named_params! { "$1": user.get(), "$2": m.room.get(), "$3": seq })
            .map_err(sqlite_err)?;
    }
    for attachment in &m.attachments {
        tx.prepare_cached(statements::LINK_ATTACHMENT)
            .map_err(sqlite_err)?
            .execute(named_params! {
                "$1": m.room.get(),
                "$2": id,
                "$3": attachment.id.get(),
                "$4": m.sender.get(),
            })
            .map_err(sqlite_err)?;
    }
    let stored = tx
        .prepare_cached(statements::MESSAGE_BY_ID)
        .map_err(sqlite_err)?
        .query_row(named_params! { "$1": id }, read_message)
        .map_err(sqlite_err)??;
    Ok(Stored::New(stored))
}

/// A message row, decoded by the rule every SQL row goes through.
fn read_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredMessage, StorageError>> {
    Ok(message_from(&Row(row)))
}

/// A rusqlite row as [`Columns`].
struct Row<'a, 'r>(&'a rusqlite::Row<'r>);

impl Columns for Row<'_, '_> {
    fn int(&self, column: &str) -> Result<i64, StorageError> {
        self.0.get(column).map_err(sqlite_err)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StorageError> {
        self.0.get(column).map_err(sqlite_err)
    }

    fn text(&self, column: &str) -> Result<String, StorageError> {
        self.0.get(column).map_err(sqlite_err)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, StorageError> {
        self.0.get(column).map_err(sqlite_err)
    }
}

/// rusqlite's errors onto the storage contract, as `map_err` does sqlx's.
/// A broken unique rule cannot happen in a batch (repeats are looked up
/// first); if it did, the batch fails and the one-by-one appends after it
/// report it.
pub(super) fn sqlite_err(error: rusqlite::Error) -> StorageError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _) if is_unavailable(failure.extended_code) => {
            StorageError::Unavailable(Box::new(error))
        }
        _ => StorageError::Backend(Box::new(error)),
    }
}
