"""What ``promote inventory check`` verifies on the machine, reading only: secrets, servers, databases, roles,
ports, folders, binaries, and what the ops database and the router already hold.

Nothing here writes a row, a file or a folder, or starts a process: ports are probed by binding for an
instant, servers by connecting, the ops database by reading (it may not exist yet). Each problem names the
path in the inventory it comes from, and says what to do about it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from promote_pipeline.promotion.inventory.model import Environment, Inventory, Router
from promote_pipeline.promotion.inventory.rules import Problem, declares_settings
from promote_pipeline.promotion.inventory.state import Recorded, read_recorded
from promote_pipeline.promotion.services import Services
from promote_pipeline.promotion.settings import Settings
from resources import secrets
from resources.haproxy_adopted import AdoptedHAProxyRouter
from resources.nginx_adopted import AdoptedNginxRouter
from resources.odoo_host import port_in_use
from resources.ops_db import DeploymentRecord
from resources.router import RouterError, RouterResource

RESTARTED = "adoption restarts it once, behind the router"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _settings_path(inv: Inventory, name: str) -> str:
    """Where a setting comes from: declared in the inventory, or in the settings file it refers to."""
    return f"settings.{name}" if declares_settings(inv) else f"settings.file ({name})"


def probe(inv: Inventory, cfg: Settings, svc: Services) -> tuple[list[Problem], Recorded | None]:
    """Every problem the machine shows, and what is recorded (None when the ops database cannot be read)."""
    problems = [*_secret_problems(inv, cfg), *_path_problems(inv, cfg), *_binary_problems(inv, svc)]
    if any(p.path.startswith(_settings_path(inv, "ops_dsn_ref")) for p in problems):
        return problems, None
    try:
        recorded = read_recorded(inv, svc)
    except psycopg.Error as exc:
        problems.append(Problem(_settings_path(inv, "ops_dsn_ref"), f"the ops database cannot be read:"
                                                                    f" {_first_line(exc)}"))
        return problems, None
    answering = _answering_servers(inv, problems, svc)
    problems += _recorded_conflicts(inv, recorded)
    for env_id, env in inv.environments.items():
        if env.db_dsn_ref in answering:
            problems += _adoption_problems(env_id, env, svc, recorded)
    problems += _router_problems(inv, recorded)
    problems += adopted_router_problems(inv.router, svc.router)
    return problems, recorded


# -- secrets, folders, binaries ---------------------------------------------------------------------------
def _secret_problems(inv: Inventory, cfg: Settings) -> Iterator[Problem]:
    refs = [(_settings_path(inv, "ops_dsn_ref"), cfg.ops_dsn_ref), (_settings_path(inv, "role_key_ref"),
                                                                     cfg.role_key_ref)]
    for env_id, env in inv.environments.items():
        refs += [(f"environments.{env_id}.db_dsn_ref", env.db_dsn_ref),
                 (f"environments.{env_id}.smoke_password_ref", env.smoke_password_ref)]
        notifications = env.notifications
        if notifications is not None:
            refs += [(f"environments.{env_id}.notifications.webhooks[{i}].secret_ref", w.secret_ref)
                     for i, w in enumerate(notifications.webhooks)]
            refs += [(f"environments.{env_id}.notifications.apprise[{i}].url_ref", a.url_ref)
                     for i, a in enumerate(notifications.apprise)]
    where = f"the environment or the secrets file {cfg.secrets_file}" if cfg.secrets_file else \
        "the environment (no secrets_file is set)"
    for path, ref in refs:
        try:
            secrets.resolve(ref)
        except secrets.SecretNotFound:
            yield Problem(path, f"secret reference {ref!r} resolves to nothing: set it in {where}")
    if cfg.secrets_file:
        yield from _secrets_file_problems(inv, Path(cfg.secrets_file))


def _secrets_file_problems(inv: Inventory, path: Path) -> Iterator[Problem]:
    where = _settings_path(inv, "secrets_file")
    if not path.is_file():
        yield Problem(where, f"{path} does not exist")
    elif path.stat().st_mode & 0o077:
        yield Problem(where, f"{path} is readable by others (mode {path.stat().st_mode & 0o777:o}): chmod 600 it")


def _folder_problem(path: str, folder: str, what: str, may_be_created: bool) -> Problem | None:
    target = Path(folder)
    if target.is_dir() or (may_be_created and target.parent.is_dir()):
        return None
    if target.exists():
        return Problem(path, f"{target} is not a folder")
    if may_be_created:
        return Problem(path, f"neither {target} nor its parent {target.parent} exists ({what})")
    return Problem(path, f"{target} does not exist (create it: {what})")


def _path_problems(inv: Inventory, cfg: Settings) -> Iterator[Problem]:
    folders = [("storage.evidence_root", cfg.evidence_root, "each run's evidence goes under it", True),
               ("storage.artifact_root", cfg.artifact_root, "the artifact store", True),
               ("router.dir", cfg.router_dir, "the router's configuration", True),
               (_settings_path(inv, "run_dir"), cfg.run_dir, "process logs", True)]
    if declares_settings(inv):
        folders.append(("settings.file", str(Path(inv.settings.file).parent), "apply writes the file there", False))
    for env_id, env in inv.environments.items():
        folders.append((f"environments.{env_id}.data_root", env.data_root, "new deployments' data dirs and the"
                                                                           " shared sessions go under it", False))
    for path, folder, what, may_be_created in folders:
        problem = _folder_problem(path, folder, what, may_be_created)
        if problem:
            yield problem


def _installed(name: str) -> bool:
    return bool(shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin"))


def _binary_problems(inv: Inventory, svc: Services) -> Iterator[Problem]:
    router_bin = str(getattr(svc.router, f"{inv.router.kind}_bin", inv.router.kind))
    if inv.router.host is None and not shutil.which(router_bin):  # with a host, the haproxy is that host's
        yield Problem("router.kind", f"{router_bin} is not installed (not on PATH)")
    if inv.environments and not _installed(svc.host.pgbouncer_bin):
        first = next(iter(inv.environments))
        yield Problem(f"environments.{first}.adopt", f"{svc.host.pgbouncer_bin} is not installed: every deployment"
                                                     " reaches its database through a PgBouncer of its own")


# -- database servers -------------------------------------------------------------------------------------
def _answering_servers(inv: Inventory, problems: list[Problem], svc: Services) -> set[str]:
    """The environments' DSN references whose server answers, with rights enough; a problem for each other."""
    answering: set[str] = set()
    for env_id, env in inv.environments.items():
        ref, path = env.db_dsn_ref, f"environments.{env_id}.db_dsn_ref"
        if ref in answering or any(p.path == path for p in problems):
            continue
        try:
            user, may = svc.host.server_rights(ref)
        except psycopg.Error as exc:
            problems.append(Problem(path, f"its server does not answer: {_first_line(exc)}"))
            continue
        if not may:
            problems.append(Problem(path, f"its user {user!r} cannot create databases and roles (every promotion"
                                          " restores into a new database, with a role of its own)"))
            continue
        answering.add(ref)
    return answering


