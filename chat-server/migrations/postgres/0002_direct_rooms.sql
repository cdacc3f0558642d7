-- Conversations: a direct room records its pair of users, lower id first,
-- so that the database itself keeps one conversation per pair, whichever
-- side asks first and however many ask at once. NULL for every other room.
-- As `migrations/sqlite/0002_direct_rooms.sql`; existing rows take NULL.

ALTER TABLE rooms ADD COLUMN direct_lo BIGINT REFERENCES users (id);
ALTER TABLE rooms ADD COLUMN direct_hi BIGINT REFERENCES users (id);

-- Partial, so that it holds only conversations. Named like the other
-- unique rules (`<table>_<columns>_key`); `INSERT … ON CONFLICT (direct_lo,
-- direct_hi) WHERE direct_lo IS NOT NULL` infers it as its arbiter. Also
-- serves `find_direct_room`.
CREATE UNIQUE INDEX rooms_direct_lo_direct_hi_key ON rooms (direct_lo, direct_hi)
    WHERE direct_lo IS NOT NULL;
