"""``promote inventory check`` with ``router.mode: adopted``: the team's HAProxy (a real one, started here from its
own file, never by promote) is asked over its runtime API, on a loopback TCP port behind an ACL, whether it has
the backends the production environment is switched through. One line per failure, exit 2; nothing is changed.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resources._router_common import wait_for
from resources.haproxy_adopted import backends_of
from resources.odoo_host import free_port, port_in_use

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")]


def _team_config(folder: Path, api_port: int, env_id: str, active_port: int, preview_port: int,
                 upstream_port: int, leave_out: str | None) -> str:
    text = f"""\
global
    stats socket {folder / 'admin.sock'} mode 600 level admin
defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend runtime_api
    mode tcp
    bind 127.0.0.1:{api_port}
    tcp-request connection reject unless {{ src 127.0.0.1 }}
    default_backend runtime_api_cli
backend runtime_api_cli
    mode tcp
    server cli unix@{folder / 'admin.sock'}
"""
    for entry, port in (("active", active_port), ("preview", preview_port)):
        text += (f"frontend {env_id}_{entry}\n    bind 127.0.0.1:{port}\n"
                 f"    default_backend {env_id}_{entry}_http\n")
    for backend in backends_of(env_id):
        if backend != leave_out:
            text += f"backend {backend}\n    server app 127.0.0.1:{upstream_port}\n"
    return text


@pytest.fixture
def team_haproxy(tmp_path: Path) -> Iterator[Any]:
    """Start the team's HAProxy from a config of theirs: ``start(env_id, ports, leave_out)`` -> the runtime API."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env_id: str, active_port: int, preview_port: int, upstream_port: int,
              leave_out: str | None = None) -> str:
        folder = tmp_path / f"team{len(started)}"
        folder.mkdir()
        api_port = free_port()
        cfg = folder / "haproxy.cfg"
        cfg.write_text(_team_config(folder, api_port, env_id, active_port, preview_port, upstream_port, leave_out))
        with open(folder / "haproxy.log", "wb") as log:
            started.append(subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log,
                                            stderr=subprocess.STDOUT))
        assert wait_for(lambda: port_in_use("127.0.0.1", api_port), 15), (folder / "haproxy.log").read_text()
        return f"ipv4@127.0.0.1:{api_port}"

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()
            proc.wait(10)


def _adopted(inst: Any, api: str) -> dict[str, Any]:
    data = copy.deepcopy(inst.data)
    data["router"].update({"mode": "adopted", "runtime_api": api})
    return data


def test_check_asks_the_teams_haproxy_for_each_environments_backends(installation: Any, team_haproxy: Any) -> None:
    inst = installation
    ports = inst.data["router"]["fronts"][inst.prod]
    upstream = inst.data["environments"][inst.prod]["adopt"]["http_port"]

    api = team_haproxy(inst.prod, ports["active_port"], ports["preview_port"], upstream)
    fine = inst.promote("inventory", "check", str(inst.write(_adopted(inst, api), "adopted.yaml")))
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert fine.stdout.splitlines()[0].startswith(f"inventory {inst.root / 'adopted.yaml'}: fine")

    # a team whose haproxy lacks one backend (on other ports: both run at once)
    lacking = team_haproxy(inst.prod, free_port(), free_port(), upstream, leave_out=f"{inst.prod}_preview_ws")
    result = inst.promote("inventory", "check", str(inst.write(_adopted(inst, lacking), "lacking.yaml")))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"router.fronts.{inst.prod}: the team's haproxy (runtime API {lacking}) lacks what {inst.prod} is switched"
        f" through: backend {inst.prod}_preview_ws"]

    closed = f"ipv4@127.0.0.1:{free_port()}"
    result = inst.promote("inventory", "check", str(inst.write(_adopted(inst, closed), "closed.yaml")))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"router.runtime_api: the team's haproxy does not answer on its runtime API {closed}"]
    assert not (inst.root / "router" / "routes.json").exists()  # checked, nothing registered
