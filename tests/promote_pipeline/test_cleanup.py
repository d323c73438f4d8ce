"""Deferred clean-up against the real ops database: each due task runs once even with two workers at
once, failures are retried with backoff, a live deployment is never deleted, windows can move."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from promote_pipeline.cli.sandbox import DSN_REF, PROD, Sandbox
from promote_pipeline.promotion import cleanup
from promote_pipeline.promotion.services import Services

pytestmark = pytest.mark.slow


def _services(box: Sandbox) -> Services:
    return Services.from_resources(box.resources())


def _retired_deployment(svc: Services, env_id: str, tag: str, state: str = "retired") -> str:
    db = f"ptc_{tag}"
    svc.host.create_database(DSN_REF, db)
    dep = f"dep_cleanup_{tag}"
    svc.ops_db.execute("INSERT INTO ops.deployments (deployment_id, environment_id, db_name, data_dir, state)"
                       " VALUES (%s, %s, %s, '/nonexistent', %s)", (dep, env_id, db, state))
    return dep


def _task(svc: Services, dep: str) -> int:
    row = svc.ops_db.fetch_one("INSERT INTO ops.scheduled_tasks (task_type, execute_at, metadata) VALUES"
                               " ('delete_deployment', now() - interval '1 second', %s) RETURNING task_id",
                               (Jsonb({"deployment_id": dep}),))
    return int(row["task_id"])


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
        row = svc.ops_db.fetch_one("SELECT state, db_name FROM ops.deployments WHERE deployment_id = %s", (dep,))
        assert row["state"] == "deleted" and not svc.host.database_exists(DSN_REF, row["db_name"])
    assert {p.name for p in tmp_path.rglob("task_*.json")} >= {f"task_{i}.json" for i in ids}


def test_a_failing_task_is_retried_with_backoff_and_a_live_deployment_is_kept(haproxy_box: Sandbox,
                                                                              tmp_path: Path) -> None:
    svc = _services(haproxy_box)
    tag = secrets.token_hex(3)
    svc.ops_db.execute("INSERT INTO ops.environments (environment_id, project_id, kind, db_dsn_ref, db_name_prefix,"
                       " filestore_root) VALUES (%s, 'proj_demo', 'dev', 'NO_SUCH_SECRET_REF', 'x', '/tmp')",
                       (f"env_broken_{tag}",))
    svc.ops_db.execute("INSERT INTO ops.deployments (deployment_id, environment_id, db_name, data_dir, state)"
                       " VALUES (%s, %s, 'x_db', '/tmp', 'retired')", (f"dep_broken_{tag}", f"env_broken_{tag}"))
    failing = _task(svc, f"dep_broken_{tag}")
    live = svc.ops_db.active_deployment(PROD)
    kept = _task(svc, live["deployment_id"])
    cleanup.run_due_tasks(svc, str(tmp_path))
    row = svc.ops_db.fetch_one("SELECT status, attempts, last_error, execute_at - now() AS wait"
                               " FROM ops.scheduled_tasks WHERE task_id = %s", (failing,))
    assert row["status"] == "pending" and row["attempts"] == 1 and "NO_SUCH_SECRET_REF" in row["last_error"]
    assert 60 < row["wait"].total_seconds() <= 120
    assert svc.ops_db.fetch_one("SELECT status FROM ops.scheduled_tasks WHERE task_id = %s", (kept,))["status"] \
        == "cancelled"
    assert svc.ops_db.active_deployment(PROD)["deployment_id"] == live["deployment_id"]
    assert svc.host.is_alive(live["pid"])
    svc.ops_db.execute("UPDATE ops.scheduled_tasks SET status = 'cancelled' WHERE task_id = %s", (failing,))


def test_rollback_window_can_move_within_1_to_168_hours(haproxy_box: Sandbox, h: Any) -> None:
    svc = _services(haproxy_box)
    code, outcome, message = h.promote()
    assert code == 0, message
    for bad in (0, 169):
        with pytest.raises(ValueError, match="hours: must be an integer >= 1 and <= 168"):
            cleanup.set_window(svc, outcome.run_id, bad)
    info = cleanup.set_window(svc, outcome.run_id, 2)
    row = svc.ops_db.fetch_one("SELECT t.execute_at - r.completed_at AS delay FROM ops.scheduled_tasks t"
                               " JOIN ops.runs r USING (run_id) WHERE t.task_id = %s", (info["task_id"],))
    assert row["delay"].total_seconds() == pytest.approx(2 * 3600, abs=1)
    with pytest.raises(ValueError, match="run_id"):
        cleanup.set_window(svc, "run_nope", 5)
