"""The Odoo host: databases, filestores and Odoo server processes of one machine.

Everything a backup or a restore does to an Odoo database goes through here: a parallel
``pg_dump -Fd`` and ``pg_restore -j`` against the environment's PostgreSQL, the filestore's place
(``<data_dir>/filestore/<db>/``; its content goes to and comes from the artifact store's
content-addressed objects), and Odoo processes started from a command template. The template is
what makes the same code run ``odoo-bin`` in production and ``odoo_standin`` in the sandbox.
Passwords travel to child processes through their environment (``PGPASSWORD``), never through
argv, so they never show in ``ps``. A dump is hashed while pg_dump writes it: a thread follows
each file of the dump directory as it grows and hashes the new bytes from the page cache, with
one fixed-size buffer, so no file is read a second time and memory stays flat whatever the size
of the database.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
import psycopg
from dagster import ConfigurableResource
from psycopg import sql
from pydantic import Field

from resources import db_endpoint, http_clients, secrets
from resources.db_endpoint import Endpoint
from resources.odoo_endpoints import DeploymentEndpoints
from resources.ops_db import connect_retrying

CHUNK = 1 << 20


@functools.cache
def _tool_version(tool: str, stamp: int) -> str:
    """``<tool> --version``'s number, asked once per binary (and modification time) per process: every
    artifact records it, and starting pg_dump only to ask costs 40-50 ms."""
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().rsplit(" ", 1)[-1].split()[0] if out.stdout else "unknown"


class HostError(RuntimeError):
    """A host operation failed; the message names the operation and the tool's own words."""


@dataclass
class _Followed:
    """One file another process is writing, hashed up to ``offset``."""

    fd: int
    digest: Any = field(default_factory=hashlib.sha256)
    offset: int = 0
    mtime_ns: int = -1

    def catch_up(self, buf: memoryview) -> bool:
        """Hash the bytes written since the last call; True if there were any."""
        st = os.fstat(self.fd)
        if st.st_size < self.offset:  # truncated under us: start again
            self.digest, self.offset = hashlib.sha256(), 0
        if st.st_size == self.offset:
            return False
        while self.offset < st.st_size:
            n = os.preadv(self.fd, [buf[:min(len(buf), st.st_size - self.offset)]], self.offset)
            if n <= 0:
                break
            self.digest.update(buf[:n])
            self.offset += n
        self.mtime_ns = st.st_mtime_ns
        return True


class DirectoryHasher:
    """Follows the files of a folder while another process writes them, hashing each new byte once.

    ``pg_dump -Fd`` writes every file front to back and never rewrites one; the bytes are read
    from the page cache moments after they were written, so the checksums are ready when pg_dump
    exits and no file of the dump is read again. ``finish`` guards the assumption: a file whose
    size or mtime moved after its last bytes were hashed is hashed again from the start (and
    counted in ``rehashed``).
    """

    POLL_SECONDS = 0.02

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rehashed = 0
        self._files: dict[str, _Followed] = {}
        self._buf = memoryview(bytearray(CHUNK))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._follow, name=f"hash {folder.name}", daemon=True)

    def start(self) -> DirectoryHasher:
        self._thread.start()
        return self

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._scan():
                    self._stop.wait(self.POLL_SECONDS)
        except BaseException as exc:  # noqa: BLE001 - handed to finish()
            self._error = exc

    def _scan(self) -> bool:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return False
        progressed = False
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            followed = self._files.get(entry.name)
            if followed is None:
                followed = self._files[entry.name] = _Followed(os.open(entry.path, os.O_RDONLY))
            progressed = followed.catch_up(self._buf) or progressed
        return progressed

    def finish(self) -> list[tuple[str, str, int]]:
        """Call once the writer has exited: ``(name, sha256, size)`` of every file, sorted by name."""
        self._stop.set()
        self._thread.join()
        try:
            if self._error is not None:
                raise HostError(f"hashing {self.folder} failed: {self._error}")
            while self._scan():
                pass
            out = []
            for name, followed in sorted(self._files.items()):
                st = os.fstat(followed.fd)
                if st.st_size != followed.offset or st.st_mtime_ns != followed.mtime_ns:
                    self.rehashed += 1
                    followed.digest, followed.offset = hashlib.sha256(), 0
                    followed.catch_up(self._buf)
                out.append((name, followed.digest.hexdigest(), followed.offset))
            return out
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        for followed in self._files.values():
            os.close(followed.fd)
        self._files.clear()


