"""Failure handling inside the job: roll back by switching traffic, never by restoring.

When a step from the green restore onwards detects a failure, the same process, at once:
switches the public entry point back to blue (if it had moved), stops green, removes green if
it never served traffic or keeps its database (retired, deletion scheduled after the rollback
window) if it did, marks the run ``rolled_back`` and writes the evidence. With
``auto_rollback_on_failure=false`` it leaves everything as it stands, marks the run ``failed``
and says in the evidence what is live. Steps before green existed have nothing to undo.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from promote_pipeline.promotion import deployment, notify, odoo_aware, progress, steps
from promote_pipeline.promotion.decisions import OnFailure, on_failure
from promote_pipeline.promotion.evidence import Evidence
from promote_pipeline.promotion.models import PromotionOutcome, RunStarted
from promote_pipeline.promotion.services import Services, switch_confirmed
from promote_pipeline.promotion.steps import Step
from promote_pipeline.promotion.summary import LiveAfter, write_final
from resources.ops_db import DeploymentRecord, FinalRunStatus, TaskRequest
from resources.redaction import redact_text
from resources.router import RouterError, RouterNotPersisted


def green_deployments(svc: Services, run_id: str) -> list[DeploymentRecord]:
    """The run's greens that may still hold a process or traffic (not yet retired or deleted)."""
    return svc.ops_db.deployments_created_by(run_id, states=("active", "standby"))


def roll_back(svc: Services, run: RunStarted, reason: str, detected_monotonic: float,
              live_unsaved: bool = False) -> dict[str, Any]:
    """Traffic to blue first (the urgent part), then green's clean-up; returns rollback.json's body.

    Only the switch back to blue (and the records saying it happened) may raise: without it nothing else is safe to
    do, green still serves. Every later part is done whatever the others did, and one that fails is listed in
    ``problems`` (``part``, ``error``) and in ``notes``; ``completed`` then still says True: traffic is on blue.

    ``live_unsaved``: the failure was a switch to green that went live but could not be saved (RouterNotPersisted
    at cutover), so the router's files say blue while green serves: switch back whatever they say."""
    env_id = run.prod.environment_id
    blue = svc.upstream(run.blue, "blue")
    notes: list[str] = []
    problems: list[dict[str, str]] = []

    def failed(part: str, what: str, exc: BaseException) -> str:
        error = redact_text(f"{type(exc).__name__}: {exc}")
        problems.append({"part": part, "error": error})
        notes.append(f"{what}: {error}")
        return error

    before = svc.router.state(env_id)
    switched = False
    saved = True
    # Asked of the running router, not of routes.json: a switch to green the router recorded but never made
    # still needs no undo, and one it made while the record says blue (a cutover live but unsaved) still does.
    if live_unsaved or not svc.router.serves(env_id, blue):
        try:
            switch_confirmed(svc.router, env_id, blue)
        except RouterNotPersisted as exc:
            if not svc.router.serves(env_id, blue):
                raise
            # Blue serves: the rollback's urgent part is done; only its record is not.
            saved = False
            notes.append(f"traffic is back on blue, but the router could not save it: {exc}")
        switched = True
    on_blue_ms = int((time.monotonic() - detected_monotonic) * 1000)
    traffic_on_blue_at = datetime.now(UTC)
    # A green that never served traffic needs no router write at all: the preview entry point is put back on blue
    # only if it points elsewhere, and a router folder that cannot be written leaves a note, not a failed rollback.
    if before.preview is None or before.preview.name != blue.name:
        try:
            svc.router.set_preview(env_id, blue)
        except RouterNotPersisted as exc:
            notes.append(f"preview entry point back on blue, but the router could not save it: {exc}")
        except Exception as exc:  # the public entry point is on blue already; the preview only serves smoke tests
            failed("preview_reset", "preview entry point not reset to blue (it may still name green, stopped)", exc)
    greens = green_deployments(svc, run.run_id)
    # The records say what the router does, before any clean-up can fail.
    svc.ops_db.reactivate_deployment(run.blue.environment_id, run.blue.deployment_id)
    # Blue serves again: writable again if this run froze it (--freeze-blue), first: restoring its crons
    # and mail servers writes on it.
    try:
        freeze = odoo_aware.thaw_blue(svc, run)
    except Exception as exc:  # traffic is on blue; it answers, but refuses writes until this is repeated
        freeze = {"frozen": True, "error": failed("thaw", "blue still read-only (run `promote rollback` again)", exc)}
    try:
        fencing = odoo_aware.unfence_on_rollback(svc, run, greens)
    except Exception as exc:  # traffic is already on blue; report, do not undo that
        fencing = {"error": failed("unfence", "crons and mail servers not reset", exc)}
    for deployment_id, error in fencing.get("errors", {}).items():
        which = "blue's crons and mail servers not restored" if deployment_id == run.blue.deployment_id \
            else f"{deployment_id}'s crons and mail servers not fenced off"
        problems.append({"part": "unfence", "deployment": deployment_id, "error": error})
        notes.append(f"{which}: {error}")
    # Green served traffic if the router had to be moved off it, or if it was recorded as routed there.
    served = switched or (before.active is not None and before.active.name != blue.name)
    record = svc.ops_db.run(run.run_id)
    served = served or bool(record and record.metadata.get("cutover_timestamp"))
    kept = False
    stopped = True
    for green in greens:
        try:
            notes.extend(deployment.stop(svc, green))
        except Exception as exc:  # its database is still dealt with below (remove stops it again first)
            stopped = False
            failed("green_stop", f"{green.deployment_id} not stopped", exc)
        try:
            if served:
                kept = True
                _retire(svc, run, green)
            else:
                deployment.remove(svc, run.prod.db_dsn_ref, green)  # its processes already handled just above
                svc.ops_db.mark_deployment_deleted(green.deployment_id)
        except Exception as exc:  # traffic is on blue already; a clean-up error is reported, not fatal
            failed("green_cleanup", f"clean-up of {green.deployment_id} incomplete", exc)
    after = svc.router.state(env_id)
    if not saved:  # the router's files still name green; what it serves is blue
        after = after.model_copy(update={"active": blue})
    return {
        "triggered": True,
        "completed": True,
        "reason": reason,
        "router_switched_back": switched,
        "router_saved": saved,
        "traffic_on_blue_at": traffic_on_blue_at.isoformat(),
        "detection_to_blue_ms": on_blue_ms,
        "routing_before": before.model_dump(mode="json"),
        "routing_after": after.model_dump(mode="json"),
        "router_serves_after": _served(svc, env_id),
        "blue_deployment": run.blue.deployment_id,
        "green_deployment": ", ".join(g.deployment_id for g in greens) or None,
        "green_stopped": stopped,
        "green_database_kept": kept,
        "green_kept_until": (datetime.now(UTC) + timedelta(hours=run.inputs.rollback_window_hours)).isoformat()
        if kept else None,
        "fence": fencing,
        "writes_on_green": fencing.get("writes_on_green", {}),
        "writes_on_green_total": fencing.get("writes_on_green_total", 0),
        "blue_freeze": freeze,
        "problems": problems,
        "notes": notes,
    }


