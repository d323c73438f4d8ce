"""Ops of the two safety jobs: ``rollback_promotion`` and ``cleanup_due_tasks``."""

from dagster import Config, Failure, MetadataValue, OpExecutionContext, op
from pydantic import Field

from promote_pipeline.defs.promotion_job import STEP_RESOURCES, tag_run
from promote_pipeline.defs.promotion_job import _services as services
from promote_pipeline.promotion import cleanup, retention
from promote_pipeline.promotion.rollback_run import RollbackRefused, roll_back_run
from resources.redaction import redact_text


class RollbackRefusal(Failure):
    """The rollback was refused (no such run, blue deleted, ...): nothing was changed. Its description carries
    ``rollback refused:``, which the UI shows and the CLI prints as it is."""


class RollbackConfig(Config):
    """Which promotion to roll back. Give the ops run id (run_...) or the Dagster run id of the promotion."""

    run_id: str = Field(default="", description="ops.runs.run_id of the promotion (run_...).")
    dagster_run_id: str = Field(default="", description="Dagster run id of the promotion, if run_id is not given.")
    reason: str = Field(default="requested by hand", description="Why; recorded in ops.run_events and evidence.")
    requested_by: str = Field(default="ui", description="Who asks (a person, or the sensor's name).")
    manual: bool = Field(
        default=True,
        description="True: a person asks: a successful promotion is rolled back within its window. False: the"
        " safety net: dead runs are completed, runs that rolled back are verified.",
    )


@op(description="Roll back, complete or verify one promotion (idempotent); refused once blue is deleted.",
    required_resource_keys=STEP_RESOURCES)
def roll_back_promotion(context: OpExecutionContext, config: RollbackConfig) -> dict:
    svc = services(context)
    ops_db = svc.ops_db
    run_id = config.run_id
    if not run_id and config.dagster_run_id:
        row = ops_db.promote_run_for_dagster_run(config.dagster_run_id)
        if row is None:
            context.log.info(f"Dagster run {config.dagster_run_id} created no promotion run: nothing to roll back")
            return {"action": "none", "reason": "no ops run (rejected or failed before step 1 finished)"}
        run_id = row.run_id
    if not run_id:
        raise RollbackRefusal(description="rollback refused: run_id: give the promotion's run_id or dagster_run_id",
                              allow_retries=False)
    message = None
    try:
        result = roll_back_run(svc, run_id, config.reason, config.requested_by, config.manual)
    except RollbackRefused as exc:
        message = redact_text(str(exc))
    if message is not None:
        raise RollbackRefusal(description=f"rollback refused: {message}", allow_retries=False)
    row = ops_db.run(run_id)
    if result["action"] in ("rolled_back", "completed_dead_run") and row is not None and row.dagster_run_id:
        # The promotion's own Dagster run said success (or died saying nothing): its tag now says what it became.
        tag_run(context.instance, row.dagster_run_id, row.status, f"rolled back by {config.requested_by}"
                f" ({result['action'].replace('_', ' ')}); run {run_id}" if row.status == "rolled_back" else
                f"{result['action'].replace('_', ' ')}; run {run_id}")
    context.add_output_metadata({"run_id": run_id, "action": result["action"],
                                 "result": MetadataValue.json(result)})
    return result


@op(description="Execute the due rows of ops.scheduled_tasks (blue deletions after the rollback window), then"
                " delete the artifacts the retention rule lets go.", required_resource_keys=STEP_RESOURCES)
def run_cleanup_tasks(context: OpExecutionContext) -> list:
    svc = services(context)
    svc.ops_db.upgrade()
    records = cleanup.run_due_tasks(svc)
    pruned = retention.prune(svc)
    context.add_output_metadata({
        "tasks": len(records), "statuses": MetadataValue.json({str(r["task_id"]): r["status"] for r in records}),
        "artifacts_deleted": len(pruned.going), "bytes_freed": pruned.freed_bytes,
        "artifact_failures": MetadataValue.json(pruned.failures)})
    return records
