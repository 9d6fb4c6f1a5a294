-- See the Postgres migration of the same number.
CREATE TABLE IF NOT EXISTS document_versions (
    document_id   TEXT NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    user_id       TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL CHECK (size_bytes >= 0),
    sha256        TEXT NOT NULL,
    object_key    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (document_id, version)
);
CREATE INDEX IF NOT EXISTS document_versions_user_id_idx ON document_versions (user_id);
