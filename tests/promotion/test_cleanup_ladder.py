"""The clean-up ladder past the first retry, against a real ops database of its own (a fresh one per test): the
backoff grows with each attempt, the last attempt ends ``failed`` and nothing claims it again, a claim whose
worker died is taken over, an environment locked by a promotion is waited for and then retried later, an unknown
task type is cancelled. Each task's evidence file is written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.promotion import cleanup
from promote_pipeline.promotion.services import Services
from promote_pipeline.promotion.settings import Settings
from resources.artifact_store import LocalArtifactStore
from resources.haproxy_router import HAProxyRouter
from resources.odoo_host import LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentRecord, OpsDatabase, TaskRequest


@pytest.fixture
def svc(private_ops_db: OpsDatabase, tmp_path: Path) -> Services:
    """The clean-up's services over the test's own ops database; the router is never started (no task uses it)."""
    settings = Settings(ops_database=private_ops_db.database, evidence_root=str(tmp_path / "evidence"),
                        artifact_root=str(tmp_path / "artifacts"), run_dir=str(tmp_path / "run"),
                        router_dir=str(tmp_path / "router"))
    envs = [EnvironmentRecord(environment_id=env_id, project_id="p", kind="production", git_commit_sha=None,
                              db_dsn_ref=ref, db_name_prefix="x", filestore_root=str(tmp_path))
            for env_id, ref in (("env_broken", "NO_SUCH_SECRET_REF"), ("env_busy", "NO_SUCH_SECRET_REF"))]
    private_ops_db.add_project("p", "P", envs)
    host = LocalOdooHost(command_template=settings.odoo_command, run_dir=settings.run_dir,
                         role_key_ref=settings.role_key_ref)
    return Services(ops_db=private_ops_db, host=host, store=LocalArtifactStore(root=settings.artifact_root),
                    router=HAProxyRouter(work_dir=settings.router_dir), settings=settings)


def _retired(svc: Services, deployment_id: str, env_id: str) -> None:
    svc.ops_db.add_deployment(DeploymentRecord(deployment_id=deployment_id, environment_id=env_id,
                                               db_name=f"db_{deployment_id}", data_dir="/nonexistent",
                                               http_port=None, websocket_port=None, pid=None, state="standby"))
    svc.ops_db.retire_deployment(deployment_id)


def _due(svc: Services, task_type: str, **metadata: Any) -> int:
    return svc.ops_db.schedule_task(TaskRequest(task_type=task_type, delay=timedelta(seconds=-1),
                                                metadata=metadata))


def _make_due(svc: Services, task_id: int) -> None:
    """The retry's time has come (the clock is real; the row's due time is moved, not the clock)."""
    with svc.ops_db.connect() as conn:
        conn.execute("UPDATE ops.scheduled_tasks SET execute_at = now() - interval '1 second' WHERE task_id = %s",
                     (task_id,))


def _evidence(svc: Services, task_id: int) -> dict[str, Any]:
    [path] = Path(svc.settings.evidence_root).rglob(f"task_{task_id}.json")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_each_retry_waits_twice_as_long_and_the_last_attempt_fails_for_good(svc: Services) -> None:
    _retired(svc, "dep_broken", "env_broken")  # its server's secret is missing: every attempt fails
    task_id = _due(svc, "delete_deployment", deployment_id="dep_broken")
    for attempt in range(1, cleanup.MAX_ATTEMPTS + 1):
        [record] = cleanup.run_due_tasks(svc)
        assert (record["task_id"], record["attempt"]) == (task_id, attempt)
        assert "NO_SUCH_SECRET_REF" in record["error"] and _evidence(svc, task_id)["attempt"] == attempt
        row = svc.ops_db.task(task_id)
        assert row is not None and row.attempts == attempt and row.last_error == record["error"]
        if attempt < cleanup.MAX_ATTEMPTS:
            assert record["status"] == "retry" and row.status == "pending"
            wait = (row.execute_at - datetime.now(UTC)).total_seconds()
            assert 2 ** attempt * 60 - 30 < wait <= 2 ** attempt * 60, (attempt, wait)  # 2, 4, 8, 16, 32 minutes
            assert cleanup.run_due_tasks(svc) == []  # not due before its time
            _make_due(svc, task_id)
    assert record["status"] == "failed" and svc.ops_db.task(task_id).status == "failed"
    _make_due(svc, task_id)
    assert cleanup.run_due_tasks(svc) == []  # failed for good: never claimed again, even once due
    assert svc.ops_db.deployment("dep_broken").state == "retired"


def test_a_claim_whose_worker_died_is_taken_over_after_the_lease(svc: Services) -> None:
    task_id = _due(svc, "delete_deployment", deployment_id="dep_gone")  # no such deployment: nothing to remove
    claimed = svc.ops_db.claim_due_task("other-host:4242", cleanup.CLAIM_LEASE)
    assert claimed is not None and claimed.task_id == task_id
    assert cleanup.run_due_tasks(svc) == []  # the other worker's claim is still within its lease

    with svc.ops_db.connect() as conn:  # ... until its lease has run out: that worker died
        conn.execute("UPDATE ops.scheduled_tasks SET claimed_at = now() - %s - interval '1 second'"
                     " WHERE task_id = %s", (cleanup.CLAIM_LEASE, task_id))
    [record] = cleanup.run_due_tasks(svc)
    assert (record["task_id"], record["attempt"], record["status"]) == (task_id, 2, "done")
    assert record["done"] == ["deployment dep_gone already deleted"]
    row = svc.ops_db.task(task_id)
    assert row is not None and row.status == "done" and row.claimed_by == record["worker"] != "other-host:4242"


def test_a_locked_environment_is_waited_for_then_retried_later_and_its_deployment_kept(svc: Services) -> None:
    _retired(svc, "dep_busy", "env_busy")
    task_id = _due(svc, "delete_deployment", deployment_id="dep_busy")
    lock = svc.ops_db.try_lock_environment("env_busy")  # a promotion or rollback holds production
    assert lock is not None
    try:
        [record] = cleanup.run_due_tasks(svc, lock_wait_seconds=1)
    finally:
        lock.release()
    assert record["status"] == "retry" and "environment env_busy is busy" in record["error"]
    row = svc.ops_db.task(task_id)
    assert row is not None and row.status == "pending" and row.attempts == 1
    assert svc.ops_db.deployment("dep_busy").state == "retired"  # untouched while locked


def test_an_unknown_task_type_is_cancelled_not_retried(svc: Services) -> None:
    task_id = _due(svc, "defragment_disks", deployment_id="dep_x")
    [record] = cleanup.run_due_tasks(svc)
    assert record["status"] == "cancelled" and record["error"] == "unknown task_type 'defragment_disks'"
    row = svc.ops_db.task(task_id)
    assert row is not None and row.status == "cancelled" and row.last_error == record["error"]
    _make_due(svc, task_id)
    assert cleanup.run_due_tasks(svc) == []
    assert _evidence(svc, task_id)["status"] == "cancelled"
