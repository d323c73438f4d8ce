"""The approval gate on a real sandbox promotion (`promote run --require-approval` in its own process): it waits after
the smoke tests with green on the preview entry point and traffic on blue, holding its environment lock so the
dead-run detector leaves it alone, until `promote approve` (it then cuts over and succeeds, the approval recorded with
who approved), `promote abort` (rolled back) or its timeout (rolled back, "approval timed out after N s"). Refusals
are one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import SkipReason, build_sensor_context

from promote_pipeline.cli import main as cli
from promote_pipeline.cli import sandbox as sandbox_mod
from promote_pipeline.cli.sandbox import PROD, Sandbox
from promote_pipeline.defs import sensors
from promote_pipeline.promotion.evidence_schema import validate_folder
from resources.ops_db import OpsDatabase, RunRecord

pytestmark = pytest.mark.slow

USER = sandbox_mod.USER


class Run:
    """A `promote run` process whose output is read as it comes."""

    def __init__(self, *extra: str, stability_seconds: int = 1) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "promote_pipeline", "run", "--project", sandbox_mod.PROJECT, "--staging",
             sandbox_mod.STAGING, "--prod", PROD, "--user", USER, "--stability-seconds", str(stability_seconds),
             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
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

    def finish(self, timeout: float = 600) -> tuple[str, str]:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            for t in self._readers:
                t.join(timeout=60)
        return "".join(self.out), "".join(self.err)


def promote(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "promote_pipeline", *args], capture_output=True, text=True,
                          timeout=timeout)


def _awaiting(box: Sandbox, run: Run, timeout: float = 600) -> RunRecord:
    """The run's gate is open (the ops database says waiting): a condition, not a pause."""
    ops_db = box.resources()["ops_db"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.proc.poll() is None, run.finish()
        row = ops_db.running_promotion(PROD)
        if row is not None and (ops_db.approval_gate(row.run_id) or {}).get("state") == "waiting":
            return row
        time.sleep(0.2)
    run.proc.kill()
    raise AssertionError(f"the promotion never awaited approval: {run.finish()}")


def _blue(box: Sandbox) -> str:
    live = box.resources()["ops_db"].active_deployment(PROD)
    assert live is not None
    return str(live.deployment_id)


def _through(url: str) -> str:
    """The deployment answering at ``url`` (the router's X-Promote-Upstream header on a real request)."""
    resp = httpx.post(f"{url}/web/webclient/version_info", json={"jsonrpc": "2.0", "method": "call", "params": {},
                                                                 "id": 1}, timeout=30)
    assert resp.status_code == 200
    return resp.headers["X-Promote-Upstream"]


def _assert_waiting_safely(box: Sandbox, row: RunRecord, blue: str) -> None:
    """While it waits: traffic on blue, green on the preview entry point, the lock held, not taken for dead."""
    res = box.resources()
    ops_db: OpsDatabase = res["ops_db"]
    [green] = ops_db.deployments_created_by(row.run_id, states=("active", "standby"))
    state = res["router"].state(PROD)
    assert res["router"].served_upstream(PROD).name == blue
    assert _through(state.active_url) == blue and _through(state.preview_url) == green.deployment_id
    assert ops_db.lock_holder_pid(PROD) is not None
    assert row.run_id not in [r.run_id for r in sensors.dead_runs(ops_db)]
    # The detector, evaluated as the daemon does, with a cursor that would declare the run dead at once if it
    # were a suspect (first seen long past the grace period).
    context = build_sensor_context(cursor=json.dumps({row.run_id: 0}), resources={"ops_db": ops_db})
    result = sensors.detect_dead_promotions(context)
    assert isinstance(result, SkipReason) and "no dead promotion" in str(result.skip_message), result


def _folder(row: RunRecord | None) -> Path:
    assert row is not None and row.evidence_dir
    return Path(row.evidence_dir)


def _events(h: Any, box: Sandbox, run_id: str, step: str) -> list[dict[str, Any]]:
    return h.ops_sql(box.resources()["ops_db"], "SELECT message, details, at FROM ops.run_events WHERE run_id = %s"
                     " AND step = %s ORDER BY event_id", (run_id, step))


def test_an_approved_promotion_waits_then_cuts_over_and_succeeds(haproxy_box: Sandbox, h: Any,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    blue = _blue(haproxy_box)
    run = Run("--require-approval", stability_seconds=20)
    row = _awaiting(haproxy_box, run)
    _assert_waiting_safely(haproxy_box, row, blue)

    # Refused, one line, exit 2, nothing recorded: a user without 'promote', and an unknown run.
    refused = promote("approve", row.run_id, "--user", "nobody_at_all")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (f"approval refused: permission: user nobody_at_all lacks 'promote' on project"
                              f" {sandbox_mod.PROJECT}\n")
    missing = promote("approve", "run_nope", "--user", USER)
    assert missing.returncode == 2 and missing.stderr == "approval refused: run_exists: no promotion run run_nope\n"
    assert _events(h, haproxy_box, row.run_id, "approve") == []

    # Approved by the Dagster run id (the one the UI shows) as well as the ops run id would do.
    assert row.dagster_run_id
    approved = promote("approve", row.dagster_run_id, "--user", USER)
    assert approved.returncode == 0, (approved.stdout, approved.stderr)
    assert approved.stdout.startswith(f"approved: run {row.run_id} by {USER}; it cuts over now")
    # Approving again: the gate is closed (the run is cutting over or watching green).
    assert cli.main(["approve", row.run_id, "--user", USER]) == 2
    again = capsys.readouterr()
    assert again.err.count("\n") == 1 and again.err.startswith("approval refused: ")
    assert f"run {row.run_id} is not awaiting approval (it was approved already)" in again.err \
        or f"run_running: run {row.run_id} is success, not running" in again.err, again.err

    out, err = run.finish()
    assert run.proc.returncode == 0, (out, err)
    assert f"awaiting approval: promote approve {row.run_id} --user USER (times out in 1h 0m)" in out
    assert f"approved by {USER} after " in out and "Traceback" not in out + err
    ops_db = haproxy_box.resources()["ops_db"]
    final = ops_db.run(row.run_id)
    assert final is not None and final.status == "success"
    [green] = ops_db.deployments_created_by(row.run_id)
    assert haproxy_box.resources()["router"].served_upstream(PROD).name == green.deployment_id
    [event] = _events(h, haproxy_box, row.run_id, "approve")
    assert event["message"] == f"approved by {USER}" and event["details"] == {"approved_by": USER}
    assert [e["message"] for e in _events(h, haproxy_box, row.run_id, "awaiting_approval")][-1].startswith(
        f"approved by {USER} after ")
    validate_folder(_folder(final), row.run_id, "success")
    gate = json.loads((_folder(final) / "smoke_tests.json").read_text())["approval"]
    assert gate["state"] == "approved" and gate["approved_by"] == USER and gate["required_by"] == "flag"
    assert gate["preview_url"] == haproxy_box.resources()["router"].state(PROD).preview_url


def test_an_abort_while_awaiting_approval_rolls_back(haproxy_box: Sandbox, h: Any) -> None:
    blue = _blue(haproxy_box)
    run = Run("--require-approval")
    row = _awaiting(haproxy_box, run)
    aborted = promote("abort", row.run_id, "--user", USER, "--reason", "not today")
    assert aborted.returncode == 0, (aborted.stdout, aborted.stderr)
    assert aborted.stdout.strip() == f"rolled_back: run {row.run_id} aborted by {USER}"
    out, err = run.finish()
    assert run.proc.returncode == 1 and "Traceback" not in out + err
    assert f"smoke_test_green failed: aborted by {USER}: not today; the run is rolled_back" in out + err
    _assert_rolled_back(haproxy_box, h, row, blue)
    assert (haproxy_box.resources()["ops_db"].approval_gate(row.run_id) or {})["state"] == "aborted"
    late = promote("approve", row.run_id, "--user", USER)
    assert late.returncode == 2
    assert late.stderr == f"approval refused: run_running: run {row.run_id} is rolled_back, not running\n"


def test_the_environment_requires_approval_and_the_timeout_rolls_back(haproxy_box: Sandbox, h: Any) -> None:
    """No --require-approval: production's inventory says so. A 3 s timeout, nobody approves: rolled back."""
    ops_db = haproxy_box.resources()["ops_db"]
    blue = _blue(haproxy_box)
    h.ops_sql(ops_db, "UPDATE ops.environments SET require_approval = true WHERE environment_id = %s", (PROD,))
    try:
        run = Run("--approval-timeout", "3")
        out, err = run.finish()
    finally:
        h.ops_sql(ops_db, "UPDATE ops.environments SET require_approval = false WHERE environment_id = %s", (PROD,))
    assert run.proc.returncode == 1, (out, err)
    assert "smoke_test_green failed: approval timed out after 3 s; the run is rolled_back" in out + err
    assert "Traceback" not in out + err
    row = ops_db.latest_run(PROD, ["promote"])
    assert row is not None and row.metadata["require_approval"] is True
    _assert_rolled_back(haproxy_box, h, row, blue)
    folder = _folder(ops_db.run(row.run_id))
    rollback = json.loads((folder / "rollback.json").read_text())
    assert rollback["failed_step"] == "smoke_test_green" and "approval timed out after 3 s" in rollback["reason"]
    gate = json.loads((folder / "smoke_tests.json").read_text())["approval"]
    assert gate["state"] == "timed_out" and gate["required_by"] == "environment" and gate["timeout_seconds"] == 3
    assert json.loads((folder / "inputs.json").read_text())["require_approval"] is True


def _assert_rolled_back(box: Sandbox, h: Any, row: RunRecord, blue: str) -> None:
    res = box.resources()
    final = res["ops_db"].run(row.run_id)
    assert final is not None and final.status == "rolled_back"
    assert res["router"].served_upstream(PROD).name == blue == _through(res["router"].state(PROD).active_url)
    greens = res["ops_db"].deployments_created_by(row.run_id)
    assert greens and all(not res["odoo_host"].is_alive(g.pid) for g in greens)
    assert res["router"].state(PROD).preview.name == blue  # the preview entry point no longer names a stopped green
    validate_folder(_folder(final), row.run_id, "rolled_back")


def test_ctrl_c_while_awaiting_approval_rolls_back(haproxy_box: Sandbox, h: Any) -> None:
    """The operator who started the run changes their mind at its terminal: Ctrl-C ends the wait within a poll."""
    blue = _blue(haproxy_box)
    run = Run("--require-approval")
    row = _awaiting(haproxy_box, run)
    run.proc.send_signal(signal.SIGINT)
    out, err = run.finish()
    assert run.proc.returncode == 1 and "Traceback" not in out + err, (out, err)
    assert "SIGINT received: aborting the promotion" in err
    _assert_rolled_back(haproxy_box, h, row, blue)
    assert (haproxy_box.resources()["ops_db"].approval_gate(row.run_id) or {})["state"] == "aborted"
