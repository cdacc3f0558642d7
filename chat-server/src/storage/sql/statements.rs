//! The SQL text every SQL backend runs: plain SQL that SQLite (3.35 or
//! later, for `RETURNING`) and PostgreSQL both run unchanged (`$N`
//! placeholders, `RETURNING`, `ON CONFLICT`, `CASE` instead of
//! `MIN(a, b)`/`LEAST`, no `FOR UPDATE`). Only the DDL differs per backend
//! (`migrations/<backend>/`), and the few statements a dialect supplies
//! itself (its locks, its batch append; see `dialect.rs`). Column lists
//! are macros so that `concat!` can splice them into constants.
//!
//! The statements named `PG_…` are PostgreSQL's locks, kept here beside the
//! statements they protect, each with the reason: row locks that PostgreSQL
//! needs where SQLite's single writer already serializes. SQLite runs the
//! plain read in their place (`SqliteDialect`).

macro_rules! user_columns {
    () => {
        "id, username, email, display_name, password_hash, created_at, is_admin, \
         deactivated_at, token_version, external_id, is_bot"
    };
}

macro_rules! room_columns {
    () => {
        "id, name, kind, creator_id, owner_id, created_at, last_seq, last_message_seq, \
         topic, description, avatar_url, announcement, slow_mode"
    };
}

/// A message row with its sender's display name; needs `messages m` joined
/// with `users u`.
macro_rules! message_columns {
    () => {
        "m.id, m.room_id, m.seq, m.sender_id, u.display_name AS sender_name, \
         m.body, m.created_at, m.client_id, m.edited_at, m.version, m.deleted_at, m.pinned_at, \
         m.reply_to, m.reply_seq, m.reply_sender_id, m.reply_snippet, m.thread_root, \
         m.reply_count, m.last_reply_at, m.mentions, m.attachments"
    };
}
#[cfg_attr(not(feature = "postgres"), allow(unused_imports))]
pub(crate) use message_columns;

/// The message a change event changed, its columns prefixed `t_`; needs
/// `messages t` (by `m.target_id`) joined with `users tu`, both `LEFT`:
/// the columns are NULL for every other kind.
macro_rules! target_columns {
    () => {
        "t.id AS t_id, t.room_id AS t_room_id, t.seq AS t_seq, t.sender_id AS t_sender_id, \
         tu.display_name AS t_sender_name, t.body AS t_body, t.created_at AS t_created_at, \
         t.client_id AS t_client_id, t.edited_at AS t_edited_at, t.version AS t_version, \
         t.deleted_at AS t_deleted_at, t.pinned_at AS t_pinned_at, t.reply_to AS t_reply_to, \
         t.reply_seq AS t_reply_seq, t.reply_sender_id AS t_reply_sender_id, \
         t.reply_snippet AS t_reply_snippet, t.thread_root AS t_thread_root, \
         t.reply_count AS t_reply_count, t.last_reply_at AS t_last_reply_at, \
         t.mentions AS t_mentions, t.attachments AS t_attachments"
    };
}

macro_rules! target_join {
    () => {
        " LEFT JOIN messages t ON t.id = m.target_id LEFT JOIN users tu ON tu.id = t.sender_id "
    };
}

// Users

pub(crate) const INSERT_USER: &str = "INSERT INTO users \
    (username, email, display_name, password_hash, created_at) \
    VALUES ($1, $2, $3, $4, $5) RETURNING id";

pub(crate) const USER_BY_ID: &str =
    concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");

pub(crate) const USER_BY_USERNAME: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE username = $1"
);

/// `$1` lowercased by the caller, as stored; '' (no email) matches nobody.
pub(crate) const USER_BY_EMAIL: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE email = $1 AND email <> ''"
);

pub(crate) const USER_BY_EXTERNAL_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE external_id = $1"
);

/// A user of the host's identity service; nothing if another instance
/// provisioned them first (the caller reads theirs).
pub(crate) const INSERT_EXTERNAL_USER: &str = "INSERT INTO users \
    (username, email, display_name, password_hash, created_at, external_id, is_bot) \
    VALUES ($1, $2, $3, '', $4, $5, $6) ON CONFLICT (external_id) DO NOTHING RETURNING id";

// The outbox (webhooks, push)

pub(crate) const OUTBOX_SINK: &str = "INSERT INTO outbox_sinks (sink, created_at) \
    VALUES ($1, $2) ON CONFLICT (sink) DO NOTHING";

pub(crate) const OUTBOX_CURSORS_NOW: &str = "INSERT INTO outbox_cursors \
    (sink, room_id, delivered_seq) SELECT $1, id, last_seq FROM rooms";

pub(crate) const OUTBOX_BACKLOG: &str = "SELECT r.id AS room_id, r.last_seq, \
    COALESCE(c.delivered_seq, 0) AS delivered_seq \
    FROM rooms r LEFT JOIN outbox_cursors c ON c.room_id = r.id AND c.sink = $1 \
    WHERE r.last_seq > COALESCE(c.delivered_seq, 0) \
    AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= $2) \
    AND (c.lease_until IS NULL OR c.lease_until <= $2) \
    ORDER BY r.id LIMIT $3";

/// Takes the lease if free, expired or ours; creates the cursor (at 0) of
/// a room born after the sink. No row back: someone else holds it.
pub(crate) const OUTBOX_CLAIM: &str = "INSERT INTO outbox_cursors \
    (sink, room_id, delivered_seq, lease_owner, lease_until) \
    SELECT $1, id, 0, $3, $4 FROM rooms WHERE id = $2 \
    ON CONFLICT (sink, room_id) DO UPDATE \
    SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until \
    WHERE outbox_cursors.lease_owner IS NULL OR outbox_cursors.lease_until <= $5 \
    OR outbox_cursors.lease_owner = excluded.lease_owner \
    RETURNING delivered_seq, attempts, next_attempt_at";

pub(crate) const OUTBOX_ADVANCE: &str = "UPDATE outbox_cursors \
    SET delivered_seq = $4, attempts = 0, next_attempt_at = NULL \
    WHERE sink = $1 AND room_id = $2 AND lease_owner = $3 AND delivered_seq < $4";

pub(crate) const OUTBOX_FAILURE: &str = "UPDATE outbox_cursors \
    SET attempts = $4, next_attempt_at = $5, lease_owner = NULL, lease_until = NULL \
    WHERE sink = $1 AND room_id = $2 AND lease_owner = $3";

pub(crate) const OUTBOX_RELEASE: &str = "UPDATE outbox_cursors \
    SET lease_owner = NULL, lease_until = NULL \
    WHERE sink = $1 AND room_id = $2 AND lease_owner = $3";

// Push devices

pub(crate) const REGISTER_DEVICE: &str = "INSERT INTO push_devices \
    (user_id, platform, token, app_id, created_at) VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (app_id, token) DO UPDATE SET user_id = excluded.user_id, \
    platform = excluded.platform, created_at = excluded.created_at RETURNING id";

/// `push_devices WHERE user_id IN (…)`: the caller appends the list and `)`.
pub(crate) const DEVICES_PREFIX: &str = "SELECT id, user_id, platform, token, app_id, created_at \
    FROM push_devices WHERE user_id IN (";

pub(crate) const DELETE_DEVICE: &str = "DELETE FROM push_devices WHERE id = $1 AND user_id = $2";

