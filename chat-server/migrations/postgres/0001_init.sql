-- The chat-rs schema for PostgreSQL: the tables, columns, constraint and
-- index names of `migrations/sqlite/0001_init.sql`, so that the shared DML
-- (`src/storage/sql.rs`) and its row decoders run unchanged on both, and
-- the conflict classifier finds the same names.
--
-- Times stay BIGINT microseconds since the Unix epoch, as on SQLite, rather
-- than TIMESTAMPTZ: one decoder for both backends, and no precision lost.
--
-- Ids are identity columns. GENERATED ALWAYS, so that no insert can supply
-- an id the sequence would later hand out again; sequences never reuse a
-- value, which keeps SQLite's AUTOINCREMENT promise that a deleted room's
-- or message's id never names a newer row.

CREATE TABLE users (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT    NOT NULL,
    -- Stored lowercased by the backend, which makes the plain unique rule
    -- case-insensitive.
    email         TEXT    NOT NULL,
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE refresh_tokens (
    id         TEXT    PRIMARY KEY,
    user_id    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family     TEXT    NOT NULL,
    expires_at BIGINT  NOT NULL,
    spent      BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE rooms (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT   NOT NULL,
    kind            TEXT   NOT NULL CHECK (kind IN ('public', 'private', 'game', 'direct')),
    creator_id      BIGINT NOT NULL REFERENCES users (id),
    created_at      BIGINT NOT NULL,
    -- The seq of the newest message. Appends bump it in their transaction,
    -- which is what numbers messages without gaps (the UPDATE row-locks the
    -- room until commit); unread counts subtract read marks from it.
    last_seq        BIGINT NOT NULL DEFAULT 0,
    last_message_at BIGINT,
    CONSTRAINT rooms_name_key UNIQUE (name)
);

CREATE TABLE room_members (
    room_id  BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state    TEXT   NOT NULL CHECK (state IN ('member', 'invited')),
    read_seq BIGINT NOT NULL DEFAULT 0,
    -- Order of arrival in the room (1, 2, 3…), renewed on joining: people
    -- are listed in order of joining or of invitation. A counter rather than
    -- a time, since joins carry no timestamp and clocks may tie.
    position BIGINT NOT NULL,
    -- Also serves the per-room lookups (members of a room, the cascade).
    PRIMARY KEY (room_id, user_id)
);

-- A user's rooms (room list, unread total).
CREATE INDEX room_members_user_id_idx ON room_members (user_id);

CREATE TABLE messages (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id    BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    sender_id  BIGINT NOT NULL REFERENCES users (id),
    body       TEXT   NOT NULL,
    client_id  TEXT,
    created_at BIGINT NOT NULL,
    -- Serves history paging (both directions, in index order), the last
    -- message probe of room lists, and the cascade from rooms.
    CONSTRAINT messages_room_id_seq_key UNIQUE (room_id, seq),
    -- Idempotent sends. NULL client ids never collide (NULLS DISTINCT, the
    -- default). Its `sender_id` prefix also indexes the foreign key.
    CONSTRAINT messages_sender_id_client_id_key UNIQUE (sender_id, client_id)
);
