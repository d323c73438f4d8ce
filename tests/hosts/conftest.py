"""The test hosts (resources/netns_hosts.py): network namespaces on a private bridge, each with its own sshd.

Built once per test module (a few seconds) and removed after it, whatever the tests did. Skipped, saying why,
where namespaces cannot be made (not root, a container that forbids them) or sshd is not installed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.netns_hosts import SSHD, HostNetwork, clean_stale, prefix_for, unavailable_reason


def skip_without_namespaces() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"test hosts need network namespaces: {reason}")
    if not Path(SSHD).exists():
        pytest.skip(f"test hosts need the OpenSSH server ({SSHD}): run `make deps`")


@pytest.fixture(scope="module")
def host_network(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostNetwork]:
    """db, staging, production, router and worker, each with an sshd; names unique to this process and module."""
    skip_without_namespaces()
    clean_stale()  # what a killed run left (its process gone); never another live run's
    prefix = prefix_for(f"{os.getpid()}:{request.module.__name__}")
    net = HostNetwork.build(tmp_path_factory.mktemp("hosts"), prefix=prefix)
    try:
        yield net
    finally:
        net.teardown()


@pytest.fixture
def netns_required() -> None:
    """For a test that builds hosts of its own."""
    skip_without_namespaces()


def sshd_pid(net: HostNetwork, host: str) -> int:
    """The listening sshd of ``host`` (``sshd -D``). ``ip netns exec`` gave it a mount namespace of its own (a slave
    of the machine's: nothing mounted in it comes back out), which every SSH session and every process a session
    starts shares: what is mounted there (``nsenter -t <pid> -m``) only that host sees."""
    listed = subprocess.run(["ip", "netns", "pids", net[host].namespace], capture_output=True, text=True, check=True)
    for pid in listed.stdout.split():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        # sshd may rewrite its title ("sshd: /usr/sbin/sshd -D ... [listener]"); a session's never says -D.
        if b"sshd" in raw and b" -D" in raw.replace(b"\0", b" "):
            return int(pid)
    raise AssertionError(f"no sshd in {host}")
