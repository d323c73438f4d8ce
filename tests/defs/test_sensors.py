"""The safety-net sensors, evaluated with Dagster's own context builders against a real instance and, for the
dead-run detector, a real ops database (a fresh one per test) holding real rows and real advisory locks."""

from __future__ import annotations

import json
import time
from typing import Any

from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from promote_pipeline.defs import sensors
from promote_pipeline.defs.jobs import promote_staging_to_prod
from resources.ops_db import EnvironmentRecord, OpsDatabase


def _run(instance: DagsterInstance, status_event: DagsterEventType) -> tuple[DagsterRun, DagsterEvent]:
    run = instance.add_run(DagsterRun(job_name=promote_staging_to_prod.name, run_id=make_new_run_id()))
    event = DagsterEvent(event_type_value=status_event.value, job_name=promote_staging_to_prod.name)
    return run, event


def test_failure_sensor_requests_one_rollback_per_failed_run() -> None:
    with DagsterInstance.ephemeral() as instance:
        run, event = _run(instance, DagsterEventType.PIPELINE_FAILURE)
        context = build_run_status_sensor_context(
            sensor_name="rollback_failed_promotions", dagster_event=event, dagster_instance=instance,
            dagster_run=run).for_run_failure()
        request = sensors.rollback_failed_promotions(context)
        assert isinstance(request, RunRequest)
        assert request.run_key == f"failed:{run.run_id}"
        config = request.run_config["ops"]["roll_back_promotion"]["config"]
        assert config == {"dagster_run_id": run.run_id, "reason": "promotion run failed",
                          "requested_by": "rollback_failed_promotions", "manual": False}


def test_cancel_sensor_requests_a_rollback() -> None:
    with DagsterInstance.ephemeral() as instance:
        run, event = _run(instance, DagsterEventType.PIPELINE_CANCELED)
        context = build_run_status_sensor_context(
            sensor_name="rollback_cancelled_promotions", dagster_event=event, dagster_instance=instance,
            dagster_run=run)
        request = sensors.rollback_cancelled_promotions(context)
        assert isinstance(request, RunRequest) and request.run_key == f"cancelled:{run.run_id}"


def test_sensors_launch_the_rollback_job() -> None:
    for sensor in (sensors.rollback_failed_promotions, sensors.rollback_cancelled_promotions,
                   sensors.detect_dead_promotions):
        assert sensor.job_name == "rollback_promotion"


def _seed(ops_db: OpsDatabase) -> None:
    env = EnvironmentRecord(environment_id="env_p", project_id="p", kind="production", git_commit_sha="c" * 40,
                            db_dsn_ref="DSN", db_name_prefix="x", filestore_root="/tmp")
    ops_db.add_project("p", "P", [env])


def _promotion_in_both(instance: DagsterInstance, ops_db: OpsDatabase) -> tuple[str, str]:
    """A promotion as a worker leaves it: a STARTED Dagster run and its ``running`` row in ops.runs."""
    dagster_run = instance.add_run(DagsterRun(job_name=promote_staging_to_prod.name, run_id=make_new_run_id(),
                                              status=DagsterRunStatus.STARTED))
    return dagster_run.run_id, ops_db.create_run("p", "env_p", "u", {}, dagster_run.run_id)


def _evaluate(instance: DagsterInstance, ops_db: OpsDatabase, cursor: str | None = None) -> tuple[Any, str | None]:
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"ops_db": ops_db})
    result = sensors.detect_dead_promotions(context)
    return result, context.cursor


def _seen_long_ago(cursor: str | None) -> str:
    """The sensor's own cursor with each suspect first seen a grace period (and a second) ago, on the real clock."""
    assert cursor
    return json.dumps({run_id: at - sensors.DEAD_GRACE_SECONDS - 1 for run_id, at in json.loads(cursor).items()})


def test_a_run_whose_worker_died_waits_its_grace_then_is_failed_and_rolled_back_once(
        private_ops_db: OpsDatabase) -> None:
    _seed(private_ops_db)
    with DagsterInstance.ephemeral() as instance:
        dagster_run_id, run_id = _promotion_in_both(instance, private_ops_db)  # nobody holds env_p's lock

        first, cursor = _evaluate(instance, private_ops_db)
        assert isinstance(first, SkipReason) and "1 suspect(s) in their grace period" in str(first.skip_message)
        assert set(json.loads(cursor or "{}")) == {run_id}
        assert instance.get_run_by_id(dagster_run_id).status == DagsterRunStatus.STARTED  # not yet declared dead

        requests, _ = _evaluate(instance, private_ops_db, _seen_long_ago(cursor))
        assert [r.run_key for r in requests] == [f"dead:{run_id}"]
        assert requests[0].run_config["ops"]["roll_back_promotion"]["config"] == {
            "run_id": run_id, "reason": "promotion worker died (lock released)",
            "requested_by": "detect_dead_promotions", "manual": False}
        # report_run_failed: the Dagster run that lost its worker is failed, with the reason in its event log.
        assert instance.get_run_by_id(dagster_run_id).status == DagsterRunStatus.FAILURE
        failures = instance.all_logs(dagster_run_id, of_type=DagsterEventType.RUN_FAILURE)
        assert any(f"promotion {run_id}: worker died" in (e.message or "") for e in failures)

        # The next tick asks again with the same run_key (Dagster launches a key once) and fails nothing twice.
        again, _ = _evaluate(instance, private_ops_db, _seen_long_ago(cursor))
        assert [r.run_key for r in again] == [f"dead:{run_id}"]
        assert len(instance.all_logs(dagster_run_id, of_type=DagsterEventType.RUN_FAILURE)) == 1


def test_a_run_holding_its_lock_is_alive_and_a_finished_one_is_not_a_suspect(private_ops_db: OpsDatabase) -> None:
    _seed(private_ops_db)
    with DagsterInstance.ephemeral() as instance:
        _, run_id = _promotion_in_both(instance, private_ops_db)
        lock = private_ops_db.try_lock_environment("env_p")  # its worker's session, alive
        assert lock is not None
        try:
            result, cursor = _evaluate(instance, private_ops_db, json.dumps({run_id: time.time() - 3600}))
            assert isinstance(result, SkipReason) and "(0 suspect(s)" in str(result.skip_message)
            assert json.loads(cursor or "{}") == {}  # a run seen alive again is forgotten
        finally:
            lock.release()
        private_ops_db.mark_run_finished(run_id, "failed")  # ended on its own: nothing for the detector
        result, _ = _evaluate(instance, private_ops_db, json.dumps({run_id: time.time() - 3600}))
        assert isinstance(result, SkipReason) and "(0 suspect(s)" in str(result.skip_message)
