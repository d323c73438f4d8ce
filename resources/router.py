"""The router interface: what a promotion needs from whatever fronts production.

A production environment is reached through two entry points on the router: ``active`` (the
public one, what users hit) and ``preview`` (used to smoke-test green before it takes traffic).
Each entry point routes Odoo's HTTP paths and its websocket path (``/websocket``) to one
upstream deployment. A cutover is a single call, ``switch_active``; a rollback is the same call
with blue as the target. Implementations (HAProxy, nginx) keep the switch in their own
configuration so that a restart of the router keeps the routing.
"""

from __future__ import annotations

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


class RouterResource(ConfigurableResource):
    """Base for routers. Subclasses implement the five methods below against a real router.

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
        raise NotImplementedError
