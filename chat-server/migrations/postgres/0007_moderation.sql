-- Roles, bans and mutes, and membership changes made by moderators as
-- timeline events (see migrations/sqlite/0007_moderation.sql, the same
-- schema).
--
-- `messages.kind` loses its CHECK, as on SQLite (where changing it meant
-- rebuilding the table for every new kind of event): the row decoder
-- refuses a kind it does not know.

ALTER TABLE messages DROP CONSTRAINT messages_kind_check;

ALTER TABLE rooms ADD COLUMN owner_id BIGINT REFERENCES users (id);
UPDATE rooms SET owner_id = creator_id;

ALTER TABLE room_members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
-- When the member last sent a message (slow mode counts from it).
ALTER TABLE room_members ADD COLUMN last_sent_at BIGINT;

-- A room's settings: shown (topic, description, avatar), and read by every
-- append (announcement: only admins post; slow mode: seconds between a
-- member's messages, 0 for off).
ALTER TABLE rooms ADD COLUMN topic TEXT;
ALTER TABLE rooms ADD COLUMN description TEXT;
ALTER TABLE rooms ADD COLUMN avatar_url TEXT;
ALTER TABLE rooms ADD COLUMN announcement BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN slow_mode BIGINT NOT NULL DEFAULT 0;

-- Who blocked whom: the blocked may not open a conversation with the
-- blocker nor send in theirs (an append reads it by primary key, for
-- conversations only).
CREATE TABLE user_blocks (
    blocker_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);

-- Accounts: a server admin (granted with `chat-server admin grant`), a
-- deactivated account, and the version every access token carries: one
-- more revokes every token issued before (log out everywhere,
-- deactivation).
ALTER TABLE users ADD COLUMN is_admin BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN deactivated_at BIGINT;
ALTER TABLE users ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;

-- Reports of a message or a user. A message's body is copied when it is
-- reported, so that server admins see what was reported even after its
-- sender deleted it (the one place a deleted body is kept).
CREATE TABLE reports (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reporter_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message_id   BIGINT,
    room_id      BIGINT,
    reason       TEXT NOT NULL,
    message_body TEXT,
    created_at   BIGINT NOT NULL,
    resolved_at  BIGINT,
    resolved_by  BIGINT REFERENCES users (id),
    resolution   TEXT
);

-- Open reports, newest first.
CREATE INDEX reports_open_idx ON reports (id) WHERE resolved_at IS NULL;

-- The public directory, by name.
CREATE INDEX rooms_public_name_idx ON rooms (name) WHERE kind = 'public';

CREATE TABLE room_bans (
    room_id    BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    by_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason     TEXT,
    until      BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE room_mutes (
    room_id    BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    until      BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
