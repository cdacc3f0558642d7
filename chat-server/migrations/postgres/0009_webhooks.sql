-- Webhooks deliver each room's timeline to each endpoint from a cursor:
-- the timeline is the outbox, and a cursor moves only after the endpoint
-- answered 2xx, so nothing is lost across restarts or while it is down.
-- An endpoint starts at each existing room's last seq (events from then
-- on); a room created later has no row until its first delivery (cursor
-- 0). A lease (`lease_owner`, `lease_until`) lets one instance at a time
-- deliver a room to an endpoint, in order; a failed delivery waits until
-- `next_attempt_at`, backing off with `attempts`.

CREATE TABLE webhook_endpoints (
    endpoint   TEXT    PRIMARY KEY,
    created_at BIGINT  NOT NULL
);

CREATE TABLE webhook_cursors (
    endpoint        TEXT    NOT NULL REFERENCES webhook_endpoints (endpoint) ON DELETE CASCADE,
    room_id         BIGINT  NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    delivered_seq   BIGINT  NOT NULL DEFAULT 0,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    PRIMARY KEY (endpoint, room_id)
);
