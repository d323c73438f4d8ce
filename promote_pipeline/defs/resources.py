"""The resources every job runs with, built from the settings of this installation.

Settings reach the ops through resources, never through the environment: ``settings`` itself is a
resource (the ops read the evidence root, the free-space factor and the carried-over parameters from
it), and the secrets file it names is handed to the secret resolver here, once per process.
"""

from __future__ import annotations

import shlex
from typing import Any

from dagster import ResourceDefinition, mem_io_manager

from promote_pipeline.promotion import settings as settings_mod
from promote_pipeline.promotion.settings import Settings
from resources import secrets
from resources.artifact_store import LocalArtifactStore
from resources.haproxy_adopted import AdoptedHAProxyRouter
from resources.haproxy_router import HAProxyRouter
from resources.nginx_adopted import AdoptedNginxRouter
from resources.nginx_router import NginxRouter
from resources.odoo_host import LocalOdooHost
from resources.ops_db import OpsDatabase
from resources.router import RouterResource
from resources.ssh_artifact_store import SshArtifactStore
from resources.ssh_session import SshLoginConfig


def build_resources(config: Settings | None = None) -> dict[str, Any]:
    config = config or settings_mod.load()
    router: RouterResource
    if config.router_kind == "nginx" and config.router_mode == "adopted":
        router = adopted_nginx(config)
    elif config.router_kind == "nginx":
        router = NginxRouter(work_dir=config.router_dir, listen_host=config.router_listen_host)
    elif config.router_mode == "adopted":
        router = AdoptedHAProxyRouter(work_dir=config.router_dir, listen_host=config.router_listen_host,
                                      runtime_api=config.router_runtime_api or "",
                                      config_file=config.router_config_file,
                                      ssh=SshLoginConfig(**config.router_host.model_dump())
                                      if config.router_host else None)
    elif config.router_kind == "haproxy":
        router = HAProxyRouter(work_dir=config.router_dir, listen_host=config.router_listen_host)
    else:
        raise ValueError(f"router_kind must be 'haproxy' or 'nginx', not {config.router_kind!r}")
    # The settings file names its own secrets file (it wins over PROMOTE_SECRETS_FILE), and the default ops
    # DSN reference falls back to the machine's local PostgreSQL (PGHOST/PGPORT) when nothing sets it.
    secrets.configure(secrets_file=config.secrets_file,
                      defaults={settings_mod.DEFAULT_OPS_DSN_REF: settings_mod.default_server_dsn()})
    return {
        "settings": config,
        "ops_db": OpsDatabase(dsn_ref=config.ops_dsn_ref, database=config.ops_database),
        "odoo_host": LocalOdooHost(command_template=config.odoo_command, run_dir=config.run_dir,
                                   role_key_ref=config.role_key_ref),
        "artifact_store": artifact_store(config),
        "router": router,
        "io_manager": mem_io_manager,
    }


def adopted_nginx(config: Settings) -> AdoptedNginxRouter:
    """The team's nginx, adopted: promote's files in router_include_dir, their nginx.conf, how to run their nginx
    and their reload command."""
    return AdoptedNginxRouter(
        work_dir=config.router_dir, listen_host=config.router_listen_host, include_dir=config.router_include_dir or "",
        config_file=config.router_config_file or "",
        reload_command=shlex.split(config.router_reload_command) if config.router_reload_command else None,
        nginx_command=shlex.split(config.router_nginx_command) if config.router_nginx_command else None)


def artifact_store(config: Settings) -> LocalArtifactStore:
    """The store the settings choose: the local folder artifact_root, or a folder on a host over SSH (a
    LocalArtifactStore to the steps either way)."""
    ssh = config.artifact_store.ssh
    if config.artifact_store.kind == "ssh" and ssh is not None:
        return SshArtifactStore(root=ssh.root, create_root=ssh.create_root, host=ssh.host, ssh_port=ssh.port,
                                user=ssh.user, identity_ref=ssh.identity_ref, known_hosts_file=ssh.known_hosts_file,
                                python=ssh.python, spool_dir=ssh.spool_dir)
    return LocalArtifactStore(root=config.artifact_root, create_root=config.create_artifact_root)


def for_definitions(resources: dict[str, Any]) -> dict[str, Any]:
    """The resources as the code location binds them: the settings object described like every other resource
    (the UI lists it)."""
    return {**resources, "settings": ResourceDefinition.hardcoded_resource(
        resources["settings"], description="This installation's settings (promotion/settings.py): evidence and"
        " artifact roots, the free-space factor, the carried-over parameters, the Odoo command template.")}
