-- Where an environment's promotions are announced (resources/notifiers.py NotificationsConfig, from the
-- inventory's environments.<id>.notifications): webhook URLs, secret *references* and retry settings only,
-- never a secret value. NULL: no notifications.
ALTER TABLE ops.environments ADD COLUMN IF NOT EXISTS notifications jsonb;
