-- See the Postgres migration of the same number.
CREATE INDEX IF NOT EXISTS documents_registry_user_sha256_idx ON documents_registry (user_id, sha256);
