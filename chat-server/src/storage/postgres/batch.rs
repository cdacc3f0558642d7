//! The Postgres side of group commit: a batch of appends in one statement,
//! on a connection the committer keeps to itself.
//!
//! The statement is its own transaction (autocommit): one round trip stores
//! and commits the batch, where `BEGIN`, a lock, the insert and `COMMIT`
//! took four, and a pooled connection two more (sqlx pings a connection
//! when it is taken from the pool and again when it goes back). On a busy
//! machine each round trip is a wake-up of the database's process, and the
//! latency of every message is a sum of them.
//!
//! The statement first locks the batch's rooms in id order (the
//! `MATERIALIZED` CTE `locked`; a room deleted meanwhile is simply not
//! locked), so two instances committing batches over the same rooms queue
//! instead of deadlocking: the `UPDATE` of `bumped` only touches rows
//! `locked` already holds. Then it keeps the messages whose sender is a
//! member (`members`), raises each room's `last_seq` by its number of
//! messages, numbers the messages of a room in arrival order above the old
//! `last_seq`, inserts them, advances the senders' read marks, and returns
//! a row per message: the stored one, or why it was refused. At read
//! committed, an `UPDATE` of a row that another transaction changed after
//! this statement's snapshot works on the newest committed version once it
//! holds the lock, so `last_seq` is never read stale. Holding the room
//! locks to commit keeps the guarantees of a single append (see the module
//! doc of `postgres.rs`): seqs without gap or duplicate, committed in seq
//! order.
//!
//! Membership is read from the statement's snapshot, taken before it waits
//! for the room locks, so it is only trusted for a room whose timeline has
//! not moved since: `stable` compares each room's `last_seq` as locked
//! (`FOR UPDATE` returns the newest committed version) with the snapshot's.
//! Every membership change is a timeline event and moves it. A room that
//! moved (another instance committed to it while this batch waited) stores
//! nothing here: its messages answer `Retry`, and group commit sends them
//! again in a new statement, with a new snapshot. So a send racing a leave
//! on another instance is stored before it or refused. Locking the member
//! rows instead (`FOR SHARE`) writes every sender's row twice per batch: W5
//! saturated at 112,437 deliveries/s with it against 378,504 without
//! (2026-12-06). On one instance nothing else moves a room's timeline, and
//! nothing is retried.
//!
//! A message's references go in the same statement: a reply's target
//! row is joined for its seq, sender and snippet (the target is in the
//! message's room, so a deletion of it moves the room's timeline and the
//! batch sees it or retries), each thread root's count rises by its
//! replies in the batch (`threads`), and the mentions arrive as pairs of
//! the message's place and the user (`mentioned`), the attachments as
//! pairs of the place and the upload, whose row is linked to the message
//! if it is still its sender's to send (`linked`).
//!
//! Changes to messages judged before they were queued (`change.rs`: an
//! edit, a reaction, a pin) go in the batch's statement, at their places
//! among the messages (`changes`; messages and changes share one order,
//! `ord`), in a statement of its own made of the same parts
//! (`APPEND_BATCH_WITH_CHANGES`): each takes the seq of its place (`items`
//! numbers both), writes what `change.rs`'s statement of its kind writes
//! (`events`, `changed`, `reacted`, `unreacted`) and answers with the
//! message's reactions as they stand after it, and with what its maker
//! sees of it (their own reactions, the read marks), so that the service
//! reads nothing after the change. A room counts as `stable` only if, besides not
//! having moved, its events other than messages are still as many as
//! each change of it was judged with; a room where they are not stores
//! nothing, and group commit takes its entries again one by one, the
//! change judged again. A batch holds one change per room and none to a
//! message that another row of the batch updates (a thread root): one
//! statement updates a row once, and its parts see one snapshot.
//!
//! Repeats within the batch never reach it (group commit answers them). A
//! pair `(sender, client_id)` stored before fails the statement on its
//! unique index, the statement rolls back, and group commit appends the
//! batch's messages one by one, where the single append answers the repeat
//! with its original: the same answers as SQLite's lookup-first batch. A
//! lookup inside the statement (a join of the input with `messages`) was
//! tried and measured: prepared once, PostgreSQL settled on a generic plan
//! made while `messages` was small, a scan that grew with the table (W1
//! p50 1.8 → 8 ms in 20 s), and planning it for each batch instead still
//! left W1's p50 at 3.8 ms. Retries are rare; every batch would pay for
//! the lookup.

