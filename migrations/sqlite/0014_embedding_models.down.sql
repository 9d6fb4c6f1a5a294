ALTER TABLE documents_registry DROP COLUMN embedding_model;
ALTER TABLE knowledge_bases DROP COLUMN chunking;
ALTER TABLE knowledge_bases DROP COLUMN embedding_model;
