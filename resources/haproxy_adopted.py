"""An HAProxy the team already runs, adopted: switched through its runtime API only, never started or signalled.

The team's HAProxy keeps its own process, frontends and configuration; promote only re-targets servers. For each
production environment it needs four backends, named as the private router names them
(``<env>_active_http``, ``<env>_active_ws``, ``<env>_preview_http``, ``<env>_preview_ws``, ``<env>`` made safe by
:func:`safe_name`), each with a server named ``app``, and a runtime API at ``level admin`` that promote can reach:

- a unix socket path (``/run/haproxy/admin.sock``, ``unix@/run/...``), when promote runs on the same machine;
- a TCP address (``ipv4@10.0.0.7:9999`` or ``10.0.0.7:9999``): HAProxy's ``stats socket`` takes no ACL, so the
  team puts a ``mode tcp`` frontend with an ACL on the source address in front of its unix admin socket
  (README, "Adopting the team's HAProxy");
- with ``ssh`` (the team's HAProxy on another host): a unix socket path on that host, reached through the OpenSSH
  shared connection's unix-socket forwarding (``ssh -O forward -L <local socket>:<remote socket>``), so the
  runtime API is spoken to a socket in the session's owner-only runtime folder exactly as to a local one. The
  host's sshd must allow it: ``AllowStreamLocalForwarding`` yes (its default) and ``AllowTcpForwarding`` yes or
  ``local`` (its default is yes; OpenSSH 9 refuses unix-socket forwards too when it is ``no``), and the login
  user must be able to open the admin socket. No TCP port is opened anywhere and no ACL is needed: who may
  switch is who may log in.

A switch is ``set server <backend>/app addr A port P`` on the runtime API, as in the private router: client
connections live on. When ``config_file`` names the team's haproxy.cfg, the new address is also written into the
``server app`` line of each switched backend (validated with ``haproxy -c`` first, replaced atomically, its owner
and mode kept), so a reload or restart of their HAProxy keeps the live state. With ``ssh`` the file is on that
host: read there, rewritten here, and the candidate written, checked (the host's ``haproxy -c``), given the file's
owner and mode and renamed over it there, by ``sh`` scripts sent on ssh's standard input. The runtime change is
never undone because that file could not be written: traffic is where the switch put it, and the caller is told
(:class:`RouterNotPersisted`).

What the private router reads from its own map file (the ``X-Promote-Upstream`` label) does not exist here: the
deployment an entry point serves is the one recorded in ``routes.json`` whose addresses the running HAProxy's
servers have now.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import os
import re
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr

from resources._router_common import ENTRIES, Entry, Routes, safe_name
from resources.haproxy_router import HAProxyRouter
from resources.odoo_host import HostError
from resources.router import RouterError, RouterNotPersisted, RoutingState, Upstream
from resources.ssh_session import SshLoginConfig, SshSession

_KINDS = ("http", "ws")
_SECTION = re.compile(r"^(global|defaults|frontend|backend|listen|peers|resolvers|userlist|mailers|program|ring|"
                      r"cache|http-errors|fcgi-app)\b\s*(\S*)")
_SERVER_APP = re.compile(r"^(?P<lead>\s*server\s+app\s+)(?P<addr>\S+)(?P<rest>.*)$")


def backends_of(environment_id: str) -> list[str]:
    """The backends the team's HAProxy must have for one production environment (each with a server ``app``)."""
    n = safe_name(environment_id)
    return [f"{n}_{entry}_{kind}" for entry in ENTRIES for kind in _KINDS]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def rewrite_servers(text: str, addresses: dict[str, tuple[str, int]]) -> str:
    """``text`` (a haproxy.cfg) with the address of the ``server app`` line of each backend in ``addresses``
    replaced, everything else (its options, comments, the other sections) as it was. RouterError naming the
    backend when the file does not have it."""
    lines, section, done = text.splitlines(keepends=True), None, set()
    for i, line in enumerate(lines):
        head = _SECTION.match(line)
        if head:
            section = head.group(2) if head.group(1) in ("backend", "listen") else None
            continue
        server = _SERVER_APP.match(line.rstrip("\n"))
        if server and section in addresses and section not in done:
            host, port = addresses[section]
            ending = line[len(line.rstrip("\r\n")):]
            lines[i] = f"{server['lead']}{_address(host, port)}{server['rest']}{ending}"
            done.add(section)
    missing = sorted(set(addresses) - done)
    if missing:
        raise RouterError(f"the configuration file has no 'server app' line in backend(s) {', '.join(missing)}")
    return "".join(lines)


