"""AdoptedHAProxyRouter against a real HAProxy that the test runs as "the team's": its own haproxy.cfg, its own
process (started here, never through the adapter), a unix admin socket, and a TCP runtime API on a free loopback
port behind an ACL that lets only 127.0.0.1 in. Upstreams are the real HTTP servers of ``deployments``.

What is checked is asked of HAProxy itself (``show servers state`` on its runtime API) and of real requests
through its frontends; that its process was never signalled is its pid, its start time and its own uptime.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from promote_pipeline.promotion.inventory.model import Router, RouterEntry
from promote_pipeline.promotion.inventory.probes import adopted_router_problems
from resources._router_common import free_port, wait_for
from resources.haproxy_adopted import AdoptedHAProxyRouter, rewrite_servers
from resources.router import RouterError, Upstream

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")

ENV = "prod"

_TEAM_CFG = """\
# the team's own haproxy.cfg (comments and options of theirs must survive promote's edits)
global
    stats socket {admin} mode 600 level admin
    stats socket {operator} mode 600 level operator

defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h

# The runtime API over TCP: stats sockets take no ACL, so a tcp frontend with one stands in front of the unix one.
frontend runtime_api
    mode tcp
    bind 127.0.0.1:{api_port}
    tcp-request connection reject unless {{ src 127.0.0.1 }}
    default_backend runtime_api_cli

backend runtime_api_cli
    mode tcp
    server cli unix@{admin}

frontend prod_active
    bind 127.0.0.1:{active_port}
    use_backend prod_active_ws if {{ path_beg /websocket }}
    default_backend prod_active_http

frontend prod_preview
    bind 127.0.0.1:{preview_port}
    use_backend prod_preview_ws if {{ path_beg /websocket }}
    default_backend prod_preview_http

backend prod_active_http
    server app {blue_http} maxconn 100   # the team's option

backend prod_active_ws
    server app {blue_ws}

backend prod_preview_http
    server app {blue_http}

backend prod_preview_ws
    server app {blue_ws}
"""


@dataclass
class Team:
    """The team's HAProxy: its config file, its process, its runtime API."""

    cfg: Path
    proc: subprocess.Popen[bytes]
    admin_sock: Path
    operator_sock: Path
    api_port: int
    active_port: int
    preview_port: int

    @property
    def tcp_api(self) -> str:
        return f"ipv4@127.0.0.1:{self.api_port}"

    def ask(self, command: str, source: str | None = None) -> str:
        """A runtime API command over the TCP address, from ``source`` when given."""
        chunks = []
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            if source:
                sock.bind((source, 0))
            try:
                sock.connect(("127.0.0.1", self.api_port))
                sock.sendall(command.encode() + b"\n")
                while data := sock.recv(65536):
                    chunks.append(data)
            except ConnectionResetError:  # what the ACL's reject looks like from the client
                pass
        return b"".join(chunks).decode()

    def info(self) -> dict[str, str]:
        return dict(line.split(": ", 1) for line in self.ask("show info").splitlines() if ": " in line)

    def servers(self) -> dict[str, str]:
        """backend -> 'addr:port' of its server app, as the running HAProxy has it."""
        answer = self.ask("show servers state").splitlines()
        header = next(line[2:].split() for line in answer if line.startswith("# "))
        rows = [dict(zip(header, line.split(), strict=False)) for line in answer[1:]
                if line and not line.startswith("#")]
        return {r["be_name"]: f"{r['srv_addr']}:{r['srv_port']}" for r in rows if r["srv_name"] == "app"}

    def start_time(self) -> str:
        return Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


@pytest.fixture
def team(tmp_path: Path, deployments) -> Iterator[Team]:
    blue = deployments["blue"].upstream
    folder = tmp_path / "team"
    folder.mkdir()
    ports = [free_port("127.0.0.1", set())]
    for _ in range(2):
        ports.append(free_port("127.0.0.1", set(ports)))
    cfg = folder / "haproxy.cfg"
    cfg.write_text(_TEAM_CFG.format(admin=folder / "admin.sock", operator=folder / "operator.sock",
                                    api_port=ports[0], active_port=ports[1], preview_port=ports[2],
                                    blue_http=_addr(blue, "http"), blue_ws=_addr(blue, "ws")))
    cfg.chmod(0o640)
    with open(folder / "haproxy.log", "wb") as log:  # its own output, for a failure's reader
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    t = Team(cfg, proc, folder / "admin.sock", folder / "operator.sock", *ports)
    try:
        assert wait_for(lambda: _answers(t), 15), (folder / "haproxy.log").read_text()
        yield t
    finally:
        t.proc.kill()  # the one running now: a test may have restarted it, as the team would
        t.proc.wait(10)