use async_trait::async_trait;
use chat_core::MessageId;
use sqlx::Connection as _;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use tokio::sync::{Mutex, MutexGuard};

use super::{ACQUIRE_TIMEOUT, PgDialect, map_err};
use crate::storage::group_commit::{Applied, BatchAppend, Op, Placed, Stored};
use crate::storage::sql::append::append_one;
use crate::storage::sql::change::{apply, changed, reaction_key};
use crate::storage::sql::rows::{
    Columns, attachments_text, member_state, mentions_text, message_from, room_kind, send_refused,
    update_text,
};
use crate::storage::{
    Appended, ChangeOp, Changed, MemberState, NewMessage, ReactionCount, Seen, StorageError,
};

/// The batch's rooms, locked in id order (see the module doc).
macro_rules! locked {
    () => {
        "WITH locked AS MATERIALIZED (
    SELECT id, last_seq, msg_count, msg_deleted FROM rooms WHERE id = ANY($6)
    ORDER BY id FOR UPDATE
"
    };
}

/// The messages (`input`, each at its place `ord`), and those whose
/// sender is a member of a `stable` room and may send (`accepted`): the
/// rule of sending (`roles::send_refusal`) in SQL, on the snapshot, which
/// holds for a stable room (every change to a membership, a mute or the
/// settings is an event that moves `last_seq`). Slow mode counts the
/// sender's earlier messages in the batch too (`prev_at`, a window over
/// the input rather than a lookup per message).
macro_rules! accepted {
    () => {
        "), input AS (
    SELECT t.*, max(t.created_at) OVER (PARTITION BY t.room_id, t.sender_id ORDER BY t.ord
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_at
    FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int8[],
            $7::int8[], $8::int8[], $9::text[], $12::int8[], $13::text[])
        AS t(room_id, sender_id, body, client_id, created_at,
            reply_to, thread_root, mentions, ord, attachments)
), members AS MATERIALIZED (
    SELECT rm.room_id, rm.user_id, rm.last_sent_at, r.announcement, r.slow_mode,
        r.kind <> 'direct' AND rm.user_id <> r.owner_id AND rm.role = 'member' AS gated,
        r.direct_lo IS NOT NULL AND EXISTS (SELECT 1 FROM user_blocks ub
            WHERE ub.blocker_id = CASE WHEN r.direct_lo = rm.user_id THEN r.direct_hi
                                       ELSE r.direct_lo END
              AND ub.blocked_id = rm.user_id) AS blocked
    FROM room_members rm JOIN stable st ON st.id = rm.room_id JOIN rooms r ON r.id = rm.room_id
    WHERE (rm.room_id, rm.user_id) IN (SELECT room_id, sender_id FROM input)
      AND rm.state = 'member'
), accepted AS (
    SELECT i.* FROM input i
    JOIN members mb ON mb.room_id = i.room_id AND mb.user_id = i.sender_id
    WHERE NOT EXISTS (SELECT 1 FROM room_mutes mu
        WHERE mu.room_id = i.room_id AND mu.user_id = i.sender_id AND mu.until > i.created_at)
      AND NOT mb.blocked
      AND NOT (mb.gated AND mb.announcement <> 0)
      AND NOT (mb.gated AND mb.slow_mode > 0 AND (
          COALESCE(mb.last_sent_at + mb.slow_mode * 1000000 > i.created_at, false)
          OR i.prev_at IS NOT NULL))
"
    };
}

