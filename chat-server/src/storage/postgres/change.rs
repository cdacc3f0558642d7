//! A change to a message on PostgreSQL in one round trip on the committer
//! instead of seven to nine: a read before it is queued, the rule in Rust,
//! then one write.
//!
//! Every statement of the committer is a round trip, and work on the
//! change's room waits behind all of them (W1C: a change held its room
//! about 1.3 ms in `sql/change.rs`'s transaction, and the room's messages
//! queued behind it). Here:
//!
//! 1. `CHANGE_STANDING` reads the message (and so its room, which the
//!    committer needs to run the change beside other rooms' work), the
//!    caller's membership and how many of the room's events are not
//!    messages (`room_events`), on the pool, before the change is queued
//!    ([`judge_ahead`]); the rule ([`judge`], the same as every backend's)
//!    decides on it. A change to make goes to the committer with that
//!    judgement ([`Judgement`]); a refusal or a change that comes to
//!    nothing goes without, and the committer reads and judges it again
//!    in its order (a change queued before it may make it allowed or
//!    not).
//! 2. One statement, its own transaction, writes the change: the
//!    batch's statement (`batch.rs`), where a change usually goes among
//!    its room's messages, or for a deletion (which writes rows messages
//!    write too) [`DELETE`]. It takes the room's next seq only if the
//!    room's events other than messages are still as many as read (the
//!    check waits for the room's row lock, then re-checks on the row as
//!    committed), and every other part of it is conditioned on that.
//!    Everything the rule read changes only with such an event (messages
//!    appended meanwhile change none of it), so a room where none
//!    happened was judged as it stands under the lock, as in the locked
//!    transaction. A room where one did (a change queued before this one,
//!    a membership change, another instance) writes nothing, and the
//!    committer reads and judges again; after [`ATTEMPTS`], it takes the
//!    lock first (`sql/change.rs`), which always ends.
//!
//! The read ahead replaced the service's own read of the message's room.
//! (Measured first with every sender's change in the same 50 ms,
//! judgements made ahead mostly went stale behind the room's other changes
//! and cost more than they saved; spread as people make them, they rarely
//! do.)
//!
//! A statement's parts see one snapshot, so the reactions an event
//! carries are the snapshot's with the change's own row added or left
//! out, and no two parts update the same row.
//!
//! What each kind writes is what `sql/change.rs` writes, statement for
//! statement; the conformance suite runs both ways over every kind, and
//! the tests below run this one against the other and against a room
//! that had another event between the read and the write.

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::map_err;
use chat_core::RoomId;

use crate::storage::group_commit::{Judgement, Placed};
use crate::storage::sql::Ahead;
use crate::storage::sql::change::{Judged, changed, judge, reaction_key};
use crate::storage::sql::rows::Columns as _;
use crate::storage::sql::rows::message_from;
use crate::storage::sql::statements::{self, message_columns};
use crate::storage::{ChangeOp, Changed, MessageChange, StorageError, StoredMessage, UpdateKind};

/// Reads and writes a change may take when other instances keep moving
/// its room, before it waits for the room's lock instead.
const ATTEMPTS: usize = 3;

/// A deletion, the one change that does not go in a batch: `$1` the
/// message, `$2` the user, `$3` the room, `$4` the room's events other
/// than messages as judged, `$5` when, `$6` the message's seq, `$7` its
/// thread's root (NULL if none). The next seq is taken only if the
/// events are still `$4` (`locked`), and every other part is conditioned
/// on it. The body, reactions, reaction events' keys, replies' snippets and mentions
/// go; the room counts one more deleted message, and members whose mark
/// is at or above it one fewer read (see `sql/change.rs`).
///
/// A deletion also reads rows that messages change: the replies whose
/// snippets it erases and the read marks it lowers. A message committed
/// while the statement waited for the room's lock (by another instance) is
/// not in the statement's snapshot, so the deletion also asks that the
/// room's `last_seq` be the snapshot's (the sub-select runs once, on the
/// snapshot), as the batch does (`batch.rs`, `stable`); else it is read
/// and judged again.
const DELETE: &str = concat!(
    "WITH locked AS (UPDATE rooms SET last_seq = last_seq + 1, msg_deleted = msg_deleted + 1 \
       WHERE id = $3 AND last_seq - msg_count = $4 \
         AND EXISTS (SELECT 1 FROM messages WHERE id = $1) \
         AND last_seq = (SELECT r0.last_seq FROM rooms r0 WHERE r0.id = $3) \
       RETURNING id, last_seq, msg_count), \
     event AS (INSERT INTO messages \
         (room_id, seq, sender_id, body, kind, created_at, msg_no, target_id) \
         SELECT id, last_seq, $2, '', 'deleted', $5, msg_count, $1 FROM locked), \
     changed AS (UPDATE messages m SET version = m.version + 1, body = '', deleted_at = $5, \
         pinned_at = NULL, reply_snippet = NULL, mentions = NULL, attachments = NULL \
       FROM locked WHERE m.id = $1 RETURNING m.*), \
     doomed AS (UPDATE attachments SET doomed_at = $5 \
       WHERE message_id = $1 AND doomed_at IS NULL AND EXISTS (SELECT 1 FROM locked)), \
     uncounted AS (UPDATE room_members SET read_no = read_no - 1 \
       WHERE room_id = $3 AND state = 'member' AND read_seq >= $6 \
         AND EXISTS (SELECT 1 FROM locked)), \
     unreacted AS (DELETE FROM reactions WHERE message_id = $1 AND EXISTS (SELECT 1 FROM locked)), \
     keys_erased AS (UPDATE messages SET body = '' \
       WHERE target_id = $1 AND kind IN ('reacted', 'unreacted') \
         AND EXISTS (SELECT 1 FROM locked)), \
     snippets_erased AS (UPDATE messages SET reply_snippet = NULL \
       WHERE reply_to = $1 AND EXISTS (SELECT 1 FROM locked)), \
     unmentioned AS (DELETE FROM mentions WHERE room_id = $3 AND seq = $6 \
       AND EXISTS (SELECT 1 FROM locked)), \
     thread AS (UPDATE messages SET reply_count = reply_count - 1 \
       WHERE id = $7 AND reply_count > 0 AND EXISTS (SELECT 1 FROM locked)) \
     SELECT ",
    message_columns!(),
    ", l.last_seq AS event_seq FROM changed m JOIN users u ON u.id = m.sender_id CROSS JOIN locked l"
);

