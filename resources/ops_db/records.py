"""Typed records of the ops schema: what its typed methods return (rows) and take (requests).

None of these holds a secret: columns ending in ``_ref`` hold the *name* of a secret, which is what
makes the records safe to put in Dagster's event log and in evidence.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, Field

from resources.notifiers import NotificationsConfig

RunStatus = Literal["running", "success", "failed", "rolled_back"]
FinalRunStatus = Literal["success", "failed", "rolled_back"]
DeploymentState = Literal["active", "standby", "retired", "deleted"]
TaskStatus = Literal["pending", "running", "done", "failed", "cancelled"]
EnvironmentKind = Literal["staging", "production", "dev"]
WorkerMode = Literal["threaded", "prefork"]


class Record(BaseModel):
    """A model read from a row of the ops schema: its fields, taken by name, other columns ignored."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        return cls.model_validate({k: row.get(k) for k in cls.model_fields})


class EnvironmentRecord(Record):
    """One row of ``ops.environments``: where an environment's databases, files and router are."""

    environment_id: str = Field(description="Primary key.")
    project_id: str = Field(description="The project the environment belongs to.")
    kind: EnvironmentKind = Field(description="staging, production or dev.")
    git_commit_sha: str | None = Field(description="Commit the environment's code is at; None when unknown.")
    db_dsn_ref: str = Field(description="Secret reference to the libpq DSN (no dbname) of its database server.")
    db_name_prefix: str = Field(description="New deployments get <prefix>_<suffix> physical databases.")
    filestore_root: str = Field(description="Root of the environment's Odoo data: one data_dir per deployment"
                                " (<root>/<deployment_id>) and the sessions they share (<root>/sessions).")
    odoo_db_name: str | None = Field(default=None, description="The database name Odoo, its sessions and its"
                                     " clients use, for the environment's whole life (None: a legacy environment,"
                                     " each deployment served under its physical name).")
    odoo_url: str | None = Field(default=None, description="Public URL, if recorded.")
    router_name: str | None = Field(default=None, description="Which router serves it.")
    smoke_login: str | None = Field(default=None, description="Login the smoke tests authenticate as.")
    smoke_password_ref: str | None = Field(default=None, description="Secret reference to that login's password.")
    odoo_command: str | None = Field(default=None, description="Command template starting this environment's Odoo"
                                     " (None: the settings' odoo_command).")
    worker_mode: WorkerMode | None = Field(default=None, description="threaded (the websocket on the HTTP port) or"
                                           " prefork (a websocket port of its own); None: a websocket port of its own"
                                           " when the command template names {websocket_port}.")
    workers: int | None = Field(default=None, description="Odoo worker processes in prefork mode ({workers}).")
    notifications: NotificationsConfig | None = Field(default=None, description="Where its promotions are announced"
                                                      " (secret references only); None: nowhere.")
    # A database whose migration 008 is not applied yet has no such column: read as False, the behaviour before it.
    require_approval: Annotated[bool, BeforeValidator(bool)] = Field(
        default=False, description="Every promotion into it waits for a person's approval after the smoke tests,"
        " whatever the promotion's own require_approval says.")


class DeploymentRecord(Record):
    """One row of ``ops.deployments``, as a promotion step sees it: a database, a filestore, a process."""

    deployment_id: str = Field(description="Primary key; also the router's name for the upstream.")
    environment_id: str = Field(description="The environment it belongs to.")
    db_name: str = Field(description="Its physical PostgreSQL database.")
    data_dir: str = Field(description="Its own Odoo data_dir: filestore/<odoo_db_name>/, and sessions/ (shared).")
    http_port: int | None = Field(description="Odoo's HTTP port on loopback.")
    websocket_port: int | None = Field(description="Odoo's websocket port (the HTTP port when Odoo has one port).")
    pid: int | None = Field(description="Its Odoo process, when one was started and not stopped since.")
    state: DeploymentState = Field(description="active, standby, retired or deleted (see deployments.py).")
    odoo_db_name: str | None = Field(default=None, description="The name its Odoo serves the database under (the"
                                     " environment's; None: its physical name, for a legacy deployment).")
    db_role: str | None = Field(default=None, description="Its own PostgreSQL role (CONNECT on its database only);"
                                " None: a legacy deployment on the server's DSN user.")
    endpoint_port: int | None = Field(default=None, description="Port of its PgBouncer on loopback: the only way its"
                                      " Odoo reaches PostgreSQL.")
    endpoint_pid: int | None = Field(default=None, description="Its PgBouncer process, while one runs.")
    pid_started: int | None = Field(default=None, description="Its Odoo's start time (field 22 of /proc/PID/stat):"
                                    " a stop signals ``pid`` only while it names that process.")
    endpoint_started: int | None = Field(default=None, description="Its PgBouncer's start time, likewise.")
    owns_data_dir: bool = Field(default=True, description="True: a promotion made its data_dir and removing it"
                                " removes the folder; False: adopted, in the operator's data_dir, of which removing it"
                                " removes only its filestore folder and sessions link.")
    host: str | None = Field(default=None, description="The process host its Odoo and PgBouncer run on (a name of"
                             " the settings' process_hosts); None: the promoter's own machine.")

    @property
    def served_db(self) -> str:
        """The database name its Odoo serves (what sessions, clients and the filestore folder use)."""
        return self.odoo_db_name or self.db_name


class DeploymentOnServer(DeploymentRecord):
    """A deployment with what removing it takes: its environment's server, and the run that made it.

    Kept apart from ``DeploymentRecord`` so that the promotion's evidence (which dumps deployments) keeps
    its shape."""

    db_dsn_ref: str = Field(description="Secret reference to the DSN of its environment's database server.")
    created_by_run: str | None = Field(default=None, description="The run that created it (None for a seed).")
    created_at: datetime | None = Field(default=None, description="When it was recorded (an adopted or seeded"
                                        " deployment is live since then).")


