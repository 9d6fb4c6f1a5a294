-- The transactional outbox: every append writes one row here per event, in
-- the same transaction as the event itself, and the relay deletes the row
-- once the broker has acknowledged the event. A row therefore exists until
-- its event is on Kafka, whatever crashes in between; an event published
-- but not yet deleted is published again (consumers deduplicate).
--
-- The relay reads rows whose transactions have committed; a transaction
-- that commits late simply shows up in a later read, because the relay
-- looks for rows still present, not for positions above a cursor.
CREATE TABLE IF NOT EXISTS outbox (
    position BIGINT PRIMARY KEY REFERENCES events (position) ON DELETE CASCADE
);

-- At most one relay publishes at a time, so events of a stream reach the
-- topic in order; the lease expires, so a crashed relay is replaced.
CREATE TABLE IF NOT EXISTS outbox_relay_lease (
    id          SMALLINT PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