def _answers(team: Team) -> bool:
    try:
        return "Pid:" in team.ask("show info")
    except OSError:
        return False


def _router(tmp_path: Path, api: str, config_file: Path | None) -> AdoptedHAProxyRouter:
    return AdoptedHAProxyRouter(work_dir=str(tmp_path / "promote"), runtime_api=api,
                                config_file=str(config_file) if config_file else None)


def _addr(upstream: Upstream, kind: str) -> str:
    return f"127.0.0.1:{upstream.http_port if kind == 'http' else upstream.websocket_port}"


def test_blue_green_blue_through_the_teams_haproxy_over_tcp(tmp_path: Path, team: Team, deployments, net) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    pid, started, uptime = team.proc.pid, team.start_time(), int(team.info()["Uptime_sec"])
    router = _router(tmp_path, team.tcp_api, team.cfg)
    router.start()  # asks, starts nothing
    assert router.is_running()

    state = router.register_environment(ENV, blue, active_port=team.active_port, preview_port=team.preview_port)
    assert state.active_url == f"http://127.0.0.1:{team.active_port}"
    router.set_preview(ENV, green)
    assert team.servers()["prod_preview_http"] == _addr(green, "http")
    assert net.get(state.preview_url) == "green" and net.get(state.active_url) == "blue"

    for target, other in ((green, blue), (blue, green)):
        router.switch_active(ENV, target)
        servers = team.servers()  # what the running haproxy itself has
        assert servers["prod_active_http"] == _addr(target, "http")
        assert servers["prod_active_ws"] == _addr(target, "ws")
        colour = "green" if target is green else "blue"
        assert net.get(state.active_url) == colour
        assert net.get(state.active_url, "/websocket") == f"ws-{colour}"
        served = router.served_upstream(ENV)
        assert served.is_upstream(target) and not served.is_upstream(other), served
        # persisted into the team's file, which haproxy accepts, keeping their mode and their own options
        text = team.cfg.read_text()
        assert f"server app {_addr(target, 'http')} maxconn 100   # the team's option" in text
        assert f"backend prod_active_ws\n    server app {_addr(target, 'ws')}\n" in text
        assert "# the team's own haproxy.cfg" in text
        assert stat.S_IMODE(team.cfg.stat().st_mode) == 0o640
        assert team.cfg.stat().st_uid == os.getuid()
        check = subprocess.run(["haproxy", "-c", "-f", str(team.cfg)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr

    # never signalled, restarted or reloaded: the same process, and its own uptime kept growing
    assert team.proc.poll() is None and team.proc.pid == pid and team.start_time() == started
    assert wait_for(lambda: int(team.info()["Uptime_sec"]) > uptime, 10)
    assert team.info()["Pid"] == str(pid)
    router.stop()  # nothing of the team's is stopped
    assert team.proc.poll() is None and _answers(team)
    assert not list(team.cfg.parent.glob(".haproxy.cfg.*"))  # no candidate left next to their file


def test_unix_socket_without_a_config_file_switches_the_process_only(tmp_path: Path, team: Team, deployments,
                                                                      net) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    before = team.cfg.read_text()
    router = _router(tmp_path, str(team.admin_sock), None)
    state = router.register_environment(ENV, blue, active_port=team.active_port, preview_port=team.preview_port)
    router.switch_active(ENV, green)
    assert net.get(state.active_url) == "green"
    assert router.serves(ENV, green)
    mark = router.traffic_mark(ENV, green)
    for _ in range(3):
        assert net.get(state.active_url) == "green"
    assert wait_for(lambda: router.traffic_since(mark, green).responses_2xx >= 3, 10)
    assert team.cfg.read_text() == before  # no file named: the team's file is not touched


def test_the_teams_own_restart_keeps_the_switch(tmp_path: Path, team: Team, deployments, net) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    router = _router(tmp_path, team.tcp_api, team.cfg)
    state = router.register_environment(ENV, blue, active_port=team.active_port, preview_port=team.preview_port)
    router.switch_active(ENV, green)
    team.proc.terminate()  # the team restarts their haproxy from their file, as they would after editing it
    try:
        team.proc.wait(60)  # a soft stop lets open connections finish: slow on a loaded machine
    except subprocess.TimeoutExpired:
        team.proc.kill()
        team.proc.wait(10)
    with open(team.cfg.parent / "haproxy.log", "ab") as log:
        team.proc = subprocess.Popen(["haproxy", "-db", "-f", str(team.cfg)], stdout=log, stderr=subprocess.STDOUT)
    assert wait_for(lambda: _answers(team), 15), (team.cfg.parent / "haproxy.log").read_text()
    assert wait_for(lambda: _get_or_none(net, state.active_url) == "green", 10)
    assert net.get(state.active_url, "/websocket") == "ws-green"
    assert router.serves(ENV, green)


def _get_or_none(net, url: str) -> str | None:
    try:
        return str(net.get(url))
    except OSError:
        return None


def test_refusals_name_what_is_wrong(tmp_path: Path, team: Team, deployments) -> None:
    blue = deployments["blue"].upstream
    with pytest.raises(RouterError, match="level operator"):
        _router(tmp_path, f"unix@{team.operator_sock}", None).start()
    with pytest.raises(RouterError, match="give their active and preview ports"):
        _router(tmp_path, team.tcp_api, None).register_environment(ENV, blue)
    with pytest.raises(RouterError, match="no backend other_active_http"):
        _router(tmp_path, team.tcp_api, None).register_environment("other", blue, active_port=1, preview_port=2)
    # the ACL: a client from another address gets no runtime API
    assert team.ask("show info", source="127.0.0.2") == ""
    assert "Pid:" in team.ask("show info", source="127.0.0.1")


def test_a_file_that_haproxy_refuses_is_not_replaced(tmp_path: Path, team: Team, deployments) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    router = _router(tmp_path, team.tcp_api, team.cfg)
    router.register_environment(ENV, blue, active_port=team.active_port, preview_port=team.preview_port)
    broken = team.cfg.read_text() + "\nbackend broken\n    no-such-keyword here\n"
    team.cfg.write_text(broken)
    with pytest.raises(RouterError, match="was not updated"):
        router.switch_active(ENV, green)
    assert team.cfg.read_text() == broken
    assert team.servers()["prod_active_http"] == _addr(green, "http")  # the live switch stands, as said
    assert router.state(ENV).active == green and router.serves(ENV, green)


def test_rewrite_keeps_everything_but_the_address() -> None:
    text = "backend a\n    server app 1.2.3.4:5 check\nbackend b\n    server other 1.1.1.1:1\n    server app x:1\n"
    assert rewrite_servers(text, {"b": ("10.0.0.1", 80)}) == text.replace("x:1", "10.0.0.1:80")
    unindented = "backend c\nserver app 1.1.1.1:1 check\n# server app 2.2.2.2:2\n"
    assert rewrite_servers(unindented, {"c": ("10.0.0.1", 80)}) == unindented.replace("1.1.1.1:1", "10.0.0.1:80")
    with pytest.raises(RouterError, match=r"backend\(s\) c$"):
        rewrite_servers(text, {"c": ("10.0.0.1", 80)})


def _section(team: Team, api: str, fronts: tuple[str, ...]) -> Router:
    return Router(kind="haproxy", dir="unused", mode="adopted", runtime_api=api, fronts={
        env: RouterEntry(active_port=team.active_port, preview_port=team.preview_port) for env in fronts})


def test_inventory_check_of_the_teams_haproxy(tmp_path: Path, team: Team) -> None:
    router = _router(tmp_path, team.tcp_api, None)
    assert adopted_router_problems(_section(team, team.tcp_api, (ENV,)), router) == []

    problems = adopted_router_problems(_section(team, team.tcp_api, (ENV, "shop")), router)
    assert [str(p) for p in problems] == [
        f"router.fronts.shop: the team's haproxy (runtime API {team.tcp_api}) lacks what shop is switched through:"
        " backend shop_active_http, backend shop_active_ws, backend shop_preview_http, backend shop_preview_ws"]

    operator = f"unix@{team.operator_sock}"
    problems = adopted_router_problems(_section(team, operator, (ENV,)), _router(tmp_path, operator, None))
    assert [str(p) for p in problems] == [
        f"router.runtime_api: the team's haproxy runtime API {operator} is at level operator: switches need"
        " 'level admin' on its stats socket"]

    closed = f"ipv4@127.0.0.1:{free_port('127.0.0.1', {team.api_port})}"
    problems = adopted_router_problems(_section(team, closed, (ENV,)), _router(tmp_path, closed, None))
    assert [str(p) for p in problems] == [
        f"router.runtime_api: the team's haproxy does not answer on its runtime API {closed}"]
