-- The registry tables of the seed article: a projection of the event log,
-- dropped and rebuilt by replay. Every timestamp is the `recorded_at` of the
-- event that wrote it, so a replay reproduces identical rows.
--
-- As in the events table, uuids are hyphenated TEXT and times are RFC 3339
-- UTC TEXT, written with a fixed number of fractional digits so that text
-- order is time order. The Postgres enums are TEXT with CHECK constraints.
--
-- Foreign keys are kept to the one relation that a single stream orders
-- (a tenant's keys follow its registration in its own stream): a projection
-- cannot refuse a fact that is already in the log, and a constraint across
-- streams could stop it forever on an ordering it does not control.

CREATE TABLE IF NOT EXISTS user_clients (
    id          TEXT PRIMARY KEY NOT NULL,
    email       TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('USER', 'ADMIN')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CONSTRAINT user_clients_email_key UNIQUE (email)
);

CREATE TABLE IF NOT EXISTS api_keys (
    key_id       TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES user_clients (id),
    -- A keyed hash of the secret; the secret itself is never stored.
    secret_hash  TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('USER', 'ADMIN')),
    label        TEXT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NULL,
    revoked_at   TEXT NULL
);

CREATE INDEX IF NOT EXISTS api_keys_user_id_idx ON api_keys (user_id);

CREATE TABLE IF NOT EXISTS documents_registry (
    id            TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL,
    file_name     TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL CHECK (size_bytes >= 0),
    sha256        TEXT NOT NULL,
    object_key    TEXT NOT NULL,
    lock_status   TEXT NOT NULL CHECK (lock_status IN ('UNLOCKED', 'LOCKED')),
    op_status     TEXT NOT NULL CHECK (op_status IN ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED')),
    error         TEXT NULL,
    attempts      INTEGER NOT NULL CHECK (attempts >= 0),
    chunk_count   INTEGER NULL CHECK (chunk_count >= 0),
    embedder      TEXT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    CONSTRAINT documents_registry_user_file_name_key UNIQUE (user_id, file_name)
);

-- Serves a tenant's document list filtered by status, in upload order.
CREATE INDEX IF NOT EXISTS documents_registry_user_status_created_idx
    ON documents_registry (user_id, op_status, created_at);

CREATE TABLE IF NOT EXISTS knowledge_bases (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    category    TEXT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS knowledge_bases_user_id_idx ON knowledge_bases (user_id);

CREATE TABLE IF NOT EXISTS knowledge_base_documents (
    knowledge_base_id  TEXT NOT NULL,
    document_id        TEXT NOT NULL,
    -- Follows the op_status of the document.
    status             TEXT NOT NULL CHECK (status IN ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED')),
    added_at           TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    PRIMARY KEY (knowledge_base_id, document_id)
);

-- A document's status change and its deletion reach every link by this.
CREATE INDEX IF NOT EXISTS knowledge_base_documents_document_id_idx
    ON knowledge_base_documents (document_id);

-- Where each projection stored in this database has got to in the log,
-- written in the same transaction as the projection's effects.
-- `updated_at` is the `recorded_at` of the last event applied: the log time
-- the projection has reached, so that now() - updated_at is its lag.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name        TEXT PRIMARY KEY NOT NULL,
    commit_pos  INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);

-- The highest stream version each projection has applied, per stream: a
-- redelivered event is recognised by it even when the checkpoint is behind.
CREATE TABLE IF NOT EXISTS projection_applied (
    projection  TEXT NOT NULL,
    stream_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    PRIMARY KEY (projection, stream_id)
);
