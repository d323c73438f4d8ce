"""The real-Odoo sandbox of the opt-in test: one per router, its names unique to the run, bounded in time, and
removed whatever happens (its databases, roles, processes and folders), with a check that nothing is left.

Opt-in: it needs an installed Odoo named by PROMOTE_REAL_ODOO_BIN (odoo-bin), PROMOTE_REAL_ODOO_ADDONS (its
addons path) and PROMOTE_REAL_ODOO_PYTHON (the interpreter with Odoo's requirements); without them every
test of this folder is skipped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from promote_pipeline.cli.real_odoo import NOT_NAMED, RealOdoo, RealOdooSandbox
from promote_pipeline.promotion import settings

REAL = RealOdoo.from_env()
ROUTERS = ("haproxy", "nginx")


@contextlib.contextmanager
def bounded(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeoutError in this (the main) thread if ``what`` takes longer than ``seconds``."""
    def expire(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"{what} took more than {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def deadline() -> Callable[[float, str], contextlib.AbstractContextManager[None]]:
    """``with deadline(seconds, what):`` raises TimeoutError when ``what`` overruns (test modules cannot import
    this file)."""
    return bounded


def _server() -> psycopg.Connection[Any]:
    return psycopg.connect(settings.default_server_dsn() + " dbname=postgres connect_timeout=5", autocommit=True)


def leftovers(prefix: str, ops_database: str, root: Path) -> dict[str, list[Any]]:
    """Databases and roles named by this run, and processes whose command line names its folder."""
    with _server() as conn:
        dbs = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE left(datname, length(%s)) = %s"
                                          " OR datname = %s", (prefix, prefix, ops_database)).fetchall()]
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE left(rolname, length(%s)) = %s",
                                            (prefix, prefix)).fetchall()]
    return {"databases": dbs, "roles": roles, "processes": _processes_naming(root)}


def _processes_naming(root: Path) -> list[int]:
    mark, found = str(root).encode(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if mark in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def sweep(prefix: str, ops_database: str, root: Path) -> None:
    """What a failure may have left unrecorded: this run's processes (by pid), databases, roles."""
    for pid in _processes_naming(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    left = leftovers(prefix, ops_database, root)
    with _server() as conn:
        for db in left["databases"]:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        for role in left["roles"]:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module", params=ROUTERS)
def real_box(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealOdooSandbox]:
    """A real-Odoo sandbox (not yet up) whose evidence goes to its own folder; gone after the module's tests."""
    if REAL is None:
        pytest.skip(NOT_NAMED)
    for path in (REAL.bin, REAL.python):
        if not Path(path).exists():
            pytest.fail(f"{path} (named by the environment) does not exist")
    tag = secrets.token_hex(3)
    top = tmp_path_factory.mktemp(f"real-odoo-{request.param}")
    box = RealOdooSandbox(root=top / "sandbox", router_kind=request.param, ops_database=f"promote_ops_ro_{tag}",
                          db_prefix=f"ro_{tag}", real_odoo=REAL)
    saved = {k: os.environ.get(k) for k in ("PROMOTE_EVIDENCE_ROOT", "PROMOTE_SETTINGS")}
    os.environ["PROMOTE_EVIDENCE_ROOT"] = str(top / "evidence")
    try:
        yield box
    finally:
        try:
            with bounded(120, "tearing the real-Odoo sandbox down"):
                box.down()  # the router, every recorded deployment (Odoo, PgBouncer, database, role, files), ops db
        finally:
            sweep(f"ro_{tag}", f"promote_ops_ro_{tag}", top)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            settings.select(None)
            shutil.rmtree(top, ignore_errors=True)
        left = leftovers(f"ro_{tag}", f"promote_ops_ro_{tag}", top)
        assert not any(left.values()), f"left behind: {left}"
