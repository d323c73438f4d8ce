"""``promote inventory check`` with ``router.mode: adopted`` and ``kind: nginx``: the team's nginx (a real one,
started here from its own nginx.conf, never by promote) is asked whether its configuration passes ``nginx -t``,
includes promote's http.conf, and has a server block on each entry point's port that includes promote's file.
One line per failing environment, exit 2; nothing is changed.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resources._router_common import read_pid, wait_for
from resources.odoo_host import free_port

_TEMP = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")]


def _team_conf(folder: Path, inc: Path, env_id: str, active_port: int, preview_port: int, include_preview: bool) -> str:
    temp = "\n".join(f"    {k}_temp_path {folder}/tmp/{k};" for k in _TEMP)
    preview = f"include {inc}/{env_id}_preview.conf;" if include_preview else "location / { return 404; }"
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""\
{user}pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
    include {inc}/http.conf;
    server {{ listen 127.0.0.1:{active_port}; include {inc}/{env_id}_active.conf; }}
    server {{ listen 127.0.0.1:{preview_port}; {preview} }}
}}
"""


@pytest.fixture
def team_nginx(tmp_path: Path) -> Iterator[Any]:
    """Start the team's nginx from a config of theirs: ``start(env_id, ports, include_preview)`` -> (conf, inc)."""
    started: list[Path] = []

    def start(env_id: str, active_port: int, preview_port: int, include_preview: bool = True) -> tuple[Path, Path]:
        folder = tmp_path / f"team{len(started)}"
        inc = folder / "promote"
        inc.mkdir(parents=True)
        for kind in _TEMP:
            (folder / "tmp" / kind).mkdir(parents=True)
        for name in ("http.conf", f"{env_id}_active.conf", f"{env_id}_preview.conf"):
            (inc / name).touch()  # as the README says: empty, until promote registers the environment
        conf = folder / "nginx.conf"
        conf.write_text(_team_conf(folder, inc, env_id, active_port, preview_port, include_preview))
        subprocess.run(["nginx", "-c", str(conf), "-e", str(folder / "error.log")], check=True, capture_output=True,
                       timeout=30)
        started.append(folder)
        assert wait_for(lambda: read_pid(folder / "nginx.pid") is not None, 10)
        return conf, inc

    try:
        yield start
    finally:
        for folder in started:
            pid = read_pid(folder / "nginx.pid")
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 10)


def _adopted(inst: Any, conf: Path, inc: Path, ports: dict[str, int] | None = None) -> dict[str, Any]:
    data = copy.deepcopy(inst.data)
    data["router"].update({"kind": "nginx", "mode": "adopted", "config_file": str(conf), "include_dir": str(inc)})
    if ports:
        data["router"]["fronts"][inst.prod].update(ports)
    return data


def test_check_asks_the_teams_nginx_for_each_environments_includes(installation: Any, team_nginx: Any) -> None:
    inst = installation
    ports = inst.data["router"]["fronts"][inst.prod]

    conf, inc = team_nginx(inst.prod, ports["active_port"], ports["preview_port"])
    fine = inst.promote("inventory", "check", str(inst.write(_adopted(inst, conf, inc), "adopted.yaml")))
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert fine.stdout.splitlines()[0].startswith(f"inventory {inst.root / 'adopted.yaml'}: fine")

    # a team whose preview server block does not include promote's file (on other ports: both run at once)
    other = {"active_port": free_port(), "preview_port": free_port()}
    conf2, inc2 = team_nginx(inst.prod, other["active_port"], other["preview_port"], include_preview=False)
    result = inst.promote("inventory", "check", str(inst.write(_adopted(inst, conf2, inc2, other), "lacking.yaml")))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"router.fronts.{inst.prod}: the team's nginx ({conf2}) lacks what {inst.prod} is served through:"
        f" 'include {inc2}/{inst.prod}_preview.conf;' in the server block listening on port {other['preview_port']}"]

    missing = inst.write(_adopted(inst, conf, inc, {"active_port": free_port(), "preview_port": free_port()}),
                         "nothing.yaml")
    result = inst.promote("inventory", "check", str(missing))
    assert result.returncode == 2 and "a server listening on 127.0.0.1:" in result.stdout, result.stdout
    assert not (inst.root / "router" / "routes.json").exists()  # checked, nothing registered
