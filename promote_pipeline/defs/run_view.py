"""What each step of a promotion shows in the Dagster UI's run view: its output metadata.

One function per op, called from that op's ``context.add_output_metadata(...)``. A person looking
at a run wants the artifact ids, sizes and checksums, the durations, the routing before and after,
the smoke results, the stability figures and the summary, and a link (path) to each evidence file
the step wrote. ``promote status`` and ``promote launch`` read the outputs object back from the
entries named in ``launch.OUTPUT_KEYS`` (``run_id``, ``status``, ``evidence_dir``,
``blue_backup_id``, ``green_artifact_id``, ``cutover_timestamp``).

Everything passes through ``redaction`` on its way out: metadata lands in Dagster's event log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from dagster import MetadataValue, OpExecutionContext

from promote_pipeline.promotion import progress, steps
from promote_pipeline.promotion.inputs import PromotionInputs, run_tags
from promote_pipeline.promotion.models import (
    Artifact,
    DeploymentRecord,
    PromotionOutcome,
    SmokeResult,
    StabilityMetrics,
    human_size,
)
from resources.redaction import redact, redact_text
from resources.router import RoutingState

Metadata = dict[str, Any]


# -- building blocks ------------------------------------------------------------------------------
def text(value: Any) -> MetadataValue:
    return MetadataValue.text(redact_text(str(value)))


def md(markdown: str) -> MetadataValue:
    return MetadataValue.md(redact_text(markdown))


def json_value(value: Any) -> MetadataValue:
    return MetadataValue.json(redact(value))


def path(value: str | Path) -> MetadataValue:
    return MetadataValue.path(redact_text(str(value)))


def evidence(evidence_dir: str | Path, *names: str) -> Metadata:
    """``evidence: <file>`` path entries: the files this step wrote, clickable-copyable in the UI."""
    return {f"evidence: {name}": path(Path(evidence_dir) / name) for name in names}


def duration(step: str) -> Metadata:
    seconds = progress.elapsed(step)
    return {"step_seconds": MetadataValue.float(seconds)} if seconds is not None else {}


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in row) + " |"
              for row in rows]
    return "\n".join(lines)


# -- the eight steps --------------------------------------------------------------------------------
def run_started(context: OpExecutionContext, run_id: str, evidence_dir: str | Path, blue_deployment: str,
                promotion: PromotionInputs, preflight: Iterable[Any]) -> Metadata:
    """Step 1. Also names the project, the environments and the user in the run's tags when the run was
    launched without them (from the launchpad): tags given at launch are never overwritten."""
    tags = {k: v for k, v in run_tags(promotion.model_dump()).items() if k not in context.run.tags}
    if tags:
        context.instance.add_run_tags(context.run_id, tags)
    checks = [(n, r.name, "pass" if r.passed else "FAIL", r.message) for n, r in enumerate(preflight, 1)]
    return {
        "run_id": text(run_id),
        "project": text(promotion.project_id),
        "staging → production": text(f"{promotion.staging_env_id} → {promotion.prod_env_id}"),
        "user": text(promotion.user_id),
        "blue_deployment": text(blue_deployment),
        "inputs": json_value(promotion.model_dump()),
        "preflight": md(_table(["#", "check", "result", "detail"], checks)),
        **duration(steps.CREATE_OPS_RUN.name),
        "evidence_dir": path(evidence_dir),
        **evidence(evidence_dir, steps.INPUTS_JSON, steps.RUN_ID_TXT),
    }


def artifact_taken(role: str, artifact: Artifact, facts: Mapping[str, Any], evidence_dir: str | Path,
                   enterprise_modules: Iterable[str] = ()) -> Metadata:
    """Steps 2 (green: the staging snapshot) and 3 (blue: the production backup)."""
    step, file = (steps.SNAPSHOT_STAGING.name, steps.STAGING_SNAPSHOT_JSON) if role == "green" else \
        (steps.BACKUP_PRODUCTION.name, steps.BLUE_BACKUP_JSON)
    id_key = "green_artifact_id" if role == "green" else "blue_backup_id"
    meta: Metadata = {
        id_key: text(artifact.artifact_id),
        "source": text(f"{artifact.source_env.environment_id} ({artifact.source_env.kind}),"
                       f" database {artifact.source_env.db}"),
        "db_dump_bytes": MetadataValue.int(artifact.db_dump.size_bytes),
        "db_dump_size": text(human_size(artifact.db_dump.size_bytes)),
        "db_dump_sha256": text(artifact.db_dump.sha256),
        "filestore_bytes": MetadataValue.int(artifact.filestore.size_bytes),
        "filestore_size": text(human_size(artifact.filestore.size_bytes)),
        "filestore_sha256": text(artifact.filestore.sha256),
        "filestore_files": MetadataValue.int(artifact.filestore.file_count),
        "odoo_version": text(artifact.manifest.odoo_version),
        "modules_installed": MetadataValue.int(len(artifact.manifest.modules_installed)),
        "dump_seconds": MetadataValue.float(float(facts.get("dump_seconds", 0.0))),
        "seconds": MetadataValue.float(float(facts.get("total_seconds", 0.0))),
        **duration(step),
        "verification": json_value(facts.get("verification", {})),
        "artifact_path": path(Path(artifact.db_dump.path).parent),
        **evidence(evidence_dir, file),
    }
    if role == "green":
        meta["enterprise_modules"] = text(", ".join(enterprise_modules) or "none")
    return meta


def green_restored(green: DeploymentRecord, facts: Mapping[str, Any], evidence_dir: str | Path) -> Metadata:
    """Step 4."""
    return {
        "green_deployment": text(green.deployment_id),
        "green_database": text(green.db_name),
        "green_port": MetadataValue.int(green.http_port or 0),
        "restore_seconds": MetadataValue.float(float(facts.get("restore_seconds", 0.0))),
        "ready_seconds": MetadataValue.float(float(facts.get("ready_seconds", 0.0))),
        **duration(steps.RESTORE_GREEN.name),
        "post_restore_checks": json_value(facts.get("checks", {})),
        "verification": json_value(facts.get("verification", {})),
        **evidence(evidence_dir, steps.GREEN_RESTORE_JSON),
    }


def smoke_tested(results: list[SmokeResult], skipped: bool, evidence_dir: str | Path) -> Metadata:
    """Step 5: one entry per test (``pass: detail``), the table, the count."""
    meta: Metadata = {r.name: text(("pass" if r.passed else "FAIL") + f": {r.detail}") for r in results}
    if skipped:
        meta["smoke_tests"] = text("skipped (skip_smoke_tests=true, not a production target)")
    else:
        meta["passed"] = text(f"{sum(r.passed for r in results)}/{len(results)}")
        meta["results"] = md(_table(["test", "result", "detail", "ms"], [
            (r.name, "pass" if r.passed else "FAIL", r.detail, r.duration_ms) for r in results]))
    return {**meta, **duration(steps.SMOKE_TEST_GREEN.name), **evidence(evidence_dir, steps.SMOKE_TESTS_JSON)}


def approval(gate: dict[str, Any] | None) -> Metadata:
    """Step 5's approval gate, when the run had one: how it ended, who approved, how long it waited."""
    if gate is None:
        return {}
    meta: Metadata = {"approval": text(gate["state"] + (f" by {gate['approved_by']}" if gate.get("approved_by")
                                                        else "")),
                      "approval_required_by": text(gate["required_by"]),
                      "approval_waited_seconds": MetadataValue.float(float(gate.get("waited_seconds") or 0.0)),
                      "approval_preview_url": MetadataValue.url(gate["preview_url"])}
    return meta