pub(crate) const DELETE_DEVICE_TOKEN: &str =
    "DELETE FROM push_devices WHERE app_id = $1 AND token = $2";

// API keys

pub(crate) const INSERT_API_KEY: &str =
    "INSERT INTO api_keys (name, key_hash, created_at) VALUES ($1, $2, $3) RETURNING id";

pub(crate) const API_KEYS: &str = "SELECT id, name, created_at, last_used_at, revoked_at \
    FROM api_keys ORDER BY id";

pub(crate) const API_KEY_BY_HASH: &str = "SELECT id, name, created_at, last_used_at, revoked_at \
    FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";

pub(crate) const REVOKE_API_KEY: &str =
    "UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL";

pub(crate) const TOUCH_API_KEY: &str = "UPDATE api_keys SET last_used_at = $2 WHERE id = $1";

pub(crate) const RENAME_EXTERNAL_USER: &str = concat!(
    "UPDATE users SET display_name = $2 WHERE external_id = $1 RETURNING ",
    user_columns!()
);

pub(crate) const USERS_AFTER: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
);

/// `users WHERE id IN (…)`: the caller appends the placeholder list and `)`.
/// One list works on both backends, where `= ANY($1)` would be Postgres only.
pub(crate) const USERS_BY_IDS_PREFIX: &str =
    concat!("SELECT ", user_columns!(), " FROM users WHERE id IN (");

/// Ids per `IN (…)` list, well below the bound-parameter limits of SQLite
/// (32,766) and PostgreSQL (65,535).
pub(crate) const IDS_PER_QUERY: usize = 500;

/// [`USERS_BY_IDS_PREFIX`] completed for `count` ids (`$1` to `$count`), in
/// id order.
pub(crate) fn users_by_ids(count: usize) -> String {
    let placeholders: Vec<String> = (1..=count).map(|i| format!("${i}")).collect();
    format!(
        "{USERS_BY_IDS_PREFIX}{}) ORDER BY id",
        placeholders.join(", ")
    )
}

// Refresh tokens

pub(crate) const INSERT_REFRESH_TOKEN: &str =
    "INSERT INTO refresh_tokens (id, user_id, family, expires_at) VALUES ($1, $2, $3, $4)";

/// Spends a live token. One statement, so that of two concurrent uses only
/// one finds `NOT spent` and gets the row back.
pub(crate) const SPEND_REFRESH_TOKEN: &str = "UPDATE refresh_tokens SET spent = TRUE \
    WHERE id = $1 AND NOT spent RETURNING user_id, family, expires_at";

pub(crate) const REFRESH_TOKEN: &str =
    "SELECT user_id, family, expires_at FROM refresh_tokens WHERE id = $1";

pub(crate) const REVOKE_REFRESH_FAMILY: &str =
    "UPDATE refresh_tokens SET spent = TRUE WHERE family = $1 AND NOT spent";

// Server secrets

pub(crate) const INSERT_SERVER_SECRET: &str =
    "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

pub(crate) const SERVER_SECRET: &str = "SELECT value FROM server_secrets WHERE name = $1";

// Rooms and members

pub(crate) const INSERT_ROOM: &str = "INSERT INTO rooms (name, kind, creator_id, owner_id, created_at) \
    VALUES ($1, $2, $3, $3, $4) RETURNING id";

/// A member row with an explicit position, for a room being created.
pub(crate) const INSERT_MEMBER: &str = "INSERT INTO room_members \
    (room_id, user_id, state, read_seq, position) VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (room_id, user_id) DO NOTHING";

pub(crate) const ROOM_BY_ID: &str =
    concat!("SELECT ", room_columns!(), " FROM rooms WHERE id = $1");

pub(crate) const ROOM_BY_NAME: &str =
    concat!("SELECT ", room_columns!(), " FROM rooms WHERE name = $1");

/// A room with one user's membership state (NULL when none).
pub(crate) const ROOM_FOR_BY_ID: &str = "SELECT r.id, r.name, r.kind, r.creator_id, r.owner_id, \
    r.created_at, r.last_seq, r.last_message_seq, r.topic, r.description, r.avatar_url, \
    r.announcement, r.slow_mode, m.state AS member_state FROM rooms r \
    LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = $2 WHERE r.id = $1";

pub(crate) const ROOM_FOR_BY_NAME: &str = "SELECT r.id, r.name, r.kind, r.creator_id, r.owner_id, \
    r.created_at, r.last_seq, r.last_message_seq, r.topic, r.description, r.avatar_url, \
    r.announcement, r.slow_mode, m.state AS member_state FROM rooms r \
    LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = $2 WHERE r.name = $1";

#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const ROOM_EXISTS: &str = "SELECT id FROM rooms WHERE id = $1";

#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const USER_EXISTS: &str = "SELECT id FROM users WHERE id = $1";

/// PostgreSQL: takes the room's row lock for the rest of the transaction, or
/// returns no row if the room is gone. `join_room` and `invite` run it
/// first. It queues them behind any append in flight (which holds the same
/// lock from its `NEXT_SEQ` until commit) and behind each other, so that a
/// joiner's mark is the `last_seq` of the last committed message, not one
/// an append is about to move past, and two arrivals never read the same
/// `MAX(position)` and share a position. On SQLite the single writer gives
/// both for free. `NO KEY UPDATE`, the strength an `UPDATE` of non-key
/// columns takes, rather than `UPDATE`: it does not block the `KEY SHARE`
/// locks that inserting members or messages takes on the room through
/// their foreign keys.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) const PG_LOCK_ROOM: &str = "SELECT id FROM rooms WHERE id = $1 FOR NO KEY UPDATE";

/// Members and messages go with it (`ON DELETE CASCADE`).
pub(crate) const DELETE_ROOM: &str = "DELETE FROM rooms WHERE id = $1";

pub(crate) const ROOM_PEOPLE: &str = "SELECT m.user_id, u.username, m.state, m.read_seq, \
    CASE WHEN m.user_id = r.owner_id THEN 'owner' ELSE m.role END AS role \
    FROM room_members m JOIN users u ON u.id = m.user_id JOIN rooms r ON r.id = m.room_id \
    WHERE m.room_id = $1 \
    ORDER BY CASE m.state WHEN 'member' THEN 0 ELSE 1 END, m.position";

pub(crate) const MEMBERSHIP: &str =
    "SELECT state FROM room_members WHERE room_id = $1 AND user_id = $2";

/// Makes `$2` a member of room `$1` at the end of the member order, its mark
/// at the room's `last_seq` (and its message count), whether it was invited
/// or absent. Returns a row
/// only if something changed: none when already a member or when the room
/// does not exist (the `SELECT` is empty). The `WHERE` on the `SELECT` also
/// keeps SQLite's parser from reading `ON CONFLICT` as a join constraint.
pub(crate) const JOIN_ROOM: &str = "INSERT INTO room_members \
    (room_id, user_id, state, read_seq, read_no, position) \
    SELECT r.id, $2, 'member', r.last_seq, r.msg_count - r.msg_deleted, \
        (SELECT COALESCE(MAX(p.position), 0) + 1 FROM room_members p WHERE p.room_id = r.id) \
    FROM rooms r WHERE r.id = $1 \
    ON CONFLICT (room_id, user_id) DO UPDATE \
    SET state = 'member', read_seq = excluded.read_seq, read_no = excluded.read_no, \
        position = excluded.position \
    WHERE room_members.state = 'invited' \
    RETURNING user_id";

