"""The resources a promotion step talks to, and the settings it runs with, bundled so that helpers take one
argument."""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass
from typing import Any

from promote_pipeline.promotion.settings import ProcessHost, Settings
from resources.artifact_store import LocalArtifactStore
from resources.odoo_host import HostError, LocalOdooHost
from resources.ops_db import DeploymentRecord, OpsDatabase
from resources.router import RouterError, RouterResource, RoutingState, Upstream
from resources.ssh_odoo_host import SshOdooHost

LOCAL_ADDRESS = "127.0.0.1"

# One SshOdooHost per host and configuration in a process: its shared SSH connection (ControlMaster) then serves
# every step of a run, and every run of a long-lived process, instead of a handshake per step.
_ssh_hosts: dict[str, SshOdooHost] = {}
_ssh_lock = threading.Lock()


def ssh_host(name: str, config: ProcessHost, odoo_command: str) -> SshOdooHost:
    """The process host ``name`` of the settings, as an ``SshOdooHost`` (one per configuration in a process)."""
    key = f"{name}\0{config.model_dump_json()}\0{odoo_command}"
    with _ssh_lock:
        host = _ssh_hosts.get(key)
        if host is None:
            host = _ssh_hosts[key] = SshOdooHost(
                name=name, address=config.address, ssh_port=config.ssh_port, user=config.user,
                identity_ref=config.identity_ref, known_hosts_file=config.known_hosts_file,
                command_template=odoo_command, run_dir=config.run_dir, python=config.python,
                pgbouncer_bin=config.pgbouncer_bin, endpoint_os_user=config.endpoint_os_user)
        return host


def close_ssh_hosts() -> None:
    """Every shared SSH connection of this process closed (a test's or a sandbox's end)."""
    with _ssh_lock:
        for host in _ssh_hosts.values():
            host.close()
        _ssh_hosts.clear()


atexit.register(close_ssh_hosts)  # a background ssh master would otherwise outlive the process by its persist time


@dataclass
class Services:
    ops_db: OpsDatabase
    host: LocalOdooHost
    store: LocalArtifactStore
    router: RouterResource
    settings: Settings

    @classmethod
    def from_resources(cls, res: dict[str, Any]) -> Services:
        """From the resource dict of ``defs.resources.build_resources`` (keys as the ops name them)."""
        return cls(ops_db=res["ops_db"], host=res["odoo_host"], store=res["artifact_store"], router=res["router"],
                   settings=res["settings"])

    # -- where Odoo processes run ----------------------------------------------------------------------
    def host_name_for(self, environment_id: str) -> str | None:
        """The process host an environment's new deployments run on (None: the promoter's machine)."""
        return self.settings.environment_hosts.get(environment_id)

    def process_host(self, where: DeploymentRecord | str | None) -> LocalOdooHost | SshOdooHost:
        """The host that runs a deployment's Odoo and PgBouncer (``where``: the deployment, whose recorded host
        wins over what the settings say of its environment today, or a host's name; None: the promoter's).
        The database work never goes through it: it stays on ``host``, by each environment's DSN."""
        name = where.host if isinstance(where, DeploymentRecord) else where
        if name is None:
            return self.host
        config = self.settings.process_hosts.get(name)
        if config is None:
            raise HostError(f"process host {name!r}: not in the settings' process_hosts; a deployment recorded on it"
                            " cannot be reached until it is named there again")
        return ssh_host(name, config, self.settings.odoo_command)

    def remote_host(self, dep: DeploymentRecord) -> SshOdooHost | None:
        """``dep``'s process host when it is another machine (None: this one)."""
        ph = self.process_host(dep)
        return ph if isinstance(ph, SshOdooHost) else None

    def address(self, dep: DeploymentRecord) -> str:
        """Where the router (and the promoter's checks) reach ``dep``'s Odoo."""
        ph = self.process_host(dep)
        return ph.address if isinstance(ph, SshOdooHost) else LOCAL_ADDRESS

    def upstream(self, dep: DeploymentRecord, colour: str) -> Upstream:
        """``dep`` as the router sees it: on the address of the host it runs on."""
        return upstream(dep, colour, self.address(dep))


def upstream(deployment: DeploymentRecord, colour: str, address: str = LOCAL_ADDRESS) -> Upstream:
    assert deployment.http_port is not None
    return Upstream(name=deployment.deployment_id, colour=colour, host=address, http_port=deployment.http_port,
                    websocket_port=deployment.websocket_port or deployment.http_port)


def switch_confirmed(router: RouterResource, environment_id: str, target: Upstream) -> RoutingState:
    """``switch_active``, then the running router asked whether it now serves ``target``: a switch is claimed
    (cutover recorded, "traffic back on blue") only once the router itself says so, never from routes.json."""
    state = router.switch_active(environment_id, target)
    served = router.served_upstream(environment_id)
    if not served.is_upstream(target):
        raise RouterError(f"the router accepted the switch to {target.name} but serves {served.name!r}"
                          f" ({served.source})")
    return state
