-- See the Postgres migration of the same number.
CREATE TABLE IF NOT EXISTS webhooks (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    url          TEXT NOT NULL,
    event_types  TEXT NOT NULL,
    secret       TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_user_id_idx ON webhooks (user_id);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    webhook_id       TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    stream_id        TEXT NOT NULL,
    stream_version   INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT NULL,
    delivered_at     TEXT NULL,
    created_at       TEXT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending_idx ON webhook_deliveries (webhook_id, status, seq);
CREATE INDEX IF NOT EXISTS webhook_deliveries_user_id_idx ON webhook_deliveries (user_id);
