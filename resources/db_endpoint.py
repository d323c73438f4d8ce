"""A deployment's database endpoint: its own PostgreSQL role, and its own PgBouncer in front of its database.

Why: Odoo names its database in everything it keeps and everything its clients send (session files,
``/jsonrpc`` and ``/xmlrpc`` calls, integrations configured once). If every promotion gave production a new
database name, sessions would be logged out at each cutover and integrations would go on writing into the
retired blue. So the environment keeps ONE name for its whole life (``odoo_db_name``); each deployment's
Odoo connects to its own PgBouncer, which maps that name to the deployment's physical database and knows no
other one (``no such database`` for anything else), as the deployment's own role, which PostgreSQL lets
CONNECT to that database only. Green's Odoo can never open blue's database, nor blue's green's, whatever
name a request carries.

PgBouncer runs in session pooling: one server connection per client connection for its whole life, so
LISTEN/NOTIFY (Odoo's bus), advisory locks and session settings behave exactly as on a direct connection.

The role's password is derived from a key (``role_key_ref``, a secret) and the role's name, so no password
is ever stored: any process holding the key (a rollback job, the sandbox) computes it again. PgBouncer's
``auth_file`` holds only the SCRAM verifier (what PostgreSQL itself stores), in an owner-only folder; with
SCRAM on both sides PgBouncer logs into the server with the client's own proof (pass-through), so it never
needs the password either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SCRAM_ITERATIONS = 4096


@dataclass(frozen=True)
class Endpoint:
    """How a deployment's Odoo reaches its database: its PgBouncer, as its role (the password is derived)."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    def dsn(self) -> str:
        return (f"host={self.host} port={self.port} user={self.user} password={self.password}"
                f" dbname={self.dbname}")


def role_password(key: str, role: str) -> str:
    """The role's password: an HMAC of its name under the installation's role key (never stored)."""
    return hmac.new(key.encode(), role.encode(), hashlib.sha256).hexdigest()


def role_salt(key: str, role: str) -> bytes:
    """The verifier's salt, derived like the password: PgBouncer can pass a client's SCRAM proof through to the
    server only if its auth_file holds the very verifier (salt included) that PostgreSQL stores."""
    return hmac.new(key.encode(), b"salt:" + role.encode(), hashlib.sha256).digest()[:16]


def scram_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (RFC 5802/7677), the form ``pg_authid`` stores:
    given to ``ALTER ROLE ... PASSWORD`` and to PgBouncer's auth_file, it lets both check the password without
    holding it."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def write_config(folder: Path, port: int, odoo_db: str, physical_db: str, server_host: str, server_port: str,
                 role: str, verifier: str, os_user: str | None) -> Path:
    """PgBouncer's configuration for one deployment: ``odoo_db`` and ``postgres`` (Odoo's health check and
    database listing open it) and nothing else; the folder owner-only (the auth file holds a verifier)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    auth = folder / "userlist.txt"
    auth_text, ini_text = config_texts(auth, port, odoo_db, physical_db, server_host, server_port, role, verifier,
                                       os_user)
    fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(auth_text)
    config = folder / "pgbouncer.ini"
    config.write_text(ini_text)
    os.chmod(config, 0o600)
    if os_user:
        entry = pwd.getpwnam(os_user)
        for path in (folder, auth, config):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return config


def config_texts(auth: Path, port: int, odoo_db: str, physical_db: str, server_host: str, server_port: str,
                 role: str, verifier: str, os_user: str | None) -> tuple[str, str]:
    """The auth file's and pgbouncer.ini's text (the ini naming ``auth`` as its auth file): what ``write_config``
    writes here, and what a process host over SSH writes on its machine."""
    server = f"host={server_host} port={server_port}" if server_host else f"port={server_port}"
    lines = [
        "[databases]",
        f"{odoo_db} = {server} dbname={physical_db}",
        f"postgres = {server} dbname=postgres",
        "",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = scram-sha-256",
        f"auth_file = {auth}",
        # Session pooling: Odoo's bus (LISTEN/NOTIFY), advisory locks and SET commands need their own session.
        "pool_mode = session",
        "max_client_conn = 200",
        "default_pool_size = 100",
        # No logfile or pidfile: PgBouncer writes to stderr (the host keeps it in run_dir) and the host tracks
        # its pid; an unprivileged PgBouncer could not open files under a root-only folder anyway.
        # psycopg2 (Odoo) sends these at connect; PgBouncer would refuse the connection otherwise.
        "ignore_startup_parameters = extra_float_digits,options,application_name",
        "server_reset_query = DISCARD ALL",
    ]
    if os_user:
        lines.append(f"user = {os_user}")  # PgBouncer refuses to run as root; it switches to this user itself
    return f"{_quote(role)} {_quote(verifier)}\n", "\n".join(lines) + "\n"


def start(binary: str, config: Path, log: Path) -> int:
    """Start PgBouncer in its own process group (so that stopping it stops all of it); return its pid."""
    # Debian installs it in /usr/sbin, which an unprivileged user's PATH may not have.
    exe = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin") or binary
    with open(log, "ab") as out:
        proc = subprocess.Popen([exe, str(config)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc.pid


def wait_listening(host: str, port: int, pid: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                raise RuntimeError(f"PgBouncer {pid} exited during start-up") from None
            time.sleep(0.05)
    raise RuntimeError(f"PgBouncer {pid} did not listen on {host}:{port} within {timeout}s")


def process_started(pid: int) -> int | None:
    """When ``pid`` started: field 22 of ``/proc/PID/stat``, in clock ticks since boot (None: no such process).
    With the pid it names one process for the machine's uptime, where the pid alone may be reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces and parentheses); field 3 is the first of them.
    return int(stat.rsplit(")", 1)[1].split()[19])


def identity_mismatch(pid: int, started: int | None) -> str | None:
    """Why ``pid`` is not provably the process recorded as started at ``started`` (None: it is, and it still
    leads its own process group, so signalling that group reaches it and what it started, nothing else)."""
    if started is None:
        return f"pid {pid}: no start time recorded, so not provably the deployment's process; left alone"
    live = process_started(pid)
    if live is None:
        return None if not Path(f"/proc/{pid}").exists() else f"pid {pid}: start time unreadable; left alone"
    if live != started:
        return f"pid {pid}: started at tick {live}, not {started} as recorded (a reused pid); left alone"
    try:
        if os.getpgid(pid) != pid:
            return f"pid {pid}: no longer leads its own process group; left alone"
    except ProcessLookupError:
        return None
    return None


def stop_recorded(pid: int | None, started: int | None, timeout: float = 10.0) -> str | None:
    """``stop_group`` for a pid read from the records: only if it is still the process started then. Returns
    the one-line reason when it was left alone (None: stopped, or already gone)."""
    if not pid or not Path(f"/proc/{pid}").exists():
        return None
    mismatch = identity_mismatch(pid, started)
    if mismatch is not None:
        return mismatch
    stop_group(pid, timeout)
    return None


def stop_group(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid`` (every process started with it), SIGKILL what remains. For a pid
    of this process's own making; one read from the records goes through ``stop_recorded``."""
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        _reap(pid)
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
