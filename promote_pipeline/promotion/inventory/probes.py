"""What ``promote inventory check`` verifies on the machine, reading only: secrets, servers, databases, roles,
ports, folders, binaries, the process hosts, and what the ops database and the router already hold.

Nothing here writes a row, a file or a folder, or starts a process: ports are probed by binding for an
instant, servers by connecting, the ops database by reading (it may not exist yet). Each problem names the
path in the inventory it comes from, and says what to do about it.

An environment on a process host (``environments.<id>.host``) is asked about on that host, over SSH: its folders
exist there, its ports are free there. A host that does not answer (down, its key unknown or changed, the key
refused) is one problem, ``hosts.<name>``, with ssh's own line; its environments' adoption is then not probed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
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
from resources.odoo_host import HostError, LocalOdooHost, port_in_use
from resources.ops_db import DeploymentRecord
from resources.router import RouterError, RouterResource
from resources.ssh_odoo_host import SshOdooHost

RESTARTED = "adoption restarts it once, behind the router"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _settings_path(inv: Inventory, name: str) -> str:
    """Where a setting comes from: declared in the inventory, or in the settings file it refers to."""
    return f"settings.{name}" if declares_settings(inv) else f"settings.file ({name})"


@dataclass
class _Machine:
    """Where an environment's Odoo runs, as the probes ask it: this machine, or its process host over SSH."""

    local: LocalOdooHost
    name: str | None = None
    remote: SshOdooHost | None = None

    @property
    def on(self) -> str:
        return f" on host {self.name}" if self.name else ""

    def is_dir(self, path: str) -> bool:
        return self.remote.is_dir(path) if self.remote else Path(path).is_dir()

    def port_in_use(self, port: int) -> bool:
        return self.remote.port_in_use(port) if self.remote else port_in_use("127.0.0.1", port)

    def is_alive(self, pid: int | None) -> bool:
        return (self.remote or self.local).is_alive(pid)


def probe(inv: Inventory, cfg: Settings, svc: Services) -> tuple[list[Problem], Recorded | None]:
    """Every problem the machine shows, and what is recorded (None when the ops database cannot be read)."""
    problems = _secret_problems(inv, cfg)
    hosts = _answering_hosts(inv, svc, problems)
    machines = {env_id: _machine(env, svc, hosts) for env_id, env in inv.environments.items()
                if env.host is None or env.host in hosts}
    problems += [*_path_problems(inv, cfg, machines), *_binary_problems(inv, svc, hosts)]
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
        if env.db_dsn_ref in answering and env_id in machines:
            problems += _asked(env, _adoption_problems, env_id, env, svc, recorded, machines[env_id])
    problems += _router_problems(inv, recorded)
    problems += adopted_router_problems(inv.router, svc.router)
    return problems, recorded


def _machine(env: Environment, svc: Services, hosts: dict[str, SshOdooHost]) -> _Machine:
    if env.host is None:
        return _Machine(svc.host)
    return _Machine(svc.host, env.host, hosts[env.host])


def _asked(env: Environment, probes: Callable[..., list[Problem]], *args: Any) -> list[Problem]:
    """An environment's probes; its host stopping to answer half-way is one problem of that host's."""
    try:
        return probes(*args)
    except HostError as exc:
        return [Problem(f"hosts.{env.host}", _first_line(exc))]


# -- process hosts ----------------------------------------------------------------------------------------
def _answering_hosts(inv: Inventory, svc: Services, problems: list[Problem]) -> dict[str, SshOdooHost]:
    """Each host an environment names, asked over SSH to run nothing; those that answer (a problem for each
    other). A host whose key reference resolves to nothing is not asked: that problem is said already."""
    answering: dict[str, SshOdooHost] = {}
    for name in sorted({env.host for env in inv.environments.values() if env.host is not None}):
        if any(p.path == f"hosts.{name}.identity_ref" for p in problems):
            continue
        try:
            ph = svc.process_host(name)
            assert isinstance(ph, SshOdooHost)
            ph.answers()
        except HostError as exc:
            problems.append(Problem(f"hosts.{name}", _first_line(exc)))
            continue
        answering[name] = ph
    return answering


# -- secrets, folders, binaries ---------------------------------------------------------------------------
def _secret_problems(inv: Inventory, cfg: Settings) -> list[Problem]:
    return list(_secret_problems_of(inv, cfg))


def _secret_problems_of(inv: Inventory, cfg: Settings) -> Iterator[Problem]:
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
    used = {env.host for env in inv.environments.values()}
    refs += [(f"hosts.{name}.identity_ref", host.identity_ref) for name, host in inv.hosts.items() if name in used]
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


def _path_problems(inv: Inventory, cfg: Settings, machines: dict[str, _Machine]) -> Iterator[Problem]:
    folders = [("storage.evidence_root", cfg.evidence_root, "each run's evidence goes under it", True),
               ("storage.artifact_root", cfg.artifact_root, "the artifact store", True),
               ("router.dir", cfg.router_dir, "the router's configuration", True),
               (_settings_path(inv, "run_dir"), cfg.run_dir, "process logs", True)]
    if declares_settings(inv):
        folders.append(("settings.file", str(Path(inv.settings.file).parent), "apply writes the file there", False))
    what = "new deployments' data dirs and the shared sessions go under it"
    for env_id, env in inv.environments.items():
        if env.host is None:
            folders.append((f"environments.{env_id}.data_root", env.data_root, what, False))
    for path, folder, said, may_be_created in folders:
        problem = _folder_problem(path, folder, said, may_be_created)
        if problem:
            yield problem
    for env_id, env in inv.environments.items():
        if env.host is not None and env_id in machines:
            yield from _asked(env, _remote_data_root, env_id, env, machines[env_id])


