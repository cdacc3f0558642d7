//! What differs between the SQL backends, and nothing else: the database
//! type, how a write transaction begins, the statements that lock (or, on
//! SQLite, merely read), and how errors map onto the storage contract. The
//! glue in `sql/mod.rs` and the append rule in `sql/append.rs` are written
//! once against this trait; `sqlite.rs` and `postgres.rs` each implement it
//! (and their own connecting, migrations and batch statement).

use futures_util::future::BoxFuture;
use sqlx::{Database, Pool};

use crate::storage::group_commit::Judgement;
use crate::storage::{MessageChange, StorageError};

/// A SQL database the one SQL backend runs on.
pub trait Dialect: std::fmt::Debug + Clone + Send + Sync + 'static {
    /// sqlx's database type.
    type Db: Database;

    /// Starts a write transaction. SQLite takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads before it
    /// writes could find the lock taken when it upgrades, and fail with
    /// `SQLITE_BUSY` without waiting. PostgreSQL's plain `BEGIN` runs at
    /// read committed, and row locks do the serializing.
    const BEGIN: &'static str;

    /// First statement of `join_room` and `invite`, `$1` the room: a row if
    /// the room exists, and, where writers are concurrent, the room's row
    /// lock until commit (see `statements::PG_LOCK_ROOM`).
    const LOCK_ROOM: &'static str;

    /// First statement of `direct_room`, `$1` the pair's lower user (see
    /// `statements::PG_LOCK_DIRECT_PAIR`).
    const LOCK_DIRECT_PAIR: &'static str;

    /// A member's read mark and the room's `last_seq`, `$1` room, `$2`
    /// user, read in `mark_read`'s transaction (locking the member row where
    /// writers are concurrent: `statements::PG_MEMBER_READ_MARK`).
    const MEMBER_READ_MARK: &'static str;

    /// Full-text search: `$1` the query as [`Dialect::search_text`] makes
    /// it, `$2` the viewer, `$3` the id to search below, `$4` the room (0:
    /// every room), `$5` the page size plus one; rows with the message
    /// columns and `room_name`, newest first.
    const SEARCH: &'static str;

    /// `$1` of [`Dialect::SEARCH`] for words made of letters and digits.
    fn search_text(terms: &[String]) -> String;

    /// Rows a statement changed (sqlx's result types share no trait for it).
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;

    /// Maps sqlx's errors onto the storage contract: unique violations to
    /// `Conflict`, "cannot serve now" to `Unavailable`, the rest `Backend`.
    fn map_err(error: sqlx::Error) -> StorageError;

    /// A change to a message read on `pool` before it is queued to the
    /// committer: its room, and its judgement for a committer that can
    /// write it without reading again (PostgreSQL: `postgres/change.rs`).
    /// [`Ahead::Skipped`] by default, where the committer's own reads cost
    /// nothing (SQLite, in-process).
    fn judge_ahead<'a>(
        pool: &'a Pool<Self::Db>,
        change: &'a MessageChange,
    ) -> BoxFuture<'a, Result<Ahead, StorageError>> {
        let _ = (pool, change);
        Box::pin(async { Ok(Ahead::Skipped) })
    }
}

/// What [`Dialect::judge_ahead`] read of a change.
#[derive(Debug)]
pub enum Ahead {
    /// Nothing: the committer reads.
    Skipped,
    /// No such message.
    Missing,
    /// The message's room, and the change's judgement if it is one to
    /// write (a refusal or a change that comes to nothing is judged again
    /// by the committer, in its order with the changes queued before it).
    Read {
        /// The message's room.
        room: chat_core::RoomId,
        /// The judgement to write with, if any.
        judgement: Option<Box<Judgement>>,
    },
}
