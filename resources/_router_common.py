"""What the HAProxy and nginx routers share: ``routes.json``, atomic files, locks, pids, ports.

``routes.json`` records what we asked both routers to do: ``state()`` reads it and every router
config is regenerated from it, so a crash between "the router switched" and "the config file was
rewritten" is healed by the next ``start()``. It is not evidence of what the router does: a switch
the router never carried out leaves it saying otherwise, so verdicts ask ``served_upstream()``,
which each router answers from the running process. The flow that is identical for both routers
(lock, load, validate, save, build the state) lives in :class:`RoutesRouter`; the subclasses only
say how a route change reaches their real router.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field

from resources.router import (
    MAX_TRAFFIC_ERRORS,
    RouterError,
    RouterNotPersisted,
    RouterResource,
    RoutingState,
    Traffic,
    TrafficError,
    Upstream,
    percentile,
)

Entry = Literal["active", "preview"]
ENTRIES: tuple[Entry, ...] = ("active", "preview")
WEBSOCKET_PATH = "/websocket"


class EnvRoutes(BaseModel):
    """One environment in routes.json: its two listen ports and where each entry point goes."""

    active_port: int
    preview_port: int
    active: Upstream
    preview: Upstream

    def port(self, entry: Entry) -> int:
        return self.active_port if entry == "active" else self.preview_port

    def upstream(self, entry: Entry) -> Upstream:
        return self.active if entry == "active" else self.preview


class Routes(BaseModel):
    environments: dict[str, EnvRoutes] = Field(default_factory=dict)

    def used_ports(self) -> set[int]:
        return {p for env in self.environments.values() for p in (env.active_port, env.preview_port)}


def atomic_write(path: Path, text: str, mode: int | None = None) -> None:
    """Write via a temp file in the same folder + os.replace, so readers never see half a file. The file is
    owner-only unless ``mode`` says otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def safe_name(environment_id: str) -> str:
    """A name legal in HAProxy/nginx identifiers and file names; distinct ids stay distinct."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", environment_id)
    if cleaned != environment_id or not cleaned:
        cleaned = f"{cleaned}_{hashlib.sha1(environment_id.encode()).hexdigest()[:8]}"
    return cleaned


def safe_label(text: str) -> str:
    """Upstream names go into header values and quoted strings: keep them to harmless chars."""
    return re.sub(r"[^A-Za-z0-9._:-]", "_", text) or "_"


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_port(host: str, taken: set[int]) -> int:
    """A port the OS says is free on ``host`` now and that no other environment has recorded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
    raise RouterError(f"no free port found on {host}")


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def process_alive(pid: int, marker: str) -> bool:
    """Alive, not a zombie, and its command line mentions ``marker`` (our config path).

    The marker check keeps a recycled pid from being mistaken for (and signalled as) our router.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and marker in cmdline


def stop_processes(pids: list[int], marker: str, graceful: signal.Signals, grace: float = 5.0) -> None:
    """Signal ``graceful``, then escalate to SIGTERM and SIGKILL; return when all have exited."""
    def all_gone() -> bool:
        return not any(process_alive(p, marker) for p in pids)

    for sig, wait in ((graceful, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        if all_gone():
            return
        for pid in pids:
            if process_alive(pid, marker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if wait_for(all_gone, wait):
            return
    raise RouterError(f"router processes {pids} did not exit")


class RoutesRouter(RouterResource):
    """Shared flow of the file-backed routers; subclasses implement the ``_``-hooks below."""

    def _config_path(self) -> Path:
        raise NotImplementedError

    def _install_environment(self, routes: Routes, environment_id: str) -> None:
        """Make the router serve a (new) environment present in ``routes``."""
        raise NotImplementedError

    def _apply_route(self, routes: Routes, environment_id: str, entry: Entry, upstream: Upstream,
                     refuse: bool) -> None:
        """Point one entry point at ``upstream``; ``routes`` already holds the new upstream."""
        raise NotImplementedError

    # -- shared plumbing -------------------------------------------------------------------

    @property
    def _dir(self) -> Path:
        return Path(self.work_dir).resolve()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise mutations across threads and processes sharing one work_dir."""
        self._dir.mkdir(parents=True, exist_ok=True)
        with open(self._dir / ".router.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _load_routes(self) -> Routes:
        path = self._dir / "routes.json"
        if not path.exists():
            return Routes()
        return Routes.model_validate_json(path.read_text())

    def _save_routes(self, routes: Routes) -> None:
        atomic_write(self._dir / "routes.json", routes.model_dump_json(indent=2) + "\n")

    def _url(self, port: int) -> str:
        return f"http://{host_port(self.listen_host, port)}"

    def _state_of(self, environment_id: str, env: EnvRoutes) -> RoutingState:
        return RoutingState(
            environment_id=environment_id, router=self.kind, active=env.active, preview=env.preview,
            active_url=self._url(env.active_port), preview_url=self._url(env.preview_port),
            config_path=str(self._config_path()),
        )

    @staticmethod
    def _env(routes: Routes, environment_id: str) -> EnvRoutes:
        try:
            return routes.environments[environment_id]
        except KeyError:
            raise RouterError(f"environment {environment_id!r} is not registered with the router") from None

    # -- the interface ---------------------------------------------------------------------

    def state(self, environment_id: str) -> RoutingState:
        return self._state_of(environment_id, self._env(self._load_routes(), environment_id))

    def register_environment(
        self, environment_id: str, active: Upstream, active_port: int | None = None,
        preview_port: int | None = None,
    ) -> RoutingState:
        with self._locked():
            routes = self._load_routes()
            if environment_id in routes.environments:
                return self._state_of(environment_id, routes.environments[environment_id])
            taken = routes.used_ports()
            a_port = active_port or free_port(self.listen_host, taken)
            p_port = preview_port or free_port(self.listen_host, taken | {a_port})
            if a_port == p_port or {a_port, p_port} & taken:
                raise RouterError(f"ports {a_port}/{p_port} clash with each other or another environment")
            env = EnvRoutes(active_port=a_port, preview_port=p_port, active=active, preview=active)
            routes.environments[environment_id] = env
            self._install_environment(routes, environment_id)
            self._save_routes(routes)
            return self._state_of(environment_id, env)

    def set_preview(self, environment_id: str, upstream: Upstream) -> RoutingState:
        return self._route(environment_id, "preview", upstream, refuse=False)

    def switch_active(self, environment_id: str, upstream: Upstream) -> RoutingState:
        """Send the public entry point to ``upstream``; no client connection may be closed."""
        return self._route(environment_id, "active", upstream, refuse=self.drill_refuse_switch)

    def _route(self, environment_id: str, entry: Entry, upstream: Upstream, refuse: bool) -> RoutingState:
        # A folder that cannot be written (a full disk, a read-only mount) is a RouterError naming it, never a bare
        # OSError: a rollback catches router failures to go on with what it can still do.
        try:
            with self._locked():
                routes = self._load_routes()
                env = self._env(routes, environment_id)
                new_env = env.model_copy(update={entry: upstream})
                routes.environments[environment_id] = new_env
                self._apply_route(routes, environment_id, entry, upstream, refuse)
                try:
                    self._save_routes(routes)
                except OSError as exc:
                    raise RouterNotPersisted(
                        f"{environment_id}'s {entry} entry point serves {upstream.name}, but"
                        f" {self._dir / 'routes.json'} could not be written ({exc})") from exc
                return self._state_of(environment_id, new_env)
        except OSError as exc:
            raise RouterError(f"router folder {self._dir} could not be written: {exc}") from exc


# -- traffic ---------------------------------------------------------------------------------------------------
class LoggedRequest(NamedTuple):
    """One request as a router's own log line tells it (parsed by each router from its format). A plain tuple, not a
    model: a busy window's read makes tens of thousands of them every second."""

    at: float  # unix time
    entry: str | None
    status: int
    ms: float | None  # request time; None when the router did not log one
    path: str


def upstream_addresses(upstream: Upstream) -> set[str]:
    """How the router writes the upstream's addresses in its logs and stats."""
    return {host_port(upstream.host, upstream.http_port), host_port(upstream.host, upstream.websocket_port)}


def summarise(requests: list[LoggedRequest], upstream: Upstream, router: str, source: str,
              since: datetime) -> Traffic:
    """Counts, failed requests and response times of logged requests. A websocket's ``101`` is left out of the
    times: its request time is the whole life of the tunnel, minutes, not a response time."""
    by_class = dict.fromkeys(range(1, 6), 0)
    errors: list[TrafficError] = []
    not_listed = 0
    times: list[float] = []
    for r in sorted(requests, key=lambda r: r.at):
        klass = r.status // 100
        if klass in by_class:
            by_class[klass] += 1
        if r.status >= 500:
            if len(errors) < MAX_TRAFFIC_ERRORS:
                errors.append(TrafficError(at=datetime.fromtimestamp(r.at, UTC), path=r.path, status=r.status,
                                           entry=r.entry))
            else:
                not_listed += 1
        if r.ms is not None and r.ms >= 0 and r.status != 101:
            times.append(r.ms)
    return Traffic(upstream=upstream.name, router=router, source=source, since=since, requests=len(requests),
                   **{f"responses_{k}xx": n for k, n in by_class.items()}, errors=errors, errors_not_listed=not_listed,
                   timed_requests=len(times), p95_ms=percentile(times, 0.95), max_ms=max(times) if times else None)


def logged_since(mark: datetime) -> float:
    """The unix time from which a logged request counts. Routers log times to the millisecond, truncated: a
    request accepted in the mark's own millisecond is in."""
    return int(mark.timestamp() * 1000) / 1000
