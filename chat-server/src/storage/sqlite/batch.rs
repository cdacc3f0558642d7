//! The SQLite side of group commit: a batch of appends in one write
//! transaction, in a fixed number of statements.
//!
//! SQLite has a single writer, so what a batch saves is not contention but
//! per-transaction and per-statement costs: the write lock, the WAL frames
//! and commit record of every transaction, and (sqlx runs each connection on
//! a thread of its own) a round trip between that thread and the runtime for
//! every statement. A batch therefore runs the same few statements whatever
//! its size: look up the pairs stored before, raise every room's `last_seq`
//! by its number of new messages, insert them all, advance the senders'
//! read marks. Seqs are numbered in arrival order per room, so they come
//! out exactly as they would one by one. (The batch rule itself, repeats
//! within the batch included, is group commit's, for every SQL backend.)
//!
//! Stored repeats are found before anything is written rather than by the
//! insert: holding the write lock, nothing can insert them in between, so
//! nothing has to be rolled back and one repeat never costs the rest of the
//! batch its transaction.
//!
//! The statements' text depends on the batch's size and rooms; they stay in
//! the connection's statement cache like any other, so the sizes a busy
//! room keeps producing are prepared once.

use std::collections::HashMap;

use async_trait::async_trait;
use chat_core::{RoomId, Seq, UserId};
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::{SqliteDialect, map_err};
use crate::storage::group_commit::{BatchAppend, MemberOp, Stored};
use crate::storage::sql::append::{append_one, change_membership};
use crate::storage::sql::rows::message_from;
use crate::storage::sql::{Dialect as _, statements};
use crate::storage::{Appended, NewMessage, StorageError, StoredMember, StoredMessage};

/// What the committer holds: the write pool, not the storage, so that the
/// storage's handle to the committer is the only thing keeping it alive.
#[derive(Debug)]
pub(super) struct SqliteAppender {
    pub(super) write: SqlitePool,
}

#[async_trait]
impl BatchAppend for SqliteAppender {
    async fn append_one(&self, message: NewMessage) -> Result<Appended, StorageError> {
        let mut conn = self.write.acquire().await.map_err(map_err)?;
        append_one::<SqliteDialect>(&mut conn, &message).await
    }

    async fn change_membership(&self, op: &MemberOp) -> Result<Option<StoredMember>, StorageError> {
        let mut conn = self.write.acquire().await.map_err(map_err)?;
        change_membership::<SqliteDialect>(&mut conn, op).await
    }

    async fn store_batch(&self, fresh: &[&NewMessage]) -> Result<Vec<Stored>, StorageError> {
        let mut tx = self
            .write
            .begin_with(SqliteDialect::BEGIN)
            .await
            .map_err(map_err)?;
        let stored = store(&mut tx, fresh).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(stored)
    }
}

/// A batch inside the write transaction `tx`; answers in batch order.
async fn store(
    tx: &mut Transaction<'static, Sqlite>,
    batch: &[&NewMessage],
) -> Result<Vec<Stored>, StorageError> {
    let mut originals = stored_repeats(tx, batch).await?;
    let mut outcomes: Vec<Option<Stored>> = Vec::with_capacity(batch.len());
    // New messages per room, in arrival order: (room, count, latest time).
    let mut rooms: Vec<(RoomId, i64, i64)> = Vec::new();
    for m in batch {
        // Repeats are rare: no key is built when there are none.
        if !originals.is_empty()
            && let Some(client_id) = m.client_id.as_deref()
            && let Some(original) = originals.remove(&(m.sender, client_id.to_owned()))
        {
            outcomes.push(Some(Stored::Original(original)));
            continue;
        }
        match rooms.iter_mut().find(|(room, ..)| *room == m.room) {
            Some((_, n, at)) => {
                *n += 1;
                *at = (*at).max(m.created_at.unix_micros());
            }
            None => rooms.push((m.room, 1, m.created_at.unix_micros())),
        }
        outcomes.push(None);
    }

    // Each room's seqs (and message counts): above its old ones, in
    // arrival order.
    let mut next = bump_rooms(tx, &rooms).await?;
    let mut new: Vec<(&NewMessage, Numbered)> = Vec::with_capacity(batch.len());
    for (outcome, m) in outcomes.iter_mut().zip(batch) {
        if outcome.is_none() {
            match next.get_mut(&m.room) {
                Some(n) => {
                    new.push((m, *n));
                    n.seq += 1;
                    n.msg_no += 1;
                }
                None => *outcome = Some(Stored::NoRoom),
            }
        }
    }
    let mut inserted = insert(tx, &new).await?;
    advance_marks(tx, &new).await?;

    let mut new = new.into_iter();
    outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Some(decided) => Ok(decided),
            None => {
                let (m, seq) = new
                    .next()
                    .ok_or_else(|| inconsistent("a message left undecided"))?;
                inserted
                    .remove(&(m.room, seq.seq))
                    .map(Stored::New)
                    .ok_or_else(|| inconsistent("an inserted message has no row"))
            }
        })
        .collect()
}

