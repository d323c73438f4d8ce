"""Test hosts as network namespaces: they reach each other on their private addresses, each answers SSH with the
generated key from inside its own namespace, an unknown or changed host key is refused, and teardown leaves
nothing of its prefix."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from resources import netns_hosts
from resources.netns_hosts import DEFAULT_HOSTS, HostNetwork, leftovers, prefix_for, teardown_prefix

# A one-shot TCP server: says which namespace it runs in to the first client, then exits.
LISTENER = """
import socket, subprocess, sys
me = subprocess.run(["ip", "netns", "identify", str(__import__("os").getpid())], capture_output=True,
                    text=True).stdout.strip()
with socket.create_server((sys.argv[1], int(sys.argv[2]))) as srv:
    conn, _ = srv.accept()
    with conn:
        conn.sendall(f"hello from {me}".encode())
"""
CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 20
while True:
    try:
        sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
with sock:
    print(sock.recv(100).decode())
"""


def _exchange(net: HostNetwork, server: str, client: str, bind: str, connect: str, port: int = 7070) -> str:
    net.spawn(server, [sys.executable, "-c", LISTENER, bind, str(port)], net.folder / f"listener-{server}.log")
    done = net.run(client, [sys.executable, "-c", CLIENT, connect, str(port)])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_hosts_reach_each_other_on_their_private_addresses(host_network: HostNetwork) -> None:
    staging, worker = host_network["staging"], host_network["worker"]
    said = _exchange(host_network, "worker", "staging", worker.address, worker.address)
    assert said == f"hello from {worker.namespace}"
    # The other way round, and the root namespace (the promoter's place) reaches a host too.
    assert _exchange(host_network, "staging", "worker", staging.address, staging.address, 7071) == \
        f"hello from {staging.namespace}"
    host_network.spawn("db", [sys.executable, "-c", LISTENER, host_network["db"].address, "7072"],
                       host_network.folder / "listener-root.log")
    done = subprocess.run([sys.executable, "-c", CLIENT, host_network["db"].address, "7072"], capture_output=True,
                          text=True, timeout=30)
    assert done.stdout.strip() == f"hello from {host_network['db'].namespace}", done.stderr


def test_each_host_has_its_own_loopback(host_network: HostNetwork) -> None:
    # A server on production's 127.0.0.1 answers a client on production's 127.0.0.1, not one on router's.
    assert _exchange(host_network, "production", "production", "127.0.0.1", "127.0.0.1", 7073) == \
        f"hello from {host_network['production'].namespace}"
    refused = host_network.run("router", [sys.executable, "-c",
                                          "import socket; socket.create_connection(('127.0.0.1', 22), timeout=2)"])
    assert refused.returncode != 0 and "ConnectionRefused" in refused.stderr


def test_the_subnet_overlaps_nothing_else_the_machine_routes(host_network: HostNetwork) -> None:
    others = netns_hosts.used_networks(ignore_device=host_network.bridge)
    assert not any(host_network.subnet.overlaps(n) for n in others), (host_network.subnet, others)
    names = [host_network.bridge, *(h.veth for h in host_network.hosts.values())]
    assert all(len(name) <= netns_hosts.IFNAMSIZ for name in names), names