def _served(svc: Services, env_id: str) -> dict[str, Any]:
    """The running router's own answer for the evidence; traffic is already on blue, so a failure is reported."""
    try:
        return svc.router.served_upstream(env_id).model_dump(mode="json")
    except RouterError as exc:
        return {"error": redact_text(str(exc))}


def _retire(svc: Services, run: RunStarted, green: DeploymentRecord) -> None:
    """Keep a green that served traffic: writes made on it can still be recovered until the window ends."""
    svc.ops_db.retire_deployment(green.deployment_id)
    svc.ops_db.schedule_task(TaskRequest(
        task_type="delete_deployment", delay=timedelta(hours=run.inputs.rollback_window_hours), run_id=run.run_id,
        metadata={"deployment_id": green.deployment_id, "db_name": green.db_name,
                  "reason": "green retired by rollback"}))


def _thaw_if_blue_serves(svc: Services, run: RunStarted, rollback: dict[str, Any]) -> None:
    """A failure that leaves traffic on blue (before the cutover's switch, or with auto_rollback off before it)
    must not leave blue read-only: users would keep getting errors. A green left serving keeps blue frozen."""
    try:
        if svc.router.serves(run.prod.environment_id, svc.upstream(run.blue, "blue")):
            freeze = odoo_aware.thaw_blue(svc, run)
            if freeze.get("frozen"):
                rollback["blue_freeze"] = freeze
    except Exception as exc:  # reported: the run's failure is what it is, and a person can thaw blue
        rollback["blue_freeze"] = {"frozen": True, "error": redact_text(f"{type(exc).__name__}: {exc}")}
        progress.say(f"run {run.run_id}: blue may still be read-only: {rollback['blue_freeze']['error']}")


def _event_log_lost(svc: Services, run_id: str, exc: BaseException) -> str:
    """An event write failed: say so where it can still be seen (the run's row, the progress lines); the caller
    puts the returned text into rollback.json."""
    error = redact_text(f"{type(exc).__name__}: {exc}")
    progress.say(f"run {run_id}: events not recorded in ops.run_events: {error}")
    try:
        svc.ops_db.merge_run_metadata(run_id, {"event_log_error": error})
    except Exception as db_exc:  # noqa: S110 - the progress line and rollback.json still say it
        progress.say(f"run {run_id}: nor in its ops.runs row: {type(db_exc).__name__}")
    return error


