"""Fixtures for the stand-in: real PostgreSQL databases and real ``serve`` subprocesses.

Nothing is mocked: each database is created by the ``init`` CLI under a unique name and
dropped afterwards, and each server is ``python -m odoo_standin serve`` on a free loopback
port, stopped with SIGTERM. Password hashing uses 1000 pbkdf2 rounds to stay fast.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

# passlib 1.7.4 imports the stdlib ``crypt`` module, deprecated since Python 3.11: import it once
# here with that warning silenced, so the tests' own ``from passlib.hash import ...`` stays quiet.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import passlib.hash  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
DSN = os.environ.get("STANDIN_DSN", "host=127.0.0.1 port=5432 user=postgres")
ADMIN_PASSWORD = "Standin-admin-pw-9f3c"
PASSWORD_ENV = "STANDIN_TEST_ADMIN_PASSWORD"
FAST_ROUNDS = "1000"


def cli(*args: str, password: str | None = ADMIN_PASSWORD, timeout: float = 60,
        ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m odoo_standin ARGS`` from the repository root, capturing its output."""
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    if password is not None:
        env[PASSWORD_ENV] = password
    return subprocess.run([sys.executable, "-m", "odoo_standin", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def unique_db() -> str:
    return f"standin_test_{uuid.uuid4().hex[:12]}"


def drop_db(name: str) -> None:
    with psycopg.connect(DSN, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def connect(db: str) -> psycopg.Connection[Any]:
    return psycopg.connect(DSN, dbname=db, autocommit=True)


@dataclass
class Seeded:
    """A database built by ``init``, and what ``init`` printed about it."""

    db: str
    data_dir: Path
    summary: dict[str, Any]

    @property
    def filestore(self) -> Path:
        return self.data_dir / "filestore" / self.db


def init_db(data_dir: Path, *extra: str, db: str | None = None) -> Seeded:
    name = db or unique_db()
    result = cli("init", "--dsn", DSN, "--db", name, "--data-dir", str(data_dir),
                 "--admin-password-env", PASSWORD_ENV, "--pbkdf2-rounds", FAST_ROUNDS, *extra)
    assert result.returncode == 0, result.stderr
    return Seeded(name, data_dir, json.loads(result.stdout))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One ``serve`` subprocess; :meth:`start` returns once it answers HTTP (any status)."""

    def __init__(self, seeded: Seeded, fault_file: Path | None = None, dsn: str = DSN, *extra: str) -> None:
        self.seeded = seeded
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = seeded.data_dir / f"serve-{self.port}.log"
        args = ["serve", "--db", seeded.db, "--data-dir", str(seeded.data_dir), "--port", str(self.port),
                "--dsn", dsn, *extra]
        if fault_file is not None:
            args += ["--fault-file", str(fault_file)]
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> Server:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "odoo_standin", *self.args], cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}: {self.output()}")
            try:
                httpx.get(f"{self.url}/web/health", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"serve did not answer within {timeout}s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("serve ignored SIGTERM") from None
        return self.proc.returncode


SHARED_SIZE = ("--users", "3", "--partners", "20", "--attachments", "12", "--attachment-size", "4096")
"""3 users (admin + 2), 20 partners, 12 attachments of 4 KiB (ids 1 and 11 public)."""


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """Shared database of :data:`SHARED_SIZE`, served by the shared servers."""
    data_dir = tmp_path_factory.mktemp("standin")
    db = init_db(data_dir, *SHARED_SIZE)
    yield db
    drop_db(db.db)


@pytest.fixture(scope="session")
def server(seeded: Seeded) -> Iterator[Server]:
    """A fault-free server on the shared database."""
    srv = Server(seeded).start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(seeded: Seeded) -> Iterator[Any]:
    """Factory for extra servers on the shared database; all are stopped at teardown."""
    started: list[Server] = []

    def make(fault_file: Path | None = None, dsn: str = DSN, *extra: str) -> Server:
        srv = Server(seeded, fault_file, dsn, *extra).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def scratch_dbs() -> Iterator[list[str]]:
    """Names appended here are dropped after the test."""
    names: list[str] = []
    yield names
    for name in names:
        drop_db(name)


def rpc(client: httpx.Client, url: str, params: dict[str, Any], rpc_id: int = 1) -> dict[str, Any]:
    response = client.post(url, json={"jsonrpc": "2.0", "method": "call", "params": params, "id": rpc_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
