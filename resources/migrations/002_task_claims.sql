-- Scheduled tasks are claimed by one worker at a time (FOR UPDATE SKIP LOCKED); a claim older than
-- its lease is taken to belong to a worker that died and may be claimed again.
ALTER TABLE ops.scheduled_tasks ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
ALTER TABLE ops.scheduled_tasks ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE ops.scheduled_tasks ADD COLUMN IF NOT EXISTS done_at timestamptz;
