"""The ops database: the system of record for projects, environments, runs and artifacts, and its one owner.

Everything a promotion decides from (permissions, the staging run history, commit SHAs, which
deployment is live) and everything it leaves behind (runs, events, artifacts, scheduled blue
deletions, rejections) lives in the ``ops`` schema of one PostgreSQL database. Every statement
against that schema lives in this package, behind methods named after what they do, which return
typed records: the run's and the deployment's state machines are written down once, in ``runs.py``,
``deployments.py`` and ``tasks.py``, next to the only statements that move them.

Mutual exclusion on a production environment is a session-level advisory lock held by a
dedicated connection for the whole run (``locks.py``).
"""

from __future__ import annotations

import psycopg
from dagster import ConfigurableResource
from pydantic import Field

from resources import secrets
from resources.ops_db.approvals import ApprovalsTable
from resources.ops_db.artifacts import ArtifactsTable
from resources.ops_db.connection import (
    RECONNECT_SECONDS,
    IdleConnections,
    OpsDatabaseUnreachable,
    connect_retrying,
)
from resources.ops_db.deployments import DeploymentsTable
from resources.ops_db.environments import EnvironmentsTable
from resources.ops_db.events import EventsTable
from resources.ops_db.locks import EnvironmentLock, EnvironmentLocks
from resources.ops_db.records import (
    AbortRequest,
    ApprovalRecord,
    ArtifactRecord,
    ArtifactState,
    CompletedRun,
    DeploymentOnServer,
    DeploymentRecord,
    DeploymentState,
    EnvironmentKind,
    EnvironmentRecord,
    FinalRunStatus,
    PermissionRecord,
    ProjectRecord,
    Record,
    RunRecord,
    RunStatus,
    ScheduledTaskRecord,
    SchemaState,
    TaskRequest,
    TaskStatus,
    WorkerMode,
)
from resources.ops_db.runs import RunsTable
from resources.ops_db.tasks import ScheduledTasksTable

__all__ = [
    "AbortRequest",
    "ApprovalRecord",
    "RECONNECT_SECONDS",
    "ArtifactRecord",
    "ArtifactState",
    "CompletedRun",
    "DeploymentOnServer",
    "DeploymentRecord",
    "DeploymentState",
    "EnvironmentKind",
    "EnvironmentLock",
    "EnvironmentRecord",
    "FinalRunStatus",
    "IdleConnections",
    "OpsDatabase",
    "OpsDatabaseUnreachable",
    "PermissionRecord",
    "ProjectRecord",
    "Record",
    "RunRecord",
    "RunStatus",
    "ScheduledTaskRecord",
    "SchemaState",
    "TaskRequest",
    "TaskStatus",
    "WorkerMode",
    "connect_retrying",
]


class OpsDatabase(RunsTable, DeploymentsTable, EnvironmentsTable, ScheduledTasksTable, ArtifactsTable, EventsTable,
                  ApprovalsTable, EnvironmentLocks, ConfigurableResource):
    """PostgreSQL database holding the ``ops`` schema.

    ``dsn_ref`` names the secret holding the libpq DSN of the server (it may carry a password);
    ``database`` is the database name on it, created on first use.
    """

    dsn_ref: str = Field(default="PROMOTE_OPS_DSN", description="Secret reference to the server DSN.")
    database: str = Field(default="promote_ops", description="Database holding the ops schema.")

    def _conninfo(self, dbname: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(secrets.resolve(self.dsn_ref), dbname=dbname or self.database)
