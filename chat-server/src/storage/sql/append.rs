//! One append in its own transaction, for any SQL dialect: the rule a
//! batch must give the same answers as (`group_commit.rs`), and what group
//! commit falls back to when a batch fails.
//!
//! 1. `NEXT_SEQ` raises the room's `last_seq` first. Being a write, it takes
//!    the room's row lock (PostgreSQL) under the write lock SQLite's
//!    `BEGIN IMMEDIATE` already holds, so appends to one room queue here and
//!    number 1, 2, 3… in commit order. No row: the room is gone.
//! 2. The insert does nothing on a repeated `(sender, client_id)` (after
//!    waiting for a concurrent insert of the same pair to commit or roll
//!    back); the original is read and the transaction rolls back, seq
//!    included, so the room keeps no gap. `DO NOTHING` rather than catching
//!    the error, since an error aborts a PostgreSQL transaction.
//! 3. The sender's read mark moves to the new message, so that every
//!    message above a member's mark is someone else's.

use sqlx::{
    AssertSqlSafe, Connection as _, Database, Encode, Executor, FromRow, IntoArguments, Type,
};

use super::rows::{Columns, message_from};
use super::{Dialect, statements};
use crate::storage::{Appended, NewMessage, StorageError};

/// Appends `message` in a transaction of its own on `conn`.
pub(crate) async fn append_one<D: Dialect>(
    conn: &mut <D::Db as Database>::Connection,
    message: &NewMessage,
) -> Result<Appended, StorageError>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    <D::Db as Database>::Row: Columns,
    for<'r> (i64,): FromRow<'r, <D::Db as Database>::Row>,
    for<'q> i64: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
{
    // Wrapped: `Connection::begin_with` is generic over its statement, and
    // a bare `&'static str` trips the higher-ranked `Send` check of the
    // callers' futures.
    let mut tx = conn
        .begin_with(AssertSqlSafe(D::BEGIN))
        .await
        .map_err(D::map_err)?;
    let seq: Option<i64> = sqlx::query_scalar(statements::NEXT_SEQ)
        .bind(message.room.get())
        .bind(message.created_at.unix_micros())
        .fetch_optional(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let Some(seq) = seq else {
        tx.rollback().await.map_err(D::map_err)?;
        return Err(StorageError::NotFound);
    };

    // An error here (an unknown sender) drops `tx`, which rolls back the
    // seq with it.
    let id: Option<i64> = sqlx::query_scalar(statements::INSERT_MESSAGE)
        .bind(message.room.get())
        .bind(seq)
        .bind(message.sender.get())
        .bind(message.body.as_str())
        .bind(message.client_id.as_deref())
        .bind(message.created_at.unix_micros())
        .fetch_optional(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let Some(id) = id else {
        // A repeat: this statement's fresh snapshot sees the original.
        let original = sqlx::query(statements::MESSAGE_BY_CLIENT_ID)
            .bind(message.sender.get())
            .bind(message.client_id.as_deref())
            .fetch_one(&mut *tx)
            .await
            .map_err(D::map_err)?;
        tx.rollback().await.map_err(D::map_err)?;
        return Ok(Appended {
            message: message_from(&original)?,
            created: false,
        });
    };

    sqlx::query(statements::ADVANCE_SENDER_MARK)
        .bind(message.room.get())
        .bind(message.sender.get())
        .bind(seq)
        .execute(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let stored = sqlx::query(statements::MESSAGE_BY_ID)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let stored = message_from(&stored)?;
    tx.commit().await.map_err(D::map_err)?;
    Ok(Appended {
        message: stored,
        created: true,
    })
}
