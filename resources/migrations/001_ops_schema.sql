-- The ops schema: projects, environments and their deployments, promotion runs, artifacts,
-- scheduled tasks, permissions. Secrets are never stored here: columns ending in _ref hold the
-- NAME of an environment variable (or secrets-file key) that holds the value.

CREATE TABLE IF NOT EXISTS ops.projects (
    project_id  text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ops.environments (
    environment_id      text PRIMARY KEY,
    project_id          text NOT NULL REFERENCES ops.projects (project_id),
    kind                text NOT NULL CHECK (kind IN ('staging', 'production', 'dev')),
    git_commit_sha      text,
    db_dsn_ref          text NOT NULL,      -- secret reference to a libpq DSN (no dbname)
    db_name_prefix      text NOT NULL,      -- new deployments get <prefix>_<suffix> databases
    filestore_root      text NOT NULL,      -- Odoo data_dir: files live in filestore/<db>/
    odoo_url            text,
    router_name         text,
    smoke_login         text,
    smoke_password_ref  text,               -- secret reference to the smoke user's password
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ops.deployments (
    deployment_id   text PRIMARY KEY,
    environment_id  text NOT NULL REFERENCES ops.environments (environment_id),
    db_name         text NOT NULL,
    data_dir        text NOT NULL,
    http_port       integer,
    websocket_port  integer,
    pid             integer,
    state           text NOT NULL CHECK (state IN ('active', 'standby', 'retired', 'deleted')),
    created_by_run  text,
    artifact_id     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS deployments_one_active
    ON ops.deployments (environment_id) WHERE state = 'active';

CREATE TABLE IF NOT EXISTS ops.runs (
    run_id          text PRIMARY KEY,
    project_id      text NOT NULL REFERENCES ops.projects (project_id),
    environment_id  text NOT NULL REFERENCES ops.environments (environment_id),
    operation_type  text NOT NULL,
    status          text NOT NULL CHECK (status IN ('running', 'success', 'failed', 'rolled_back')),
    created_by      text NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    dagster_run_id  text,
    evidence_dir    text,
    rolled_back_at  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
CREATE INDEX IF NOT EXISTS runs_env_status ON ops.runs (environment_id, status);

CREATE TABLE IF NOT EXISTS ops.run_events (
    event_id    bigserial PRIMARY KEY,
    run_id      text NOT NULL REFERENCES ops.runs (run_id),
    at          timestamptz NOT NULL DEFAULT now(),
    step        text NOT NULL,
    level       text NOT NULL CHECK (level IN ('info', 'warning', 'error')),
    message     text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- A promotion refused by input validation or a precondition leaves only this record.
CREATE TABLE IF NOT EXISTS ops.rejections (
    rejection_id  bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    check_name    text NOT NULL,
    message       text NOT NULL,
    inputs        jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS ops.artifacts (
    artifact_id     text PRIMARY KEY,
    environment_id  text NOT NULL REFERENCES ops.environments (environment_id),
    role            text NOT NULL CHECK (role IN ('green', 'blue')),
    created_by_run  text,
    contract        jsonb NOT NULL,
    verified_at     timestamptz,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ops.scheduled_tasks (
    task_id     bigserial PRIMARY KEY,
    task_type   text NOT NULL,
    execute_at  timestamptz NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    run_id      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS scheduled_tasks_due ON ops.scheduled_tasks (status, execute_at);

CREATE TABLE IF NOT EXISTS ops.permissions (
    user_id     text NOT NULL,
    project_id  text NOT NULL REFERENCES ops.projects (project_id),
    permission  text NOT NULL,
    PRIMARY KEY (user_id, project_id, permission)
);

CREATE OR REPLACE FUNCTION ops.user_has_permission(p_user_id text, p_project_id text, p_permission text)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM ops.permissions
        WHERE user_id = p_user_id AND project_id = p_project_id
          AND permission IN (p_permission, 'admin')
    )
$$;

-- run_<UTC timestamp>_<8 hex>: sortable by time, unique without coordination.
CREATE OR REPLACE FUNCTION ops.gen_run_id() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT 'run_' || to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS')
        || '_' || substr(md5(random()::text || clock_timestamp()::text), 1, 8)
$$;
