-- no-transaction
-- Roles, bans and mutes, and membership changes made by moderators as
-- timeline events.
--
-- A room has an owner (`rooms.owner_id`: its creator until handed over);
-- every other member has a `role`, 'admin' or 'member' (the owner's own
-- row is not read for its role). A ban is a row of `room_bans`: the user
-- is out of the room and may not join or be invited until `until` (NULL:
-- until lifted). A mute is a row of `room_mutes`: its user may not send
-- until `until` (9999-12-31 for a mute without end); it is kept
-- apart from the membership so that leaving and coming back does not
-- lift it. An append reads it by primary key beside the membership.

-- Member events carry who made them, a reason, a role or an end time:
-- those go in the event row's `body` as a JSON object (the body of a
-- member event is never a message's, and neither search index holds it).
--
-- Every new kind of timeline event used to mean a new CHECK on
-- `messages.kind`, which SQLite can only change by rebuilding the table:
-- this rebuild is the last one, the table has no CHECK on `kind` any
-- more, and the row decoder refuses a kind it does not know. The rebuild
-- must not touch `reactions`, whose foreign key names `messages`: with
-- foreign keys on, SQLite would rewrite that reference to the renamed
-- table and the drop would cascade into it. So this migration runs
-- outside sqlx's transaction, with foreign keys off and the legacy rename
-- (which rewrites nothing), inside a transaction of its own.

PRAGMA foreign_keys = OFF;
PRAGMA legacy_alter_table = ON;

BEGIN IMMEDIATE;

ALTER TABLE messages RENAME TO messages_old;

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id         INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    sender_id       INTEGER NOT NULL REFERENCES users (id),
    body            TEXT    NOT NULL,
    client_id       TEXT,
    created_at      INTEGER NOT NULL,
    kind            TEXT    NOT NULL DEFAULT 'message',
    msg_no          INTEGER NOT NULL DEFAULT 0,
    target_id       INTEGER,
    edited_at       INTEGER,
    version         INTEGER NOT NULL DEFAULT 0,
    deleted_at      INTEGER,
    pinned_at       INTEGER,
    reply_to        INTEGER,
    reply_seq       INTEGER,
    reply_sender_id INTEGER,
    reply_snippet   TEXT,
    thread_root     INTEGER,
    reply_count     INTEGER NOT NULL DEFAULT 0,
    last_reply_at   INTEGER,
    mentions        TEXT,
    CONSTRAINT messages_room_id_seq_key UNIQUE (room_id, seq),
    CONSTRAINT messages_sender_id_client_id_key UNIQUE (sender_id, client_id)
);

INSERT INTO messages (id, room_id, seq, sender_id, body, client_id, created_at, kind, msg_no,
        target_id, edited_at, version, deleted_at, pinned_at, reply_to, reply_seq,
        reply_sender_id, reply_snippet, thread_root, reply_count, last_reply_at, mentions)
    SELECT id, room_id, seq, sender_id, body, client_id, created_at, kind, msg_no,
        target_id, edited_at, version, deleted_at, pinned_at, reply_to, reply_seq,
        reply_sender_id, reply_snippet, thread_root, reply_count, last_reply_at, mentions
    FROM messages_old;

DELETE FROM sqlite_sequence WHERE name = 'messages';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'messages', seq FROM sqlite_sequence WHERE name = 'messages_old';

-- Its indexes and triggers go with it; the full-text index keeps its
-- rows, whose rowids are the ids copied above.
DROP TABLE messages_old;

CREATE INDEX messages_deleted_idx ON messages (room_id, seq) WHERE deleted_at IS NOT NULL;
CREATE INDEX messages_target_id_idx ON messages (target_id) WHERE target_id IS NOT NULL;
CREATE INDEX messages_pinned_idx ON messages (room_id, pinned_at) WHERE pinned_at IS NOT NULL;
CREATE INDEX messages_reply_to_idx ON messages (reply_to) WHERE reply_to IS NOT NULL;
CREATE INDEX messages_thread_idx ON messages (thread_root, seq) WHERE thread_root IS NOT NULL;

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
WHEN new.kind = 'message' BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages
WHEN old.kind = 'message' AND old.deleted_at IS NULL BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    INSERT INTO messages_fts (rowid, body) SELECT new.id, new.body WHERE new.deleted_at IS NULL;
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.kind = 'message' AND old.deleted_at IS NULL BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;

ALTER TABLE rooms ADD COLUMN owner_id INTEGER REFERENCES users (id);
UPDATE rooms SET owner_id = creator_id;

ALTER TABLE room_members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
-- When the member last sent a message (slow mode counts from it).
ALTER TABLE room_members ADD COLUMN last_sent_at INTEGER;

-- A room's settings: shown (topic, description, avatar), and read by every
-- append (announcement: only admins post; slow mode: seconds between a
-- member's messages, 0 for off).
ALTER TABLE rooms ADD COLUMN topic TEXT;
ALTER TABLE rooms ADD COLUMN description TEXT;
ALTER TABLE rooms ADD COLUMN avatar_url TEXT;
ALTER TABLE rooms ADD COLUMN announcement INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN slow_mode INTEGER NOT NULL DEFAULT 0;

-- Who blocked whom: the blocked may not open a conversation with the
-- blocker nor send in theirs (an append reads it by primary key, for
-- conversations only).
CREATE TABLE user_blocks (
    blocker_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);

-- Accounts: a server admin (granted with `chat-server admin grant`), a
-- deactivated account, and the version every access token carries: one
-- more revokes every token issued before (log out everywhere,
-- deactivation).
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN deactivated_at INTEGER;
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;

-- Reports of a message or a user. A message's body is copied when it is
-- reported, so that server admins see what was reported even after its
-- sender deleted it (the one place a deleted body is kept).
CREATE TABLE reports (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message_id   INTEGER,
    room_id      INTEGER,
    reason       TEXT NOT NULL,
    message_body TEXT,
    created_at   INTEGER NOT NULL,
    resolved_at  INTEGER,
    resolved_by  INTEGER REFERENCES users (id),
    resolution   TEXT
);

-- Open reports, newest first.
CREATE INDEX reports_open_idx ON reports (id) WHERE resolved_at IS NULL;

-- The public directory, by name.
CREATE INDEX rooms_public_name_idx ON rooms (name) WHERE kind = 'public';

CREATE TABLE room_bans (
    room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    by_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason     TEXT,
    until      INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE room_mutes (
    room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    until      INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

COMMIT;

PRAGMA legacy_alter_table = OFF;
PRAGMA foreign_keys = ON;
