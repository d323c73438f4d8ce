"""One host reached with the OpenSSH client: the shared connection, the key, strict host keys, one-line failures.

What both SSH resources use (``SshOdooHost`` for Odoo processes on a host, ``SshArtifactStore`` for artifacts kept
on a host), so the connection is made, checked and reported one way.

Why the OpenSSH client (not paramiko or asyncssh): it is what operators already configure, trust and audit (its
known_hosts format, its error words), it multiplexes every call of a run over one authenticated connection
(ControlMaster/ControlPersist: a call costs a few milliseconds, not a handshake), and it adds no dependency to
the project. The host key is checked strictly against the known_hosts file of the settings, never learned: an
unknown or changed key stops the call with one line naming the host.

The client key: the secret reference resolves either to the key's text (OpenSSH ``-----BEGIN ...``), written for
the client into an owner-only file of an owner-only folder in memory (``/dev/shm`` where there is one, so never
on disk) for the handshake of the shared connection only, and removed as soon as that connection is up; or to
the path of an owner-only key file the operator keeps. Calls over the shared connection carry no key at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import Config
from pydantic import Field

from resources import redaction, secrets
from resources.odoo_host import HostError


@dataclass
class SshSession:
    """The OpenSSH client's view of one host. ``runtime`` (the runtime folder, the last use of the shared
    connection) and ``lock`` belong to the resource that owns the session, so that every call of that resource,
    from any thread, shares one connection."""

    name: str
    address: str
    port: int
    user: str
    identity_ref: str
    known_hosts_file: str
    connect_timeout_seconds: int
    command_timeout_seconds: float
    control_persist_seconds: int
    runtime: dict[str, Any] = field(default_factory=dict)
    lock: Any = field(default_factory=threading.Lock)

    @property
    def where(self) -> str:
        return f"{self.name} ({self.user}@{self.address}:{self.port})"

    def runtime_dir(self) -> Path:
        folder = self.runtime.get("dir")
        if folder is None or not Path(folder).is_dir():
            shm = Path("/dev/shm")
            base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
            folder = Path(tempfile.mkdtemp(prefix="promote-ssh-", dir=base))  # 0700 from the start
            self.runtime["dir"] = folder
        return Path(folder)

    def identity(self) -> Path:
        value = secrets.resolve(self.identity_ref)
        if value.lstrip().startswith("-----BEGIN"):
            redaction.register_secret(value)
            path = self.runtime_dir() / "id"
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(value.strip() + "\n")
            return path
        path = Path(value).expanduser()
        try:
            mode = path.stat().st_mode
        except OSError:
            raise HostError(f"ssh to {self.where}: identity {self.identity_ref}: no key file at the path it names"
                            ) from None
        if mode & 0o077:
            raise HostError(f"ssh to {self.where}: identity {self.identity_ref}: key file is readable by group or"
                            " others; chmod 600 it")
        return path

    def base_argv(self, with_key: bool = False) -> list[str]:
        """ssh's options; the key only for opening the shared connection (a call over it needs none)."""
        known = Path(self.known_hosts_file)
        if not known.is_file():
            raise HostError(f"ssh to {self.where}: known_hosts_file {known} does not exist")
        return ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f'UserKnownHostsFile="{known}"', "-o", "GlobalKnownHostsFile=none",
                "-o", "IdentitiesOnly=yes", *(["-i", str(self.identity())] if with_key else []),
                "-o", "LogLevel=ERROR",
                "-o", f"ConnectTimeout={self.connect_timeout_seconds}",
                "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3",
                "-o", f"ControlPath={self.runtime_dir() / 'cm'}",
                "-p", str(self.port), "-l", self.user]

    def ensure_master(self) -> None:
        """The shared connection, opened (authenticated, host key checked) when there is none: ``-f`` sends it to
        the background once it is up. Its error output goes to a file, not a pipe: the background master keeps
        what it was given open, and a pipe would never reach its end."""
        with self.lock:
            last = self.runtime.get("last_use", 0.0)
            if time.monotonic() - last < self.control_persist_seconds / 2:
                return
            check = subprocess.run([*self.base_argv(), "-O", "check", self.address], capture_output=True,
                                   stdin=subprocess.DEVNULL)
            if check.returncode != 0:
                errors = self.runtime_dir() / "master.err"
                try:
                    with open(errors, "w") as err:
                        done = subprocess.run([*self.base_argv(with_key=True), "-o", "ControlMaster=yes",
                                               "-o", f"ControlPersist={self.control_persist_seconds}s", "-f", "-N",
                                               self.address], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=err, timeout=self.connect_timeout_seconds + 30)
                finally:
                    (self.runtime_dir() / "id").unlink(missing_ok=True)  # the connection is up (or failed)
                if done.returncode != 0:
                    raise HostError(self.failure(errors.read_text(errors="replace")))
            self.runtime["last_use"] = time.monotonic()

    def failure(self, stderr: str, over_shared: bool = False) -> str:
        """ssh's own failure (exit 255) as one line naming the host."""
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return (f"ssh to {self.where}: host key CHANGED: it is not the one {self.known_hosts_file} holds for"
                    f" {self.address}; refused (a replaced machine, or someone in between: check before updating it)")
        if "Host key verification failed" in stderr or "host key is known" in stderr:
            return (f"ssh to {self.where}: host key unknown: {self.known_hosts_file} holds no key for"
                    f" {self.address}; refused (add the host's key there once checked)")
        if "Permission denied" in stderr:
            # a call over the shared connection carries no key: refused, it means that connection just ended
            why = " (the shared connection closed under this call; the next call opens it again)" if over_shared else ""
            return f"ssh to {self.where}: the host refused the key of {self.identity_ref}{why}"
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        return f"ssh to {self.where} failed: {lines[-1] if lines else 'no message'}"[:400]

    def command_argv(self, command: str) -> list[str]:
        """The argv of one call over the shared connection (opened first when needed) running ``command`` there:
        for a caller that streams through the call's standard input or output itself."""
        self.ensure_master()
        return [*self.base_argv(), "-o", "ControlMaster=no", self.address, command]

    def used(self, returncode: int) -> None:
        """Note a finished call: the shared connection was alive, or (ssh's exit 255) must be looked at again."""
        self.runtime["last_use"] = time.monotonic() if returncode != 255 else 0.0

    def run_script(self, script: str, timeout: float | None = None) -> str:
        """Run a POSIX ``sh`` script on the host, given on standard input (so nothing of it shows in any argv);
        returns its output. A non-zero exit raises HostError with its error output."""
        argv = self.command_argv("sh -s")
        try:
            done = subprocess.run(argv, input=script, capture_output=True, text=True,
                                  timeout=timeout or self.command_timeout_seconds)
        except subprocess.TimeoutExpired:
            raise HostError(f"ssh to {self.where}: the remote command did not finish within"
                            f" {timeout or self.command_timeout_seconds}s") from None
        self.used(done.returncode)
        if done.returncode == 255:
            raise HostError(self.failure(done.stderr, over_shared=True))
        if done.returncode != 0:
            words = redaction.redact_text(done.stderr.strip())
            raise HostError(f"on {self.name}: remote command failed (exit {done.returncode}): {words[:300]}")
        return done.stdout

    def close(self) -> None:
        """The shared connection closed and the runtime folder (the key's copy with it) removed."""
        folder = self.runtime.pop("dir", None)
        if folder is None:
            return
        if (Path(folder) / "cm").exists():
            subprocess.run(["ssh", "-F", "none", "-o", f"ControlPath={Path(folder) / 'cm'}", "-O", "exit",
                            self.address], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
        self.runtime.clear()


class SshLoginConfig(Config):
    """How a resource logs in to its host (the settings' ``SshLogin``), as a nested config: a resource that reaches
    one host over SSH takes one of these and opens its :class:`SshSession` with :meth:`session`."""

    address: str = Field(description="Address or DNS name of the host: where its sshd listens, and the name"
                         " known_hosts_file holds its key under.")
    ssh_port: int = Field(default=22, description="Port of the host's sshd.")
    user: str = Field(description="User to log in as on the host.")
    identity_ref: str = Field(description="Secret reference to the client's private key: the key's text, or the"
                              " path of an owner-only key file.")
    known_hosts_file: str = Field(description="known_hosts file holding the host's key (under `address`); a key"
                                  " not there, or a different one, is refused.")
    connect_timeout_seconds: int = Field(default=10, description="How long ssh may take to connect.")
    control_persist_seconds: int = Field(default=120, description="How long the shared SSH connection stays open"
                                         " after its last call.")

    def session(self, name: str, command_timeout_seconds: float = 60.0) -> SshSession:
        """A session of this login (one shared connection for whoever keeps it), named ``name`` in messages."""
        return SshSession(name=name, address=self.address, port=self.ssh_port, user=self.user,
                          identity_ref=self.identity_ref, known_hosts_file=self.known_hosts_file,
                          connect_timeout_seconds=self.connect_timeout_seconds,
                          command_timeout_seconds=command_timeout_seconds,
                          control_persist_seconds=self.control_persist_seconds)
