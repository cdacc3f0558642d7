-- The chat-rs schema for SQLite. Times are INTEGER microseconds since the
-- Unix epoch. Constraint names follow PostgreSQL's defaults so that both
-- backends report the same names for the same rule.
--
-- AUTOINCREMENT where ids reach clients: a deleted room's or message's id is
-- never handed out again, so a stale id cannot name a newer row.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL,
    -- Stored lowercased by the backend, which makes the plain unique rule
    -- case-insensitive.
    email         TEXT    NOT NULL,
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE refresh_tokens (
    id         TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    spent      BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE rooms (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('public', 'private', 'game', 'direct')),
    creator_id      INTEGER NOT NULL REFERENCES users (id),
    created_at      INTEGER NOT NULL,
    -- The seq of the newest message. Appends bump it in their transaction,
    -- which is what numbers messages without gaps; unread counts subtract
    -- read marks from it.
    last_seq        INTEGER NOT NULL DEFAULT 0,
    last_message_at INTEGER,
    CONSTRAINT rooms_name_key UNIQUE (name)
);

CREATE TABLE room_members (
    room_id  INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state    TEXT    NOT NULL CHECK (state IN ('member', 'invited')),
    read_seq INTEGER NOT NULL DEFAULT 0,
    -- Order of arrival in the room (1, 2, 3…), renewed on joining: people
    -- are listed in order of joining or of invitation. A counter rather than
    -- a time, since joins carry no timestamp and clocks may tie.
    position INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;

-- A user's rooms (room list, unread total).
CREATE INDEX room_members_user_id_idx ON room_members (user_id);

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    sender_id  INTEGER NOT NULL REFERENCES users (id),
    body       TEXT    NOT NULL,
    client_id  TEXT,
    created_at INTEGER NOT NULL,
    -- Serves history paging and the cascade from rooms.
    CONSTRAINT messages_room_id_seq_key UNIQUE (room_id, seq),
    -- Idempotent sends. NULL client ids never collide.
    CONSTRAINT messages_sender_id_client_id_key UNIQUE (sender_id, client_id)
);