# -- what is recorded -------------------------------------------------------------------------------------
def _recorded_conflicts(inv: Inventory, recorded: Recorded) -> Iterator[Problem]:
    """What apply does not change: an environment's project, kind and lifelong database name."""
    for env_id, env in inv.environments.items():
        row = recorded.environments.get(env_id)
        if row is None:
            continue
        for name, declared, current in (("project", env.project, row.project_id), ("kind", env.kind, row.kind),
                                        ("odoo_db_name", env.odoo_db_name, row.odoo_db_name)):
            if declared != current:
                yield Problem(f"environments.{env_id}.{name}", f"the ops database records {current!r}: an"
                                                               f" environment's {name} never changes")


def _adoption_problems(env_id: str, env: Environment, svc: Services, recorded: Recorded) -> list[Problem]:
    where = f"environments.{env_id}"
    adopted = recorded.adopted.get(env_id)
    if adopted is not None:
        return list(_adopted_agrees(where, env_id, env, adopted, svc))
    active = recorded.active.get(env_id)
    if active is not None:
        return [Problem(f"{where}.adopt", f"the environment is already served by deployment"
                                          f" {active.deployment_id}: only an environment with no live deployment"
                                          " recorded is adopted")]
    return list(_pending_adoption(where, env, svc))


def _adopted_agrees(where: str, env_id: str, env: Environment, adopted: DeploymentRecord,
                    svc: Services) -> Iterator[Problem]:
    """An adopted deployment is recorded for good: the file must still describe it, and its ports be its own."""
    a = env.adopt
    if adopted.environment_id != env_id:
        yield Problem(f"{where}.adopt.deployment_id", f"{adopted.deployment_id} is a deployment of"
                                                      f" {adopted.environment_id}")
        return
    declared = {"db_name": a.db_name, "data_dir": a.data_dir, "http_port": a.http_port,
                "db_role": a.db_role or a.db_name}
    for name in ("websocket_port", "endpoint_port"):  # when left out, whatever it was adopted with
        if getattr(a, name) is not None:
            declared[name] = getattr(a, name)
    for name, value in declared.items():
        if getattr(adopted, name) != value:
            yield Problem(f"{where}.adopt.{name}", f"{adopted.deployment_id} was adopted with"
                                                   f" {getattr(adopted, name)!r}: an adopted deployment is not changed")
    ports = {"http_port": (adopted.http_port, adopted.pid), "endpoint_port": (adopted.endpoint_port,
                                                                               adopted.endpoint_pid)}
    if adopted.websocket_port != adopted.http_port:
        ports["websocket_port"] = (adopted.websocket_port, adopted.pid)
    for name, (port, pid) in ports.items():
        if adopted.state == "active" and port and not svc.host.is_alive(pid) and port_in_use("127.0.0.1", port):
            yield Problem(f"{where}.adopt.{name}", f"port {port} is taken by a process that is not"
                                                   f" {adopted.deployment_id}'s: apply would restart it there")