def _routing_row(entry: str, before: RoutingState, after: RoutingState) -> tuple[str, str, str]:
    def where(state: RoutingState) -> str:
        up = state.active if entry == "active" else state.preview
        return f"{up.name} ({up.colour}, {up.host}:{up.http_port})" if up else "none"

    return entry, where(before), where(after)


def cut_over(before: RoutingState, after: RoutingState, switch_ms: int, timestamp: datetime,
             evidence_dir: str | Path, facts: dict[str, Any] | None = None) -> Metadata:
    """Step 6: where each entry point sent traffic before and after the switch; what production wrote that green
    does not contain, and how long blue was read-only (``--freeze-blue``)."""
    lost = (facts or {}).get("production_writes_not_on_green") or {}
    freeze = (facts or {}).get("blue_freeze") or {}
    extra: Metadata = {}
    if lost:
        extra["production_writes_not_on_green"] = text(lost.get("in_words", "?"))
    if freeze.get("frozen"):
        extra["blue_read_only_seconds"] = MetadataValue.float(float(freeze.get("read_only_seconds", 0.0)))
    return {
        **extra,
        "cutover_timestamp": text(timestamp.isoformat()),
        "switch_ms": MetadataValue.int(switch_ms),
        "router": text(after.router),
        "active_before": text(before.active.name if before.active else "none"),
        "active_after": text(after.active.name if after.active else "none"),
        "routing": md(_table(["entry point", "before", "after"],
                             [_routing_row(e, before, after) for e in ("active", "preview")])),
        "routing_before": json_value(before.model_dump(mode="json")),
        "routing_after": json_value(after.model_dump(mode="json")),
        **duration(steps.CUTOVER.name),
        **evidence(evidence_dir, steps.CUTOVER_JSON),
    }


def stability_watched(metrics: StabilityMetrics, target: str, evidence_dir: str | Path) -> Metadata:
    """Step 7: the figures of the window (and the raw fields, as before)."""
    return {
        **{k: v for k, v in metrics.model_dump(mode="json").items() if v is not None and k != "errors"},
        "errors": text("; ".join(f"{e.at.isoformat(timespec='milliseconds')} {e.source}"
                                 f"{'' if e.counted else ' (not counted)'}: {e.detail}" for e in metrics.errors)
                       or "none"),
        "error_rate": text(f"{metrics.http_error_rate:.2%} of {metrics.requests} requests"
                           + (" green served, users' and the probe's" if metrics.judged_on == "router" else
                              " of the probe (the router's counts were not read)")
                           + f" (limit {metrics.thresholds.max_error_rate:.2%})"),
        "verdict": text("pass" if metrics.passed else f"FAIL: {metrics.reason}"),
        "target": text(target),
        **duration(steps.MONITOR_STABILITY.name),
        **evidence(evidence_dir, steps.STABILITY_METRICS_JSON),
    }


def finalized(summary: str, outcome: PromotionOutcome, evidence_files: Mapping[str, str]) -> Metadata:
    """Step 8: the outputs object, the summary (markdown, and its headline as text), every evidence file."""
    headline = summary.splitlines()[0].lstrip("# ").strip() if summary else outcome.status
    return {
        "summary_headline": text(headline),
        "summary": md(summary),
        "run_id": text(outcome.run_id),
        "status": text(outcome.status),
        "blue_backup_id": text(outcome.blue_backup_id or ""),
        "green_artifact_id": text(outcome.green_artifact_id or ""),
        "cutover_timestamp": text(outcome.cutover_timestamp or ""),
        "evidence_dir": path(outcome.evidence_dir),
        **duration(steps.FINALIZE.name),
        **{f"evidence: {name}": path(p) for name, p in evidence_files.items()},
    }
