-- Each tenant's data keys, wrapped by the master key (see the Postgres
-- migration of the same number). Not a projection: never rebuilt from the
-- log, and deleted for good when the tenant is erased.
CREATE TABLE IF NOT EXISTS encryption_keys (
    id             TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL,
    wrapped_key    BLOB NOT NULL,
    master_key_id  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expired_at     TEXT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS encryption_keys_one_active_idx
    ON encryption_keys (user_id) WHERE expired_at IS NULL;

CREATE INDEX IF NOT EXISTS encryption_keys_user_id_idx ON encryption_keys (user_id);
