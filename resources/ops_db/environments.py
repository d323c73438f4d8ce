"""``ops.projects``, ``ops.environments`` and ``ops.permissions``: what a promotion decides from.

A promotion only reads these; they are written when a project is set up (the sandbox, tests) and when an
inventory is applied (``promote inventory apply``), which also renames, updates and revokes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from resources.ops_db.connection import Connection, OpsConnection
from resources.ops_db.records import CompletedRun, EnvironmentRecord, PermissionRecord, ProjectRecord
from resources.ops_db.runs import insert_completed_run

_ENVIRONMENT_COLUMNS = ("environment_id", "project_id", "kind", "git_commit_sha", "db_dsn_ref", "db_name_prefix",
                        "filestore_root", "odoo_url", "router_name", "smoke_login", "smoke_password_ref",
                        "odoo_db_name", "odoo_command", "worker_mode", "workers", "notifications",
                        "require_approval")
# What an update may change: an environment's id, project, kind and lifelong database name stay as created.
_MUTABLE_COLUMNS = tuple(c for c in _ENVIRONMENT_COLUMNS
                         if c not in ("environment_id", "project_id", "kind", "odoo_db_name"))
_INSERT_ENVIRONMENT = (f"INSERT INTO ops.environments ({', '.join(_ENVIRONMENT_COLUMNS)})"
                       f" VALUES ({', '.join(['%s'] * len(_ENVIRONMENT_COLUMNS))})")


def _value(environment: EnvironmentRecord, column: str) -> Any:
    """A column's value as psycopg takes it: the notification settings as JSON (references only, no secret)."""
    value = getattr(environment, column)
    if column == "notifications":
        return Jsonb(value.model_dump(mode="json")) if value is not None else None
    return value


def _insert_environment(conn: Connection, environment: EnvironmentRecord) -> None:
    conn.execute(_INSERT_ENVIRONMENT, tuple(_value(environment, c) for c in _ENVIRONMENT_COLUMNS))


def _grant(conn: Connection, user_id: str, project_id: str, permission: str) -> None:
    conn.execute("INSERT INTO ops.permissions (user_id, project_id, permission) VALUES (%s, %s, %s)",
                 (user_id, project_id, permission))


class EnvironmentsTable(OpsConnection):
    """Projects, their environments, and who may do what on them."""

    # -- reads ---------------------------------------------------------------------------------------
    def project_exists(self, project_id: str) -> bool:
        return self._one("SELECT 1 FROM ops.projects WHERE project_id = %s", (project_id,)) is not None

    def environment(self, environment_id: str) -> EnvironmentRecord | None:
        row = self._one("SELECT * FROM ops.environments WHERE environment_id = %s", (environment_id,))
        return EnvironmentRecord.from_row(row) if row else None

    def environments_of(self, project_id: str) -> list[EnvironmentRecord]:
        """A project's environments, by id."""
        rows = self._all("SELECT * FROM ops.environments WHERE project_id = %s ORDER BY environment_id",
                         (project_id,))
        return [EnvironmentRecord.from_row(r) for r in rows]

    def environments_of_kind(self, kind: str) -> list[EnvironmentRecord]:
        """Every environment of one kind (``production``: what ``promote live`` reports), by id."""
        rows = self._all("SELECT * FROM ops.environments WHERE kind = %s ORDER BY environment_id", (kind,))
        return [EnvironmentRecord.from_row(r) for r in rows]

    def project(self, project_id: str) -> ProjectRecord | None:
        row = self._one("SELECT * FROM ops.projects WHERE project_id = %s", (project_id,))
        return ProjectRecord.from_row(row) if row else None

    def permissions_of(self, project_id: str) -> list[PermissionRecord]:
        """Every grant on a project, by user then permission."""
        rows = self._all("SELECT * FROM ops.permissions WHERE project_id = %s ORDER BY user_id, permission",
                         (project_id,))
        return [PermissionRecord.from_row(r) for r in rows]

    def has_permission(self, user_id: str, project_id: str, permission: str) -> bool:
        """``permission`` (or admin) on the project."""
        row = self._one("SELECT ops.user_has_permission(%s, %s, %s) AS ok", (user_id, project_id, permission))
        return bool(row and row["ok"])

    # -- set-up --------------------------------------------------------------------------------------
    def add_project(self, project_id: str, name: str, environments: Sequence[EnvironmentRecord] = (),
                    grants: Sequence[tuple[str, str]] = (), history: Sequence[CompletedRun] = ()) -> None:
        """A project with its environments, its ``(user_id, permission)`` grants and the runs it already had,
        in one transaction: a set-up that fails half-way leaves nothing, so it can simply be done again."""
        with self.connect() as conn:  # not repeated after a cut: a repeat would find the project there already
            conn.execute("INSERT INTO ops.projects (project_id, name) VALUES (%s, %s)", (project_id, name))
            for environment in environments:
                _insert_environment(conn, environment)
            for user_id, permission in grants:
                _grant(conn, user_id, project_id, permission)
            for run in history:
                insert_completed_run(conn, project_id, run)

    def add_environment(self, environment: EnvironmentRecord) -> None:
        """One more environment of an existing project."""
        with self.connect() as conn:
            _insert_environment(conn, environment)

    def grant_permission(self, user_id: str, project_id: str, permission: str) -> None:
        with self.connect() as conn:
            _grant(conn, user_id, project_id, permission)

    def revoke_permission(self, user_id: str, project_id: str, permission: str) -> None:
        self._run("DELETE FROM ops.permissions WHERE user_id = %s AND project_id = %s AND permission = %s",
                  (user_id, project_id, permission))

    def rename_project(self, project_id: str, name: str) -> None:
        self._run("UPDATE ops.projects SET name = %s WHERE project_id = %s", (name, project_id))

    def update_environment(self, environment: EnvironmentRecord) -> None:
        """Write ``environment``'s changeable columns (its id, project, kind and database name stay as they are)."""
        assignments = ", ".join(f"{c} = %s" for c in _MUTABLE_COLUMNS)
        self._run(f"UPDATE ops.environments SET {assignments} WHERE environment_id = %s",  # noqa: S608 - fixed names
                  (*(_value(environment, c) for c in _MUTABLE_COLUMNS), environment.environment_id))
