-- SQL alone cannot drop tables by a name pattern here: drop the registry
-- generations other than 'default' (`neurostash replay drop`) before
-- reverting this migration, or their `registry_g<name>__*` tables stay.
DROP TABLE IF EXISTS projection_generations;