/// What the messages write, from `numbered` (the accepted ones with their
/// seq, `msg_no` and the room's deleted count).
macro_rules! writes {
    () => {
        "), inserted AS (
    INSERT INTO messages (room_id, seq, sender_id, body, client_id, created_at, msg_no,
        reply_to, reply_seq, reply_sender_id, reply_snippet, thread_root, mentions, attachments)
    SELECT n.room_id, n.seq, n.sender_id, n.body, n.client_id, n.created_at, n.msg_no,
        n.reply_to, t.seq, t.sender_id,
        CASE WHEN t.deleted_at IS NULL THEN substr(t.body, 1, 100) END, n.thread_root, n.mentions,
        n.attachments
    FROM numbered n LEFT JOIN messages t ON t.id = n.reply_to ORDER BY n.ord
    RETURNING id, room_id, seq, reply_seq, reply_sender_id, reply_snippet
), linked AS (
    UPDATE attachments a SET room_id = n.room_id, message_id = ins.id
    FROM unnest($14::int8[], $15::int8[]) AS ai(ord, attachment_id)
    JOIN numbered n ON n.ord = ai.ord
    JOIN inserted ins ON ins.room_id = n.room_id AND ins.seq = n.seq
    WHERE a.id = ai.attachment_id AND a.owner_id = n.sender_id
      AND a.message_id IS NULL AND a.doomed_at IS NULL
), threads AS (
    UPDATE messages tr SET reply_count = tr.reply_count + c.n, last_reply_at = c.at
    FROM (SELECT thread_root, count(*) AS n, max(created_at) AS at FROM numbered
          WHERE thread_root IS NOT NULL GROUP BY thread_root) c
    WHERE tr.id = c.thread_root
), mentioned AS (
    INSERT INTO mentions (user_id, room_id, seq)
    SELECT mi.user_id, n.room_id, n.seq
    FROM unnest($10::int8[], $11::int8[]) AS mi(ord, user_id) JOIN numbered n ON n.ord = mi.ord
    ON CONFLICT DO NOTHING
), marks AS (
    UPDATE room_members rm SET read_seq = s.seq, read_no = s.msg_no - s.deleted,
        last_sent_at = s.at
    FROM (SELECT room_id, sender_id, max(seq) AS seq, max(msg_no) AS msg_no,
              max(deleted) AS deleted, max(created_at) AS at
          FROM numbered GROUP BY room_id, sender_id) s
    WHERE rm.room_id = s.room_id AND rm.user_id = s.sender_id
      AND rm.state = 'member' AND rm.read_seq < s.seq
"
    };
}

/// A row per message: stored, or why not (the change columns empty).
macro_rules! message_rows {
    () => {
        "SELECT false AS is_change, i.ord, m.id, i.room_id, n.seq, i.sender_id,
       u.display_name AS sender_name, i.body, i.created_at, i.client_id,
       NULL::int8 AS edited_at, 0::int8 AS version, NULL::int8 AS deleted_at,
       NULL::int8 AS pinned_at, i.reply_to, m.reply_seq, m.reply_sender_id, m.reply_snippet,
       i.thread_root, 0::int8 AS reply_count, NULL::int8 AS last_reply_at, i.mentions,
       i.attachments,
       l.id AS locked, st.id AS stable, r.kind, rm.state,
       CASE WHEN r.owner_id = i.sender_id THEN 'owner' ELSE COALESCE(rm.role, 'member') END
           AS role, r.announcement, r.slow_mode,
       GREATEST(rm.last_sent_at, i.prev_at) AS last_sent_at,
       CASE WHEN n.seq IS NULL THEN (SELECT mu.until FROM room_mutes mu
           WHERE mu.room_id = i.room_id AND mu.user_id = i.sender_id) END AS muted_until,
       CAST(CASE WHEN r.direct_lo IS NOT NULL AND EXISTS (SELECT 1 FROM user_blocks ub
           WHERE ub.blocker_id = CASE WHEN r.direct_lo = i.sender_id THEN r.direct_hi
                                      ELSE r.direct_lo END
             AND ub.blocked_id = i.sender_id) THEN 1 ELSE 0 END AS BIGINT) AS blocked,
       CASE WHEN n.seq IS NULL AND i.client_id IS NOT NULL THEN EXISTS (SELECT 1 FROM messages o
           WHERE o.sender_id = i.sender_id AND o.client_id = i.client_id) END AS has_original,
       NULL::int8 AS event_seq, NULL::text[] AS reaction_keys, NULL::int8[] AS reaction_ns,
       NULL::bool[] AS reaction_mine, NULL::int8 AS own_mark, NULL::int8 AS others_mark
FROM input i
LEFT JOIN numbered n ON n.ord = i.ord
LEFT JOIN inserted m ON m.room_id = n.room_id AND m.seq = n.seq
LEFT JOIN users u ON u.id = i.sender_id
LEFT JOIN locked l ON l.id = i.room_id
LEFT JOIN stable st ON st.id = i.room_id
LEFT JOIN rooms r ON r.id = i.room_id
LEFT JOIN room_members rm ON rm.room_id = i.room_id AND rm.user_id = i.sender_id
"
    };
}

