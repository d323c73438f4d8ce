"""Deferred clean-up: the due rows of ``ops.scheduled_tasks``, blue's deletion first among them.

Each task is claimed with ``FOR UPDATE SKIP LOCKED`` in its own short transaction, so two daemons
(or a daemon and ``promote cleanup``) never take the same row, and a claim is a lease: a claim
older than ``CLAIM_LEASE`` belongs to a worker that died and is taken again. A failed task is
retried with exponential backoff, up to ``MAX_ATTEMPTS``. Each executed task leaves an evidence
file, ``<evidence_root>/<YYYYMMDD-HHMM>/cleanup/task_<id>.json``.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from promote_pipeline.promotion import deployment, notify
from promote_pipeline.promotion.evidence import Evidence
from promote_pipeline.promotion.inputs import MAX_WINDOW_HOURS, MIN_WINDOW_HOURS, shown
from promote_pipeline.promotion.services import Services
from resources.ops_db import ScheduledTaskRecord
from resources.redaction import redact_text

CLAIM_LEASE = timedelta(minutes=10)
MAX_ATTEMPTS = 6
LOCK_WAIT_SECONDS = 30.0


class TaskSkipped(RuntimeError):
    """The task must not run as planned (e.g. its deployment is live again); it is cancelled, not retried."""


def _remove_deployment(svc: Services, deployment_id: str | None, lock_wait_seconds: float) -> str:
    if not deployment_id:
        return "no deployment named"
    dep = svc.ops_db.deployment_on_server(deployment_id)
    if dep is None or dep.state == "deleted":
        return f"deployment {deployment_id} already deleted"
    # The environment's lock keeps a rollback (which may bring this deployment back) out while it is removed.
    lock = svc.ops_db.wait_lock_environment(dep.environment_id, lock_wait_seconds)
    if lock is None:
        raise RuntimeError(f"environment {dep.environment_id} is busy (a promotion or rollback): retried later")
    try:
        current = svc.ops_db.deployment(deployment_id)  # read again under the lock
        if current and current.state == "active":
            raise TaskSkipped(f"deployment {deployment_id} is active again (rolled back to): not deleted")
        left_alone = deployment.remove(svc, dep.db_dsn_ref, dep)
        svc.ops_db.mark_deployment_deleted(deployment_id)
    finally:
        lock.release()
    if left_alone:  # a reused pid is another's process: reported, never signalled
        return (f"deployment {deployment_id}: database {dep.db_name}, its role and its files removed; "
                + "; ".join(left_alone))
    return (f"deployment {deployment_id}: processes stopped, database {dep.db_name}, its role and its files"
            " removed")


def execute(svc: Services, task: ScheduledTaskRecord, lock_wait_seconds: float = LOCK_WAIT_SECONDS) -> list[str]:
    meta = task.metadata
    done: list[str] = []
    if task.task_type == "delete_backup":
        done.append(_remove_deployment(svc, meta.get("deployment_id"), lock_wait_seconds))
        artifact_id = meta.get("artifact_id")
        if artifact_id:
            # Filestore content is shared by content (SHA-1) between artifacts: the store removes only the
            # objects that no other artifact's index still names (garbage collection under its lock).
            gc = svc.store.delete(artifact_id)
            svc.ops_db.mark_artifact_deleted(artifact_id)
            done.append(f"artifact {artifact_id} deleted; {gc['removed_objects']} filestore objects no other artifact"
                        f" references removed, {gc['live_objects']} still referenced kept")
    elif task.task_type == "delete_deployment":
        done.append(_remove_deployment(svc, meta.get("deployment_id"), lock_wait_seconds))
    else:
        raise TaskSkipped(f"unknown task_type {task.task_type!r}")
    return done


def run_due_tasks(svc: Services, evidence_root: str | None = None, limit: int = 50,
                  lock_wait_seconds: float = LOCK_WAIT_SECONDS) -> list[dict[str, Any]]:
    """Execute up to ``limit`` due tasks; return one record per task. Their evidence goes under ``evidence_root``
    (default: the settings'). A deployment's removal waits up to ``lock_wait_seconds`` for its environment's lock
    (a promotion or rollback holding it), then is retried later."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    records = []
    for _ in range(limit):
        task = svc.ops_db.claim_due_task(worker, CLAIM_LEASE)
        if task is None:
            break
        record: dict[str, Any] = {"task_id": task.task_id, "task_type": task.task_type,
                                  "run_id": task.run_id, "attempt": task.attempts,
                                  "metadata": task.metadata, "worker": worker,
                                  "started_at": datetime.now(UTC).isoformat()}
        try:
            record["done"] = execute(svc, task, lock_wait_seconds)
            record["status"] = "done"
            svc.ops_db.mark_task_done(task.task_id)
            if task.task_type == "delete_backup" and task.run_id:
                _announce_blue_deleted(svc, task.run_id, record["done"])
        except TaskSkipped as exc:
            record.update(status="cancelled", error=str(exc))
            svc.ops_db.cancel_task(task.task_id, str(exc))
        except Exception as exc:  # any failure is retried later; the error is kept, redacted
            error = redact_text(f"{type(exc).__name__}: {exc}")[:1000]
            final = task.attempts >= MAX_ATTEMPTS
            record.update(status="failed" if final else "retry", error=error)
            svc.ops_db.record_task_failure(task.task_id, error, retry_in_minutes=2 ** task.attempts, give_up=final)
        record["finished_at"] = datetime.now(UTC).isoformat()
        root = Path(evidence_root or svc.settings.evidence_root)
        folder = root / datetime.now(UTC).strftime("%Y%m%d-%H%M") / "cleanup"
        Evidence(folder).write_json(f"task_{task.task_id}.json", json.loads(json.dumps(record, default=str)))
        records.append(record)
    return records


def _announce_blue_deleted(svc: Services, run_id: str, done: list[str]) -> None:
    """Blue is gone: the rollback window of ``run_id`` is over (sent after the deletion, never delaying one)."""
    run = svc.ops_db.run(run_id)
    if run is not None:
        notify.send(svc, run_id, run.environment_id, "blue_deleted", {"done": "; ".join(done)})


def set_window(svc: Services, run_id: str, hours: int) -> dict[str, Any]:
    """Move blue's deletion of a successful run to ``completed_at + hours``, within the input's range (1..168)."""
    low, high = MIN_WINDOW_HOURS, MAX_WINDOW_HOURS
    if isinstance(hours, bool) or not isinstance(hours, int) or not low <= hours <= high:
        raise ValueError(f"hours: must be an integer >= {low} and <= {high} (got {hours!r})")
    row = svc.ops_db.run(run_id)
    if row is None or row.operation_type != "promote":
        raise ValueError(f"run_id: {shown(run_id)} is not a promotion run")
    task = svc.ops_db.reschedule_pending_task(run_id, "delete_backup", row.completed_at or row.created_at, hours)
    if task is None:
        raise ValueError(f"run_id: {run_id} has no pending blue deletion (already done, cancelled, or not a success)")
    svc.ops_db.merge_run_metadata(run_id, {"rollback_window_hours": hours})
    return {"run_id": run_id, "task_id": task.task_id, "execute_at": task.execute_at.isoformat()}
