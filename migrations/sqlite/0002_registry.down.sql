DROP TABLE IF EXISTS projection_applied;
DROP TABLE IF EXISTS projection_checkpoints;
DROP TABLE IF EXISTS knowledge_base_documents;
DROP TABLE IF EXISTS knowledge_bases;
DROP TABLE IF EXISTS documents_registry;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS user_clients;
