-- Push notifications: the devices users register. A token belongs to one
-- app; registering it again (another user on the same phone) moves it.

CREATE TABLE push_devices (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    platform   TEXT    NOT NULL,
    token      TEXT    NOT NULL,
    app_id     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    CONSTRAINT push_devices_app_id_token_key UNIQUE (app_id, token)
);
CREATE INDEX push_devices_user_idx ON push_devices (user_id);
