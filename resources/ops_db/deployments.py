"""``ops.deployments``: which database, filestore and process serve an environment, and in what role.

The deployment's state machine (``state``); these methods are the only code that moves it:

    (add_deployment)     ──► standby     a green, planned before anything of it is created
    (add_deployment)     ──► active      an environment's first deployment (a seed)
    (begin_adoption)     ──► active      an environment's live deployment adopted from the installation that ran it
                                         before, recorded with its ``adopt`` run in one transaction
    standby              ──► active      record_cutover: green, in the same transaction as ...
    active               ──► standby     ... record_cutover: blue, kept for the rollback window
    any                  ──► active      reactivate_deployment: the rollback target; whatever else is active in
                                         its environment ──► retired in the same transaction
    active | standby     ──► retired     retire_deployment: a green that served traffic, kept for the window
    any but deleted      ──► deleted     mark_deployment_deleted: database and filestore removed

A unique index keeps one ``active`` deployment per environment, which is why every move to ``active`` first
moves the previous one out, in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from resources.ops_db.connection import Connection, OpsConnection
from resources.ops_db.records import DeploymentOnServer, DeploymentRecord, DeploymentState
from resources.ops_db.runs import insert_running_run

_INSERT = ("INSERT INTO ops.deployments (deployment_id, environment_id, db_name, data_dir, http_port,"
           " websocket_port, pid, state, created_by_run, artifact_id, odoo_db_name, db_role, endpoint_port,"
           " endpoint_pid, owns_data_dir, host) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
           " %s)")
_WITH_SERVER = "SELECT d.*, e.db_dsn_ref FROM ops.deployments d JOIN ops.environments e USING (environment_id)"


def _insert_deployment(conn: Connection, d: DeploymentRecord, created_by_run: str | None,
                       artifact_id: str | None) -> None:
    conn.execute(_INSERT, (d.deployment_id, d.environment_id, d.db_name, d.data_dir, d.http_port, d.websocket_port,
                           d.pid, d.state, created_by_run, artifact_id, d.odoo_db_name, d.db_role, d.endpoint_port,
                           d.endpoint_pid, d.owns_data_dir, d.host))


class DeploymentsTable(OpsConnection):
    """Reading deployments, and every change of their state."""

    # -- reads ---------------------------------------------------------------------------------------
    def active_deployment(self, environment_id: str) -> DeploymentRecord | None:
        row = self._one("SELECT * FROM ops.deployments WHERE environment_id = %s AND state = 'active'",
                        (environment_id,))
        return DeploymentRecord.from_row(row) if row else None

    def deployment(self, deployment_id: str) -> DeploymentRecord | None:
        row = self._one("SELECT * FROM ops.deployments WHERE deployment_id = %s", (deployment_id,))
        return DeploymentRecord.from_row(row) if row else None

    def deployments_created_by(self, run_id: str,
                               states: Sequence[DeploymentState] | None = None) -> list[DeploymentRecord]:
        """The deployments a run created (its greens), in ``states`` when given, oldest first."""
        if states is None:
            rows = self._all("SELECT * FROM ops.deployments WHERE created_by_run = %s"
                             " ORDER BY created_at, deployment_id", (run_id,))
        else:
            rows = self._all("SELECT * FROM ops.deployments WHERE created_by_run = %s AND state = ANY(%s)"
                             " ORDER BY created_at, deployment_id", (run_id, list(states)))
        return [DeploymentRecord.from_row(r) for r in rows]

    def all_deployments(self) -> list[DeploymentOnServer]:
        """Every deployment, each with its environment's server: staging's and production's may differ."""
        return [DeploymentOnServer.from_row(r) for r in self._all(_WITH_SERVER)]

    def deployment_on_server(self, deployment_id: str) -> DeploymentOnServer | None:
        """A deployment with its environment's server (what removing it takes)."""
        row = self._one(_WITH_SERVER + " WHERE deployment_id = %s", (deployment_id,))
        return DeploymentOnServer.from_row(row) if row else None

    def latest_deployment_of_run(self, run_id: str) -> DeploymentOnServer | None:
        """The last deployment a run created (its green), with its environment's server."""
        row = self._one(_WITH_SERVER + " WHERE created_by_run = %s ORDER BY created_at DESC LIMIT 1", (run_id,))
        return DeploymentOnServer.from_row(row) if row else None

    def run_serving(self, environment_id: str) -> str | None:
        """The run whose green is the environment's active deployment (None: none active, or a seed)."""
        row = self._one("SELECT created_by_run FROM ops.deployments WHERE environment_id = %s AND state = 'active'",
                        (environment_id,))
        return row["created_by_run"] if row else None

    def restoring_backend_pid(self) -> int | None:
        """A backend of ``pg_restore`` writing into a deployment of a running run (drills strike at that moment)."""
        row = self._one("SELECT a.pid FROM ops.deployments d JOIN ops.runs r ON r.run_id = d.created_by_run"
                        " JOIN pg_stat_activity a ON a.datname = d.db_name"
                        " WHERE r.status = 'running' AND a.application_name = 'pg_restore'")
        return int(row["pid"]) if row else None

    # -- changes -------------------------------------------------------------------------------------
    def add_deployment(self, deployment: DeploymentRecord, created_by_run: str | None = None,
                       artifact_id: str | None = None) -> None:
        """Record a deployment, in its record's state (standby for a green, active for a seed)."""
        self.transaction(lambda conn: _insert_deployment(conn, deployment, created_by_run, artifact_id))

    def begin_adoption(self, project_id: str, deployment: DeploymentRecord, created_by: str,
                       metadata: dict[str, Any]) -> str:
        """An environment's live deployment adopted: an ``adopt`` run, ``running``, and the deployment (active,
        created by that run) in one transaction, before anything of it is touched, so that whoever looks finds
        both or neither. Returns the run's id; the caller ends the run with ``mark_run_finished``."""
        assert deployment.state == "active", "an adopted deployment is its environment's live one"
        with self.connect() as conn:  # not repeated after a cut: a repeat could make a second run
            run_id = insert_running_run(conn, project_id, deployment.environment_id, "adopt", created_by, metadata)
            _insert_deployment(conn, deployment, run_id, None)
        return run_id

    def set_deployment_pid(self, deployment_id: str, pid: int, started: int | None) -> None:
        """The Odoo process now serving a deployment, with its start time (not a change of state)."""
        self._run("UPDATE ops.deployments SET pid = %s, pid_started = %s, updated_at = now()"
                  " WHERE deployment_id = %s", (pid, started, deployment_id))

    def set_endpoint_pid(self, deployment_id: str, pid: int | None, started: int | None) -> None:
        """The PgBouncer process now in front of a deployment's database, with its start time (None: stopped)."""
        self._run("UPDATE ops.deployments SET endpoint_pid = %s, endpoint_started = %s, updated_at = now()"
                  " WHERE deployment_id = %s", (pid, started, deployment_id))

    def record_cutover(self, blue_id: str, green_id: str, run_id: str, timestamp: datetime) -> None:
        """The router now serves green: blue standby, green active, the cutover's time in the run; one transaction."""
        with self.connect() as conn:
            conn.execute("UPDATE ops.deployments SET state = 'standby', updated_at = now() WHERE deployment_id = %s",
                         (blue_id,))
            conn.execute("UPDATE ops.deployments SET state = 'active', updated_at = now() WHERE deployment_id = %s",
                         (green_id,))
            conn.execute("UPDATE ops.runs SET metadata = metadata || %s WHERE run_id = %s",
                         (Jsonb({"cutover_timestamp": timestamp.isoformat()}), run_id))

    def reactivate_deployment(self, environment_id: str, deployment_id: str) -> None:
        """The router serves ``deployment_id`` again: it is active, anything else active in the environment
        retired. Repeated once if a restart cut it: both statements are idempotent."""
        def mark(conn: Connection) -> None:
            conn.execute("UPDATE ops.deployments SET state = 'retired', updated_at = now()"
                         " WHERE environment_id = %s AND state = 'active' AND deployment_id <> %s",
                         (environment_id, deployment_id))
            conn.execute("UPDATE ops.deployments SET state = 'active', updated_at = now() WHERE deployment_id = %s",
                         (deployment_id,))

        self.transaction(mark)

    def retire_deployment(self, deployment_id: str) -> None:
        """Stopped, its database kept until its scheduled deletion."""
        self._run("UPDATE ops.deployments SET state = 'retired', pid = NULL, endpoint_pid = NULL, pid_started = NULL,"
                  " endpoint_started = NULL, updated_at = now()"
                  " WHERE deployment_id = %s", (deployment_id,))

    def mark_deployment_deleted(self, deployment_id: str) -> None:
        """Its process, database and filestore are gone."""
        self._run("UPDATE ops.deployments SET state = 'deleted', pid = NULL, endpoint_pid = NULL, pid_started = NULL,"
                  " endpoint_started = NULL, updated_at = now()"
                  " WHERE deployment_id = %s", (deployment_id,))
