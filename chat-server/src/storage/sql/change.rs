//! A change to an earlier message (an edit, a deletion) in one transaction,
//! for any SQL dialect, and the committer's entry point for every change
//! that is not a new message ([`apply`]).
//!
//! 1. The message's room takes its next seq first (`NEXT_CHANGE_SEQ`, a
//!    write: PostgreSQL's row lock on the room; SQLite's `BEGIN IMMEDIATE`
//!    already holds the only write lock), so the caller's membership and
//!    the message are then read, in one statement (`CHANGE_STANDING`), as
//!    the last commit left them: a change racing a leave or another change
//!    to the same message is made before it or judged after it, never in
//!    between. Each statement is a round trip, and the room's messages
//!    wait behind them all (an edit: seven with `BEGIN` and `COMMIT`). So
//!    this transaction is SQLite's way, where a statement is a function
//!    call, and PostgreSQL's fallback: its committer reads, judges and
//!    writes in one statement (`postgres/change.rs`), and comes here only
//!    when other instances keep moving the room between the two.
//! 2. The rule ([`Authority`]) is evaluated on those rows ([`judge`], the
//!    same for both ways); a change that
//!    comes to nothing rolls back, seq included. Otherwise the row changes
//!    and the event takes that seq, counting as no message.
//! 3. A reaction is a row of `reactions` added or removed, the message's
//!    `version` counting it, and its event's body the key.
//! 4. A deletion erases the body (and the message's reactions, and the keys
//!    of its reaction events) and lowers the unread counts that held
//!    the message: the room counts one more deleted message
//!    (`msg_deleted`), and every member whose mark is at or above it had
//!    counted it as read (`read_no`), so theirs drops by one. Both counts
//!    stay one subtraction (`statements::UNREAD_TOTAL`).

use sqlx::{AssertSqlSafe, Connection as _, Database, Encode, Executor, IntoArguments, Type};

use super::rows::{Columns, message_from, refusal_from, update_text};
use super::{Dialect, append, rows, statements};
use crate::storage::group_commit::{Applied, Op};

use crate::storage::{
    ChangeOp, Changed, MessageChange, ReactionCount, Standing, StorageError, StoredMessage,
    StoredUpdate, UpdateKind,
};

/// Applies one op of the committer's queue in a transaction of its own.
pub(crate) async fn apply<D: Dialect>(
    conn: &mut <D::Db as Database>::Connection,
    op: &Op,
) -> Result<Applied, StorageError>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    <D::Db as Database>::Row: Columns,
    for<'q> i64: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<i64>: Encode<'q, D::Db> + Type<D::Db>,
{
    match op {
        Op::Member(op) => append::change_membership::<D>(conn, op)
            .await
            .map(Applied::Member),
        Op::Room(change) => append::change_room::<D>(conn, change)
            .await
            .map(Applied::Room),
        Op::Message(change, _) => change_message::<D>(conn, change)
            .await
            .map(|changed| Applied::Message(Box::new(changed))),
    }
}

