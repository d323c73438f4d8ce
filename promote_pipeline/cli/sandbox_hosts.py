"""``promote sandbox up --topology hosts``: the sandbox with its Odoo on other hosts, for people to try.

The hosts are network namespaces on this machine (``resources/netns_hosts.py``), as the test suite builds them:
``db`` (PostgreSQL: the environments' databases and the ops database), ``staging`` and ``production`` (the Odoo
stand-ins and their PgBouncers, started and stopped over SSH as process hosts), ``router`` (the team's HAProxy,
started here inside that namespace and adopted: switched through its runtime API over TCP) and ``worker`` (where
``ip netns exec <worker namespace> promote run ...`` runs a promotion as a promoter on another machine would).
They share this machine's file system. The layout is recorded in ``hosts.json`` in the sandbox's folder; ``down``
removes the hosts with everything else. Needs root (``ip netns``), sshd, HAProxy and PgBouncer; one
staging/production pair.
"""

from __future__ import annotations

import json
import secrets as pysecrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promote_pipeline.cli.sandbox import ADMIN_REF, DSN_REF, PROD, ROLE_KEY_REF, STAGING, Sandbox
from promote_pipeline.promotion import settings as settings_mod
from promote_pipeline.promotion.services import close_ssh_hosts
from resources import netns_hosts, secrets
from resources._router_common import safe_name
from resources.private_files import make_private_dirs, write_private
from resources.router import RouterResource, Upstream

HOSTS_FILE = "hosts.json"
KEY_REF = "SANDBOX_SSH_KEY"
ENV_HOSTS = {STAGING: "staging", PROD: "production"}
# The router namespace's own ports: nothing else listens there.
API_PORT, ACTIVE_PORT, PREVIEW_PORT = 9999, 8080, 8081

TEAM_HAPROXY_CFG = """\
# The sandbox's stand-in for a team's own HAProxy, adopted by promote (router_mode adopted).
global
    stats socket {admin} mode 600 level admin

defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h

# The runtime API over TCP for the hosts' subnet only, in front of the unix admin socket (stats sockets take no ACL).
frontend runtime_api
    mode tcp
    bind {router}:{api_port}
    tcp-request connection reject unless {{ src {subnet} }}
    default_backend runtime_api_cli

backend runtime_api_cli
    mode tcp
    server cli unix@{admin}

frontend {n}_active
    bind {router}:{active_port}
    use_backend {n}_active_ws if {{ path_beg /websocket }}
    default_backend {n}_active_http

frontend {n}_preview
    bind {router}:{preview_port}
    use_backend {n}_preview_ws if {{ path_beg /websocket }}
    default_backend {n}_preview_http

backend {n}_active_http
    server app 127.0.0.1:9

backend {n}_active_ws
    server app 127.0.0.1:9

backend {n}_preview_http
    server app 127.0.0.1:9

backend {n}_preview_ws
    server app 127.0.0.1:9
"""


def unavailable_reason() -> str | None:
    """Why this machine cannot hold the hosts (None: it can)."""
    reason = netns_hosts.unavailable_reason()
    if reason:
        return reason
    for tool in ("haproxy", "pgbouncer"):
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/local/sbin")):
            return f"{tool} is not installed (`make deps`)"
    if not Path(netns_hosts.SSHD).exists():
        return f"the OpenSSH server ({netns_hosts.SSHD}) is not installed (`make deps`)"
    return None


def admin_socket_dir(prefix: str) -> Path:
    """Where the team HAProxy of the network ``prefix`` keeps its unix admin socket: a short path of its own, since
    a socket's path is limited to 107 bytes and HAProxy binds ``<path>.<pid>.tmp`` first (under a test's deep
    temporary folder the socket beside haproxy.cfg was over it, and HAProxy exited at start)."""
    return Path(tempfile.gettempdir()) / f"promote-{prefix}-haproxy"


def start_team_haproxy(net: netns_hosts.HostNetwork, folder: Path) -> int:
    """The sandbox's stand-in for a team's HAProxy, started in ``router`` (config and log in ``folder``); its pid once
    its runtime API answers."""
    folder = make_private_dirs(folder)
    admin = make_private_dirs(admin_socket_dir(net.prefix)) / "admin.sock"
    cfg = folder / "haproxy.cfg"
    write_private(cfg, TEAM_HAPROXY_CFG.format(
        admin=admin, router=net["router"].address, api_port=API_PORT, subnet=net.subnet, n=safe_name(PROD),
        active_port=ACTIVE_PORT, preview_port=PREVIEW_PORT).encode())
    pid = net.spawn("router", ["haproxy", "-db", "-f", str(cfg)], folder / "haproxy.log")
    net.wait_listening("router", API_PORT, pid)
    return pid


