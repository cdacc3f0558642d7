//! One append in its own transaction, for any SQL dialect: the rule a
//! batch must give the same answers as (`group_commit.rs`), and what group
//! commit falls back to when a batch fails.
//!
//! 1. `NEXT_SEQ` raises the room's `last_seq` first. Being a write, it takes
//!    the room's row lock (PostgreSQL) under the write lock SQLite's
//!    `BEGIN IMMEDIATE` already holds, so appends to one room queue here and
//!    number 1, 2, 3… in commit order. No row: the room is gone. Then the
//!    sender must be a member (`APPEND_ACCESS`): read under the room's lock,
//!    which every membership change takes first, so a send racing a leave
//!    is stored before it or refused.
//! 2. The insert does nothing on a repeated `(sender, client_id)` (after
//!    waiting for a concurrent insert of the same pair to commit or roll
//!    back); the original is read and the transaction rolls back, seq
//!    included, so the room keeps no gap. `DO NOTHING` rather than catching
//!    the error, since an error aborts a PostgreSQL transaction.
//! 3. The sender's read mark moves to the new message, so that every
//!    message above a member's mark is someone else's.
//!
//! A membership change ([`change_membership`]) is a timeline event too: it
//! takes the room's next seq in the transaction that changes the
//! membership, and goes through the same committer, so that this
//! instance publishes it in order with the messages around it.

use sqlx::{
    AssertSqlSafe, Connection as _, Database, Encode, Executor, FromRow, IntoArguments, Type,
};

use chat_core::MessageId;
use chat_core::moderation::Role;
use chat_core::timeline::MemberChange;

