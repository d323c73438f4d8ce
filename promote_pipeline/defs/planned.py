"""Planned promotions: ``promotion_schedules.yaml`` becomes Dagster schedules.

Each entry is a promotion to run at a planned time (a promotion for Sunday 02:00, say)::

    schedules:
      - name: demo_sunday_0200          # the schedule's name: letters, digits and '_'
        cron: "0 2 * * 0"               # minute hour day-of-month month day-of-week
        timezone: Europe/Brussels       # an IANA time zone; default UTC
        description: Weekly promotion   # optional
        inputs:                         # the promotion's inputs, under the same rules as `promote run`
          project_id: proj_demo
          staging_env_id: env_demo_staging
          prod_env_id: env_demo_prod
          user_id: demo_admin

Every entry is checked when the definitions load (its keys, name, cron, time zone, and its inputs
with ``inputs.validate``, the rules every promotion obeys); a bad entry makes loading fail with
one message naming the file and the entry. The file is read strictly: a key given twice in one
mapping is refused (PyYAML would keep the last one silently), and so is a number written as a
string (``stability_window_seconds: "10"``). Schedules are created **stopped**: a person starts one
in the UI (Automation) or with ``dagster schedule start``.

A tick whose production environment is busy is skipped with the reason, not queued behind the run
that holds it: a planned promotion that starts an hour late is a different decision. Busy means a
promotion of that environment is ``running`` in ``ops.runs``, its advisory lock is held, or a
Dagster run for it is queued or in progress.

``PROMOTE_SCHEDULES_FILE`` names another file (tests use it); a missing file means no planned
promotions.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from pathlib import Path
from typing import Any

import yaml
from dagster import (
    DagsterRunStatus,
    DefaultScheduleStatus,
    JobDefinition,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promote_pipeline.promotion import inputs as input_rules
from promote_pipeline.promotion import strict_yaml
from promote_pipeline.promotion.settings import PROJECT_DIR
from resources.ops_db import OpsDatabase

DEFAULT_FILE = PROJECT_DIR / "promotion_schedules.yaml"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
             DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


class PlannedPromotionError(ValueError):
    """A bad entry (or file) of promotion_schedules.yaml; the message names both."""


class PlannedPromotion(BaseModel):
    """One entry of promotion_schedules.yaml."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(description="Schedule name in Dagster: letters, digits and '_', unique.")
    cron: str = Field(description="When, as a cron expression (minute hour day-of-month month day-of-week).")
    timezone: str = Field(default="UTC", description="IANA time zone the cron expression is read in.")
    description: str | None = Field(default=None, description="What this planned promotion is for.")
    inputs: dict[str, Any] = Field(description="The promotion's inputs, as `promote run` takes them.")


def schedules_file() -> Path:
    return Path(os.environ.get("PROMOTE_SCHEDULES_FILE") or DEFAULT_FILE)


def read(path: Path | None = None) -> list[PlannedPromotion]:
    """Parse and check every entry; raise PlannedPromotionError naming the first bad one."""
    path = path or schedules_file()
    if not path.exists():
        return []
    try:
        data = strict_yaml.load(path.read_text())
    except yaml.YAMLError as exc:
        raise PlannedPromotionError(f"{path.name}: not valid YAML: {strict_yaml.describe(exc)}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) - {"schedules"}:
        raise PlannedPromotionError(f"{path.name}: expected a mapping with one key, 'schedules' (a list)")
    entries = data.get("schedules") or []
    if not isinstance(entries, list):
        raise PlannedPromotionError(f"{path.name}: 'schedules' must be a list of entries")
    planned: list[PlannedPromotion] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, 1):
        label = f"{path.name}, entry {number}"
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            label += f" ({entry['name']!r})"
        planned.append(_check(entry, label, seen))
    return planned


