"""Fixtures for the stand-in: real PostgreSQL databases and real ``serve`` subprocesses.

Nothing is mocked: each database is created by the ``init`` CLI under a unique name and
dropped afterwards, and each server is ``python -m odoo_standin serve`` on a free loopback
port, stopped with SIGTERM. Password hashing uses 1000 pbkdf2 rounds to stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
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
# The server the DSN names (the suite's own cluster under pytest, see tests/conftest.py), without its user.
_SERVER = psycopg.conninfo.conninfo_to_dict(DSN)
SERVER = f"host={_SERVER.get('host', '127.0.0.1')} port={_SERVER.get('port', 5432)}"
ADMIN_PASSWORD = "Standin-admin-pw-9f3c"
PASSWORD_ENV = "STANDIN_TEST_ADMIN_PASSWORD"
FAST_ROUNDS = "1000"
ALLOW_SUPERUSER = "--allow-superuser-role-for-tests"


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
    """One ``serve`` subprocess; :meth:`start` returns once it answers HTTP (any status).

    ``own_group`` starts it in a process group of its own (as the promoter does), so a test may signal
    the group without signalling pytest.
    """

    def __init__(self, seeded: Seeded, fault_file: Path | None = None, dsn: str = DSN, *extra: str,
                 own_group: bool = False) -> None:
        self.seeded = seeded
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = seeded.data_dir / f"serve-{self.port}.log"
        # The tests connect as ``postgres``, which serve refuses (as odoo-bin does) unless told otherwise.
        args = ["serve", "--db", seeded.db, "--data-dir", str(seeded.data_dir), "--port", str(self.port),
                "--dsn", dsn, ALLOW_SUPERUSER, *extra]
        if fault_file is not None:
            args += ["--fault-file", str(fault_file)]
        self.args = args
        self.own_group = own_group
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15, wait: bool = True) -> Server:
        """Started; with ``wait``, once it answers HTTP (a server meant to die at once is not waited for: on a
        loaded machine it may be gone before it ever answers)."""
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "odoo_standin", *self.args], cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=self.own_group)
        if not wait:
            return self
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
        """SIGTERM and wait; returns the exit code. A server in its own group leaves nothing of it behind."""
        assert self.proc is not None
        if self.own_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL if self.proc.poll() is not None else signal.SIGTERM)
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
    """Shared database of :data:`SHARED_SIZE`, served by the shared servers (so logins change it: an admin's
    login rewrites ``web.base.url`` and rehashes a password hashed with fewer rounds than Odoo's)."""
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

    def make(fault_file: Path | None = None, dsn: str = DSN, *extra: str, own_group: bool = False) -> Server:
        srv = Server(seeded, fault_file, dsn, *extra, own_group=own_group).start()
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


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``, read from /proc (field 5 of ``stat`` is the group)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(entry))
    return sorted(members)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_for(condition: Any, timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


class PgProxy:
    """A TCP relay in front of PostgreSQL that records the database each new connection asks for.

    Put its port in a stand-in's DSN (with ``sslmode=disable gssencmode=disable``, so the first packet is
    the startup message) to see what the stand-in connects to, and :meth:`stop` it to make PostgreSQL
    unreachable.
    """

    def __init__(self, target: tuple[str, int] | None = None) -> None:
        self.target = target or (str(_SERVER.get("host", "127.0.0.1")), int(_SERVER.get("port", 5432)))
        self.databases: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres sslmode=disable gssencmode=disable connect_timeout=3"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            header = client.recv(8, socket.MSG_WAITALL)
            rest = client.recv(int.from_bytes(header[:4], "big") - 8, socket.MSG_WAITALL)
            fields = rest.split(b"\0")
            params = dict(zip(fields[0::2], fields[1::2], strict=False))
            self.databases.append(params.get(b"database", b"").decode())
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            upstream.sendall(header + rest)
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
            _pipe(client, upstream)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone would not
        self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def rpc(client: httpx.Client, url: str, params: dict[str, Any], rpc_id: int = 1) -> dict[str, Any]:
    response = client.post(url, json={"jsonrpc": "2.0", "method": "call", "params": params, "id": rpc_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
