-- The registry tables of the seed article: a projection of the event log,
-- dropped and rebuilt by replay. Every timestamp is the `recorded_at` of the
-- event that wrote it, so a replay reproduces identical rows.
--
-- Foreign keys are kept to the one relation that a single stream orders
-- (a tenant's keys follow its registration in its own stream): a projection
-- cannot refuse a fact that is already in the log, and a constraint across
-- streams could stop it forever on an ordering it does not control.

-- The types are created idempotently so that a database whose types survived
-- a partial teardown still migrates.
DO $$ BEGIN
    CREATE TYPE role_type AS ENUM ('USER', 'ADMIN');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

DO $$ BEGIN
    CREATE TYPE op_status AS ENUM ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

DO $$ BEGIN
    CREATE TYPE lock_status AS ENUM ('UNLOCKED', 'LOCKED');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS user_clients (
    id          UUID PRIMARY KEY,
    email       TEXT NOT NULL,
    role        role_type NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT user_clients_email_key UNIQUE (email)
);

CREATE TABLE IF NOT EXISTS api_keys (
    key_id       TEXT PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES user_clients (id),
    -- A keyed hash of the secret; the secret itself is never stored.
    secret_hash  TEXT NOT NULL,
    role         role_type NOT NULL,
    label        TEXT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NULL,
    revoked_at   TIMESTAMPTZ NULL
);

CREATE INDEX IF NOT EXISTS api_keys_user_id_idx ON api_keys (user_id);

CREATE TABLE IF NOT EXISTS documents_registry (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL,
    file_name     TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL CHECK (size_bytes >= 0),
    sha256        TEXT NOT NULL,
    object_key    TEXT NOT NULL,
    lock_status   lock_status NOT NULL,
    op_status     op_status NOT NULL,
    error         TEXT NULL,
    attempts      BIGINT NOT NULL CHECK (attempts >= 0),
    chunk_count   BIGINT NULL CHECK (chunk_count >= 0),
    embedder      TEXT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT documents_registry_user_file_name_key UNIQUE (user_id, file_name)
);

-- Serves a tenant's document list filtered by status, in upload order.
CREATE INDEX IF NOT EXISTS documents_registry_user_status_created_idx
    ON documents_registry (user_id, op_status, created_at);

CREATE TABLE IF NOT EXISTS knowledge_bases (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL,
    name        TEXT NOT NULL,
    category    TEXT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX IF NOT EXISTS knowledge_bases_user_id_idx ON knowledge_bases (user_id);

CREATE TABLE IF NOT EXISTS knowledge_base_documents (
    knowledge_base_id  UUID NOT NULL,
    document_id        UUID NOT NULL,
    -- Follows the op_status of the document.
    status             op_status NOT NULL,
    added_at           TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
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
    name        TEXT PRIMARY KEY,
    commit_pos  BIGINT NOT NULL,
    position    BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- The highest stream version each projection has applied, per stream: a
-- redelivered event is recognised by it even when the checkpoint is behind.
CREATE TABLE IF NOT EXISTS projection_applied (
    projection  TEXT NOT NULL,
    stream_id   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (projection, stream_id)
);