/// A batch of messages alone.
const APPEND_BATCH: &str = concat!(
    locked!(),
    "), stable AS MATERIALIZED (
    SELECT l.id FROM locked l JOIN rooms s ON s.id = l.id WHERE s.last_seq = l.last_seq
",
    accepted!(),
    "), counts AS (
    SELECT room_id, count(*) AS n, max(created_at) AS at FROM accepted GROUP BY room_id
), bumped AS (
    UPDATE rooms r SET last_seq = r.last_seq + c.n, msg_count = r.msg_count + c.n,
        last_message_seq = r.last_seq + c.n, last_message_at = c.at
    FROM counts c JOIN locked l ON l.id = c.room_id WHERE r.id = c.room_id
    RETURNING r.id, r.last_seq - c.n AS base, r.msg_count - c.n AS base_no, r.msg_deleted AS deleted
), numbered AS (
    SELECT a.*, b.deleted,
        b.base + row_number() OVER (PARTITION BY a.room_id ORDER BY a.ord) AS seq,
        b.base_no + row_number() OVER (PARTITION BY a.room_id ORDER BY a.ord) AS msg_no
    FROM accepted a JOIN bumped b ON b.id = a.room_id
",
    writes!(),
    ")\n",
    message_rows!(),
    "ORDER BY ord"
);

/// A batch of messages and changes: the messages' statement with the
/// changes numbered among them (`items`) and written after them. Apart
/// from the plain one, so that a batch of messages alone does not pay
/// for the parts of changes (a plan twice the size: 0.25 -> 0.45 ms a
/// batch in W1).
const APPEND_BATCH_WITH_CHANGES: &str = concat!(
    locked!(),
    "), changes AS (
    SELECT * FROM unnest($16::int8[], $17::int8[], $18::int8[], $19::int8[], $20::text[],
            $21::text[], $22::text[], $23::int8[], $24::int8[])
        AS c(ord, room_id, message_id, user_id, kind, key, body, events, created_at)
), stable AS MATERIALIZED (
    SELECT l.id FROM locked l JOIN rooms s ON s.id = l.id WHERE s.last_seq = l.last_seq
      AND NOT EXISTS (SELECT 1 FROM changes c
                      WHERE c.room_id = l.id AND c.events <> l.last_seq - l.msg_count)
",
    accepted!(),
    "), applied AS (
    SELECT c.* FROM changes c JOIN stable st ON st.id = c.room_id
), items AS MATERIALIZED (
    SELECT it.room_id, it.ord, it.is_message, it.created_at,
        l.last_seq + row_number() OVER w AS seq,
        l.msg_count + sum(it.is_message) OVER w AS msg_no
    FROM (SELECT room_id, ord, 1 AS is_message, created_at FROM accepted
          UNION ALL SELECT room_id, ord, 0, created_at FROM applied) it
    JOIN locked l ON l.id = it.room_id
    WINDOW w AS (PARTITION BY it.room_id ORDER BY it.ord)
), bumped AS (
    UPDATE rooms r SET last_seq = r.last_seq + c.n, msg_count = r.msg_count + c.messages,
        last_message_seq = COALESCE(c.last_message_seq, r.last_message_seq),
        last_message_at = COALESCE(c.at, r.last_message_at)
    FROM (SELECT room_id, count(*) AS n, sum(is_message) AS messages,
              max(seq) FILTER (WHERE is_message = 1) AS last_message_seq,
              max(created_at) FILTER (WHERE is_message = 1) AS at
          FROM items GROUP BY room_id) c
    WHERE r.id = c.room_id
), numbered AS (
    SELECT a.*, l.msg_deleted AS deleted, it.seq, it.msg_no
    FROM accepted a JOIN items it ON it.room_id = a.room_id AND it.ord = a.ord
    JOIN locked l ON l.id = a.room_id
",
    writes!(),
    "), cnumbered AS (
    SELECT c.*, it.seq, it.msg_no FROM applied c
    JOIN items it ON it.room_id = c.room_id AND it.ord = c.ord
), events AS (
    INSERT INTO messages (room_id, seq, sender_id, body, kind, created_at, msg_no, target_id)
    SELECT room_id, seq, user_id, key, kind, created_at, msg_no, message_id FROM cnumbered
), changed AS (
    UPDATE messages m SET version = m.version + 1,
        body = CASE WHEN c.kind = 'edited' THEN c.body ELSE m.body END,
        edited_at = CASE WHEN c.kind = 'edited' THEN c.created_at ELSE m.edited_at END,
        pinned_at = CASE c.kind WHEN 'pinned' THEN c.created_at
                                WHEN 'unpinned' THEN NULL ELSE m.pinned_at END
    FROM cnumbered c WHERE m.id = c.message_id
    RETURNING c.ord AS change_ord, c.seq AS event_seq, m.*
), reacted AS (
    INSERT INTO reactions (message_id, user_id, key, seq, created_at)
    SELECT message_id, user_id, key, seq, created_at FROM cnumbered WHERE kind = 'reacted'
), unreacted AS (
    DELETE FROM reactions x USING cnumbered c
    WHERE c.kind = 'unreacted' AND x.message_id = c.message_id
      AND x.user_id = c.user_id AND x.key = c.key
)
",
    message_rows!(),
    "UNION ALL
