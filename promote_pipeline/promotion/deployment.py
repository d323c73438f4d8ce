"""A deployment's life on its host: planned, given its database, started, stopped, removed.

A deployment is a physical database, its own data_dir (its filestore under the environment's database
name, and ``sessions/``: a link to the folder every deployment of the environment shares), its own
PostgreSQL role and PgBouncer (``resources/db_endpoint.py`` says why), and its Odoo. Users logged in on
blue stay logged in on green after a cutover, and on blue again after a rollback: both serve the
environment's one database name, and both read and write the same session files.

Every step that starts or stops a deployment goes through here (restore, rollback, clean-up, the sandbox),
so none of them can forget a piece.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from promote_pipeline.promotion.services import Services
from resources.odoo_host import LocalOdooHost, free_port
from resources.ops_db import DeploymentRecord, EnvironmentRecord

SESSIONS = "sessions"


def command_template(env: EnvironmentRecord, host: LocalOdooHost) -> str:
    """The template that starts ``env``'s Odoo: its own, else the host's (the settings')."""
    return env.odoo_command or host.command_template


def own_websocket_port(env: EnvironmentRecord, host: LocalOdooHost) -> bool:
    """Whether ``env``'s Odoo serves its websocket on a port of its own: prefork's gevent server does, a threaded
    server does not; an environment with no worker mode has one when its template names ``{websocket_port}``."""
    if env.worker_mode is not None:
        return env.worker_mode == "prefork"
    return "{websocket_port}" in command_template(env, host)


def plan(env: EnvironmentRecord, deployment_id: str, physical_db: str, host: LocalOdooHost,
         state: str = "standby") -> DeploymentRecord:
    """The record of a new deployment of ``env`` (nothing created yet): its own data_dir, ports, role."""
    http_port = free_port()
    ws_port = free_port() if own_websocket_port(env, host) else http_port
    endpoint = env.odoo_db_name is not None
    return DeploymentRecord(
        deployment_id=deployment_id, environment_id=env.environment_id, db_name=physical_db,
        data_dir=str(Path(env.filestore_root) / deployment_id) if endpoint else env.filestore_root,
        http_port=http_port, websocket_port=ws_port, pid=None, state=state,  # type: ignore[arg-type]
        odoo_db_name=env.odoo_db_name,
        # The role is named after its database: both are cluster-wide names, and the database's is unique.
        db_role=physical_db if endpoint else None, endpoint_port=free_port() if endpoint else None)


def prepare_data_dir(env: EnvironmentRecord, dep: DeploymentRecord) -> None:
    """The deployment's data_dir, with ``sessions`` linked to the environment's shared sessions folder."""
    if dep.odoo_db_name is None:
        return
    shared = Path(env.filestore_root) / SESSIONS
    shared.mkdir(parents=True, exist_ok=True)
    os.chmod(shared, 0o700)  # session files are credentials (Odoo makes the folder 0700 too)
    data_dir = Path(dep.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    link = data_dir / SESSIONS
    if not link.is_symlink():
        if link.exists():
            shutil.rmtree(link)
        link.symlink_to(shared, target_is_directory=True)


def give_database(svc: Services, env: EnvironmentRecord, dep: DeploymentRecord) -> None:
    """The deployment's role owns its database and may connect to nothing else."""
    if dep.db_role:
        svc.host.grant_database_to_role(env.db_dsn_ref, dep.db_name, dep.db_role)


def start(svc: Services, env: EnvironmentRecord, dep: DeploymentRecord) -> int:
    """Its PgBouncer (if not running), then its Odoo through it; waits until Odoo answers, its websocket server
    included. Returns Odoo's pid (also recorded, and set on ``dep``)."""
    endpoint = None
    if dep.db_role:
        if not svc.host.is_alive(dep.endpoint_pid):
            _started_endpoint(svc, env, dep)
        endpoint = svc.host.endpoint(dep)
    assert dep.http_port is not None
    pid = svc.host.start_odoo(env.db_dsn_ref, env.environment_id, dep.deployment_id, dep.db_name, dep.data_dir,
                              dep.http_port, dep.websocket_port or dep.http_port, endpoint,
                              command_template=env.odoo_command, workers=env.workers or 0)
    dep.pid, dep.pid_started = pid, svc.host.process_started(pid)
    svc.ops_db.set_deployment_pid(dep.deployment_id, pid, dep.pid_started)
    separate_bus = dep.websocket_port if dep.websocket_port not in (None, dep.http_port) else None
    svc.host.wait_healthy(f"http://127.0.0.1:{dep.http_port}", pid, separate_bus)
    return pid


def _started_endpoint(svc: Services, env: EnvironmentRecord, dep: DeploymentRecord) -> None:
    """Its PgBouncer started and recorded with its start time (what lets a later stop prove it is the same)."""
    dep.endpoint_pid = svc.host.start_endpoint(env.db_dsn_ref, dep)
    dep.endpoint_started = svc.host.process_started(dep.endpoint_pid)
    svc.ops_db.set_endpoint_pid(dep.deployment_id, dep.endpoint_pid, dep.endpoint_started)


def ensure_running(svc: Services, env: EnvironmentRecord, dep: DeploymentRecord) -> list[str]:
    """Its PgBouncer and its Odoo running, whichever is not (after a reboot, say); says what it started."""
    if svc.host.is_alive(dep.pid):
        if not dep.db_role or svc.host.is_alive(dep.endpoint_pid):
            return []
        _started_endpoint(svc, env, dep)  # Odoo reconnects through it
        return [f"PgBouncer on port {dep.endpoint_port} (pid {dep.endpoint_pid})"]
    endpoint_was_alive = svc.host.is_alive(dep.endpoint_pid)
    pid = start(svc, env, dep)
    started = [] if endpoint_was_alive or not dep.db_role else [f"PgBouncer on port {dep.endpoint_port}"
                                                                 f" (pid {dep.endpoint_pid})"]
    return [*started, f"Odoo on port {dep.http_port} (pid {pid})"]


def stop(svc: Services, dep: DeploymentRecord) -> list[str]:
    """Its Odoo (the whole process group), then its PgBouncer; each only if its recorded pid still names the
    process started then (hours later the pid may be another's). Returns a line per process left alone."""
    left = {"Odoo": svc.host.stop_odoo(dep.pid, dep.pid_started),
            "PgBouncer": svc.host.stop_endpoint(dep.endpoint_pid, dep.endpoint_started)}
    return [f"{dep.deployment_id}: {what} not stopped: {why}" for what, why in left.items() if why]


def remove(svc: Services, dsn_ref: str, dep: DeploymentRecord) -> list[str]:
    """Stopped, its database, role and files gone (the shared sessions folder stays: it is the environment's). An
    adopted deployment's data_dir is the operator's, and may hold other databases' filestores: only its own
    filestore folder and sessions link go. Returns ``stop``'s lines."""
    notes = stop(svc, dep)
    svc.host.drop_database(dsn_ref, dep.db_name)
    svc.host.drop_role(dsn_ref, dep.db_role)
    if dep.odoo_db_name is not None:
        shutil.rmtree(svc.host.endpoint_dir(dep.deployment_id), ignore_errors=True)
    if dep.odoo_db_name is not None and dep.owns_data_dir:
        shutil.rmtree(dep.data_dir, ignore_errors=True)  # the sessions link goes, not what it points to
        return notes
    svc.host.remove_filestore(dep.data_dir, dep.served_db)
    link = Path(dep.data_dir) / SESSIONS
    if dep.odoo_db_name is not None and link.is_symlink():
        link.unlink()
    return notes
