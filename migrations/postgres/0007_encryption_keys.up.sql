-- The encryption_keys registry of the seed article: each tenant's data keys,
-- wrapped by the master key. Unlike the projections this table is not
-- rebuilt from the log and its rows are never in an event: erasing a tenant
-- deletes them, and with them every reading of its encrypted data.
CREATE TABLE IF NOT EXISTS encryption_keys (
    id             TEXT PRIMARY KEY,
    user_id        UUID NOT NULL,
    -- nonce | XChaCha20-Poly1305(data key) | tag, bound to id and user_id
    wrapped_key    BYTEA NOT NULL,
    -- which master key wrapped it (a hash of the key, not the key)
    master_key_id  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    -- set when a rotation makes a newer key active; the key still decrypts
    expired_at     TIMESTAMPTZ NULL
);

-- one active key per tenant: new data is encrypted under it
CREATE UNIQUE INDEX IF NOT EXISTS encryption_keys_one_active_idx
    ON encryption_keys (user_id) WHERE expired_at IS NULL;

CREATE INDEX IF NOT EXISTS encryption_keys_user_id_idx ON encryption_keys (user_id);
