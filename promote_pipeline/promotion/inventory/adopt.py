"""Adopting an environment's live deployment: the Odoo that served it before promote, taken over as it is.

The deployment and its ``adopt`` run are recorded first, together (``begin_adoption``), so that whoever looks
finds what is being done; then its sessions join the environment's shared folder, its database is given to a
role of its own, and its Odoo is started through its own PgBouncer (``promotion/deployment.py``, as every
deployment). That start is the one restart adoption costs: the Odoo the operator ran before had to be stopped
(the check refuses while its port is taken or a session is connected to its database), and from now on promote
starts and stops it. The run ends ``success`` (the environment's known-good state for precondition 2) or
``failed`` with the reason; applying again resumes a failed adoption under a new run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from promote_pipeline.promotion import deployment
from promote_pipeline.promotion.inventory.model import Inventory
from promote_pipeline.promotion.inventory.state import adopted_record, adoption_facts
from promote_pipeline.promotion.services import Services
from resources.odoo_host import free_port
from resources.ops_db import DeploymentRecord, EnvironmentRecord
from resources.redaction import redact_text
from resources.ssh_odoo_host import SshOdooHost


class AdoptionFailed(RuntimeError):
    """An adoption stopped half-way; its run is marked failed, and applying again resumes it."""


@contextmanager
def environment_lock(svc: Services, env_id: str) -> Iterator[None]:
    """The environment's promotion lock while its deployment is taken over or started: a promotion, or another
    apply, never acts on it at the same time."""
    lock = svc.ops_db.try_lock_environment(env_id)
    if lock is None:
        raise AdoptionFailed(f"{env_id} is busy: another session holds its lock (a promotion, or another apply)")
    try:
        yield
    finally:
        lock.release()


def adopt(svc: Services, inv: Inventory, env_id: str, user: str) -> list[str]:
    """Record the live deployment and its run, then take it over; the lines say what was done."""
    env = _environment(svc, env_id)
    live = adopted_record(inv, env_id, inv.environments[env_id].adopt.endpoint_port or _free_port(svc, inv, env_id))
    with environment_lock(svc, env_id):
        run_id = svc.ops_db.begin_adoption(env.project_id, live, user, adoption_facts(inv, env_id, live))
        recorded = (f"{live.deployment_id} recorded as {env_id}'s live deployment (database {live.db_name},"
                    f" data_dir {live.data_dir}), run {run_id}")
        return [recorded, *_take_over(svc, inv, env, live, run_id)]


def resume(svc: Services, inv: Inventory, env_id: str, user: str) -> list[str]:
    """An adoption whose last run did not succeed, done again (every step is safe to repeat) under a new run. A
    run left ``running`` (its apply stopped half-way) is marked failed first: it will not end otherwise."""
    env = _environment(svc, env_id)
    live = svc.ops_db.deployment(inv.environments[env_id].deployment_id(env_id))
    assert live is not None, f"{env_id}: no adopted deployment to resume"
    with environment_lock(svc, env_id):
        previous = svc.ops_db.latest_run(env_id, ("adopt",))
        run_id = svc.ops_db.create_run(env.project_id, env_id, user, adoption_facts(inv, env_id, live), None,
                                       operation_type="adopt")
        if previous is not None and previous.status == "running":
            svc.ops_db.mark_run_finished(previous.run_id, "failed",
                                         metadata={"error": f"its apply stopped before the end; resumed by {run_id}"})
        return [f"resumed for {live.deployment_id}, run {run_id}", *_take_over(svc, inv, env, live, run_id)]


def _free_port(svc: Services, inv: Inventory, env_id: str) -> int:
    """A port for its PgBouncer, free where it will listen: on the environment's process host, or here."""
    host = inv.environments[env_id].host
    ph = svc.process_host(host) if host is not None else None
    return ph.free_port() if isinstance(ph, SshOdooHost) else free_port()


def _environment(svc: Services, env_id: str) -> EnvironmentRecord:
    env = svc.ops_db.environment(env_id)
    assert env is not None, f"{env_id} is recorded before its deployment is adopted"
    return env


def _take_over(svc: Services, inv: Inventory, env: EnvironmentRecord, live: DeploymentRecord,
               run_id: str) -> list[str]:
    env_id = env.environment_id
    try:
        lines = _join_sessions(svc, env, live)
        deployment.prepare_data_dir(env, live, svc)  # on its process host, when it has one
        deployment.give_database(svc, env, live)
        lines.append(f"role {live.db_role} owns database {live.db_name} and may connect to nothing else")
        started = deployment.ensure_running(svc, env, live)
    except Exception as exc:  # any failure: the run says so, and the operator fixes and applies again
        reason = redact_text(f"{type(exc).__name__}: {exc}")[:400]
        svc.ops_db.mark_run_finished(run_id, "failed", metadata={"error": reason})
        raise AdoptionFailed(f"{reason} (adoption run {run_id} marked failed)") from exc
    svc.ops_db.mark_run_finished(run_id, "success", metadata={"odoo_pid": live.pid, "endpoint_pid": live.endpoint_pid})
    behind = ", behind the router" if env_id in inv.router.fronts else ""
    where = f"on host {live.host}" if live.host else "here"
    lines += [f"started {what}" for what in started]
    lines.append(f"its Odoo restarted once, {where}{behind}: it serves {live.odoo_db_name} through its PgBouncer, and"
                 " promote starts and stops it from now on (keep the Odoo that served it before stopped);"
                 f" run {run_id} succeeded")
    return lines


def _join_sessions(svc: Services, env: EnvironmentRecord, live: DeploymentRecord) -> list[str]:
    """The live Odoo's own sessions folder becomes the environment's shared one, so that logged-in users stay
    logged in; when the environment has one already, ``prepare_data_dir`` replaces it with a link to that one.
    On the deployment's process host, when it has one: its folders are there."""
    own, shared = Path(live.data_dir, deployment.SESSIONS), Path(env.filestore_root, deployment.SESSIONS)
    ph = svc.process_host(live)
    if isinstance(ph, SshOdooHost):
        done = ph.adopt_sessions(str(own), str(shared))
    elif own.is_symlink() or not own.is_dir():
        done = "none"
    elif shared.exists():
        done = "kept"
    else:
        shutil.move(str(own), str(shared))
        done = "moved"
    on = f" on host {live.host}" if live.host else ""
    if done == "kept":
        return [f"its sessions folder {own}{on} replaced by the environment's {shared} (users logged in on it log in"
                " again)"]
    if done == "moved":
        return [f"its sessions moved to {shared}{on}, which every deployment of {env.environment_id} shares"]
    return []