@pytest.mark.parametrize("host", DEFAULT_HOSTS)
def test_ssh_with_the_generated_key_lands_in_that_hosts_namespace(host_network: HostNetwork, host: str) -> None:
    done = subprocess.run(host_network.ssh_argv(host, "ip netns identify $$"), capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == host_network[host].namespace


def test_an_unknown_host_key_is_refused(host_network: HostNetwork, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    done = subprocess.run(host_network.ssh_argv("production", "true", known_hosts=empty), capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 255
    assert "Host key verification failed" in done.stderr


def test_a_changed_host_key_is_refused(host_network: HostNetwork, tmp_path: Path) -> None:
    # production's address with staging's key: what a replaced (or impersonated) machine looks like.
    assert host_network.ssh is not None
    keys = {line.split()[0]: line.split(" ", 1)[1] for line in host_network.ssh.known_hosts.read_text().splitlines()}
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{host_network['production'].address} {keys[host_network['staging'].address]}\n")
    done = subprocess.run(host_network.ssh_argv("production", "true", known_hosts=wrong), capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in done.stderr


def test_client_and_host_keys_are_owner_only(host_network: HostNetwork) -> None:
    assert host_network.ssh is not None
    sshd = host_network.folder / "hosts" / "production" / "sshd"
    for path in (host_network.ssh.identity_file, host_network.ssh.known_hosts, sshd / "ssh_host_ed25519_key",
                 sshd / "sshd_config"):
        assert path.stat().st_mode & 0o077 == 0, path
    for folder in (host_network.folder, host_network.ssh.identity_file.parent, sshd):
        assert folder.stat().st_mode & 0o077 == 0, folder


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _pids_alive(pids: list[int]) -> list[int]:
    return [p for p in pids if netns_hosts._alive(p)]


def test_teardown_removes_every_namespace_veth_bridge_and_process(netns_required: None, tmp_path: Path) -> None:
    prefix = prefix_for(f"{os.getpid()}:teardown")
    net = HostNetwork.build(tmp_path / "hosts", names=("db", "production"), prefix=prefix, ssh_hosts=("production",))
    try:
        sleeper = net.spawn("db", ["sleep", "600"], tmp_path / "sleep.log")
        ssh_side = subprocess.Popen(net.ssh_argv("production", "sleep 600"), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def in_namespaces() -> list[int]:
            return [int(p) for h in net.hosts.values() for p in netns_hosts.ip("netns", "pids", h.namespace).split()]

        def session_runs() -> bool:
            return any(_cmdline(p) == b"sleep\x00600\x00" and p != sleeper for p in in_namespaces())

        assert wait_for(session_runs, 30), "the SSH session's command did not start"
        started = in_namespaces()
        assert sleeper in started and len(started) >= 3  # the sleeper, sshd and its session
        assert leftovers(prefix)
    finally:
        assert net.teardown() == []
    assert _pids_alive(started) == []
    assert ssh_side.wait(timeout=30) != 0  # its session went with production's sshd
    assert net.teardown() == []  # again: nothing to do, no error


def test_leftovers_of_a_prefix_are_cleaned(netns_required: None) -> None:
    # What a killed test run leaves: a namespace with a process in it, a veth, a bridge.
    prefix = prefix_for(f"{os.getpid()}:leftovers")
    try:
        netns_hosts.ip("netns", "add", f"{prefix}-db")
        netns_hosts.ip("link", "add", f"{prefix}br", "type", "bridge")
        netns_hosts.ip("link", "add", f"{prefix}v0", "type", "veth", "peer", "name", f"{prefix}p0")
        stray = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-db", "sleep", "600"], start_new_session=True)
        assert len(leftovers(prefix)) == 4  # the namespace, the bridge and both veth ends
    finally:
        teardown_prefix(prefix)
    assert leftovers(prefix) == []
    assert stray.wait(timeout=30) != 0


def test_a_killed_builders_network_is_cleaned_and_a_live_ones_is_not(netns_required: None, tmp_path: Path) -> None:
    # A child process builds a network and is killed before tearing it down.
    script = ("import sys, os; from pathlib import Path; from resources.netns_hosts import HostNetwork, prefix_for;"
              "net = HostNetwork.build(Path(sys.argv[1]), names=('db',), prefix=prefix_for('killed'),"
              " ssh_hosts=()); print(net.prefix, flush=True); os.kill(os.getpid(), 9)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "killed")], capture_output=True, text=True,
                          timeout=60)
    dead = done.stdout.strip()
    assert dead and leftovers(dead), done.stderr
    mine = HostNetwork.build(tmp_path / "live", names=("db",), prefix=prefix_for(f"{os.getpid()}:live"),
                             ssh_hosts=())
    try:
        assert dead in netns_hosts.clean_stale()
        assert leftovers(dead) == []
        assert leftovers(mine.prefix)  # this process is alive: its network stays
    finally:
        assert mine.teardown() == []
