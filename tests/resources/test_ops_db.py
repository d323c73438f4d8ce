"""The ops database's connections: reused within a process, never trusted blindly, never shared with a child.

Against the real PostgreSQL: a connection cut by the server (``pg_terminate_backend``, what a restart or a
forced ``DROP DATABASE`` does to it) is replaced before the caller sees it; a block that raises leaves
nothing behind; a forked child opens its own.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from promote_pipeline.promotion import settings
from resources.ops_db import OpsDatabase

DSN_REF = "PROMOTE_TEST_OPS_DSN"


@pytest.fixture
def ops_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpsDatabase]:
    monkeypatch.setenv(DSN_REF, settings.default_server_dsn())
    db = OpsDatabase(dsn_ref=DSN_REF, database=f"ops_conn_test_{secrets.token_hex(4)}")
    db.upgrade()
    yield db
    admin = psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.database)))


def _backend(db: OpsDatabase) -> int:
    with db.connect() as conn:
        row = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
    assert row is not None
    return int(row["pid"])


def _project_ids(db: OpsDatabase) -> list[dict[str, object]]:
    with db.connect() as conn:
        return conn.execute("SELECT project_id FROM ops.projects").fetchall()


def _terminate(pid: int) -> None:
    admin = psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_a_connection_is_reused_and_a_cut_one_replaced(ops_db: OpsDatabase) -> None:
    first = _backend(ops_db)
    assert _backend(ops_db) == first  # the same backend answers the next question: no new connection

    _terminate(first)  # what a PostgreSQL restart does to an idle connection
    replaced = _backend(ops_db)  # the caller's query does not fail on the dead one
    assert replaced != first
    assert _backend(ops_db) == replaced


def test_a_block_commits_or_rolls_back_like_a_fresh_connection(ops_db: OpsDatabase) -> None:
    with ops_db.connect() as conn:
        conn.execute("INSERT INTO ops.projects (project_id, name) VALUES ('kept', 'k')")
    with pytest.raises(RuntimeError), ops_db.connect() as conn:
        conn.execute("INSERT INTO ops.projects (project_id, name) VALUES ('dropped', 'd')")
        raise RuntimeError("the step failed")
    with pytest.raises(psycopg.errors.UniqueViolation), ops_db.connect() as conn:
        conn.execute("INSERT INTO ops.projects (project_id, name) VALUES ('kept', 'again')")

    names = {r["project_id"] for r in _project_ids(ops_db)}
    assert names == {"kept"}  # committed once, the failed blocks left nothing (and their connection is usable)


def test_a_forked_child_opens_its_own_connection(ops_db: OpsDatabase) -> None:
    parent = _backend(ops_db)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: must not use, nor close, the parent's idle connection
        code = 1
        try:
            os.close(read)
            os.write(write, str(_backend(ops_db)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    child_backend = int(os.read(read, 64).decode() or 0)
    os.close(read)
    assert os.waitpid(child, 0)[1] == 0
    assert child_backend not in (0, parent)
    assert _backend(ops_db) == parent  # the parent's connection survived the child


def test_a_transaction_cut_by_the_server_is_done_again_once(ops_db: OpsDatabase) -> None:
    backends: list[int] = []

    def work(conn: psycopg.Connection[dict[str, object]]) -> int:
        row = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
        assert row is not None
        backends.append(int(str(row["pid"])))
        if len(backends) == 1:
            _terminate(backends[0])  # a restart's fast shutdown, in the middle of the transaction
            conn.execute("SELECT 1")
        conn.execute("INSERT INTO ops.projects (project_id, name) VALUES ('once', 'o')")
        return backends[-1]

    assert ops_db.transaction(work) == backends[1] != backends[0]
    assert _project_ids(ops_db) == [{"project_id": "once"}]


def test_other_operational_errors_are_not_repeated(ops_db: OpsDatabase) -> None:
    calls: list[int] = []

    def work(conn: psycopg.Connection[dict[str, object]]) -> None:
        calls.append(1)
        conn.execute("SET LOCAL statement_timeout = 1")
        conn.execute("SELECT pg_sleep(1)")

    with pytest.raises(psycopg.errors.QueryCanceled):
        ops_db.transaction(work)
    assert calls == [1]
    assert _backend(ops_db)  # and the connection it used is usable again
