-- The room timeline: `messages` holds every event of a room's sequence,
-- numbered by `seq` without gaps. A message is one kind; a member joining or
-- leaving is another (`kind` 'joined' / 'left', the member in `sender_id`,
-- an empty `body`). Later kinds (edits, reactions, room changes) take rows
-- here too, so history, replay and resume follow one sequence.
--
-- Unread counts must count messages only, while every kind takes a seq. So
-- each row carries `msg_no`, how many messages the room holds up to and
-- including it; a room keeps `msg_count`, and a membership `read_no`, the
-- `msg_no` at its read mark. Unread is still one subtraction per
-- membership: `rooms.msg_count - room_members.read_no`.
--
-- Existing rows are all messages, numbered 1, 2, 3…: their counts equal
-- their seqs.

ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message'
    CHECK (kind IN ('message', 'joined', 'left'));
ALTER TABLE messages ADD COLUMN msg_no BIGINT NOT NULL DEFAULT 0;
UPDATE messages SET msg_no = seq;

-- `last_seq` now numbers every event; the newest message (for room lists)
-- has a seq of its own.
ALTER TABLE rooms ADD COLUMN msg_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN last_message_seq BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET msg_count = last_seq, last_message_seq = last_seq;

ALTER TABLE room_members ADD COLUMN read_no BIGINT NOT NULL DEFAULT 0;
UPDATE room_members SET read_no = read_seq;