SELECT true, c.ord, ch.id, ch.room_id, ch.seq, ch.sender_id, u.display_name, ch.body,
       ch.created_at, ch.client_id, ch.edited_at, ch.version, ch.deleted_at, ch.pinned_at,
       ch.reply_to, ch.reply_seq, ch.reply_sender_id, ch.reply_snippet, ch.thread_root,
       ch.reply_count, ch.last_reply_at, ch.mentions, ch.attachments,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, ch.event_seq,
       rc.reaction_keys, rc.reaction_ns,
       rc.reaction_mine,
       (SELECT o.read_seq FROM room_members o
        WHERE o.room_id = c.room_id AND o.user_id = c.user_id AND o.state = 'member'),
       (SELECT max(o.read_seq) FROM room_members o
        WHERE o.room_id = c.room_id AND o.user_id <> c.user_id AND o.state = 'member')
FROM changes c
LEFT JOIN changed ch ON ch.change_ord = c.ord
LEFT JOIN users u ON u.id = ch.sender_id
CROSS JOIN LATERAL (
    SELECT array_agg(k.key ORDER BY k.first, k.key) AS reaction_keys,
        array_agg(k.n ORDER BY k.first, k.key) AS reaction_ns,
        array_agg(k.mine ORDER BY k.first, k.key) AS reaction_mine
    FROM (SELECT x.key, count(*) AS n, min(x.seq) AS first,
              bool_or(x.user_id = c.user_id) AS mine FROM (
            SELECT r.key, r.seq, r.user_id FROM reactions r WHERE r.message_id = c.message_id
              AND NOT (c.kind = 'unreacted' AND r.user_id = c.user_id AND r.key = c.key)
            UNION ALL SELECT c.key, ch.event_seq, c.user_id WHERE c.kind = 'reacted'
        ) x GROUP BY x.key) k
) rc
ORDER BY ord"
);

/// Batches and ops the committer runs at once on PostgreSQL, each on
/// rooms the others do not touch and on a connection of its own. One was
/// the bound of W4 and W5 (the server waiting on one round trip at a
/// time, its CPU idle) and of W1C (a change is several round trips, and
/// every message waited behind it).
const LANES: usize = 4;

/// What the committer holds: how to connect, and its connections, not the
/// storage, so that the storage's handle to the committer is the only thing
/// keeping it alive.
#[derive(Debug)]
pub(super) struct PgAppender {
    connect: PgConnectOptions,
    /// One per lane, each opened when first used and again after it
    /// broke. The committer runs at most [`LANES`] calls at once, so a
    /// free one is always found.
    conns: Vec<Mutex<Option<Lane>>>,
}

/// A lane's connection, and when it last served.
#[derive(Debug)]
struct Lane {
    conn: PgConnection,
    used: std::time::Instant,
}

/// A connection idle this long is pinged before it serves: the database
/// may have restarted meanwhile, and an append on a dead connection would
/// fail (sqlx's pool does the same for reads, on every acquire). Busy
/// lanes serve again within milliseconds and are not pinged.
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

