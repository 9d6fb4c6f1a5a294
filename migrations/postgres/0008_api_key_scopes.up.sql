-- The scopes of an API key (`ApiKeyScopes`): a read-only key, and the
-- knowledge bases a key is limited to (a JSON array of their ids; NULL for
-- all of the tenant's). Keys issued before scopes existed are unscoped,
-- which the defaults say.
--
-- Registry generations other than 'default' run these statements against
-- their own copy of api_keys when its column is missing
-- (`registry::generation::Tables::create`, on creation and at every
-- start); IF NOT EXISTS keeps a second run harmless all the same.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS read_only BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS knowledge_base_ids JSONB NULL
    CHECK (knowledge_base_ids IS NULL OR jsonb_typeof(knowledge_base_ids) = 'array');
