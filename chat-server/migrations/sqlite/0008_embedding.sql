-- no-transaction
-- The server inside a host's backend: its users, its bots, its API keys.
--
-- Users of a host's identity service: `external_id` is the user's id
-- there (a token's subject), unique, NULL for this server's own accounts.
-- `is_bot` marks the bots a backend sends as.
-- Such a user may come without an email, stored as ''; the email rule
-- becomes a unique index over the non-empty ones, which SQLite can only
-- do by rebuilding the table (its UNIQUE constraint cannot be dropped).
-- As in 0007, outside sqlx's transaction, with foreign keys off and the
-- legacy rename, so that no table referencing `users` is touched.

PRAGMA foreign_keys = OFF;
PRAGMA legacy_alter_table = ON;

BEGIN IMMEDIATE;

ALTER TABLE users RENAME TO users_old;

CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    username       TEXT    NOT NULL,
    -- Stored lowercased by the backend, which makes the unique index
    -- case-insensitive; '' for none.
    email          TEXT    NOT NULL,
    display_name   TEXT    NOT NULL,
    -- '' for a user who never logs in here (no hash verifies against it).
    password_hash  TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    is_admin       INTEGER NOT NULL DEFAULT 0,
    deactivated_at INTEGER,
    token_version  INTEGER NOT NULL DEFAULT 0,
    external_id    TEXT,
    is_bot         INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_external_id_key UNIQUE (external_id)
);

INSERT INTO users (id, username, email, display_name, password_hash, created_at, is_admin,
        deactivated_at, token_version)
    SELECT id, username, email, display_name, password_hash, created_at, is_admin,
        deactivated_at, token_version
    FROM users_old;

DELETE FROM sqlite_sequence WHERE name = 'users';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'users', seq FROM sqlite_sequence WHERE name = 'users_old';

DROP TABLE users_old;

CREATE UNIQUE INDEX users_email_key ON users (email) WHERE email <> '';

COMMIT;

PRAGMA legacy_alter_table = OFF;
PRAGMA foreign_keys = ON;

-- API keys of the server API: only a hash is kept (SHA-256 of a 256-bit
-- random secret, so no slow hash is needed); a name is unique among the
-- keys not revoked.
CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    key_hash     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
CREATE UNIQUE INDEX api_keys_name_key ON api_keys (name) WHERE revoked_at IS NULL;
