-- The audit log: who did what, when, with which key, one row per event of
-- the log, as a hash chain (see the Postgres migration and
-- `projections::audit`). Uuids are hyphenated TEXT, times RFC 3339 UTC TEXT
-- with six fractional digits, hashes lowercase hex TEXT.
CREATE TABLE IF NOT EXISTS audit_log (
    seq             INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),
    event_id        TEXT NOT NULL,
    log_commit      INTEGER NOT NULL,
    log_position    INTEGER NOT NULL,
    stream_id       TEXT NOT NULL,
    stream_version  INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    recorded_at     TEXT NOT NULL,
    tenant_id       TEXT NULL,
    actor_key_id    TEXT NULL,
    correlation_id  TEXT NOT NULL,
    data_sha256     TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL,
    CONSTRAINT audit_log_event_id_key UNIQUE (event_id)
);

CREATE INDEX IF NOT EXISTS audit_log_tenant_recorded_idx ON audit_log (tenant_id, recorded_at);
CREATE INDEX IF NOT EXISTS audit_log_event_type_idx ON audit_log (event_type);
