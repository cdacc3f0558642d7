-- Attachments: uploaded files. A row is an upload of its owner's until a
-- message of theirs is appended with it (the append sets room_id and
-- message_id in its transaction); a message's deletion, its room's
-- deletion, the uploader's own deletion and the grace period of an upload
-- never sent set doomed_at, after which the sweeper deletes the files and
-- then the row. room_id and message_id have no foreign keys: a room's
-- deletion must leave the rows for the sweeper, which deletes files first.

CREATE TABLE attachments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT    NOT NULL,
    width        INTEGER,
    height       INTEGER,
    thumb_width  INTEGER,
    thumb_height INTEGER,
    thumb_type   TEXT,
    thumb_size   INTEGER,
    blob_key     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    room_id      INTEGER,
    message_id   INTEGER,
    doomed_at    INTEGER
);
CREATE INDEX attachments_owner_idx ON attachments (owner_id);
CREATE INDEX attachments_unsent_idx ON attachments (created_at)
    WHERE message_id IS NULL AND doomed_at IS NULL;
CREATE INDEX attachments_message_idx ON attachments (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX attachments_room_idx ON attachments (room_id) WHERE room_id IS NOT NULL;
CREATE INDEX attachments_doomed_idx ON attachments (doomed_at) WHERE doomed_at IS NOT NULL;

-- What a message shows of its attachments, copied when it is appended (a
-- JSON list of the wire form), so that reading messages joins nothing.
ALTER TABLE messages ADD COLUMN attachments TEXT;
