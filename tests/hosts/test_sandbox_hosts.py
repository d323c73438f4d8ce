"""``promote sandbox up --topology hosts``: the sandbox on hosts (network namespaces) people can try, made, asked
and removed through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from promote_pipeline.cli.sandbox import PROD, STAGING
from promote_pipeline.cli.sandbox_hosts import HOSTS_FILE, HostsSandbox, unavailable_reason
from promote_pipeline.promotion import settings as settings_mod
from resources import netns_hosts
from resources.ops_db import OpsDatabase

pytestmark = pytest.mark.slow

PROMOTE = str(Path(sys.executable).parent / "promote")


def _promote(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMOTE, *argv], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_a_sandbox_on_hosts_is_made_shown_and_removed(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"a sandbox on hosts needs: {reason}")
    # A deep folder, as under a test runner's temporary folders: nothing of the sandbox may depend on a short
    # path (HAProxy's admin socket beside its config once made it exit: a unix socket's path is at most 107 bytes).
    root = tmp_path / ("d" * 60) / "box"
    try:
        up = _promote("sandbox", "up", "--topology", "hosts", "--dir", str(root))
        assert up.returncode == 0, up.stdout + up.stderr
        status = _promote("sandbox", "status", "--json", "--dir", str(root))
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        hosts = {h["name"]: h for h in info["hosts"]}
        assert info["topology"] == "hosts" and set(hosts) == set(netns_hosts.DEFAULT_HOSTS)
        layout = json.loads((root / HOSTS_FILE).read_text())
        for name, host in hosts.items():
            assert host["namespace"] == f"{layout['prefix']}-{name}" and host["address"].startswith(
                layout["subnet"].rsplit(".", 1)[0] + ".")
        # Each environment's Odoo in its host's namespace; the router (adopted, in router) serves blue there.
        ops_db: OpsDatabase = HostsSandbox(root=root).resources()["ops_db"]
        for env_id, name in ((STAGING, "staging"), (PROD, "production")):
            dep = ops_db.active_deployment(env_id)
            assert dep is not None and dep.host == name
            found = subprocess.run(["ip", "netns", "identify", str(dep.pid)], capture_output=True, text=True)
            assert found.stdout.strip() == hosts[name]["namespace"]
        blue = ops_db.active_deployment(PROD)
        assert blue is not None and info["serving"]["deployment"] == blue.deployment_id
        assert info["serving"]["url"] == f"http://{hosts['production']['address']}:{blue.http_port}"
        assert info["router_url"].startswith(f"http://{hosts['router']['address']}:")
        text = _promote("sandbox", "status", "--dir", str(root)).stdout
        production = hosts["production"]
        assert f"host production: {production['address']} (namespace {production['namespace']})" in text
        # Kept: a test run's clean-up of dead builders' networks leaves it alone (its builder, `up`, has exited).
        assert layout["prefix"] not in netns_hosts.clean_stale()
        assert any(x.startswith("namespace") for x in netns_hosts.leftovers(layout["prefix"]))
        down = _promote("sandbox", "down", "--dir", str(root))
        assert down.returncode == 0, down.stdout + down.stderr
        assert netns_hosts.leftovers(layout["prefix"]) == [] and not root.exists()
    finally:
        if (root / HOSTS_FILE).exists():
            prefix = json.loads((root / HOSTS_FILE).read_text())["prefix"]
            try:
                HostsSandbox(root=root).down()
            finally:
                netns_hosts.remove_kept(prefix)
        settings_mod.select(None)


def test_refusals_name_the_flag() -> None:
    done = _promote("sandbox", "up", "--topology", "hosts", "--environments", "2", "--dir", "/nonexistent/x")
    assert done.returncode == 2 and done.stderr.startswith("sandbox refused: --topology hosts: "), done.stderr
