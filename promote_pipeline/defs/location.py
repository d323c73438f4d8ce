"""The code location: the jobs, the safety net's sensors, the schedules and the resources, from settings.

The planned promotions of ``promotion_schedules.yaml`` become schedules
here (``planned``), each checked as the definitions load: a bad entry makes loading fail with a message
naming it.

In a sandbox (settings written by ``promote sandbox up``) the promotion job carries the sandbox's inputs
as its default run config, so the launchpad opens with a config a person can launch or edit, and a launch
without config promotes the sandbox. Anywhere else the job has no default config: the four ids are
required, and the launchpad's "Scaffold missing config" fills in the other fields' defaults.
"""

from __future__ import annotations

import warnings
from typing import Any

from dagster import BetaWarning, Definitions, JobDefinition

from promote_pipeline.defs import planned
from promote_pipeline.defs.jobs import (
    approve_promotion,
    cleanup_due_tasks,
    promote_staging_to_prod,
    promotion,
    rollback_promotion,
)
from promote_pipeline.defs.resources import build_resources, for_definitions
from promote_pipeline.defs.schedules import CLEANUP_SENSOR_NAME, cleanup_when_due
from promote_pipeline.defs.sensors import (
    detect_dead_promotions,
    rollback_cancelled_promotions,
    rollback_failed_promotions,
)
from promote_pipeline.promotion import settings as settings_mod
from promote_pipeline.promotion.inputs import defaults, run_config
from promote_pipeline.promotion.settings import Settings

# Dagster 1.13 itself passes `owners=None` when it copies a sensor, and warns about its own call.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*owners.*")

# What `promote sandbox up` seeds (the sandbox takes its ids from here): its secret reference tells its settings
# apart from a real installation's.
SANDBOX_DSN_REF = "PROMOTE_SANDBOX_PG_DSN"
SANDBOX_IDS = {"project_id": "proj_demo", "staging_env_id": "env_demo_staging", "prod_env_id": "env_demo_prod",
               "user_id": "demo_admin"}
# Every field of the launchpad's form, so a person sees all there is to edit: the ids, the seed's defaults, and the
# stability window of `make demo`.
SANDBOX_INPUTS: dict[str, Any] = {
    **SANDBOX_IDS,
    **defaults(),
    "stability_window_seconds": 10,
}


def is_sandbox(config: Settings) -> bool:
    return config.ops_dsn_ref == SANDBOX_DSN_REF


def promotion_job(config: Settings) -> JobDefinition:
    """The promotion job as this code location serves it: in a sandbox, with the sandbox's inputs as default config
    (the stability window 10 s, as `make demo`); elsewhere as defined in jobs.py, with no default."""
    if not is_sandbox(config):
        return promote_staging_to_prod
    return promotion.to_job(
        name=promote_staging_to_prod.name,
        description=f"{promote_staging_to_prod.description} In this sandbox the launchpad opens with the sandbox's"
                    " inputs (a 10 s stability window): launch them as they are or edit them.",
        executor_def=promote_staging_to_prod.executor_def,
        tags=promote_staging_to_prod.tags,
        config=run_config(SANDBOX_INPUTS),
    )


def build_definitions(config: Settings | None = None, resource_overrides: dict[str, Any] | None = None) -> Definitions:
    """The code location for these settings; ``resource_overrides`` replaces resources by key (drills inject a
    fault into a real resource with it)."""
    config = config or settings_mod.load()
    job = promotion_job(config)
    return Definitions(
        jobs=[job, rollback_promotion, cleanup_due_tasks, approve_promotion],
        sensors=[rollback_failed_promotions, rollback_cancelled_promotions, detect_dead_promotions, cleanup_when_due],
        schedules=planned.load_schedules(job, taken={CLEANUP_SENSOR_NAME}),
        resources=for_definitions({**build_resources(config), **(resource_overrides or {})}),
    )
