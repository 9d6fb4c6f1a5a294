-- Where a projection fed by Kafka stands in each partition: the next offset
-- to read, written in the same transaction as the projection's effects, so
-- that a consumer resumes exactly after what it has made durable. Kafka's
-- own committed offsets are never used.
CREATE TABLE IF NOT EXISTS projection_offsets (
    projection   TEXT NOT NULL,
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL CHECK (partition >= 0),
    next_offset  BIGINT NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (projection, topic, partition)
);
