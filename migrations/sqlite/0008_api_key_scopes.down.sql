-- The copies of api_keys in other registry generations keep the columns:
-- their defaults let code from before this migration write them.
ALTER TABLE api_keys DROP COLUMN knowledge_base_ids;
ALTER TABLE api_keys DROP COLUMN read_only;
