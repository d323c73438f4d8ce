"""The test hosts (resources/netns_hosts.py): network namespaces on a private bridge, each with its own sshd.

Built once per test module (a few seconds) and removed after it, whatever the tests did. Skipped, saying why,
where namespaces cannot be made (not root, a container that forbids them) or sshd is not installed.
"""

from __future__ import annotations

import os
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