impl PgAppender {
    pub(super) fn new(connect: PgConnectOptions) -> Self {
        Self {
            // Every statement of the committer keeps the plan it was
            // prepared with. Left to choose, PostgreSQL compared a batch
            // statement's generic plan with the plans it made for each
            // batch's own arrays, judged the generic one dearer, and went
            // on planning each batch afresh: about 2 ms of planning for
            // 0.4 ms of execution (W1C on PostgreSQL: p50 2 -> 6.5 ms,
            // 2026-12-07). The committer's statements find rows by key;
            // one plan serves.
            connect: connect.options([("plan_cache_mode", "force_generic_plan")]),
            conns: (0..LANES).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// A free connection, opened first if there is none (within
    /// [`ACQUIRE_TIMEOUT`], like a pooled connection).
    async fn connection(&self) -> Result<MutexGuard<'_, Option<Lane>>, StorageError> {
        let free = self.conns.iter().find_map(|slot| slot.try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => self.conns.first().ok_or_else(no_connection)?.lock().await,
        };
        if let Some(lane) = slot.as_mut()
            && lane.used.elapsed() > PING_AFTER_IDLE
            && lane.conn.ping().await.is_err()
        {
            *slot = None;
        }
        match slot.as_mut() {
            Some(lane) => lane.used = std::time::Instant::now(),
            None => {
                *slot = Some(Lane {
                    conn: self.open().await?,
                    used: std::time::Instant::now(),
                });
            }
        }
        Ok(slot)
    }

    async fn open(&self) -> Result<PgConnection, StorageError> {
        match tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&self.connect)).await
        {
            Ok(opened) => opened.map_err(map_err),
            Err(_) => Err(StorageError::Unavailable(
                "timed out connecting to PostgreSQL for appends".into(),
            )),
        }
    }
}

/// After a failed call: the connection is kept only if it still answers,
/// so one the database dropped is replaced by the next call.
async fn keep_if_alive(slot: &mut Option<Lane>) {
    if let Some(lane) = slot
        && lane.conn.ping().await.is_err()
    {
        *slot = None;
    }
}

fn no_connection() -> StorageError {
    StorageError::Unavailable("no connection for appends".into())
}

#[async_trait]
impl BatchAppend for PgAppender {
    async fn warm_up(&self) {
        // The first messages after a start would otherwise wait for the
        // connection (W1's p99 was that wait), and the first change beside
        // a batch for another, with its room's messages behind it. A
        // database that is down now is tried again by the first append.
        let opened = self.conns.iter().map(|slot| async move {
            let mut slot = slot.lock().await;
            if slot.is_none() {
                *slot = self.open().await.ok().map(|conn| Lane {
                    conn,
                    used: std::time::Instant::now(),
                });
            }
        });
        futures_util::future::join_all(opened).await;
    }

    fn lanes(&self) -> usize {
        LANES
    }

    async fn append_one(&self, message: NewMessage) -> Result<Appended, StorageError> {
        let mut slot = self.connection().await?;
        let conn = &mut slot.as_mut().ok_or_else(no_connection)?.conn;
        let result = append_one::<PgDialect>(conn, &message).await;
        if result.is_err() {
            keep_if_alive(&mut slot).await;
        }
        result
    }

    async fn apply(&self, op: &Op) -> Result<Applied, StorageError> {
        let mut slot = self.connection().await?;
        let conn = &mut slot.as_mut().ok_or_else(no_connection)?.conn;
        let result = match op {
            Op::Message(change, judged) => {
                super::change::change_message(conn, change, judged.as_deref())
                    .await
                    .map(|changed| Applied::Message(Box::new(changed)))
            }
            Op::Member(_) | Op::Room(_) => apply::<PgDialect>(conn, op).await,
        };
        if result.is_err() {
            keep_if_alive(&mut slot).await;
        }
        result
    }

    async fn store_batch(&self, fresh: &[&NewMessage]) -> Result<Vec<Stored>, StorageError> {
        self.store_batch_with(fresh, &[])
            .await
            .map(|(stored, _)| stored)
    }

    fn batches_changes(&self) -> bool {
        true
    }

