-- Where a projection fed by Kafka stands in each partition (see the
-- Postgres migration of the same number).
CREATE TABLE IF NOT EXISTS projection_offsets (
    projection   TEXT NOT NULL,
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL CHECK (partition >= 0),
    next_offset  INTEGER NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (projection, topic, partition)
);
