-- Changes to messages (edits, deletions, reactions) as timeline events.
--
-- A change is a row of `messages` like every event: its own seq, `kind`
-- 'edited', 'deleted', 'reacted', 'unreacted', 'pinned' or 'unpinned', who
-- made it in `sender_id`, an empty body (a reaction's key for a reaction),
-- and the
-- message it changed in `target_id` (same room; no foreign key, since both
-- go with the room and nothing else deletes a row). The message's own row
-- holds its current state: the newest body, `edited_at`, `version` (one
-- more per change), and `deleted_at` for a tombstone whose body is erased.
--
-- Unread counts stay one subtraction: a room counts its deleted messages
-- (`msg_deleted`), a membership's `read_no` counts the messages not
-- deleted at or below its mark, and unread is
-- `msg_count - msg_deleted - read_no`. Marking read counts the deleted
-- messages below the mark on a partial index that holds nothing else.
--
-- SQLite cannot change a CHECK constraint in place, so the table is
-- rebuilt (the documented way: a new table, the rows copied, the old one
-- dropped). The old one is renamed first so that the new one is created
-- under its own name and its unique indexes keep their names. Ids stay
-- never reused: the AUTOINCREMENT counter is carried over.

ALTER TABLE messages RENAME TO messages_old;

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    sender_id  INTEGER NOT NULL REFERENCES users (id),
    body       TEXT    NOT NULL,
    client_id  TEXT,
    created_at INTEGER NOT NULL,
    kind       TEXT    NOT NULL DEFAULT 'message'
        CHECK (kind IN ('message', 'joined', 'left', 'edited', 'deleted', 'reacted',
            'unreacted', 'pinned', 'unpinned')),
    msg_no     INTEGER NOT NULL DEFAULT 0,
    target_id  INTEGER,
    edited_at  INTEGER,
    version    INTEGER NOT NULL DEFAULT 0,
    deleted_at INTEGER,
    pinned_at  INTEGER,
    -- Serves history paging and the cascade from rooms.
    CONSTRAINT messages_room_id_seq_key UNIQUE (room_id, seq),
    -- Idempotent sends. NULL client ids never collide.
    CONSTRAINT messages_sender_id_client_id_key UNIQUE (sender_id, client_id)
);

INSERT INTO messages (id, room_id, seq, sender_id, body, client_id, created_at, kind, msg_no)
    SELECT id, room_id, seq, sender_id, body, client_id, created_at, kind, msg_no
    FROM messages_old;

DELETE FROM sqlite_sequence WHERE name = 'messages';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'messages', seq FROM sqlite_sequence WHERE name = 'messages_old';

DROP TABLE messages_old;

ALTER TABLE rooms ADD COLUMN msg_deleted INTEGER NOT NULL DEFAULT 0;

CREATE INDEX messages_deleted_idx ON messages (room_id, seq) WHERE deleted_at IS NOT NULL;

-- The changes of a message, found from it (a deletion erases the keys of
-- its reaction events).
CREATE INDEX messages_target_id_idx ON messages (target_id) WHERE target_id IS NOT NULL;

-- Who reacted to what: one row per user, message and key. Counts per key
-- come from here, grouped; a deletion removes the message's rows.
CREATE TABLE reactions (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key        TEXT    NOT NULL,
    -- The seq of the event that added it: keys are listed in the order of
    -- their first reaction.
    seq        INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id, key)
);

-- A room's pinned messages, newest pin first.
CREATE INDEX messages_pinned_idx ON messages (room_id, pinned_at) WHERE pinned_at IS NOT NULL;
