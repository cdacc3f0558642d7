-- The server inside a host's backend: its users, its bots, its API keys.
--
-- Users of a host's identity service: `external_id` is the user's id
-- there (a token's subject), unique, NULL for this server's own accounts.
-- `is_bot` marks the bots a backend sends as. Such a user may come without
-- an email, stored as ''; the email rule becomes a unique index over the
-- non-empty ones. A password hash of '' marks a user who never logs in
-- here (no hash verifies against it).

ALTER TABLE users ADD COLUMN external_id TEXT;
ALTER TABLE users ADD CONSTRAINT users_external_id_key UNIQUE (external_id);
ALTER TABLE users ADD COLUMN is_bot BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users DROP CONSTRAINT users_email_key;
CREATE UNIQUE INDEX users_email_key ON users (email) WHERE email <> '';

-- API keys of the server API: only a hash is kept (SHA-256 of a 256-bit
-- random secret, so no slow hash is needed); a name is unique among the
-- keys not revoked.
CREATE TABLE api_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT   NOT NULL,
    key_hash     TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
CREATE UNIQUE INDEX api_keys_name_key ON api_keys (name) WHERE revoked_at IS NULL;
