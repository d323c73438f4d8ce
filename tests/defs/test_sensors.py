"""The safety-net sensors, evaluated with Dagster's own context builders against a real instance."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from promote_pipeline.defs import sensors
from promote_pipeline.defs.jobs import promote_staging_to_prod
from resources.ops_db import RunRecord


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


def _running(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, project_id="p", environment_id="env_p", operation_type="promote",
                     status="running", created_by="u", created_at=datetime.now(UTC))


class _FakeOps:
    """Unit-test stand-in for the ops database: one run marked running, its lock free (its worker died)."""

    def running_promotions(self) -> list[RunRecord]:
        return [_running("run_x")]

    def lock_holder_pid(self, _env: str) -> int | None:
        return None

    def run(self, run_id: str) -> RunRecord:
        return _running(run_id)


def test_dead_run_detector_waits_out_its_grace_then_requests_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(sensors.time, "time", lambda: clock[0])
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance, resources={"ops_db": _FakeOps()})
        first = sensors.detect_dead_promotions(context)
        assert isinstance(first, SkipReason) and "grace" in str(first.skip_message)
        clock[0] += sensors.DEAD_GRACE_SECONDS
        context = build_sensor_context(instance=instance, cursor=context.cursor, resources={"ops_db": _FakeOps()})
        requests = sensors.detect_dead_promotions(context)
        assert [r.run_key for r in requests] == ["dead:run_x"]
        assert requests[0].run_config["ops"]["roll_back_promotion"]["config"]["run_id"] == "run_x"
