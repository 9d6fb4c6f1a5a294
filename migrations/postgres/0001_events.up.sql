-- The event log: the source of truth every projection is rebuilt from.
--
-- `position` is handed out when a row is inserted, before its transaction
-- commits, so positions can become visible out of order. `commit_id` is the
-- appending transaction's id: readers order by (commit_id, position) and only
-- read transactions older than every running one, which makes each read a
-- stable prefix of the log (see `LogPosition` in the domain crate).
CREATE TABLE IF NOT EXISTS events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    commit_id       XID8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       TEXT NOT NULL,
    stream_version  BIGINT NOT NULL CHECK (stream_version > 0),
    event_id        UUID NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  SMALLINT NOT NULL,
    data            JSONB NOT NULL,
    tenant_id       UUID NULL,
    actor_key_id    TEXT NULL,
    correlation_id  UUID NOT NULL,
    causation_id    UUID NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The per-stream optimistic concurrency guard: of two appends at the same
    -- version the second fails on this constraint.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

CREATE INDEX IF NOT EXISTS events_commit_position_idx ON events (commit_id, position);
