-- The outbox: each room's timeline delivered to each sink (a webhook
-- endpoint, a push gateway) from a cursor. The timeline is the outbox: a
-- cursor moves only after the sink succeeded, so nothing is lost across
-- restarts or while a sink is down. A sink starts at each existing room's
-- last seq (events from then on); a room created later has no row until
-- its first delivery (cursor 0). A lease (`lease_owner`, `lease_until`)
-- lets one instance at a time deliver a room to a sink, in order; a failed
-- delivery waits until `next_attempt_at`, backing off with `attempts`.

CREATE TABLE outbox_sinks (
    sink       TEXT    PRIMARY KEY,
    created_at INTEGER NOT NULL
);

CREATE TABLE outbox_cursors (
    sink            TEXT    NOT NULL REFERENCES outbox_sinks (sink) ON DELETE CASCADE,
    room_id         INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    delivered_seq   INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_owner     TEXT,
    lease_until     INTEGER,
    PRIMARY KEY (sink, room_id)
);
