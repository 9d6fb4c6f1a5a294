-- A tenant's documents by the SHA-256 of their bytes: an upload of bytes the
-- tenant already has answers with that document instead of making a copy.
CREATE INDEX IF NOT EXISTS documents_registry_user_sha256_idx ON documents_registry (user_id, sha256);