_SERVICE_PORTS = (10000, 32768)  # below Linux's default ephemeral range (32768-60999)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _SERVICE_PORTS[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A port no one listens on now, for a server to be started on it. Taken below the kernel's ephemeral range:
    the port is only free until the server binds it, and a port the kernel chose (bind to port 0) is one it also
    hands out as the local end of outgoing connections, so on a busy machine one of those took it first (a
    stand-in then exited with 'address already in use'). A port chosen there is never handed out that way."""
    low, high = _SERVICE_PORTS[0], min(_SERVICE_PORTS[1], _ephemeral_low())
    for _ in range(200 if high - low > 1000 else 0):
        port = random.randrange(low, high)
        if not port_in_use(host, port):
            return port
    with socket.socket() as sock:  # a machine whose ephemeral range leaves no room below it
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on ``host:port`` now (bound as servers bind: with SO_REUSEADDR, so a port
    left in TIME_WAIT by a server just stopped counts as free). Binds for an instant, never listens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@runtime_checkable
class OdooProcessHost(Protocol):
    """What a promotion asks of the host that runs a deployment's Odoo: its processes and its filestore. Both
    ``LocalOdooHost`` (this machine) and ``SshOdooHost`` (a host reached over SSH) offer it."""

    def start_odoo(self, dsn_ref: str, environment_id: str, deployment: str, db: str, data_dir: str,
                   http_port: int, websocket_port: int, endpoint: Endpoint | None = None,
                   command_template: str | None = None, workers: int = 0) -> int: ...

    def wait_healthy(self, url: str, pid: int, websocket_port: int | None = None) -> None: ...

    def is_alive(self, pid: int | None) -> bool: ...

    def process_started(self, pid: int) -> int | None: ...

    def stop_odoo(self, pid: int | None, started: int | None, timeout: float = 10.0) -> str | None: ...

    def filestore_dir(self, data_dir: str, db: str) -> Path: ...

    def filestore_stats(self, data_dir: str, db: str) -> tuple[int, int]: ...

    def filestore_usable(self, data_dir: str, db: str) -> bool: ...

    def remove_filestore(self, data_dir: str, db: str) -> None: ...

    def pg_dump_version(self) -> str: ...


def await_health(url: str, deadline: float, alive: Callable[[], bool], alive_every: float, exited: str,
                 late: str) -> None:
    """Until ``url``'s ``/web/health`` answers 200, for any host. ``alive`` (is the process still there?) is asked
    at most every ``alive_every`` seconds (a remote host's answer costs a round trip): ``HostError(exited)`` at its
    first no, ``HostError(late)`` with the last answer at ``deadline``."""
    last, next_alive = "no answer", 0.0
    with http_clients.client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if time.monotonic() >= next_alive:
                if not alive():
                    raise HostError(exited)
                next_alive = time.monotonic() + alive_every
            try:
                resp = client.get(f"{url}/web/health")
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.05)
    raise HostError(f"{late} ({last})")


class LocalOdooHost(DeploymentEndpoints, ConfigurableResource):
    """Databases, filestores and Odoo processes on this machine, and each deployment's database endpoint."""

    command_template: str = Field(
        description="Command that starts one Odoo server. Placeholders: {python} {db} {data_dir} {http_port}"
        " {websocket_port} {workers} {environment_id} {deployment} {db_host} {db_port} {db_user} {http_interface}"
        " (127.0.0.1 here; a process host's address there)."
    )
    run_dir: str = Field(description="Folder for Odoo process logs.")
    pg_bin_dir: str = Field(default="", description="Folder of pg_dump/pg_restore; empty means PATH.")
    dump_jobs: int = Field(default=2, description="Parallel jobs for pg_dump -Fd (one per core is right).")
    restore_jobs: int = Field(default=2, description="Parallel jobs for pg_restore.")
    dump_compression: int = Field(default=1, description="pg_dump -Z level (low: the dump is on the critical path).")
    startup_timeout_seconds: float = Field(default=30.0, description="How long a new Odoo may take to answer.")
    role_key_ref: str = Field(default="PROMOTE_ROLE_KEY", description="Secret reference to the key every"
                              " deployment role's password is derived from (no role password is stored).")
    pgbouncer_bin: str = Field(default="pgbouncer", description="PgBouncer, each deployment's database endpoint.")
    endpoint_os_user: str = Field(default="postgres", description="Unix user PgBouncer switches to when started"
                                  " as root (it refuses to run as root).")

    # -- PostgreSQL ----------------------------------------------------------------------------
    def _tool(self, name: str) -> str:
        return str(Path(self.pg_bin_dir) / name) if self.pg_bin_dir else name

    def _pg(self, dsn_ref: str, db: str = "postgres") -> tuple[list[str], dict[str, str], dict[str, str]]:
        """Connection args for the pg tools (``-d`` and the whole DSN but its password, for ``db``), the child
        environment (the password, never argv: it would show in ps), and the parsed DSN.

        The whole DSN, not only its host, port and user: staging's and production's servers may be different
        ones, each with its own sslmode, certificates or options, and pg_dump/pg_restore must reach a server
        exactly as the promoter's own connections to it do."""
        params = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(secrets.resolve(dsn_ref)).items()
                  if v is not None}
        env = dict(os.environ)
        password = params.pop("password", None)
        if password:
            env["PGPASSWORD"] = password
        conninfo = psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if k != "dbname"}, dbname=db)
        if password:
            params["password"] = password
        return ["-d", conninfo], env, params

    @contextmanager
    def connect(self, dsn_ref: str, db: str, autocommit: bool = False,
                retry: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """A connection to ``db``. ``retry=False`` for checks that must see a refusal at once (smoke, stability)."""
        conninfo = psycopg.conninfo.make_conninfo(secrets.resolve(dsn_ref), dbname=db, connect_timeout=5)
        conn = connect_retrying(conninfo, autocommit=autocommit) if retry else \
            psycopg.connect(conninfo, autocommit=autocommit)
        with conn:
            yield conn

    def database_exists(self, dsn_ref: str, db: str) -> bool:
        with self.connect(dsn_ref, "postgres") as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is not None

    def sessions_on(self, dsn_ref: str, db: str) -> list[str]:
        """Who else is connected to ``db`` now (``user/application (pid N)`` each): an adoption takes the database
        from whatever serves it today, which must have stopped."""
        with self.connect(dsn_ref, "postgres", retry=False) as conn:
            rows = conn.execute("SELECT usename, application_name, pid FROM pg_stat_activity WHERE datname = %s"
                                " AND pid <> pg_backend_pid() ORDER BY pid", (db,)).fetchall()
        return [f"{user}/{app or '?'} (pid {pid})" for user, app, pid in rows]

    def database_size(self, dsn_ref: str, db: str) -> int:
        with self.connect(dsn_ref, db) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return int(row[0]) if row else 0

    def server_major_version(self, dsn_ref: str) -> int:
        with self.connect(dsn_ref, "postgres") as conn:
            return int(conn.info.server_version // 10000)

    def pg_dump_version(self) -> str:
        tool = shutil.which(self._tool("pg_dump")) or self._tool("pg_dump")
        try:
            stamp = os.stat(tool).st_mtime_ns
        except OSError:
            stamp = 0
        return _tool_version(tool, stamp)

    def pg_dump_major(self) -> int | None:
        """pg_dump's major version (``15`` of ``15.8``), None when it cannot be read."""
        head = self.pg_dump_version().split(".")[0]
        return int(head) if head.isdigit() else None

    def dump_database(self, dsn_ref: str, db: str, dest: Path) -> list[tuple[str, str, int]]:
        """``pg_dump -Fd -j<dump_jobs> -Z<dump_compression>`` into the new folder ``dest``, every file hashed
        while it is written; returns ``(name, sha256, size)`` per file."""
        args, env, _ = self._pg(dsn_ref, db)
        cmd = [self._tool("pg_dump"), *args, "-Fd", f"-j{self.dump_jobs}", f"-Z{self.dump_compression}",
               "--no-owner", "-f", str(dest)]
        hasher = DirectoryHasher(dest).start()
        try:
            # pg_dump makes the folder 0700 but its files with the umask: owner-only, they hold password hashes.
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, umask=0o077)
        except BaseException:
            hasher.close()
            raise
        if proc.returncode != 0:
            hasher.close()
            raise HostError(f"pg_dump of database {db} failed: {proc.stderr.decode(errors='replace').strip()[:400]}")
        return hasher.finish()

    def create_database(self, dsn_ref: str, db: str) -> None:
        with self.connect(dsn_ref, "postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))

    def restore_database(self, dsn_ref: str, db: str, dump: Path) -> None:
        """Restore a dump (directory or custom format) into a new database ``db`` (refused if it exists)."""
        if self.database_exists(dsn_ref, db):
            raise HostError(f"restore refused: database {db} already exists")
        self.create_database(dsn_ref, db)
        args, env, _ = self._pg(dsn_ref, db)
        cmd = [self._tool("pg_restore"), *args, "--no-owner", "--exit-on-error", f"-j{self.restore_jobs}",
               str(dump)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise HostError(f"pg_restore into {db} failed: {proc.stderr.strip()[:400]}")

    def drop_database(self, dsn_ref: str, db: str) -> None:
        with self.connect(dsn_ref, "postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))

    # -- filestore -----------------------------------------------------------------------------
    @staticmethod
    def filestore_dir(data_dir: str, db: str) -> Path:
        return Path(data_dir) / "filestore" / db

    def filestore_stats(self, data_dir: str, db: str) -> tuple[int, int]:
        """(file count, bytes) of a filestore, from metadata only."""
        count = size = 0
        for root, _dirs, files in os.walk(self.filestore_dir(data_dir, db)):
            for name in files:
                count += 1
                size += os.lstat(os.path.join(root, name)).st_size
        return count, size

    def filestore_usable(self, data_dir: str, db: str) -> bool:
        """Whether the filestore folder exists here and this process may read, write and enter it."""
        folder = self.filestore_dir(data_dir, db)
        return folder.is_dir() and os.access(folder, os.R_OK | os.W_OK | os.X_OK)

    def remove_filestore(self, data_dir: str, db: str) -> None:
        shutil.rmtree(self.filestore_dir(data_dir, db), ignore_errors=True)

    # -- Odoo processes ------------------------------------------------------------------------
    def start_odoo(self, dsn_ref: str, environment_id: str, deployment: str, db: str, data_dir: str,
                   http_port: int, websocket_port: int, endpoint: Endpoint | None = None,
                   command_template: str | None = None, workers: int = 0) -> int:
        """Start one Odoo server in its own process group, detached from this process (it must outlive the run).
        With an ``endpoint`` it connects through the deployment's PgBouncer as its role, and serves ``db`` (the
        environment's name); without one, straight to the server under the physical name (legacy).
        ``command_template`` is the environment's own (None: this host's); ``workers`` fills ``{workers}``."""
        _, env, params = self._pg(dsn_ref)
        env["STANDIN_DSN"] = secrets.resolve(dsn_ref)
        if endpoint is not None:
            params = {"host": endpoint.host, "port": str(endpoint.port), "user": endpoint.user}
            env["STANDIN_DSN"] = f"host={endpoint.host} port={endpoint.port} user={endpoint.user}"
            env["PGPASSWORD"] = endpoint.password  # the environment, never argv: it must not show in ps
            db = endpoint.dbname
        for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER")):
            if key in params:
                env[var] = params[key]
        command = (command_template or self.command_template).format(
            python=shlex.quote(sys.executable), db=db, data_dir=shlex.quote(data_dir), http_port=http_port,
            websocket_port=websocket_port, workers=workers, environment_id=environment_id, deployment=deployment,
            db_host=params.get("host", ""), db_port=params.get("port", ""), db_user=params.get("user", ""),
            http_interface="127.0.0.1",  # one template serves this machine and process hosts (their address)
        )
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(self.run_dir) / f"{deployment}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(shlex.split(command), stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        return proc.pid

    def wait_healthy(self, url: str, pid: int, websocket_port: int | None = None) -> None:
        """Until ``/web/health`` answers 200 and, given a ``websocket_port`` of its own, that port accepts
        connections: a prefork Odoo serves the bus from a separate process that its master starts after the
        HTTP workers (about a second later), and a websocket sent to it before then is refused."""
        deadline = time.monotonic() + self.startup_timeout_seconds
        await_health(url, deadline, lambda: self.is_alive(pid), 0.0,
                     exited=f"Odoo process {pid} exited during start-up (log in {self.run_dir})",
                     late=f"Odoo at {url} did not answer /web/health within {self.startup_timeout_seconds}s")
        if websocket_port is not None:
            self._wait_listening(httpx.URL(url).host, websocket_port, pid, deadline)

    def _wait_listening(self, host: str, port: int, pid: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self.is_alive(pid):
                raise HostError(f"Odoo process {pid} exited during start-up (log in {self.run_dir})")
            try:
                with socket.create_connection((host, port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.05)
        raise HostError(f"Odoo's websocket server did not listen on {host}:{port} within"
                        f" {self.startup_timeout_seconds}s (log in {self.run_dir})")

    @staticmethod
    def is_alive(pid: int | None) -> bool:
        if not pid:
            return False
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False  # our child, and it has exited
        except ChildProcessError:
            pass  # not our child: fall through to /proc
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")

    def stop_odoo(self, pid: int | None, started: int | None, timeout: float = 10.0) -> str | None:
        """Stop an Odoo and everything it started: its process group (a prefork master's workers and websocket
        server are its children in that group; signalling the master alone can leave a worker running). Only if
        ``pid`` is still the process started at ``started``; else the reason it was left alone."""
        if not pid or not self.is_alive(pid):
            return None
        return db_endpoint.stop_recorded(pid, started, timeout)
