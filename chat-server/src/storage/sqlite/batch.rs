//! The SQLite side of group commit: a batch of appends in one write
//! transaction.
//!
//! SQLite has a single writer, so what a batch saves is not contention but
//! the per-transaction cost: taking the write lock, and the WAL frame and
//! commit record written for every transaction. Each message still runs the
//! single append's statements, in arrival order, so a room's seqs come out
//! exactly as they would one by one.
//!
//! A repeated `(sender, client_id)` is looked up before the seq is taken
//! rather than detected by the insert: holding the write lock, nothing can
//! insert it in between, and a repeat inside the same batch finds the
//! message stored a moment earlier. Nothing then has to be rolled back, so
//! one repeat never costs the rest of the batch its transaction.

use async_trait::async_trait;
use chat_core::Seq;
use sqlx::sqlite::SqlitePool;
use sqlx::{Sqlite, Transaction};

use super::{begin_write, map_err};
use crate::storage::group_commit::BatchAppend;
use crate::storage::sql::{self, message_from};
use crate::storage::{Appended, NewMessage, StorageError};

/// What the committer task holds: the write pool, not the storage, so that
/// the storage's handle to the committer is the only thing keeping it alive.
#[derive(Debug)]
pub(super) struct SqliteAppender {
    pub(super) write: SqlitePool,
}

#[async_trait]
impl BatchAppend for SqliteAppender {
    async fn append_one(&self, message: NewMessage) -> Result<Appended, StorageError> {
        let mut tx = begin_write(&self.write).await?;
        let appended = append_in(&mut tx, &message).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(appended)
    }

    async fn append_batch(
        &self,
        batch: &[NewMessage],
    ) -> Result<Vec<Result<Appended, StorageError>>, StorageError> {
        let mut tx = begin_write(&self.write).await?;
        let mut results = Vec::with_capacity(batch.len());
        for message in batch {
            match append_in(&mut tx, message).await {
                // Its room is gone; nothing was written for it.
                Err(StorageError::NotFound) => results.push(Err(StorageError::NotFound)),
                Err(e) => return Err(e),
                Ok(appended) => results.push(Ok(appended)),
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(results)
    }
}

/// One append inside the write transaction `tx`.
async fn append_in(
    tx: &mut Transaction<'static, Sqlite>,
    message: &NewMessage,
) -> Result<Appended, StorageError> {
    if let Some(client_id) = message.client_id.as_deref() {
        let original = sqlx::query(sql::MESSAGE_BY_CLIENT_ID)
            .bind(message.sender.get())
            .bind(client_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_err)?;
        if let Some(original) = original {
            return Ok(Appended {
                message: message_from(&original)?,
                created: false,
            });
        }
    }

    let seq: Option<Seq> = sqlx::query_scalar(sql::NEXT_SEQ)
        .bind(message.room.get())
        .bind(message.created_at.unix_micros())
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?;
    let Some(seq) = seq else {
        return Err(StorageError::NotFound);
    };

    let id: Option<i64> = sqlx::query_scalar(sql::INSERT_MESSAGE)
        .bind(message.room.get())
        .bind(seq)
        .bind(message.sender.get())
        .bind(&message.body)
        .bind(message.client_id.as_deref())
        .bind(message.created_at.unix_micros())
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?;
    let Some(id) = id else {
        // Looked up above under the write lock, so this cannot happen; if
        // it does, the transaction must not commit the seq it took.
        return Err(StorageError::Backend(
            "client_id taken after it was found free".into(),
        ));
    };

    sqlx::query(sql::ADVANCE_SENDER_MARK)
        .bind(message.room.get())
        .bind(message.sender.get())
        .bind(seq)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    let stored = sqlx::query(sql::MESSAGE_BY_ID)
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(Appended {
        message: message_from(&stored)?,
        created: true,
    })
}
