-- The schemas of registry generations other than 'default' go with the
-- table that names them.
DO $$
DECLARE generation_schema TEXT;
BEGIN
    FOR generation_schema IN
        SELECT nspname FROM pg_namespace WHERE nspname LIKE 'registry\_g%'
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', generation_schema);
    END LOOP;
END $$;

DROP TABLE IF EXISTS projection_generations;
