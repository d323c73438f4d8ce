"""The ops database: the system of record for projects, environments, runs and artifacts.

Everything a promotion decides from (permissions, the staging run history, commit SHAs, which
deployment is live) and everything it leaves behind (runs, events, artifacts, scheduled blue
deletions, rejections) lives in the ``ops`` schema of one PostgreSQL database. Migrations are
plain SQL files applied in order, once each, under an advisory lock so that two processes
starting together do not race.

Mutual exclusion on a production environment is a session-level advisory lock held by a
dedicated connection for the whole run: it is released by PostgreSQL itself when the holding
process dies, which makes it both race-free and a liveness signal.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources as importlib_resources
from typing import Any, TypeVar

import psycopg
from dagster import ConfigurableResource
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import Field

from resources import secrets

_MIGRATION_LOCK = 7_142_001
_PROMOTION_LOCK_CLASS = 7_142


RECONNECT_SECONDS = 20.0
# How a cut connection shows: no SQLSTATE (the socket closed under libpq), the server shutting down
# (57P01-57P03), or a connection exception (class 08).
_CONNECTION_LOST = (None, "57P01", "57P02", "57P03", "08000", "08003", "08006")
T = TypeVar("T")
_PERMANENT_CONNECT_ERRORS = ("does not exist", "authentication failed", "no pg_hba.conf entry", "permission denied")


def connect_retrying(conninfo: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Connect, retrying while the server is restarting or briefly unreachable.

    A rollback must still reach the ops database right after a PostgreSQL restart (the restart
    that made the step fail), so connection refusals are retried for up to RECONNECT_SECONDS.
    """
    deadline = time.monotonic() + RECONNECT_SECONDS
    while True:
        try:
            return psycopg.connect(conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            # Only a server that is away is worth waiting for; a wrong name or credentials will not heal.
            if time.monotonic() >= deadline or any(s in str(exc) for s in _PERMANENT_CONNECT_ERRORS):
                raise
            time.sleep(0.2)


class IdleConnections:
    """Open ops-database connections kept for reuse within this process, a few per server and database.

    A promotion asks the ops database about fifty short questions, and opening a connection starts a
    PostgreSQL backend each time (about 5 ms here): reusing them saves a quarter of a second per run.
    A connection is handed out only after a round trip proves it alive, so one that a PostgreSQL
    restart or a forced ``DROP DATABASE`` cut is replaced by a new one (with ``connect_retrying``'s
    patience) instead of failing the caller's first query. A forked child never touches its parent's
    connections: it would share, and could close, their sockets.
    """

    def __init__(self, per_database: int = 4) -> None:
        self.per_database = per_database
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._idle: dict[str, list[psycopg.Connection[dict[str, Any]]]] = {}
        self._inherited: list[Any] = []  # a parent's connections, kept referenced so that they are never closed here

    def _mine(self) -> None:
        if self._pid != os.getpid():
            self._inherited.append(self._idle)
            self._idle, self._pid = {}, os.getpid()

    def take(self, conninfo: str) -> psycopg.Connection[dict[str, Any]]:
        while True:
            with self._lock:
                self._mine()
                stack = self._idle.get(conninfo)
                conn = stack.pop() if stack else None
            if conn is None:
                return connect_retrying(conninfo, row_factory=dict_row)
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                conn.close()

    def give_back(self, conninfo: str, conn: psycopg.Connection[dict[str, Any]]) -> None:
        """Return a connection whose transaction has ended; close it if it is not reusable or not needed."""
        from psycopg.pq import TransactionStatus

        with self._lock:
            self._mine()
            stack = self._idle.setdefault(conninfo, [])
            if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE or \
                    len(stack) >= self.per_database:
                conn.close()
            else:
                stack.append(conn)


_IDLE = IdleConnections()


@dataclass
class EnvironmentLock:
    """A held promotion lock; ``release`` is idempotent."""

    environment_id: str
    conn: psycopg.Connection[Any] | None
    conninfo: str = ""

    def ensure(self) -> bool:
        """Hold the lock again if its session was lost (a PostgreSQL restart); False if someone else took it."""
        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                pass
        self.conn = connect_retrying(self.conninfo, autocommit=True)
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                (_PROMOTION_LOCK_CLASS, self.environment_id)).fetchone()
        return bool(row and row[0])

    def release(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()  # closing the session releases the advisory lock
        self.conn = None


class OpsDatabase(ConfigurableResource):
    """PostgreSQL database holding the ``ops`` schema.

    ``dsn_ref`` names the secret holding the libpq DSN of the server (it may carry a password);
    ``database`` is the database name on it, created on first use.
    """

    dsn_ref: str = Field(default="PROMOTE_OPS_DSN", description="Secret reference to the server DSN.")
    database: str = Field(default="promote_ops", description="Database holding the ops schema.")

    # -- connections -------------------------------------------------------------------------
    def _conninfo(self, dbname: str) -> str:
        return psycopg.conninfo.make_conninfo(secrets.resolve(self.dsn_ref), dbname=dbname)

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """One transaction on a connection to the ops database: committed if the block ends normally, rolled
        back if it raises (as ``with psycopg.connect(...)`` does); the connection is then kept for reuse."""
        conninfo = self._conninfo(self.database)
        conn = _IDLE.take(conninfo)
        try:
            yield conn
        except BaseException:
            try:
                conn.rollback()
            except psycopg.Error:
                conn.close()
            _IDLE.give_back(conninfo, conn)
            raise
        try:
            conn.commit()
        except BaseException:
            conn.close()
            raise
        _IDLE.give_back(conninfo, conn)

    def ensure_database(self) -> None:
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
                except psycopg.errors.DuplicateDatabase:
                    pass

    def upgrade(self) -> list[str]:
        """Apply pending migrations in order; return the versions applied now."""
        self.ensure_database()
        applied_now: list[str] = []
        with self.connect() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS ops.schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in conn.execute("SELECT version FROM ops.schema_migrations")}
            folder = importlib_resources.files("resources") / "migrations"
            for entry in sorted(folder.iterdir(), key=lambda p: p.name):
                version = entry.name.removesuffix(".sql")
                if not entry.name.endswith(".sql") or version in done:
                    continue
                conn.execute(entry.read_text())  # type: ignore[call-overload]
                conn.execute("INSERT INTO ops.schema_migrations (version) VALUES (%s)", (version,))
                applied_now.append(version)
        return applied_now

    def transaction(self, work: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        """``work(conn)`` in one transaction; done again once, on a new connection, if the server cut the
        connection under it (a PostgreSQL restart terminates every session, and the failure path, which
        runs right after a restart, must still get through). Only for work that is safe to repeat: a
        transaction the server cut was rolled back, but in the rare case that it was cut after its commit,
        an insert would be made twice."""
        try:
            with self.connect() as conn:
                return work(conn)
        except psycopg.OperationalError as exc:
            if exc.sqlstate not in _CONNECTION_LOST:
                raise
        with self.connect() as conn:
            return work(conn)

    # -- reads ---------------------------------------------------------------------------------
    def fetch_one(self, query: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        return self.transaction(lambda conn: conn.execute(query, params).fetchone())  # type: ignore[arg-type]

    def fetch_all(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self.transaction(lambda conn: conn.execute(query, params).fetchall())  # type: ignore[arg-type]

    def execute(self, query: str, params: tuple[Any, ...] = ()) -> None:
        self.transaction(lambda conn: conn.execute(query, params))  # type: ignore[arg-type]

    def environment(self, environment_id: str) -> dict[str, Any] | None:
        return self.fetch_one("SELECT * FROM ops.environments WHERE environment_id = %s", (environment_id,))

    def active_deployment(self, environment_id: str) -> dict[str, Any] | None:
        return self.fetch_one(
            "SELECT * FROM ops.deployments WHERE environment_id = %s AND state = 'active'", (environment_id,)
        )

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self.fetch_one("SELECT * FROM ops.runs WHERE run_id = %s", (run_id,))

    def has_permission(self, user_id: str, project_id: str, permission: str) -> bool:
        row = self.fetch_one("SELECT ops.user_has_permission(%s, %s, %s) AS ok", (user_id, project_id, permission))
        return bool(row and row["ok"])

    # -- writes --------------------------------------------------------------------------------
    def record_rejection(self, check_name: str, message: str, inputs: dict[str, Any]) -> None:
        self.execute(
            "INSERT INTO ops.rejections (check_name, message, inputs) VALUES (%s, %s, %s)",
            (check_name, message, Jsonb(inputs)),
        )

    def create_run(self, project_id: str, environment_id: str, user_id: str, metadata: dict[str, Any],
                   dagster_run_id: str | None, operation_type: str = "promote") -> str:
        row = self.fetch_one(
            "INSERT INTO ops.runs (run_id, project_id, environment_id, operation_type, status, created_by,"
            " metadata, dagster_run_id) VALUES (ops.gen_run_id(), %s, %s, %s, 'running', %s, %s, %s)"
            " RETURNING run_id",
            (project_id, environment_id, operation_type, user_id, Jsonb(metadata), dagster_run_id),
        )
        assert row is not None
        return str(row["run_id"])

    def merge_run_metadata(self, run_id: str, values: dict[str, Any]) -> None:
        self.execute("UPDATE ops.runs SET metadata = metadata || %s WHERE run_id = %s", (Jsonb(values), run_id))

    def add_event(self, run_id: str, step: str, level: str, message: str,
                  details: dict[str, Any] | None = None) -> None:
        self.execute(
            "INSERT INTO ops.run_events (run_id, step, level, message, details) VALUES (%s, %s, %s, %s, %s)",
            (run_id, step, level, message, Jsonb(details or {})),
        )

    def register_artifact(self, artifact_id: str, environment_id: str, role: str, run_id: str,
                          contract: dict[str, Any]) -> None:
        self.execute(
            "INSERT INTO ops.artifacts (artifact_id, environment_id, role, created_by_run, contract, verified_at)"
            " VALUES (%s, %s, %s, %s, %s, now())",
            (artifact_id, environment_id, role, run_id, Jsonb(json.loads(json.dumps(contract, default=str)))),
        )

    # -- exclusion -----------------------------------------------------------------------------
    def try_lock_environment(self, environment_id: str) -> EnvironmentLock | None:
        """Take the promotion lock on an environment, or None when another session holds it."""
        conn = connect_retrying(self._conninfo(self.database), autocommit=True)
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_PROMOTION_LOCK_CLASS, environment_id)
        ).fetchone()
        if not row or not row[0]:
            conn.close()
            return None
        return EnvironmentLock(environment_id, conn, self._conninfo(self.database))

    def wait_lock_environment(self, environment_id: str, timeout_seconds: float) -> EnvironmentLock | None:
        """Take the promotion lock, waiting up to ``timeout_seconds`` for its holder; None if it did not come."""
        conn = connect_retrying(self._conninfo(self.database), autocommit=True)
        try:
            conn.execute(f"SET lock_timeout = '{int(timeout_seconds * 1000)}ms'")
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_PROMOTION_LOCK_CLASS, environment_id))
            conn.execute("SET lock_timeout = 0")
        except psycopg.errors.LockNotAvailable:
            conn.close()
            return None
        return EnvironmentLock(environment_id, conn, self._conninfo(self.database))

    def lock_holder_pid(self, environment_id: str) -> int | None:
        """Backend pid of the session holding an environment's promotion lock, if any."""
        row = self.fetch_one(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s AND objid = hashtext(%s)::oid AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())",
            (_PROMOTION_LOCK_CLASS, environment_id),
        )
        return int(row["pid"]) if row else None
