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

ALTER TABLE messages DROP CONSTRAINT messages_kind_check;
ALTER TABLE messages ADD CONSTRAINT messages_kind_check
    CHECK (kind IN ('message', 'joined', 'left', 'edited', 'deleted', 'reacted',
            'unreacted', 'pinned', 'unpinned'));
ALTER TABLE messages ADD COLUMN target_id BIGINT;
ALTER TABLE messages ADD COLUMN edited_at BIGINT;
ALTER TABLE messages ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN deleted_at BIGINT;
ALTER TABLE messages ADD COLUMN pinned_at BIGINT;
ALTER TABLE rooms ADD COLUMN msg_deleted BIGINT NOT NULL DEFAULT 0;

CREATE INDEX messages_deleted_idx ON messages (room_id, seq) WHERE deleted_at IS NOT NULL;

-- The changes of a message, found from it (a deletion erases the keys of
-- its reaction events).
CREATE INDEX messages_target_id_idx ON messages (target_id) WHERE target_id IS NOT NULL;

-- Who reacted to what: one row per user, message and key. Counts per key
-- come from here, grouped; a deletion removes the message's rows.
CREATE TABLE reactions (
    message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key        TEXT    NOT NULL,
    -- The seq of the event that added it: keys are listed in the order of
    -- their first reaction.
    seq        BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id, key)
);

-- A room's pinned messages, newest pin first.
CREATE INDEX messages_pinned_idx ON messages (room_id, pinned_at) WHERE pinned_at IS NOT NULL;
