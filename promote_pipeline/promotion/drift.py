"""Production's writes that green will not contain, counted against the right baseline; the drift gate's words.

A promotion replaces production's database with a copy of staging's. What production wrote after staging's data
left it is therefore lost, unless someone decides otherwise. Which rows those are depends on where staging's data
came from:

- staging was copied from production (``ops.runs``: a successful ``restore`` into staging whose source is
  production, ``latest_copy``): rows production wrote before that copy are in staging too;
- production's live deployment is itself a green of an earlier promotion: every row it holds that was written
  before that promotion's cutover came from staging's snapshot (staging's own contacts, say), so it is not
  production's work either.

The baseline is the later of the two. Only rows with a ``write_date`` after it are production's own writes since
staging's data left it. Where neither is known (no copy recorded and production never promoted into), the report
says so, and the gate asks for ``--accept-drift``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from promote_pipeline.odoo import watermarks
from resources.odoo_host import LocalOdooHost
from resources.ops_db import EnvironmentRecord, OpsDatabase

ACCEPT_FLAG = "--accept-drift"


class TableDrift(BaseModel):
    rows: int = Field(description="Rows of the table written on production after the baseline.")
    ids: str = Field(description="Their ids as ranges (``1-3, 7``), cut after a few hundred ids.")
    last_write: str = Field(description="The latest write_date among them (UTC, ISO 8601).")


class DriftReport(BaseModel):
    """What production wrote since staging's data left it, as measured at ``checked_at``."""

    known: bool = Field(description="False when no baseline is known (no copy recorded, production never promoted"
                                    " into): nothing can be counted.")
    checked_at: str = Field(description="When the count was taken (UTC, ISO 8601).")
    since: str | None = Field(default=None, description="The baseline: the later of staging_copied_at and"
                                                        " live_cutover_at.")
    staging_copied_at: str | None = Field(default=None, description="When production was last copied into staging.")
    copy_run_id: str | None = Field(default=None, description="The ops run recording that copy.")
    live_cutover_at: str | None = Field(default=None, description="The cutover of the deployment production serves"
                                                                  " now (its promotion's), if it came from one.")
    live_run_id: str | None = Field(default=None, description="The promotion whose green production serves now.")
    tables: dict[str, TableDrift] = Field(default_factory=dict, description="Per table with writes: rows, ids.")
    total: int = Field(default=0, description="Rows over every table.")
    reason: str | None = Field(default=None, description="Why the baseline is unknown, when it is.")

    @property
    def drifted(self) -> bool:
        """True when production holds writes green will not contain, or nobody can tell."""
        return not self.known or self.total > 0


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).isoformat() if value.tzinfo else value.replace(tzinfo=UTC).isoformat()


def baseline(ops_db: OpsDatabase, staging_env_id: str, prod_env_id: str) -> DriftReport:
    """The report's baseline (no counts yet): the later of staging's last copy of production and the cutover of the
    deployment production serves now."""
    now = datetime.now(UTC).isoformat()
    copy = ops_db.latest_copy(staging_env_id, source_environment_id=prod_env_id)
    copied_at = _iso(copy.completed_at) if copy and copy.completed_at else None
    live_run_id = ops_db.run_serving(prod_env_id)
    live_run = ops_db.run(live_run_id) if live_run_id else None
    cutover_at = _iso(live_run.metadata.get("cutover_timestamp")) if live_run else None
    candidates = [t for t in (copied_at, cutover_at) if t]
    if not candidates:
        return DriftReport(known=False, checked_at=now,
                           reason="the time staging was copied from production is unknown (no copy of production"
                                  " into staging is recorded, and production does not serve a promoted green)")
    return DriftReport(known=True, checked_at=now, since=max(candidates, key=datetime.fromisoformat),
                       staging_copied_at=copied_at, copy_run_id=copy.run_id if copy and copied_at else None,
                       live_cutover_at=cutover_at, live_run_id=live_run_id if cutover_at else None)


def measure(ops_db: OpsDatabase, host: LocalOdooHost, staging_env_id: str, prod: EnvironmentRecord,
            blue_db: str, carried_keys: tuple[str, ...] = (), carried_at: datetime | None = None) -> DriftReport:
    """Count production's (blue's) writes since the baseline, per table with their ids; the settings the
    carry-over copies onto green (``carried_keys``, written before ``carried_at``) are not lost and not counted."""
    report = baseline(ops_db, staging_env_id, prod.environment_id)
    if not report.known or report.since is None:
        return report
    with host.connect(prod.db_dsn_ref, blue_db, retry=False) as conn:
        tables = watermarks.drift(conn, datetime.fromisoformat(report.since), carried_keys, carried_at)
    report.tables = {name: TableDrift.model_validate(t) for name, t in tables.items()}
    report.total = sum(t.rows for t in report.tables.values())
    report.checked_at = datetime.now(UTC).isoformat()
    return report


def counts(report: DriftReport) -> str:
    """``res_partner 3, res_users 1`` (the gate's line)."""
    return ", ".join(f"{name} {t.rows}" for name, t in sorted(report.tables.items()))


def gate_refusal(report: DriftReport) -> str:
    """The drift gate's one line when it refuses (``promotion rejected: no_production_drift: ...``)."""
    if not report.known:
        return f"{report.reason}: pass {ACCEPT_FLAG} to promote anyway, accepting that writes may be lost"
    return (f"production changed since staging was copied ({report.since}): {report.total} row(s) written,"
            f" {counts(report)}; green would not contain them: pass {ACCEPT_FLAG} to promote anyway")


def gate_passed(report: DriftReport, accepted: bool) -> str:
    """The drift gate's line when it lets the promotion go on."""
    if not report.drifted:
        return f"no production write since staging was copied ({report.since})"
    if not report.known:
        return f"{ACCEPT_FLAG}: {report.reason}; accepted"
    return f"{ACCEPT_FLAG}: {report.total} row(s) written on production since {report.since} ({counts(report)})" \
           " will not be on green; accepted"


def markdown(report: DriftReport | dict[str, Any], heading: str) -> list[str]:
    """The report as the summary shows it: a sentence and a table (table, rows, ids, last write)."""
    r = report if isinstance(report, DriftReport) else DriftReport.model_validate(report)
    lines = ["", f"## {heading}", ""]
    if not r.known:
        return lines + [f"Unknown: {r.reason}."]
    basis = [f"staging copied {r.staging_copied_at}" if r.staging_copied_at else "",
             f"production live since the cutover of {r.live_run_id} at {r.live_cutover_at}" if r.live_run_id else ""]
    since = f"since {r.since} ({'; '.join(b for b in basis if b)}), counted {r.checked_at}"
    if not r.tables:
        return lines + [f"None: no row written on production {since}."]
    lines.append(f"{r.total} row(s) written on production {since}; green does not contain them:")
    lines += ["", "| table | rows | ids | last write |", "|---|---|---|---|"]
    lines += [f"| {name} | {t.rows} | {t.ids} | {t.last_write} |" for name, t in sorted(r.tables.items())]
    return lines