/// What a read of the pool says of the change before it is queued: its
/// room, and its judgement if it is one to write.
pub(super) async fn judge_ahead(
    pool: &sqlx::PgPool,
    change: &MessageChange,
) -> Result<Ahead, StorageError> {
    let Some(row) = sqlx::query(statements::CHANGE_STANDING)
        .bind(change.message.get())
        .bind(change.user.get())
        .bind(reaction_key(&change.op))
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
    else {
        return Ok(Ahead::Missing);
    };
    let room = RoomId(row.int("room_id")?);
    let judgement = match judge(&row, change) {
        Ok(Judged::Change {
            target,
            kind,
            events,
            ..
        }) => Some(Box::new(Judgement {
            target,
            kind,
            events,
        })),
        _ => None,
    };
    Ok(Ahead::Read { room, judgement })
}

/// Checks and applies `change` (see the module doc), with its judgement
/// made before it was queued if there is one.
pub(super) async fn change_message(
    conn: &mut PgConnection,
    change: &MessageChange,
    judged: Option<&Judgement>,
) -> Result<Changed, StorageError> {
    if let Some(judged) = judged
        && let Some(done) = write(
            conn,
            change,
            &judged.target,
            judged.kind.clone(),
            judged.events,
        )
        .await?
    {
        return Ok(done);
    }
    for _ in 0..ATTEMPTS {
        let Some(row) = sqlx::query(statements::CHANGE_STANDING)
            .bind(change.message.get())
            .bind(change.user.get())
            .bind(reaction_key(&change.op))
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?
        else {
            return Err(StorageError::NotFound);
        };
        let (target, kind, events) = match judge(&row, change)? {
            Judged::Nothing(message) => {
                return Ok(Changed {
                    message,
                    event: None,
                    seen: None,
                });
            }
            Judged::Change {
                target,
                kind,
                events,
                ..
            } => (target, kind, events),
        };
        if let Some(done) = write(conn, change, &target, kind, events).await? {
            return Ok(done);
        }
    }
    crate::storage::sql::change::change_message::<super::PgDialect>(conn, change).await
}

/// The write of a change judged on the room with `events` events other
/// than messages; `None` if it has more since. A deletion in its own
/// statement; every other kind in the batch's, as a batch of that change
/// alone (`batch.rs`), so that what a change writes is written once.
async fn write(
    conn: &mut PgConnection,
    change: &MessageChange,
    target: &StoredMessage,
    kind: UpdateKind,
    events: i64,
) -> Result<Option<Changed>, StorageError> {
    if !matches!(change.op, ChangeOp::Delete) {
        let judged = Judgement {
            target: target.clone(),
            kind,
            events,
        };
        let placed = [Placed {
            before: 0,
            change,
            judged: &judged,
        }];
        let (_, mut written) = super::batch::store_batch(conn, &[], &placed).await?;
        return Ok(written.pop().flatten());
    }
    let row = sqlx::query(DELETE)
        .bind(change.message.get())
        .bind(change.user.get())
        .bind(target.room.get())
        .bind(events)
        .bind(change.created_at.unix_micros())
        .bind(target.seq)
        .bind(target.thread_root.map(|root| root.get()))
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let message = message_from(&row)?;
    let seq: i64 = row.try_get("event_seq").map_err(map_err)?;
    // A deleted message has no reactions.
    Ok(Some(changed(change, kind, seq, message, Vec::new())))
}

#[cfg(test)]
mod tests;