class AdoptedHAProxyRouter(HAProxyRouter):
    """The team's HAProxy: routed through its runtime API, its process never started, stopped, reloaded or
    signalled. ``work_dir`` holds only ``routes.json``, its lock and a log of the configuration checks."""

    runtime_api: str = Field(description="The team's HAProxy runtime API (stats socket, level admin): a unix socket"
                             " path ('/run/haproxy/admin.sock' or 'unix@/run/...') or a TCP address"
                             " ('ipv4@10.0.0.7:9999' or '10.0.0.7:9999'). With ssh: a unix socket path on that"
                             " host, reached through the SSH connection's unix-socket forwarding.")
    config_file: str | None = Field(default=None, description="The team's haproxy.cfg (on this machine, or with ssh"
                                    " on that host): every switch is also written into it (checked with haproxy -c,"
                                    " replaced atomically, owner and mode kept) so that a reload of their HAProxy"
                                    " keeps it. None: switches live in the running process only, and the team's"
                                    " reload would undo them.")
    ssh: SshLoginConfig | None = Field(default=None, description="How to log in to the host the team's HAProxy runs"
                                       " on; None: it runs on this machine (or its runtime API is a TCP address)."
                                       " With it, runtime_api and config_file are paths on that host, and"
                                       " haproxy_bin is that host's haproxy (for the config check).")

    _naming: ClassVar[str] = "addresses matched against routes.json"
    # The SSH session's runtime folder and shared connection, kept across calls (one connection per resource).
    _ssh_runtime: dict[str, Any] = PrivateAttr(default_factory=dict)
    _ssh_lock: Any = PrivateAttr(default_factory=threading.Lock)
    _forward_lock: Any = PrivateAttr(default_factory=threading.Lock)

    # -- where it is -------------------------------------------------------------------------

    @property
    def _api(self) -> str:
        if self.ssh is not None:
            return f"{self.runtime_api} on {self._session().where}"
        return self.runtime_api

    def _config_path(self) -> Path:
        return Path(self.config_file) if self.config_file else self._dir / "routes.json"

    def _connect(self) -> socket.socket:
        if self.ssh is not None:
            return self._connect_forwarded()
        api = self.runtime_api.strip()
        for prefix in ("unix@", "ipv4@", "ipv6@"):
            if api.startswith(prefix):
                kind, address = prefix[:-1], api[len(prefix):]
                break
        else:
            kind, address = ("unix", api) if api.startswith("/") else ("ipv4", api)
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: object = address
        else:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise OSError(f"runtime_api {api!r} is neither a socket path nor host:port")
            host = host.strip("[]")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            target = (host, int(port))
        try:
            sock.settimeout(5)
            sock.connect(target)  # type: ignore[arg-type]
        except OSError:
            sock.close()
            raise
        return sock

    # -- the team's HAProxy on another host, over SSH ----------------------------------------
    #
    # Why unix-socket forwarding over the shared connection (not a relay such as ``python3 -c`` or ``socat`` run on
    # the host per command): the master already holds the authenticated connection, a forward costs one channel
    # per command (milliseconds), needs nothing installed on the host, and _connect keeps speaking the same
    # protocol to a socket, so every runtime-API call of the router is the same code as on this machine.

    def _session(self) -> SshSession:
        assert self.ssh is not None
        session = self.ssh.session(f"the team's haproxy host {self.ssh.address}")
        session.runtime, session.lock = self._ssh_runtime, self._ssh_lock
        return session

    def _remote_socket(self) -> str:
        api = self.runtime_api.strip()
        return api[len("unix@"):] if api.startswith("unix@") else api

    def _forward(self, again: bool = False) -> Path:
        """The local end of the forward to the runtime API's socket on the host (in the session's owner-only
        runtime folder), set up over the shared connection when there is none (or ``again``: the master it was
        on went away). RouterError, one line naming the host, when ssh cannot."""
        session = self._session()
        remote = self._remote_socket()
        if not remote.startswith("/") or ":" in remote:
            raise RouterError(f"runtime_api {self.runtime_api!r}: over SSH it must be the absolute path of the"
                              f" admin socket on {session.where} (no ':')")
        with self._forward_lock:
            local = self._ssh_runtime.get("api_forward")
            if local is not None and not again and Path(local).exists():
                return Path(local)
            if again:
                session.used(255)  # have ensure_master look at the master again, and open a new one if it is gone
            try:
                session.ensure_master()
                local = session.runtime_dir() / "haproxy-api.sock"
                local.unlink(missing_ok=True)  # what a master that went away left behind
                done = subprocess.run([*session.base_argv(), "-O", "forward", "-L", f"{local}:{remote}",
                                       session.address], capture_output=True, text=True,
                                      stdin=subprocess.DEVNULL, timeout=session.connect_timeout_seconds + 30)
            except HostError as exc:
                raise RouterError(str(exc)) from exc
            except subprocess.TimeoutExpired:
                raise RouterError(f"ssh to {session.where}: forwarding the runtime API did not finish") from None
            session.used(done.returncode)
            if done.returncode != 0:
                raise RouterError(f"{session.failure(done.stderr)} (forwarding the runtime API {remote})")
            self._ssh_runtime["api_forward"] = str(local)
            if not self._ssh_runtime.get("atexit"):
                # a background master would otherwise outlive this process by its persist time, with the forward
                self._ssh_runtime["atexit"] = True
                atexit.register(self.close)
            return local

    def _connect_forwarded(self) -> socket.socket:
        for again in (False, True):
            local = self._forward(again)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(5)
                sock.connect(str(local))
                return sock
            except OSError:
                sock.close()
                if again:
                    raise
                # refused or gone: the master (and its forward with it) ended, its persist time over: once more
        raise AssertionError("unreachable")

    def close(self) -> None:
        """The forward removed, the shared connection closed and the session's runtime folder removed (over SSH;
        nothing otherwise)."""
        if self.ssh is None:
            return
        session = self._session()
        local = self._ssh_runtime.pop("api_forward", None)
        folder = self._ssh_runtime.get("dir")
        if local is not None and folder is not None and (Path(folder) / "cm").exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["ssh", "-F", "none", "-o", f"ControlPath={Path(folder) / 'cm'}", "-O", "cancel",
                                "-L", f"{local}:{self._remote_socket()}", session.address], capture_output=True,
                               stdin=subprocess.DEVNULL, timeout=30)
            Path(local).unlink(missing_ok=True)
        session.close()
        self._ssh_runtime.pop("atexit", None)

    def teardown_after_execution(self, context: Any) -> None:
        self.close()

    def _on_host(self, script: str) -> str:
        """``script`` run by ``sh`` on the host (sent on ssh's standard input); RouterError, one line naming the
        host, when ssh or the script fails."""
        try:
            return self._session().run_script(script)
        except HostError as exc:
            raise RouterError(" ".join(str(exc).split())) from exc

    # -- never the process -------------------------------------------------------------------

    def is_running(self) -> bool:
        """Its runtime API answers (over SSH: False too when the host cannot be reached; start() says why)."""
        try:
            return "Pid:" in self._command_quiet("show info")
        except RouterError:
            return False

    def start(self) -> None:
        """Nothing to start: the team runs it. Says so when its runtime API does not answer at level admin."""
        level = self._command_quiet("show cli level")
        if not level:
            # a forward the host's sshd refuses, or a socket it cannot open, looks the same from here: the local
            # end accepts, and the connection ends without a word
            why = ("" if self.ssh is None else ": is haproxy's admin socket there? The host's sshd must allow"
                   " unix-socket forwarding (AllowTcpForwarding yes or local, AllowStreamLocalForwarding yes) and"
                   " the login user must be able to open that socket")
            raise RouterError(f"the team's haproxy does not answer on its runtime API {self._api}{why}")
        if level.split()[0] != "admin":
            raise RouterError(f"the team's haproxy runtime API {self._api} is at level {level.split()[0]}: switches"
                              " need 'level admin' on its stats socket")

    def stop(self) -> None:
        """Nothing to stop: the team's HAProxy is theirs."""

    # -- what the team's haproxy lacks ---------------------------------------------------------

    def missing(self, environment_id: str) -> list[str]:
        """What the running HAProxy lacks to serve ``environment_id``, a phrase each (empty: nothing). RouterError
        when the runtime API does not answer or is not at level admin."""
        self.start()
        missing = []
        for backend in backends_of(environment_id):
            try:
                answer = self._command(f"show servers state {backend}")
            except OSError as exc:
                raise RouterError(f"the team's haproxy does not answer on its runtime API {self._api}: {exc}") \
                    from exc
            if "Can't find backend" in answer:
                missing.append(f"backend {backend}")
            elif not any(line.split()[3:4] == ["app"] for line in answer.splitlines()
                         if line and not line.startswith("#") and len(line.split()) > 3):
                missing.append(f"server app in backend {backend}")
        return missing

    # -- routing -----------------------------------------------------------------------------

    def register_environment(
        self, environment_id: str, active: Upstream, active_port: int | None = None,
        preview_port: int | None = None,
    ) -> RoutingState:
        """Record an environment whose frontends the team's HAProxy already has (on ``listen_host``, at these
        ports) and point its four backends at ``active``."""
        if active_port is None or preview_port is None:
            raise RouterError(f"{environment_id}: an adopted haproxy's entry points are the team's frontends: give"
                              " their active and preview ports")
        return super().register_environment(environment_id, active, active_port, preview_port)

    def _install_environment(self, routes: Routes, environment_id: str) -> None:
        missing = self.missing(environment_id)
        if missing:
            raise RouterError(f"the team's haproxy ({self._api}) cannot serve {environment_id}: no"
                              f" {'; no '.join(missing)}")
        active = routes.environments[environment_id].active
        for backend in backends_of(environment_id):
            self._point(backend, active, active.websocket_port if backend.endswith("_ws") else active.http_port)
        try:
            self._write_config(routes)
        except RouterNotPersisted as exc:
            raise RouterError(str(exc)) from exc  # nothing was promised yet: registering fails whole

    def _apply_route(self, routes: Routes, environment_id: str, entry: Entry, upstream: Upstream,
                     refuse: bool) -> None:
        try:
            super()._apply_route(routes, environment_id, entry, upstream, refuse)
        except RouterNotPersisted:
            # the team's file was not updated but their haproxy serves the switch: routes.json says so
            self._save_routes(routes)
            raise

    def _point(self, backend: str, upstream: Upstream, port: int) -> None:
        self._ask(f"set server {backend}/app addr {upstream.host} port {port}",
                  lambda answer: answer.startswith(("IP changed", "no need to change")))

    def _served_name(self, environment_id: str, base: str, http: tuple[str, int],
                     ws: tuple[str, int]) -> str | None:
        env = self._env(self._load_routes(), environment_id)
        entry: Entry = "preview" if base.endswith("_preview") else "active"
        others = [env.upstream(e) for e in (entry, *ENTRIES) if e != entry]
        for up in (env.upstream(entry), *others):
            if (up.host, up.http_port) == http and (up.host, up.websocket_port) == ws:
                return up.name
        return None

    # -- the team's configuration file --------------------------------------------------------

    def _write_config(self, routes: Routes) -> None:
        """Write every recorded route into the team's file (when one is named): RouterNotPersisted if that fails."""
        if not self.config_file:
            return
        where = f" on {self._session().where}" if self.ssh is not None else ""
        addresses: dict[str, tuple[str, int]] = {}
        for env_id, env in routes.environments.items():
            for backend in backends_of(env_id):
                entry: Entry = "preview" if "_preview_" in backend else "active"
                up = env.upstream(entry)
                addresses[backend] = (up.host, up.websocket_port if backend.endswith("_ws") else up.http_port)
        try:
            if self.ssh is not None:
                self._replace_team_config_over_ssh(addresses)
            else:
                self._replace_team_config(addresses)
        except (OSError, RouterError) as exc:
            raise RouterNotPersisted(f"the team's haproxy serves the switch, but its configuration file"
                                     f" {self.config_file}{where} was not updated ({exc}): a reload of that haproxy"
                                     " would bring back the previous servers") from exc

    def _replace_team_config(self, addresses: dict[str, tuple[str, int]]) -> None:
        path = Path(os.path.realpath(self.config_file or ""))
        text = path.read_text()
        new = rewrite_servers(text, addresses)
        if new == text:
            return
        info = path.stat()
        # the candidate sits next to the file: same filesystem (an atomic rename) and same relative paths
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".promote")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(new)
                fh.flush()
                os.fchmod(fh.fileno(), info.st_mode & 0o7777)
                if (os.stat(tmp).st_uid, os.stat(tmp).st_gid) != (info.st_uid, info.st_gid):
                    os.fchown(fh.fileno(), info.st_uid, info.st_gid)
                os.fsync(fh.fileno())
            self._run(["-c", "-f", tmp], f"config check of {path}")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _replace_team_config_over_ssh(self, addresses: dict[str, tuple[str, int]]) -> None:
        """As :meth:`_replace_team_config`, the file being on the host: read there (base64, so its bytes and line
        endings come back as they are), rewritten here, and the candidate written next to its real path there,
        given its owner and mode, checked with the host's haproxy and renamed over it. The new text travels in the
        script on ssh's standard input, never in an argv. The file changed by someone else since it was read:
        nothing is written."""
        session = self._session()
        answer = self._on_host(f"set -eu\np=$(realpath -e -- {shlex.quote(self.config_file or '')})\n"
                               "printf '%s\\n' \"$p\"\nbase64 -w0 -- \"$p\"\n")
        real, _, encoded = answer.partition("\n")
        raw = base64.b64decode(encoded.strip())
        text = raw.decode()
        new = rewrite_servers(text, addresses)
        if new == text:
            return
        payload = base64.encodebytes(new.encode()).decode()  # lines of 76: no line of it is the end marker
        script = f"""set -eu
p={shlex.quote(real)}
d=$(dirname -- "$p"); b=$(basename -- "$p")
if [ "$(sha256sum < "$p" | cut -d' ' -f1)" != {hashlib.sha256(raw).hexdigest()} ]; then
    echo "$p changed while promote rewrote it; nothing written" >&2; exit 3
fi
# the candidate sits next to the file: same filesystem (an atomic rename)
t=$(mktemp -- "$d/.$b.promote-XXXXXXXX")
trap 'rm -f -- "$t"' EXIT
base64 -d > "$t" <<'PROMOTE-CANDIDATE-END'
{payload}PROMOTE-CANDIDATE-END
chmod --reference="$p" -- "$t"
if [ "$(stat -c %u:%g -- "$t")" != "$(stat -c %u:%g -- "$p")" ]; then chown --reference="$p" -- "$t"; fi
sync -- "$t"
if ! out=$({shlex.quote(self.haproxy_bin)} -c -f "$t" 2>&1); then
    {{ printf '%s\\n' "$out" | grep -F '[ALERT]' || printf '%s\\n' "$out"; }} | head -n 3 >&2
    exit 4
fi
mv -f -- "$t" "$p"
trap - EXIT
"""
        try:
            self._on_host(script)
        except RouterError as exc:
            self._log_check(f"{self.haproxy_bin} -c on {session.where}: {exc}")
            raise RouterError(f"{real} on {session.where} not replaced: {exc}") from exc
        self._log_check(f"{self.haproxy_bin} -c on {session.where} -> 0; {real} replaced")

    def _log_check(self, line: str) -> None:
        with contextlib.suppress(OSError), open(self._dir / "haproxy.log", "a") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
