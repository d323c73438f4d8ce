"""rollback_promotion on real runs: manual rollback within the window, idempotence, refusal once blue
is deleted, and the completion of a promotion whose worker was killed after its cutover."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.cli.runner import run_rollback
from promote_pipeline.cli.sandbox import PROD, PROJECT, STAGING, USER, Sandbox
from promote_pipeline.defs.sensors import dead_runs
from promote_pipeline.promotion import evidence_schema
from promote_pipeline.promotion.services import upstream

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


def test_a_worker_killed_after_cutover_is_found_dead_and_rolled_back(haproxy_box: Sandbox, h: Any,
                                                                    tmp_path: Any) -> None:
    """A real promotion (``promote run`` in its own process) cuts over, then its process is SIGKILLed in the
    stability window: the run shows as dead once its lock is gone, and completing it rolls it back: the router
    itself serves blue again, green is stopped, the run is ``rolled_back`` (not merely ``failed``), and the
    evidence is complete."""
    box = haproxy_box
    res = box.resources()
    ops_db, router, host = res["ops_db"], res["router"], res["odoo_host"]
    blue_row = ops_db.deployment(box.status()["serving"]["deployment"])
    assert blue_row is not None
    blue = upstream(blue_row, "blue")
    log = tmp_path / "promote-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "promote_pipeline", "run", "--project", PROJECT,
                                 "--staging", STAGING, "--prod", PROD, "--user", USER, "--stability-seconds", "900"],
                                stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 600
        row = None
        while row is None and proc.poll() is None and time.monotonic() < deadline:
            row = ops_db.running_promotion_after_cutover()
            if row is None:
                time.sleep(0.1)
        assert row is not None, f"the promotion never reached its stability window: {log.read_text()[-3000:]}"
        assert int(row.metadata["worker_pid"]) == proc.pid
        [green] = ops_db.deployments_created_by(row.run_id)
        assert router.serves(PROD, upstream(green, "green"))  # the router itself cut over
        assert row.run_id not in [r.run_id for r in dead_runs(ops_db)]  # alive: it holds the lock

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 120  # PostgreSQL ends the dead session's lock when it sees the socket close
        while row.run_id not in [r.run_id for r in dead_runs(ops_db)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert row.run_id in [r.run_id for r in dead_runs(ops_db)]
        assert router.serves(PROD, upstream(green, "green"))  # nothing moved traffic yet

        code, result, message = run_rollback(row.run_id, "worker died", "test", quiet=True)
        assert code == 0, message
        assert result == {"action": "completed_dead_run", "failed_step": "monitor_stability",
                          "status": "rolled_back"}, result
        assert ops_db.run(row.run_id).status == "rolled_back"
        assert router.serves(PROD, blue) and box.status()["serving"]["deployment"] == blue.name
        assert not host.is_alive(green.pid)
        assert row.run_id not in [r.run_id for r in dead_runs(ops_db)]
        evidence = Path(ops_db.run(row.run_id).evidence_dir)
        assert sorted(p.name for p in evidence.iterdir() if not p.name.startswith(".")) == sorted(
            h.evidence_files())
        # What the rollback job wrote for the dead run holds to the evidence schema.
        evidence_schema.validate_folder(evidence, row.run_id, "rolled_back", dead_run=True)
        rollback = json.loads((evidence / "rollback.json").read_text())
        assert rollback["router_switched_back"] is True and rollback["router_serves_after"]["name"] == blue.name
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


def test_rollback_of_a_promotion_a_later_one_replaced_is_refused(haproxy_box: Sandbox, h: Any) -> None:
    code, first, message = h.promote()
    assert code == 0, message
    code, second, message = h.promote()
    assert code == 0, message
    live = haproxy_box.status()["serving"]["deployment"]
    code, result, message = run_rollback(first.run_id, "wrong one", "ops-oncall", quiet=True)
    assert code == 2 and result is None and message and "a later promotion replaced it" in message
    assert haproxy_box.status()["serving"]["deployment"] == live
