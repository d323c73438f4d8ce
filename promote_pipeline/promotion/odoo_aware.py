"""The Odoo-aware parts of the steps: carry-over and fencing around restore, cutover and rollback;
module differences and production drift at snapshot; recovery of writes made on green.

Each function is called by one step (ops.py, rollback.py, the CLI) and keeps what a later step
or another process needs (the fence plan, the watermarks) in the run's ops metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from promote_pipeline.odoo import carry_over, neutralization, watermarks
from promote_pipeline.odoo import database as odoo_db
from promote_pipeline.promotion.inputs import shown
from promote_pipeline.promotion.models import Artifact, RunStarted
from promote_pipeline.promotion.services import Services
from resources.ops_db import DeploymentRecord
from resources.redaction import redact_text
from resources.router import RoutingState


class NeutralizationRemains(RuntimeError):
    """Green still carries what a module's neutralize.sql wrote; the message lists each trace."""


def prepare_green(svc: Services, run: RunStarted, green: DeploymentRecord) -> dict[str, Any]:
    """Before green's Odoo starts: blue's live settings onto green (unless turned off), and green fenced."""
    dsn = run.prod.db_dsn_ref
    carry = run.inputs.carry_over_settings
    with svc.host.connect(dsn, run.blue.db_name) as blue, svc.host.connect(dsn, green.db_name) as gdb:
        changes = carry_over.carry_over(blue, gdb, list(svc.settings.carry_over_parameters)) if carry else []
        undone = neutralization.undo(blue, gdb) if carry else []
        plan = carry_over.plan_fence(blue, gdb, follow_blue=carry)
        flipped = carry_over.fence_off(gdb)
        traces = neutralization.remaining(blue, gdb, plan.green_crons, plan.green_mail_servers, plan.blue_crons,
                                          plan.blue_mail_servers)
    if carry and traces:  # production must not run on staging's neutralization: fail the restore, roll back
        raise NeutralizationRemains(f"neutralization check: {len(traces)} trace(s) of staging's neutralization"
                                    f" remain on green: {'; '.join(traces)}")
    svc.ops_db.merge_run_metadata(run.run_id, {"fence": plan.model_dump()})
    return {"carry_over": {"enabled": carry, "changes": changes,
                           "note": None if carry else "CARRY-OVER TURNED OFF: green keeps the artifact's settings"},
            "neutralization": {"undone": undone, "remaining": traces,
                               "checked": "no trace remains" if not traces else "traces remain (carry-over off)"},
            "fence": {"green_fenced_off": flipped, "plan": plan.model_dump()}}


def snapshot_report(svc: Services, run: RunStarted, artifact: Artifact) -> dict[str, Any]:
    """Module differences between the green artifact and blue; production drift since staging's copy."""
    dsn = run.prod.db_dsn_ref
    with svc.host.connect(dsn, run.blue.db_name) as blue:
        blue_modules, _ = odoo_db.installed_modules(blue)
        green_modules = artifact.manifest.modules_installed
        diff = {
            "added": sorted(set(green_modules) - set(blue_modules)),
            "removed": sorted(set(blue_modules) - set(green_modules)),
            "version_changed": {m: {"blue": blue_modules[m], "green": green_modules[m]} for m in sorted(green_modules)
                                if m in blue_modules and blue_modules[m] != green_modules[m]},
        }
        copy = svc.ops_db.latest_copy(run.staging.environment_id, source_environment_id=run.prod.environment_id)
        if copy and copy.completed_at:
            since: datetime = copy.completed_at
            tables = watermarks.drift(blue, since)
            drift = {"known": True, "staging_copied_at": since.isoformat(), "copy_run_id": copy.run_id,
                     "rows_written_on_blue_since": tables, "total": sum(tables.values())}
        else:
            drift = {"known": False, "reason": "no recorded copy of production into staging"}
    return {"module_diff": diff, "production_drift": drift}


