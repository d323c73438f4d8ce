"""A deployment's Odoo command and websocket port follow its environment, and removing an adopted deployment
leaves the rest of the operator's data_dir alone (on the real PostgreSQL)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.promotion import deployment
from promote_pipeline.promotion.services import Services
from promote_pipeline.promotion.settings import default_server_dsn
from resources.odoo_host import LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentRecord

TEMPLATE = "odoo-bin -d {db} --http-port {http_port}"


def _env(**changes: Any) -> EnvironmentRecord:
    return EnvironmentRecord.model_validate({
        "environment_id": "env_p", "project_id": "p", "kind": "production", "git_commit_sha": None,
        "db_dsn_ref": "DSN", "db_name_prefix": "x", "filestore_root": "/srv/prod", "odoo_db_name": "acme", **changes})


@pytest.mark.parametrize(("changes", "own_port"), [
    ({}, False),
    ({"odoo_command": TEMPLATE + " --gevent-port {websocket_port}"}, True),
    ({"worker_mode": "prefork", "workers": 4}, True),
    ({"worker_mode": "threaded", "odoo_command": TEMPLATE + " --gevent-port {websocket_port}"}, False),
])
def test_the_environment_says_how_its_odoo_starts(tmp_path: Path, changes: dict[str, Any], own_port: bool) -> None:
    host = LocalOdooHost(command_template=TEMPLATE, run_dir=str(tmp_path))
    env = _env(**changes)
    assert deployment.command_template(env, host) == changes.get("odoo_command", TEMPLATE)
    assert deployment.own_websocket_port(env, host) is own_port
    planned = deployment.plan(env, "dep_green", "acme_green", host)
    assert (planned.websocket_port != planned.http_port) is own_port
    assert planned.owns_data_dir and planned.data_dir == "/srv/prod/dep_green"


def test_removing_an_adopted_deployment_keeps_the_rest_of_the_operators_data_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTE_TEST_DEPLOYMENT_DSN", default_server_dsn())
    host = LocalOdooHost(command_template=TEMPLATE, run_dir=str(tmp_path / "run"))
    db = f"adopted_{secrets.token_hex(4)}"
    host.create_database("PROMOTE_TEST_DEPLOYMENT_DSN", db)
    data_dir = tmp_path / "odoo"
    for folder in (f"filestore/{db}/ab", "filestore/another_db/cd", "addons/17.0"):
        (data_dir / folder).mkdir(parents=True)
        (data_dir / folder / "file").write_text("x")
    (tmp_path / "sessions").mkdir()
    (data_dir / "sessions").symlink_to(tmp_path / "sessions")
    adopted = DeploymentRecord(deployment_id="dep_live", environment_id="env_p", db_name=db, data_dir=str(data_dir),
                               http_port=None, websocket_port=None, pid=None, state="standby", odoo_db_name=db,
                               owns_data_dir=False)

    deployment.remove(Services(ops_db=None, host=host, store=None, router=None, settings=None),  # type: ignore[arg-type]
                      "PROMOTE_TEST_DEPLOYMENT_DSN", adopted)

    assert not host.database_exists("PROMOTE_TEST_DEPLOYMENT_DSN", db)
    assert sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("file")) == \
        ["addons/17.0/file", "filestore/another_db/cd/file"]
    assert not (data_dir / "sessions").exists() and (tmp_path / "sessions").is_dir()
