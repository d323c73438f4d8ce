-- The approval gate: an environment whose promotions always wait for a person's approval after the smoke tests,
-- whatever the promotion's own require_approval input says (declared per environment in the inventory).
ALTER TABLE ops.environments ADD COLUMN IF NOT EXISTS require_approval boolean NOT NULL DEFAULT false;
