"""The team's HAProxy on another host, adopted over SSH (``AdoptedHAProxyRouter`` with ``ssh``).

"The team's" HAProxy runs in the ``router`` host's network namespace, from its own haproxy.cfg, with its admin
socket and that file on a tmpfs mounted in the mount namespace of ``router``'s sshd only (see
``tests/hosts/test_remote_filestore.py``): on the promoter the same paths are an empty folder, so only the SSH
path can reach them. Its upstreams are real HTTP servers on ``production`` (blue) and ``staging`` (green); what
is checked is asked of that HAProxy itself (``show servers state`` on its admin socket, from inside the host) and
of real HTTP requests through its frontends from the root namespace.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from promote_pipeline.defs.resources import build_resources
from promote_pipeline.promotion.inventory.model import Router, RouterEntry
from promote_pipeline.promotion.inventory.probes import adopted_router_problems
from promote_pipeline.promotion.settings import Settings, SshLogin
from resources._router_common import wait_for
from resources.haproxy_adopted import AdoptedHAProxyRouter
from resources.netns_hosts import HostNetwork
from resources.router import RouterError, RouterNotPersisted, Upstream
from resources.ssh_session import SshLoginConfig

from .conftest import sshd_pid

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")

KEY_REF = "PROMOTE_TEST_ADOPTED_HAPROXY_SSH_KEY"
ENV = "prod"
ACTIVE_PORT, PREVIEW_PORT, UPSTREAM_PORT = 8080, 8081, 8069

_TEAM_CFG = """\
# the team's own haproxy.cfg, on their host (comments and options of theirs must survive promote's edits)
global
    stats socket {admin} mode 600 level admin

defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend prod_active
    bind {listen}:{active_port}
    use_backend prod_active_ws if {{ path_beg /websocket }}
    default_backend prod_active_http

frontend prod_preview
    bind {listen}:{preview_port}
    use_backend prod_preview_ws if {{ path_beg /websocket }}
    default_backend prod_preview_http

backend prod_active_http
    server app {blue} maxconn 100   # the team's option

backend prod_active_ws
    server app {blue}

backend prod_preview_http
    server app {blue}

backend prod_preview_ws
    server app {blue}
