"""The preconditions asked of process hosts that are down, refuse their key, or have a full disk.

The layout of ``test_promotion_across_hosts`` (its own, built for this module): staging's and production's Odoo on
their hosts, the ops and environment databases on ``db``, the team's HAProxy on ``router``. Each fault is a real
one made on the host itself (its sshd stopped, its key changed in known_hosts, a small tmpfs under production's
data_dir in the host's own mount namespace), and ``promote preflight`` runs on ``worker`` as an operator there
would run it: every check still gives one line, the failed ones naming the host, and the exit code is 2 with no
traceback. Each fault is undone at the end of its test, and the last check is that the preflight passes again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from promote_pipeline.cli.sandbox import PROD, PROJECT, STAGING, USER

from .conftest import sshd_pid
from .test_promotion_across_hosts import Layout, layout  # noqa: F401  (the module's own layout fixture)

pytestmark = [pytest.mark.slow]


def _preflight(lay: Layout) -> tuple[int, dict[str, str], str]:
    """``promote preflight`` on the worker: its exit code, each check's line by name, and all it printed."""
    done, _ = lay.on_worker("preflight", PROJECT, "--staging", STAGING, "--prod", PROD, "--user", USER)
    lines: dict[str, str] = {}
    for line in done.stdout.splitlines():
        head, _, rest = line.partition(" ")
        if head in ("PASS", "FAIL", "SKIP"):
            name = rest.split(": ", 1)[0].split(". ", 1)[-1]
            lines[name] = line
    return done.returncode, lines, done.stdout + done.stderr


def _stop_sshd(lay: Layout, host: str) -> None:
    """The host's listening sshd stopped: no new SSH connection is accepted (what the promoter sees of a host that
    is down); the sessions already open and what they started, its Odoo included, go on."""
    pid = sshd_pid(lay.net, host)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)


def test_a_full_disk_on_productions_host_fails_the_disk_check_naming_that_host(layout: Layout) -> None:  # noqa: F811
    """A 4 MiB tmpfs under blue's data_dir, in the production host's mount namespace only (its files copied in):
    the promoter's own disk has room, production's host has not, and the check asks the host."""
    ops_db = layout.ops()
    blue = ops_db.active_deployment(PROD)
    assert blue is not None and blue.host == "production"
    pid = sshd_pid(layout.net, "production")
    data_dir = Path(blue.data_dir)
    small = Path(layout.box.root) / "prod-small-disk"
    small.mkdir()

    def on_host(*argv: str) -> None:
        subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *argv], check=True, capture_output=True, timeout=60)

    on_host("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(small))
    try:
        on_host("cp", "-a", f"{data_dir}/.", str(small))
        on_host("mount", "--bind", str(small), str(data_dir))
        try:
            code, lines, printed = _preflight(layout)
        finally:
            on_host("umount", "--lazy", str(data_dir))
    finally:
        on_host("umount", "--lazy", str(small))
        small.rmdir()
    assert code == 2, printed
    assert "Traceback" not in printed, printed
    disk = lines["sufficient_disk_space"]
    assert disk.startswith("FAIL "), disk
    assert f"production data dir on production {data_dir} has " in disk and " MiB free; " in disk, disk
    # the other checks were asked and passed: the full disk is the one thing wrong
    assert all(line.startswith("PASS ") for name, line in lines.items() if name != "sufficient_disk_space"), lines


def test_productions_host_refusing_its_key_fails_the_checks_that_ask_it(layout: Layout) -> None:  # noqa: F811
    """production's key in known_hosts replaced by another host's: every SSH call to production is refused, and
    the checks that ask it say so in one line each."""
    assert layout.net.ssh is not None
    known = layout.net.ssh.known_hosts
    saved = known.read_text()
    prod_address, staging_address = layout.net["production"].address, layout.net["staging"].address
    staging_key = next(ln.split(" ", 1)[1] for ln in saved.splitlines() if ln.startswith(f"{staging_address} "))
    changed = [ln for ln in saved.splitlines() if not ln.startswith(f"{prod_address} ")]
    known.write_text("\n".join([*changed, f"{prod_address} {staging_key}"]) + "\n")
    try:
        code, lines, printed = _preflight(layout)
    finally:
        known.write_text(saved)
    assert code == 2, printed
    assert "Traceback" not in printed, printed
    access = lines["production_accessible"]
    assert access.startswith("FAIL ") and "ssh to production" in access and "host key CHANGED" in access, access
    disk = lines["sufficient_disk_space"]
    assert disk.startswith("FAIL ") and "ssh to production" in disk, disk
    assert lines["staging_accessible"].startswith("PASS "), lines


def test_a_host_that_is_down_fails_the_checks_that_ask_it_then_passes_once_it_is_back(layout: Layout) -> None:  # noqa: F811
    """staging's sshd stopped (its Odoo goes on serving): staging_accessible says the snapshot could not read its
    filestore, before production is touched; then production's too. Restarted, the preflight passes."""
    _stop_sshd(layout, "staging")
    try:
        code, lines, printed = _preflight(layout)
        assert code == 2, printed
        assert "Traceback" not in printed, printed
        staging = lines["staging_accessible"]
        assert staging.startswith("FAIL ") and "staging filestore " in staging and "ssh to staging" in staging, \
            staging
        assert lines["production_accessible"].startswith("PASS "), lines

        _stop_sshd(layout, "production")
        code, lines, printed = _preflight(layout)
        assert code == 2 and "Traceback" not in printed, printed
        access = lines["production_accessible"]
        assert access.startswith("FAIL ") and "ssh to production" in access, access
        # the checks after it still ran (promote preflight runs every one) and each said its line
        assert len(lines) == 12 and not any(line.startswith("SKIP ") for line in lines.values()), lines
    finally:
        for host in ("staging", "production"):
            try:
                sshd_pid(layout.net, host)
            except AssertionError:
                layout.net.start_sshd(host)
    code, lines, printed = _preflight(layout)
    assert code == 0, printed
