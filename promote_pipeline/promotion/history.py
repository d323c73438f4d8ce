"""What happened and what is live: the promotions of the ops database, one of them by either of its ids, and per
production environment the deployment serving traffic, as the router itself says.

``promote history``, ``promote show`` and ``promote live`` print these; the rules of what they mean live here, the
statements in the owner module of each table (``resources/ops_db/``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from promote_pipeline.promotion import steps
from promote_pipeline.promotion.services import Services
from promote_pipeline.promotion.summary import rollback_command
from resources.ops_db import OpsDatabase, RunRecord, ScheduledTaskRecord
from resources.router import RouterError


class PromotionEntry(BaseModel):
    """One promotion, as ``promote history`` lists it."""

    run_id: str = Field(description="The promotion's run id (ops.runs).")
    dagster_run_id: str | None = Field(description="The Dagster run that executed it (the UI's id).")
    project_id: str = Field(description="Its project.")
    staging_env_id: str | None = Field(description="The staging environment promoted.")
    prod_env_id: str = Field(description="The production environment promoted to.")
    user: str = Field(description="Who promoted.")
    status: str = Field(description="running, success, failed or rolled_back.")
    started_at: datetime = Field(description="When it started.")
    completed_at: datetime | None = Field(description="When it ended (None: still running).")
    duration_seconds: float | None = Field(description="How long it took (None: still running).")
    cutover_at: str | None = Field(description="When traffic moved to its green (None: no cutover).")
    rolled_back_at: datetime | None = Field(description="When it was rolled back (None: it was not).")
    blue_deletion_at: datetime | None = Field(description="When blue's scheduled deletion is (or was) due.")
    blue_deletion_status: str | None = Field(description="That task's status: pending, done, failed or cancelled"
                                             " (a rollback cancels it); None: none scheduled.")
    evidence_dir: str | None = Field(description="Its evidence folder.")


def _entry(row: RunRecord, task: ScheduledTaskRecord | None) -> PromotionEntry:
    took = (row.completed_at - row.created_at).total_seconds() if row.completed_at else None
    return PromotionEntry(
        run_id=row.run_id, dagster_run_id=row.dagster_run_id, project_id=row.project_id,
        staging_env_id=row.metadata.get("staging_env_id"), prod_env_id=row.environment_id, user=row.created_by,
        status=row.status, started_at=row.created_at, completed_at=row.completed_at,
        duration_seconds=round(took, 1) if took is not None else None,
        cutover_at=row.metadata.get("cutover_timestamp"), rolled_back_at=row.rolled_back_at,
        blue_deletion_at=task.execute_at if task else None, blue_deletion_status=task.status if task else None,
        evidence_dir=row.evidence_dir)


def history(ops_db: OpsDatabase, environment_id: str | None, limit: int) -> list[PromotionEntry]:
    """The latest ``limit`` promotions (of one production environment when given), newest first."""
    rows = ops_db.promotions(environment_id, limit)
    tasks = ops_db.tasks_of_runs([r.run_id for r in rows], "delete_backup")
    return [_entry(r, tasks.get(r.run_id)) for r in rows]


def find_run(ops_db: OpsDatabase, some_id: str) -> RunRecord | None:
    """A run by its own id or by its Dagster run's id."""
    return ops_db.run_by_either_id(some_id)


def run_summary(ops_db: OpsDatabase, row: RunRecord) -> str:
    """The run's ``promotion_summary.md`` when it has one; otherwise what is known of it (a run still going, or one
    whose evidence folder is gone)."""
    if row.evidence_dir:
        path = Path(row.evidence_dir) / steps.PROMOTION_SUMMARY_MD
        if path.is_file():
            return path.read_text()
    task = ops_db.tasks_of_runs([row.run_id], "delete_backup").get(row.run_id)
    e = _entry(row, task)
    lines = [f"# Promotion {row.run_id}: {row.status.upper().replace('_', ' ')} (no summary yet)", "",
             f"- Project **{e.project_id}**: `{e.staging_env_id}` → `{e.prod_env_id}` by `{e.user}`",
             f"- Started {e.started_at.isoformat(timespec='seconds')}"
             + (f", ended {e.completed_at.isoformat(timespec='seconds')}" if e.completed_at else ", still running"),
             f"- Dagster run: `{row.dagster_run_id}`" if row.dagster_run_id else "- Dagster run: none recorded",
             f"- Cutover: {e.cutover_at or 'not performed'}"]
    if row.metadata.get("failed_step"):
        lines.append(f"- Failed at **{row.metadata['failed_step']}**: {row.metadata.get('failure_reason')}")
    lines.append(f"- Evidence: `{row.evidence_dir}`" + ("" if row.evidence_dir and Path(row.evidence_dir).is_dir()
                                                       else " (not there)"))
    return "\n".join(lines) + "\n"


