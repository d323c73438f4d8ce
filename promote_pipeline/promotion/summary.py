"""final_status.json and promotion_summary.md: how a run ended, for scripts and for people."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from promote_pipeline.promotion import drift, notify, steps
from promote_pipeline.promotion.evidence import Evidence
from promote_pipeline.promotion.models import PromotionOutcome
from promote_pipeline.promotion.retention import summary_lines
from promote_pipeline.promotion.settings import Retention


def write_final(evidence: Evidence, outcome: PromotionOutcome, started_at: datetime, inputs: dict[str, Any],
                failed_step: str | None = None, reason: str | None = None,
                extra: dict[str, Any] | None = None, retention: Retention | None = None,
                live: LiveAfter | None = None) -> str:
    """Write final_status.json and promotion_summary.md; return the summary markdown. ``retention``: the
    installation's artifact retention, from which both say when this run's artifacts go; ``live``: what the run
    leaves serving, for the summary's closing section (what is live, when blue goes, how to roll back)."""
    completed = datetime.now(UTC)
    kept = summary_lines(retention or Retention(), outcome, started_at, completed, inputs)
    notify.write_final_status(evidence, {
        **outcome.model_dump(mode="json"),
        "started_at": started_at.isoformat(),
        "completed_at": completed.isoformat(),
        "duration_seconds": round((completed - started_at).total_seconds(), 3),
        "failed_step": failed_step,
        "reason": reason,
        "artifact_retention": kept,
        **(extra or {}),
    })
    markdown = render(evidence, outcome, started_at, completed, inputs, failed_step, reason, kept, live)
    evidence.write_text(steps.PROMOTION_SUMMARY_MD, markdown)
    return markdown


def _json(evidence: Evidence, name: str) -> dict[str, Any]:
    return evidence.read_json(name) if evidence.exists(name) else {}


