"""The op of ``approve_promotion``: the UI's ``promote approve``, launched from the launchpad with the run's id and
who approves."""

from dagster import Config, Failure, MetadataValue, OpExecutionContext, op
from pydantic import Field

from promote_pipeline.defs.promotion_job import STEP_RESOURCES
from promote_pipeline.defs.promotion_job import _services as services
from promote_pipeline.promotion import approval

# How long the op waits for the promotion to take the approval (it reads approvals every second while it waits).
TAKEN_WITHIN_SECONDS = 60.0


class ApproveConfig(Config):
    """Which promotion to approve, and who approves. The run's id is the ops run id (run_...) the promotion's
    create_ops_run step shows, or the Dagster run id of the promotion (tagged promote/awaiting_approval=true)."""

    run_id: str = Field(description="The promotion awaiting approval: its ops run id (run_...) or its Dagster run id.")
    user_id: str = Field(description="Who approves; needs the 'promote' permission on the promotion's project.")


@op(description="Approve a promotion awaiting approval (permission 'promote' checked, recorded in ops.run_events),"
                " then wait until it has taken the approval and cuts over.", required_resource_keys=STEP_RESOURCES)
def approve_waiting_promotion(context: OpExecutionContext, config: ApproveConfig) -> dict:
    svc = services(context)
    try:
        row = approval.request(svc, config.run_id, config.user_id)
    except approval.ApprovalRefused as exc:
        message = str(exc)
    else:
        message = ""
    if message:  # raised outside the except: the UI shows the one line, not a chained traceback
        raise Failure(description=f"approval refused: {message}", allow_retries=False)
    state = approval.wait_taken(svc, row.run_id, TAKEN_WITHIN_SECONDS)
    result = {"run_id": row.run_id, "dagster_run_id": row.dagster_run_id, "approved_by": config.user_id,
              "gate": state}
    if state != "approved":
        raise Failure(description=f"approval not taken: run {row.run_id} gate is {state}", metadata=result,
                      allow_retries=False)
    context.add_output_metadata({"run_id": row.run_id, "approved_by": config.user_id,
                                 "result": MetadataValue.json(result)})
    return result
