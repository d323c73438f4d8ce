"""The inventory's format and rules, without a service: every field described, unknown keys refused, each
problem one line naming its path and the rule, all problems at once; the settings declared or referenced."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from promote_pipeline.promotion.inventory import model, rules

pytestmark = pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "inventory.yaml"


def _example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def _problems(tmp_path: Path, data: Any, text: str | None = None) -> list[str]:
    path = tmp_path / "inventory.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data))
    with pytest.raises(rules.InventoryProblems) as exc:
        rules.parse(path)
    return [str(p) for p in exc.value.problems]


def _models() -> list[type[BaseModel]]:
    return [obj for obj in vars(model).values()
            if isinstance(obj, type) and issubclass(obj, model.Section) and obj is not model.Section]


def test_every_field_is_described_and_unknown_keys_are_refused_everywhere() -> None:
    assert len(_models()) == 8
    for cls in _models():
        assert cls.__doc__ and cls.model_config.get("extra") == "forbid", cls
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name}"


def test_the_example_is_a_valid_inventory_declaring_its_settings() -> None:
    inv = rules.parse(EXAMPLE)
    assert rules.declares_settings(inv)
    assert set(inv.environments) == {"acme_staging", "acme_prod"} and inv.router.fronts.keys() == {"acme_prod"}
    settings = rules.declared_settings(inv)
    assert (settings.router_kind, settings.router_dir, settings.artifact_root) == \
        ("haproxy", "/var/lib/promote/router", "/srv/odoo-data/artifacts")
    assert inv.environments["acme_prod"].deployment_id("acme_prod") == "dep_acme_prod_2024"
    assert inv.environments["acme_staging"].deployment_id("acme_staging") == "dep_acme_staging_live"


def _broken(change: str) -> dict[str, Any]:
    """The example with one thing broken (``change`` names it)."""
    data = copy.deepcopy(_example())
    prod, staging = data["environments"]["acme_prod"], data["environments"]["acme_staging"]
    if change == "format":
        prod["odoo_db_name"] = "my-db"
        prod["adopt"]["http_port"] = 70000
        staging["adopt"]["dataa_dir"] = "/x"
        data["router"]["kind"] = "traefik"
        data["users"]["alice"]["acme"] = ["promote", "root"]
        data["environments"]["acme dev"] = data["environments"].pop("acme_staging")
        del data["storage"]
    elif change == "parts":
        del prod["adopt"]["first_blue"]
        staging["adopt"]["first_blue"] = True
        data["users"]["bob"] = {"nope": ["promote"]}
        staging["worker_mode"] = "prefork"
        prod["worker_mode"] = "threaded"
        data["router"]["fronts"]["acme_staging"] = {}
        staging["adopt"]["endpoint_port"] = 8080
        staging["data_root"] = prod["data_root"]
        staging["odoo_command"] = "odoo-bin -d {db} --data-dir {data_dir} --http-port {http_port} {nope}"
    elif change == "settings":
        for name in ("ops_database", "run_dir"):
            del data["settings"][name]
    return data


def test_format_problems_are_a_line_each_naming_the_path_and_the_rule(tmp_path: Path) -> None:
    assert _problems(tmp_path, _broken("format")) == [
        "storage: is required",
        "environments.acme dev: the key must be 1-64 ASCII letters, digits, '_', '.' or '-', starting with a letter"
        " or digit (got 'acme dev')",
        "environments.acme dev.adopt.dataa_dir: is not a key of the inventory format (examples/inventory.yaml shows"
        " them all)",
        "environments.acme_prod.odoo_db_name: must be 1-63 letters, digits or '_' (got 'my-db')",
        "environments.acme_prod.adopt.http_port: must be a TCP port, 1-65535 (got 70000)",
        "users.alice.acme[1]: must be 'promote' or 'admin' (got 'root')",
        "router.kind: must be 'haproxy' or 'nginx' (got 'traefik')",
    ]


def test_rules_between_parts_are_a_line_each(tmp_path: Path) -> None:
    assert _problems(tmp_path, _broken("parts")) == [
        "users.bob.nope: must be a project declared under projects",
        "router.fronts.acme_staging: must be a production environment declared under environments",
        "environments.acme_prod.adopt.first_blue: must be true for a production environment (its live deployment"
        " becomes the router's first blue)",
        "environments.acme_prod.workers: is for prefork mode only (worker_mode is threaded)",
        "environments.acme_prod.adopt.websocket_port: a threaded Odoo serves its websocket on adopt.http_port: leave"
        " it out",
        "environments.acme_staging.adopt.first_blue: only a production environment's live deployment becomes a blue",
        "environments.acme_staging.workers: is required in prefork mode",
        "environments.acme_staging.adopt.websocket_port: is required in prefork mode (its gevent server's port)",
        "router.fronts.acme_prod.active_port: port 8080 is also environments.acme_staging.adopt.endpoint_port",
        "environments.acme_staging.data_root: folder /srv/odoo-data/prod is also environments.acme_prod.data_root",
        "environments.acme_staging.odoo_command: names {nope}, which is not a placeholder (they are: python, db,"
        " data_dir, http_port, websocket_port, workers, environment_id, deployment, db_host, db_port, db_user,"
        " http_interface)",
        "environments.acme_staging.odoo_command: must name {websocket_port} (prefork mode)",
        "environments.acme_staging.odoo_command: must name {workers} (prefork mode)",
    ]


def test_declared_settings_must_be_complete(tmp_path: Path) -> None:
    assert _problems(tmp_path, _broken("settings")) == [
        f"settings.{name}: is required when the settings are declared here (or give settings.file alone: an existing"
        " settings file)" for name in ("ops_database", "run_dir")]


@pytest.mark.parametrize(("text", "problem"), [
    ("settings: [", "inventory.yaml: not valid YAML: line 1: expected the node content, but found '<stream end>'"),
    ("- settings", "inventory.yaml: must be a mapping of settings, storage, projects, environments, users and router"),
])
def test_a_file_that_is_not_an_inventory_is_one_line(tmp_path: Path, text: str, problem: str) -> None:
    assert _problems(tmp_path, None, text=text) == [problem]


def test_relative_paths_are_read_from_the_inventorys_folder(tmp_path: Path) -> None:
    data = _example()
    data["settings"]["file"] = "etc/settings.json"
    data["environments"]["acme_prod"]["adopt"]["data_dir"] = "../live/prod"
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    inv = rules.parse(path)
    assert inv.settings.file == str(tmp_path / "conf" / "etc" / "settings.json")
    assert inv.environments["acme_prod"].adopt.data_dir == str(tmp_path / "live" / "prod")


def _referencing(tmp_path: Path, settings: dict[str, Any] | None) -> model.Inventory:
    data = _example()
    data["settings"] = {"file": "settings.json"}
    if settings is not None:
        (tmp_path / "settings.json").write_text(json.dumps(settings))
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    inv = rules.parse(path)
    assert not rules.declares_settings(inv)
    return inv


def test_a_referenced_settings_file_must_exist_and_agree(tmp_path: Path) -> None:
    with pytest.raises(rules.InventoryProblems) as missing:
        rules.settings_of(_referencing(tmp_path, None))
    assert [str(p) for p in missing.value.problems] == [
        f"settings.file: {tmp_path / 'settings.json'} does not exist (write it, or declare the settings here for apply"
        " to write it)"]

    agreeing = {**json.loads((REPO / "examples" / "settings.json").read_text()),
                "artifact_root": "/srv/odoo-data/artifacts"}
    assert rules.settings_of(_referencing(tmp_path, agreeing)).router_dir == "/var/lib/promote/router"

    with pytest.raises(rules.InventoryProblems) as disagreeing:
        rules.settings_of(_referencing(tmp_path, {**agreeing, "router_kind": "nginx",
                                                  "odoo_command": "odoo-bin --http-port {http_port}"}))
    assert [str(p) for p in disagreeing.value.problems] == [
        f"router.kind: the settings file {tmp_path / 'settings.json'} says 'nginx'",
        "settings.odoo_command: must name {db}", "settings.odoo_command: must name {data_dir}",
        "settings.odoo_command: must name {websocket_port} (prefork mode)",  # acme_prod is prefork
        "settings.odoo_command: must name {workers} (prefork mode)"]


def test_an_inventory_may_set_the_artifact_retention(tmp_path: Path) -> None:
    data = _example()
    data["settings"]["retention"] = {"green_keep_last": 5, "blue_keep_days": 30}
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    retention = rules.declared_settings(rules.parse(path)).retention
    assert (retention.green_keep_last, retention.green_keep_days, retention.blue_keep_days) == (5, 14, 30)
    data["settings"]["retention"] = {"green_keep_last": 0, "keep_forever": True}
    problems = _problems(tmp_path, data)
    assert any(p.startswith("settings.retention.green_keep_last") for p in problems), problems
    assert any(p.startswith("settings.retention.keep_forever") for p in problems), problems


def test_only_production_may_require_approval(tmp_path: Path) -> None:
    data = _example()
    data["environments"]["acme_prod"]["require_approval"] = True
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump(data))
    assert rules.parse(path).environments["acme_prod"].require_approval is True
    data["environments"]["acme_staging"]["require_approval"] = True
    assert _problems(tmp_path, data) == [
        "environments.acme_staging.require_approval: only a production environment's promotions wait for approval"
        " (it is the target of a promotion)"]
    data["environments"]["acme_staging"]["require_approval"] = "yes please"
    assert any(p.startswith("environments.acme_staging.require_approval: ") for p in _problems(tmp_path, data))


def test_an_inventory_may_set_the_stability_thresholds(tmp_path: Path) -> None:
    data = _example()
    data["settings"]["stability"] = {"max_error_rate": 0.005, "max_p95_ms": 3000}
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    stability = rules.declared_settings(rules.parse(path)).stability
    assert (stability.max_error_rate, stability.max_5xx_responses, stability.max_p95_ms) == (0.005, 50, 3000)
    data["settings"]["stability"] = {"max_error_rate": 2}
    assert any(p.startswith("settings.stability.max_error_rate") for p in _problems(tmp_path, data))


def test_an_adopted_router_needs_its_way_in_and_its_frontends_ports(tmp_path: Path) -> None:
    data = _example()
    env_id = next(iter(data["router"]["fronts"]))
    data["router"].update({"mode": "adopted", "kind": "nginx"})
    data["router"]["fronts"][env_id].pop("preview_port")
    data["router"]["runtime_api"] = "/run/haproxy/admin.sock"
    assert _problems(tmp_path, data) == [
        "router.include_dir: required when an nginx is adopted: the folder of promote's files that the team's nginx"
        " includes",
        "router.config_file: required when an nginx is adopted: the team's main nginx.conf, for nginx -t",
        "router.runtime_api: only for an adopted haproxy",
        f"router.fronts.{env_id}.preview_port: required when mode is adopted: the port of the team's frontend for it"]
    data["router"].update({"kind": "haproxy", "runtime_api": None})
    assert _problems(tmp_path, data) == [
        "router.runtime_api: required when mode is adopted: the team's HAProxy runtime API at level admin (a unix"
        " socket path or ipv4@host:port)",
        f"router.fronts.{env_id}.preview_port: required when mode is adopted: the port of the team's frontend for it"]

    managed = _example()
    managed["router"]["runtime_api"] = "/run/haproxy/admin.sock"
    assert _problems(tmp_path, managed) == ["router.runtime_api: only for mode adopted"]

    adopted = _example()
    adopted["router"].update({"mode": "adopted", "runtime_api": "ipv4@10.0.0.7:9999", "config_file": "team.cfg"})
    path = tmp_path / "adopted.yaml"
    path.write_text(yaml.safe_dump(adopted))
    settings = rules.declared_settings(rules.parse(path))
    assert (settings.router_mode, settings.router_runtime_api) == ("adopted", "ipv4@10.0.0.7:9999")
    assert settings.router_config_file == str(tmp_path / "team.cfg")  # relative to the inventory's folder

    nginx = _example()
    nginx["router"].update({"kind": "nginx", "mode": "adopted", "include_dir": "promote", "config_file":
                            "/etc/nginx/nginx.conf", "reload_command": "systemctl reload nginx"})
    path.write_text(yaml.safe_dump(nginx))
    settings = rules.declared_settings(rules.parse(path))
    assert (settings.router_kind, settings.router_include_dir, settings.router_config_file,
            settings.router_reload_command) == ("nginx", str(tmp_path / "promote"), "/etc/nginx/nginx.conf",
                                                "systemctl reload nginx")
    managed["router"].pop("runtime_api")
    managed["router"]["include_dir"] = "promote"
    assert _problems(tmp_path, managed) == ["router.include_dir: only for an adopted nginx"]


def test_an_adopted_router_on_another_host_has_its_paths_there(tmp_path: Path) -> None:
    host = {"address": "10.0.0.7", "user": "promote", "identity_ref": "ROUTER_SSH_KEY",
            "known_hosts_file": "known_hosts"}
    managed = _example()
    managed["router"]["host"] = host
    assert _problems(tmp_path, managed) == ["router.host: only for mode adopted"]

    adopted = _example()
    adopted["router"].update({"mode": "adopted", "runtime_api": "ipv4@10.0.0.7:9999", "config_file": "team.cfg",
                              "host": host})
    assert _problems(tmp_path, adopted) == [
        "router.runtime_api: with router.host, must be the absolute path of the admin socket on that host (no ':'):"
        " it is reached through SSH",
        "router.config_file: with router.host, must be an absolute path on that host"]

    adopted["router"].update({"runtime_api": "/run/haproxy/admin.sock", "config_file": "/etc/haproxy/haproxy.cfg"})
    path = tmp_path / "adopted.yaml"
    path.write_text(yaml.safe_dump(adopted))
    settings = rules.declared_settings(rules.parse(path))
    assert settings.router_host is not None
    assert settings.router_config_file == "/etc/haproxy/haproxy.cfg"  # a path on that host, kept as written
    assert settings.router_host.known_hosts_file == str(tmp_path / "known_hosts")  # this machine's file
    assert (settings.router_host.address, settings.router_host.user) == ("10.0.0.7", "promote")

    nginx = _example()
    nginx["router"].update({"kind": "nginx", "mode": "adopted", "include_dir": "promote", "runtime_api": None,
                            "config_file": "/etc/nginx/nginx.conf", "host": host})
    assert _problems(tmp_path, nginx) == [
        "router.host: only for an adopted haproxy (adopting an nginx on another host over SSH is not built)"]


def _on_hosts() -> dict[str, Any]:
    """The example with production's Odoo on a process host."""
    data = _example()
    data["hosts"] = {"prod_app": {"address": "10.0.0.21", "user": "odoo", "identity_ref": "PROMOTE_SSH_KEY",
                                  "known_hosts_file": "known_hosts", "run_dir": "/var/lib/promote/run"}}
    data["environments"]["acme_prod"]["host"] = "prod_app"
    return data


