"""``promote inventory apply``: the changes that make the settings file, the ops database and the router say what
the inventory says, planned from what is recorded now, then made in order, a line each.

The plan is computed from reads only, so the check can count it without doing anything, and a second apply,
finding everything recorded, plans nothing: idempotence is the plan being empty, not each step being careful.
The order is the dependencies': the settings file (every later promote process reads it), the ops schema,
projects, environments, grants, the adoptions (which need their environments), the router (which serves the
adopted production). Every row goes through the ops database's typed methods; every deployment through
``promotion/deployment.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from promote_pipeline.promotion import deployment
from promote_pipeline.promotion.inventory import adopt, rules
from promote_pipeline.promotion.inventory.model import Inventory, RouterEntry
from promote_pipeline.promotion.inventory.state import Recorded, environment_record, settings_fields_to_write
from promote_pipeline.promotion.services import Services
from resources.ops_db import DeploymentRecord


@dataclass
class Change:
    """One change: the line that says it, and what makes it (which may say more: the details, a line each)."""

    line: str
    make: Callable[[], list[str]]
    adoption: str | None = field(default=None)  # the environment whose live deployment it adopts


def _done(action: Callable[[], Any]) -> Callable[[], list[str]]:
    def make() -> list[str]:
        action()
        return []

    return make


def plan(inv: Inventory, svc: Services, recorded: Recorded, user: str) -> list[Change]:
    return [*_settings_changes(inv, recorded), *_schema_changes(inv, svc, recorded),
            *_project_changes(inv, svc, recorded), *_environment_changes(inv, svc, recorded),
            *_grant_changes(inv, svc, recorded), *_adoption_changes(inv, svc, recorded, user),
            *_router_changes(inv, svc, recorded)]


# -- the settings file and the ops schema -----------------------------------------------------------------
def _write_settings(inv: Inventory) -> None:
    """The settings file, written whole and atomically (a promote process reading it never sees half of it)."""
    path = Path(inv.settings.file)
    text = json.dumps(rules.declared_settings(inv).model_dump(mode="json"), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)  # references and paths only: every promote process (the UI's too) reads it
    os.replace(tmp, path)


def _settings_changes(inv: Inventory, recorded: Recorded) -> list[Change]:
    fields = settings_fields_to_write(inv, recorded)
    if fields == []:
        return []
    what = "written" if fields is None else f"{', '.join(fields)} updated"
    return [Change(f"settings: {inv.settings.file} {what} (PROMOTE_SETTINGS must name it)",
                   _done(partial(_write_settings, inv)))]


def _schema_changes(inv: Inventory, svc: Services, recorded: Recorded) -> list[Change]:
    schema = recorded.schema
    if schema.ready:
        return []
    created = "" if schema.database_exists else "created, "
    return [Change(f"ops database {svc.ops_db.database}: {created}migrations {', '.join(schema.pending)} applied",
                   _done(svc.ops_db.upgrade))]


# -- projects, environments, grants -----------------------------------------------------------------------
def _project_changes(inv: Inventory, svc: Services, recorded: Recorded) -> list[Change]:
    changes = []
    for project_id, project in inv.projects.items():
        row = recorded.projects.get(project_id)
        if row is None:
            changes.append(Change(f"project {project_id}: added ({project.name!r})",
                                  _done(partial(svc.ops_db.add_project, project_id, project.name))))
        elif row.name != project.name:
            changes.append(Change(f"project {project_id}: renamed {row.name!r} -> {project.name!r}",
                                  _done(partial(svc.ops_db.rename_project, project_id, project.name))))
    return changes


def _environment_changes(inv: Inventory, svc: Services, recorded: Recorded) -> list[Change]:
    changes = []
    for env_id in inv.environments:
        wanted, row = environment_record(inv, env_id), recorded.environments.get(env_id)
        if row is None:
            changes.append(Change(f"environment {env_id}: added ({wanted.kind} of {wanted.project_id}, Odoo database"
                                  f" name {wanted.odoo_db_name} for life)",
                                  _done(partial(svc.ops_db.add_environment, wanted))))
            continue
        differ = [name for name in wanted.model_fields if getattr(row, name) != getattr(wanted, name)]
        if differ:
            # Whole values, however long: a command template cut short would hide what changed.
            said = ", ".join(f"{n} {getattr(row, n)!r} -> {getattr(wanted, n)!r}" for n in differ)
            changes.append(Change(f"environment {env_id}: {said}",
                                  _done(partial(svc.ops_db.update_environment, wanted))))
    return changes


def _grant_changes(inv: Inventory, svc: Services, recorded: Recorded) -> list[Change]:
    changes = []
    for project_id, wanted in rules.grants(inv).items():
        current = recorded.grants.get(project_id, set())
        for user_id, permission in sorted(wanted - current):
            changes.append(Change(f"grant: {user_id} may {permission} on {project_id}", _done(
                partial(svc.ops_db.grant_permission, user_id, project_id, permission))))
        for user_id, permission in sorted(current - wanted):
            changes.append(Change(f"revoke: {user_id}'s {permission} on {project_id} (not in the inventory)", _done(
                partial(svc.ops_db.revoke_permission, user_id, project_id, permission))))
    return changes


# -- adoptions and the router -----------------------------------------------------------------------------
def _adoption_changes(inv: Inventory, svc: Services, recorded: Recorded, user: str) -> list[Change]:
    changes = []
    for env_id, env in inv.environments.items():
        dep_id, adopted = env.deployment_id(env_id), recorded.adopted.get(env_id)
        if adopted is None:
            on = f" on host {env.host}" if env.host else ""
            changes.append(Change(f"adopt {env_id}: its live deployment {dep_id} (database {env.adopt.db_name}, port"
                                  f" {env.adopt.http_port}{on}); its Odoo restarts once",
                                  partial(adopt.adopt, svc, inv, env_id, user), adoption=env_id))
        elif not recorded.adoption_done(env_id):
            changes.append(Change(f"adopt {env_id}: the adoption of {dep_id} did not succeed; resuming it",
                                  partial(adopt.resume, svc, inv, env_id, user), adoption=env_id))
        elif adopted.state == "active" and not _running(svc, adopted):
            changes.append(Change(f"deployment {dep_id}: not running; starting it",
                                  partial(_start, svc, env_id, adopted)))
    return changes


def _running(svc: Services, dep: DeploymentRecord) -> bool:
    ph = svc.process_host(dep)
    return ph.is_alive(dep.pid) and (not dep.db_role or ph.is_alive(dep.endpoint_pid))


def _start(svc: Services, env_id: str, dep: DeploymentRecord) -> list[str]:
    env = svc.ops_db.environment(env_id)
    assert env is not None
    with adopt.environment_lock(svc, env_id):
        return [f"started {what}" for what in deployment.ensure_running(svc, env, dep)]


def _router_changes(inv: Inventory, svc: Services, recorded: Recorded) -> list[Change]:
    if not inv.router.fronts:
        return []
    changes = []
    if not recorded.router_running:
        changes.append(Change(f"router: {inv.router.kind} started in {inv.router.dir}", _done(svc.router.start)))
    for env_id, entry in inv.router.fronts.items():
        if recorded.routes.get(env_id) is None:
            changes.append(Change(f"router: {env_id} registered, on its live deployment",
                                  partial(_register, svc, env_id, entry)))
    return changes


def _register(svc: Services, env_id: str, entry: RouterEntry) -> list[str]:
    """The environment's two entry points, both on its live deployment (the first blue)."""
    live = svc.ops_db.active_deployment(env_id)
    assert live is not None, f"{env_id} has no live deployment to route to"
    # On the address of the host its Odoo runs on (this machine's loopback when none).
    state = svc.router.register_environment(env_id, svc.upstream(live, "blue"), entry.active_port,
                                            entry.preview_port)
    return [f"public entry point {state.active_url} -> {live.deployment_id} (blue): point your proxy or DNS at it;"
            f" preview {state.preview_url}"]
