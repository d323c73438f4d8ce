"""An nginx the team already runs, adopted: promote writes files into one folder their nginx includes, tests the
team's configuration with ``nginx -t`` and reloads it with the team's own reload command; it never starts, stops
or signals their nginx otherwise.

The team keeps its ``server`` blocks (listen, TLS, server_name, its own locations for other paths); what promote
owns is the folder ``include_dir``:

- ``http.conf``, included once in the team's ``http`` block: the ``promote_traffic`` log format, the websocket
  ``map`` and ``include <include_dir>/upstreams/*.conf`` (the upstream blocks of every environment);
- ``upstreams/<env>.conf``: an environment's upstream blocks, named ``promote_<env>_<entry>_http`` and ``_ws``
  (prefixed so that they cannot clash with the team's own upstreams);
- ``<env>_<entry>.conf``, included by the team's ``server`` block of that entry point (``include
  <include_dir>/<env>_active.conf;``): the access log, the probe location ``/__promote_router`` and the
  locations ``/`` and ``/websocket`` with their ``X-Promote-Upstream`` header, rendered by the managed router's
  own code (``NginxRouter._render_locations``), so both answer the same way.

Why locations included into the team's server blocks rather than server blocks of promote's own: the team's server
keeps what only they know (certificates, server names, listen options), and no port of theirs has to move. Why
the upstream blocks sit in files of their own at http level (not ``proxy_pass`` to an address in the location):
the keep-alive pool to Odoo (``keepalive 16``), as in the managed router. The http-level settings the managed
router sets in its own ``http`` block (proxy timeouts, no body size limit) are the team's here: promote sets
them in its ``/`` location only, where they cannot clash with a directive of theirs.

A switch rewrites an environment's files (each atomically), runs ``nginx -t`` on the team's main configuration,
runs the team's reload command, then polls the probe through the entry point's own port until new connections are
answered by the generation just written, as the managed router does. When ``nginx -t`` fails, the previous files
are put back and nothing is reloaded: the team's nginx goes on serving the previous upstream. The managed router
also waits until the old workers stopped accepting, which it tells from its master's pid; promote does not know
the pid of the team's master (their reload command may be ``systemctl reload nginx``), so here the new generation
must answer several new connections in a row instead: old workers close their listening sockets as soon as
the master tells them to quit, right after it started the new ones.

Onboarding: nginx refuses to include a file that does not exist, so the team creates promote's files empty,
includes them and reloads; registering the environment fills them. ``missing()`` (``promote inventory check``)
therefore cannot ask the probe before registration: it reads the files the team's configuration includes from
``nginx -T``; once registered, it asks the running nginx's probe on each entry point's port. A registration whose
probe does not show leaves the files in place (``nginx -t`` accepted them) and says which include is missing.

The per-entry access logs, ``traffic/<env>_<entry>.log``, are in promote's ``work_dir`` (the team's nginx master
opens them, so it must be able to write there), read by ``traffic_since`` as for the managed router.
``served_upstream`` asks the running nginx through the probe, never ``routes.json``.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from resources._router_common import ENTRIES, Entry, EnvRoutes, Routes, atomic_write, host_port, safe_name, wait_for
from resources.nginx_router import PROBE_PATH, NginxRouter, _probe_text
from resources.router import RouterError, RoutingState, Upstream

_HTTP = """\
# Written by promote (AdoptedNginxRouter); include it once in the http block of your nginx.conf:
#     include {dir}/http.conf;
# promote rewrites this folder; edits here are overwritten.
# One line per request on an entry point, read by promote for the stability window: accept time, upstream address,
# status, request time, path without its query string (which may carry tokens).
log_format promote_traffic escape=json '$msec $upstream_addr $status $request_time "$uri"';
map $http_upgrade $promote_connection_upgrade {{ default upgrade; '' close; }}
include {dir}/upstreams/*.conf;
"""

# The http-level settings of the managed router's own http block, here in promote's "/" location only.
_LOCATION_EXTRA = """
        proxy_connect_timeout 5s;
        proxy_read_timeout 720s;
        proxy_send_timeout 720s;
        client_max_body_size 0;  # as HAProxy: no limit here, Odoo enforces its own"""

_SETTLE_PROBES = 5  # new connections in a row the new generation must answer after a reload


def _first_line(text: str) -> str:
    """nginx's own reason out of its output, as one line: its first [emerg] message (else its first [error], [crit]
    or [alert]) without the time and pid that ``-q`` puts before it (``2026/11/30 23:18:39 [emerg] 23485#23485:
    unknown directive ...``)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for levels in ("emerg", "error|crit|alert"):
        for line in lines:
            found = re.search(rf"\[(?:{levels})\] (?:\d+#\d+: )?(?P<message>.*)$", line)
            if found:
                return found["message"]
    return lines[0] if lines else "no output"


class AdoptedNginxRouter(NginxRouter):
    """The team's nginx: routed through files it includes, tested with ``nginx -t`` and reloaded by the team's
    reload command; never started, stopped or signalled otherwise. ``work_dir`` holds ``routes.json``, its lock
    and the traffic logs."""

    include_dir: str = Field(description="Folder of promote's files, which the team's nginx includes: http.conf in"
                             " its http block, <env>_<entry>.conf in the server block of each entry point. promote"
                             " writes only there.")
    config_file: str = Field(description="The team's main nginx.conf: every switch is tested with `nginx -t -c` it"
                             " before the reload.")
    nginx_command: list[str] | None = Field(
        default=None, description="How promote runs the team's nginx binary for `nginx -t` (and the default reload),"
        " e.g. ['sudo', '-n', '/usr/sbin/nginx'] when promote's user cannot read their configuration (nginx -t opens"
        " their logs and certificates). None: [nginx_bin].")
    reload_command: list[str] | None = Field(
        default=None, description="The command that reloads the team's nginx gracefully, e.g. ['systemctl',"
        " 'reload', 'nginx']. None: nginx_command followed by '-c', config_file, '-s', 'reload'.")

    _location_extra: ClassVar[str] = _LOCATION_EXTRA

    # -- files -------------------------------------------------------------------------------

    @property
    def _include_dir(self) -> Path:
        return Path(self.include_dir)

    def _config_path(self) -> Path:
        return Path(self.config_file)

    def entry_file(self, environment_id: str, entry: Entry) -> Path:
        """The file the team's server block of this entry point includes."""
        return self._include_dir / f"{safe_name(environment_id)}_{entry}.conf"

    def _upstreams_file(self, environment_id: str) -> Path:
        return self._include_dir / "upstreams" / f"{safe_name(environment_id)}.conf"

    def _upstream_base(self, environment_id: str, entry: Entry) -> str:
        return f"promote_{super()._upstream_base(environment_id, entry)}"

    def _files(self, environment_id: str, env: EnvRoutes, gen: str, refuse: bool = False) -> dict[Path, str]:
        head = f"# Written by promote for environment {environment_id!r}, generation {gen}; edits are overwritten.\n"
        files = {self._upstreams_file(environment_id): head + self._render_upstreams(environment_id, env)}
        for entry in ENTRIES:
            files[self.entry_file(environment_id, entry)] = (
                f"{head}# Include it in the server block listening on port {env.port(entry)}:\n"
                f"#     include {self.entry_file(environment_id, entry)};\n"
                + self._render_locations(environment_id, env, entry, gen, refuse))
        return files

    def _prepare(self) -> None:
        """promote's folder with its http-level file, and the folder of the traffic logs."""
        (self._include_dir / "upstreams").mkdir(parents=True, exist_ok=True)
        (self._dir / "traffic").mkdir(parents=True, exist_ok=True)
        text = _HTTP.format(dir=self._include_dir)
        path = self._include_dir / "http.conf"
        if not path.exists() or path.read_text() != text:
            self._write(path, text)

    # -- the team's nginx --------------------------------------------------------------------

    def _run(self, cmd: list[str], what: str) -> str:
        """Run one command of the team's nginx; its standard output, or RouterError in one line."""
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RouterError(f"the team's nginx {what} ({shlex.join(cmd)}) failed: {exc}") from exc
        if proc.returncode != 0:
            raise RouterError(f"the team's nginx {what} failed (exit {proc.returncode}):"
                              f" {_first_line(proc.stderr + proc.stdout)}")
        return proc.stdout

    def _nginx_cmd(self) -> list[str]:
        return self.nginx_command or [self.nginx_bin]

    def _check_config(self) -> None:
        self._run([*self._nginx_cmd(), "-t", "-q", "-c", self.config_file], f"config test of {self.config_file}")

    def _reload_cmd(self) -> list[str]:
        return self.reload_command or [*self._nginx_cmd(), "-c", self.config_file, "-s", "reload"]

    def _write(self, path: Path, text: str) -> None:
        # readable by the team's nginx whatever user its master runs as; nothing in these files is secret
        atomic_write(path, text, mode=0o644)

    def _reload(self, expected: dict[int, str]) -> None:
        """The team's reload, then new connections must be answered by the new generation (several in a row: see
        the module's docstring)."""
        self._run(self._reload_cmd(), "reload")
        self._wait_serving(expected)
        streak = [0]

        def settled() -> bool:
            streak[0] = streak[0] + 1 if all(self._probe(p) == want for p, want in expected.items()) else 0
            return streak[0] >= _SETTLE_PROBES

        if not wait_for(settled, 10):
            raise RouterError(f"the team's nginx still answers a previous configuration on {sorted(expected)} after"
                              " its reload")

    def _wait_serving(self, expected: dict[int, str], timeout: float = 10) -> None:
        if not wait_for(lambda: all(self._probe(p) == want for p, want in expected.items()), timeout):
            got = {p: (self._probe(p).splitlines() or ["no probe answer"])[0][:80] for p in expected}
            raise RouterError(f"the team's nginx did not serve the new configuration within {timeout}s after its"
                              f" reload ({'; '.join(f'port {p}: {a}' for p, a in sorted(got.items()))}): does the"
                              f" server block on each port include promote's file ({self._include_dir}/<env>_<entry>"
                              ".conf)?")

    def _reloadable(self) -> bool:
        return True  # the team's nginx: their reload command says when it is not running

    def _reload_after_restore(self, reloaded: bool) -> None:
        """A reload that went through but whose generation did not show: the team's nginx follows the previous
        files again. No reload when none was made (``nginx -t`` refused the new files)."""
        if reloaded:
            try:
                self._run(self._reload_cmd(), "reload")
            except RouterError:
                pass  # the original failure is what the caller is told

    def _pid(self) -> int | None:
        return None  # the team's master is theirs: never signalled by promote

    def is_running(self) -> bool:
        """Every recorded entry point answers promote's probe; with none recorded, the team's configuration
        passes ``nginx -t`` (there is nothing of promote's to ask yet)."""
        routes = self._load_routes()
        if not routes.environments:
            try:
                self._check_config()
            except RouterError:
                return False
            return True
        return all(self._answers_probe(env.port(e)) for env in routes.environments.values() for e in ENTRIES)

    def _answers_probe(self, port: int) -> bool:
        """The port answers promote's probe: "<label> <generation> <http address> <websocket address>"."""
        answer = self._probe(port).split()
        return len(answer) == 4 and answer[1].isdigit()

    def start(self) -> None:
        """Nothing to start: the team runs it. Says what is wrong when it does not answer."""
        self._check_config()
        for env_id, env in self._load_routes().environments.items():
            for entry in ENTRIES:
                if not self._answers_probe(env.port(entry)):
                    raise RouterError(f"the team's nginx does not answer promote's probe {PROBE_PATH} on"
                                      f" {host_port(self.listen_host, env.port(entry))} ({env_id}'s {entry} entry"
                                      " point)")

    def stop(self) -> None:
        """Nothing to stop: the team's nginx is theirs."""

    # -- what the team's nginx lacks -----------------------------------------------------------

    def missing(self, environment_id: str, active_port: int | None = None,
                preview_port: int | None = None) -> list[str]:
        """What the team's nginx lacks to serve ``environment_id``, a phrase each (empty: nothing): a configuration
        that passes ``nginx -t``, promote's http.conf included, something listening on each entry point's port, and
        there promote's file included. For a registered environment the last is asked of the running nginx (its
        probe answers on the port); before registration promote's files are still empty, so it is read from the
        configuration nginx loads (``nginx -T`` lists every file it includes). Ports default to the recorded ones."""
        recorded = self._load_routes().environments.get(environment_id)
        ports: dict[Entry, int | None] = {
            "active": active_port or (recorded.active_port if recorded else None),
            "preview": preview_port or (recorded.preview_port if recorded else None)}
        missing = []
        included: set[str] | None = None
        try:
            dump = self._run([*self._nginx_cmd(), "-T", "-q", "-c", self.config_file],
                             f"config test of {self.config_file}")
            included = {line[len("# configuration file "):].rstrip(":") for line in dump.splitlines()
                        if line.startswith("# configuration file ")}
            if str(self._include_dir / "http.conf") not in included:
                missing.append(f"'include {self._include_dir / 'http.conf'};' in its http block")
        except RouterError as exc:
            missing.append(f"a configuration that passes nginx -t ({str(exc).split(': ', 1)[-1]})")
        for entry in ENTRIES:
            port, file = ports[entry], self.entry_file(environment_id, entry)
            if port is None:
                missing.append(f"a known port for its {entry} entry point (register it with its port)")
            elif recorded is not None and self._answers_probe(port):
                continue
            elif not self._listening(port):
                missing.append(f"a server listening on {host_port(self.listen_host, port)} (its {entry} entry point)")
            elif recorded is not None or (included is not None and str(file) not in included):
                missing.append(f"'include {file};' in the server block listening on port {port}")
        return missing

    def _listening(self, port: int) -> bool:
        try:
            with socket.create_connection((self.listen_host, port), timeout=1):
                return True
        except OSError:
            return False

    # -- routing -----------------------------------------------------------------------------

    def register_environment(
        self, environment_id: str, active: Upstream, active_port: int | None = None,
        preview_port: int | None = None,
    ) -> RoutingState:
        """Record an environment whose server blocks the team's nginx already has (on ``listen_host``, at these
        ports, each including promote's file) and point both entry points at ``active``."""
        if active_port is None or preview_port is None:
            raise RouterError(f"{environment_id}: an adopted nginx's entry points are the team's server blocks: give"
                              " their active and preview ports")
        return super().register_environment(environment_id, active, active_port, preview_port)

    def _install_environment(self, routes: Routes, environment_id: str) -> None:
        """Write the environment's files and reload. When the probe does not show them, the files stay (``nginx
        -t`` accepted them): the team can include them, reload and register again."""
        env, gen = routes.environments[environment_id], str(time.time_ns())
        probe = _probe_text(env.active, gen)
        files = self._files(environment_id, env, gen)
        self._prepare()
        previous = {path: path.read_text() if path.exists() else None for path in files}
        for path, text in files.items():
            self._write(path, text)
        try:
            self._check_config()
        except RouterError:
            for path, old in previous.items():
                if old is None:
                    path.unlink(missing_ok=True)
                else:
                    self._write(path, old)  # e.g. the empty file the team made to include it
            raise
        self._reload({env.active_port: probe, env.preview_port: probe})

    def _apply_route(self, routes: Routes, environment_id: str, entry: Entry, upstream: Upstream,
                     refuse: bool) -> None:
        env, gen = routes.environments[environment_id], str(time.time_ns())
        self._replace_include(environment_id, self._files(environment_id, env, gen, refuse),
                              {env.port(entry): _probe_text(upstream, gen)})
