-- The scopes of an API key (see the Postgres migration of the same number):
-- read_only as 0 or 1, knowledge_base_ids as the JSON text of an array of
-- uuids, NULL for all of the tenant's knowledge bases.
--
-- SQLite has no ADD COLUMN IF NOT EXISTS: registry generations other than
-- 'default' run each of these statements against their own copy of
-- api_keys only when its column is missing
-- (`registry::generation::Tables::create`).
ALTER TABLE api_keys ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0 CHECK (read_only IN (0, 1));
ALTER TABLE api_keys ADD COLUMN knowledge_base_ids TEXT NULL
    CHECK (knowledge_base_ids IS NULL OR json_type(knowledge_base_ids) = 'array');
