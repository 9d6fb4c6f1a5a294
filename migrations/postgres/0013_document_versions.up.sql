-- Every version of every document: a file uploaded again under its name
-- with other bytes is its next version (DocumentVersionAdded); the current
-- one is also in documents_registry.
CREATE TABLE IF NOT EXISTS document_versions (
    document_id   UUID NOT NULL,
    version       BIGINT NOT NULL CHECK (version >= 1),
    user_id       UUID NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL CHECK (size_bytes >= 0),
    sha256        TEXT NOT NULL,
    object_key    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (document_id, version)
);
CREATE INDEX IF NOT EXISTS document_versions_user_id_idx ON document_versions (user_id);
