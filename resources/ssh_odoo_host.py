"""An Odoo host reached over SSH: Odoo processes, data_dir/filestore, free disk and tool versions of *that* host.

The same calls as ``LocalOdooHost`` offers for Odoo processes (``start_odoo``, ``wait_healthy``, ``is_alive``,
``process_started``, ``stop_odoo``: the whole process group) and for a deployment's files, each carried out on the
host by a short POSIX ``sh`` script sent on ssh's standard input. Nothing secret is ever in an argv, here or there:
the database password and DSN go into the remote process's environment through ``export`` lines of that script,
and the client key is resolved from its secret reference at the moment of use.

The connection (the OpenSSH client over one shared ControlMaster connection, the key by secret reference and never
on disk, host keys checked strictly against the settings' known_hosts file) is ``resources/ssh_session.py``'s, which
the SSH artifact store uses too; its docstring says why the OpenSSH client and how the key is handled.
"""

from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from resources import redaction, secrets
from resources.db_endpoint import Endpoint
from resources.odoo_host import HostError, await_health
from resources.ssh_session import SshSession

# The remote half of is_alive/process_started/stop_odoo: fields of /proc/PID/stat after the command name (which
# may hold spaces and parentheses), so $1 is the state, $3 the process group, ${20} the start time in ticks.
_STAT = 's=$(cat /proc/{pid}/stat 2>/dev/null) || {{ echo gone; exit 0; }}\nset -- ${{s##*) }}\n'


