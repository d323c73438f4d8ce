"""Stopping a running promotion: SIGINT or SIGTERM to `promote run`, or `promote abort` from another process,
rolls it back (traffic on blue, green stopped, run rolled_back, evidence complete) with one line and exit 1,
never a traceback (real sandbox, real `promote` processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from promote_pipeline.cli import sandbox as sandbox_mod
from promote_pipeline.cli.sandbox import PROD, Sandbox
from promote_pipeline.promotion.evidence import Evidence
from resources.ops_db import RunRecord

pytestmark = pytest.mark.slow


class Run:
    """A `promote run` process whose output is read as it comes (so a test can wait on a line of it)."""

    def __init__(self, stability_seconds: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "promote_pipeline", "run", "--project", sandbox_mod.PROJECT, "--staging",
             sandbox_mod.STAGING, "--prod", PROD, "--user", sandbox_mod.USER,
             "--stability-seconds", str(stability_seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def finish(self, timeout: float = 300) -> tuple[str, str]:
        """Wait for the process and its output; (stdout, stderr)."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            for t in self._readers:
                t.join(timeout=60)
        return "".join(self.out), "".join(self.err)


def _in_stability_window(box: Sandbox, run: Run, timeout: float = 600) -> RunRecord:
    """The run has cut over (ops database) and its monitor_stability step has started (its own output line):
    a condition, not a pause after the cutover that a loaded machine may not have got past."""
    ops_db = box.resources()["ops_db"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.proc.poll() is None, run.finish()
        row = ops_db.running_promotion_after_cutover()
        if row is not None and any("monitor_stability ..." in line for line in list(run.out)):
            return row
        time.sleep(0.1)
    run.proc.kill()
    raise AssertionError(f"the promotion never reached monitor_stability: {run.finish()}")


def _assert_rolled_back(box: Sandbox, run_id: str, blue: str) -> None:
    res = box.resources()
    row = res["ops_db"].run(run_id)
    assert row is not None and row.status == "rolled_back"
    assert res["router"].served_upstream(PROD).name == blue  # the router's word, not routes.json
    greens = res["ops_db"].deployments_created_by(run_id)
    assert greens and all(not res["odoo_host"].is_alive(g.pid) and g.state in ("retired", "deleted") for g in greens)
    assert Evidence(row.evidence_dir).missing() == []


def _blue(box: Sandbox) -> str:
    live = box.resources()["ops_db"].active_deployment(PROD)
    assert live is not None
    return str(live.deployment_id)


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_stability_window_rolls_back_without_a_traceback(haproxy_box: Sandbox,
                                                                             signo: int) -> None:
    blue = _blue(haproxy_box)
    proc = Run(stability_seconds=600)
    run = _in_stability_window(haproxy_box, proc)
    proc.proc.send_signal(signo)
    out, err = proc.finish()
    assert proc.proc.returncode == 1, (out, err)
    assert "Traceback" not in out + err and "IndexError" not in err
    assert f"{signal.Signals(signo).name} received: aborting the promotion" in err
    assert f"rolled_back: run {run.run_id}" in out
    _assert_rolled_back(haproxy_box, run.run_id, blue)


def test_promote_abort_stops_a_promotion_running_in_another_process(haproxy_box: Sandbox, h: Any) -> None:
    blue = _blue(haproxy_box)
    proc = Run(stability_seconds=600)  # the abort, not the window's end, must be what stops it
    run = _in_stability_window(haproxy_box, proc)
    abort = subprocess.run([sys.executable, "-m", "promote_pipeline", "abort", run.run_id, "--user", sandbox_mod.USER,
                            "--reason", "test"], capture_output=True, text=True, timeout=300)
    assert abort.returncode == 0, (abort.stdout, abort.stderr)
    assert abort.stdout.strip() == f"rolled_back: run {run.run_id} aborted by {sandbox_mod.USER}"
    out, err = proc.finish()
    assert proc.proc.returncode == 1 and "Traceback" not in out + err
    _assert_rolled_back(haproxy_box, run.run_id, blue)
    events = h.ops_sql(haproxy_box.resources()["ops_db"], "SELECT message FROM ops.run_events WHERE run_id = %s"
                       " AND step = 'abort'", (run.run_id,))
    assert [e["message"] for e in events] == [f"abort requested by {sandbox_mod.USER}: test"]


def test_promote_abort_refuses_without_permission_or_a_running_run(haproxy_box: Sandbox) -> None:
    def abort(run_id: str, user: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "promote_pipeline", "abort", run_id, "--user", user],
                              capture_output=True, text=True, timeout=60)

    missing = abort("no_such_run", sandbox_mod.USER)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "abort refused: run_exists: no promotion run no_such_run"
    done = haproxy_box.resources()["ops_db"].latest_run(PROD, ["promote"])
    if done is not None and done.status != "running":
        refused = abort(done.run_id, "nobody_at_all")
        assert refused.returncode == 2
        assert "abort refused: permission: user nobody_at_all lacks 'promote'" in refused.stderr
        finished = abort(done.run_id, sandbox_mod.USER)
        assert finished.returncode == 2 and f"abort refused: run_running: run {done.run_id} is" in finished.stderr
