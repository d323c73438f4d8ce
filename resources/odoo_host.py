"""The Odoo host: databases, filestores and Odoo server processes of one machine.

Everything a backup or a restore does to an Odoo environment goes through here: pg_dump and
pg_restore against the environment's PostgreSQL, tar+zstd over its filestore
(``<data_dir>/filestore/<db>/``), and Odoo processes started from a command template. The
template is what makes the same code run ``odoo-bin`` in production and ``odoo_standin`` in the
sandbox. Passwords travel to child processes through their environment (``PGPASSWORD``), never
through argv, so they never show in ``ps``. Dumps and archives stream through this process so
checksums are computed while the bytes pass, with a fixed-size buffer: memory stays flat
whatever the size of the database.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
from dagster import ConfigurableResource
from psycopg import sql
from pydantic import Field

from resources import secrets
from resources.ops_db import connect_retrying

CHUNK = 1 << 20


class HostError(RuntimeError):
    """A host operation failed; the message names the operation and the tool's own words."""


def _stream(src: IO[bytes], dest: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalOdooHost(ConfigurableResource):
    """Databases, filestores and Odoo processes on this machine."""

    command_template: str = Field(
        description="Command that starts one Odoo server. Placeholders: {python} {db} {data_dir} {http_port}"
        " {websocket_port} {environment_id} {deployment} {db_host} {db_port} {db_user}."
    )
    run_dir: str = Field(description="Folder for Odoo process logs.")
    pg_bin_dir: str = Field(default="", description="Folder of pg_dump/pg_restore; empty means PATH.")
    restore_jobs: int = Field(default=2, description="Parallel jobs for pg_restore.")
    dump_compression: int = Field(default=1, description="pg_dump -Z level (low: the dump is on the critical path).")
    zstd_level: int = Field(default=1, description="zstd level for filestore archives.")
    startup_timeout_seconds: float = Field(default=30.0, description="How long a new Odoo may take to answer.")

    # -- PostgreSQL ----------------------------------------------------------------------------
    def _tool(self, name: str) -> str:
        return str(Path(self.pg_bin_dir) / name) if self.pg_bin_dir else name

    def _pg(self, dsn_ref: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
        """Connection args for the pg tools, the child environment, and the parsed DSN."""
        params = psycopg.conninfo.conninfo_to_dict(secrets.resolve(dsn_ref))
        args: list[str] = []
        for key, flag in (("host", "-h"), ("port", "-p"), ("user", "-U")):
            if params.get(key):
                args += [flag, str(params[key])]
        env = dict(os.environ)
        if params.get("password"):
            env["PGPASSWORD"] = str(params["password"])
        return args, env, {k: str(v) for k, v in params.items() if v is not None}

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

    def database_size(self, dsn_ref: str, db: str) -> int:
        with self.connect(dsn_ref, db) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return int(row[0]) if row else 0

    def server_major_version(self, dsn_ref: str) -> int:
        with self.connect(dsn_ref, "postgres") as conn:
            return int(conn.info.server_version // 10000)

    def pg_dump_version(self) -> str:
        out = subprocess.run([self._tool("pg_dump"), "--version"], capture_output=True, text=True, check=True)
        return out.stdout.strip().rsplit(" ", 1)[-1].split()[0] if out.stdout else "unknown"

    def dump_database(self, dsn_ref: str, db: str, dest: Path) -> tuple[str, int]:
        """pg_dump -Fc into ``dest``, hashing while the bytes stream; returns (sha256, size)."""
        args, env, _ = self._pg(dsn_ref)
        cmd = [self._tool("pg_dump"), *args, "-Fc", f"-Z{self.dump_compression}", "--no-owner", "-d", db]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stderr is not None
        digest, size = _stream(proc.stdout, dest)
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise HostError(f"pg_dump of database {db} failed: {err.strip()[:400]}")
        return digest, size

    def create_database(self, dsn_ref: str, db: str) -> None:
        with self.connect(dsn_ref, "postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))

    def restore_database(self, dsn_ref: str, db: str, dump: Path) -> None:
        """Restore a custom-format dump into a new database ``db`` (refused if it exists)."""
        if self.database_exists(dsn_ref, db):
            raise HostError(f"restore refused: database {db} already exists")
        self.create_database(dsn_ref, db)
        args, env, _ = self._pg(dsn_ref)
        cmd = [self._tool("pg_restore"), *args, "--no-owner", "--exit-on-error", f"-j{self.restore_jobs}",
               "-d", db, str(dump)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise HostError(f"pg_restore into {db} failed: {proc.stderr.strip()[:400]}")

    def drop_database(self, dsn_ref: str, db: str) -> None:
        with self.connect(dsn_ref, "postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))

    def rename_database(self, dsn_ref: str, old: str, new: str) -> None:
        with self.connect(dsn_ref, "postgres", autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (old,),
            )
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))

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

    def archive_filestore(self, data_dir: str, db: str, dest: Path) -> tuple[str, int, int]:
        """tar | zstd of the filestore into ``dest``; returns (sha256, size, file_count)."""
        src = self.filestore_dir(data_dir, db)
        src.mkdir(parents=True, exist_ok=True)
        tar = subprocess.Popen(["tar", "-C", str(src), "-cf", "-", "."], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        zstd = subprocess.Popen(["zstd", f"-{self.zstd_level}", "-T2", "-q", "-c"], stdin=tar.stdout,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert tar.stdout is not None and zstd.stdout is not None
        tar.stdout.close()
        digest, size = _stream(zstd.stdout, dest)
        if zstd.wait() != 0 or tar.wait() != 0:
            err = (tar.stderr.read() if tar.stderr else b"") + (zstd.stderr.read() if zstd.stderr else b"")
            raise HostError(f"archiving filestore {src} failed: {err.decode(errors='replace').strip()[:400]}")
        count, _ = self.filestore_stats(data_dir, db)
        return digest, size, count

    def extract_filestore(self, archive: Path, data_dir: str, db: str) -> None:
        dest = self.filestore_dir(data_dir, db)
        if dest.exists() and any(dest.iterdir()):
            raise HostError(f"restore refused: filestore {dest} already exists")
        dest.mkdir(parents=True, exist_ok=True)
        cmd = f"zstd -d -q -c {shlex.quote(str(archive))} | tar -C {shlex.quote(str(dest))} -xf -"
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostError(f"extracting filestore into {dest} failed: {proc.stderr.strip()[:400]}")

    def remove_filestore(self, data_dir: str, db: str) -> None:
        shutil.rmtree(self.filestore_dir(data_dir, db), ignore_errors=True)

    def rename_filestore(self, data_dir: str, old: str, new: str) -> None:
        src = self.filestore_dir(data_dir, old)
        if src.exists():
            src.rename(self.filestore_dir(data_dir, new))

    # -- Odoo processes ------------------------------------------------------------------------
    def start_odoo(self, dsn_ref: str, environment_id: str, deployment: str, db: str, data_dir: str,
                   http_port: int, websocket_port: int) -> int:
        """Start one Odoo server, detached from this process (it must outlive the run)."""
        _, env, params = self._pg(dsn_ref)
        env["STANDIN_DSN"] = secrets.resolve(dsn_ref)
        for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER")):
            if key in params:
                env[var] = params[key]
        command = self.command_template.format(
            python=shlex.quote(sys.executable), db=db, data_dir=shlex.quote(data_dir), http_port=http_port,
            websocket_port=websocket_port, environment_id=environment_id, deployment=deployment,
            db_host=params.get("host", ""), db_port=params.get("port", ""), db_user=params.get("user", ""),
        )
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(self.run_dir) / f"{deployment}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(shlex.split(command), stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        return proc.pid

    def wait_healthy(self, url: str, pid: int) -> None:
        deadline = time.monotonic() + self.startup_timeout_seconds
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.is_alive(pid):
                raise HostError(f"Odoo process {pid} exited during start-up (log in {self.run_dir})")
            try:
                resp = httpx.get(f"{url}/web/health", timeout=1.0)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.05)
        raise HostError(f"Odoo at {url} did not answer /web/health within {self.startup_timeout_seconds}s ({last})")

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

    def stop_odoo(self, pid: int | None, timeout: float = 10.0) -> None:
        if not pid or not self.is_alive(pid):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_alive(pid):
                return
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
