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

import ipaddress
import os
import shlex
import shutil
from pathlib import Path

from promote_pipeline.promotion.services import Services
from resources import db_endpoint
from resources.odoo_host import HostError, LocalOdooHost, free_port
from resources.ops_db import DeploymentRecord, EnvironmentRecord
from resources.ssh_odoo_host import SshOdooHost

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
         state: str = "standby", on: SshOdooHost | None = None) -> DeploymentRecord:
    """The record of a new deployment of ``env`` (nothing created yet): its own data_dir, ports, role; ``on``: the
    process host it will run on (None: this machine), whose free ports it takes."""
    port = on.free_port if on is not None else free_port
    http_port = port()
    ws_port = port() if own_websocket_port(env, host) else http_port
    endpoint = env.odoo_db_name is not None
    return DeploymentRecord(
        deployment_id=deployment_id, environment_id=env.environment_id, db_name=physical_db,
        data_dir=str(Path(env.filestore_root) / deployment_id) if endpoint else env.filestore_root,
        http_port=http_port, websocket_port=ws_port, pid=None, state=state,  # type: ignore[arg-type]
        odoo_db_name=env.odoo_db_name,
        # The role is named after its database: both are cluster-wide names, and the database's is unique.
        db_role=physical_db if endpoint else None, endpoint_port=port() if endpoint else None,
        host=on.name if on is not None else None)


def plan_on_host(svc: Services, env: EnvironmentRecord, deployment_id: str, physical_db: str,
                 state: str = "standby") -> DeploymentRecord:
    """``plan``, on the process host the settings name for ``env`` (README: Hosts)."""
    where = svc.process_host(svc.host_name_for(env.environment_id))
    return plan(env, deployment_id, physical_db, svc.host, state, where if isinstance(where, SshOdooHost) else None)


def prepare_data_dir(env: EnvironmentRecord, dep: DeploymentRecord, svc: Services | None = None) -> None:
    """The deployment's data_dir, with ``sessions`` linked to the environment's shared sessions folder; on its
    process host (``svc`` tells which; None: this machine)."""
    if dep.odoo_db_name is None:
        return
    where = svc.process_host(dep) if svc is not None else None
    if isinstance(where, SshOdooHost):
        where.prepare_data_dir(str(Path(env.filestore_root) / SESSIONS), dep.data_dir)
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


def url(svc: Services, dep: DeploymentRecord) -> str:
    """Where the promoter reaches ``dep``'s Odoo: on its process host's address."""
    assert dep.http_port is not None
    ph = svc.process_host(dep)
    return ph.url(dep.http_port) if isinstance(ph, SshOdooHost) else f"http://127.0.0.1:{dep.http_port}"


def start(svc: Services, env: EnvironmentRecord, dep: DeploymentRecord) -> int:
    """Its PgBouncer (if not running), then its Odoo through it, both on its process host; waits until Odoo
    answers, its websocket server included. Returns Odoo's pid (also recorded, and set on ``dep``)."""
    ph = svc.process_host(dep)
    endpoint = None
    if dep.db_role:
        if not ph.is_alive(dep.endpoint_pid):
            _started_endpoint(svc, env, dep)
        # On a process host too its PgBouncer listens on that host's loopback: the same endpoint, seen from there.
        endpoint = svc.host.endpoint(dep)
    assert dep.http_port is not None
    pid = ph.start_odoo(env.db_dsn_ref, env.environment_id, dep.deployment_id, dep.db_name, dep.data_dir,
                        dep.http_port, dep.websocket_port or dep.http_port, endpoint,
                        command_template=env.odoo_command, workers=env.workers or 0)
    dep.pid, dep.pid_started = pid, ph.process_started(pid)
    svc.ops_db.set_deployment_pid(dep.deployment_id, pid, dep.pid_started)
    separate_bus = dep.websocket_port if dep.websocket_port not in (None, dep.http_port) else None
    ph.wait_healthy(url(svc, dep), pid, separate_bus)
    return pid


def _started_endpoint(svc: Services, env: EnvironmentRecord, dep: DeploymentRecord) -> None:
    """Its PgBouncer started on its process host and recorded with its start time (what lets a later stop prove
    it is the same)."""
    ph = svc.process_host(dep)
    if isinstance(ph, SshOdooHost):
        dep.endpoint_pid = _start_remote_endpoint(svc, ph, env, dep)
    else:
        dep.endpoint_pid = svc.host.start_endpoint(env.db_dsn_ref, dep)
    dep.endpoint_started = ph.process_started(dep.endpoint_pid)
    svc.ops_db.set_endpoint_pid(dep.deployment_id, dep.endpoint_pid, dep.endpoint_started)


