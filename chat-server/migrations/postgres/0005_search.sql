-- Full-text search over messages: a GIN index of each message's words
-- (the `simple` configuration: lowercased, no stemming, no stop words, the
-- same for every language), partial to the messages a search may find.
-- An edit or a deletion updates it with the row.

CREATE INDEX messages_search_idx ON messages USING GIN (to_tsvector('simple', body))
    WHERE kind = 'message' AND deleted_at IS NULL;
