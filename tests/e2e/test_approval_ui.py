"""Approving from the UI, end to end on a real webserver and daemon (tests/e2e/conftest.py): `promote launch
--require-approval` submits a promotion and follows it; while it waits, its Dagster run carries the tag
``promote/awaiting_approval=true`` and its log the reminder line; the ``approve_promotion`` job, launched the way the
launchpad launches a job (GraphQL ``launchPipelineExecution`` with its run config), approves it, and the promotion
cuts over and succeeds. A refused approval from the UI is a failed run whose message is one line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.cli import launch
from promote_pipeline.cli.sandbox import PROD, PROJECT, STAGING, USER

pytestmark = pytest.mark.slow

PROMOTE = Path(sys.executable).parent / "promote"

_LAUNCH = """mutation Launch($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""


def _launch_from_launchpad(ui: Any, job: str, config: dict[str, Any]) -> str:
    """What the launchpad's Launch button sends: the job's selector and the run config typed in the editor."""
    result = ui.graphql(_LAUNCH, {"params": {
        "selector": {"repositoryLocationName": launch.LOCATION, "repositoryName": "__repository__",
                     "pipelineName": job},
        "runConfigData": config, "mode": "default"}})["launchPipelineExecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id: str = result["run"]["runId"]
    return run_id


def _ended(ui: Any, run_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = launch.run_info(run_id, ui.url)
        if info["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return info
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not end: {launch.run_info(run_id, ui.url)}")


def _approve_config(run_id: str, user: str) -> dict[str, Any]:
    return {"ops": {"approve_waiting_promotion": {"config": {"run_id": run_id, "user_id": user}}}}


def test_a_promotion_awaiting_approval_is_approved_from_the_ui(dagster_ui: Any) -> None:
    proc = subprocess.Popen([str(PROMOTE), "launch", "--project", PROJECT, "--staging", STAGING, "--prod", PROD,
                             "--user", USER, "--stability-seconds", "1", "--require-approval", "--url", dagster_ui.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dagster_ui.env)
    out: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        ops_db = dagster_ui.box.resources()["ops_db"]
        deadline = time.monotonic() + 600
        dagster_run_id = row = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (out, proc.stderr.read() if proc.stderr else "")
            submitted = [line for line in list(out) if "submitted: Dagster run " in line]
            if submitted and dagster_run_id is None:
                dagster_run_id = submitted[0].split("submitted: Dagster run ")[1].split()[0]
            row = ops_db.promote_run_for_dagster_run(dagster_run_id) if dagster_run_id else None
            if row is not None and (ops_db.approval_gate(row.run_id) or {}).get("state") == "waiting":
                break
            time.sleep(0.5)
        assert row is not None and dagster_run_id is not None, out

        # The wait, as the UI shows it: the run's tag, and the reminder in its log.
        assert launch.run_info(dagster_run_id, dagster_ui.url)["tags"]["promote/awaiting_approval"] == "true"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            messages = [e.get("message", "") for e in launch.events(dagster_run_id, dagster_ui.url)[0]]
            if any(f"awaiting approval: promote approve {row.run_id} --user USER" in m for m in messages):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the reminder line never reached the run's log")

        # A user without 'promote': the approve run fails with one line, nothing recorded, the promotion waits on.
        refused = _ended(dagster_ui, _launch_from_launchpad(dagster_ui, "approve_promotion",
                                                            _approve_config(row.run_id, "nobody_at_all")))
        assert refused["status"] == "FAILURE"
        failure = launch.report(refused["runId"], dagster_ui.url).error or ""
        assert failure.startswith("approval refused: permission: user nobody_at_all lacks 'promote'"), failure
        assert "\n" not in failure.strip()
        assert (ops_db.approval_gate(row.run_id) or {})["state"] == "waiting" and ops_db.approval(row.run_id) is None

        approve = _ended(dagster_ui, _launch_from_launchpad(dagster_ui, "approve_promotion",
                                                            _approve_config(row.run_id, USER)))
        assert approve["status"] == "SUCCESS", launch.report(approve["runId"], dagster_ui.url).error
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=60)
    text = "".join(out)
    assert proc.returncode == 0, text
    assert f"awaiting approval: promote approve {row.run_id} --user USER" in text
    assert f"approved by {USER} after " in text and f"success: run {row.run_id}" in text
    promotion = _ended(dagster_ui, dagster_run_id)
    assert promotion["status"] == "SUCCESS"
    assert promotion["tags"]["promote/awaiting_approval"] == "false"
    assert promotion["tags"]["promote/approval"] == f"approved by {USER}"
    approval = ops_db.approval(row.run_id)
    assert approval is not None and approval.approved_by == USER
    smoke = json.loads((Path(str(ops_db.run(row.run_id).evidence_dir)) / "smoke_tests.json").read_text())
    assert smoke["approval"]["state"] == "approved" and smoke["approval"]["approved_by"] == USER
