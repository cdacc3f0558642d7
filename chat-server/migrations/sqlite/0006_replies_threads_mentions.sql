-- Replies, threads and mentions: columns of a message's own row, set when
-- it is appended (never changed after, except as a deletion erases text).
--
-- A reply names its target (`reply_to`, a message of the same room) and
-- keeps what the reply shows of it: its seq, its sender and the start of
-- its body as it was when the reply was sent (`reply_snippet`). Deleting
-- the target sets the snippets of the replies to it to NULL, so its text
-- is gone from every row (found by `messages_reply_to_idx`).
--
-- A thread reply names its thread's root (`thread_root`); the root counts
-- its replies not deleted (`reply_count`) and keeps the time of the newest
-- (`last_reply_at`). A thread is paged on `messages_thread_idx`.
--
-- A message's mentions are listed on its row (`mentions`, a JSON array of
-- user ids, NULL for none) for showing, and one row each in `mentions` for
-- counting: a member's mention count is the rows of its user and room above
-- its read mark (the primary key's range). Deleting the message deletes its
-- rows.

ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN reply_seq INTEGER;
ALTER TABLE messages ADD COLUMN reply_sender_id INTEGER;
ALTER TABLE messages ADD COLUMN reply_snippet TEXT;
ALTER TABLE messages ADD COLUMN thread_root INTEGER;
ALTER TABLE messages ADD COLUMN reply_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at INTEGER;
ALTER TABLE messages ADD COLUMN mentions TEXT;

CREATE INDEX messages_reply_to_idx ON messages (reply_to) WHERE reply_to IS NOT NULL;

CREATE INDEX messages_thread_idx ON messages (thread_root, seq) WHERE thread_root IS NOT NULL;

CREATE TABLE mentions (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, seq)
);

-- The cascade from a room's deletion.
CREATE INDEX mentions_room_idx ON mentions (room_id, seq);
