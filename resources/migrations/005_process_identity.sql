-- A recorded pid is only a number: hours later the kernel may have given it to an unrelated process. The
-- start time of the process the host started (field 22 of /proc/PID/stat, clock ticks since boot) goes with
-- it, so that a stop signals the pid only while it still names that very process.
ALTER TABLE ops.deployments ADD COLUMN IF NOT EXISTS pid_started bigint;
ALTER TABLE ops.deployments ADD COLUMN IF NOT EXISTS endpoint_started bigint;
