-- The embedding model (JSON: name, dimensions, version) a knowledge base is
-- pinned to and its chunking settings (JSON: max_tokens, overlap_tokens),
-- and the model each processed document's vectors come from. NULL: from
-- before models were pinned.
ALTER TABLE knowledge_bases ADD COLUMN embedding_model TEXT NULL;
ALTER TABLE knowledge_bases ADD COLUMN chunking TEXT NULL;
ALTER TABLE documents_registry ADD COLUMN embedding_model TEXT NULL;
