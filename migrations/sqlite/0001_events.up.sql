-- The event log: the source of truth every projection is rebuilt from.
--
-- SQLite serialises writers, so positions become visible in order and the
-- position doubles as the commit order; there is no commit column.
-- Uuids are stored as hyphenated TEXT, times as RFC 3339 UTC TEXT, data as
-- JSON TEXT.
CREATE TABLE IF NOT EXISTS events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version > 0),
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    data            TEXT NOT NULL,
    tenant_id       TEXT NULL,
    actor_key_id    TEXT NULL,
    correlation_id  TEXT NOT NULL,
    causation_id    TEXT NULL,
    recorded_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- The per-stream optimistic concurrency guard.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
