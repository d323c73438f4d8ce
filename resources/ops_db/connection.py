"""Connections to the ops database: opened patiently, reused within a process, one transaction per block.

Migrations are plain SQL files in ``resources/migrations``, applied in order, once each, under an
advisory lock so that two processes starting together do not race.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources as importlib_resources
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from resources.ops_db.records import SchemaState

_MIGRATION_LOCK = 7_142_001

RECONNECT_SECONDS = 20.0
# How a cut connection shows: no SQLSTATE (the socket closed under libpq), the server shutting down
# (57P01-57P03), or a connection exception (class 08).
_CONNECTION_LOST = (None, "57P01", "57P02", "57P03", "08000", "08003", "08006")
T = TypeVar("T")
_PERMANENT_CONNECT_ERRORS = ("does not exist", "authentication failed", "no pg_hba.conf entry", "permission denied")

Row = dict[str, Any]
Connection = psycopg.Connection[Row]


class OpsDatabaseUnreachable(psycopg.OperationalError):
    """No connection to the ops database could be made. Its message is one line naming the database, where it was
    looked for and libpq's reason, never the DSN's password: what a command prints, and what a step that failed on
    it reports (in place of libpq's two-line message)."""


def unreachable(conninfo: str, exc: BaseException) -> OpsDatabaseUnreachable:
    """The error for a connection to ``conninfo`` that failed with ``exc``."""
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    host = info.get("host") or info.get("hostaddr") or "the local socket"
    port = info.get("port") or "5432"
    # libpq says "connection failed: connection to server at "H", port P failed: <why>\n\t<a hint>"; the why is
    # what is worth a line (the hint repeats it), without the server's "FATAL:" label.
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    why = text.rsplit(" failed: ", 1)[-1].removeprefix("connection failed: ").replace("FATAL:", "")
    why = " ".join(why.split())[:200]
    why = why[:1].lower() + why[1:]
    return OpsDatabaseUnreachable(f"ops database {info.get('dbname') or ''} unreachable at {host}:{port} ({why})")


def connect_retrying(conninfo: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Connect, retrying while the server is restarting or briefly unreachable; raises OpsDatabaseUnreachable.

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
                raise unreachable(conninfo, exc) from exc
            time.sleep(0.2)


def _migrations() -> list[tuple[str, str]]:
    """``(version, SQL)`` of every migration in ``resources/migrations``, in order."""
    folder = importlib_resources.files("resources") / "migrations"
    entries = sorted((e for e in folder.iterdir() if e.name.endswith(".sql")), key=lambda e: e.name)
    return [(e.name.removesuffix(".sql"), e.read_text()) for e in entries]


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
        self._idle: dict[str, list[Connection]] = {}
        self._inherited: list[Any] = []  # a parent's connections, kept referenced so that they are never closed here

    def _mine(self) -> None:
        if self._pid != os.getpid():
            self._inherited.append(self._idle)
            self._idle, self._pid = {}, os.getpid()

    def take(self, conninfo: str) -> Connection:
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

    def give_back(self, conninfo: str, conn: Connection) -> None:
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


class OpsConnection:
    """Transactions on the ops database, for the table classes that own its statements.

    The resource (``OpsDatabase``) says where the database is, through ``_conninfo``; everything else
    about reaching it lives here.
    """

    def _conninfo(self, dbname: str | None = None) -> str:
        """libpq connection string to ``dbname`` on the ops server (the ops database itself when None)."""
        raise NotImplementedError  # the resource knows its DSN and database name

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """One transaction on a connection to the ops database: committed if the block ends normally, rolled
        back if it raises (as ``with psycopg.connect(...)`` does); the connection is then kept for reuse."""
        conninfo = self._conninfo()
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

    def transaction(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in one transaction; done again once, on a new connection, if the server cut the
        connection under it (a PostgreSQL restart terminates every session, and the failure path, which
        runs right after a restart, must still get through). Only for work that is safe to repeat: a
        transaction the server cut was rolled back, but in the rare case that it was cut after its commit,
        an insert would be made twice."""
        try:
            with self.connect() as conn:
                return work(conn)
        except OpsDatabaseUnreachable:
            raise  # no connection even with connect_retrying's patience: a second wait would not help
        except psycopg.OperationalError as exc:
            if exc.sqlstate not in _CONNECTION_LOST:
                raise
        with self.connect() as conn:
            return work(conn)

    def ensure_database(self) -> None:
        """Create the ops database on its server if it is not there yet (two processes may race: both fine)."""
        database = psycopg.conninfo.conninfo_to_dict(self._conninfo())["dbname"]
        try:
            server = psycopg.connect(self._conninfo("postgres"), autocommit=True)
        except psycopg.OperationalError as exc:
            raise unreachable(self._conninfo(), exc) from exc
        with server as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            if not exists:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(database))))
                except psycopg.errors.DuplicateDatabase:
                    pass

    def reach(self, timeout: int = 5) -> None:
        """One attempt to reach the ops server, without connect_retrying's patience (which is for a run that
        must get through a PostgreSQL restart): a command started while it is away says so at once. An ops
        database not created yet counts as reached (the command's ``upgrade`` creates it)."""
        conninfo = self._conninfo()
        try:
            psycopg.connect(conninfo, connect_timeout=timeout).close()
        except psycopg.OperationalError as exc:
            if f'database "{psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]}" does not exist' not in str(exc):
                raise unreachable(conninfo, exc) from exc

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
            for version, text in _migrations():
                if version in done:
                    continue
                conn.execute(text)  # type: ignore[call-overload]
                conn.execute("INSERT INTO ops.schema_migrations (version) VALUES (%s)", (version,))
                applied_now.append(version)
        return applied_now

    def schema_state(self) -> SchemaState:
        """Whether the ops database exists and which migrations it lacks, read without creating or changing
        anything (``promote inventory check`` promises no writes)."""
        database = str(psycopg.conninfo.conninfo_to_dict(self._conninfo())["dbname"])
        with psycopg.connect(self._conninfo("postgres"), autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        versions = [version for version, _ in _migrations()]
        if not exists:
            return SchemaState(database_exists=False, pending=versions)
        with psycopg.connect(self._conninfo(), autocommit=True, connect_timeout=5) as conn:
            table = conn.execute("SELECT to_regclass('ops.schema_migrations') IS NOT NULL").fetchone()
            done = {r[0] for r in conn.execute("SELECT version FROM ops.schema_migrations")} if table and table[0] \
                else set()
        return SchemaState(database_exists=True, pending=[v for v in versions if v not in done])

    # -- single statements, each its own transaction (repeated once if a restart cut it) -----------------
    def _one(self, query: str, params: tuple[Any, ...] = ()) -> Row | None:
        return self.transaction(lambda conn: conn.execute(query, params).fetchone())  # type: ignore[arg-type]

    def _all(self, query: str, params: tuple[Any, ...] = ()) -> list[Row]:
        return self.transaction(lambda conn: conn.execute(query, params).fetchall())  # type: ignore[arg-type]

    def _run(self, query: str, params: tuple[Any, ...] = ()) -> int:
        """Execute one statement; return the number of rows it touched."""
        return self.transaction(lambda conn: conn.execute(query, params).rowcount)  # type: ignore[arg-type]
