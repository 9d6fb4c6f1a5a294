DROP INDEX IF EXISTS events_commit_position_idx;
DROP TABLE IF EXISTS events;