/// Invites `$2` to room `$1` unless already there, after everyone else.
/// The aggregate always yields one row, even for a room with nobody in it.
pub(crate) const INVITE: &str = "INSERT INTO room_members \
    (room_id, user_id, state, read_seq, position) \
    SELECT $1, $2, 'invited', 0, COALESCE(MAX(position), 0) + 1 \
    FROM room_members WHERE room_id = $1 \
    ON CONFLICT (room_id, user_id) DO NOTHING";

pub(crate) const LEAVE_ROOM: &str = "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2";

/// The columns of a [`super::UserRoom`], for `room_members m` (the user's
/// row) joined with `rooms r` and `last_message_join!`.
///
/// Both subqueries are correlated: they search `room_members` by its
/// primary key `(room_id, user_id)` on the `room_id` prefix (SQLite: `SEARCH
/// c USING PRIMARY KEY (room_id=?)`), reading only that room's member rows,
/// never the whole table. `others_read_seq` and `unread` stay 0 for
/// invitees, as their last message stays NULL.
macro_rules! user_room_columns {
    () => {
        "r.id, r.name, r.kind, r.creator_id, r.owner_id, r.created_at, r.last_seq, \
         r.last_message_seq, r.topic, r.description, r.avatar_url, r.announcement, \
         r.slow_mode, m.state, m.read_seq, \
         CASE WHEN m.user_id = r.owner_id THEN 'owner' ELSE m.role END AS role, \
         (SELECT mu.until FROM room_mutes mu WHERE mu.room_id = r.id AND mu.user_id = m.user_id) \
             AS muted_until, \
         CASE WHEN m.state = 'member' THEN r.msg_count - r.msg_deleted - m.read_no ELSE 0 END \
             AS unread, \
         CASE WHEN m.state = 'member' THEN \
             (SELECT COUNT(*) FROM mentions x \
                 WHERE x.user_id = m.user_id AND x.room_id = r.id AND x.seq > m.read_seq) \
         ELSE 0 END AS mention_count, \
         (SELECT COUNT(*) FROM room_members c \
             WHERE c.room_id = r.id AND c.state = 'member') AS member_count, \
         CASE WHEN m.state = 'member' THEN \
             (SELECT COALESCE(MAX(o.read_seq), 0) FROM room_members o \
                 WHERE o.room_id = r.id AND o.user_id <> m.user_id) \
         ELSE 0 END AS others_read_seq, \
         l.id AS l_id, l.room_id AS l_room_id, l.seq AS l_seq, l.sender_id AS l_sender_id, \
         lu.display_name AS l_sender_name, \
         l.body AS l_body, l.created_at AS l_created_at, l.client_id AS l_client_id, \
         l.edited_at AS l_edited_at, l.version AS l_version, l.deleted_at AS l_deleted_at, \
         l.pinned_at AS l_pinned_at, l.reply_to AS l_reply_to, l.reply_seq AS l_reply_seq, \
         l.reply_sender_id AS l_reply_sender_id, l.reply_snippet AS l_reply_snippet, \
         l.thread_root AS l_thread_root, l.reply_count AS l_reply_count, \
         l.last_reply_at AS l_last_reply_at, l.mentions AS l_mentions, l.attachments AS l_attachments"
    };
}

/// The last message is the row at `seq = last_message_seq`: one probe of
/// the `(room_id, seq)` index per room, joined for members only; the `l_`
/// columns are NULL otherwise (and for a room without a message, whose
/// `last_message_seq` is 0).
macro_rules! last_message_join {
    () => {
        " LEFT JOIN messages l \
              ON m.state = 'member' AND l.room_id = r.id AND l.seq = r.last_message_seq \
          LEFT JOIN users lu ON lu.id = l.sender_id "
    };
}

/// Newest activity first; the newer room first on a tie, so that the order
/// is total.
macro_rules! by_activity {
    () => {
        " ORDER BY COALESCE(r.last_message_at, r.created_at) DESC, r.id DESC"
    };
}

/// A user's rooms. `room_members` is entered by its `user_id` index.
pub(crate) const USER_ROOMS: &str = concat!(
    "SELECT ",
    user_room_columns!(),
    " FROM room_members m JOIN rooms r ON r.id = m.room_id",
    last_message_join!(),
    "WHERE m.user_id = $1",
    by_activity!()
);

// Conversations

/// Creates the conversation of the pair `($4, $5)`, lowest id first, unless
/// it exists: then it returns no row and the caller reads the existing one
/// with [`DIRECT_ROOM_BY_PAIR`] in the same transaction. Two concurrent
/// calls for one pair cannot both insert: SQLite runs one write transaction
/// at a time, and on Postgres the second insert waits for the first to
/// commit and then does nothing, after which its next statement (read
/// committed) sees the committed room. The target names the partial unique
/// index, so a clash on anything else (the name) is still an error, not a
/// silent miss. `DO NOTHING` rather than catching the error, since an error
/// aborts a Postgres transaction.
///
/// On PostgreSQL that wait happens only if the second insert's check of the
/// pair's index comes after the first insert's entry: if both check before
/// either has inserted, both go on to insert, and the second then clashes
/// on `rooms_name_key` (derived from the pair, and checked before the
/// pair's index, which is newer), which `DO NOTHING` does not cover because
/// only the named index is its arbiter. [`PG_LOCK_DIRECT_PAIR`] closes that
/// window.
pub(crate) const INSERT_DIRECT_ROOM: &str = "INSERT INTO rooms \
    (name, kind, creator_id, owner_id, created_at, direct_lo, direct_hi) \
    VALUES ($1, 'direct', $2, $2, $3, $4, $5) \
    ON CONFLICT (direct_lo, direct_hi) WHERE direct_lo IS NOT NULL DO NOTHING \
    RETURNING id";

/// PostgreSQL: the first statement of `direct_room`, with `$1` the lower id
/// of the pair. Locking that user's row queues the creations of one pair
/// (and of any pair sharing its lower id: rare and brief) behind each
/// other, so the later one's insert, in a fresh read-committed snapshot,
/// sees the committed room and does nothing; see [`INSERT_DIRECT_ROOM`].
/// Nothing updates `users` rows and `NO KEY UPDATE` leaves the foreign-key
/// checks' `KEY SHARE` locks alone, so it blocks nothing else. No row if
/// the user does not exist; the insert then fails on its foreign key.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) const PG_LOCK_DIRECT_PAIR: &str = "SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE";

/// `$1` is the lower id. Searches the pair's unique index.
pub(crate) const DIRECT_ROOM_BY_PAIR: &str = concat!(
    "SELECT ",
    room_columns!(),
    " FROM rooms WHERE direct_lo = $1 AND direct_hi = $2"
);