def _pending_adoption(where: str, env: Environment, svc: Services) -> Iterator[Problem]:
    a, ref = env.adopt, env.db_dsn_ref
    if not svc.host.database_exists(ref, a.db_name):
        yield Problem(f"{where}.adopt.db_name", f"database {a.db_name} does not exist on the server of {ref}")
    else:
        sessions = svc.host.sessions_on(ref, a.db_name)
        if sessions:
            yield Problem(f"{where}.adopt.db_name", f"{len(sessions)} session(s) connected to {a.db_name}"
                                                    f" ({', '.join(sessions[:3])}): stop the Odoo serving it and"
                                                    f" anything else connected first ({RESTARTED})")
    role = a.db_role or a.db_name
    if svc.host.role_exists(ref, role):
        yield Problem(f"{where}.adopt.db_role", f"role {role} exists already: adoption would take it over (its"
                                                " password and rights replaced); name another with adopt.db_role")
    yield from _data_dir_problems(where, env)
    for name in ("http_port", "websocket_port", "endpoint_port"):
        port = getattr(a, name)
        if port is not None and (name != "websocket_port" or port != a.http_port) and port_in_use("127.0.0.1", port):
            yield Problem(f"{where}.adopt.{name}", f"port {port} is in use: stop the Odoo serving {a.db_name} (and"
                                                   f" whatever else holds the port) first ({RESTARTED})")


def _data_dir_problems(where: str, env: Environment) -> Iterator[Problem]:
    data_dir, name = Path(env.adopt.data_dir), env.odoo_db_name
    if not data_dir.is_dir():
        yield Problem(f"{where}.adopt.data_dir", f"{data_dir} does not exist")
        return
    if (data_dir / "filestore" / name).is_dir():
        return
    physical = data_dir / "filestore" / env.adopt.db_name
    if physical.is_dir():
        yield Problem(f"{where}.adopt.data_dir", f"its filestore is {physical}, but Odoo will serve the database as"
                                                 f" {name}: rename that folder to filestore/{name}")
    else:
        yield Problem(f"{where}.adopt.data_dir", f"{data_dir} has no filestore/{name}/ (the filestore of the"
                                                 " database Odoo serves as odoo_db_name)")


# -- the router -------------------------------------------------------------------------------------------
def _router_problems(inv: Inventory, recorded: Recorded) -> Iterator[Problem]:
    host = inv.router.listen_host
    # port 0 is any free port: only an address this machine does not have fails (with a router host, the team's
    # frontends listen on that host, not here)
    if inv.router.host is None and port_in_use(host, 0):
        yield Problem("router.listen_host", f"{host} is not an address of this machine")
        return
    for env_id, entry in inv.router.fronts.items():
        state = recorded.routes.get(env_id)
        for name in ("active_port", "preview_port"):
            declared, path = getattr(entry, name), f"router.fronts.{env_id}.{name}"
            if state is not None:
                current = urlsplit(state.active_url if name == "active_port" else state.preview_url).port
                if declared is not None and declared != current:
                    yield Problem(path, f"the router serves it on port {current}: an entry point's port is kept"
                                        " once made")
            elif declared is not None and inv.router.mode == "managed" and port_in_use(host, declared):
                yield Problem(path, f"port {declared} is in use on {host}")


def adopted_router_problems(section: Router, router: RouterResource) -> list[Problem]:
    """The team's router, asked: an HAProxy over its runtime API (it answers at level admin, and has the backends and
    servers each production environment is switched through); an nginx by ``nginx -t`` of its configuration and
    promote's probe on each entry point's port (its server block includes promote's file). One line per environment
    naming what it lacks."""
    if section.mode != "adopted":
        return []
    if isinstance(router, AdoptedNginxRouter):
        problems = []
        for env_id, entry in section.fronts.items():
            missing = router.missing(env_id, entry.active_port, entry.preview_port)
            if missing:
                problems.append(Problem(f"router.fronts.{env_id}", f"the team's nginx ({router.config_file}) lacks"
                                                                   f" what {env_id} is served through:"
                                                                   f" {', '.join(missing)}"))
        return problems
    if not isinstance(router, AdoptedHAProxyRouter):
        return []
    on = f" on {router.ssh.address}" if router.ssh is not None else ""
    where = f"the team's haproxy (runtime API {router.runtime_api}{on})"
    try:
        router.start()  # nothing is started: it asks the runtime API for its level
    except RouterError as exc:
        return [Problem("router.runtime_api", _first_line(exc))]
    problems = []
    for env_id in section.fronts:
        try:
            missing = router.missing(env_id)
        except RouterError as exc:
            return [Problem("router.runtime_api", _first_line(exc))]
        if missing:
            problems.append(Problem(f"router.fronts.{env_id}", f"{where} lacks what {env_id} is switched through:"
                                                               f" {', '.join(missing)}"))
    return problems
