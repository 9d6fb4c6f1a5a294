DROP INDEX IF EXISTS audit_log_event_type_idx;
DROP INDEX IF EXISTS audit_log_tenant_recorded_idx;
DROP TABLE IF EXISTS audit_log;
DELETE FROM projection_checkpoints WHERE name = 'audit';