def render(evidence: Evidence, outcome: PromotionOutcome, started: datetime, completed: datetime,
           inputs: dict[str, Any], failed_step: str | None, reason: str | None,
           kept: dict[str, str] | None = None, live: LiveAfter | None = None) -> str:
    word = {"success": "SUCCESS", "failed": "FAILED", "rolled_back": "ROLLED BACK"}[outcome.status]
    lines = [
        f"# Promotion {outcome.run_id}: {word}",
        "",
        f"- Project **{inputs.get('project_id')}**: `{inputs.get('staging_env_id')}` → `{inputs.get('prod_env_id')}`"
        f" by `{inputs.get('user_id')}`",
        f"- Started {started.isoformat(timespec='seconds')}, ended {completed.isoformat(timespec='seconds')}"
        f" ({(completed - started).total_seconds():.1f} s)",
        f"- Green artifact: `{outcome.green_artifact_id}`; blue backup: `{outcome.blue_backup_id}`",
        f"- Cutover: {outcome.cutover_timestamp or 'not performed'}",
    ]
    if failed_step:
        lines.append(f"- Failed at **{failed_step}**: {reason}")
    snap = _json(evidence, steps.STAGING_SNAPSHOT_JSON)
    diff = snap.get("module_diff")
    if diff:
        lines += ["", "## Modules (green vs blue)", "",
                  f"Added: {', '.join(diff['added']) or 'none'}; removed: {', '.join(diff['removed']) or 'none'};"
                  f" version changed: {', '.join(diff['version_changed']) or 'none'}."]
    if snap.get("production_drift"):
        lines += drift.markdown(snap["production_drift"], "Production drift (at the snapshot)")
    cut = _json(evidence, steps.CUTOVER_JSON)
    if cut.get("production_writes_not_on_green"):
        lines += drift.markdown(cut["production_writes_not_on_green"], "Production writes green does not contain")
        freeze = cut.get("blue_freeze") or {}
        lines.append("")
        lines.append(f"Blue frozen read-only at {freeze['frozen_at']}: production refused writes for"
                     f" {freeze.get('read_only_seconds', '?')} s until the cutover." if freeze.get("frozen") else
                     "Blue was not frozen (--freeze-blue not given): a write between the last check and the switch"
                     " is counted above, not refused.")
    restore = _json(evidence, steps.GREEN_RESTORE_JSON)
    carry = restore.get("carry_over")
    if carry:
        lines += ["", "## Production's live settings", ""]
        if carry.get("enabled"):
            lines.append(f"Carried over from blue onto green: {len(carry['changes'])} change(s)"
                         " (config parameters, mail servers, payment providers); crons and outgoing mail fenced"
                         " until cutover.")
        else:
            lines.append("**⚠️ CARRY-OVER WAS TURNED OFF for this promotion: green runs with the staging artifact's"
                         " own settings (a neutralized staging stays neutralized: no crons, no outgoing mail).**")
    smoke = _json(evidence, steps.SMOKE_TESTS_JSON)
    if smoke.get("results"):
        lines += ["", "## Smoke tests", "", "| test | result | detail |", "|---|---|---|"]
        for r in smoke["results"]:
            lines.append(f"| {r['name']} | {'pass' if r['passed'] else 'FAIL'} | {r['detail']} |")
    elif smoke.get("skipped"):
        lines += ["", "## Smoke tests", "", "**Skipped** (skip_smoke_tests=true)."]
    stab = _json(evidence, steps.STABILITY_METRICS_JSON)
    if stab.get("reached", True) and "requests" in stab:
        lines += ["", "## Stability", "", _stability_line(stab)] + _stability_errors(stab)
    rb = _json(evidence, steps.ROLLBACK_JSON)
    if rb.get("triggered") and rb.get("completed") is False:
        # The switch back itself failed: nothing here may read as if traffic were on blue.
        lines += ["", "## Rollback", "",
                  f"**⚠️ THE ROLLBACK DID NOT COMPLETE: {rb.get('error')}.** Traffic was not moved back to blue, and"
                  " green was left as it was; see `rollback.json` and ask the router what it serves."]
    elif rb.get("triggered"):
        problems = rb.get("problems") or []
        cleanup_failed = any(p.get("part") in ("green_stop", "green_cleanup") for p in problems)
        lines += ["", "## Rollback", "",
                  f"Traffic back on blue `{rb.get('blue_deployment')}` {rb.get('detection_to_blue_ms')} ms after"
                  f" detection. Green `{rb.get('green_deployment')}`: "
                  + ("clean-up incomplete (below)." if cleanup_failed
                     else "database kept until the rollback window ends." if rb.get("green_database_kept")
                     else "removed (it never served traffic).")]
        notes = rb.get("notes") or []
        if problems:
            lines.append(f"\n**{len(problems)} part(s) of the rollback failed** (everything else was done):")
            lines += [f"- {p.get('part')}{' of ' + p['deployment'] if p.get('deployment') else ''}: {p.get('error')}"
                      for p in problems]
        if notes:
            lines += ["", "What the rollback could not do, or left alone:", ""] + [f"- {note}" for note in notes]
        if rb.get("writes_on_green_total"):
            lines.append(f"\n**{rb['writes_on_green_total']} row(s) were written on green while it served**"
                         f" ({rb['writes_on_green']}); `promote recover {outcome.run_id}` exports them as CSV.")
    if kept:
        lines += ["", "## Artifacts", ""] + [f"- `{artifact_id}` {text}" for artifact_id, text in kept.items()]
    lines += ["", "## Evidence", ""] + [f"- `{name}`" for name in evidence.paths()]
    lines += ["", "## Live now", ""] + live_now_lines(outcome, inputs, completed, rb, live or LiveAfter())
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LiveAfter:
    """What a run leaves serving, as its step knows it (the summary's closing section is made from it and from
    rollback.json): the blue it started from and, for a success, the green now live and blue's window."""

    blue_deployment: str | None = None
    green_deployment: str | None = None
    window_hours: int | None = None


def rollback_command(run_id: str) -> str:
    """The command that rolls ``run_id`` back, as ``promote rollback`` takes it."""
    return f'promote rollback {run_id} --reason "why"'


