"""The clean-up sensor (``cleanup_when_due``) requests a run only when a task is due, evaluated with Dagster's own
sensor context builder against the sandbox's real ops database (and its artifact store, for the retention rule)."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

from promote_pipeline.cli.sandbox import PROD, Sandbox
from promote_pipeline.defs.location import build_definitions
from promote_pipeline.defs.resources import for_definitions
from promote_pipeline.defs.schedules import CLEANUP_SENSOR_NAME, cleanup_when_due
from promote_pipeline.promotion import cleanup, retention
from promote_pipeline.promotion.services import Services
from resources.ops_db import DeploymentRecord, OpsDatabase, TaskRequest

pytestmark = pytest.mark.slow


def _tick(box: Sandbox, instance: DagsterInstance) -> RunRequest | SkipReason:
    with build_sensor_context(instance=instance, resources=for_definitions(box.resources())) as context:
        result = cleanup_when_due(context)
    assert isinstance(result, RunRequest | SkipReason)
    return result


def test_the_clean_up_sensor_requests_a_run_only_when_a_task_is_due(haproxy_box: Sandbox) -> None:
    svc = Services.from_resources(haproxy_box.resources())
    cleanup.run_due_tasks(svc)  # whatever earlier tests left due is done first: from here on nothing is due
    retention.prune(svc)
    with DagsterInstance.ephemeral() as instance:
        idle = _tick(haproxy_box, instance)
        assert isinstance(idle, SkipReason)
        assert idle.skip_message == "no scheduled task is due and the retention rule lets no artifact go"

        # A retired deployment whose deletion is scheduled in an hour: not due, still no run.
        dep = f"dep_sensor_{secrets.token_hex(3)}"
        svc.ops_db.add_deployment(DeploymentRecord(deployment_id=dep, environment_id=PROD, db_name=f"pts_{dep}",
                                                   data_dir="/nonexistent", http_port=None, websocket_port=None,
                                                   pid=None, state="standby"))
        svc.ops_db.retire_deployment(dep)
        try:
            _due_and_not_due(haproxy_box, instance, svc, dep)
        finally:
            # A phantom deployment left in the sandbox's ops database would be met by later tests of this worker
            # that look at every deployment of production (its database does not exist).
            svc.ops_db.mark_deployment_deleted(dep)


def _due_and_not_due(box: Sandbox, instance: DagsterInstance, svc: Services, dep: str) -> None:
    """A deletion scheduled in an hour asks for no run; one due now asks for one, keyed by its task and attempt."""
    later = svc.ops_db.schedule_task(TaskRequest(task_type="delete_deployment", delay=timedelta(hours=1),
                                                 metadata={"deployment_id": dep}))
    try:
        assert isinstance(_tick(box, instance), SkipReason)
    finally:
        svc.ops_db.cancel_task(later, "test moves on to a due task")  # no other test's task is made due
    task_id = svc.ops_db.schedule_task(TaskRequest(task_type="delete_deployment", delay=timedelta(seconds=-1),
                                                   metadata={"deployment_id": dep}))
    try:
        # Due now: one run requested, keyed by the task and its attempt; the same work asks for the same key.
        request = _tick(box, instance)
        assert isinstance(request, RunRequest)
        assert request.run_key is not None and f"{task_id}.0" in request.run_key.split("|")[0]
        assert request.tags["promote/cleanup_tasks"] == "1"
        again = _tick(box, instance)
        assert isinstance(again, RunRequest) and again.run_key == request.run_key
    finally:
        svc.ops_db.cancel_task(task_id, "test over")
    assert isinstance(_tick(box, instance), SkipReason)  # cancelled: nothing due again


def test_a_tick_never_creates_a_missing_ops_database(haproxy_box: Sandbox) -> None:
    """After `promote sandbox down` dropped it (or a team did), the daemon's next tick must not bring back an empty
    ops database: it skips, saying so, and the database stays absent."""
    missing = f"promote_ops_gone_{secrets.token_hex(4)}"
    gone = OpsDatabase(dsn_ref=haproxy_box.resources()["ops_db"].dsn_ref, database=missing)
    assert not gone.schema_state().database_exists
    with DagsterInstance.ephemeral() as instance, \
            build_sensor_context(instance=instance, resources=for_definitions(
                {**haproxy_box.resources(), "ops_db": gone})) as context:
        result = cleanup_when_due(context)
    assert isinstance(result, SkipReason), result
    assert result.skip_message == (f"the ops database {missing} does not exist: nothing to clean up (promote"
                                   " sandbox up, promote inventory apply or a promotion creates it)")
    assert not gone.schema_state().database_exists


def test_the_sensor_replaced_the_every_minute_schedule() -> None:
    repo = build_definitions().get_repository_def()
    assert repo.get_sensor_def(CLEANUP_SENSOR_NAME).job_name == "cleanup_due_tasks"
    assert not any(s.job_name == "cleanup_due_tasks" for s in repo.schedule_defs)
