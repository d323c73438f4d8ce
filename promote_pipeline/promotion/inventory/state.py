"""What the inventory asks for, as ops records, and what is recorded now: the two sides apply makes equal.

``read_recorded`` only reads (the ops database, the router's routes, the settings file), so the check can call
it and still promise that it wrote nothing; an ops database that does not exist yet reads as empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promote_pipeline.promotion.inventory import rules
from promote_pipeline.promotion.inventory.model import Inventory
from promote_pipeline.promotion.services import Services
from resources.ops_db import DeploymentRecord, EnvironmentRecord, ProjectRecord, RunRecord, SchemaState
from resources.router import RouterError, RoutingState


# -- what the inventory asks for --------------------------------------------------------------------------
def environment_record(inv: Inventory, env_id: str) -> EnvironmentRecord:
    env = inv.environments[env_id]
    return EnvironmentRecord(
        environment_id=env_id, project_id=env.project, kind=env.kind, git_commit_sha=env.git_commit_sha,
        db_dsn_ref=env.db_dsn_ref, db_name_prefix=env.db_name_prefix, filestore_root=env.data_root,
        odoo_db_name=env.odoo_db_name, odoo_url=env.odoo_url,
        router_name=inv.router.kind if env_id in inv.router.fronts else None,
        smoke_login=env.smoke_login, smoke_password_ref=env.smoke_password_ref, odoo_command=env.odoo_command,
        worker_mode=env.worker_mode, workers=env.workers, notifications=env.notifications,
        require_approval=env.require_approval)


def adopted_record(inv: Inventory, env_id: str, endpoint_port: int) -> DeploymentRecord:
    """The live deployment as ops.deployments will hold it: active, in the operator's data_dir (which it does not
    own), with its own role and PgBouncer, on the environment's process host (None: this machine)."""
    env = inv.environments[env_id]
    a = env.adopt
    return DeploymentRecord(
        deployment_id=env.deployment_id(env_id), environment_id=env_id, db_name=a.db_name, data_dir=a.data_dir,
        http_port=a.http_port, websocket_port=a.websocket_port or a.http_port, pid=None, state="active",
        odoo_db_name=env.odoo_db_name, db_role=a.db_role or a.db_name, endpoint_port=endpoint_port,
        owns_data_dir=False, host=env.host)


def adoption_facts(inv: Inventory, env_id: str, dep: DeploymentRecord) -> dict[str, Any]:
    """What the adopt run's metadata says was adopted."""
    return {"deployment_id": dep.deployment_id, "db_name": dep.db_name, "odoo_db_name": dep.odoo_db_name,
            "data_dir": dep.data_dir, "http_port": dep.http_port, "websocket_port": dep.websocket_port,
            "endpoint_port": dep.endpoint_port, "db_role": dep.db_role, "host": dep.host,
            "first_blue": inv.environments[env_id].adopt.first_blue, "adopted_by": "promote inventory apply"}


# -- what is recorded now ---------------------------------------------------------------------------------
@dataclass
class Recorded:
    """The ops database's, the router's and the settings file's view of the inventory's objects."""

    schema: SchemaState
    projects: dict[str, ProjectRecord | None] = field(default_factory=dict)
    environments: dict[str, EnvironmentRecord | None] = field(default_factory=dict)
    grants: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    active: dict[str, DeploymentRecord | None] = field(default_factory=dict)
    adopted: dict[str, DeploymentRecord | None] = field(default_factory=dict)
    adoption_runs: dict[str, RunRecord | None] = field(default_factory=dict)
    routes: dict[str, RoutingState | None] = field(default_factory=dict)
    router_running: bool = False
    settings_file: dict[str, Any] | None = None

    def adoption_done(self, env_id: str) -> bool:
        run = self.adoption_runs.get(env_id)
        return self.adopted.get(env_id) is not None and run is not None and run.status == "success"


def read_recorded(inv: Inventory, svc: Services) -> Recorded:
    recorded = Recorded(schema=svc.ops_db.schema_state())
    _read_settings_file(inv, recorded)
    _read_router(inv, svc, recorded)
    if not recorded.schema.database_exists or "001_ops_schema" in recorded.schema.pending:
        return recorded  # nothing recorded yet: every object is new
    db = svc.ops_db
    for project_id in inv.projects:
        recorded.projects[project_id] = db.project(project_id)
        recorded.grants[project_id] = {(g.user_id, g.permission) for g in db.permissions_of(project_id)}
    for env_id, env in inv.environments.items():
        recorded.environments[env_id] = db.environment(env_id)
        recorded.active[env_id] = db.active_deployment(env_id)
        recorded.adopted[env_id] = db.deployment(env.deployment_id(env_id))
        recorded.adoption_runs[env_id] = db.latest_run(env_id, ("adopt",))
    return recorded


def _read_settings_file(inv: Inventory, recorded: Recorded) -> None:
    path = Path(inv.settings.file)
    try:
        recorded.settings_file = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        recorded.settings_file = None  # not JSON: apply writes it anew (the check says so for a referenced one)


def _read_router(inv: Inventory, svc: Services, recorded: Recorded) -> None:
    recorded.router_running = svc.router.is_running()
    for env_id in inv.router.fronts:
        try:
            recorded.routes[env_id] = svc.router.state(env_id)
        except (RouterError, ValueError):
            recorded.routes[env_id] = None


def settings_fields_to_write(inv: Inventory, recorded: Recorded) -> list[str] | None:
    """The settings file's fields apply would write: None for the whole file (there is none yet), [] when it says
    what the inventory declares or when the inventory refers to a file instead of declaring one."""
    if not rules.declares_settings(inv):
        return []
    if recorded.settings_file is None:
        return None
    wanted = rules.declared_settings(inv).model_dump(mode="json")
    return sorted(k for k, v in wanted.items() if recorded.settings_file.get(k) != v)