def _remote_data_root(env_id: str, env: Environment, machine: _Machine) -> list[Problem]:
    if machine.is_dir(env.data_root):
        return []
    return [Problem(f"environments.{env_id}.data_root", f"{env.data_root} does not exist{machine.on} (create it"
                                                        " there: new deployments' data dirs and the shared sessions go"
                                                        " under it)")]


def _installed(name: str) -> bool:
    return bool(shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin"))


def _binary_problems(inv: Inventory, svc: Services, hosts: dict[str, SshOdooHost]) -> Iterator[Problem]:
    router_bin = str(getattr(svc.router, f"{inv.router.kind}_bin", inv.router.kind))
    if inv.router.host is None and not shutil.which(router_bin):  # with a host, the haproxy is that host's
        yield Problem("router.kind", f"{router_bin} is not installed (not on PATH)")
    here = [env_id for env_id, env in inv.environments.items() if env.host is None]
    if here and not _installed(svc.host.pgbouncer_bin):
        yield Problem(f"environments.{here[0]}.adopt", f"{svc.host.pgbouncer_bin} is not installed: every deployment"
                                                       " reaches its database through a PgBouncer of its own")
    for name, ph in hosts.items():  # a deployment's PgBouncer runs next to its Odoo, on its host
        try:
            if not ph.has_program(ph.pgbouncer_bin):
                yield Problem(f"hosts.{name}.pgbouncer_bin", f"{ph.pgbouncer_bin} is not installed on host {name}:"
                                                             " every deployment there reaches its database through a"
                                                             " PgBouncer of its own, next to its Odoo")
        except HostError as exc:
            yield Problem(f"hosts.{name}", _first_line(exc))


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


def _adoption_problems(env_id: str, env: Environment, svc: Services, recorded: Recorded,
                       machine: _Machine) -> list[Problem]:
    where = f"environments.{env_id}"
    adopted = recorded.adopted.get(env_id)
    if adopted is not None:
        return list(_adopted_agrees(where, env_id, env, adopted, machine))
    active = recorded.active.get(env_id)
    if active is not None:
        return [Problem(f"{where}.adopt", f"the environment is already served by deployment"
                                          f" {active.deployment_id}: only an environment with no live deployment"
                                          " recorded is adopted")]
    return list(_pending_adoption(where, env, svc, machine))


def _adopted_agrees(where: str, env_id: str, env: Environment, adopted: DeploymentRecord,
                    machine: _Machine) -> Iterator[Problem]:
    """An adopted deployment is recorded for good: the file must still describe it, and its ports be its own."""
    a = env.adopt
    if adopted.environment_id != env_id:
        yield Problem(f"{where}.adopt.deployment_id", f"{adopted.deployment_id} is a deployment of"
                                                      f" {adopted.environment_id}")
        return
    if adopted.host != env.host:
        yield Problem(f"{where}.host", f"{adopted.deployment_id} was adopted on"
                                       f" {f'host {adopted.host}' if adopted.host else 'this machine'}: an adopted"
                                       " deployment is not moved")
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
        if adopted.state == "active" and port and not machine.is_alive(pid) and machine.port_in_use(port):
            yield Problem(f"{where}.adopt.{name}", f"port {port}{machine.on} is taken by a process that is not"
                                                   f" {adopted.deployment_id}'s: apply would restart it there")


def _pending_adoption(where: str, env: Environment, svc: Services, machine: _Machine) -> Iterator[Problem]:
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
    yield from _data_dir_problems(where, env, machine)
    for name in ("http_port", "websocket_port", "endpoint_port"):
        port = getattr(a, name)
        if port is not None and (name != "websocket_port" or port != a.http_port) and machine.port_in_use(port):
            yield Problem(f"{where}.adopt.{name}", f"port {port} is in use{machine.on}: stop the Odoo serving"
                                                   f" {a.db_name} (and whatever else holds the port) first"
                                                   f" ({RESTARTED})")


def _data_dir_problems(where: str, env: Environment, machine: _Machine) -> Iterator[Problem]:
    data_dir, name = Path(env.adopt.data_dir), env.odoo_db_name
    if not machine.is_dir(str(data_dir)):
        yield Problem(f"{where}.adopt.data_dir", f"{data_dir} does not exist{machine.on}")
        return
    if machine.is_dir(str(data_dir / "filestore" / name)):
        return
    physical = data_dir / "filestore" / env.adopt.db_name
    if machine.is_dir(str(physical)):
        yield Problem(f"{where}.adopt.data_dir", f"its filestore is {physical}{machine.on}, but Odoo will serve the"
                                                 f" database as {name}: rename that folder to filestore/{name}")
    else:
        yield Problem(f"{where}.adopt.data_dir", f"{data_dir}{machine.on} has no filestore/{name}/ (the filestore"
                                                 " of the database Odoo serves as odoo_db_name)")


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
