-- The copies in other registry generations go with their schemas (0006).
DROP TABLE IF EXISTS document_versions;