def cutover_fenced(svc: Services, run: RunStarted, green: DeploymentRecord,
                   switch: Callable[[], RoutingState]) -> tuple[RoutingState, dict[str, Any]]:
    """Watermarks on green, blue's crons and mail off, the router switch, green's on: one step."""
    dsn = run.prod.db_dsn_ref
    meta = _metadata(svc, run.run_id)
    plan = carry_over.FencePlan.model_validate(meta.get("fence", {}))
    with svc.host.connect(dsn, run.blue.db_name, autocommit=True) as blue, \
            svc.host.connect(dsn, green.db_name, autocommit=True) as gdb:
        marks = watermarks.take(gdb)
        svc.ops_db.merge_run_metadata(run.run_id, {"watermarks": marks})
        blue_off = carry_over.at_cutover_blue(blue)
        after = switch()
        green_on = carry_over.at_cutover_green(gdb, plan)
        active = {"blue": carry_over.active_counts(blue), "green": carry_over.active_counts(gdb)}
    return after, {"fence": {"blue_turned_off": blue_off, "green_turned_on": green_on, "active_after": active},
                   "watermarks_tables": len(marks)}


def unfence_on_rollback(svc: Services, run: RunStarted, greens: list[DeploymentRecord]) -> dict[str, Any]:
    """Green's crons and mail off, blue's back as they were; and what was written on green since cutover."""
    meta = _metadata(svc, run.run_id)
    if "fence" not in meta:
        return {"fence": "no fence plan (failure before the green restore finished)"}
    plan = carry_over.FencePlan.model_validate(meta["fence"])
    dsn = run.prod.db_dsn_ref
    facts: dict[str, Any] = {"green_turned_off": {}, "writes_on_green": {}}
    errors: dict[str, str] = {}
    # Each part on its own: a green that refuses to be fenced off must not leave blue, which serves again,
    # without its crons and mail, nor the other way round. What failed is reported under "errors".
    for green in greens:
        try:
            if not svc.host.database_exists(dsn, green.db_name):
                continue
            with svc.host.connect(dsn, green.db_name, autocommit=True) as gdb:
                facts["green_turned_off"][green.deployment_id] = carry_over.fence_off(gdb)
                if "watermarks" in meta:
                    facts["writes_on_green"] = watermarks.changes_since(gdb, meta["watermarks"])
        except Exception as exc:
            errors[green.deployment_id] = redact_text(f"{type(exc).__name__}: {exc}")
    try:
        with svc.host.connect(dsn, run.blue.db_name, autocommit=True) as blue:
            facts["blue_restored"] = carry_over.at_rollback_blue(blue, plan)
            facts["blue_active_after"] = carry_over.active_counts(blue)
    except Exception as exc:
        errors[run.blue.deployment_id] = redact_text(f"{type(exc).__name__}: {exc}")
    facts["writes_on_green_total"] = sum(v["created"] + v["changed"] for v in facts["writes_on_green"].values())
    if errors:
        facts["errors"] = errors
    return facts


def export_green_writes(svc: Services, run_id: str, out: Path | None) -> dict[str, Any]:
    """CSV per table of what was written on a rolled-back green since cutover (``promote recover``)."""
    row = svc.ops_db.run(run_id)
    if row is None or row.operation_type != "promote":
        raise ValueError(f"run_id: {shown(run_id)} is not a promotion run")
    if out is None and not row.evidence_dir:
        # Never the current directory by default: the export holds production rows.
        raise ValueError(f"run_id: {run_id} has no evidence folder; name one with --out")
    meta = row.metadata
    if "watermarks" not in meta:
        raise ValueError(f"run_id: {run_id} never cut over: green served no traffic, there is nothing to recover")
    green = svc.ops_db.latest_deployment_of_run(run_id)
    if green is None or green.state == "deleted" or not svc.host.database_exists(green.db_dsn_ref, green.db_name):
        raise ValueError(f"run_id: {run_id}: green's database is gone (its rollback window ended)")
    if green.state == "active":
        raise ValueError(f"run_id: {run_id}: green is live (the promotion was not rolled back); nothing was lost")
    folder = out or Path(row.evidence_dir or "") / "recovered"
    with svc.host.connect(green.db_dsn_ref, green.db_name) as gdb:
        counts = watermarks.export(gdb, meta["watermarks"], folder)
    return {"run_id": run_id, "database": green.db_name, "folder": str(folder), "rows": counts}


def _metadata(svc: Services, run_id: str) -> dict[str, Any]:
    """The run's metadata (the fence plan, the watermarks), or nothing if the run is not recorded."""
    row = svc.ops_db.run(run_id)
    return row.metadata if row else {}
