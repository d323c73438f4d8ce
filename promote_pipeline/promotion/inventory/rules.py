"""Reading an inventory: the file, its format, the rules between its parts, and the settings it stands for.

Nothing here touches a database or a process; the only files read are the inventory and, when the inventory
refers to one, the settings file. Every problem is one line naming where it is in the file and the rule
(``environments.prod.odoo_db_name: must be 1-63 letters, digits or '_' (got 'my-db')``), and all of them are
reported at once: an operator fixes a file in one pass, not one error per run.
"""

from __future__ import annotations

import json
import os
import string
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from promote_pipeline.promotion.inventory.model import Environment, Inventory
from promote_pipeline.promotion.settings import Settings
from resources.redaction import redact_text


@dataclass(frozen=True)
class Problem:
    """One broken rule: where in the file, and what the rule is."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InventoryProblems(Exception):
    """The inventory cannot be used as it is; ``problems`` says why, one line each."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


# -- the file and its format ------------------------------------------------------------------------------
_PLAIN = {
    "missing": "is required",
    "extra_forbidden": "is not a key of the inventory format (examples/inventory.yaml shows them all)",
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number", "float_parsing": "must be a number", "float_type": "must be a number",
    "string_type": "must be text", "bool_parsing": "must be true or false", "bool_type": "must be true or false",
    "dict_type": "must be a mapping", "model_type": "must be a mapping", "model_attributes_type": "must be a mapping",
    "list_type": "must be a list", "string_too_short": "must not be empty",
}


def _where(loc: tuple[Any, ...]) -> tuple[str, bool]:
    """``environments.prod.adopt`` from pydantic's location; True when the key itself is what is wrong."""
    text = ""
    for part in loc:
        if part == "[key]":
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)", "[key]" in loc


