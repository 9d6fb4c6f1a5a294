-- Presigned uploads waiting for their completion, projected from the
-- document streams (`UploadRequested`): what completing an upload checks
-- its bytes against, and what the upload cleaner reads to find the ones
-- past their expiry. A row goes when its upload is completed
-- (`DocumentRegistered`), rejected or expired, or its tenant is erased.
-- The bytes wait in the raw object store under staging_key, outside every
-- tenant's encrypted prefix.
--
-- Registry generations other than 'default' create their own copy from
-- these statements (`registry::generation::Tables::create`, on creation
-- and at every start); IF NOT EXISTS keeps a second run harmless.
CREATE TABLE IF NOT EXISTS pending_uploads (
    document_id        UUID PRIMARY KEY,
    user_id            UUID NOT NULL,
    upload_id          UUID NOT NULL,
    staging_key        TEXT NOT NULL,
    size_bytes         BIGINT NOT NULL CHECK (size_bytes >= 0),
    -- The declared SHA-256 (hex), when the client gave one.
    sha256             TEXT NULL,
    -- Where the completed document is linked.
    knowledge_base_id  UUID NULL,
    expires_at         TIMESTAMPTZ NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_uploads_expires_at_idx ON pending_uploads (expires_at);
CREATE INDEX IF NOT EXISTS pending_uploads_user_id_idx ON pending_uploads (user_id);
