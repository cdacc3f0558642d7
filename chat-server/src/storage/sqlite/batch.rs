//! The SQLite side of group commit: a batch of appends in one write
//! transaction, in a fixed number of statements.
//!
//! SQLite has a single writer, so what a batch saves is not contention but
//! per-transaction and per-statement costs: the write lock, the WAL frames
//! and commit record of every transaction, and (sqlx runs each connection on
//! a thread of its own) a round trip between that thread and the runtime for
//! every statement. A batch therefore runs the same few statements whatever
//! its size: look up the repeated `client_id`s, raise every room's
//! `last_seq` by its number of new messages, insert them all, advance the
//! senders' read marks. Seqs are numbered in arrival order per room, so they
//! come out exactly as they would one by one.
//!
//! Repeats are found before anything is written rather than by the insert:
//! holding the write lock, nothing can insert them in between, and a repeat
//! of a message earlier in the same batch is answered with that message.
//! Nothing then has to be rolled back, so one repeat never costs the rest of
//! the batch its transaction. Should the insert still conflict, the batch
//! fails and group commit appends its messages one by one.
//!
//! The statements' text depends on the batch's size and rooms; they stay in
//! the connection's statement cache like any other, so the sizes a busy
//! room keeps producing are prepared once.

use std::collections::HashMap;

use async_trait::async_trait;
use chat_core::{RoomId, Seq, UserId};
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::{begin_write, map_err};
use crate::storage::group_commit::BatchAppend;
use crate::storage::sql::{self, message_from};
use crate::storage::{Appended, NewMessage, StorageError, StoredMessage};
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
        let results = append_all(&mut tx, batch).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(results)
    }
}

/// What becomes of one message of a batch.
enum Fate {
    /// Stored before this batch: answered with the original.
    Stored(StoredMessage),
    /// A repeat of the batch's message at this index.
    RepeatOf(usize),
    /// Its room is gone.
    NoRoom,
    /// New, with this seq.
    New(Seq),
}

/// A batch inside the write transaction `tx`; answers in batch order.
async fn append_all(
    tx: &mut Transaction<'static, Sqlite>,
    batch: &[NewMessage],
) -> Result<Vec<Result<Appended, StorageError>>, StorageError> {
    let mut stored = stored_repeats(tx, batch).await?;
    let mut first: HashMap<(UserId, &str), usize> = HashMap::new();
    let mut fates: Vec<Option<Fate>> = Vec::with_capacity(batch.len());
    // New messages per room, in arrival order: (room, count, latest time).
    let mut rooms: Vec<(RoomId, i64, i64)> = Vec::new();
    for (i, m) in batch.iter().enumerate() {
        if let Some(client_id) = m.client_id.as_deref() {
            // Repeats are rare: no key is built when there are none.
            if !stored.is_empty()
                && let Some(original) = stored.remove(&(m.sender, client_id.to_owned()))
            {
                // Later repeats in the batch get the same answer.
                first.insert((m.sender, client_id), i);
                fates.push(Some(Fate::Stored(original)));
                continue;
            }
            if let Some(&earlier) = first.get(&(m.sender, client_id)) {
                fates.push(Some(Fate::RepeatOf(earlier)));
                continue;
            }
            first.insert((m.sender, client_id), i);
        }
        match rooms.iter_mut().find(|(room, ..)| *room == m.room) {
            Some((_, n, at)) => {
                *n += 1;
                *at = (*at).max(m.created_at.unix_micros());
            }
            None => rooms.push((m.room, 1, m.created_at.unix_micros())),
        }
        fates.push(None);
    }

    // Each room's seqs: above its old `last_seq`, in arrival order.
    let mut next_seq = bump_rooms(tx, &rooms).await?;
    for (fate, m) in fates.iter_mut().zip(batch) {
        if fate.is_none() {
            *fate = Some(match next_seq.get_mut(&m.room) {
                Some(seq) => {
                    *seq += 1;
                    Fate::New(*seq - 1)
                }
                None => Fate::NoRoom,
            });
        }
    }

    let new: Vec<(&NewMessage, Seq)> = fates
        .iter()
        .zip(batch)
        .filter_map(|(fate, m)| match fate {
            Some(Fate::New(seq)) => Some((m, *seq)),
            _ => None,
        })
        .collect();
    let mut inserted = insert(tx, &new).await?;
    advance_marks(tx, &new).await?;

    let mut results: Vec<Result<Appended, StorageError>> = Vec::with_capacity(batch.len());
    for (fate, m) in fates.into_iter().zip(batch) {
        let result = match fate {
            Some(Fate::Stored(message)) => Ok(Appended {
                message,
                created: false,
            }),
            Some(Fate::RepeatOf(earlier)) => match results.get(earlier) {
                Some(Ok(original)) => Ok(Appended {
                    message: original.message.clone(),
                    created: false,
                }),
                // Its room is gone, so one by one this one would be new:
                // let group commit do exactly that.
                Some(Err(_)) => return Err(inconsistent("a repeat of a message not stored")),
                None => Err(inconsistent("a repeat before its original")),
            },
            Some(Fate::NoRoom) => Err(StorageError::NotFound),
            Some(Fate::New(seq)) => match inserted.remove(&(m.room, seq)) {
                Some(message) => Ok(Appended {
                    message,
                    created: true,
                }),
                // The caller rolls the batch back and appends one by one.
                None => return Err(inconsistent("an inserted message has no row")),
            },
            None => return Err(inconsistent("a message left undecided")),
        };
        results.push(result);
    }
    Ok(results)
}

