"""AdoptedNginxRouter against a real nginx that the test runs as "the team's": its own nginx.conf (own prefix, pid,
logs and temp folders), its own process (started here, never through the adapter), server blocks of its own that
include promote's files. Upstreams are the real HTTP servers of ``deployments``.

What is checked is asked of that nginx through real requests (the upstream's own answer and the
``X-Promote-Upstream`` header); that it was reloaded and not restarted is its master's pid and start time.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from promote_pipeline.promotion.inventory.model import Router, RouterEntry
from promote_pipeline.promotion.inventory.probes import adopted_router_problems
from resources._router_common import free_port, read_pid, wait_for
from resources.nginx_adopted import AdoptedNginxRouter
from resources.router import RouterError

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")

ENV = "prod"

_TEAM_CONF = """\
# the team's own nginx.conf: promote must never edit it
{user}worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/team-access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {inc}/http.conf;

    server {{
        listen 127.0.0.1:{active};
        server_name shop.example;
        location = /team-only {{ default_type text/plain; return 200 "team\\n"; }}
        include {inc}/prod_active.conf;
    }}
    server {{
        listen 127.0.0.1:{preview};
        include {inc}/prod_preview.conf;
    }}
    # a server block of theirs that includes nothing of promote's
    server {{
        listen 127.0.0.1:{bare};
        location / {{ default_type text/plain; return 200 "bare\\n"; }}
    }}
}}
"""


@dataclass
class Team:
    """The team's nginx: its folder, config file, the folder of promote's files it includes, its ports."""

    folder: Path
    conf: Path
    include_dir: Path
    active_port: int
    preview_port: int
    bare_port: int

    def master(self) -> int:
        pid = read_pid(self.folder / "nginx.pid")
        assert pid is not None
        return pid

    def start_time(self) -> str:
        return Path(f"/proc/{self.master()}/stat").read_text().rsplit(")", 1)[1].split()[19]


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    folder, inc = tmp_path / "team", tmp_path / "team" / "promote"
    for kind in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "tmp" / kind).mkdir(parents=True)
    inc.mkdir()
    # what the README tells the team: create promote's files empty, then include them (nginx -t needs them)
    for name in ("http.conf", "prod_active.conf", "prod_preview.conf"):
        (inc / name).touch()
    ports = [free_port("127.0.0.1", set())]
    for _ in range(2):
        ports.append(free_port("127.0.0.1", set(ports)))
    user = ""
    if os.geteuid() == 0:  # workers as the folder's owner: nginx's default "nobody" cannot enter pytest's tmp
        st = folder.stat()
        user = f"user {pwd.getpwuid(st.st_uid).pw_name} {grp.getgrgid(st.st_gid).gr_name};\n"
    conf = folder / "nginx.conf"
    conf.write_text(_TEAM_CONF.format(user=user, dir=folder, inc=inc, active=ports[0], preview=ports[1],
                                      bare=ports[2]))
    t = Team(folder, conf, inc, *ports)
    subprocess.run(["nginx", "-p", f"{folder}/", "-c", str(conf), "-e", str(folder / "error.log")], check=True,
                   capture_output=True, timeout=30)
    try:
        assert wait_for(lambda: read_pid(folder / "nginx.pid") is not None, 10)
        yield t
    finally:
        pid = read_pid(folder / "nginx.pid")
        if pid is not None:
            os.kill(pid, 15)  # the team's nginx, started above: stopped by its pid only
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10)


def _theirs(team: Team) -> set[str]:
    """The team's files, outside promote's folder."""
    return {p.relative_to(team.folder).as_posix() for p in team.folder.rglob("*")
            if team.include_dir not in (p, *p.parents)}


def _router(tmp_path: Path, team: Team) -> AdoptedNginxRouter:
    return AdoptedNginxRouter(work_dir=str(tmp_path / "promote"), include_dir=str(team.include_dir),
                              config_file=str(team.conf))


def _register(router: AdoptedNginxRouter, team: Team, upstream):  # type: ignore[no-untyped-def]
    return router.register_environment(ENV, upstream, active_port=team.active_port, preview_port=team.preview_port)


def test_blue_green_blue_through_the_teams_nginx(tmp_path: Path, team: Team, deployments, net) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    pid, started, conf, theirs = team.master(), team.start_time(), team.conf.read_text(), _theirs(team)
    router = _router(tmp_path, team)
    router.start()  # asks, starts nothing
    assert router.is_running()

    state = _register(router, team, blue)
    assert state.active_url == f"http://127.0.0.1:{team.active_port}"
    assert net.get(state.active_url) == "blue" and net.served_by(state.active_url) == "prod-blue"
    router.set_preview(ENV, green)
    assert net.get(state.preview_url) == "green" and net.get(state.active_url) == "blue"

    for target, other in ((green, blue), (blue, green)):
        router.switch_active(ENV, target)
        colour = target.colour
        assert net.get(state.active_url) == colour
        assert net.served_by(state.active_url) == f"prod-{colour}"
        assert net.get(state.active_url, "/websocket") == f"ws-{colour}"
        served = router.served_upstream(ENV)
        assert served.is_upstream(target) and not served.is_upstream(other), served
        assert net.get(state.active_url, "/team-only") == "team"  # the team's own location lives on

    # reloaded, never restarted: the same master, started when it was; the team's file as they wrote it
    assert team.master() == pid and team.start_time() == started
    assert team.conf.read_text() == conf
    assert _theirs(team) == theirs  # nothing of promote's outside its folder
    written = {p.relative_to(team.include_dir).as_posix() for p in team.include_dir.rglob("*.conf")}
    assert written == {"http.conf", "prod_active.conf", "prod_preview.conf", "upstreams/prod.conf"}
    assert all((team.include_dir / name).stat().st_mode & 0o777 == 0o644 for name in written)  # any master reads

    # the stability window reads promote's access log of the entry point
    mark = router.traffic_mark(ENV, blue)
    for _ in range(3):
        assert net.get(state.active_url) == "blue"
    assert wait_for(lambda: router.traffic_since(mark, blue).responses_2xx >= 3, 10)

    router.stop()  # nothing of the team's is stopped
    assert team.master() == pid and Path(f"/proc/{pid}").exists()
    assert net.get(state.active_url) == "blue"


def test_a_configuration_nginx_refuses_keeps_the_old_upstream(tmp_path: Path, team: Team, deployments,
                                                              net) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    router = _router(tmp_path, team)
    state = _register(router, team, blue)
    router.switch_active(ENV, green)
    pid = team.master()
    good = team.conf.read_text()
    team.conf.write_text(good + "no_such_directive on;\n")  # the team broke their own file
    before = router.entry_file(ENV, "active").read_text()
    with pytest.raises(RouterError) as exc:
        router.switch_active(ENV, blue)
    assert "\n" not in str(exc.value) and "no_such_directive" in str(exc.value), exc.value
    assert str(exc.value).startswith(f"the team's nginx config test of {team.conf} failed")
    assert router.entry_file(ENV, "active").read_text() == before  # the old file is back
    assert net.get(state.active_url) == "green" and router.serves(ENV, green)
    assert router.state(ENV).active == green  # routes.json says what is served
    assert team.master() == pid

    team.conf.write_text(good)
    router.switch_active(ENV, blue)
    assert net.get(state.active_url) == "blue" and router.serves(ENV, blue)


def test_the_drill_refusal_is_a_real_nginx_refusal(tmp_path: Path, team: Team, deployments, net) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    router = _router(tmp_path, team)
    state = _register(router, team, blue)
    drill = router.model_copy(update={"drill_refuse_switch": True})
    with pytest.raises(RouterError, match="promote_drill_refuse_switch"):
        drill.switch_active(ENV, green)
    assert net.get(state.active_url) == "blue" and router.serves(ENV, blue)


def test_a_stopped_nginx_fails_the_switch_in_one_line(tmp_path: Path, team: Team, deployments) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    router = _router(tmp_path, team)
    _register(router, team, blue)
    before = {path: path.read_text() for path in team.include_dir.rglob("*.conf")}
    pid = team.master()
    os.kill(pid, 3)  # the team stops their nginx (SIGQUIT)
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), 15)
    assert not router.is_running()
    with pytest.raises(RouterError) as exc:
        router.switch_active(ENV, green)
    assert "\n" not in str(exc.value) and str(exc.value).startswith("the team's nginx reload failed"), exc.value
    assert {path: path.read_text() for path in team.include_dir.rglob("*.conf")} == before  # put back
    assert router.state(ENV).active == blue


def test_served_upstream_asks_the_running_nginx(tmp_path: Path, team: Team, deployments) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    # the team's own way to reload (a signal to their master) and to run their nginx (through env)
    router = _router(tmp_path, team).model_copy(update={
        "reload_command": ["sh", "-c", f"kill -HUP $(cat {team.folder}/nginx.pid)"], "nginx_command": ["env", "nginx"]})
    _register(router, team, blue)
    router.switch_active(ENV, green)
    routes = Path(router.work_dir) / "routes.json"
    routes.write_text(routes.read_text().replace(f'"http_port": {green.http_port}', f'"http_port": {blue.http_port}')
                      .replace('"name": "prod-green"', '"name": "prod-blue"'))
    assert router.state(ENV).active.name == "prod-blue"  # routes.json now says blue ...
    served = router.served_upstream(ENV)  # ... the running nginx says green
    assert served.is_upstream(green) and served.source.startswith("nginx probe")


def test_what_the_teams_nginx_lacks(tmp_path: Path, team: Team, deployments) -> None:
    blue = deployments["blue"].upstream
    router = _router(tmp_path, team)
    closed = free_port("127.0.0.1", {team.active_port, team.preview_port, team.bare_port})
    # before registration promote's files are empty: what nginx -T says it includes is asked
    assert router.missing(ENV, team.active_port, team.preview_port) == []
    _register(router, team, blue)
    assert router.missing(ENV) == []  # now asked of the running nginx: the probe answers on both ports
    assert router.missing("shop", team.bare_port, closed) == [
        f"'include {team.include_dir}/shop_active.conf;' in the server block listening on port {team.bare_port}",
        f"a server listening on 127.0.0.1:{closed} (its preview entry point)"]

    section = Router(kind="nginx", dir="unused", mode="adopted", fronts={
        ENV: RouterEntry(active_port=team.active_port, preview_port=team.preview_port),
        "shop": RouterEntry(active_port=team.bare_port, preview_port=closed)})
    assert [str(p) for p in adopted_router_problems(section, router)] == [
        f"router.fronts.shop: the team's nginx ({team.conf}) lacks what shop is served through:"
        f" 'include {team.include_dir}/shop_active.conf;' in the server block listening on port {team.bare_port},"
        f" a server listening on 127.0.0.1:{closed} (its preview entry point)"]

    # registering an entry point whose server block lacks the include says so, and names the file to include
    with pytest.raises(RouterError, match="include promote's file"):
        router.register_environment("shop", blue, active_port=team.bare_port, preview_port=closed)
    assert "shop" not in router._load_routes().environments

    # the team takes the include out of their preview server block and reloads: the running nginx tells
    good = team.conf.read_text()
    team.conf.write_text(good.replace(f"include {team.include_dir}/prod_preview.conf;", "")
                         .replace(f"include {team.include_dir}/http.conf;", "include /dev/null;")
                         .replace(f"include {team.include_dir}/prod_active.conf;", "")
                         + f"# include {team.include_dir}/http.conf;\n")
    subprocess.run(["nginx", "-c", str(team.conf), "-s", "reload"], check=True, capture_output=True, timeout=30)
    assert wait_for(lambda: len(router.missing(ENV)) == 3, 10), router.missing(ENV)
    assert router.missing(ENV) == [
        f"'include {team.include_dir}/http.conf;' in its http block",
        f"'include {team.include_dir}/prod_active.conf;' in the server block listening on port {team.active_port}",
        f"'include {team.include_dir}/prod_preview.conf;' in the server block listening on port {team.preview_port}"]
    team.conf.write_text(good + "broken;\n")
    with pytest.raises(RouterError, match="broken"):  # refused before any reload: the files are as they were
        router.register_environment("other", blue, active_port=team.bare_port, preview_port=closed)
    assert not (team.include_dir / "other_active.conf").exists()
    assert router.missing(ENV)[0] == (
        f'a configuration that passes nginx -t (unknown directive "broken" in {team.conf}:32)')
    with pytest.raises(RouterError, match="config test"):
        router.start()
