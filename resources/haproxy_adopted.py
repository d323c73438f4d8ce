"""An HAProxy the team already runs, adopted: switched through its runtime API only, never started or signalled.

The team's HAProxy keeps its own process, frontends and configuration; promote only re-targets servers. For each
production environment it needs four backends, named as the private router names them
(``<env>_active_http``, ``<env>_active_ws``, ``<env>_preview_http``, ``<env>_preview_ws``, ``<env>`` made safe by
:func:`safe_name`), each with a server named ``app``, and a runtime API at ``level admin`` that promote can reach:

- a unix socket path (``/run/haproxy/admin.sock``, ``unix@/run/...``), when promote runs on the same machine;
- a TCP address (``ipv4@10.0.0.7:9999`` or ``10.0.0.7:9999``): HAProxy's ``stats socket`` takes no ACL, so the
  team puts a ``mode tcp`` frontend with an ACL on the source address in front of its unix admin socket
  (README, "Adopting the team's HAProxy").

A switch is ``set server <backend>/app addr A port P`` on the runtime API, as in the private router: client
connections live on. When ``config_file`` names the team's haproxy.cfg, the new address is also written into the
``server app`` line of each switched backend (validated with ``haproxy -c`` first, replaced atomically, its owner
and mode kept), so a reload or restart of their HAProxy keeps the live state. The runtime change is never undone
because that file could not be written: traffic is where the switch put it, and the caller is told
(:class:`RouterNotPersisted`).

What the private router reads from its own map file (the ``X-Promote-Upstream`` label) does not exist here: the
deployment an entry point serves is the one recorded in ``routes.json`` whose addresses the running HAProxy's
servers have now.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from resources._router_common import ENTRIES, Entry, Routes, safe_name
from resources.haproxy_router import HAProxyRouter
from resources.router import RouterError, RouterNotPersisted, RoutingState, Upstream

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
                             " ('ipv4@10.0.0.7:9999' or '10.0.0.7:9999').")
    config_file: str | None = Field(default=None, description="The team's haproxy.cfg on this machine: every switch"
                                    " is also written into it (checked with haproxy -c, replaced atomically, owner"
                                    " and mode kept) so that a reload of their HAProxy keeps it. None: switches live"
                                    " in the running process only, and the team's reload would undo them.")

    _naming: ClassVar[str] = "addresses matched against routes.json"

    # -- where it is -------------------------------------------------------------------------

    @property
    def _api(self) -> str:
        return self.runtime_api

    def _config_path(self) -> Path:
        return Path(self.config_file) if self.config_file else self._dir / "routes.json"

    def _connect(self) -> socket.socket:
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

    # -- never the process -------------------------------------------------------------------

    def is_running(self) -> bool:
        """Its runtime API answers."""
        return "Pid:" in self._command_quiet("show info")

    def start(self) -> None:
        """Nothing to start: the team runs it. Says so when its runtime API does not answer at level admin."""
        level = self._command_quiet("show cli level")
        if not level:
            raise RouterError(f"the team's haproxy does not answer on its runtime API {self._api}")
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
        addresses: dict[str, tuple[str, int]] = {}
        for env_id, env in routes.environments.items():
            for backend in backends_of(env_id):
                entry: Entry = "preview" if "_preview_" in backend else "active"
                up = env.upstream(entry)
                addresses[backend] = (up.host, up.websocket_port if backend.endswith("_ws") else up.http_port)
        try:
            self._replace_team_config(addresses)
        except (OSError, RouterError) as exc:
            raise RouterNotPersisted(f"the team's haproxy serves the switch, but its configuration file"
                                     f" {self.config_file} was not updated ({exc}): a reload of that haproxy would"
                                     " bring back the previous servers") from exc

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