/// Takes each room's seqs for its new messages in one statement; returns
/// the first new seq of every room still there (a deleted room has no row).
async fn bump_rooms(
    tx: &mut Transaction<'static, Sqlite>,
    rooms: &[(RoomId, i64, i64)],
) -> Result<HashMap<RoomId, Seq>, StorageError> {
    let mut first = HashMap::with_capacity(rooms.len());
    if rooms.is_empty() {
        return Ok(first);
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "UPDATE rooms SET last_seq = last_seq + v.column2, last_message_at = v.column3 FROM (",
    );
    q.push_values(rooms, |mut row, (room, n, at)| {
        row.push_bind(room.get()).push_bind(*n).push_bind(*at);
    });
    // SQLite's RETURNING sees only the updated table, not `v`.
    q.push(") AS v WHERE rooms.id = v.column1 RETURNING rooms.id, rooms.last_seq");
    let rows: Vec<(i64, Seq)> = q
        .build_query_as()
        .fetch_all(&mut **tx)
        .await
        .map_err(map_err)?;
    for (id, last) in rows {
        let room = RoomId(id);
        if let Some((_, n, _)) = rooms.iter().find(|(r, ..)| *r == room) {
            first.insert(room, last - n + 1);
        }
    }
    Ok(first)
}

/// The stored messages among the batch's `(sender, client_id)` pairs.
async fn stored_repeats(
    tx: &mut Transaction<'static, Sqlite>,
    batch: &[NewMessage],
) -> Result<HashMap<(UserId, String), StoredMessage>, StorageError> {
    let keyed: Vec<(&NewMessage, &str)> = batch
        .iter()
        .filter_map(|m| m.client_id.as_deref().map(|c| (m, c)))
        .collect();
    let mut found = HashMap::new();
    if keyed.is_empty() {
        return Ok(found);
    }
    let mut q = QueryBuilder::<Sqlite>::new(sql::MESSAGES_BY_CLIENT_IDS);
    let mut pairs = q.separated(", ");
    for (m, client_id) in &keyed {
        pairs.push("(");
        pairs.push_bind_unseparated(m.sender.get());
        pairs.push_unseparated(", ");
        pairs.push_bind_unseparated(*client_id);
        pairs.push_unseparated(")");
    }
    q.push(")");
    let rows = q.build().fetch_all(&mut **tx).await.map_err(map_err)?;
    for row in &rows {
        let message = message_from(row)?;
        if let Some(client_id) = message.client_id.clone() {
            found.insert((message.sender, client_id), message);
        }
    }
    Ok(found)
}

/// Inserts the new messages in one statement; returns them by `(room, seq)`
/// as stored (with the sender's name).
async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    new: &[(&NewMessage, Seq)],
) -> Result<HashMap<(RoomId, Seq), StoredMessage>, StorageError> {
    let mut stored = HashMap::with_capacity(new.len());
    if new.is_empty() {
        return Ok(stored);
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO messages (room_id, seq, sender_id, body, client_id, created_at) ",
    );
    q.push_values(new, |mut row, (m, seq)| {
        row.push_bind(m.room.get())
            .push_bind(*seq)
            .push_bind(m.sender.get())
            .push_bind(m.body.as_str())
            .push_bind(m.client_id.as_deref())
            .push_bind(m.created_at.unix_micros());
    });
    // The rows come back in no promised order; they are matched by seq.
    q.push(
        " RETURNING id, room_id, seq, sender_id, body, created_at, client_id, \
         (SELECT u.display_name FROM users u WHERE u.id = sender_id) AS sender_name",
    );
    let rows = q.build().fetch_all(&mut **tx).await.map_err(map_err)?;
    for row in &rows {
        let message = message_from(row)?;
        stored.insert((message.room, message.seq), message);
    }
    Ok(stored)
}

/// Each sender has read its own messages: one statement for the batch.
async fn advance_marks(
    tx: &mut Transaction<'static, Sqlite>,
    new: &[(&NewMessage, Seq)],
) -> Result<(), StorageError> {
    let mut marks: Vec<(RoomId, UserId, Seq)> = Vec::new();
    for (m, seq) in new {
        match marks
            .iter_mut()
            .find(|(room, sender, _)| *room == m.room && *sender == m.sender)
        {
            Some((_, _, top)) => *top = (*top).max(*seq),
            None => marks.push((m.room, m.sender, *seq)),
        }
    }
    if marks.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Sqlite>::new("UPDATE room_members SET read_seq = v.column3 FROM (");
    q.push_values(&marks, |mut row, (room, sender, seq)| {
        row.push_bind(room.get())
            .push_bind(sender.get())
            .push_bind(*seq);
    });
    q.push(
        ") AS v WHERE room_members.room_id = v.column1 AND room_members.user_id = v.column2 \
         AND room_members.state = 'member' AND room_members.read_seq < v.column3",
    );
    q.build().execute(&mut **tx).await.map_err(map_err)?;
    Ok(())
}

fn inconsistent(what: &str) -> StorageError {
    StorageError::Backend(format!("append batch: {what}").into())
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
