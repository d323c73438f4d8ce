"""Where a deployment's Odoo runs (settings process_hosts/environment_hosts, ops.deployments.host), as Services
resolves it: pure logic, no host reached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from promote_pipeline.promotion import deployment
from promote_pipeline.promotion.services import Services, close_ssh_hosts
from promote_pipeline.promotion.settings import ProcessHost, Settings
from resources.odoo_host import HostError, LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentRecord
from resources.ssh_odoo_host import SshOdooHost

pytestmark = pytest.mark.unit


def _host(address: str) -> dict[str, Any]:
    return {"address": address, "user": "odoo", "identity_ref": "PROMOTE_SSH_KEY",
            "known_hosts_file": "/etc/promote/known_hosts", "run_dir": "/srv/odoo/run"}


def _settings(**extra: Any) -> Settings:
    return Settings.model_validate({"process_hosts": {"prod-1": _host("10.0.0.7")},
                                    "environment_hosts": {"prod": "prod-1"}, **extra})


def _services(settings: Settings, tmp_path: Path) -> Services:
    local = LocalOdooHost(command_template="{python} -m odoo_standin serve", run_dir=str(tmp_path))
    return Services(ops_db=None, host=local, store=None, router=None, settings=settings)  # type: ignore[arg-type]


def _dep(host: str | None) -> DeploymentRecord:
    return DeploymentRecord(deployment_id="dep_prod_x", environment_id="prod", db_name="odoo_x",
                            data_dir="/srv/odoo/data/dep_prod_x", http_port=8069, websocket_port=8072, pid=None,
                            state="standby", host=host)


def test_an_environment_named_for_a_host_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ValidationError, match="environment_hosts.prod: 'nowhere' is not a name of process_hosts"):
        Settings.model_validate({"process_hosts": {"prod-1": _host("10.0.0.7")},
                                 "environment_hosts": {"prod": "nowhere"}})
    with pytest.raises(ValidationError, match="address"):
        Settings.model_validate({"process_hosts": {"prod-1": {**_host("10.0.0.7"), "address": ""}}})
    with pytest.raises(ValidationError, match="extra"):
        Settings.model_validate({"process_hosts": {"prod-1": {**_host("10.0.0.7"), "password": "x"}}})


def test_every_field_of_a_process_host_is_described() -> None:
    assert all(f.description for f in ProcessHost.model_fields.values())
    for name in ("process_hosts", "environment_hosts"):
        assert Settings.model_fields[name].description


def test_without_hosts_everything_runs_here(tmp_path: Path) -> None:
    svc = _services(Settings(), tmp_path)
    assert svc.host_name_for("prod") is None
    assert svc.process_host(_dep(None)) is svc.host and svc.remote_host(_dep(None)) is None
    up = svc.upstream(_dep(None), "green")
    assert (up.host, up.http_port, up.websocket_port) == ("127.0.0.1", 8069, 8072)


def test_a_deployment_runs_where_it_was_recorded(tmp_path: Path) -> None:
    """The recorded host wins over what the settings say of its environment today; the settings only decide
    where a new deployment goes."""
    settings = _settings(process_hosts={"prod-1": _host("10.0.0.7"), "prod-2": _host("10.0.0.8")})
    svc = _services(settings, tmp_path)
    try:
        assert svc.host_name_for("prod") == "prod-1" and svc.host_name_for("staging") is None
        on_2 = svc.process_host(_dep("prod-2"))
        assert isinstance(on_2, SshOdooHost) and (on_2.name, on_2.address) == ("prod-2", "10.0.0.8")
        assert on_2.run_dir == "/srv/odoo/run" and on_2.command_template == settings.odoo_command
        assert svc.process_host(_dep(None)) is svc.host  # recorded before hosts existed: here
        assert svc.upstream(_dep("prod-2"), "green").host == "10.0.0.8"
        assert svc.process_host("prod-2") is on_2  # one per host and configuration: its SSH connection is shared
        with pytest.raises(HostError, match="process host 'gone': not in the settings' process_hosts"):
            svc.process_host(_dep("gone"))
    finally:
        close_ssh_hosts()


def test_a_planned_deployment_records_its_host(tmp_path: Path) -> None:
    env = EnvironmentRecord.model_validate({
        "environment_id": "prod", "project_id": "p", "kind": "production", "git_commit_sha": None,
        "db_dsn_ref": "DSN", "db_name_prefix": "odoo", "filestore_root": "/srv/odoo/data", "odoo_db_name": "odoo"})
    svc = _services(Settings(), tmp_path)
    planned = deployment.plan(env, "dep_prod_y", "odoo_y", svc.host)
    assert planned.host is None and planned.data_dir == "/srv/odoo/data/dep_prod_y"
    remote = SshOdooHost(name="prod-1", address="10.0.0.7", user="odoo", identity_ref="K",
                         known_hosts_file="/x", command_template="x", run_dir="/srv/odoo/run")
    ports = iter([40001, 40002, 40003])
    object.__setattr__(remote, "free_port", lambda: next(ports))  # ports are the host's: asked of it
    planned = deployment.plan(env, "dep_prod_z", "odoo_z", svc.host, on=remote)
    assert planned.host == "prod-1" and planned.http_port == 40001 and planned.endpoint_port is not None


@pytest.mark.parametrize(("server", "here"), [
    ("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("localhost", True), ("/var/run/postgresql", True),
    ("db.localhost", True), ("", True), ("10.0.0.5", False), ("db.internal", False), ("2001:db8::5", False)])
def test_a_server_named_as_this_machine_cannot_be_a_process_hosts(server: str, here: bool) -> None:
    """A process host's PgBouncer is pointed at the server the promoter reached: a loopback or socket address
    would mean another server from there, so it is refused."""
    assert deployment.names_this_machine(server) is here
