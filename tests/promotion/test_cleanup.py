"""Deferred clean-up against the real ops database: each due task runs once even with two workers at
once, failures are retried with backoff, a live deployment is never deleted, windows can move."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.cli.sandbox import DSN_REF, PROD, Sandbox
from promote_pipeline.promotion import cleanup, evidence_schema
from promote_pipeline.promotion.services import Services
from resources.ops_db import DeploymentRecord, EnvironmentRecord, TaskRequest

pytestmark = pytest.mark.slow


def _services(box: Sandbox) -> Services:
    return Services.from_resources(box.resources())


def _add_retired(svc: Services, dep: str, env_id: str, db: str, data_dir: str) -> None:
    """A deployment as a rollback leaves a green that served: retired (recorded standby, then retired)."""
    svc.ops_db.add_deployment(DeploymentRecord(deployment_id=dep, environment_id=env_id, db_name=db, data_dir=data_dir,
                                               http_port=None, websocket_port=None, pid=None, state="standby"))
    svc.ops_db.retire_deployment(dep)


def _retired_deployment(svc: Services, env_id: str, tag: str) -> str:
    db = f"ptc_{tag}"
    svc.host.create_database(DSN_REF, db)
    dep = f"dep_cleanup_{tag}"
    _add_retired(svc, dep, env_id, db, "/nonexistent")
    return dep


def _task_evidence(folder: Path) -> dict[int, evidence_schema.CleanupTaskEvidence]:
    """Every clean-up task file under ``folder``, each validated against the evidence schema, by task id."""
    found = {}
    for path in folder.rglob("task_*.json"):
        assert path.parent.name == "cleanup"
        record = evidence_schema.validate_json(evidence_schema.CleanupTaskEvidence, path.read_text())
        assert isinstance(record, evidence_schema.CleanupTaskEvidence) and path.name == f"task_{record.task_id}.json"
        found[record.task_id] = record
    return found


def _task(svc: Services, dep: str) -> int:
    return svc.ops_db.schedule_task(TaskRequest(task_type="delete_deployment", delay=timedelta(seconds=-1),
                                                metadata={"deployment_id": dep}))


def test_two_workers_run_each_due_task_exactly_once(haproxy_box: Sandbox, tmp_path: Path) -> None:
    svc = _services(haproxy_box)
    tag = secrets.token_hex(3)
    deps = [_retired_deployment(svc, PROD, f"{tag}_{i}") for i in range(6)]
    ids = {_task(svc, d) for d in deps}
    results: list[list[dict[str, Any]]] = []
    workers = [threading.Thread(target=lambda: results.append(cleanup.run_due_tasks(svc, str(tmp_path))))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    done = [r["task_id"] for batch in results for r in batch if r["task_id"] in ids]
    assert sorted(done) == sorted(ids)  # each once, none twice
    for dep in deps:
        row = svc.ops_db.deployment(dep)
        assert row.state == "deleted" and not svc.host.database_exists(DSN_REF, row.db_name)
    records = _task_evidence(tmp_path)
    assert set(records) >= ids
    assert all(records[i].status == "done" and records[i].done and records[i].error is None for i in ids)


def test_a_failing_task_is_retried_with_backoff_and_a_live_deployment_is_kept(haproxy_box: Sandbox,
                                                                              tmp_path: Path) -> None:
    svc = _services(haproxy_box)
    tag = secrets.token_hex(3)
    svc.ops_db.add_environment(EnvironmentRecord(environment_id=f"env_broken_{tag}", project_id="proj_demo",
                                                 kind="dev", git_commit_sha=None, db_dsn_ref="NO_SUCH_SECRET_REF",
                                                 db_name_prefix="x", filestore_root="/tmp"))
    _add_retired(svc, f"dep_broken_{tag}", f"env_broken_{tag}", "x_db", "/tmp")
    failing = _task(svc, f"dep_broken_{tag}")
    live = svc.ops_db.active_deployment(PROD)
    kept = _task(svc, live.deployment_id)
    cleanup.run_due_tasks(svc, str(tmp_path))
    row = svc.ops_db.task(failing)
    wait = row.execute_at - datetime.now(UTC)
    assert row.status == "pending" and row.attempts == 1 and "NO_SUCH_SECRET_REF" in row.last_error
    assert 60 < wait.total_seconds() <= 120
    assert svc.ops_db.task(kept).status == "cancelled"
    assert svc.ops_db.active_deployment(PROD).deployment_id == live.deployment_id
    assert svc.host.is_alive(live.pid)
    records = _task_evidence(tmp_path)
    assert records[failing].status == "retry" and records[failing].attempt == 1
    assert records[failing].error and "NO_SUCH_SECRET_REF" in records[failing].error
    assert records[kept].status == "cancelled" and records[kept].error and "active again" in records[kept].error
    svc.ops_db.cancel_task(failing, "test done")


def test_rollback_window_can_move_within_1_to_168_hours(haproxy_box: Sandbox, h: Any) -> None:
    svc = _services(haproxy_box)
    code, outcome, message = h.promote()
    assert code == 0, message
    for bad in (0, 169):
        with pytest.raises(ValueError, match="hours: must be an integer >= 1 and <= 168"):
            cleanup.set_window(svc, outcome.run_id, bad)
    info = cleanup.set_window(svc, outcome.run_id, 2)
    delay = svc.ops_db.task(info["task_id"]).execute_at - svc.ops_db.run(outcome.run_id).completed_at
    assert delay.total_seconds() == pytest.approx(2 * 3600, abs=1)
    with pytest.raises(ValueError, match="run_id"):
        cleanup.set_window(svc, "run_nope", 5)
