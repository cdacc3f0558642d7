-- Full-text search over messages: an FTS5 index whose content is
-- `messages` itself (no second copy of the bodies), kept current by
-- triggers. Only messages are indexed, not other events; a deleted
-- message leaves the index when its body is erased, an edited one is
-- indexed under its new body. `unicode61` folds case and diacritics and
-- splits on anything that is not a letter or a digit.

CREATE VIRTUAL TABLE messages_fts USING fts5(
    body, content = 'messages', content_rowid = 'id', tokenize = 'unicode61'
);

INSERT INTO messages_fts (rowid, body)
    SELECT id, body FROM messages WHERE kind = 'message' AND deleted_at IS NULL;

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
WHEN new.kind = 'message' BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;

-- An edit or a deletion rewrites the body: the old words go (FTS5 needs
-- the indexed text to remove it), the new ones come unless deleted.
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages
WHEN old.kind = 'message' AND old.deleted_at IS NULL BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    INSERT INTO messages_fts (rowid, body) SELECT new.id, new.body WHERE new.deleted_at IS NULL;
END;

-- A room's deletion takes its messages; what is still indexed goes too.
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.kind = 'message' AND old.deleted_at IS NULL BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