class SshOdooHost(ConfigurableResource):
    """Odoo processes and their files on one host, driven over SSH."""

    name: str = Field(description="The host's name, as messages say it (production, staging, ...).")
    address: str = Field(description="Address or DNS name of the host: where its sshd listens and where its Odoo"
                         " serves HTTP (the name the known_hosts file holds its key under).")
    ssh_port: int = Field(default=22, description="Port of the host's sshd.")
    user: str = Field(description="User to log in as on the host; Odoo runs as this user.")
    identity_ref: str = Field(description="Secret reference to the client's private key: the key's text, or the"
                              " path of an owner-only key file.")
    known_hosts_file: str = Field(description="known_hosts file holding the host's key (under `address`); a key"
                                  " not there, or different, is refused.")
    command_template: str = Field(
        description="Command that starts one Odoo server on the host. Placeholders: {python} {db} {data_dir}"
        " {http_port} {websocket_port} {workers} {environment_id} {deployment} {db_host} {db_port} {db_user}"
        " {http_interface} (the host's address, for Odoo to listen on).")
    run_dir: str = Field(description="Folder on the host for Odoo process logs.")
    python: str = Field(default="python3", description="Python interpreter on the host ({python}).")
    pg_bin_dir: str = Field(default="", description="Folder of pg_dump on the host; empty means its PATH.")
    startup_timeout_seconds: float = Field(default=30.0, description="How long a new Odoo may take to answer.")
    connect_timeout_seconds: int = Field(default=10, description="How long ssh may take to connect.")
    command_timeout_seconds: float = Field(default=60.0, description="How long one remote script may run.")
    control_persist_seconds: int = Field(default=120, description="How long the shared SSH connection stays open"
                                         " after its last use (every call of a run goes over it).")

    _runtime: dict[str, Any] = PrivateAttr(default_factory=dict)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)  # ops may call from several threads

    # -- the connection (resources/ssh_session.py: shared with the SSH artifact store) ---------------------
    def _session(self) -> SshSession:
        return SshSession(name=self.name, address=self.address, port=self.ssh_port, user=self.user,
                          identity_ref=self.identity_ref, known_hosts_file=self.known_hosts_file,
                          connect_timeout_seconds=self.connect_timeout_seconds,
                          command_timeout_seconds=self.command_timeout_seconds,
                          control_persist_seconds=self.control_persist_seconds, runtime=self._runtime, lock=self._lock)

    @property
    def where(self) -> str:
        return self._session().where

    def run_script(self, script: str, timeout: float | None = None) -> str:
        """Run a POSIX ``sh`` script on the host, given on standard input (so nothing of it shows in any argv);
        returns its output. A non-zero exit raises HostError with its error output."""
        return self._session().run_script(script, timeout)

    def close(self) -> None:
        """The shared connection closed and the runtime folder (the key's copy with it) removed."""
        self._session().close()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.close()

    # -- Odoo processes -----------------------------------------------------------------------------
    def url(self, http_port: int) -> str:
        """Where this host's Odoo on ``http_port`` is reached from the promoter."""
        return f"http://{self.address}:{http_port}"

    def start_odoo(self, dsn_ref: str, environment_id: str, deployment: str, db: str, data_dir: str,
                   http_port: int, websocket_port: int, endpoint: Endpoint | None = None,
                   command_template: str | None = None, workers: int = 0) -> int:
        """Start one Odoo server on the host in its own session and process group, detached (it outlives the SSH
        session and this process), output appended to ``<run_dir>/<deployment>.log`` there. The DSN and password
        reach it through its environment, set by the script on ssh's standard input. Returns its pid there."""
        import psycopg

        dsn = secrets.resolve(dsn_ref)
        params = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items() if v is not None}
        env = {"STANDIN_DSN": dsn}
        if params.get("password"):
            env["PGPASSWORD"] = params["password"]
        if endpoint is not None:
            params = {"host": endpoint.host, "port": str(endpoint.port), "user": endpoint.user}
            env["STANDIN_DSN"] = f"host={endpoint.host} port={endpoint.port} user={endpoint.user}"
            env["PGPASSWORD"] = endpoint.password
            db = endpoint.dbname
        for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER")):
            if key in params:
                env[var] = params[key]
        for value in (env.get("PGPASSWORD"), dsn):
            if value:
                redaction.register_secret(value)
        command = (command_template or self.command_template).format(
            python=shlex.quote(self.python), db=db, data_dir=shlex.quote(data_dir), http_port=http_port,
            websocket_port=websocket_port, workers=workers, environment_id=environment_id, deployment=deployment,
            db_host=params.get("host", ""), db_port=params.get("port", ""), db_user=params.get("user", ""),
            http_interface=self.address,
        )
        log = f"{self.run_dir.rstrip('/')}/{deployment}.log"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        # In a script (no job control) the background child is not a group leader, so setsid makes its new
        # session in place, without forking again: $! is the server's pid and its process group.
        script = (f"set -e\numask 077\nmkdir -p -- {shlex.quote(self.run_dir)}\ncd /\n{exports}"
                  f"setsid {' '.join(shlex.quote(a) for a in shlex.split(command))} </dev/null >>{shlex.quote(log)}"
                  " 2>&1 &\necho $!\n")
        out = self.run_script(script).split()
        if not out or not out[-1].isdigit():
            raise HostError(f"on {self.name}: starting Odoo printed no pid ({' '.join(out)[:100]})")
        return int(out[-1])

    def wait_healthy(self, url: str, pid: int, websocket_port: int | None = None) -> None:
        """Until ``/web/health`` answers 200 (asked from here, through the network) and, given a
        ``websocket_port``, that port accepts connections; fails at once when the process has exited there."""
        import socket

        deadline = time.monotonic() + self.startup_timeout_seconds
        # A remote look at the process costs a round trip: twice a second.
        await_health(url, deadline, lambda: self.is_alive(pid), 0.5,
                     exited=f"Odoo process {pid} on {self.name} exited during start-up (log in {self.run_dir} there)",
                     late=f"Odoo at {url} on {self.name} did not answer /web/health within"
                          f" {self.startup_timeout_seconds}s")
        if websocket_port is None:
            return
        host = httpx.URL(url).host
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, websocket_port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.05)
        raise HostError(f"Odoo's websocket server on {self.name} did not listen on {host}:{websocket_port} within"
                        f" {self.startup_timeout_seconds}s")

    def is_alive(self, pid: int | None) -> bool:
        if not pid:
            return False
        out = self.run_script(_STAT.format(pid=int(pid)) + "echo $1\n").strip()
        return out not in ("gone", "Z", "X", "")

    def process_started(self, pid: int) -> int | None:
        """When ``pid`` started on the host (field 22 of its ``/proc/PID/stat``; None: no such process)."""
        out = self.run_script(_STAT.format(pid=int(pid)) + "echo ${20}\n").strip()
        return int(out) if out.isdigit() else None

    def stop_odoo(self, pid: int | None, started: int | None, timeout: float = 10.0) -> str | None:
        """Stop an Odoo and everything it started (its process group: SIGTERM, SIGKILL after ``timeout``), only if
        ``pid`` is still the process started at ``started`` and leads its group; else the one-line reason it was
        left alone."""
        if not pid or not self.is_alive(pid):
            return None
        if started is None:
            return f"pid {pid} on {self.name}: no start time recorded, so not provably the deployment's; left alone"
        tenths = max(1, int(timeout * 10))
        script = _STAT.format(pid=int(pid)) + (
            f'[ "${{20}}" = "{int(started)}" ] || {{ echo "reused ${{20}}"; exit 0; }}\n'
            f'[ "$3" = "{int(pid)}" ] || {{ echo notleader; exit 0; }}\n'
            f'kill -s TERM -- -{int(pid)} 2>/dev/null || {{ echo gone; exit 0; }}\n'
            f'n=0; while kill -0 -- -{int(pid)} 2>/dev/null && [ $n -lt {tenths} ]; do sleep 0.1; n=$((n+1)); done\n'
            f'kill -s KILL -- -{int(pid)} 2>/dev/null || true\necho stopped\n')
        out = self.run_script(script, timeout=timeout + self.command_timeout_seconds).strip()
        if out.startswith("reused"):
            return (f"pid {pid} on {self.name}: started at tick {out.split()[-1]}, not {started} as recorded (a"
                    " reused pid); left alone")
        if out == "notleader":
            return f"pid {pid} on {self.name}: no longer leads its own process group; left alone"
        return None

    # -- files, disk, versions -----------------------------------------------------------------------
    @staticmethod
    def filestore_dir(data_dir: str, db: str) -> Path:
        if not db or "/" in db or db in (".", ".."):
            raise HostError(f"database name {db!r} cannot name a filestore folder")
        return Path(data_dir) / "filestore" / db

    def filestore_stats(self, data_dir: str, db: str) -> tuple[int, int]:
        """(file count, bytes) of a filestore on the host, from metadata only."""
        folder = shlex.quote(str(self.filestore_dir(data_dir, db)))
        out = self.run_script(f"[ -d {folder} ] || {{ echo 0 0; exit 0; }}\n"
                              f"find {folder} -type f -printf '%s\\n' | awk '{{c++; s+=$1}} END {{print c+0, s+0}}'\n")
        count, size = out.split()
        return int(count), int(size)

    def remove_filestore(self, data_dir: str, db: str) -> None:
        self.run_script(f"rm -rf -- {shlex.quote(str(self.filestore_dir(data_dir, db)))}\n")

    def free_disk_bytes(self, path: str) -> int:
        """Bytes free for an unprivileged writer on the host's file system holding ``path`` (or its nearest
        existing parent: a data_dir about to be made)."""
        out = self.run_script(f'p={shlex.quote(path)}\nwhile [ ! -e "$p" ]; do p=$(dirname -- "$p"); done\n'
                              'df -P -k -- "$p" | awk \'NR==2 {print $4}\'\n').strip()
        if not out.isdigit():
            raise HostError(f"on {self.name}: df gave no free space for {path}")
        return int(out) * 1024

    def tool_version(self, tool: str) -> str:
        """``<tool> --version``'s number on the host (``pg_dump`` from ``pg_bin_dir`` when one is set)."""
        out = self.run_script(f"{shlex.quote(tool)} --version\n").strip()
        return out.rsplit(" ", 1)[-1].split()[0] if out else "unknown"

    def pg_dump_version(self) -> str:
        return self.tool_version(str(Path(self.pg_bin_dir) / "pg_dump") if self.pg_bin_dir else "pg_dump")