/// A user's conversations, each with the other user's row, in one query:
/// the other is whichever of the pair the user is not. Only rooms with a
/// pair are conversations.
pub(crate) const USER_CONVERSATIONS: &str = concat!(
    "SELECT ",
    user_room_columns!(),
    ", p.id AS p_id, p.username AS p_username, p.email AS p_email, \
       p.display_name AS p_display_name, p.password_hash AS p_password_hash, \
       p.created_at AS p_created_at, p.is_admin AS p_is_admin, \
       p.deactivated_at AS p_deactivated_at, p.token_version AS p_token_version, \
       p.external_id AS p_external_id, p.is_bot AS p_is_bot \
     FROM room_members m JOIN rooms r ON r.id = m.room_id \
     JOIN users p ON p.id = \
         CASE WHEN r.direct_lo = m.user_id THEN r.direct_hi ELSE r.direct_lo END",
    last_message_join!(),
    "WHERE m.user_id = $1 AND r.direct_lo IS NOT NULL",
    by_activity!()
);

// Messages

/// The first statement of an append: taking the next seq is a write, so the
/// transaction holds the write lock (SQLite) or the room's row lock
/// (Postgres) before it reads anything, and concurrent appends to one room
/// queue here instead of racing for the same seq. A message also counts
/// (`msg_count`, which is the new message's `msg_no`) and becomes the room's
/// newest. (The right-hand sides read the row as it was; `RETURNING` the
/// row as it is: `live_count`, the messages not deleted up to the new one,
/// is the sender's `read_no` after it.)
pub(crate) const NEXT_SEQ: &str = "UPDATE rooms SET last_seq = last_seq + 1, \
    msg_count = msg_count + 1, last_message_seq = last_seq + 1, last_message_at = $2 \
    WHERE id = $1 RETURNING last_seq, msg_count, msg_count - msg_deleted AS live_count";

/// An append's access check, `$1` the room, `$2` the sender: the room's
/// kind and the sender's state in it (NULL if none); no row if the room is
/// gone. Run after [`NEXT_SEQ`] has locked the room (PostgreSQL), so that a
/// leave committed meanwhile is seen.
pub(crate) const APPEND_ACCESS: &str = "SELECT r.kind, m.state, \
    CASE WHEN r.owner_id = $2 THEN 'owner' ELSE COALESCE(m.role, 'member') END AS role, \
    r.announcement, r.slow_mode, m.last_sent_at, \
    (SELECT mu.until FROM room_mutes mu WHERE mu.room_id = r.id AND mu.user_id = $2) \
        AS muted_until, \
    CAST(CASE WHEN r.direct_lo IS NOT NULL AND EXISTS (SELECT 1 FROM user_blocks ub \
        WHERE ub.blocker_id = CASE WHEN r.direct_lo = $2 THEN r.direct_hi ELSE r.direct_lo END \
          AND ub.blocked_id = $2) THEN 1 ELSE 0 END AS BIGINT) AS blocked \
    FROM rooms r LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = $2 WHERE r.id = $1";

/// The seq of a timeline event that is not a message: counts nothing, and
/// the room's newest message stays what it was.
pub(crate) const NEXT_EVENT_SEQ: &str =
    "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq, msg_count";

/// A membership change at seq `$2`: `$3` the member, `$4` the kind
/// (`MemberChange::as_str`), `$6` the room's message count, `$7` who made
/// it and why, as JSON (`rows::member_detail`; empty for a join or a
/// leave).
pub(crate) const INSERT_MEMBER_EVENT: &str = "INSERT INTO messages \
    (room_id, seq, sender_id, body, kind, created_at, msg_no) \
    VALUES ($1, $2, $3, $7, $4, $5, $6)";

/// Everything the membership rule (`roles::judge`) reads of room `$1`
/// for a change to `$3`'s membership made by `$2` (the same user for a
/// join or a leave): the room's kind, both memberships with their roles,
/// and `$3`'s ban and mute rows. Read under the room's lock.
pub(crate) const MEMBER_STANDING: &str = "SELECT r.kind, \
    a.state AS a_state, CASE WHEN a.user_id = r.owner_id THEN 'owner' ELSE a.role END AS a_role, \
    t.state AS t_state, CASE WHEN t.user_id = r.owner_id THEN 'owner' ELSE t.role END AS t_role, \
    b.user_id AS banned, b.until AS ban_until, mu.until AS muted_until \
    FROM rooms r \
    LEFT JOIN room_members a ON a.room_id = r.id AND a.user_id = $2 \
    LEFT JOIN room_members t ON t.room_id = r.id AND t.user_id = $3 \
    LEFT JOIN room_bans b ON b.room_id = r.id AND b.user_id = $3 \
    LEFT JOIN room_mutes mu ON mu.room_id = r.id AND mu.user_id = $3 \
    WHERE r.id = $1";

/// `$3` the member's stored role.
pub(crate) const SET_ROLE: &str =
    "UPDATE room_members SET role = $3 WHERE room_id = $1 AND user_id = $2";

/// A room's settings all at once (the caller merged the change into what
/// it read under the room's lock).
pub(crate) const UPDATE_ROOM: &str = "UPDATE rooms SET name = $2, kind = $3, topic = $4, \
    description = $5, avatar_url = $6, announcement = $7, slow_mode = $8 WHERE id = $1";

/// A room's settings at seq `$2`, changed by `$3`: what changed as JSON in
/// `$4`; `$6` the room's message count.
pub(crate) const INSERT_ROOM_EVENT: &str = "INSERT INTO messages \
    (room_id, seq, sender_id, body, kind, created_at, msg_no) \
    VALUES ($1, $2, $3, $4, 'room_updated', $5, $6)";

/// Public rooms by name after `$2` ('' for the first page) whose lowercased
/// name starts with `$1` (a `LIKE` pattern, escaped by the caller), at
/// most `$3`, on the partial index of public rooms by name, with their
/// member counts.
pub(crate) const PUBLIC_ROOMS: &str = concat!(
    "SELECT ",
    room_columns!(),
    ", COALESCE(last_message_at, created_at) AS last_activity_at, \
     (SELECT COUNT(*) FROM room_members c WHERE c.room_id = rooms.id AND c.state = 'member') \
         AS member_count \
     FROM rooms WHERE kind = 'public' AND name > $2 AND lower(name) LIKE $1 ESCAPE '\\' \
     ORDER BY name LIMIT $3"
);

/// `$1` blocks `$2` at `$3`; nothing if already.
pub(crate) const BLOCK_USER: &str = "INSERT INTO user_blocks (blocker_id, blocked_id, created_at) \
    VALUES ($1, $2, $3) ON CONFLICT (blocker_id, blocked_id) DO NOTHING";

pub(crate) const UNBLOCK_USER: &str =
    "DELETE FROM user_blocks WHERE blocker_id = $1 AND blocked_id = $2";

pub(crate) const IS_BLOCKED: &str =
    "SELECT created_at FROM user_blocks WHERE blocker_id = $1 AND blocked_id = $2";

/// The users `$1` blocked, the newest block first.
pub(crate) const BLOCKED_USERS: &str = "SELECT u.id, u.username, u.email, u.display_name, \
    u.password_hash, u.created_at, u.is_admin, u.deactivated_at, u.token_version, \
    u.external_id, u.is_bot, b.created_at AS blocked_at FROM user_blocks b JOIN users u ON u.id = b.blocked_id \
    WHERE b.blocker_id = $1 ORDER BY b.created_at DESC, u.id";

pub(crate) const SET_ADMIN: &str = "UPDATE users SET is_admin = $2 WHERE id = $1";

/// Deactivates (`$2` a time) or reactivates (`$2` NULL) user `$1`; a
/// deactivation also revokes every token (`$3`: 1), a reactivation none
/// (`$3`: 0).
pub(crate) const SET_DEACTIVATED: &str = "UPDATE users SET deactivated_at = $2, \
    token_version = token_version + $3 WHERE id = $1 RETURNING token_version";

