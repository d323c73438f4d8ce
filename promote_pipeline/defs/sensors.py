"""The safety net: every promotion that failed, was cancelled or died gets ``rollback_promotion``.

Three sensors, on by default, watching only the promotion job:
- ``rollback_failed_promotions`` (run failure) and ``rollback_cancelled_promotions`` (CANCELED):
  the run's own handler normally rolled back already; the rollback job then verifies and records
  the safe state, or completes what the handler could not.
- ``detect_dead_promotions``: the default run launcher cannot see a killed worker, whose run would
  stay STARTED for ever and fire no failure sensor. A promotion holds its environment's advisory
  lock in its own database session for the whole run, so a run still ``running`` in ``ops.runs``
  whose lock nobody holds has lost its worker. The sensor marks its Dagster run failed and
  launches the rollback at once.
Each request carries a ``run_key``, so a run is rolled back once however often a sensor ticks.
"""

import json
import time
from typing import Any

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from promote_pipeline.defs.jobs import promote_staging_to_prod, rollback_promotion
from resources.ops_db import OpsDatabase, RunRecord

SENSOR_INTERVAL_SECONDS = 5
DEAD_GRACE_SECONDS = 8


def _rollback_request(run_key: str, reason: str, requested_by: str, **target: str) -> RunRequest:
    config: dict[str, Any] = {"reason": reason, "requested_by": requested_by, "manual": False, **target}
    return RunRequest(run_key=run_key, run_config={"ops": {"roll_back_promotion": {"config": config}}},
                      tags={"promote/rollback_of": next(iter(target.values()))})


@run_failure_sensor(
    name="rollback_failed_promotions", monitored_jobs=[promote_staging_to_prod], request_job=rollback_promotion,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS, default_status=DefaultSensorStatus.RUNNING,
    description="Launch rollback_promotion for every failed promotion run (verifies or completes its rollback).",
)
def rollback_failed_promotions(context: RunFailureSensorContext) -> RunRequest:
    run_id = context.dagster_run.run_id
    return _rollback_request(f"failed:{run_id}", "promotion run failed", "rollback_failed_promotions",
                             dagster_run_id=run_id)


@run_status_sensor(
    name="rollback_cancelled_promotions", run_status=DagsterRunStatus.CANCELED,
    monitored_jobs=[promote_staging_to_prod], request_job=rollback_promotion,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS, default_status=DefaultSensorStatus.RUNNING,
    description="Launch rollback_promotion for every cancelled promotion run.",
)
def rollback_cancelled_promotions(context: RunStatusSensorContext) -> RunRequest:
    run_id = context.dagster_run.run_id
    return _rollback_request(f"cancelled:{run_id}", "promotion run cancelled", "rollback_cancelled_promotions",
                             dagster_run_id=run_id)


def dead_runs(ops_db: OpsDatabase) -> list[RunRecord]:
    """Promotion runs marked running whose environment lock no session holds (their worker is gone)."""
    dead = []
    for row in ops_db.running_promotions():
        if ops_db.lock_holder_pid(row.environment_id) is not None:
            continue
        # A run that finished between the two reads set its status before releasing the lock.
        again = ops_db.run(row.run_id)
        if again and again.status == "running":
            dead.append(row)
    return dead


@sensor(
    name="detect_dead_promotions", job=rollback_promotion, minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Find promotions whose worker died (running, lock released), mark them failed, roll them back.",
)
def detect_dead_promotions(context: SensorEvaluationContext, ops_db: OpsDatabase) -> Any:
    # A run seen without its lock is declared dead only if it is still so DEAD_GRACE_SECONDS later: a worker
    # that lost its session in a PostgreSQL restart takes its lock back within seconds.
    first_seen: dict[str, float] = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    suspects = {row.run_id: row for row in dead_runs(ops_db)}
    first_seen = {run_id: first_seen.get(run_id, now) for run_id in suspects}
    context.update_cursor(json.dumps(first_seen))
    dead = [row for run_id, row in suspects.items() if now - first_seen[run_id] >= DEAD_GRACE_SECONDS]
    if not dead:
        return SkipReason(f"no dead promotion ({len(suspects)} suspect(s) in their grace period)")
    requests = []
    for row in dead:
        dagster_run = context.instance.get_run_by_id(row.dagster_run_id) if row.dagster_run_id else None
        if dagster_run is not None and not dagster_run.is_finished:
            context.instance.report_run_failed(
                dagster_run, message=f"promotion {row.run_id}: worker died (environment lock released)")
        requests.append(_rollback_request(f"dead:{row.run_id}", "promotion worker died (lock released)",
                                          "detect_dead_promotions", run_id=row.run_id))
    return requests