def _rule_of(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _PLAIN:
        return _PLAIN[kind]
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    return str(error["msg"]).removeprefix("Value error, ")


def _got(error: Any) -> str:
    value = error.get("input")
    if error["type"] in ("missing", "extra_forbidden") or not isinstance(value, str | int | float | bool):
        return ""
    shown = redact_text(repr(value))  # a URL given with its password in it is not printed back
    return f" (got {shown[:60]}{'…' if len(shown) > 60 else ''})"


def format_errors(exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors():
        path, is_key = _where(tuple(error["loc"]))
        problems.append(Problem(path, ("the key " if is_key else "") + _rule_of(error) + _got(error)))
    return problems


def parse(path: Path) -> Inventory:
    """The inventory in ``path``, its paths made absolute (relative ones are read from its folder) and the rules
    between its parts checked. Raises InventoryProblems."""
    if not path.is_file():
        raise InventoryProblems([Problem(str(path), "does not exist")])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        raise InventoryProblems([Problem(path.name, f"not valid YAML: {line}{getattr(exc, 'problem', exc)}")]) \
            from None
    if not isinstance(data, dict):
        raise InventoryProblems([Problem(path.name, "must be a mapping of settings, storage, projects, environments,"
                                                    " users and router")])
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryProblems(format_errors(exc)) from None
    inventory = absolute_paths(inventory, path.parent)
    problems = cross_rules(inventory)
    if problems:
        raise InventoryProblems(problems)
    return inventory


def absolute_paths(inv: Inventory, base: Path) -> Inventory:
    def absolute(text: str | None) -> str | None:
        if text is None:
            return None
        value = Path(text).expanduser()
        return os.path.normpath(value if value.is_absolute() else base / value)

    settings = inv.settings.model_copy(update={k: absolute(getattr(inv.settings, k))
                                               for k in ("file", "secrets_file", "run_dir")})
    storage = inv.storage.model_copy(update={k: absolute(getattr(inv.storage, k))
                                             for k in ("evidence_root", "artifact_root")})
    # An environment on a process host has its folders there: a path relative to this file's folder would name
    # nothing on that machine, so they are left as written (the rules then require them absolute).
    environments = {
        env_id: env if env.host is not None else env.model_copy(update={
            "data_root": absolute(env.data_root),
            "adopt": env.adopt.model_copy(update={"data_dir": absolute(env.adopt.data_dir)})})
        for env_id, env in inv.environments.items()}
    # known_hosts_file is read on this machine; run_dir is the host's, and left as written.
    hosts = {name: host.model_copy(update={"known_hosts_file": absolute(host.known_hosts_file)})
             for name, host in inv.hosts.items()}
    return inv.model_copy(update={"settings": settings, "storage": storage, "environments": environments,
                                  "hosts": hosts,
                                  "router": inv.router.model_copy(update={
                                      "dir": absolute(inv.router.dir),
                                      # with a host, config_file is a path on that host: kept as written
                                      "config_file": absolute(inv.router.config_file)
                                      if inv.router.config_file and inv.router.host is None
                                      else inv.router.config_file,
                                      "host": inv.router.host.model_copy(update={
                                          "known_hosts_file": absolute(inv.router.host.known_hosts_file)})
                                      if inv.router.host else None,
                                      "include_dir": absolute(inv.router.include_dir)
                                      if inv.router.include_dir else None})})


# -- the rules between parts ------------------------------------------------------------------------------
_INLINE_REQUIRED = ("ops_dsn_ref", "ops_database", "role_key_ref", "run_dir", "odoo_command")
_INLINE_FIELDS = (*_INLINE_REQUIRED, "secrets_file", "min_free_space_factor", "carry_over_parameters")
PLACEHOLDERS = ("python", "db", "data_dir", "http_port", "websocket_port", "workers", "environment_id", "deployment",
                "db_host", "db_port", "db_user", "http_interface")


def declares_settings(inv: Inventory) -> bool:
    """True: the settings are declared in the inventory (apply writes the file); False: the file is referenced."""
    return any(getattr(inv.settings, name) is not None for name in _INLINE_FIELDS)


def cross_rules(inv: Inventory) -> list[Problem]:
    return [*_settings_rules(inv), *_reference_rules(inv), *_host_rules(inv), *_environment_rules(inv),
            *_unique_rules(inv), *_template_rules(inv)]


def _settings_rules(inv: Inventory) -> Iterator[Problem]:
    if not declares_settings(inv):
        return
    for name in _INLINE_REQUIRED:
        if getattr(inv.settings, name) is None:
            yield Problem(f"settings.{name}", "is required when the settings are declared here (or give settings.file"
                                              " alone: an existing settings file)")


def _reference_rules(inv: Inventory) -> Iterator[Problem]:
    for env_id, env in inv.environments.items():
        if env.project not in inv.projects:
            yield Problem(f"environments.{env_id}.project", f"must be a project declared under projects (got"
                                                            f" {env.project!r})")
    for user_id, grants in inv.users.items():
        for project_id in grants:
            if project_id not in inv.projects:
                yield Problem(f"users.{user_id}.{project_id}", "must be a project declared under projects")
    for env_id in inv.router.fronts:
        declared = inv.environments.get(env_id)
        if declared is None or declared.kind != "production":
            yield Problem(f"router.fronts.{env_id}", "must be a production environment declared under environments")
    for env_id, env in inv.environments.items():
        if env.kind == "production" and env_id not in inv.router.fronts:
            yield Problem(f"environments.{env_id}", "a production environment is promoted through the router: add it"
                                                    " under router.fronts")
    yield from _adoption_rules(inv)


def _adoption_rules(inv: Inventory) -> Iterator[Problem]:
    """An adopted router is the team's: an HAProxy is reached through its runtime API, an nginx through the folder
    it includes and its configuration file; their entry points' ports are given."""
    r = inv.router
    if r.mode == "adopted":
        if r.kind == "nginx":
            for name, what in (("include_dir", "the folder of promote's files that the team's nginx includes"),
                               ("config_file", "the team's main nginx.conf, for nginx -t")):
                if not getattr(r, name):
                    yield Problem(f"router.{name}", f"required when an nginx is adopted: {what}")
            if r.runtime_api:
                yield Problem("router.runtime_api", "only for an adopted haproxy")
        elif not r.runtime_api:
            yield Problem("router.runtime_api", "required when mode is adopted: the team's HAProxy runtime API at"
                                                " level admin (a unix socket path or ipv4@host:port)")
        for env_id, entry in r.fronts.items():
            for name in ("active_port", "preview_port"):
                if getattr(entry, name) is None:
                    yield Problem(f"router.fronts.{env_id}.{name}", "required when mode is adopted: the port of"
                                                                    " the team's frontend for it")
        if r.host is not None and r.kind == "nginx":
            yield Problem("router.host", "only for an adopted haproxy (adopting an nginx on another host over SSH"
                                         " is not built)")
        elif r.host is not None:
            api = (r.runtime_api or "").removeprefix("unix@")
            if r.runtime_api and (not api.startswith("/") or ":" in api):
                yield Problem("router.runtime_api", "with router.host, must be the absolute path of the admin"
                                                    " socket on that host (no ':'): it is reached through SSH")
            if r.config_file and not r.config_file.startswith("/"):
                yield Problem("router.config_file", "with router.host, must be an absolute path on that host")
    else:
        for name in ("runtime_api", "config_file", "host"):
            if getattr(r, name):
                yield Problem(f"router.{name}", "only for mode adopted")
    if (r.mode, r.kind) != ("adopted", "nginx"):
        for name in ("include_dir", "reload_command", "nginx_command"):
            if getattr(r, name):
                yield Problem(f"router.{name}", "only for an adopted nginx")


def _host_rules(inv: Inventory) -> Iterator[Problem]:
    """A host an environment names is declared; what lives on a host is named by absolute paths (a relative one
    would be read from a folder of this machine, which the host does not have)."""
    for name, host in inv.hosts.items():
        if not os.path.isabs(host.run_dir):
            yield Problem(f"hosts.{name}.run_dir", f"must be an absolute path on host {name} (got {host.run_dir!r})")
    for env_id, env in inv.environments.items():
        if env.host is None:
            continue
        if env.host not in inv.hosts:
            known = ", ".join(inv.hosts) or "none is declared"
            yield Problem(f"environments.{env_id}.host", f"must be a host declared under hosts (got {env.host!r};"
                                                         f" hosts: {known})")
        for path, value in ((f"environments.{env_id}.data_root", env.data_root),
                            (f"environments.{env_id}.adopt.data_dir", env.adopt.data_dir)):
            if not os.path.isabs(value):
                yield Problem(path, f"must be an absolute path on host {env.host} (got {value!r})")


def _environment_rules(inv: Inventory) -> Iterator[Problem]:
    for env_id, env in inv.environments.items():
        where, adopt = f"environments.{env_id}", env.adopt
        if env.kind == "production" and not adopt.first_blue:
            yield Problem(f"{where}.adopt.first_blue", "must be true for a production environment (its live"
                                                       " deployment becomes the router's first blue)")
        if env.kind != "production" and adopt.first_blue:
            yield Problem(f"{where}.adopt.first_blue", "only a production environment's live deployment becomes a"
                                                       " blue")
        if env.kind != "production" and env.require_approval:
            yield Problem(f"{where}.require_approval", "only a production environment's promotions wait for"
                                                       " approval (it is the target of a promotion)")
        yield from _worker_rules(where, env)


def _worker_rules(where: str, env: Environment) -> Iterator[Problem]:
    adopt = env.adopt
    if env.worker_mode == "prefork":
        if env.workers is None:
            yield Problem(f"{where}.workers", "is required in prefork mode")
        if adopt.websocket_port is None:
            yield Problem(f"{where}.adopt.websocket_port", "is required in prefork mode (its gevent server's port)")
        elif adopt.websocket_port == adopt.http_port:
            yield Problem(f"{where}.adopt.websocket_port", "must differ from adopt.http_port in prefork mode")
        return
    if env.workers is not None:
        yield Problem(f"{where}.workers", "is for prefork mode only (worker_mode is threaded)")
    if adopt.websocket_port not in (None, adopt.http_port):
        yield Problem(f"{where}.adopt.websocket_port", "a threaded Odoo serves its websocket on adopt.http_port:"
                                                       " leave it out")


def _duplicates(named: list[tuple[Any, str]], what: str) -> Iterator[Problem]:
    """A problem for every later use of a value an earlier path already took."""
    first: dict[Any, str] = {}
    for value, path in named:
        if value in first:
            yield Problem(path, f"{what} {value} is also {first[value]}")
        else:
            first[value] = path


def _unique_rules(inv: Inventory) -> Iterator[Problem]:
    # Ports and folders are a machine's: two environments on different hosts may use the same ones. The router's
    # entry points are on this machine (host None).
    ports: dict[str | None, list[tuple[Any, str]]] = defaultdict(list)
    roots: dict[str | None, list[tuple[Any, str]]] = defaultdict(list)
    databases, deployments, roles = [], [], []
    for env_id, env in inv.environments.items():
        a, where, on = env.adopt, f"environments.{env_id}.adopt", env.host
        roots[on].append((env.data_root, f"environments.{env_id}.data_root"))  # its sessions are the environment's
        ports[on].append((a.http_port, f"{where}.http_port"))
        if a.websocket_port not in (None, a.http_port):
            ports[on].append((a.websocket_port, f"{where}.websocket_port"))
        if a.endpoint_port is not None:
            ports[on].append((a.endpoint_port, f"{where}.endpoint_port"))
        databases.append((a.db_name, f"{where}.db_name"))
        deployments.append((env.deployment_id(env_id), f"{where}.deployment_id"))
        roles.append((a.db_role or a.db_name, f"{where}.db_role"))
    for env_id, entry in inv.router.fronts.items():
        for name in ("active_port", "preview_port"):
            if getattr(entry, name) is not None:
                ports[None].append((getattr(entry, name), f"router.fronts.{env_id}.{name}"))
    for named in ports.values():
        yield from _duplicates(named, "port")
    yield from _duplicates(databases, "database")
    yield from _duplicates(deployments, "deployment")
    yield from _duplicates(roles, "role")
    for named in roots.values():
        yield from _duplicates(named, "folder")


def template_problems(path: str, template: str, prefork: bool) -> list[Problem]:
    """What an Odoo command template lacks or names that no one fills in."""
    try:
        named = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as exc:
        return [Problem(path, f"is not a command template: {exc}")]
    problems = [Problem(path, f"names {{{field}}}, which is not a placeholder (they are: {', '.join(PLACEHOLDERS)})")
                for field in sorted(named - set(PLACEHOLDERS))]
    needed = ["db", "data_dir", "http_port"] + (["websocket_port", "workers"] if prefork else [])
    problems += [Problem(path, f"must name {{{field}}}" + (" (prefork mode)" if field in ("websocket_port", "workers")
                                                             else ""))
                 for field in needed if field not in named]
    return problems


def _template_rules(inv: Inventory, default: str | None = None) -> Iterator[Problem]:
    """Each environment's own template, and once the settings' (declared here, or ``default`` from the file) for
    the environments without one: prefork needs of it what any of those does."""
    default = default or inv.settings.odoo_command
    sharing = []
    for env_id, env in inv.environments.items():
        if env.odoo_command is None:
            sharing.append(env.worker_mode == "prefork")
        else:
            yield from template_problems(f"environments.{env_id}.odoo_command", env.odoo_command,
                                         env.worker_mode == "prefork")
    if default is not None and sharing:
        yield from template_problems("settings.odoo_command", default, any(sharing))


# -- the settings it stands for ---------------------------------------------------------------------------
def declared_settings(inv: Inventory) -> Settings:
    """The settings file apply writes, from the inventory (settings, storage, router and hosts)."""
    s = inv.settings
    values: dict[str, Any] = {
        "ops_dsn_ref": s.ops_dsn_ref, "ops_database": s.ops_database, "secrets_file": s.secrets_file,
        "role_key_ref": s.role_key_ref, "run_dir": s.run_dir, "odoo_command": s.odoo_command,
        "evidence_root": inv.storage.evidence_root, "artifact_root": inv.storage.artifact_root,
        "router_kind": inv.router.kind, "router_dir": inv.router.dir, "router_listen_host": inv.router.listen_host,
        "router_mode": inv.router.mode, "router_runtime_api": inv.router.runtime_api,
        "router_config_file": inv.router.config_file,
        "router_host": inv.router.host.model_dump() if inv.router.host else None,
        "router_include_dir": inv.router.include_dir,
        "router_reload_command": inv.router.reload_command, "router_nginx_command": inv.router.nginx_command,
        "process_hosts": {name: host.model_dump() for name, host in inv.hosts.items()},
        "environment_hosts": _environment_hosts(inv),
        # The inventory declares its artifact folder, and its check accepts one not made yet under an existing
        # parent: the first promotion makes it, as declared.
        "create_artifact_root": True}
    if s.min_free_space_factor is not None:
        values["min_free_space_factor"] = s.min_free_space_factor
    if s.carry_over_parameters is not None:
        values["carry_over_parameters"] = s.carry_over_parameters
    if s.retention is not None:
        values["retention"] = s.retention.model_dump()
    if s.stability is not None:
        values["stability"] = s.stability.model_dump()
    return Settings.model_validate(values)


def _environment_hosts(inv: Inventory) -> dict[str, str]:
    return {env_id: env.host for env_id, env in inv.environments.items() if env.host is not None}


def _host_agreement(inv: Inventory, existing: Settings) -> Iterator[Problem]:
    """The hosts, each as a whole (a host whose address or key file differs is another host), and which
    environment runs on which."""
    where = f"the settings file {inv.settings.file}"
    for name in sorted(set(inv.hosts) | set(existing.process_hosts)):
        declared, recorded = inv.hosts.get(name), existing.process_hosts.get(name)
        if recorded is None:
            yield Problem(f"hosts.{name}", f"{where} has no process host {name} (process_hosts)")
        elif declared is None:
            yield Problem("hosts", f"{where} has a process host {name} the inventory does not declare")
        elif declared.model_dump() != recorded.model_dump():
            differ = [k for k, v in declared.model_dump().items() if getattr(recorded, k) != v]
            yield Problem(f"hosts.{name}", f"{where} says otherwise of {', '.join(differ)}")
    recorded_hosts = existing.environment_hosts
    for env_id in inv.environments:
        declared_host, recorded_host = inv.environments[env_id].host, recorded_hosts.get(env_id)
        if declared_host != recorded_host:
            yield Problem(f"environments.{env_id}.host", f"{where} says {recorded_host!r} (environment_hosts)")


def _agreement(inv: Inventory, existing: Settings) -> Iterator[Problem]:
    """A referenced settings file must say what the inventory says about the router, storage and hosts."""
    pairs = (("router.kind", inv.router.kind, existing.router_kind),
             ("router.dir", inv.router.dir, existing.router_dir),
             ("router.listen_host", inv.router.listen_host, existing.router_listen_host),
             ("router.mode", inv.router.mode, existing.router_mode),
             ("router.runtime_api", inv.router.runtime_api or "", existing.router_runtime_api or ""),
             ("router.config_file", inv.router.config_file or "", existing.router_config_file or ""),
             ("router.include_dir", inv.router.include_dir or "", existing.router_include_dir or ""),
             ("router.reload_command", inv.router.reload_command or "", existing.router_reload_command or ""),
             ("router.nginx_command", inv.router.nginx_command or "", existing.router_nginx_command or ""),
             ("storage.evidence_root", inv.storage.evidence_root, existing.evidence_root),
             ("storage.artifact_root", inv.storage.artifact_root, existing.artifact_root))
    for path, declared, recorded in pairs:
        if os.path.normpath(str(declared)) != os.path.normpath(str(recorded)):
            yield Problem(path, f"the settings file {inv.settings.file} says {recorded!r}")
    if inv.router.host != existing.router_host:
        says = existing.router_host.model_dump() if existing.router_host else None
        yield Problem("router.host", f"the settings file {inv.settings.file} says {says!r}")
    yield from _host_agreement(inv, existing)


def settings_of(inv: Inventory) -> Settings:
    """The settings promote processes will run with: declared here, or read from the referenced file, which must
    exist and agree. Raises InventoryProblems."""
    if declares_settings(inv):
        return declared_settings(inv)
    path = Path(inv.settings.file)
    if not path.is_file():
        raise InventoryProblems([Problem("settings.file", f"{path} does not exist (write it, or declare the settings"
                                                          " here for apply to write it)")])
    try:
        existing = Settings.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InventoryProblems([Problem("settings.file", f"{path} is not a settings file: {detail}")]) from None
    problems = [*_agreement(inv, existing), *_template_rules(inv, existing.odoo_command)]
    if problems:
        raise InventoryProblems(problems)
    return existing


def grants(inv: Inventory) -> dict[str, set[tuple[str, str]]]:
    """Per project, the ``(user, permission)`` pairs the file grants."""
    by_project: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for project_id in inv.projects:
        by_project[project_id] = set()
    for user_id, per_project in inv.users.items():
        for project_id, permissions in per_project.items():
            by_project[project_id] |= {(user_id, p) for p in permissions}
    return dict(by_project)