def handle_failure(svc: Services, run: RunStarted, step: Step, error: BaseException, detected_monotonic: float,
                   green_artifact_id: str | None = None, blue_backup_id: str | None = None,
                   cutover_timestamp: str | None = None, force_rollback: bool = False) -> PromotionOutcome:
    """Everything done after a failure was detected (by an op, or by the safety net for a run that died);
    returns the run's outcome. ``force_rollback`` rolls back whatever the step and the inputs say.

    Order matters: traffic first (the router needs no database), then the run's status (so that nothing
    later can leave it ``running``), then the event and the evidence, each of which may fail on its own.
    """
    reason = redact_text(f"{type(error).__name__}: {error}")
    evidence = Evidence(run.evidence_dir)
    rollback: dict[str, Any]
    status: FinalRunStatus
    decision = on_failure(step, run.inputs.auto_rollback_on_failure, force_rollback)
    if decision is OnFailure.NOTHING_TO_UNDO:
        status = "failed"
        rollback = {"triggered": False, "reason": f"failure at {step.name}: nothing rolled back",
                    "blue_untouched": not step.after_green}
    elif decision is OnFailure.ROLL_BACK:
        try:
            rollback = roll_back(svc, run, reason, detected_monotonic,
                                 live_unsaved=isinstance(error, RouterNotPersisted) and step.name == steps.CUTOVER.name)
            status = "rolled_back"
        except Exception as exc:  # the rollback itself failed: say so loudly, never pretend
            status = "failed"
            rollback = {"triggered": True, "completed": False,
                        "error": redact_text(f"{type(exc).__name__}: {exc}"), "reason": reason}
    else:
        status = "failed"
        rollback = {"triggered": False, "reason": "auto_rollback_on_failure=false: left as it stands",
                    "live_routing": svc.router.state(run.prod.environment_id).model_dump(mode="json"),
                    "live_served": _served(svc, run.prod.environment_id),
                    "green_deployments": [g.model_dump() for g in green_deployments(svc, run.run_id)]}
    if decision is not OnFailure.ROLL_BACK:
        _thaw_if_blue_serves(svc, run, rollback)
    rollback["failed_step"] = step.name
    svc.ops_db.mark_run_finished(run.run_id, status, evidence_dir=run.evidence_dir,
                                 metadata={"failed_step": step.name, "failure_reason": reason})
    try:
        svc.ops_db.add_event(run.run_id, step.name, "error", reason)
        if rollback.get("error"):
            svc.ops_db.add_event(run.run_id, "rollback", "error", rollback["error"])
        for problem in rollback.get("problems", []):
            svc.ops_db.add_event(run.run_id, "rollback", "warning", f"{problem['part']} failed: {problem['error']}",
                                 problem)
    except Exception as exc:  # the status above is what matters; the evidence says the event log is short
        rollback["event_log_error"] = _event_log_lost(svc, run.run_id, exc)
    outcome = PromotionOutcome(run_id=run.run_id, status=status,
                               evidence_dir=run.evidence_dir, blue_backup_id=blue_backup_id,
                               green_artifact_id=green_artifact_id, cutover_timestamp=cutover_timestamp)
    try:
        if not evidence.exists(steps.RUN_ID_TXT):  # a run that died inside step 1 had not written it yet
            evidence.write_text(steps.RUN_ID_TXT, run.run_id + "\n")
        evidence.write_json(steps.ROLLBACK_JSON, rollback)
        evidence.fill_not_reached(f"not reached: the run failed at {step.name}")
        greens = ", ".join(g.deployment_id for g in svc.ops_db.deployments_created_by(run.run_id)) or None
        write_final(evidence, outcome, run.started_at, run.inputs.model_dump(), failed_step=step.name, reason=reason,
                    retention=svc.settings.retention,
                    live=LiveAfter(blue_deployment=run.blue.deployment_id, green_deployment=greens))
    except Exception as exc:  # e.g. a full disk: the run is still marked, and says why its evidence is short
        lost = redact_text(f"{type(exc).__name__}: {exc}")
        progress.say(f"run {run.run_id}: evidence incomplete in {run.evidence_dir}: {lost}")
        try:
            svc.ops_db.merge_run_metadata(run.run_id, {"evidence_error": lost})
            svc.ops_db.add_event(run.run_id, "evidence", "error", f"evidence incomplete: {lost}")
        except Exception as db_exc:  # noqa: S110 - said above on the progress line; nowhere else is left
            progress.say(f"run {run.run_id}: and the ops database did not record it: {type(db_exc).__name__}")
    # Last: traffic, status and evidence are settled; the message runs in threads and waits on none of them.
    notify.send(svc, run.run_id, run.prod.environment_id, "rolled_back" if status == "rolled_back" else "failed",
                {"reason": reason, "failed_step": step.name})
    return outcome