/// A new message's place: its seq and its `msg_no`.
#[derive(Debug, Clone, Copy)]
struct Numbered {
    seq: Seq,
    msg_no: i64,
}

/// Takes each room's seqs for its new messages in one statement; returns
/// the first new seq and count of every room still there (a deleted room
/// has no row).
async fn bump_rooms(
    tx: &mut Transaction<'static, Sqlite>,
    rooms: &[(RoomId, i64, i64)],
) -> Result<HashMap<RoomId, Numbered>, StorageError> {
    let mut first = HashMap::with_capacity(rooms.len());
    if rooms.is_empty() {
        return Ok(first);
    }
    // The right-hand sides read the row as it was.
    let mut q = QueryBuilder::<Sqlite>::new(
        "UPDATE rooms SET last_seq = last_seq + v.column2, msg_count = msg_count + v.column2, \
         last_message_seq = last_seq + v.column2, last_message_at = v.column3 FROM (",
    );
    q.push_values(rooms, |mut row, (room, n, at)| {
        row.push_bind(room.get()).push_bind(*n).push_bind(*at);
    });
    // SQLite's RETURNING sees only the updated table, not `v`.
    q.push(") AS v WHERE rooms.id = v.column1 RETURNING rooms.id, rooms.last_seq, rooms.msg_count");
    let rows: Vec<(i64, Seq, i64)> = q
        .build_query_as()
        .fetch_all(&mut **tx)
        .await
        .map_err(map_err)?;
    for (id, last, count) in rows {
        let room = RoomId(id);
        if let Some((_, n, _)) = rooms.iter().find(|(r, ..)| *r == room) {
            first.insert(
                room,
                Numbered {
                    seq: last - n + 1,
                    msg_no: count - n + 1,
                },
            );
        }
    }
    Ok(first)
}

/// The stored messages among the batch's `(sender, client_id)` pairs.
async fn stored_repeats(
    tx: &mut Transaction<'static, Sqlite>,
    batch: &[&NewMessage],
) -> Result<HashMap<(UserId, String), StoredMessage>, StorageError> {
    let keyed: Vec<(&NewMessage, &str)> = batch
        .iter()
        .filter_map(|m| m.client_id.as_deref().map(|c| (*m, c)))
        .collect();
    let mut found = HashMap::new();
    if keyed.is_empty() {
        return Ok(found);
    }
    let mut q = QueryBuilder::<Sqlite>::new(statements::MESSAGES_BY_CLIENT_IDS);
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
    new: &[(&NewMessage, Numbered)],
) -> Result<HashMap<(RoomId, Seq), StoredMessage>, StorageError> {
    let mut stored = HashMap::with_capacity(new.len());
    if new.is_empty() {
        return Ok(stored);
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO messages (room_id, seq, sender_id, body, client_id, created_at, msg_no) ",
    );
    q.push_values(new, |mut row, (m, n)| {
        row.push_bind(m.room.get())
            .push_bind(n.seq)
            .push_bind(m.sender.get())
            .push_bind(m.body.as_str())
            .push_bind(m.client_id.as_deref())
            .push_bind(m.created_at.unix_micros())
            .push_bind(n.msg_no);
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
    new: &[(&NewMessage, Numbered)],
) -> Result<(), StorageError> {
    // Seq and count grow together, so the newest message has both highest.
    let mut marks: Vec<(RoomId, UserId, Numbered)> = Vec::new();
    for (m, n) in new {
        match marks
            .iter_mut()
            .find(|(room, sender, _)| *room == m.room && *sender == m.sender)
        {
            Some((_, _, top)) if top.seq < n.seq => *top = *n,
            Some(_) => {}
            None => marks.push((m.room, m.sender, *n)),
        }
    }
    if marks.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "UPDATE room_members SET read_seq = v.column3, read_no = v.column4 FROM (",
    );
    q.push_values(&marks, |mut row, (room, sender, n)| {
        row.push_bind(room.get())
            .push_bind(sender.get())
            .push_bind(n.seq)
            .push_bind(n.msg_no);
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