@dataclass
class HostsSandbox(Sandbox):
    """The sandbox, its Odoo on the ``staging`` and ``production`` hosts, its databases on ``db``, the team's
    HAProxy adopted on ``router``."""

    @property
    def hosts_file(self) -> Path:
        return self.root / HOSTS_FILE

    def layout(self) -> dict[str, Any] | None:
        """What ``up`` built (hosts.json), None before."""
        return json.loads(self.hosts_file.read_text()) if self.hosts_file.exists() else None

    def up(self) -> dict[str, Any]:
        if self.environments != 1:
            raise ValueError("--topology hosts: one staging/production pair only (--environments 1)")
        if self.router_kind != "haproxy":
            raise ValueError("--topology hosts: the router is an adopted HAProxy (--router haproxy)")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.layout() is None:
            self._build_hosts()
        return super().up()

    def _build_hosts(self) -> None:
        """The hosts, PostgreSQL in db, the team's HAProxy in router, hosts.json and the secrets file."""
        prefix = netns_hosts.prefix_for(f"sandbox:{self.root.resolve()}")
        net = netns_hosts.HostNetwork.build(self.root / "hosts", prefix=prefix, kept=True)
        try:
            assert net.ssh is not None
            pg = net.start_postgres("db")
            start_team_haproxy(net, self.root / "team-haproxy")
            write_private(self.hosts_file, json.dumps({
                "prefix": prefix, "subnet": str(net.subnet), "postgres_data": str(pg.data), "db_dsn": pg.dsn(),
                "ssh_user": net.ssh.user, "known_hosts": str(net.ssh.known_hosts),
                "hosts": {h.name: {"namespace": h.namespace, "address": h.address} for h in net.hosts.values()},
            }, indent=2).encode())
            secrets.write_secrets_file(self.secrets_file, {
                DSN_REF: pg.dsn(), ADMIN_REF: pysecrets.token_urlsafe(18), ROLE_KEY_REF: pysecrets.token_urlsafe(32),
                KEY_REF: str(net.ssh.identity_file)})  # the path of the owner-only key file: never its text
        except BaseException:
            net.teardown()
            shutil.rmtree(admin_socket_dir(prefix), ignore_errors=True)
            self.hosts_file.unlink(missing_ok=True)
            raise

    def _database_server(self) -> str:
        layout = self.layout()
        assert layout is not None
        return str(layout["db_dsn"])

    def settings(self) -> settings_mod.Settings:
        base = super().settings()
        layout = self.layout()
        if self.settings_file.exists() or layout is None:
            return base
        hosts = {name: {"address": layout["hosts"][name]["address"], "user": layout["ssh_user"],
                        "identity_ref": KEY_REF, "known_hosts_file": layout["known_hosts"],
                        "run_dir": str(self.root / "hosts" / name / "run"), "python": sys.executable}
                 for name in ENV_HOSTS.values()}
        router = layout["hosts"]["router"]["address"]
        return settings_mod.Settings.model_validate({
            **base.model_dump(), "process_hosts": hosts, "environment_hosts": ENV_HOSTS, "router_mode": "adopted",
            "router_runtime_api": f"ipv4@{router}:{API_PORT}", "router_listen_host": router})

    def odoo_command(self) -> str:
        # On its host's address ({http_interface}): the router and the promoter reach it from other hosts.
        return super().odoo_command() + " --host {http_interface}"

    def _register(self, router: RouterResource, prod: str, blue: Upstream) -> None:
        router.register_environment(prod, blue, active_port=ACTIVE_PORT, preview_port=PREVIEW_PORT)

    def status(self) -> dict[str, Any]:
        """The sandbox's status, with each host: its name, namespace and address, and what runs there."""
        info = super().status()
        layout = self.layout() or {"hosts": {}}
        runs = {"db": ["PostgreSQL (the environments' and the ops database)"],
                "staging": [f"{STAGING}'s Odoo and PgBouncers"], "production": [f"{PROD}'s Odoo and PgBouncers"],
                "router": ["the team's HAProxy (adopted)"],
                "worker": ["a promoter: ip netns exec <namespace> promote run ..."]}
        return {**info, "topology": "hosts",
                "hosts": [{"name": name, **where, "runs": runs.get(name, [])}
                          for name, where in layout["hosts"].items()]}

    def down(self) -> None:
        layout = self.layout()
        try:
            super().down()
        finally:
            close_ssh_hosts()
            if layout is not None:
                left = netns_hosts.remove_kept(layout["prefix"])
                shutil.rmtree(layout["postgres_data"], ignore_errors=True)
                shutil.rmtree(admin_socket_dir(layout["prefix"]), ignore_errors=True)
                if left:
                    print(f"sandbox down: left over: {', '.join(left)}")
