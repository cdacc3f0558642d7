//! The Postgres side of group commit: a batch of appends in two statements
//! and one commit.
//!
//! The first statement locks the batch's rooms in id order, so two
//! instances committing batches over the same rooms queue instead of
//! deadlocking; a room deleted meanwhile is simply not locked. The second
//! does everything else at once: it raises each room's `last_seq` by its
//! number of messages, numbers the messages of a room in arrival order
//! above the old `last_seq`, inserts them, advances the senders' read
//! marks, and returns the stored rows. Holding the room locks to commit
//! keeps the guarantees of a single append (see the module doc of
//! `postgres.rs`): seqs without gap or duplicate, committed in seq order.
//!
//! There is no `ON CONFLICT` here: a repeated `(sender, client_id)` fails
//! the statement, the batch rolls back, and group commit appends its
//! messages one by one, where the single append's rules answer it.

use async_trait::async_trait;
use sqlx::postgres::PgPool;

use super::map_err;
use crate::storage::group_commit::BatchAppend;
use crate::storage::sql::message_from;
use crate::storage::{Appended, NewMessage, StorageError};

const LOCK_ROOMS: &str = "SELECT id FROM rooms WHERE id = ANY($1) ORDER BY id FOR UPDATE";

const APPEND_BATCH: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int8[])
        WITH ORDINALITY AS t(room_id, sender_id, body, client_id, created_at, ord)
), counts AS (
    SELECT room_id, count(*) AS n, max(created_at) AS at FROM input GROUP BY room_id
), bumped AS (
    UPDATE rooms r SET last_seq = r.last_seq + c.n, last_message_at = c.at
    FROM counts c WHERE r.id = c.room_id
    RETURNING r.id, r.last_seq - c.n AS base
), numbered AS (
    SELECT i.*, b.base + row_number() OVER (PARTITION BY i.room_id ORDER BY i.ord) AS seq
    FROM input i JOIN bumped b ON b.id = i.room_id
), inserted AS (
    INSERT INTO messages (room_id, seq, sender_id, body, client_id, created_at)
    SELECT room_id, seq, sender_id, body, client_id, created_at FROM numbered ORDER BY ord
    RETURNING id, room_id, seq
), marks AS (
    UPDATE room_members rm SET read_seq = s.seq
    FROM (SELECT room_id, sender_id, max(seq) AS seq FROM numbered GROUP BY room_id, sender_id) s
    WHERE rm.room_id = s.room_id AND rm.user_id = s.sender_id
      AND rm.state = 'member' AND rm.read_seq < s.seq
)
SELECT n.ord, m.id, n.room_id, n.seq, n.sender_id, u.display_name AS sender_name,
       n.body, n.created_at, n.client_id
FROM numbered n
JOIN inserted m ON m.room_id = n.room_id AND m.seq = n.seq
JOIN users u ON u.id = n.sender_id
ORDER BY n.ord";

/// What the committer task holds: the pool, not the storage, so that the
/// storage's handle to the committer is the only thing keeping it alive.
#[derive(Debug)]
pub(super) struct PgAppender {
    pub(super) pool: PgPool,
}

#[async_trait]
impl BatchAppend for PgAppender {
    async fn append_one(&self, message: NewMessage) -> Result<Appended, StorageError> {
        super::append_one(&self.pool, message).await
    }

    async fn append_batch(
        &self,
        batch: &[NewMessage],
    ) -> Result<Vec<Result<Appended, StorageError>>, StorageError> {
        let mut rooms: Vec<i64> = batch.iter().map(|m| m.room.get()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let column = |f: fn(&NewMessage) -> i64| batch.iter().map(f).collect::<Vec<i64>>();

        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query(LOCK_ROOMS)
            .bind(&rooms)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let rows = sqlx::query(APPEND_BATCH)
            .bind(column(|m| m.room.get()))
            .bind(column(|m| m.sender.get()))
            .bind(batch.iter().map(|m| m.body.as_str()).collect::<Vec<_>>())
            .bind(
                batch
                    .iter()
                    .map(|m| m.client_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(column(|m| m.created_at.unix_micros()))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;

        // Every message of a room that still exists has its row; a message
        // without one was for a deleted room.
        let mut stored: Vec<Option<Appended>> = (0..batch.len()).map(|_| None).collect();
        for row in &rows {
            let ord: i64 = sqlx::Row::try_get(row, "ord").map_err(map_err)?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| stored.get_mut(i))
                .ok_or_else(|| {
                    StorageError::Backend(format!("batch row {ord} out of range").into())
                })?;
            *slot = Some(Appended {
                message: message_from(row)?,
                created: true,
            });
        }
        tx.commit().await.map_err(map_err)?;
        Ok(stored
            .into_iter()
            .map(|s| s.ok_or(StorageError::NotFound))
            .collect())
    }
}