pub(crate) const REVOKE_SESSIONS: &str =
    "UPDATE users SET token_version = token_version + 1 WHERE id = $1 RETURNING token_version";

pub(crate) const SPEND_USER_TOKENS: &str =
    "UPDATE refresh_tokens SET spent = TRUE WHERE user_id = $1 AND NOT spent";

macro_rules! report_columns {
    () => {
        "r.id, r.reporter_id, r.user_id, r.message_id, r.room_id, r.reason, r.message_body, \
         r.created_at, r.resolved_at, r.resolved_by, r.resolution, \
         CAST(CASE WHEN m.deleted_at IS NOT NULL THEN 1 ELSE 0 END AS BIGINT) AS message_deleted"
    };
}

/// A report: `$1` reporter, `$2` user, `$3` message, `$4` room, `$5`
/// reason, `$6` the message's body as it is now, `$7` when.
pub(crate) const INSERT_REPORT: &str = "INSERT INTO reports \
    (reporter_id, user_id, message_id, room_id, reason, message_body, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

pub(crate) const REPORT: &str = concat!(
    "SELECT ",
    report_columns!(),
    " FROM reports r LEFT JOIN messages m ON m.id = r.message_id WHERE r.id = $1"
);

/// Reports below id `$1`, newest first, at most `$2`: `$3` 0 open, 1
/// resolved, 2 all.
pub(crate) const REPORTS: &str = concat!(
    "SELECT ",
    report_columns!(),
    " FROM reports r LEFT JOIN messages m ON m.id = r.message_id \
     WHERE r.id < $1 AND ($3 = 2 OR ($3 = 0 AND r.resolved_at IS NULL) \
         OR ($3 = 1 AND r.resolved_at IS NOT NULL)) \
     ORDER BY r.id DESC LIMIT $2"
);

/// Resolves an open report; no row if there is none open with that id.
pub(crate) const RESOLVE_REPORT: &str = "UPDATE reports SET resolved_at = $2, resolved_by = $3, \
    resolution = $4 WHERE id = $1 AND resolved_at IS NULL RETURNING id";

pub(crate) const SET_OWNER: &str = "UPDATE rooms SET owner_id = $2 WHERE id = $1";

/// A ban of `$2` by `$3`, with reason `$4`, until `$5` (NULL: for good), at
/// `$6`; a second ban replaces the first.
pub(crate) const UPSERT_BAN: &str = "INSERT INTO room_bans \
    (room_id, user_id, by_id, reason, until, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (room_id, user_id) DO UPDATE SET by_id = excluded.by_id, \
        reason = excluded.reason, until = excluded.until, created_at = excluded.created_at";

pub(crate) const DELETE_BAN: &str = "DELETE FROM room_bans WHERE room_id = $1 AND user_id = $2";

/// A mute of `$2` until `$3`.
pub(crate) const UPSERT_MUTE: &str = "INSERT INTO room_mutes (room_id, user_id, until) \
    VALUES ($1, $2, $3) ON CONFLICT (room_id, user_id) DO UPDATE SET until = excluded.until";

pub(crate) const DELETE_MUTE: &str = "DELETE FROM room_mutes WHERE room_id = $1 AND user_id = $2";

/// Room `$1`'s bans in force at `$2`, newest first.
pub(crate) const BANS: &str = "SELECT b.room_id, b.user_id, u.username, b.by_id, b.reason, \
    b.until, b.created_at FROM room_bans b JOIN users u ON u.id = b.user_id \
    WHERE b.room_id = $1 AND (b.until IS NULL OR b.until > $2) \
    ORDER BY b.created_at DESC, b.user_id";

/// Returns no row when `(sender_id, client_id)` is taken; the caller then
/// rolls back, giving the seq back. `DO NOTHING` rather than catching the
/// error, since an error aborts a Postgres transaction. `$8` the message
/// replied to (its seq, sender and snippet are copied as they stand, no
/// snippet if it is deleted), `$9` the thread's root, `$10` the mentions
/// (a JSON array, or NULL), `$11` the attachments (a JSON array of their
/// wire form, or NULL).
pub(crate) const INSERT_MESSAGE: &str = "INSERT INTO messages \
    (room_id, seq, sender_id, body, client_id, created_at, msg_no, \
     reply_to, reply_seq, reply_sender_id, reply_snippet, thread_root, mentions, attachments) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
        (SELECT t.seq FROM messages t WHERE t.id = $8), \
        (SELECT t.sender_id FROM messages t WHERE t.id = $8), \
        (SELECT substr(t.body, 1, 100) FROM messages t WHERE t.id = $8 AND t.deleted_at IS NULL), \
        $9, $10, $11) \
    ON CONFLICT (sender_id, client_id) DO NOTHING RETURNING id";

/// Upload `$3` of `$4` sent with message `$2` of room `$1`: linked, if it is
/// still theirs to send.
pub(crate) const LINK_ATTACHMENT: &str = "UPDATE attachments SET room_id = $1, message_id = $2 \
    WHERE id = $3 AND owner_id = $4 AND message_id IS NULL AND doomed_at IS NULL";

/// One more reply in the thread of `$1`, sent at `$2`.
pub(crate) const COUNT_THREAD_REPLY: &str =
    "UPDATE messages SET reply_count = reply_count + 1, last_reply_at = $2 WHERE id = $1";

/// `$1` mentioned in room `$2` by the message at seq `$3`.
pub(crate) const INSERT_MENTION: &str = "INSERT INTO mentions (user_id, room_id, seq) \
    VALUES ($1, $2, $3) ON CONFLICT (user_id, room_id, seq) DO NOTHING";

/// With its `kind`: an id names an event of any kind.
pub(crate) const MESSAGE_BY_ID: &str = concat!(
    "SELECT m.kind, ",
    message_columns!(),
    " FROM messages m JOIN users u ON u.id = m.sender_id WHERE m.id = $1"
);

pub(crate) const MESSAGE_BY_CLIENT_ID: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages m JOIN users u ON u.id = m.sender_id \
      WHERE m.sender_id = $1 AND m.client_id = $2"
);

/// The sender has read its own message and everything below it: its mark
/// moves to the message's seq `$3`, and its count to `$4`, the messages not
/// deleted up to there (`NEXT_SEQ`'s `live_count`). Invitees keep their 0.
/// `$5` when it was sent, for slow mode.
pub(crate) const ADVANCE_SENDER_MARK: &str = "UPDATE room_members \
    SET read_seq = $3, read_no = $4, last_sent_at = $5 \
    WHERE room_id = $1 AND user_id = $2 AND state = 'member' AND read_seq < $3";

/// Messages upward from `$2` (exclusive), below `$3`: the `(room_id, seq)`
/// index in order, other kinds of event passed over. `$4` is the page size
/// plus one, to learn whether there is more.
pub(crate) const HISTORY_AFTER: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages m JOIN users u ON u.id = m.sender_id \
      WHERE m.room_id = $1 AND m.seq > $2 AND m.seq < $3 AND m.kind = 'message' \
        AND m.thread_root IS NULL \
      ORDER BY m.seq LIMIT $4"
);

