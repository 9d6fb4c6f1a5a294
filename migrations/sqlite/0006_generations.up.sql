-- Generations of the projections that can be rebuilt beside the live one
-- (see the Postgres migration of the same number). Times are RFC 3339 TEXT
-- as everywhere in this backend.
CREATE TABLE IF NOT EXISTS projection_generations (
    projection   TEXT NOT NULL,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 32 AND name NOT GLOB '*[^a-z0-9_]*'),
    state        TEXT NOT NULL CHECK (state IN ('building', 'live', 'retired')),
    created_at   TEXT NOT NULL,
    switched_at  TEXT NULL,
    retired_at   TEXT NULL,
    PRIMARY KEY (projection, name)
);

CREATE UNIQUE INDEX IF NOT EXISTS projection_generations_one_live_idx
    ON projection_generations (projection) WHERE state = 'live';

INSERT INTO projection_generations (projection, name, state, created_at, switched_at)
VALUES
    ('registry', 'default', 'live', strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    ('vector', 'default', 'live', strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
ON CONFLICT (projection, name) DO NOTHING;
