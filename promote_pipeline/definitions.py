"""The Dagster code location: jobs and the resources they run with, built from settings."""

from __future__ import annotations

import warnings
from typing import Any

from dagster import BetaWarning, Definitions, mem_io_manager

from promote_pipeline import settings
from promote_pipeline.jobs import cleanup_due_tasks, promote_staging_to_prod, rollback_promotion
from promote_pipeline.schedules import cleanup_schedule
from promote_pipeline.sensors import detect_dead_promotions, rollback_cancelled_promotions, rollback_failed_promotions
from resources.artifact_store import LocalArtifactStore
from resources.haproxy_router import HAProxyRouter
from resources.nginx_router import NginxRouter
from resources.odoo_host import LocalOdooHost
from resources.ops_db import OpsDatabase
from resources.router import RouterResource

# Dagster 1.13 itself passes `owners=None` when it copies a sensor, and warns about its own call.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*owners.*")


def build_resources(config: settings.Settings | None = None) -> dict[str, Any]:
    config = config or settings.load()
    router: RouterResource
    if config.router_kind == "nginx":
        router = NginxRouter(work_dir=config.router_dir)
    elif config.router_kind == "haproxy":
        router = HAProxyRouter(work_dir=config.router_dir)
    else:
        raise ValueError(f"router_kind must be 'haproxy' or 'nginx', not {config.router_kind!r}")
    return {
        "ops_db": OpsDatabase(dsn_ref=config.ops_dsn_ref, database=config.ops_database),
        "odoo_host": LocalOdooHost(command_template=config.odoo_command, run_dir=config.run_dir),
        "artifact_store": LocalArtifactStore(root=config.artifact_root),
        "router": router,
        "io_manager": mem_io_manager,
    }


def build_definitions(config: settings.Settings | None = None) -> Definitions:
    return Definitions(
        jobs=[promote_staging_to_prod, rollback_promotion, cleanup_due_tasks],
        sensors=[rollback_failed_promotions, rollback_cancelled_promotions, detect_dead_promotions],
        schedules=[cleanup_schedule],
        resources=build_resources(config),
    )


defs = build_definitions()
