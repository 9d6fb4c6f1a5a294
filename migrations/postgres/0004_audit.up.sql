-- The audit log: who did what, when, with which key, one row per event of
-- the log, as a hash chain. Each row's `hash` is SHA-256 over a versioned,
-- length-prefixed encoding of its columns and `prev_hash` (the previous
-- row's hash, 32 zero bytes for the first), so that modifying, inserting or
-- deleting a row breaks the chain (see `projections::audit`). The event's
-- data is not copied, only its SHA-256: the row commits to the content
-- without holding what may be sensitive. Hashes are lowercase hex.
--
-- `seq` is dense (1, 2, 3, …) and assigned by the projection, so a gap is
-- itself evidence of a deleted row.
CREATE TABLE IF NOT EXISTS audit_log (
    seq             BIGINT PRIMARY KEY CHECK (seq > 0),
    event_id        UUID NOT NULL,
    log_commit      BIGINT NOT NULL,
    log_position    BIGINT NOT NULL,
    stream_id       TEXT NOT NULL,
    stream_version  BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    tenant_id       UUID NULL,
    actor_key_id    TEXT NULL,
    correlation_id  UUID NOT NULL,
    data_sha256     TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL,
    CONSTRAINT audit_log_event_id_key UNIQUE (event_id)
);

-- A tenant's records by time, and all records of one type: the filters of
-- `GET /v1/audit`.
CREATE INDEX IF NOT EXISTS audit_log_tenant_recorded_idx ON audit_log (tenant_id, recorded_at);
CREATE INDEX IF NOT EXISTS audit_log_event_type_idx ON audit_log (event_type);