/// Messages downward from `$2` (exclusive): the same index backwards; the
/// caller reverses the page. `$3` is the page size plus one.
pub(crate) const HISTORY_BEFORE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages m JOIN users u ON u.id = m.sender_id \
      WHERE m.room_id = $1 AND m.seq < $2 AND m.kind = 'message' \
        AND m.thread_root IS NULL \
      ORDER BY m.seq DESC LIMIT $3"
);

/// The replies in the thread of `$1` upward from seq `$2` (exclusive),
/// below `$3`, on `messages_thread_idx`; `$4` the page size plus one.
pub(crate) const THREAD_AFTER: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages m JOIN users u ON u.id = m.sender_id \
      WHERE m.thread_root = $1 AND m.seq > $2 AND m.seq < $3 \
      ORDER BY m.seq LIMIT $4"
);

/// [`THREAD_AFTER`] downward from `$2` (exclusive).
pub(crate) const THREAD_BEFORE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages m JOIN users u ON u.id = m.sender_id \
      WHERE m.thread_root = $1 AND m.seq < $2 \
      ORDER BY m.seq DESC LIMIT $3"
);

/// `room_members` of room `$1` among a list of users: the caller appends
/// the placeholder list (`$2`…) and `)`.
pub(crate) const MEMBERS_AMONG_PREFIX: &str = "SELECT user_id FROM room_members \
    WHERE room_id = $1 AND state = 'member' AND user_id IN (";

/// [`MEMBERS_AMONG_PREFIX`] completed for `count` users.
pub(crate) fn members_among(count: usize) -> String {
    let placeholders: Vec<String> = (2..=count + 1).map(|i| format!("${i}")).collect();
    format!("{MEMBERS_AMONG_PREFIX}{})", placeholders.join(", "))
}

/// [`HISTORY_AFTER`] for every kind of event, with its `kind` and, for a
/// change to a message, that message as it stands (`t_`).
pub(crate) const TIMELINE_AFTER: &str = concat!(
    "SELECT m.kind, ",
    message_columns!(),
    ", ",
    target_columns!(),
    " FROM messages m JOIN users u ON u.id = m.sender_id",
    target_join!(),
    "WHERE m.room_id = $1 AND m.seq > $2 AND m.seq < $3 \
      ORDER BY m.seq LIMIT $4"
);

/// [`HISTORY_BEFORE`] for every kind of event (see [`TIMELINE_AFTER`]).
pub(crate) const TIMELINE_BEFORE: &str = concat!(
    "SELECT m.kind, ",
    message_columns!(),
    ", ",
    target_columns!(),
    " FROM messages m JOIN users u ON u.id = m.sender_id",
    target_join!(),
    "WHERE m.room_id = $1 AND m.seq < $2 \
      ORDER BY m.seq DESC LIMIT $3"
);

// Search

/// SQLite: the FTS5 index (`messages_fts`, kept by triggers, migration
/// 0005) read newest first (`ORDER BY f.rowid DESC` is the index's own
/// order, so the page stops at its size), each hit kept if the viewer is a
/// member of its room. `CROSS JOIN` fixes that order: left to itself the
/// planner starts from the viewer's memberships and sorts every match of
/// every room (`scale_tests.rs`).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const SQLITE_SEARCH: &str = concat!(
    "SELECT ",
    message_columns!(),
    ", r.name AS room_name FROM messages_fts f \
      CROSS JOIN messages m ON m.id = f.rowid \
      CROSS JOIN room_members rm \
          ON rm.room_id = m.room_id AND rm.user_id = $2 AND rm.state = 'member' \
      CROSS JOIN rooms r ON r.id = m.room_id \
      CROSS JOIN users u ON u.id = m.sender_id \
      WHERE messages_fts MATCH $1 AND f.rowid < $3 AND ($4 = 0 OR m.room_id = $4) \
        AND m.kind = 'message' AND m.deleted_at IS NULL \
      ORDER BY f.rowid DESC LIMIT $5"
);

/// PostgreSQL, in two steps, each taken only if the one before did not
/// fill the page. First the newest messages are read by key, at most
/// 2,000 of them (`recent`: every room's by id, or one
/// room's on its `(room_id, seq)` index; a `One-Time Filter` on `$4` runs
/// only one branch), their bodies with them, and matched one by one (read
/// from the materialized rows, the planner cannot swap in the index): a
/// word many messages hold
/// fills the page here, in a few milliseconds, where the index would have
/// handed over every match (480 ms for a word in each of a million
/// messages, `scale_tests.rs`). Then, below the window, the GIN index on
/// `to_tsvector('simple', body)` of messages not deleted
/// (`messages_search_idx`; the `WHERE` repeats its predicate so that it
/// applies) finds every match (`found`), and the viewer's rooms keep
/// theirs; the rarer the word, the fewer matches it reads, and a rare word
/// is what the first step misses (`id + 0`: the bound filters the index's
/// matches; as an index condition it made the planner AND in a bitmap of
/// every id below it, 25 ms at a million). Both steps are materialized: the
/// planner's guess for a word (0.5 % of the rows, whatever the word)
/// otherwise led it to walk the primary key backwards filtering every
/// row, reading the whole table for a rare word (964 ms at a million
/// messages).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) const PG_SEARCH: &str = concat!(
    "WITH recent AS MATERIALIZED ( \
         (SELECT id, room_id, body, kind, deleted_at FROM messages \
          WHERE $4 = 0 AND id < $3 ORDER BY id DESC LIMIT 2000) \
         UNION ALL \
         (SELECT id, room_id, body, kind, deleted_at FROM messages \
          WHERE $4 <> 0 AND room_id = $4 AND id < $3 ORDER BY seq DESC LIMIT 2000)), \
     floor AS MATERIALIZED ( \
         SELECT CASE WHEN count(*) < 2000 THEN 0 ELSE min(id) END AS id FROM recent), \
     near AS MATERIALIZED ( \
         SELECT r.id FROM recent r \
         JOIN room_members rm \
             ON rm.room_id = r.room_id AND rm.user_id = $2 AND rm.state = 'member' \
         WHERE to_tsvector('simple', r.body) @@ plainto_tsquery('simple', $1) \
           AND r.kind = 'message' AND r.deleted_at IS NULL \
         ORDER BY r.id DESC LIMIT $5), \
     found AS MATERIALIZED ( \
         SELECT id, room_id FROM messages \
         WHERE (SELECT count(*) FROM near) < $5 \
           AND to_tsvector('simple', body) @@ plainto_tsquery('simple', $1) \
           AND kind = 'message' AND deleted_at IS NULL \
           AND id + 0 < (SELECT id FROM floor) AND ($4 = 0 OR room_id = $4)), \
     far AS MATERIALIZED ( \
         SELECT f.id FROM found f \
         JOIN room_members rm \
             ON rm.room_id = f.room_id AND rm.user_id = $2 AND rm.state = 'member' \
         ORDER BY f.id DESC LIMIT $5), \
     page AS ( \
         SELECT id FROM near UNION ALL SELECT id FROM far ORDER BY id DESC LIMIT $5) \
     SELECT ",
    message_columns!(),
    ", r.name AS room_name FROM page p \
      JOIN messages m ON m.id = p.id \
      JOIN rooms r ON r.id = m.room_id \
      JOIN users u ON u.id = m.sender_id \
      ORDER BY m.id DESC"
);

