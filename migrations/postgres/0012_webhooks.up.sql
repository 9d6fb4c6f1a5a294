-- Webhooks and their delivery outbox, kept by the webhook projection from
-- the log (WebhookRegistered, WebhookRemoved, and the document events a
-- webhook subscribes to). A delivery names its event; its body is made
-- from the event when it is sent, so no plaintext waits here.
CREATE TABLE IF NOT EXISTS webhooks (
    id           UUID PRIMARY KEY,
    user_id      UUID NOT NULL,
    url          TEXT NOT NULL,
    -- a JSON array of document event types, or ["*"]
    event_types  TEXT NOT NULL,
    -- the signing secret, sealed under the tenant's data key
    secret       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_user_id_idx ON webhooks (user_id);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               UUID NOT NULL UNIQUE,
    webhook_id       UUID NOT NULL,
    user_id          UUID NOT NULL,
    event_id         UUID NOT NULL,
    event_type       TEXT NOT NULL,
    stream_id        TEXT NOT NULL,
    stream_version   BIGINT NOT NULL,
    -- PENDING, DELIVERED or DEAD (the dead-letter list)
    status           TEXT NOT NULL CHECK (status IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    last_error       TEXT NULL,
    delivered_at     TIMESTAMPTZ NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending_idx ON webhook_deliveries (webhook_id, status, seq);
CREATE INDEX IF NOT EXISTS webhook_deliveries_user_id_idx ON webhook_deliveries (user_id);