def test_an_environment_on_a_process_host_is_written_into_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(_on_hosts()))
    inv = rules.parse(path)
    assert inv.environments["acme_prod"].host == "prod_app" and inv.environments["acme_staging"].host is None
    settings = rules.declared_settings(inv)
    assert settings.environment_hosts == {"acme_prod": "prod_app"}
    host = settings.process_hosts["prod_app"]
    assert (host.address, host.user, host.run_dir) == ("10.0.0.21", "odoo", "/var/lib/promote/run")
    assert host.known_hosts_file == str(tmp_path / "known_hosts")  # on this machine: from the inventory's folder
    assert rules.declared_settings(rules.parse(EXAMPLE)).process_hosts == {}  # none declared: every Odoo here


def test_a_host_must_be_declared_and_what_is_on_it_named_by_absolute_paths(tmp_path: Path) -> None:
    data = _on_hosts()
    data["environments"]["acme_staging"]["host"] = "stg_app"
    data["environments"]["acme_prod"]["data_root"] = "prod-data"
    data["hosts"]["prod_app"]["run_dir"] = "run"
    assert _problems(tmp_path, data) == [
        "hosts.prod_app.run_dir: must be an absolute path on host prod_app (got 'run')",
        "environments.acme_prod.data_root: must be an absolute path on host prod_app (got 'prod-data')",
        "environments.acme_staging.host: must be a host declared under hosts (got 'stg_app'; hosts: prod_app)"]
    data = _on_hosts()
    data["hosts"]["prod_app"]["adress"] = "10.0.0.21"
    data["hosts"]["prod app"] = data["hosts"]["prod_app"]
    data["environments"]["acme_prod"]["host"] = "prod app"
    problems = _problems(tmp_path, data)
    assert "hosts.prod_app.adress: is not a key of the inventory format (examples/inventory.yaml shows them all)" \
        in problems, problems
    assert any(p.startswith("hosts.prod app: the key ") for p in problems), problems
    assert any(p.startswith("environments.acme_prod.host: ") for p in problems), problems


