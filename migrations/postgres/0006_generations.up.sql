-- Generations of the projections that can be rebuilt beside the live one
-- (`neurostash replay`): per projection, each generation's name, state and
-- history. Exactly one generation per projection is live (the partial
-- unique index); readers and the live runners resolve it, and a switch is
-- one transaction that retires the live row and makes another live.
--
-- Generation 'default' is what existed before generations did: the
-- unprefixed registry tables and the vector index directory itself, so an
-- installation that never replays changes nothing.
CREATE TABLE IF NOT EXISTS projection_generations (
    projection   TEXT NOT NULL,
    name         TEXT NOT NULL CHECK (name ~ '^[a-z0-9_]{1,32}$'),
    state        TEXT NOT NULL CHECK (state IN ('building', 'live', 'retired')),
    created_at   TIMESTAMPTZ NOT NULL,
    -- when it last became live / stopped being live: rollback returns to
    -- the generation retired last
    switched_at  TIMESTAMPTZ NULL,
    retired_at   TIMESTAMPTZ NULL,
    PRIMARY KEY (projection, name)
);

CREATE UNIQUE INDEX IF NOT EXISTS projection_generations_one_live_idx
    ON projection_generations (projection) WHERE state = 'live';

INSERT INTO projection_generations (projection, name, state, created_at, switched_at)
VALUES ('registry', 'default', 'live', now(), now()), ('vector', 'default', 'live', now(), now())
ON CONFLICT (projection, name) DO NOTHING;
