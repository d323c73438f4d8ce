-- How each environment starts its Odoo, and deployments adopted from an installation that ran before.
--
-- odoo_command: the environment's own command template (NULL: the settings' odoo_command). worker_mode:
-- 'threaded' (one port; the websocket on the HTTP port) or 'prefork' (``workers`` processes and a gevent
-- websocket port of its own); NULL: as before, a websocket port of its own when the template names one.
ALTER TABLE ops.environments ADD COLUMN IF NOT EXISTS odoo_command text;
ALTER TABLE ops.environments ADD COLUMN IF NOT EXISTS worker_mode text
    CHECK (worker_mode IN ('threaded', 'prefork'));
ALTER TABLE ops.environments ADD COLUMN IF NOT EXISTS workers integer;

-- A deployment made by a promotion owns its whole data_dir (<filestore_root>/<deployment_id>). An adopted one
-- lives in the operator's data_dir, which may hold other databases' filestores: removing it removes only its
-- own filestore folder and sessions link.
ALTER TABLE ops.deployments ADD COLUMN IF NOT EXISTS owns_data_dir boolean NOT NULL DEFAULT true;
