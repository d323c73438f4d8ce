"""The router interface: what a promotion needs from whatever fronts production.

A production environment is reached through two entry points on the router: ``active`` (the
public one, what users hit) and ``preview`` (used to smoke-test green before it takes traffic).
Each entry point routes Odoo's HTTP paths and its websocket path (``/websocket``) to one
upstream deployment. A cutover is a single call, ``switch_active``; a rollback is the same call
with blue as the target. Implementations (HAProxy, nginx) keep the switch in their own
configuration so that a restart of the router keeps the routing.
"""

from __future__ import annotations

from datetime import datetime

from dagster import ConfigurableResource
from pydantic import BaseModel, Field


class RouterError(RuntimeError):
    """The router refused or failed an operation; the message says which and why."""


class RouterNotPersisted(RouterError):
    """The entry point serves the new upstream now, but the router's folder could not be written: a restart of
    the router would bring back the previous one. The caller decides whether that is a failure (a cutover) or a
    note (a rollback, whose traffic is where it must be)."""


class Upstream(BaseModel):
    """One Odoo deployment as the router sees it."""

    name: str = Field(description="Deployment name, unique per environment (e.g. 'prod-r20261126x').")
    colour: str = Field(description="'blue' or 'green' at the time it was routed.")
    host: str = "127.0.0.1"
    http_port: int
    websocket_port: int


class RoutingState(BaseModel):
    """Where an environment's entry points send traffic right now."""

    environment_id: str
    router: str  # "haproxy" | "nginx"
    active: Upstream | None
    preview: Upstream | None
    active_url: str
    preview_url: str
    config_path: str


class ServedUpstream(BaseModel):
    """What the running router itself says one entry point serves, asked of the router, never of routes.json.

    ``routes.json`` records what we *asked* the router to do; a switch the router did not carry out (a lost
    reload, a runtime-API call that went nowhere) leaves the file saying one thing and the traffic going
    elsewhere. Every verdict about routing ("traffic is back on blue") is made from this instead.
    """

    environment_id: str
    entry: str = Field(description="'active' (public) or 'preview'.")
    name: str | None = Field(description="The deployment the router labels its responses with; None if it "
                                         "serves nothing (no answer, server down or in maintenance).")
    host: str | None = None
    http_port: int | None = None
    websocket_port: int | None = None
    source: str = Field(description="How the router was asked (for evidence and error messages).")

    def is_upstream(self, upstream: Upstream | None) -> bool:
        """The router serves exactly ``upstream``: its name, and its addresses where the router tells them."""
        if upstream is None or self.name != upstream.name:
            return False
        return all(got is None or got == want for got, want in (
            (self.host, upstream.host), (self.http_port, upstream.http_port),
            (self.websocket_port, upstream.websocket_port)))


class TrafficMark(BaseModel):
    """Where a traffic count starts: what the router had counted for one upstream at ``at``.

    Opaque to callers: the router that made it reads it back."""

    environment_id: str
    upstream: str = Field(description="The deployment counted (its name).")
    at: datetime
    baseline: dict[str, int] = Field(default_factory=dict, description="Router-specific starting points: HAProxy's"
                                     " counters per backend, nginx's access log sizes.")


class TrafficError(BaseModel):
    """One request the upstream failed, as the router logged it."""

    at: datetime
    path: str = Field(description="The request's path, without its query string (which may carry tokens).")
    status: int = Field(description="The status the client got (502/503/504 when the router got no answer).")
    entry: str | None = Field(default=None, description="The entry point it came through, where the router says.")


class Traffic(BaseModel):
    """What the router itself counted for one upstream since a mark: every request it sent there, users'
    and probes' alike."""

    upstream: str
    router: str
    source: str = Field(description="How the router was read (for evidence).")
    since: datetime
    requests: int
    responses_1xx: int = 0
    responses_2xx: int = 0
    responses_3xx: int = 0
    responses_4xx: int = 0
    responses_5xx: int = 0
    connection_errors: int = Field(default=0, description="Requests that never got an answer from the upstream"
                                   " (refused or broken connection, broken response); the client got the router's"
                                   " own error answer.")
    timed_requests: int = Field(default=0, description="Requests the response times below are over.")
    p95_ms: float | None = Field(default=None, description="95th percentile of the request time (ms).")
    max_ms: float | None = None
    errors: list[TrafficError] = Field(default_factory=list, description="Failed requests with their path, oldest"
                                       " first (at most ``MAX_TRAFFIC_ERRORS``).")
    errors_not_listed: int = Field(default=0, description="Failed requests counted but not in ``errors``.")

    @property
    def failed(self) -> int:
        """Requests green failed: 5xx answers and answers it never gave."""
        return self.responses_5xx + self.connection_errors


MAX_TRAFFIC_ERRORS = 200  # details of the first ones; the counts stay exact


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: it is a time some request really took)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(q * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


class RouterResource(ConfigurableResource):
    """Base for routers. Subclasses implement the methods below against a real router.

    ``work_dir`` holds the router's configuration, pid file, sockets, logs and a ``routes.json``
    that records, per environment, the listen ports and the current upstreams.
    ``drill_refuse_switch`` makes the next ``switch_active`` ask the real router for something it
    refuses (used by drills and tests to exercise the cutover-failure path with a real refusal).
    """

    work_dir: str = Field(description="Folder for the router's config, pid, socket, logs and routes.json.")
    listen_host: str = Field(default="127.0.0.1", description="Address the entry points bind to.")
    drill_refuse_switch: bool = Field(
        default=False, description="Drill: make switch_active fail through a real refusal of the router."
    )

    @property
    def kind(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        """Start the private router instance if it is not running (idempotent)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the private router instance (idempotent)."""
        raise NotImplementedError

    def is_running(self) -> bool:
        raise NotImplementedError

    def register_environment(
        self, environment_id: str, active: Upstream, active_port: int | None = None,
        preview_port: int | None = None,
    ) -> RoutingState:
        """Create (or keep, if present) the active and preview entry points for an environment.

        Ports default to free loopback ports, chosen once and then kept in routes.json.
        Preview initially points at the same upstream as active.
        """
        raise NotImplementedError

    def set_preview(self, environment_id: str, upstream: Upstream) -> RoutingState:
        raise NotImplementedError

    def switch_active(self, environment_id: str, upstream: Upstream) -> RoutingState:
        """Send the public entry point to ``upstream``; no client connection may be closed."""
        raise NotImplementedError

    def state(self, environment_id: str) -> RoutingState:
        """What routes.json records (what we asked for); ``served_upstream`` says what the router does."""
        raise NotImplementedError

    def served_upstream(self, environment_id: str, entry: str = "active") -> ServedUpstream:
        """Ask the running router which upstream the entry point sends traffic to (never routes.json)."""
        raise NotImplementedError

    def traffic_mark(self, environment_id: str, upstream: Upstream) -> TrafficMark:
        """Start counting the requests the router sends to ``upstream`` (on any of the environment's entry points)
        from now on."""
        raise NotImplementedError

    def traffic_since(self, mark: TrafficMark, upstream: Upstream) -> Traffic:
        """What the running router counted for ``upstream`` since ``mark`` (read from the router, never from
        our own records); RouterError when it cannot be read."""
        raise NotImplementedError

    def serves(self, environment_id: str, upstream: Upstream | None, entry: str = "active") -> bool:
        """The verdict helper: the running router sends ``entry`` to ``upstream`` (RouterError if unreachable
        counts as no)."""
        try:
            return self.served_upstream(environment_id, entry).is_upstream(upstream)
        except RouterError:
            return False
