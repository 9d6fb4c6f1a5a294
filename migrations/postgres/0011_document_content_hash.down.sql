-- The copies in other registry generations go with their schemas (0006).
DROP INDEX IF EXISTS documents_registry_user_sha256_idx;
