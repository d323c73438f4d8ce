"""rollback_promotion on real runs: manual rollback within the window, idempotence, refusal once blue
is deleted, and the completion of a promotion whose worker was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from promote_pipeline.cli.runner import run_rollback
from promote_pipeline.cli.sandbox import PROD, Sandbox
from promote_pipeline.defs.resources import build_resources
from promote_pipeline.defs.sensors import dead_runs
from promote_pipeline.promotion import evidence_schema

pytestmark = pytest.mark.slow


def test_manual_rollback_of_a_success_then_idempotent_then_refused_after_cleanup(haproxy_box: Sandbox,
                                                                                 h: Any) -> None:
    box = haproxy_box
    blue = box.status()["serving"]
    code, outcome, message = h.promote()
    assert code == 0, message
    assert box.status()["serving"]["deployment"] != blue["deployment"]

    code, result, message = run_rollback(outcome.run_id, "customer reports", "ops-oncall", quiet=True)
    assert code == 0 and result and result["action"] == "rolled_back", message
    assert box.status()["serving"]["deployment"] == blue["deployment"]
    ops_db = box.resources()["ops_db"]
    assert ops_db.run(outcome.run_id).status == "rolled_back"
    rollback = json.loads((h.evidence(outcome) / "rollback.json").read_text())
    assert rollback["triggered"] is True and rollback["requested_by"] == "ops-oncall"
    assert rollback["green_database_kept"] is True
    assert [t.status for t in ops_db.tasks_for_run(outcome.run_id, "delete_backup")] == ["cancelled"]

    code, again, _ = run_rollback(outcome.run_id, "again", "ops-oncall", quiet=True)
    assert code == 0 and again and again["action"] == "verified" and again["safe"] is True
    assert box.status()["serving"]["deployment"] == blue["deployment"]

    # A second promotion, its window forced over, cleaned up: blue is gone, and rollback is refused.
    code, second, message = h.promote()
    assert code == 0, message
    h.ops_sql(ops_db, "UPDATE ops.scheduled_tasks SET execute_at = now() - interval '1 minute'"
                      " WHERE run_id = %s AND task_type = 'delete_backup'", (second.run_id,))
    assert subprocess.run([sys.executable, "-m", "promote_pipeline", "cleanup"], capture_output=True,
                          text=True).returncode == 0
    blue2 = ops_db.deployment(ops_db.run(second.run_id).metadata["blue_deployment_id"])
    assert blue2.state == "deleted"
    code, refused, message = run_rollback(second.run_id, "too late", "ops-oncall", quiet=True)
    assert code == 2 and refused is None and message and message.startswith("rollback refused: ") and \
        "has been deleted" in message  # a refusal: 2, as `window` and `recover` refuse


WORKER = """
import sys, time
from promote_pipeline.defs.resources import build_resources
ops_db = build_resources()["ops_db"]
lock = ops_db.try_lock_environment(sys.argv[1])
assert lock is not None
run_id = ops_db.create_run("proj_demo", sys.argv[1], "demo_admin", {
    "staging_env_id": "env_demo_staging", "blue_deployment_id": sys.argv[2], "rollback_window_hours": 1,
    "auto_rollback_on_failure": True}, None)
print(run_id, flush=True)
time.sleep(600)
"""


def test_a_killed_worker_is_found_dead_and_its_run_completed(haproxy_box: Sandbox, h: Any, tmp_path: Any) -> None:
    """A worker holding the lock is alive; SIGKILL releases the lock and the run shows as dead."""
    box = haproxy_box
    blue = box.resources()["ops_db"].active_deployment(PROD)
    proc = subprocess.Popen([sys.executable, "-c", WORKER, PROD, blue.deployment_id], stdout=subprocess.PIPE,
                            text=True, env=os.environ.copy())
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    ops_db = build_resources()["ops_db"]
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    ops_db.set_run_evidence_dir(run_id, str(evidence))
    try:
        assert run_id not in [r.run_id for r in dead_runs(ops_db)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while run_id not in [r.run_id for r in dead_runs(ops_db)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run_id in [r.run_id for r in dead_runs(ops_db)]
        code, result, message = run_rollback(run_id, "worker died", "test", quiet=True)
        assert code == 0, message
        assert result and result["action"] == "completed_dead_run"
        assert ops_db.run(run_id).status in ("failed", "rolled_back")
        assert run_id not in [r.run_id for r in dead_runs(ops_db)]
        assert sorted(p.name for p in evidence.iterdir() if not p.name.startswith(".")) == sorted(
            h.evidence_files())
        # What the rollback job wrote for the dead run holds to the evidence schema (the run died in step 1).
        evidence_schema.validate_folder(evidence, run_id, ops_db.run(run_id).status, dead_run=True)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_rollback_of_a_promotion_a_later_one_replaced_is_refused(haproxy_box: Sandbox, h: Any) -> None:
    code, first, message = h.promote()
    assert code == 0, message
    code, second, message = h.promote()
    assert code == 0, message
    live = haproxy_box.status()["serving"]["deployment"]
    code, result, message = run_rollback(first.run_id, "wrong one", "ops-oncall", quiet=True)
    assert code == 2 and result is None and message and "a later promotion replaced it" in message
    assert haproxy_box.status()["serving"]["deployment"] == live