use super::rows::{
    Columns, attachments_text, member_detail, member_standing_from, mentions_text, message_from,
    refusal_from, room_from, send_refused, settings_text,
};
use super::{Dialect, statements};
use crate::storage::roles::{self, Effect};
use crate::storage::{
    Appended, MemberUpdate, NewMessage, RoomChange, StorageError, StoredMember, StoredRoomUpdate,
};

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
    for<'q> Option<i64>: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<String>: Encode<'q, D::Db> + Type<D::Db>,
{
    // Wrapped: `Connection::begin_with` is generic over its statement, and
    // a bare `&'static str` trips the higher-ranked `Send` check of the
    // callers' futures.
    let mut tx = conn
        .begin_with(AssertSqlSafe(D::BEGIN))
        .await
        .map_err(D::map_err)?;
    let numbered = sqlx::query(statements::NEXT_SEQ)
        .bind(message.room.get())
        .bind(message.created_at.unix_micros())
        .fetch_optional(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let Some(numbered) = numbered else {
        tx.rollback().await.map_err(D::map_err)?;
        return Err(StorageError::NotFound);
    };
    let (seq, msg_no) = (numbered.int("last_seq")?, numbered.int("msg_count")?);
    let live = numbered.int("live_count")?;
    let access = sqlx::query(statements::APPEND_ACCESS)
        .bind(message.room.get())
        .bind(message.sender.get())
        .fetch_one(&mut *tx)
        .await
        .map_err(D::map_err)?;
    if let Some(refusal) = refusal_from(&access)? {
        tx.rollback().await.map_err(D::map_err)?;
        return Err(refusal);
    }
    // Judged now, applied after the insert: a repeat gets its original.
    let refused = send_refused(&access, message.created_at.unix_micros())?;

    // An error here (an unknown sender) drops `tx`, which rolls back the
    // seq with it.
    let id: Option<i64> = sqlx::query_scalar(statements::INSERT_MESSAGE)
        .bind(message.room.get())
        .bind(seq)
        .bind(message.sender.get())
        .bind(message.body.as_str())
        .bind(message.client_id.as_deref())
        .bind(message.created_at.unix_micros())
        .bind(msg_no)
        .bind(message.reply_to.map(MessageId::get))
        .bind(message.thread_root.map(MessageId::get))
        .bind(mentions_text(&message.mentions))
        .bind(attachments_text(&message.attachments))
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
    if let Some(refused) = refused {
        tx.rollback().await.map_err(D::map_err)?;
        return Err(refused);
    }

    sqlx::query(statements::ADVANCE_SENDER_MARK)
        .bind(message.room.get())
        .bind(message.sender.get())
        .bind(seq)
        .bind(live)
        .bind(message.created_at.unix_micros())
        .execute(&mut *tx)
        .await
        .map_err(D::map_err)?;
    if let Some(root) = message.thread_root {
        sqlx::query(statements::COUNT_THREAD_REPLY)
            .bind(root.get())
            .bind(message.created_at.unix_micros())
            .execute(&mut *tx)
            .await
            .map_err(D::map_err)?;
    }
    for user in &message.mentions {
        sqlx::query(statements::INSERT_MENTION)
            .bind(user.get())
            .bind(message.room.get())
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(D::map_err)?;
    }
    for attachment in &message.attachments {
        sqlx::query(statements::LINK_ATTACHMENT)
            .bind(message.room.get())
            .bind(id)
            .bind(attachment.id.get())
            .bind(message.sender.get())
            .execute(&mut *tx)
            .await
            .map_err(D::map_err)?;
    }
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

/// Changes a membership and appends the change to the room's timeline, in
/// one transaction on `conn`: the room is locked first (as every write
/// that touches both takes room before member row), then what the rule
/// reads is read (`MEMBER_STANDING`) and judged (`roles::judge`), the rows
/// change, and the event takes the next seq without counting as a
/// message. `None` if nothing changed (already a member; not in the room);
/// `NotFound` for a room that is gone, but to a leave.
pub(crate) async fn change_membership<D: Dialect>(
    conn: &mut <D::Db as Database>::Connection,
    op: &MemberUpdate,
) -> Result<Option<StoredMember>, StorageError>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    <D::Db as Database>::Row: Columns,
    for<'q> i64: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<i64>: Encode<'q, D::Db> + Type<D::Db>,
{
    let (room, user) = (op.room.get(), op.user.get());
    let mut tx = conn
        .begin_with(AssertSqlSafe(D::BEGIN))
        .await
        .map_err(D::map_err)?;
    let locked = sqlx::query(D::LOCK_ROOM)
        .bind(room)
        .fetch_optional(&mut *tx)
        .await
        .map_err(D::map_err)?;
    if locked.is_none() {
        tx.rollback().await.map_err(D::map_err)?;
        return match op.change {
            MemberChange::Left => Ok(None),
            _ => Err(StorageError::NotFound),
        };
    }
    let row = sqlx::query(statements::MEMBER_STANDING)
        .bind(room)
        .bind(op.by.unwrap_or(op.user).get())
        .bind(user)
        .fetch_one(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let standing = member_standing_from(&row)?;
    let effect = match roles::judge(&op.request(), &standing) {
        Ok(Some(effect)) => effect,
        outcome => {
            tx.rollback().await.map_err(D::map_err)?;
            return outcome.map(|_| None);
        }
    };
    // Each effect is one statement on `(room, user)`; a ban and a handover
    // run one more first.
    let by = op.by.unwrap_or(op.user).get();
    let run = |sql: &'static str| sqlx::query(sql).bind(room).bind(user);
    let before = match effect {
        Effect::Ban => Some(run(statements::LEAVE_ROOM)),
        // The old owner stays as an admin.
        Effect::Transfer => Some(
            sqlx::query(statements::SET_ROLE)
                .bind(room)
                .bind(by)
                .bind(Role::Admin.as_str()),
        ),
        _ => None,
    };
    if let Some(before) = before {
        before.execute(&mut *tx).await.map_err(D::map_err)?;
    }
    let write = match effect {
        Effect::Join => run(statements::JOIN_ROOM),
        Effect::Remove => run(statements::LEAVE_ROOM),
        Effect::Invite => run(statements::INVITE),
        Effect::Ban => run(statements::UPSERT_BAN)
            .bind(by)
            .bind(op.reason.as_deref())
            .bind(op.until.map(|t| t.unix_micros()))
            .bind(op.created_at.unix_micros()),
        Effect::Unban => run(statements::DELETE_BAN),
        Effect::Mute(Some(until)) => run(statements::UPSERT_MUTE).bind(until),
        Effect::Mute(None) => run(statements::DELETE_MUTE),
        Effect::SetRole(role) => run(statements::SET_ROLE).bind(role.as_str()),
        Effect::Transfer => run(statements::SET_OWNER),
    };
    write.execute(&mut *tx).await.map_err(D::map_err)?;
    let numbered = sqlx::query(statements::NEXT_EVENT_SEQ)
        .bind(room)
        .fetch_one(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let seq = numbered.int("last_seq")?;
    let detail = member_detail(op);
    sqlx::query(statements::INSERT_MEMBER_EVENT)
        .bind(room)
        .bind(seq)
        .bind(user)
        .bind(op.change.as_str())
        .bind(op.created_at.unix_micros())
        .bind(numbered.int("msg_count")?)
        .bind(detail.as_str())
        .execute(&mut *tx)
        .await
        .map_err(D::map_err)?;
    tx.commit().await.map_err(D::map_err)?;
    Ok(Some(op.event(seq)))
}

/// Changes a room's settings and appends a `room_updated` event with what
/// changed, in one transaction on `conn`: the room locked, then the
/// caller's standing read and judged (`roles::judge_settings`), then the
/// row rewritten. `None` if nothing changes.
pub(crate) async fn change_room<D: Dialect>(
    conn: &mut <D::Db as Database>::Connection,
    change: &RoomChange,
) -> Result<Option<StoredRoomUpdate>, StorageError>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    <D::Db as Database>::Row: Columns,
    for<'q> i64: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
{
    let room = change.room.get();
    let mut tx = conn
        .begin_with(AssertSqlSafe(D::BEGIN))
        .await
        .map_err(D::map_err)?;
    let locked = sqlx::query(D::LOCK_ROOM)
        .bind(room)
        .fetch_optional(&mut *tx)
        .await
        .map_err(D::map_err)?;
    if locked.is_none() {
        tx.rollback().await.map_err(D::map_err)?;
        return Err(StorageError::NotFound);
    }
    let record = sqlx::query(statements::ROOM_BY_ID)
        .bind(room)
        .fetch_one(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let record = room_from(&record)?;
    let standing = sqlx::query(statements::MEMBER_STANDING)
        .bind(room)
        .bind(change.by.get())
        .bind(change.by.get())
        .fetch_one(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let standing = member_standing_from(&standing)?;
    let judged = roles::judge_settings(record.kind, standing.actor);
    let applied = record
        .profile
        .apply(&record.name, record.kind, &change.settings);
    let (Ok(()), Some((name, kind, profile, changed))) = (&judged, applied) else {
        tx.rollback().await.map_err(D::map_err)?;
        return judged.map(|()| None);
    };
    sqlx::query(statements::UPDATE_ROOM)
        .bind(room)
        .bind(name.as_str())
        .bind(kind.as_str())
        .bind(profile.topic.as_deref())
        .bind(profile.description.as_deref())
        .bind(profile.avatar_url.as_deref())
        .bind(i64::from(profile.announcement))
        .bind(i64::from(profile.slow_mode))
        .execute(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let numbered = sqlx::query(statements::NEXT_EVENT_SEQ)
        .bind(room)
        .fetch_one(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let seq = numbered.int("last_seq")?;
    let body = settings_text(&changed);
    sqlx::query(statements::INSERT_ROOM_EVENT)
        .bind(room)
        .bind(seq)
        .bind(change.by.get())
        .bind(body.as_str())
        .bind(change.created_at.unix_micros())
        .bind(numbered.int("msg_count")?)
        .execute(&mut *tx)
        .await
        .map_err(D::map_err)?;
    tx.commit().await.map_err(D::map_err)?;
    Ok(Some(StoredRoomUpdate {
        room: change.room,
        seq,
        user: change.by,
        created_at: change.created_at,
        settings: changed,
    }))
}
