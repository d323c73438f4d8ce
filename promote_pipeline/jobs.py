"""The promotion job: eight ops in a line, in process.

The in-process executor because the job is strictly linear (nothing to parallelise) and a
process per step costs over a second each; ``mem_io_manager`` because step outputs are small
typed models that the next op takes directly, with nothing worth writing to disk (it is bound with
the other resources in ``definitions.py``).
"""


from dagster import graph, in_process_executor

from promote_pipeline.models import PromotionOutcome
from promote_pipeline.ops import (
    backup_production,
    create_ops_run,
    cutover,
    finalize,
    monitor_stability,
    restore_green,
    smoke_test_green,
    snapshot_staging,
)


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


