"""scripts/install_system_deps.sh waits for the dpkg lock that another apt-get holds instead of failing at once."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_system_deps.sh"


def test_every_apt_get_call_waits_for_the_dpkg_lock(tmp_path: Path) -> None:
    # A PATH with none of the tools, so the script installs; apt-get and service are stand-ins that
    # record their arguments (apt-get refuses, as the real one does on a held lock, unless told to wait).
    calls = tmp_path / "calls"
    (tmp_path / "apt-get").write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *DPkg::Lock::Timeout=*) exit 0;; esac\n'
        'echo "E: Could not get lock /var/lib/dpkg/lock-frontend" >&2\nexit 100\n')
    (tmp_path / "service").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for name in ("apt-get", "service", "sudo"):
        (tmp_path / name).chmod(0o755)
    for tool in ("id", "sh", "flock"):
        found = shutil.which(tool)
        assert found, tool
        (tmp_path / tool).symlink_to(found)
    bash = shutil.which("bash")
    assert bash
    done = subprocess.run([bash, str(SCRIPT)], env={**os.environ, "PATH": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 2 and all("-o DPkg::Lock::Timeout=300" in line for line in lines), lines


def test_two_installations_at_once_take_turns(tmp_path: Path) -> None:
    # apt-get update fails at once on its lists lock whatever DPkg::Lock::Timeout says (apt 2.6): a stand-in
    # apt-get that fails while another one runs, and two copies of the script started together.
    busy, calls = tmp_path / "apt-running", tmp_path / "calls"
    (tmp_path / "apt-get").write_text(
        f'#!/bin/sh\nif [ -e {busy} ]; then echo "E: Could not get lock /var/lib/apt/lists/lock" >&2; exit 100; fi\n'
        f'touch {busy}; echo "$*" >> {calls}; sleep 1; rm -f {busy}\n')
    (tmp_path / "service").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for name in ("apt-get", "service", "sudo"):
        (tmp_path / name).chmod(0o755)
    for tool in ("id", "sh", "flock", "touch", "rm", "sleep"):
        found = shutil.which(tool)
        assert found, tool
        (tmp_path / tool).symlink_to(found)
    bash = shutil.which("bash")
    assert bash
    env = {**os.environ, "PATH": str(tmp_path)}
    both = [subprocess.Popen([bash, str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in both]
    assert all(rc == 0 for rc, _ in results), results
    assert len(calls.read_text().splitlines()) == 4  # update and install, by each in turn