// Changes to messages (`sql/change.rs`)

/// The room of message `$1`, which a change may target (no event).
pub(crate) const MESSAGE_ROOM: &str =
    "SELECT room_id FROM messages WHERE id = $1 AND kind = 'message'";

/// The first statement of a change to message `$1`: the next seq of its
/// room, taken as an append takes it (a write, so the transaction holds
/// the room's row lock, or SQLite's write lock, before it reads anything;
/// a change that comes to nothing rolls back and gives the seq back). No
/// row for an id that names no message (or another kind of event), or a
/// room gone.
pub(crate) const NEXT_CHANGE_SEQ: &str = "UPDATE rooms SET last_seq = last_seq + 1 \
    WHERE id = (SELECT room_id FROM messages WHERE id = $1 AND kind = 'message') \
    RETURNING id, last_seq, msg_count";

/// Everything the rule of a change to message `$1` by user `$2` needs, in
/// one read: the message, its room's kind and the user's role (whether
/// they moderate it),
/// the user's membership (`state`, NULL if none), the room's pins, and for
/// reaction key `$3` how many keys the message has, whether `$3` is one,
/// and whether `$2` gave it. Every row it reads changes only with an event
/// of the room's timeline that is not a message (a change, a membership
/// change), and `room_events` counts those: every event takes a seq,
/// every message counts in `msg_count`. No row for an event, which no
/// change targets.
pub(crate) const CHANGE_STANDING: &str = concat!(
    "SELECT ",
    message_columns!(),
    ", r.kind AS kind, r.last_seq - r.msg_count AS room_events, \
       CASE WHEN r.owner_id = $2 THEN 'owner' ELSE COALESCE(mb.role, 'member') END AS role, \
       mb.state AS state, \
       (SELECT COUNT(*) FROM messages p \
           WHERE p.room_id = m.room_id AND p.pinned_at IS NOT NULL) AS pins, \
       (SELECT COUNT(DISTINCT x.key) FROM reactions x WHERE x.message_id = m.id) AS keys, \
       CAST(COALESCE((SELECT MAX(CASE WHEN x.key = $3 THEN 1 ELSE 0 END) \
           FROM reactions x WHERE x.message_id = m.id), 0) AS BIGINT) AS key_present, \
       CAST(COALESCE((SELECT MAX(CASE WHEN x.key = $3 AND x.user_id = $2 THEN 1 ELSE 0 END) \
           FROM reactions x WHERE x.message_id = m.id), 0) AS BIGINT) AS reacted \
     FROM messages m JOIN users u ON u.id = m.sender_id JOIN rooms r ON r.id = m.room_id \
     LEFT JOIN room_members mb ON mb.room_id = m.room_id AND mb.user_id = $2 \
     WHERE m.id = $1 AND m.kind = 'message'"
);

/// `$2` the new body, `$3` when.
pub(crate) const EDIT_MESSAGE: &str =
    "UPDATE messages SET body = $2, edited_at = $3, version = version + 1 WHERE id = $1";

/// The body is erased, not hidden (and the snippet it kept of a message it
/// replied to, its mentions and its attachments); the row keeps the
/// message's seq. A deleted message is unpinned too.
pub(crate) const DELETE_MESSAGE: &str = "UPDATE messages \
    SET body = '', deleted_at = $2, pinned_at = NULL, reply_snippet = NULL, mentions = NULL, \
        attachments = NULL, version = version + 1 WHERE id = $1";

/// The attachments of deleted message `$1` are doomed (at `$2`): the
/// sweeper deletes their files.
pub(crate) const DOOM_MESSAGE_ATTACHMENTS: &str = "UPDATE attachments SET doomed_at = $2 \
    WHERE message_id = $1 AND doomed_at IS NULL";

/// The attachments of deleted room `$1` are doomed (at `$2`).
pub(crate) const DOOM_ROOM_ATTACHMENTS: &str = "UPDATE attachments SET doomed_at = $2 \
    WHERE room_id = $1 AND doomed_at IS NULL";

macro_rules! attachment_columns {
    () => {
        "id, owner_id, name, size, content_type, width, height, thumb_width, thumb_height, \
         thumb_type, thumb_size, blob_key, created_at, room_id, message_id, doomed_at"
    };
}

pub(crate) const INSERT_ATTACHMENT: &str = concat!(
    "INSERT INTO attachments (owner_id, name, size, content_type, width, height, \
     thumb_width, thumb_height, thumb_type, thumb_size, blob_key, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING ",
    attachment_columns!()
);

/// The attachments with the ids bound as `$1…$n`.
pub(crate) fn attachments_by_ids(n: usize) -> String {
    let placeholders: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    format!(
        concat!(
            "SELECT ",
            attachment_columns!(),
            " FROM attachments WHERE id IN ({})"
        ),
        placeholders.join(", ")
    )
}

/// Bytes of `$1`'s attachments not doomed.
pub(crate) const UPLOAD_USAGE: &str = "SELECT CAST(COALESCE(SUM(size + COALESCE(thumb_size, 0)), 0) \
    AS BIGINT) AS used FROM attachments WHERE owner_id = $1 AND doomed_at IS NULL";

/// Whether `$1`'s upload `$2` is sent; no row if there is no such upload
/// of theirs.
pub(crate) const UPLOAD_STANDING: &str = "SELECT CAST(CASE WHEN message_id IS NULL THEN 0 \
    ELSE 1 END AS BIGINT) AS sent FROM attachments WHERE id = $2 AND owner_id = $1";

/// `$1`'s upload `$2` doomed at `$3` if not sent.
pub(crate) const DOOM_UPLOAD: &str = "UPDATE attachments SET doomed_at = $3 \
    WHERE id = $2 AND owner_id = $1 AND message_id IS NULL AND doomed_at IS NULL";

/// Uploads never sent, made before `$1`, doomed at `$2`.
pub(crate) const DOOM_UNSENT: &str = "UPDATE attachments SET doomed_at = $2 \
    WHERE message_id IS NULL AND doomed_at IS NULL AND created_at < $1";

/// Up to `$1` doomed attachments, the longest doomed first.
pub(crate) const DOOMED_ATTACHMENTS: &str = concat!(
    "SELECT ",
    attachment_columns!(),
    " FROM attachments WHERE doomed_at IS NOT NULL ORDER BY doomed_at, id LIMIT $1"
);

/// The rows of doomed attachments, bound as `$1…$n`.
pub(crate) fn forget_attachments(n: usize) -> String {
    let placeholders: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    format!(
        "DELETE FROM attachments WHERE doomed_at IS NOT NULL AND id IN ({})",
        placeholders.join(", ")
    )
}

/// The replies to deleted message `$1` lose their snippet of it (found by
/// `messages_reply_to_idx`).
pub(crate) const ERASE_REPLY_SNIPPETS: &str =
    "UPDATE messages SET reply_snippet = NULL WHERE reply_to = $1";

/// The mentions of the deleted message at seq `$2` of room `$1` count no
/// more.
pub(crate) const DELETE_MENTIONS: &str = "DELETE FROM mentions WHERE room_id = $1 AND seq = $2";

/// A deleted reply leaves its thread's count (root `$1`).
pub(crate) const UNCOUNT_THREAD_REPLY: &str =
    "UPDATE messages SET reply_count = reply_count - 1 WHERE id = $1 AND reply_count > 0";