def _check(entry: Any, label: str, seen: set[str]) -> PlannedPromotion:
    if not isinstance(entry, dict):
        raise PlannedPromotionError(f"{label}: must be a mapping with name, cron, timezone and inputs")
    try:
        item = PlannedPromotion.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "entry"
        raise PlannedPromotionError(f"{label}: {where}: {first['msg']}") from None
    if not NAME.fullmatch(item.name):
        raise PlannedPromotionError(f"{label}: name: must be letters, digits and '_' (at most 100), starting with"
                                    f" a letter or '_' (got {item.name!r})")
    if item.name in seen:
        raise PlannedPromotionError(f"{label}: name: {item.name!r} is used by an earlier entry")
    seen.add(item.name)
    try:
        zoneinfo.ZoneInfo(item.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise PlannedPromotionError(f"{label}: timezone: {item.timezone!r} is not an IANA time zone"
                                    " (e.g. UTC, Europe/Brussels)") from None
    if not _valid_cron(item.cron):
        raise PlannedPromotionError(f"{label}: cron: {item.cron!r} is not a cron expression (five fields:"
                                    " minute hour day-of-month month day-of-week, e.g. '0 2 * * 0')")
    for name, value in item.inputs.items():
        # A file is typed: "10" in quotes is a string, and a string where a number belongs is a mistake to name,
        # not to guess at (``validate`` itself accepts digits in a string, for the command line's flags).
        field = input_rules.PromotionInputs.model_fields.get(name)
        if field is not None and field.annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise PlannedPromotionError(f"{label}: inputs.{name}: must be an integer, got {value!r:.40}"
                                        f" ({type(value).__name__}; write a number without quotes)")
    try:
        promotion = input_rules.validate(item.inputs)
    except input_rules.InputRejected as exc:
        raise PlannedPromotionError(f"{label}: inputs.{exc.check}: {exc.message}") from None
    # The complete, checked inputs become the run's config: what runs is what was read here.
    return item.model_copy(update={"inputs": promotion.model_dump()})


def _valid_cron(cron: str) -> bool:
    from dagster._utils.schedules import is_valid_cron_string

    return bool(is_valid_cron_string(cron))


# -- the schedules ------------------------------------------------------------------------------------
def busy_reason(ops_db: OpsDatabase, context: ScheduleEvaluationContext | None, prod_env_id: str) -> str | None:
    """Why ``prod_env_id`` cannot take a promotion now, or None when it is free."""
    row = ops_db.running_promotion(prod_env_id)
    if row:
        since = f"{row.created_at:%Y-%m-%d %H:%M %Z}"
        return f"{prod_env_id} is busy: promotion {row.run_id} is running (since {since})"
    pid = ops_db.lock_holder_pid(prod_env_id)
    if pid is not None:
        return f"{prod_env_id} is busy: its promotion lock is held (PostgreSQL backend pid {pid})"
    if context is not None:
        records = context.instance.get_run_records(
            RunsFilter(job_name="promote_staging_to_prod", statuses=IN_FLIGHT, tags={"promote/prod_env": prod_env_id}),
            limit=1)
        if records:
            run = records[0].dagster_run
            return f"{prod_env_id} is busy: Dagster run {run.run_id} for it is {run.status.value}"
    return None


def to_schedule(item: PlannedPromotion, job: JobDefinition) -> ScheduleDefinition:
    inputs = item.inputs
    prod = inputs["prod_env_id"]
    description = (f"{item.description + ' — ' if item.description else ''}Planned promotion of"
                   f" {inputs['staging_env_id']} to {prod} (project {inputs['project_id']}, by {inputs['user_id']}),"
                   f" {item.cron} {item.timezone}; from promotion_schedules.yaml. Skipped, with the reason, when"
                   f" {prod} is busy.")

    @schedule(name=item.name, job=job, cron_schedule=item.cron, execution_timezone=item.timezone,
              default_status=DefaultScheduleStatus.STOPPED, description=description,
              tags={"promote/schedule": item.name})
    def planned_promotion(context: ScheduleEvaluationContext, ops_db: OpsDatabase) -> RunRequest | SkipReason:
        reason = busy_reason(ops_db, context, prod)
        if reason:
            return SkipReason(f"{reason}; this tick is skipped, not queued behind it")
        tick = context.scheduled_execution_time
        return RunRequest(
            run_key=f"{item.name}:{tick.isoformat() if tick else 'manual'}",
            run_config=input_rules.run_config(inputs),
            tags={**input_rules.run_tags(inputs, "schedule"), "promote/schedule": item.name},
        )

    return planned_promotion


def load_schedules(job: JobDefinition, path: Path | None = None,
                   taken: set[str] | None = None) -> list[ScheduleDefinition]:
    """The planned promotions as stopped schedules of ``job``; ``taken`` are names already in use."""
    planned = read(path)
    for item in planned:
        if taken and item.name in taken:
            raise PlannedPromotionError(f"{(path or schedules_file()).name}, entry {item.name!r}: name: the code"
                                        " location already has a schedule or sensor of that name")
    return [to_schedule(item, job) for item in planned]
