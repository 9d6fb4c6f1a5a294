-- Drop the non-default registry generations (and their copies of this
-- table) before reverting.
DROP TABLE IF EXISTS pending_uploads;