    async fn store_batch_with(
        &self,
        fresh: &[&NewMessage],
        changes: &[Placed<'_>],
    ) -> Result<(Vec<Stored>, Vec<Option<Changed>>), StorageError> {
        let mut slot = self.connection().await?;
        let conn = &mut slot.as_mut().ok_or_else(no_connection)?.conn;
        let result = store_batch(conn, fresh, changes).await;
        if result.is_err() {
            keep_if_alive(&mut slot).await;
        }
        result
    }
}

/// One batch in one statement, its own transaction: the messages, and
/// the changes judged before they were queued, each at its place among
/// them. A change comes back `None` if it was not written: its room
/// moved or had another event than a message since it was judged (then
/// none of that room's messages are stored either: they answer `Retry`).
pub(super) async fn store_batch(
    conn: &mut PgConnection,
    batch: &[&NewMessage],
    changes: &[Placed<'_>],
) -> Result<(Vec<Stored>, Vec<Option<Changed>>), StorageError> {
    // Messages and changes share one order: a message's place counts the
    // changes before it, from 1 (as the mentions' places do).
    let mut message_ords = Vec::with_capacity(batch.len());
    let mut change_ords = Vec::with_capacity(changes.len());
    let mut next_change = changes.iter().peekable();
    let mut ord = 0_i64;
    for k in 0..=batch.len() {
        while next_change.next_if(|c| c.before <= k).is_some() {
            ord += 1;
            change_ords.push(ord);
        }
        if k < batch.len() {
            ord += 1;
            message_ords.push(ord);
        }
    }
    let mut rooms: Vec<i64> = batch
        .iter()
        .map(|m| m.room.get())
        .chain(changes.iter().map(|c| c.judged.target.room.get()))
        .collect();
    rooms.sort_unstable();
    rooms.dedup();
    let column = |f: fn(&NewMessage) -> i64| batch.iter().map(|m| f(m)).collect::<Vec<i64>>();
    let optional = |f: fn(&NewMessage) -> Option<MessageId>| {
        batch
            .iter()
            .map(|m| f(m).map(MessageId::get))
            .collect::<Vec<Option<i64>>>()
    };
    // The mentions as pairs (the message's place, and the user).
    let (mut mention_ords, mut mention_users) = (Vec::new(), Vec::new());
    for (ord, m) in message_ords.iter().zip(batch) {
        for user in &m.mentions {
            mention_ords.push(*ord);
            mention_users.push(user.get());
        }
    }
    // The attachments as pairs too (the message's place, and the upload).
    let (mut attachment_ords, mut attachment_ids) = (Vec::new(), Vec::new());
    for (ord, m) in message_ords.iter().zip(batch) {
        for attachment in &m.attachments {
            attachment_ords.push(*ord);
            attachment_ids.push(attachment.id.get());
        }
    }
    let change = |f: fn(&Placed<'_>) -> i64| changes.iter().map(f).collect::<Vec<i64>>();

    let statement = if changes.is_empty() {
        APPEND_BATCH
    } else {
        APPEND_BATCH_WITH_CHANGES
    };
    let query = sqlx::query(statement)
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
        .bind(&rooms)
        .bind(optional(|m| m.reply_to))
        .bind(optional(|m| m.thread_root))
        .bind(
            batch
                .iter()
                .map(|m| mentions_text(&m.mentions))
                .collect::<Vec<_>>(),
        )
        .bind(&mention_ords)
        .bind(&mention_users)
        .bind(&message_ords)
        .bind(
            batch
                .iter()
                .map(|m| attachments_text(&m.attachments))
                .collect::<Vec<_>>(),
        )
        .bind(&attachment_ords)
        .bind(&attachment_ids);
    let query = if changes.is_empty() {
        query
    } else {
        query
            .bind(&change_ords)
            .bind(change(|c| c.judged.target.room.get()))
            .bind(change(|c| c.change.message.get()))
            .bind(change(|c| c.change.user.get()))
            .bind(
                changes
                    .iter()
                    .map(|c| update_text(&c.judged.kind))
                    .collect::<Vec<_>>(),
            )
            .bind(
                changes
                    .iter()
                    .map(|c| reaction_key(&c.change.op))
                    .collect::<Vec<_>>(),
            )
            .bind(
                changes
                    .iter()
                    .map(|c| match &c.change.op {
                        ChangeOp::Edit { body } => Some(body.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            )
            .bind(change(|c| c.judged.events))
            .bind(change(|c| c.change.created_at.unix_micros()))
    };
    let rows = query.fetch_all(&mut *conn).await.map_err(map_err)?;

    // A row per message and per change, in their order.
    let mut stored = Vec::with_capacity(batch.len());
    let mut written = Vec::with_capacity(changes.len());
    let mut placed = changes.iter();
    for row in &rows {
        if row.try_get::<bool, _>("is_change").map_err(map_err)? {
            let placed = placed
                .next()
                .ok_or_else(|| miscounted(&rows, batch, changes))?;
            written.push(change_from(row, placed)?);
            continue;
        }
        let id: Option<i64> = row.opt_int("id")?;
        let outcome = if id.is_some() {
            Stored::New(message_from(row)?)
        } else if row.opt_int("locked")?.is_none() {
            Stored::NoRoom
        } else if row.opt_int("stable")?.is_none() {
            Stored::Retry
        } else if row.opt_text("state")?.as_deref() == Some("member") {
            // Refused by the rule of sending. A repeat of a stored message
            // gets its original from the single append instead, as does a
            // refusal the rule, judged again here, does not explain.
            let has_original: Option<bool> = row.try_get("has_original").map_err(map_err)?;
            match send_refused(row, row.int("created_at")?)? {
                Some(StorageError::Refused(why)) if has_original != Some(true) => {
                    Stored::Refused(why)
                }
                _ => Stored::Alone,
            }
        } else {
            // Read from the statement's snapshot: a member then was not one
            // when the row was locked, and has left since.
            let state = row
                .opt_text("state")?
                .as_deref()
                .map(member_state)
                .transpose()?;
            Stored::NotMember {
                kind: room_kind(&row.text("kind")?)?,
                state: state.filter(|s| *s != MemberState::Member),
            }
        };
        stored.push(outcome);
    }
    if stored.len() != batch.len() || written.len() != changes.len() {
        return Err(miscounted(&rows, batch, changes));
    }
    Ok((stored, written))
}

/// What the batch wrote of a change: the message as changed, its event's
/// seq and the message's reactions after it, and what the changer sees of
/// it (the read marks as the statement found them); `None` if not written.
fn change_from(row: &PgRow, placed: &Placed<'_>) -> Result<Option<Changed>, StorageError> {
    if row.opt_int("id")?.is_none() {
        return Ok(None);
    }
    let message = message_from(row)?;
    let seq = row.int("event_seq")?;
    let keys: Option<Vec<String>> = row.try_get("reaction_keys").map_err(map_err)?;
    let counts: Option<Vec<i64>> = row.try_get("reaction_ns").map_err(map_err)?;
    let mine: Option<Vec<bool>> = row.try_get("reaction_mine").map_err(map_err)?;
    let seen: Vec<ReactionCount> = keys
        .unwrap_or_default()
        .into_iter()
        .zip(counts.unwrap_or_default())
        .zip(mine.unwrap_or_default())
        .map(|((key, n), mine)| ReactionCount {
            key,
            count: u32::try_from(n).unwrap_or(u32::MAX),
            mine,
        })
        .collect();
    // The room hears the counts without anyone's `mine`.
    let reactions = seen
        .iter()
        .map(|r| ReactionCount {
            mine: false,
            ..r.clone()
        })
        .collect();
    let mut done = changed(
        placed.change,
        placed.judged.kind.clone(),
        seq,
        message,
        reactions,
    );
    done.seen = Some(Seen {
        reactions: seen,
        own_mark: row.opt_int("own_mark")?.unwrap_or(0),
        others_mark: row.opt_int("others_mark")?.unwrap_or(0),
    });
    Ok(Some(done))
}

fn miscounted(rows: &[PgRow], batch: &[&NewMessage], changes: &[Placed<'_>]) -> StorageError {
    StorageError::Backend(
        format!(
            "append batch answered {} rows for {} messages and {} changes",
            rows.len(),
            batch.len(),
            changes.len()
        )
        .into(),
    )
}

#[cfg(test)]
mod tests {
    use chat_core::message::SNIPPET_CHARS;

    /// The batch keeps a reply's snippet as long as the single append.
    #[test]
    fn a_replys_snippet_takes_the_wire_length() {
        let cut = format!("substr(t.body, 1, {SNIPPET_CHARS})");
        assert!(super::APPEND_BATCH.contains(&cut), "{cut}");
    }
}