def test_ports_and_folders_are_unique_per_machine(tmp_path: Path) -> None:
    data = _on_hosts()
    prod, staging = data["environments"]["acme_prod"], data["environments"]["acme_staging"]
    prod["adopt"]["http_port"] = staging["adopt"]["http_port"]  # on another machine: both may use it
    prod["data_root"] = staging["data_root"]
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    rules.parse(path)
    del prod["host"]
    assert _problems(tmp_path, data) == [
        f"environments.acme_staging.adopt.http_port: port {staging['adopt']['http_port']} is also"
        " environments.acme_prod.adopt.http_port",
        "environments.acme_staging.data_root: folder /srv/odoo-data/staging is also environments.acme_prod.data_root"]


def test_a_referenced_settings_file_must_name_the_same_hosts(tmp_path: Path) -> None:
    declared = tmp_path / "declared.yaml"
    declared.write_text(yaml.safe_dump(_on_hosts()))
    settings = rules.declared_settings(rules.parse(declared)).model_dump(mode="json")
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    data = _on_hosts()
    data["settings"] = {"file": "settings.json"}
    referenced = tmp_path / "referenced.yaml"
    referenced.write_text(yaml.safe_dump(data))
    assert rules.settings_of(rules.parse(referenced)).environment_hosts == {"acme_prod": "prod_app"}
    data["hosts"]["prod_app"]["address"] = "10.0.0.22"
    data["hosts"]["stg_app"] = {**data["hosts"]["prod_app"]}
    data["environments"]["acme_staging"]["host"] = "stg_app"
    referenced.write_text(yaml.safe_dump(data))
    with pytest.raises(rules.InventoryProblems) as exc:
        rules.settings_of(rules.parse(referenced))
    assert [str(p) for p in exc.value.problems] == [
        f"hosts.prod_app: the settings file {tmp_path / 'settings.json'} says otherwise of address",
        f"hosts.stg_app: the settings file {tmp_path / 'settings.json'} has no process host stg_app (process_hosts)",
        f"environments.acme_staging.host: the settings file {tmp_path / 'settings.json'} says None"
        " (environment_hosts)"]