"""

# A runtime-API client run on the host itself (someone logged in there), to ask the team's HAProxy what it has.
_ASK = ("import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\ns.settimeout(5)\ns.connect(sys.argv[1])\n"
        "s.sendall(sys.argv[2].encode() + b'\\n')\nout = b''\n"
        "while chunk := s.recv(65536):\n    out += chunk\nsys.stdout.write(out.decode())\n")


@dataclass
class Place:
    """The router host: its sshd's pid (whose mount namespace holds the tmpfs), the tmpfs, the upstreams."""

    net: HostNetwork
    pid: int
    root: Path
    blue: Upstream
    green: Upstream

    @property
    def address(self) -> str:
        return self.net["router"].address

    def on_host(self, *argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` run in the router host's mount and network namespaces: someone working on that host."""
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-n", "--", *argv], capture_output=True,
                              text=True, check=check, input=stdin, timeout=30)

    def login(self, known_hosts: Path | None = None) -> SshLoginConfig:
        assert self.net.ssh is not None
        return SshLoginConfig(address=self.address, user=self.net.ssh.user, identity_ref=KEY_REF,
                              known_hosts_file=str(known_hosts or self.net.ssh.known_hosts))


@dataclass
class Team:
    """The team's HAProxy on the router host: its file and admin socket (paths only that host sees), its process."""

    place: Place
    cfg: Path
    admin: Path
    proc: subprocess.Popen[bytes]

    def ask(self, command: str) -> str:
        return self.place.on_host(sys.executable, "-c", _ASK, str(self.admin), command).stdout

    def servers(self) -> dict[str, str]:
        """backend -> 'addr:port' of its server app, as the running HAProxy has it."""
        answer = self.ask("show servers state").splitlines()
        header = next(line[2:].split() for line in answer if line.startswith("# "))
        rows = [dict(zip(header, line.split(), strict=False)) for line in answer[1:]
                if line and not line.startswith("#")]
        return {r["be_name"]: f"{r['srv_addr']}:{r['srv_port']}" for r in rows if r["srv_name"] == "app"}

    def pid(self) -> str:
        return dict(line.split(": ", 1) for line in self.ask("show info").splitlines() if ": " in line)["Pid"]

    def text(self) -> str:
        return self.place.on_host("cat", str(self.cfg)).stdout

    def owner_mode(self) -> str:
        return self.place.on_host("stat", "-c", "%U:%G %a", str(self.cfg)).stdout.strip()

    def candidates(self) -> list[str]:
        listed = self.place.on_host("ls", "-a", str(self.cfg.parent)).stdout.split()
        return [name for name in listed if name.startswith(".haproxy.cfg.")]


def _http_get(url: str) -> str:
    """A real request through the team's frontend, from the root namespace (the promoter, a user)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode().strip()
    finally:
        conn.close()


def _accepts(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def place(host_network: HostNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    assert host_network.ssh is not None
    # The test hosts' sshds forward nothing; the router host's is started again allowing forwards to its unix
    # sockets (AllowTcpForwarding local), as the team's host must.
    os.kill(sshd_pid(host_network, "router"), signal.SIGTERM)
    assert wait_for(lambda: not _accepts(host_network["router"].address), 10)
    host_network.start_sshd("router", local_forwarding=True)
    pid = sshd_pid(host_network, "router")
    root = host_network.host_dir("router") / f"team-{secrets.token_hex(4)}"
    root.mkdir()
    done = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "mount", "-t", "tmpfs", "-o",
                           "size=8m,mode=0755", "tmpfs", str(root)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount in the host's mount namespace: {done.stderr.strip()}")
    upstreams = {}
    for colour, host in (("blue", "production"), ("green", "staging")):
        site = tmp_path_factory.mktemp(colour)
        (site / "index.html").write_text(colour)
        server = host_network.spawn(host, [sys.executable, "-m", "http.server", str(UPSTREAM_PORT), "--bind",
                                           host_network[host].address, "--directory", str(site)], site / "log")
        host_network.wait_listening(host, UPSTREAM_PORT, server)
        upstreams[colour] = Upstream(name=f"dep_{colour}", colour=colour, host=host_network[host].address,
                                     http_port=UPSTREAM_PORT, websocket_port=UPSTREAM_PORT)
    saved = os.environ.get(KEY_REF)
    os.environ[KEY_REF] = host_network.ssh.identity_file.read_text()
    try:
        yield Place(host_network, pid, root, upstreams["blue"], upstreams["green"])
    finally:
        subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "umount", "--lazy", str(root)], check=False)
        if saved is None:
            os.environ.pop(KEY_REF, None)
        else:
            os.environ[KEY_REF] = saved


@pytest.fixture
def team(place: Place, tmp_path: Path) -> Iterator[Team]:
    folder = place.root / secrets.token_hex(4)
    cfg, admin = folder / "haproxy.cfg", folder / "admin.sock"
    place.on_host("mkdir", "-m", "0755", str(folder))
    blue = f"{place.blue.host}:{place.blue.http_port}"
    place.on_host("sh", "-c", 'cat > "$1"', "sh", str(cfg), stdin=_TEAM_CFG.format(
        admin=admin, listen=place.address, active_port=ACTIVE_PORT, preview_port=PREVIEW_PORT, blue=blue))
    # theirs: another owner and a group-readable mode, which the rewrite must keep
    place.on_host("chown", "nobody:nogroup", str(cfg))
    place.on_host("chmod", "0640", str(cfg))
    log = tmp_path / "team-haproxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["nsenter", "-t", str(place.pid), "-m", "-n", "--", "haproxy", "-db", "-f", str(cfg)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    t = Team(place, cfg, admin, proc)
    try:
        place.net.wait_listening("router", ACTIVE_PORT, proc.pid)
        assert wait_for(lambda: "Pid:" in t.ask("show info"), 15), log.read_text()
        yield t
    finally:
        proc.kill()
        proc.wait(10)


def _router(place: Place, team: Team, tmp_path: Path, config_file: bool = True,
            known_hosts: Path | None = None) -> AdoptedHAProxyRouter:
    return AdoptedHAProxyRouter(work_dir=str(tmp_path / "promote"), listen_host=place.address,
                                runtime_api=str(team.admin), config_file=str(team.cfg) if config_file else None,
                                ssh=place.login(known_hosts))


def _addr(up: Upstream) -> str:
    return f"{up.host}:{up.http_port}"


def test_blue_green_blue_on_the_teams_haproxy_over_ssh(place: Place, team: Team, tmp_path: Path) -> None:
    blue, green = place.blue, place.green
    # The gap this closes: the promoter sees neither the team's file nor its admin socket at their paths.
    assert not Path(team.cfg).exists() and not Path(team.admin).exists()
    pid = team.pid()
    assert pid == str(team.proc.pid)
    router = _router(place, team, tmp_path)
    try:
        router.start()  # asks, starts nothing
        assert router.is_running()
        state = router.register_environment(ENV, blue, active_port=ACTIVE_PORT, preview_port=PREVIEW_PORT)
        assert state.active_url == f"http://{place.address}:{ACTIVE_PORT}"
        router.set_preview(ENV, green)
        assert team.servers()["prod_preview_http"] == _addr(green)
        assert _http_get(state.preview_url) == "green" and _http_get(state.active_url) == "blue"

        for round_, (target, other) in enumerate(((green, blue), (blue, green))):
            if round_ == 1:
                # the shared connection ends (its persist time over, the network): the forward went with it, and
                # the next call sets both up again
                session = router._session()
                subprocess.run([*session.base_argv(), "-O", "exit", session.address], capture_output=True,
                               check=True)
                assert wait_for(lambda s=session: subprocess.run([*s.base_argv(), "-O", "check", s.address],
                                                                 capture_output=True).returncode != 0, 10)
            router.switch_active(ENV, target)
            servers = team.servers()  # what the running haproxy itself has
            assert servers["prod_active_http"] == _addr(target) and servers["prod_active_ws"] == _addr(target)
            assert _http_get(state.active_url) == target.colour
            served = router.served_upstream(ENV)
            assert served.is_upstream(target) and not served.is_upstream(other), served
            # written into the team's file on their host, which their haproxy accepts, their owner, mode and
            # options kept
            text = team.text()
            assert f"server app {_addr(target)} maxconn 100   # the team's option" in text
            assert f"backend prod_active_ws\n    server app {_addr(target)}\n" in text
            assert text.startswith("# the team's own haproxy.cfg")
            assert team.owner_mode() == "nobody:nogroup 640"
            check = place.on_host("haproxy", "-c", "-f", str(team.cfg), check=False)
            assert check.returncode == 0, check.stdout + check.stderr
            assert team.candidates() == []

        # never restarted or reloaded: the same process answers
        assert team.proc.poll() is None and team.pid() == pid
        router.stop()  # nothing of the team's is stopped
        assert team.proc.poll() is None
        forward = Path(router._ssh_runtime["api_forward"])
        folder = Path(router._ssh_runtime["dir"])
        assert forward.is_socket() and (folder.stat().st_mode & 0o077) == 0
    finally:
        router.close()
    assert not forward.exists() and not folder.exists()  # the forward, the connection and the folder gone
    assert team.proc.poll() is None and team.pid() == pid


def test_a_file_their_haproxy_refuses_is_not_replaced_and_the_switch_stands(place: Place, team: Team,
                                                                             tmp_path: Path) -> None:
    router = _router(place, team, tmp_path)
    try:
        router.register_environment(ENV, place.blue, active_port=ACTIVE_PORT, preview_port=PREVIEW_PORT)
        place.on_host("sh", "-c", 'printf "\\nbackend broken\\n    no-such-keyword here\\n" >> "$1"', "sh",
                      str(team.cfg))
        broken = team.text()
        with pytest.raises(RouterNotPersisted) as caught:
            router.switch_active(ENV, place.green)
        message = str(caught.value)
        assert "\n" not in message and place.address in message and "no-such-keyword" in message, message
        assert "was not updated" in message
        assert team.text() == broken and team.candidates() == []
        assert team.owner_mode() == "nobody:nogroup 640"
        assert team.servers()["prod_active_http"] == _addr(place.green)  # the live switch stands, as said
        assert _http_get(f"http://{place.address}:{ACTIVE_PORT}") == "green"
        assert router.state(ENV).active == place.green
    finally:
        router.close()


def test_an_unknown_host_key_is_refused_in_one_line(place: Place, team: Team, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    router = _router(place, team, tmp_path, known_hosts=empty)
    try:
        assert not router.is_running()
        with pytest.raises(RouterError) as caught:
            router.start()
    finally:
        router.close()
    message = str(caught.value)
    assert "\n" not in message and place.address in message and "host key unknown" in message, message


def test_missing_names_what_the_teams_haproxy_lacks_over_ssh(place: Place, team: Team, tmp_path: Path) -> None:
    assert place.net.ssh is not None
    login = SshLogin(address=place.address, user=place.net.ssh.user, identity_ref=KEY_REF,
                     known_hosts_file=str(place.net.ssh.known_hosts))
    # the router as every promote process builds it from the settings
    router = build_resources(Settings(router_mode="adopted", router_runtime_api=str(team.admin),
                                      router_dir=str(tmp_path / "promote"), router_listen_host=place.address,
                                      router_host=login))["router"]
    assert isinstance(router, AdoptedHAProxyRouter) and router.ssh is not None
    try:
        assert router.missing(ENV) == []
        assert router.missing("shop") == [f"backend shop_{e}_{k}" for e in ("active", "preview")
                                          for k in ("http", "ws")]
        # what `promote inventory check` asks, with the inventory's router section naming the host
        section = Router(kind="haproxy", dir="unused", mode="adopted", runtime_api=str(team.admin), host=login,
                         listen_host=place.address, fronts={
                             env: RouterEntry(active_port=ACTIVE_PORT, preview_port=PREVIEW_PORT)
                             for env in (ENV, "shop")})
        problems = [str(p) for p in adopted_router_problems(section, router)]
        assert problems == [
            f"router.fronts.shop: the team's haproxy (runtime API {team.admin} on {place.address}) lacks what shop"
            " is switched through: backend shop_active_http, backend shop_active_ws, backend shop_preview_http,"
            " backend shop_preview_ws"]
    finally:
        router.close()

    # a socket path nothing listens on, on that host: one line naming the host and what it needs
    absent = AdoptedHAProxyRouter(work_dir=str(tmp_path / "other"), runtime_api=str(team.admin.parent / "none.sock"),
                                  ssh=place.login())
    try:
        with pytest.raises(RouterError) as caught:
            absent.missing(ENV)
    finally:
        absent.close()
    message = str(caught.value)
    assert "\n" not in message and "does not answer" in message and place.address in message, message
    assert "AllowTcpForwarding" in message

    # a host whose sshd forwards nothing (AllowTcpForwarding no, as the other test hosts): the same one line
    production = place.net["production"].address
    assert place.net.ssh is not None
    refused = AdoptedHAProxyRouter(work_dir=str(tmp_path / "refused"), runtime_api=str(team.admin), ssh=SshLoginConfig(
        address=production, user=place.net.ssh.user, identity_ref=KEY_REF,
        known_hosts_file=str(place.net.ssh.known_hosts)))
    try:
        with pytest.raises(RouterError) as caught:
            refused.start()
    finally:
        refused.close()
    message = str(caught.value)
    assert "\n" not in message and "does not answer" in message and production in message, message
    assert "AllowTcpForwarding yes or local" in message
