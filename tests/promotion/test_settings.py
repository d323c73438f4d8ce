"""Which settings file a process reads, and the one-line error outside a sandbox when there is none: never the
stand-in's command and the ``.sandbox/`` paths in place of a missing file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promote_pipeline.promotion import settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout without a sandbox, in a process that no sandbox selected and no PROMOTE_SETTINGS points."""
    monkeypatch.setattr(settings, "PROJECT_DIR", tmp_path)
    monkeypatch.setattr(settings, "_selected", None)
    monkeypatch.delenv("PROMOTE_SETTINGS", raising=False)
    return tmp_path


def test_outside_a_sandbox_without_settings_loading_fails_with_what_to_write(checkout: Path) -> None:
    with pytest.raises(settings.SettingsError) as exc:
        settings.load()
    assert str(exc.value) == (
        "no settings: set PROMOTE_SETTINGS to a settings file like examples/settings.json (`promote inventory apply`"
        " writes one from an inventory like examples/inventory.yaml), or run `promote sandbox up` for a sandbox")


def test_promote_settings_naming_a_missing_file_is_an_error_naming_it(checkout: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    missing = checkout / "etc" / "settings.json"
    monkeypatch.setenv("PROMOTE_SETTINGS", str(missing))
    (checkout / ".sandbox").mkdir()
    (checkout / ".sandbox" / "settings.json").write_text("{}")  # a sandbox does not stand in for the named file
    with pytest.raises(settings.SettingsError) as exc:
        settings.load()
    assert str(exc.value) == (
        f"PROMOTE_SETTINGS names {missing}, which does not exist: write there a settings file like"
        " examples/settings.json (`promote inventory apply` writes one from an inventory like"
        " examples/inventory.yaml)")


def test_the_checkouts_sandbox_is_used_when_promote_settings_is_unset(checkout: Path) -> None:
    (checkout / ".sandbox").mkdir()
    (checkout / ".sandbox" / "settings.json").write_text(json.dumps({"ops_database": "promote_ops_sbx_x"}))
    assert settings.settings_path() == checkout / ".sandbox" / "settings.json"
    assert settings.load().ops_database == "promote_ops_sbx_x"


def test_the_example_settings_file_is_valid_and_names_no_sandbox_path() -> None:
    text = (REPO / settings.EXAMPLE_FILE).read_text()
    example = settings.Settings.model_validate(json.loads(text))
    assert ".sandbox" not in text and "odoo_standin" not in example.odoo_command
    assert set(json.loads(text)) <= set(settings.Settings.model_fields)


def test_the_command_line_says_it_in_one_line_and_exits_2(tmp_path: Path) -> None:
    # `promote run` in a checkout without a sandbox and with no PROMOTE_SETTINGS.
    code = ("import sys; from pathlib import Path; from promote_pipeline.promotion import settings;"
            f" settings.PROJECT_DIR = Path({str(tmp_path)!r}); from promote_pipeline.cli.main import main;"
            " sys.exit(main(['run', '--project', 'p', '--staging', 's', '--prod', 'e', '--user', 'u']))")
    env = {k: v for k, v in os.environ.items() if k != "PROMOTE_SETTINGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("promote: no settings: set PROMOTE_SETTINGS to a"
                                                                 " settings file like examples/settings.json")


def test_the_stability_thresholds_are_settings_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"stability": {"max_5xx_responses": 0, "max_p95_ms": 2000}}))
    loaded = settings.load(path).stability
    assert (loaded.max_error_rate, loaded.max_5xx_responses, loaded.max_p95_ms) == (0.01, 0, 2000)
    for bad, complaint in (({"max_error_rate": 0}, "stability.max_error_rate: Input should be greater than 0"),
                           ({"max_p95": 1}, "stability.max_p95: Extra inputs are not permitted")):
        path.write_text(json.dumps({"stability": bad}))
        with pytest.raises(settings.SettingsError) as exc:
            settings.load(path)
        assert str(exc.value) == f"settings file {path}: {complaint}"
    assert all(f.description for f in settings.StabilityThresholds.model_fields.values())


