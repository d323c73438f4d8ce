"""The deferred clean-up: a sensor that requests a ``cleanup_due_tasks`` run only when there is work for one.

It replaced a schedule that launched a run every minute, whether anything was due or not, so that half of the UI's
run list was clean-up runs that did nothing. Each tick (every ``CLEANUP_SENSOR_SECONDS``) reads, without claiming
anything, the tasks of ``ops.scheduled_tasks`` that a worker could claim now (blue's deletion after the rollback
window, a kept green's) and the artifacts the retention rule lets go; when there are some it requests one run,
keyed by what it found (each task's id and attempt, each artifact's id), so a later tick that finds the same work
while that run is queued or going requests nothing more, and a task retried after a failure (a new attempt) gets a
run of its own. The run claims its tasks as before (``FOR UPDATE SKIP LOCKED``), so ``promote cleanup`` by hand
beside it takes nothing twice.

The planned promotions of ``promotion_schedules.yaml`` are schedules, built and checked by ``planned`` when the
definitions load, and stopped by default.
"""

from dagster import DefaultSensorStatus, ResourceParam, RunRequest, SkipReason, sensor

from promote_pipeline.defs.jobs import cleanup_due_tasks
from promote_pipeline.promotion import cleanup, retention
from promote_pipeline.promotion.services import Services
from promote_pipeline.promotion.settings import Settings
from resources.artifact_store import LocalArtifactStore
from resources.odoo_host import LocalOdooHost
from resources.ops_db import OpsDatabase
from resources.router import RouterResource

CLEANUP_SENSOR_NAME = "cleanup_when_due"
CLEANUP_SENSOR_SECONDS = 60  # as often as the schedule it replaced ran; a task is due hours after it was scheduled


def cleanup_run_key(task_keys: list[str], artifact_ids: list[str]) -> str | None:
    """The run key for this work (None: nothing to do); the same work, the same key: Dagster launches a key once."""
    if not task_keys and not artifact_ids:
        return None
    return f"tasks:{','.join(task_keys)}|artifacts:{','.join(sorted(artifact_ids))}"


@sensor(name=CLEANUP_SENSOR_NAME, job=cleanup_due_tasks, minimum_interval_seconds=CLEANUP_SENSOR_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Request a clean-up run when ops.scheduled_tasks has due tasks (blue deleted after its rollback"
                    " window, a kept green) or the retention rule lets artifacts go; skip otherwise.")
def cleanup_when_due(ops_db: OpsDatabase, odoo_host: LocalOdooHost, artifact_store: LocalArtifactStore,
                     router: RouterResource, settings: ResourceParam[Settings]) -> RunRequest | SkipReason:
    svc = Services(ops_db=ops_db, host=odoo_host, store=artifact_store, router=router, settings=settings)
    # Never create the ops database from a tick: after `promote sandbox down` (or a team dropping it) the daemon
    # would bring back an empty one, hiding that it is gone. A database that exists is brought up to date.
    state = ops_db.schema_state()
    if not state.database_exists:
        return SkipReason(f"the ops database {ops_db.database} does not exist: nothing to clean up (promote sandbox"
                          " up, promote inventory apply or a promotion creates it)")
    if state.pending:
        ops_db.upgrade()
    tasks = ops_db.due_tasks(cleanup.CLAIM_LEASE)
    going = [v.artifact_id for v in retention.evaluate(svc) if not v.keep]  # what the run's prune would delete
    key = cleanup_run_key([f"{t.task_id}.{t.attempts}" for t in tasks], going)
    if key is None:
        return SkipReason("no scheduled task is due and the retention rule lets no artifact go")
    return RunRequest(run_key=key, tags={"promote/cleanup_tasks": str(len(tasks)),
                                         "promote/cleanup_artifacts": str(len(going))})
