"""The Odoo-aware parts of the steps: carry-over and fencing around restore, cutover and rollback;
module differences and production drift at snapshot; recovery of writes made on green.

Each function is called by one step (ops.py, rollback.py, the CLI) and keeps what a later step
or another process needs (the fence plan, the watermarks) in the run's ops metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from promote_pipeline.odoo import carry_over, neutralization, watermarks
from promote_pipeline.odoo import database as odoo_db
from promote_pipeline.promotion import drift, progress
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
    svc.ops_db.merge_run_metadata(run.run_id, {"fence": plan.model_dump(),
                                               "carried_over_at": datetime.now(UTC).isoformat() if carry else None})
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
    report = drift.measure(svc.ops_db, svc.host, run.staging.environment_id, run.prod, run.blue.db_name,
                           _carried(svc, run))
    return {"module_diff": diff, "production_drift": report.model_dump()}


class DriftAtCutover(RuntimeError):
    """Production was written between the drift gate and the cutover, and the loss was not accepted."""


def cutover_fenced(svc: Services, run: RunStarted, green: DeploymentRecord,
                   switch: Callable[[], RoutingState]) -> tuple[RoutingState, dict[str, Any]]:
    """Blue frozen (``freeze_blue``), the last drift check, watermarks on green, blue's crons and mail off, the
    router switch, green's on: one step. Production's writes are counted once more after the switch: that count,
    not the check's, is what green does not contain (without a freeze a write can land between the two)."""
    dsn = run.prod.db_dsn_ref
    meta = _metadata(svc, run.run_id)
    plan = carry_over.FencePlan.model_validate(meta.get("fence", {}))
    freeze: dict[str, Any] = {"frozen": False}
    with svc.host.connect(dsn, run.blue.db_name, autocommit=True) as blue, \
            svc.host.connect(dsn, green.db_name, autocommit=True) as gdb:
        frozen_mono = 0.0
        if run.inputs.freeze_blue:
            frozen_at = datetime.now(UTC)
            role = run.blue.db_role
            privileges = odoo_db.write_privileges(blue, role) if role else []
            # Recorded before the freeze: whoever rolls this run back (this process, the safety net, a person)
            # finds it and grants back exactly what was revoked.
            svc.ops_db.merge_run_metadata(run.run_id, {"blue_frozen_at": frozen_at.isoformat(),
                                                       "blue_freeze_role": role,
                                                       "blue_freeze_privileges": privileges})
            frozen_mono = time.monotonic()
            ended = odoo_db.freeze(blue, role, privileges)
            revoked = sum(len(group[2]) for group in privileges)
            freeze = {"frozen": True, "frozen_at": frozen_at.isoformat(), "sessions_ended": ended,
                      "relations_revoked": revoked}
            progress.say(f"      blue frozen read-only (write privileges revoked on {revoked} relation(s),"
                         f" {ended} session(s) ended)")
        carried_at = datetime.fromisoformat(meta["carried_over_at"]) if meta.get("carried_over_at") else None
        carried = _carried(svc, run) if carried_at else ()

        def count() -> drift.DriftReport:
            return drift.measure(svc.ops_db, svc.host, run.staging.environment_id, run.prod, run.blue.db_name,
                                 carried, carried_at)

        last = count()
        if last.drifted and not run.inputs.accept_drift:
            raise DriftAtCutover(f"no_production_drift at cutover: {drift.gate_refusal(last)}")
        marks = watermarks.take(gdb)
        svc.ops_db.merge_run_metadata(run.run_id, {"watermarks": marks})
        blue_off = carry_over.at_cutover_blue(blue)
        after = switch()
        if freeze["frozen"]:
            freeze["read_only_seconds"] = round(time.monotonic() - frozen_mono, 3)
            svc.ops_db.merge_run_metadata(run.run_id, {"blue_read_only_seconds": freeze["read_only_seconds"]})
        green_on = carry_over.at_cutover_green(gdb, plan)
        active = {"blue": carry_over.active_counts(blue), "green": carry_over.active_counts(gdb)}
    try:
        lost = count()
    except Exception as exc:  # green serves: a count that fails must not roll back a good cutover; it says so
        lost = drift.DriftReport(known=False, checked_at=datetime.now(UTC).isoformat(),
                                 reason=redact_text(f"the count after the switch failed: {type(exc).__name__}: {exc}"
                                                    f" (the last check before it found {in_words(last)})"))
    progress.say(f"      production writes green does not contain: {in_words(lost)}"
                 + (f"; production read-only {freeze['read_only_seconds']} s" if freeze["frozen"] else ""))
    return after, {"fence": {"blue_turned_off": blue_off, "green_turned_on": green_on, "active_after": active},
                   "watermarks_tables": len(marks), "blue_freeze": freeze,
                   "last_drift_check": last.model_dump(),
                   "production_writes_not_on_green": {**lost.model_dump(), "in_words": in_words(lost)}}


def _carried(svc: Services, run: RunStarted) -> tuple[str, ...]:
    """The settings the carry-over copies from blue onto green (none when it is turned off)."""
    return tuple(svc.settings.carry_over_parameters) if run.inputs.carry_over_settings else ()


def in_words(report: drift.DriftReport) -> str:
    """``none``, or ``3 row(s): res_partner 2, res_users 1``, or ``unknown (why)``."""
    if not report.known:
        return f"unknown ({report.reason})"
    return f"{report.total} row(s): {drift.counts(report)}" if report.total else "none"


def thaw_blue(svc: Services, run: RunStarted) -> dict[str, Any]:
    """Blue writable again, if this run froze it (``freeze_blue``): called wherever traffic is (back) on blue."""
    meta = _metadata(svc, run.run_id)
    if "blue_frozen_at" not in meta:
        return {"frozen": False}
    with svc.host.connect(run.prod.db_dsn_ref, run.blue.db_name, autocommit=True) as blue:
        ended = odoo_db.thaw(blue, meta.get("blue_freeze_role"), meta.get("blue_freeze_privileges") or [])
    thawed_at = datetime.now(UTC).isoformat()
    svc.ops_db.merge_run_metadata(run.run_id, {"blue_thawed_at": thawed_at})
    progress.say(f"      blue writable again ({ended} read-only session(s) ended)")
    return {"frozen": True, "frozen_at": meta["blue_frozen_at"], "thawed_at": thawed_at, "sessions_ended": ended,
            "relations_revoked": sum(len(group[2]) for group in meta.get("blue_freeze_privileges") or [])}


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