def test_an_adopted_router_without_its_runtime_api_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"router_mode": "adopted"}))
    with pytest.raises(settings.SettingsError) as exc:
        settings.load(path)
    assert str(exc.value) == (f"settings file {path}: (top level): Value error, router_mode 'adopted' needs"
                              " router_runtime_api (the team's HAProxy runtime API)")
    path.write_text(json.dumps({"router_mode": "adopted", "router_kind": "caddy", "router_runtime_api": "/x.sock"}))
    with pytest.raises(settings.SettingsError, match="needs router_kind 'haproxy' or 'nginx', not 'caddy'"):
        settings.load(path)
    path.write_text(json.dumps({"router_mode": "adopted", "router_runtime_api": "ipv4@127.0.0.1:9999"}))
    assert settings.load(path).router_runtime_api == "ipv4@127.0.0.1:9999"


def test_the_adopted_routers_host_is_for_adopted_mode_with_paths_on_that_host(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    host = {"address": "10.0.0.7", "user": "promote", "identity_ref": "ROUTER_SSH_KEY",
            "known_hosts_file": "/etc/promote/known_hosts"}
    cases = [
        ({"router_host": host},
         "router_host is for router_mode 'adopted' only (the team's HAProxy on another host)"),
        ({"router_mode": "adopted", "router_runtime_api": "ipv4@10.0.0.7:9999", "router_host": host},
         "router_runtime_api must be the absolute path of the admin socket on router_host (no ':') when router_host"
         " is given: it is reached through SSH, not over TCP"),
        ({"router_mode": "adopted", "router_runtime_api": "/run/haproxy/admin.sock", "router_host": host,
          "router_config_file": "haproxy.cfg"},
         "router_config_file must be an absolute path on router_host when router_host is given"),
        ({"router_mode": "adopted", "router_kind": "nginx", "router_include_dir": "/etc/nginx/promote",
          "router_config_file": "/etc/nginx/nginx.conf", "router_host": host},
         "router_host is for an adopted haproxy only (adopting an nginx on another host over SSH is not built)"),
    ]
    for values, complaint in cases:
        path.write_text(json.dumps(values))
        with pytest.raises(settings.SettingsError) as exc:
            settings.load(path)
        assert str(exc.value) == f"settings file {path}: (top level): Value error, {complaint}"
    path.write_text(json.dumps({"router_mode": "adopted", "router_runtime_api": "/run/haproxy/admin.sock",
                                "router_host": {**host, "user": ""}}))
    with pytest.raises(settings.SettingsError) as exc:
        settings.load(path)
    assert str(exc.value).startswith(f"settings file {path}: router_host.user: String should have at least 1")
    path.write_text(json.dumps({"router_mode": "adopted", "router_runtime_api": "unix@/run/haproxy/admin.sock",
                                "router_config_file": "/etc/haproxy/haproxy.cfg", "router_host": host}))
    loaded = settings.load(path)
    assert loaded.router_host is not None and loaded.router_host.address == "10.0.0.7"
    assert loaded.router_host.ssh_port == 22


def test_an_adopted_nginx_needs_its_folder_and_config_and_each_refusal_is_one_line(tmp_path: Path) -> None:
    from promote_pipeline.defs.resources import build_resources
    from resources.nginx_adopted import AdoptedNginxRouter

    path = tmp_path / "settings.json"
    nginx = {"router_mode": "adopted", "router_kind": "nginx", "router_include_dir": "/etc/nginx/promote",
             "router_config_file": "/etc/nginx/nginx.conf"}
    top = f"settings file {path}: (top level): Value error, "
    for bad, complaint in (
            ({**nginx, "router_include_dir": None}, "router_mode 'adopted' with router_kind 'nginx' needs"
             " router_include_dir (the folder of promote's files that the team's nginx includes)"),
            ({**nginx, "router_config_file": ""}, "router_mode 'adopted' with router_kind 'nginx' needs"
             " router_config_file (the team's main nginx.conf, for nginx -t)"),
            ({**nginx, "router_runtime_api": "/x.sock"}, "router_runtime_api is for an adopted haproxy, not nginx"),
            ({"router_kind": "nginx", "router_include_dir": "/x"}, "router_include_dir: for router_mode 'adopted'"
             " with router_kind 'nginx' only"),
            ({"router_mode": "adopted", "router_runtime_api": "/x.sock", "router_reload_command": "true"},
             "router_reload_command: for router_mode 'adopted' with router_kind 'nginx' only")):
        path.write_text(json.dumps(bad))
        with pytest.raises(settings.SettingsError) as exc:
            settings.load(path)
        assert str(exc.value) == top + complaint

    path.write_text(json.dumps({**nginx, "router_dir": str(tmp_path / "router"),
                                "router_reload_command": "sudo -n systemctl reload nginx",
                                "router_nginx_command": "sudo -n /usr/sbin/nginx"}))
    router = build_resources(settings.load(path))["router"]
    assert isinstance(router, AdoptedNginxRouter)
    assert (router.include_dir, router.config_file, router.reload_command, router.nginx_command) == (
        "/etc/nginx/promote", "/etc/nginx/nginx.conf", ["sudo", "-n", "systemctl", "reload", "nginx"],
        ["sudo", "-n", "/usr/sbin/nginx"])
    path.write_text(json.dumps(nginx))
    default = build_resources(settings.load(path))["router"]
    assert (default.reload_command, default.nginx_command) == (None, None)
    assert all(settings.Settings.model_fields[f].description
               for f in ("router_include_dir", "router_reload_command", "router_nginx_command"))


def test_the_artifact_store_is_chosen_by_the_settings_and_a_bad_choice_is_one_line(tmp_path: Path) -> None:
    from promote_pipeline.defs.resources import artifact_store
    from resources.artifact_store import LocalArtifactStore
    from resources.ssh_artifact_store import SshArtifactStore

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"artifact_root": str(tmp_path / "artifacts")}))
    local = artifact_store(settings.load(path))
    assert type(local) is LocalArtifactStore and local.root == str(tmp_path / "artifacts")
    ssh = {"host": "192.0.2.7", "user": "backup", "identity_ref": "PROMOTE_STORE_KEY",
           "known_hosts_file": "/etc/promote/known_hosts", "root": "/srv/promote/artifacts"}
    path.write_text(json.dumps({"artifact_store": {"kind": "ssh", "ssh": ssh}}))
    remote = artifact_store(settings.load(path))
    assert isinstance(remote, SshArtifactStore)
    assert (remote.host, remote.root, remote.ssh_port, remote.create_root) == ("192.0.2.7", "/srv/promote/artifacts",
                                                                              22, False)
    for bad, complaint in (({"kind": "ssh"}, "needs its `ssh` section"),
                           ({"kind": "local", "ssh": ssh}, "has an `ssh` section but kind 'local'"),
                           ({"kind": "ssh", "ssh": {**ssh, "root": "artifacts"}}, "must be an absolute path"),
                           ({"kind": "s3"}, "artifact_store.kind: Input should be 'local' or 'ssh'")):
        path.write_text(json.dumps({"artifact_store": bad}))
        with pytest.raises(settings.SettingsError, match=complaint) as exc:
            settings.load(path)
        assert "\n" not in str(exc.value)
    for model in (settings.ArtifactStoreSettings, settings.SshArtifactStoreSettings):
        assert all(f.description for f in model.model_fields.values())
    assert all(f.description for f in SshArtifactStore.model_fields.values())


