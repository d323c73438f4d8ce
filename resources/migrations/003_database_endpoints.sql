-- One database name per environment for its whole life, and a fence between deployments.
--
-- odoo_db_name is the name Odoo, its sessions and its clients (XML-RPC, JSON-RPC integrations) use
-- for the environment, before and after every promotion and rollback. Each deployment still has its
-- own physical database (db_name); Odoo reaches it through the deployment's own PgBouncer, which
-- maps odoo_db_name to db_name and knows no other database, as the deployment's own PostgreSQL role
-- (db_role, CONNECT on its database only). The role's password is derived from a key, never stored.
ALTER TABLE ops.environments ADD COLUMN IF NOT EXISTS odoo_db_name text;
ALTER TABLE ops.deployments ADD COLUMN IF NOT EXISTS odoo_db_name text;
ALTER TABLE ops.deployments ADD COLUMN IF NOT EXISTS db_role text;
ALTER TABLE ops.deployments ADD COLUMN IF NOT EXISTS endpoint_port integer;
ALTER TABLE ops.deployments ADD COLUMN IF NOT EXISTS endpoint_pid integer;