def names_this_machine(server_host: str) -> bool:
    """Whether a server address means "this machine" (a socket folder, a loopback name or address): the same
    words on a process host would name another server, that host's own."""
    if not server_host or server_host.startswith("/") or server_host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(server_host).is_loopback
    except ValueError:
        return server_host.lower().endswith(".localhost")


def _start_remote_endpoint(svc: Services, ph: SshOdooHost, env: EnvironmentRecord, dep: DeploymentRecord) -> int:
    """The deployment's PgBouncer on its process host, next to its Odoo (which reaches it on that host's
    loopback), pointing at the environment's server as the DSN names it: that name must mean the same server
    from the process host as from the promoter (an address both reach, not 127.0.0.1)."""
    assert dep.db_role and dep.endpoint_port and dep.odoo_db_name
    with svc.host.connect(env.db_dsn_ref, "postgres") as conn:
        server_host, server_port = conn.info.host, str(conn.info.port)
    if names_this_machine(server_host):
        raise HostError(
            f"{env.environment_id}.db_dsn_ref: the server is {server_host} as the promoter reaches it, which host"
            f" {ph.name} would take for itself; name the server by an address both reach")
    auth = f"{ph.endpoint_dir(dep.deployment_id)}/userlist.txt"
    verifier = svc.host.endpoint_verifier(dep.db_role)
    auth_text, ini_text = db_endpoint.config_texts(
        Path(auth), dep.endpoint_port, dep.served_db, dep.db_name, server_host, server_port, dep.db_role, verifier,
        ph.endpoint_os_user if ph.user == "root" else None)
    return ph.start_endpoint(dep.deployment_id, dep.endpoint_port, auth_text, ini_text)


def ensure_running(svc: Services, env: EnvironmentRecord, dep: DeploymentRecord) -> list[str]:
    """Its PgBouncer and its Odoo running, whichever is not (after a reboot, say); says what it started."""
    ph = svc.process_host(dep)
    if ph.is_alive(dep.pid):
        if not dep.db_role or ph.is_alive(dep.endpoint_pid):
            return []
        _started_endpoint(svc, env, dep)  # Odoo reconnects through it
        return [f"PgBouncer on port {dep.endpoint_port} (pid {dep.endpoint_pid})"]
    endpoint_was_alive = ph.is_alive(dep.endpoint_pid)
    pid = start(svc, env, dep)
    started = [] if endpoint_was_alive or not dep.db_role else [f"PgBouncer on port {dep.endpoint_port}"
                                                                 f" (pid {dep.endpoint_pid})"]
    return [*started, f"Odoo on port {dep.http_port} (pid {pid})"]


def stop(svc: Services, dep: DeploymentRecord) -> list[str]:
    """Its Odoo (the whole process group), then its PgBouncer; each only if its recorded pid still names the
    process started then (hours later the pid may be another's). Returns a line per process left alone."""
    ph = svc.process_host(dep)
    left = {"Odoo": ph.stop_odoo(dep.pid, dep.pid_started),
            "PgBouncer": ph.stop_endpoint(dep.endpoint_pid, dep.endpoint_started)}
    return [f"{dep.deployment_id}: {what} not stopped: {why}" for what, why in left.items() if why]


def remove(svc: Services, dsn_ref: str, dep: DeploymentRecord) -> list[str]:
    """Stopped, its database, role and files gone (the shared sessions folder stays: it is the environment's). An
    adopted deployment's data_dir is the operator's, and may hold other databases' filestores: only its own
    filestore folder and sessions link go. Returns ``stop``'s lines."""
    notes = stop(svc, dep)
    svc.host.drop_database(dsn_ref, dep.db_name)
    svc.host.drop_role(dsn_ref, dep.db_role)
    ph = svc.process_host(dep)
    if isinstance(ph, SshOdooHost):  # its files are on its process host
        if dep.odoo_db_name is not None:
            ph.remove_tree(ph.endpoint_dir(dep.deployment_id))
        if dep.odoo_db_name is not None and dep.owns_data_dir:
            ph.remove_tree(dep.data_dir)
        else:
            ph.remove_filestore(dep.data_dir, dep.served_db)
            if dep.odoo_db_name is not None:
                ph.run_script(f"[ ! -L {shlex.quote(dep.data_dir + '/' + SESSIONS)} ] ||"
                              f" rm -f -- {shlex.quote(dep.data_dir + '/' + SESSIONS)}\n")
        return notes
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
