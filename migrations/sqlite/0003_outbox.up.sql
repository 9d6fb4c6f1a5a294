-- The transactional outbox (see the Postgres migration of the same number):
-- a row per event, written with the event, deleted once the broker has it.
CREATE TABLE IF NOT EXISTS outbox (
    position INTEGER PRIMARY KEY REFERENCES events (position) ON DELETE CASCADE
);

-- At most one relay publishes at a time; times are RFC 3339 UTC TEXT.
CREATE TABLE IF NOT EXISTS outbox_relay_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