def test_process_hosts_combine_with_the_ssh_store(tmp_path: Path) -> None:
    """Odoo on a process host and the artifacts on a store host: the worker relays the filestore between them."""
    path = tmp_path / "settings.json"
    host = {"address": "192.0.2.8", "user": "odoo", "identity_ref": "PROMOTE_SSH_KEY",
            "known_hosts_file": "/etc/promote/known_hosts", "run_dir": "/srv/odoo/run"}
    ssh = {"host": "192.0.2.7", "user": "backup", "identity_ref": "PROMOTE_STORE_KEY",
           "known_hosts_file": "/etc/promote/known_hosts", "root": "/srv/promote/artifacts"}
    hosts = {"process_hosts": {"prod-app-1": host}, "environment_hosts": {"env_prod": "prod-app-1"}}
    path.write_text(json.dumps({**hosts, "artifact_store": {"kind": "ssh", "ssh": ssh}}))
    loaded = settings.load(path)
    assert loaded.environment_hosts == {"env_prod": "prod-app-1"} and loaded.artifact_store.kind == "ssh"
    # An environment named on a host that process_hosts does not hold is still refused, in one line.
    path.write_text(json.dumps({**hosts, "environment_hosts": {"env_prod": "prod-app-2"},
                                "artifact_store": {"kind": "ssh", "ssh": ssh}}))
    with pytest.raises(settings.SettingsError, match="environment_hosts.env_prod: 'prod-app-2' is not a name") as exc:
        settings.load(path)
    assert "\n" not in str(exc.value)
