-- Where a deployment's Odoo (and its PgBouncer) run: the name of a process host of the settings
-- (process_hosts), or NULL for the promoter's own machine (every deployment recorded before hosts existed).
-- Stop, rollback and clean-up read it, so they reach the machine the process is on whatever the settings
-- say about the environment today.
ALTER TABLE ops.deployments ADD COLUMN IF NOT EXISTS host text;