/// `$2` when.
pub(crate) const PIN_MESSAGE: &str =
    "UPDATE messages SET pinned_at = $2, version = version + 1 WHERE id = $1";

pub(crate) const UNPIN_MESSAGE: &str =
    "UPDATE messages SET pinned_at = NULL, version = version + 1 WHERE id = $1";

/// Room `$1`'s pinned messages, the latest pin first.
pub(crate) const PINNED: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages m JOIN users u ON u.id = m.sender_id \
      WHERE m.room_id = $1 AND m.pinned_at IS NOT NULL \
      ORDER BY m.pinned_at DESC, m.seq DESC"
);

/// One more deleted message in room `$1`: unread counts subtract it.
pub(crate) const COUNT_DELETED: &str =
    "UPDATE rooms SET msg_deleted = msg_deleted + 1 WHERE id = $1";

/// Members whose mark is at or above the deleted message `$2` (its seq)
/// counted it as read: one message fewer below their mark.
pub(crate) const UNCOUNT_READ: &str = "UPDATE room_members SET read_no = read_no - 1 \
    WHERE room_id = $1 AND state = 'member' AND read_seq >= $2";

/// A change to message `$7` at seq `$2`: `$3` who made it, `$4` the kind
/// (`edited`, `deleted`, `reacted`, `unreacted`, `pinned`, `unpinned`), `$6`
/// the room's message
/// count, `$8` the body (a reaction's key, else empty).
pub(crate) const INSERT_UPDATE_EVENT: &str = "INSERT INTO messages \
    (room_id, seq, sender_id, body, kind, created_at, msg_no, target_id) \
    VALUES ($1, $2, $3, $8, $4, $5, $6, $7)";

/// `$4` the seq of its event, `$5` when; the rule checked it is not there
/// yet.
pub(crate) const INSERT_REACTION: &str = "INSERT INTO reactions \
    (message_id, user_id, key, seq, created_at) VALUES ($1, $2, $3, $4, $5)";

pub(crate) const DELETE_REACTION: &str =
    "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND key = $3";

/// A change that leaves the body as it is still makes a new version.
pub(crate) const COUNT_CHANGE: &str = "UPDATE messages SET version = version + 1 WHERE id = $1";

pub(crate) const DELETE_REACTIONS: &str = "DELETE FROM reactions WHERE message_id = $1";

/// The keys of a deleted message's reaction events go with it (found by
/// `messages_target_id_idx`).
pub(crate) const ERASE_REACTION_KEYS: &str = "UPDATE messages SET body = '' \
    WHERE target_id = $1 AND kind IN ('reacted', 'unreacted')";

/// Message `$1`'s reactions per key, in the order of each key's first.
pub(crate) const REACTION_COUNTS: &str = "SELECT key, COUNT(*) AS n, CAST(0 AS BIGINT) AS mine \
    FROM reactions WHERE message_id = $1 GROUP BY key ORDER BY MIN(seq), key";

/// [`REACTION_COUNTS`] of several messages, `$1` the viewer whose own
/// reactions are marked: the caller appends the placeholder list of ids
/// (`$2`…) and `)`, then [`REACTIONS_OF_SUFFIX`].
pub(crate) const REACTIONS_OF_PREFIX: &str = "SELECT message_id, key, COUNT(*) AS n, \
    CAST(MAX(CASE WHEN user_id = $1 THEN 1 ELSE 0 END) AS BIGINT) AS mine \
    FROM reactions WHERE message_id IN (";

pub(crate) const REACTIONS_OF_SUFFIX: &str =
    " GROUP BY message_id, key ORDER BY message_id, MIN(seq), key";

/// [`REACTIONS_OF_PREFIX`] completed for `count` messages.
pub(crate) fn reactions_of(count: usize) -> String {
    let placeholders: Vec<String> = (2..=count + 1).map(|i| format!("${i}")).collect();
    format!(
        "{REACTIONS_OF_PREFIX}{}){REACTIONS_OF_SUFFIX}",
        placeholders.join(", ")
    )
}

// Read marks

macro_rules! member_read_mark {
    () => {
        "SELECT m.read_seq, r.last_seq \
         FROM room_members m JOIN rooms r ON r.id = m.room_id \
         WHERE m.room_id = $1 AND m.user_id = $2 AND m.state = 'member'"
    };
}

/// The mark and the room's `last_seq`, read before moving the mark.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const MEMBER_READ_MARK: &str = member_read_mark!();

/// PostgreSQL: [`MEMBER_READ_MARK`] locking the member's row until commit.
/// Under read committed, two concurrent `mark_read`s would otherwise both
/// read the old mark and both report having moved it (a read receipt sent
/// twice), or one would report a mark that the other had already passed.
/// With the lock the second waits, then reads the row as the first left it.
/// Only the member row is locked (`OF m`): the room row stays free for
/// appends, and a `last_seq` read a moment early only keeps the mark lower.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) const PG_MEMBER_READ_MARK: &str = concat!(member_read_mark!(), " FOR UPDATE OF m");

/// Only ever forward, even if another writer moved the mark meanwhile. The
/// count at the mark is the messages not deleted up to seq `$3`: the
/// `msg_no` of the event there (there is one: seqs have no gaps and `$3` is
/// at most `last_seq`) less the deleted messages at or below it, counted
/// on the partial index of deleted messages (`messages_deleted_idx`),
/// which holds nothing else.
pub(crate) const ADVANCE_READ_MARK: &str = "UPDATE room_members SET read_seq = $3, \
    read_no = COALESCE((SELECT e.msg_no FROM messages e WHERE e.room_id = $1 AND e.seq = $3), read_no) \
        - (SELECT COUNT(*) FROM messages d \
           WHERE d.room_id = $1 AND d.seq <= $3 AND d.deleted_at IS NOT NULL) \
    WHERE room_id = $1 AND user_id = $2 AND state = 'member' AND read_seq < $3";

pub(crate) const READ_MARKS: &str = "SELECT user_id, read_seq FROM room_members \
    WHERE room_id = $1 AND state = 'member' ORDER BY position";

/// Unread messages over all of a user's rooms, from the room rows alone:
/// appending moves the sender's mark to its message, so every message
/// above a member's mark is someone else's and the count is exactly
/// `msg_count - msg_deleted - read_no` per room (messages not deleted,
/// whatever other events take seqs; `read_no` counts the ones not deleted
/// at or below the mark), with no scan of any history. The cast keeps the type an
/// integer on Postgres, where `SUM(bigint)` is numeric.
pub(crate) const UNREAD_TOTAL: &str = "SELECT \
    CAST(COALESCE(SUM(r.msg_count - r.msg_deleted - m.read_no), 0) AS BIGINT) AS unread \
    FROM room_members m JOIN rooms r ON r.id = m.room_id \
    WHERE m.user_id = $1 AND m.state = 'member'";

pub(crate) const PING: &str = "SELECT 1";

#[cfg(test)]
mod tests {
    use chat_core::message::SNIPPET_CHARS;

    /// The snippet a reply keeps is as long in SQL as the wire says.
    #[test]
    fn a_replys_snippet_takes_the_wire_length() {
        let cut = format!("substr(t.body, 1, {SNIPPET_CHARS})");
        assert!(super::INSERT_MESSAGE.contains(&cut), "{cut}");
    }
}