class LiveEntry(BaseModel):
    """What serves one production environment, and what can still be undone."""

    environment_id: str = Field(description="The production environment.")
    project_id: str = Field(description="Its project.")
    router_serves: str | None = Field(description="The deployment the running router sends public traffic to, in"
                                      " its own words (None: it serves nothing, or did not answer).")
    router_asked: str | None = Field(description="How the router was asked (its runtime API, its loaded config).")
    router_error: str | None = Field(description="Why the router gave no answer, when it did not.")
    recorded: str | None = Field(description="The active deployment ops.deployments records.")
    agrees: bool = Field(description="The router serves what ops.deployments records.")
    since: datetime | None = Field(description="Since when the recorded deployment serves.")
    how: Literal["cutover", "rollback", "adopted", "unknown"] = Field(
        description="What made it live: a promotion's cutover, a rollback putting blue back, or adoption/seed.")
    by_run: str | None = Field(description="The run that made it live (the promotion cut over or rolled back).")
    blue_deployment: str | None = Field(description="After a cutover: the blue kept for the rollback window.")
    blue_deletion_at: datetime | None = Field(description="When blue (deployment and backup) is deleted.")
    blue_deletion_status: str | None = Field(description="Status of that task (pending, done, ...).")
    rollback_command: str | None = Field(description="The command that rolls back to blue, while it can.")


def _since(ops_db: OpsDatabase, env_id: str, deployment_id: str) -> tuple[datetime | None, str, str | None]:
    """(since when, how, by which run) ``deployment_id`` serves ``env_id``: the latest of its own run's cutover and
    the rollbacks that put it back; an adopted or seeded deployment from when it was recorded."""
    on_server = ops_db.deployment_on_server(deployment_id)
    candidates: list[tuple[datetime, str, str | None]] = []
    made_by = ops_db.run(on_server.created_by_run) if on_server and on_server.created_by_run else None
    if made_by is not None and made_by.metadata.get("cutover_timestamp"):
        candidates.append((datetime.fromisoformat(made_by.metadata["cutover_timestamp"]), "cutover", made_by.run_id))
    rollbacks = ops_db.rollbacks_to(env_id, deployment_id)
    if rollbacks and rollbacks[0].rolled_back_at:
        candidates.append((rollbacks[0].rolled_back_at, "rollback", rollbacks[0].run_id))
    if candidates:
        return max(candidates, key=lambda c: c[0])
    if on_server is not None and on_server.created_at is not None:
        return on_server.created_at, "adopted", on_server.created_by_run
    return None, "unknown", None


def live(svc: Services) -> list[LiveEntry]:
    """Per production environment: what the router serves, what the ops database records, since when, from which
    run, and blue's retention with the rollback command while a rollback is possible."""
    entries = []
    for env in svc.ops_db.environments_of_kind("production"):
        env_id = env.environment_id
        served = asked = error = None
        try:
            answer = svc.router.served_upstream(env_id)
            served, asked = answer.name, answer.source
        except RouterError as exc:
            error = str(exc)
        active = svc.ops_db.active_deployment(env_id)
        recorded = active.deployment_id if active else None
        since, how, by_run = _since(svc.ops_db, env_id, recorded) if recorded else (None, "unknown", None)
        blue = deletion_at = deletion_status = command = None
        if how == "cutover" and by_run:
            run = svc.ops_db.run(by_run)
            task = svc.ops_db.tasks_of_runs([by_run], "delete_backup").get(by_run)
            blue = run.metadata.get("blue_deployment_id") if run else None
            if task:
                deletion_at, deletion_status = task.execute_at, task.status
            if run and run.status in ("success", "failed") and (task is None or task.status == "pending"):
                command = rollback_command(by_run)
        entries.append(LiveEntry(
            environment_id=env_id, project_id=env.project_id, router_serves=served, router_asked=asked,
            router_error=error, recorded=recorded, agrees=served is not None and served == recorded,
            since=since, how=how, by_run=by_run, blue_deployment=blue, blue_deletion_at=deletion_at,
            blue_deletion_status=deletion_status, rollback_command=command))
    return entries
