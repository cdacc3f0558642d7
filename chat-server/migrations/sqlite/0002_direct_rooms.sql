-- Conversations: a direct room records its pair of users, lower id first,
-- so that the database itself keeps one conversation per pair, whichever
-- side asks first and however many ask at once. NULL for every other room.
--
-- ADD COLUMN rather than rebuilding `rooms`: existing rows take NULL, which
-- is right for them, and SQLite allows a REFERENCES column added this way
-- because its default is NULL.

ALTER TABLE rooms ADD COLUMN direct_lo INTEGER REFERENCES users (id);
ALTER TABLE rooms ADD COLUMN direct_hi INTEGER REFERENCES users (id);

-- Partial, so that it holds only conversations. Named like the other
-- unique rules (`<table>_<columns>_key`). Also serves `find_direct_room`.
CREATE UNIQUE INDEX rooms_direct_lo_direct_hi_key ON rooms (direct_lo, direct_hi)
    WHERE direct_lo IS NOT NULL;
