-- Presigned uploads waiting for their completion (see the Postgres
-- migration of the same number).
CREATE TABLE IF NOT EXISTS pending_uploads (
    document_id        TEXT PRIMARY KEY NOT NULL,
    user_id            TEXT NOT NULL,
    upload_id          TEXT NOT NULL,
    staging_key        TEXT NOT NULL,
    size_bytes         INTEGER NOT NULL CHECK (size_bytes >= 0),
    sha256             TEXT NULL,
    knowledge_base_id  TEXT NULL,
    expires_at         TEXT NOT NULL,
    created_at         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_uploads_expires_at_idx ON pending_uploads (expires_at);
CREATE INDEX IF NOT EXISTS pending_uploads_user_id_idx ON pending_uploads (user_id);
