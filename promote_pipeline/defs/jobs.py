"""The jobs: the promotion (eight ops in a line, in process), its rollback and the deferred clean-up.

The in-process executor because the job is strictly linear (nothing to parallelise) and a
process per step costs over a second each; ``mem_io_manager`` because step outputs are small
typed models that the next op takes directly, with nothing worth writing to disk (it is bound with
the other resources in ``definitions.py``).
"""


from dagster import graph, in_process_executor, job

from promote_pipeline.defs.approve import approve_waiting_promotion
from promote_pipeline.defs.promotion_job import (
    backup_production,
    create_ops_run,
    cutover,
    finalize,
    monitor_stability,
    restore_green,
    smoke_test_green,
    snapshot_staging,
)
from promote_pipeline.defs.safety_net import roll_back_promotion, run_cleanup_tasks
from promote_pipeline.promotion.models import PromotionOutcome


@graph
def promotion() -> PromotionOutcome:
    return finalize(monitor_stability(cutover(smoke_test_green(restore_green(backup_production(
        snapshot_staging(create_ops_run())))))))


promote_staging_to_prod = promotion.to_job(
    name="promote_staging_to_prod",
    description="Gated blue-green promotion of an Odoo staging environment to production: snapshot staging"
                " (green), back up production (blue), restore green next to blue, smoke-test, cut over, watch,"
                " finalize, or roll back by switching traffic to blue.",
    executor_def=in_process_executor,
    tags={"kind": "promotion"},
)




@job(description="Roll back a promotion by switching traffic to blue, complete a promotion whose worker died, or"
                 " verify one that rolled itself back. Launched by the sensors, from the UI, or `promote rollback`.",
     executor_def=in_process_executor, tags={"kind": "rollback"})
def rollback_promotion() -> None:
    roll_back_promotion()


@job(description="Execute due scheduled tasks: delete blue (process, database, filestore, artifact) after the"
                 " rollback window; retry failures with backoff. Then delete the artifacts the retention rule lets"
                 " go (settings.retention), and the filestore objects no remaining artifact names.",
     executor_def=in_process_executor, tags={"kind": "cleanup"})
def cleanup_due_tasks() -> None:
    run_cleanup_tasks()


@job(description="Approve a promotion awaiting approval (launched with --require-approval, or into an environment that"
                 " requires it): give its run id and who approves. The same as `promote approve RUN_ID --user U`.",
     executor_def=in_process_executor, tags={"kind": "approval"})
def approve_promotion() -> None:
    approve_waiting_promotion()