class AbortRequest(Record):
    """Someone asked a running promotion to stop and roll back (an ``abort`` event in ``ops.run_events``)."""

    requested_by: str = Field(description="Who asked (holds 'promote' on the run's project).")
    reason: str = Field(description="Why, as given.")
    at: datetime = Field(description="When it was asked.")


class ApprovalRecord(Record):
    """Someone approved a promotion awaiting approval (an ``approve`` event in ``ops.run_events``)."""

    approved_by: str = Field(description="Who approved (holds 'promote' on the run's project).")
    at: datetime = Field(description="When it was approved.")


class RunRecord(Record):
    """One row of ``ops.runs``: a promotion, a restore or a deploy, and how it ended."""

    run_id: str = Field(description="run_<UTC timestamp>_<8 hex>.")
    project_id: str = Field(description="The project it ran for.")
    environment_id: str = Field(description="The environment it changed (production, for a promotion).")
    operation_type: str = Field(description="promote, restore or deploy.")
    status: RunStatus = Field(description="running, success, failed or rolled_back (see runs.py).")
    created_by: str = Field(description="Who started it.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="What later steps and processes need.")
    dagster_run_id: str | None = Field(default=None, description="The Dagster run executing it, if any.")
    evidence_dir: str | None = Field(default=None, description="Its evidence folder, once created.")
    rolled_back_at: datetime | None = Field(default=None, description="When it was rolled back.")
    created_at: datetime = Field(description="When it started.")
    completed_at: datetime | None = Field(default=None, description="When it ended.")


class ScheduledTaskRecord(Record):
    """One row of ``ops.scheduled_tasks``: deferred work (blue's deletion after the rollback window)."""

    task_id: int = Field(description="Primary key.")
    task_type: str = Field(description="delete_backup or delete_deployment.")
    execute_at: datetime = Field(description="Due from then on.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="What the task works on.")
    status: TaskStatus = Field(description="pending, running, done, failed or cancelled (see tasks.py).")
    attempts: int = Field(description="Claims so far.")
    last_error: str | None = Field(default=None, description="Why the last attempt failed or it was cancelled.")
    run_id: str | None = Field(default=None, description="The run that scheduled it.")
    claimed_at: datetime | None = Field(default=None, description="When the current claim was made.")
    claimed_by: str | None = Field(default=None, description="host:pid of the worker holding the claim.")
    done_at: datetime | None = Field(default=None, description="When it was done.")
    created_at: datetime = Field(description="When it was scheduled.")
    updated_at: datetime = Field(description="Last change.")


class ArtifactRecord(Record):
    """One row of ``ops.artifacts``: a verified backup (blue) or staging snapshot (green)."""

    artifact_id: str = Field(description="Primary key; also the artifact store's name for it.")
    environment_id: str = Field(description="The environment it was taken from.")
    role: Literal["green", "blue"] = Field(description="green: staging snapshot; blue: production backup.")
    created_by_run: str | None = Field(default=None, description="The run that took it.")
    contract: dict[str, Any] = Field(description="The artifact contract (v1) as JSON.")
    verified_at: datetime | None = Field(default=None, description="When it was verified.")
    deleted_at: datetime | None = Field(default=None, description="When the store deleted it.")
    deleted_reason: str | None = Field(default=None, description="Why: the retention rule that took it, or blue's"
                                       " deletion after the rollback window.")
    created_at: datetime = Field(description="When it was registered.")


class ArtifactState(ArtifactRecord):
    """A live artifact (not marked deleted) with what the retention rule decides from."""

    run_status: RunStatus | None = Field(default=None, description="Status of the run that took it (None: no run).")
    run_completed_at: datetime | None = Field(default=None, description="When that run ended.")
    run_window_hours: int | None = Field(default=None, description="That run's rollback window (hours), as last set.")
    blue_deletion_at: datetime | None = Field(default=None, description="When its pending blue deletion (the end"
                                              " of its run's rollback window) is due; None: none pending.")
    restored_into: list[str] = Field(default_factory=list, description="Deployments restored from it that are not"
                                     " deleted, as 'deployment_id (state)'.")
    run_serves: bool = Field(default=False, description="Its run's green is an environment's active deployment.")


class TaskRequest(BaseModel):
    """A task to schedule: ``task_type`` due ``delay`` from now."""

    task_type: str = Field(description="delete_backup or delete_deployment.")
    delay: timedelta = Field(description="How long from now it becomes due.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="What the task works on.")
    run_id: str | None = Field(default=None, description="The run scheduling it.")


class ProjectRecord(Record):
    """One row of ``ops.projects``."""

    project_id: str = Field(description="Primary key.")
    name: str = Field(description="What people call it.")


class PermissionRecord(Record):
    """One row of ``ops.permissions``: ``user_id`` may do ``permission`` on ``project_id`` ('admin': anything)."""

    user_id: str = Field(description="Who.")
    project_id: str = Field(description="On which project.")
    permission: str = Field(description="promote or admin.")


class SchemaState(BaseModel):
    """Whether the ops database exists and which migrations it still lacks (read without changing anything)."""

    database_exists: bool = Field(description="The ops database is on its server.")
    pending: list[str] = Field(description="Migrations not applied yet, in order (all of them when it does not"
                               " exist).")

    @property
    def ready(self) -> bool:
        return self.database_exists and not self.pending


class CompletedRun(BaseModel):
    """A run recorded after the fact as a success (a seed deploy, a copy of production into staging)."""

    environment_id: str = Field(description="The environment it changed.")
    operation_type: str = Field(description="deploy or restore.")
    created_by: str = Field(description="Who ran it.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="What it was (commit, source).")