def live_now_lines(outcome: PromotionOutcome, inputs: dict[str, Any], completed: datetime, rb: dict[str, Any],
                   live: LiveAfter) -> list[str]:
    """The summary's last section: what serves production now and since when, when blue goes, and the exact
    command to roll back (or, when blue serves, how to see that it does). Said at the run's end: `promote live`
    asks the router what it serves at any later time."""
    env = inputs.get("prod_env_id")
    verify = f"`promote live` (asks the router itself) and `promote validate {env}`"
    if outcome.status == "success":
        hours = live.window_hours or inputs.get("rollback_window_hours")
        due = (completed + timedelta(hours=int(hours))).isoformat(timespec="seconds") if hours else "unknown"
        return [f"- `{env}` is served by green `{live.green_deployment}` since the cutover at"
                f" {outcome.cutover_timestamp}.",
                f"- Blue `{live.blue_deployment}` and its backup `{outcome.blue_backup_id}` will be deleted at {due}"
                f" (the {hours} h rollback window; `promote window {outcome.run_id} --hours N` moves it).",
                f"- To roll back until then: `{rollback_command(outcome.run_id)}`",
                f"- To verify what serves: {verify}."]
    if rb.get("triggered") and rb.get("completed"):
        kept = rb.get("green_kept_until")
        served = (f"- `{env}` is served by blue `{rb.get('blue_deployment')}` again, since the rollback at"
                  f" {rb.get('traffic_on_blue_at')}" if outcome.cutover_timestamp else
                  f"- `{env}` is still served by blue `{rb.get('blue_deployment')}`: the run never cut over")
        return [f"{served}; nothing of blue is deleted by this run.",
                f"- Green `{rb.get('green_deployment')}`: "
                + (f"database kept until {kept} (`promote recover {outcome.run_id}` exports its writes)." if kept
                   else "removed."),
                f"- To verify that blue serves: {verify}."]
    if rb.get("triggered"):  # the switch back failed: green may still serve
        return [f"- `{env}`: the rollback did not complete; the router may still serve green. Finish it with"
                f" `{rollback_command(outcome.run_id)}` once the router answers.",
                f"- To see what serves: {verify}."]
    if outcome.cutover_timestamp:  # failed with auto-rollback off: green stays live, as it stands
        return [f"- `{env}` was left as it stands (auto-rollback off): the router serves what `promote live` says"
                f" (green {live.green_deployment or 'of this run'} since the cutover at {outcome.cutover_timestamp}).",
                f"- Blue `{live.blue_deployment}` is kept while production runs on green.",
                f"- To roll back: `{rollback_command(outcome.run_id)}`"]
    return [f"- `{env}` is still served by blue `{live.blue_deployment}`: the run ended before the cutover;"
            " nothing of blue is deleted.",
            f"- To verify that blue serves: {verify}."]


def _stability_line(stab: dict[str, Any]) -> str:
    """The figures of the window actually watched: an early verdict or an abort ends it before its length."""
    watched = stab.get("watched_seconds")
    span = f"{watched:.1f} s watched" if watched is not None else f"{stab['window_seconds']} s"
    if stab.get("ended_early"):
        span += f" (window {stab['window_seconds']} s, ended early)"
    unconfirmed = stab.get("unconfirmed_probe_failures") or 0
    traffic = stab.get("traffic")
    if stab.get("judged_on") == "router" and traffic:
        p95 = stab.get("p95_ms")
        whose = (f" (every request green served, as {traffic['router']} counted them; {stab.get('probe_requests', 0)}"
                 f" of them the probe's): 5xx {stab.get('http_5xx', 0)},"
                 f" p95 {'n/a' if p95 is None else f'{p95:.0f} ms'},")
    elif "judged_on" in stab:
        whose = " (the probe's; the router's counts were not read):"
    else:  # a file written before green was judged on the router's counts
        whose = ":"
    return (f"{stab['requests']} requests over {span}{whose} error rate {stab['http_error_rate']:.2%},"
            f" database errors {stab['db_connection_errors']}, crashes {stab['process_crashes']}"
            + (f", {unconfirmed} probe failure(s) of the monitor not confirmed by an immediate retry (not counted)"
               if unconfirmed else "")
            + f" — {'pass' if stab['passed'] else 'FAIL: ' + str(stab.get('reason'))}")


def _stability_errors(stab: dict[str, Any]) -> list[str]:
    errors = stab.get("errors") or []
    if not errors:
        return []
    lines = ["", "| time (UTC) | source | counted | path | status | detail |", "|---|---|---|---|---|---|"]
    for e in errors:
        detail = str(e["detail"]).replace("|", "\\|")
        path = str(e.get("path") or "").replace("|", "\\|")
        lines.append(f"| {e['at']} | {e['source']} | {'yes' if e['counted'] else 'no'} | {path} |"
                     f" {e.get('status') or ''} | {detail} |")
    if stab.get("errors_not_listed"):
        lines.append(f"\n{stab['errors_not_listed']} further error(s) not listed.")
    return lines