/// Checks and applies `change` (see the module doc).
pub(crate) async fn change_message<D: Dialect>(
    conn: &mut <D::Db as Database>::Connection,
    change: &MessageChange,
) -> Result<Changed, StorageError>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    <D::Db as Database>::Row: Columns,
    for<'q> i64: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
{
    let id = change.message.get();
    let mut tx = conn
        .begin_with(AssertSqlSafe(D::BEGIN))
        .await
        .map_err(D::map_err)?;
    let Some(numbered) = sqlx::query(statements::NEXT_CHANGE_SEQ)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(D::map_err)?
    else {
        tx.rollback().await.map_err(D::map_err)?;
        return Err(StorageError::NotFound);
    };
    let (room, seq) = (numbered.int("id")?, numbered.int("last_seq")?);
    let key = reaction_key(&change.op);
    let row = sqlx::query(statements::CHANGE_STANDING)
        .bind(id)
        .bind(change.user.get())
        .bind(key)
        .fetch_one(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let (target, standing, kind) = match judge(&row, change) {
        Ok(Judged::Change {
            target,
            standing,
            kind,
            ..
        }) => (target, standing, kind),
        Ok(Judged::Nothing(message)) => {
            // Nothing changes: the seq taken goes back with the rest.
            tx.rollback().await.map_err(D::map_err)?;
            return Ok(Changed {
                message,
                event: None,
                seen: None,
            });
        }
        Err(refused) => {
            tx.rollback().await.map_err(D::map_err)?;
            return Err(refused);
        }
    };

    let at = change.created_at.unix_micros();
    match &change.op {
        ChangeOp::Edit { body } => {
            sqlx::query(statements::EDIT_MESSAGE)
                .bind(id)
                .bind(body.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
        }
        ChangeOp::Delete => {
            sqlx::query(statements::DELETE_MESSAGE)
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
            sqlx::query(statements::COUNT_DELETED)
                .bind(room)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
            sqlx::query(statements::UNCOUNT_READ)
                .bind(room)
                .bind(target.seq)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
            // Whatever hangs on the message goes with its body: its
            // reactions, the keys of their events, the snippets replies
            // keep of it, its mentions, its attachments (doomed: the
            // sweeper deletes their files), its place in its thread's count.
            for erase in [
                statements::DELETE_REACTIONS,
                statements::ERASE_REACTION_KEYS,
                statements::ERASE_REPLY_SNIPPETS,
            ] {
                sqlx::query(erase)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(D::map_err)?;
            }
            sqlx::query(statements::DELETE_MENTIONS)
                .bind(room)
                .bind(target.seq)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
            sqlx::query(statements::DOOM_MESSAGE_ATTACHMENTS)
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
            if let Some(root) = target.thread_root {
                sqlx::query(statements::UNCOUNT_THREAD_REPLY)
                    .bind(root.get())
                    .execute(&mut *tx)
                    .await
                    .map_err(D::map_err)?;
            }
        }
        ChangeOp::Pin { pin: true } => {
            sqlx::query(statements::PIN_MESSAGE)
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
        }
        ChangeOp::Pin { pin: false } => {
            sqlx::query(statements::UNPIN_MESSAGE)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
        }
        ChangeOp::React { key, add } => {
            let reaction = if *add {
                sqlx::query(statements::INSERT_REACTION)
            } else {
                sqlx::query(statements::DELETE_REACTION)
            }
            .bind(id)
            .bind(change.user.get())
            .bind(key.as_str());
            let reaction = if *add {
                reaction.bind(seq).bind(at)
            } else {
                reaction
            };
            reaction.execute(&mut *tx).await.map_err(D::map_err)?;
            sqlx::query(statements::COUNT_CHANGE)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(D::map_err)?;
        }
    }
    sqlx::query(statements::INSERT_UPDATE_EVENT)
        .bind(room)
        .bind(seq)
        .bind(change.user.get())
        .bind(update_text(&kind))
        .bind(at)
        .bind(numbered.int("msg_count")?)
        .bind(id)
        .bind(match &kind {
            UpdateKind::Reacted { key, .. } => key.as_str(),
            _ => "",
        })
        .execute(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let row = sqlx::query(statements::MESSAGE_BY_ID)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(D::map_err)?;
    let message = message_from(&row)?;
    let reactions = if reads_reactions(&change.op, &standing) {
        sqlx::query(statements::REACTION_COUNTS)
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(D::map_err)?
            .iter()
            .map(rows::reaction_count_from)
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    tx.commit().await.map_err(D::map_err)?;
    Ok(changed(change, kind, seq, message, reactions))
}

/// What the rule makes of a change, judged on a [`statements::CHANGE_STANDING`]
/// row.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
#[derive(Debug)]
pub(crate) enum Judged {
    /// Nothing changes (the same body again, a second deletion): the
    /// message as it stands.
    Nothing(StoredMessage),
    /// The change to make.
    Change {
        target: StoredMessage,
        standing: Standing,
        kind: UpdateKind,
        /// The room's events other than messages, as the row was read.
        events: i64,
    },
}

/// Applies the rule ([`MessageChange::decide`]) to what the row says of
/// the message, the room and the caller; `Err` for a refusal.
pub(crate) fn judge(row: &impl Columns, change: &MessageChange) -> Result<Judged, StorageError> {
    if let Some(refusal) = refusal_from(row)? {
        return Err(refusal);
    }
    let target = message_from(row)?;
    let count = |column: &str| -> Result<usize, StorageError> {
        Ok(usize::try_from(row.int(column)?).unwrap_or(usize::MAX))
    };
    let standing = Standing {
        kind: rows::room_kind(&row.text("kind")?)?,
        role: rows::role(&row.text("role")?)?,
        reacted: row.int("reacted")? != 0,
        keys: count("keys")?,
        key_present: row.int("key_present")? != 0,
        pins: count("pins")?,
    };
    Ok(match change.decide(&target, &standing)? {
        None => Judged::Nothing(target),
        Some(kind) => Judged::Change {
            target,
            standing,
            kind,
            events: row.int("room_events")?,
        },
    })
}

/// The reaction key a change reads its standing for (`""`: none).
pub(crate) fn reaction_key(op: &ChangeOp) -> &str {
    match op {
        ChangeOp::React { key, .. } => key.as_str(),
        _ => "",
    }
}

/// Whether the event must read the message's reactions: not when it is
/// gone, nor when the message had none and this is no reaction.
pub(crate) fn reads_reactions(op: &ChangeOp, standing: &Standing) -> bool {
    match op {
        ChangeOp::Delete => false,
        ChangeOp::Edit { .. } | ChangeOp::Pin { .. } => standing.keys > 0,
        ChangeOp::React { .. } => true,
    }
}

/// The answer to a change that appended its event at `seq`.
pub(crate) fn changed(
    change: &MessageChange,
    kind: UpdateKind,
    seq: i64,
    message: StoredMessage,
    reactions: Vec<ReactionCount>,
) -> Changed {
    Changed {
        event: Some(StoredUpdate {
            room: message.room,
            seq,
            user: change.user,
            kind,
            created_at: change.created_at,
            message: message.clone(),
            reactions,
        }),
        message,
        seen: None,
    }
}
