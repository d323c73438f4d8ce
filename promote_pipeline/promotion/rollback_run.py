"""The rollback job's logic: finish, undo or verify a promotion, from what the ops database says.

It serves three callers with one idempotent entry point, ``roll_back_run`` (its choices: ``decisions.for_run``):
- the safety net (sensors), for a promotion whose worker died or whose run failed or was
  cancelled: a run that already rolled itself back is verified and the verification recorded; a
  run that died mid-way is rolled back as the op would have done;
- a person (UI launchpad or ``promote rollback RUN_ID``), for a promotion that *succeeded*:
  within the rollback window, traffic goes back to blue; once blue is deleted it is refused.
Nothing here trusts process memory: the run, its blue and its green are read back from the ops
database, and the environment's advisory lock is taken first, so a run still alive (it holds the
lock) is never rolled back under its feet.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from promote_pipeline.promotion import deployment, notify, odoo_aware, steps
from promote_pipeline.promotion.decisions import ForRun, dead_run_rolls_back, for_run
from promote_pipeline.promotion.evidence import Evidence
from promote_pipeline.promotion.failure import green_deployments, handle_failure, roll_back
from promote_pipeline.promotion.inputs import PromotionInputs, shown
from promote_pipeline.promotion.models import PromotionOutcome, RunStarted
from promote_pipeline.promotion.services import Services
from promote_pipeline.promotion.steps import Step
from promote_pipeline.promotion.summary import LiveAfter, write_final
from resources.ops_db import RunRecord
from resources.redaction import redact_text
from resources.router import RouterError


class RollbackRefused(RuntimeError):
    """The rollback cannot be done (unknown run, blue deleted, run still alive); the message says why."""


class WorkerDied(RuntimeError):
    """Stands for the failure of a run whose worker vanished: no op saw it happen."""


def load_run(svc: Services, run_id: str) -> tuple[RunRecord, RunStarted]:
    row = svc.ops_db.run(run_id)
    if row is None or row.operation_type != "promote":
        raise RollbackRefused(f"run_id {shown(run_id)} is not a promotion run")
    meta = row.metadata
    prod = svc.ops_db.environment(row.environment_id)
    staging = svc.ops_db.environment(meta.get("staging_env_id", ""))
    blue = svc.ops_db.deployment(meta.get("blue_deployment_id", ""))
    if prod is None or staging is None or blue is None:
        raise RollbackRefused(f"run {run_id}: its environments or blue deployment are no longer recorded")
    # The inputs as create_ops_run stored them, flat in the metadata (`promote window` may have moved the window
    # since). Runs of older code stored the same keys but kept the ids in the row's columns only: those fill in.
    ids = {"project_id": row.project_id, "staging_env_id": staging.environment_id,
           "prod_env_id": prod.environment_id, "user_id": row.created_by}
    if not row.evidence_dir:
        # It failed before it had a folder; a rollback's evidence must not land in the current directory.
        raise RollbackRefused(f"run {run_id}: no evidence folder is recorded (the run failed before it had one)")
    stored = {k: v for k, v in meta.items() if k in PromotionInputs.model_fields}
    inputs = PromotionInputs.model_validate({**ids, **stored})
    run = RunStarted(run_id=run_id, inputs=inputs, evidence_dir=row.evidence_dir,
                     started_at=row.created_at, staging=staging, prod=prod, blue=blue)
    return row, run


def last_step(evidence: Evidence) -> Step:
    """The step a run whose worker died was in, from the evidence it wrote (a file that says "not reached"
    does not count)."""
    return steps.reached(lambda name: evidence.exists(name) and evidence.read_json(name).get("reached", True))


def verify_safe_state(svc: Services, run: RunStarted) -> dict[str, Any]:
    """Router on blue (asked of the running router), no green of this run alive, status final, evidence
    complete."""
    try:
        served = svc.router.served_upstream(run.prod.environment_id)
        on_blue, router_active = served.is_upstream(svc.upstream(run.blue, "blue")), served.name
    except RouterError as exc:
        on_blue, router_active = False, f"router did not answer: {exc}"
    greens_alive = [g.deployment_id for g in green_deployments(svc, run.run_id) if svc.process_host(g).is_alive(g.pid)]
    row = svc.ops_db.run(run.run_id)
    checks = {
        "router_on_blue": on_blue,
        "green_stopped": not greens_alive,
        "status_final": row is not None and row.status in ("rolled_back", "failed"),
        "evidence_complete": not Evidence(run.evidence_dir).missing(),
    }
    return {"safe": all(checks.values()), "checks": checks, "router_active": router_active,
            "at": datetime.now(UTC).isoformat()}


def _ensure_blue_running(svc: Services, run: RunStarted) -> None:
    blue = run.blue
    if svc.process_host(blue).is_alive(blue.pid):
        return
    deployment.start(svc, run.prod, blue)


def roll_back_run(svc: Services, run_id: str, reason: str, requested_by: str, manual: bool) -> dict[str, Any]:
    """Roll back, complete or verify one promotion run; returns what was done (for logs and evidence)."""
    row, run = load_run(svc, run_id)
    lock = svc.ops_db.try_lock_environment(run.prod.environment_id)
    if lock is None and row.status != "rolled_back":
        raise RollbackRefused(f"run {run_id}: production {run.prod.environment_id} is locked by a live session"
                              " (the promotion is still running, or another operation is)")
    try:
        # Read again under the lock: two rollbacks launched for one run (two sensors) must not both act.
        row, run = load_run(svc, run_id)
        evidence = Evidence(run.evidence_dir)
        status = row.status
        serves_it = status != "success" or svc.ops_db.run_serving(run.prod.environment_id) == run_id
        # load_run read blue under the lock, just now
        decision = for_run(status, manual, blue_deleted=run.blue.state == "deleted", still_serves_its_green=serves_it)
        if decision is ForRun.VERIFY:
            # A rollback whose thaw failed is repeated this way: blue, serving again, must take writes.
            if svc.router.serves(run.prod.environment_id, svc.upstream(run.blue, "blue")):
                odoo_aware.thaw_blue(svc, run)
            verification = verify_safe_state(svc, run)
            _record_verification(svc, run, evidence, verification, requested_by)
            return {"action": "verified", "already": status, **verification}
        if decision is ForRun.REFUSE_BLUE_DELETED:
            raise RollbackRefused(f"run {run_id}: blue {run.blue.deployment_id} has been deleted (the rollback"
                                  " window ended); rolling back now would need a restore, not a traffic switch")
        if decision is ForRun.REFUSE_REPLACED:
            raise RollbackRefused(
                f"run {run_id}: production no longer serves its green (a later promotion replaced it);"
                " roll back the latest promotion instead")
        detected = time.monotonic()
        if decision is ForRun.COMPLETE_DEAD_RUN:
            step = last_step(evidence)
            svc.ops_db.fail_running_restores(run_id)
            outcome = handle_failure(svc, run, step, WorkerDied(reason), detected,
                                     **_ids(row), force_rollback=dead_run_rolls_back(step, manual))
            return {"action": "completed_dead_run", "failed_step": step.name, "status": outcome.status}
        _ensure_blue_running(svc, run)
        body = roll_back(svc, run, redact_text(reason), detected)
        body.update({"requested_by": requested_by, "manual": manual, "previous_status": status})
        svc.ops_db.cancel_pending_tasks(run_id, "delete_backup", "blue reactivated by rollback")
        # The status first: traffic is on blue now, and no evidence write may leave the run saying `success`.
        svc.ops_db.mark_run_rolled_back(run_id, {"rolled_back_by": requested_by,
                                                 "rollback_reason": redact_text(reason)})
        svc.ops_db.add_event(run_id, "rollback", "info", f"traffic back on blue {run.blue.deployment_id}",
                             {"detection_to_blue_ms": body["detection_to_blue_ms"], "requested_by": requested_by})
        for problem in body["problems"]:
            svc.ops_db.add_event(run_id, "rollback", "warning", f"{problem['part']} failed: {problem['error']}",
                                 problem)
        outcome = PromotionOutcome(run_id=run_id, status="rolled_back", evidence_dir=run.evidence_dir, **_ids(row))
        try:
            evidence.write_json(steps.ROLLBACK_JSON, body)
            write_final(evidence, outcome, run.started_at, run.inputs.model_dump(), failed_step=None,
                        reason=f"rolled back after {status} by {requested_by}: {redact_text(reason)}",
                        retention=svc.settings.retention, live=LiveAfter(blue_deployment=run.blue.deployment_id))
        except OSError as exc:  # the run is rolled back and recorded; its row says why the evidence is short
            error = redact_text(f"{type(exc).__name__}: {exc}")
            svc.ops_db.merge_run_metadata(run_id, {"evidence_error": error})
            svc.ops_db.add_event(run_id, "evidence", "error", f"evidence incomplete: {error}")
        notify.send(svc, run_id, run.prod.environment_id, "rolled_back",
                    {"reason": f"rolled back after {status} by {requested_by}: {redact_text(reason)}",
                     "requested_by": requested_by, "manual": manual})
        return {"action": "rolled_back", "previous_status": status,
                "detection_to_blue_ms": body["detection_to_blue_ms"]}
    finally:
        if lock is not None:
            lock.release()


def _ids(row: RunRecord) -> dict[str, Any]:
    meta = row.metadata
    return {"green_artifact_id": meta.get("green_artifact_id"), "blue_backup_id": meta.get("blue_backup_id"),
            "cutover_timestamp": meta.get("cutover_timestamp")}


def _record_verification(svc: Services, run: RunStarted, evidence: Evidence, verification: dict[str, Any],
                         requested_by: str) -> None:
    svc.ops_db.add_event(run.run_id, "rollback", "info" if verification["safe"] else "error",
                         "rollback job verified the safe state" if verification["safe"]
                         else "rollback job found the state NOT safe", {**verification, "requested_by": requested_by})
    if evidence.exists(steps.ROLLBACK_JSON):
        body = evidence.read_json(steps.ROLLBACK_JSON)
        body.pop("schema_version", None)
        body.setdefault("verifications", []).append({**verification, "requested_by": requested_by})
        evidence.write_json(steps.ROLLBACK_JSON, body)
