"""The inventory's format: what an installation declares, field by field (``examples/inventory.yaml``).

Every mapping refuses keys it does not know, and every field says what it is for: the file is read by people
onboarding a real Odoo, and a misspelt key silently ignored would be a setting silently not applied. Names
follow the rules of what they become (a PostgreSQL identifier, a promotion's id, a secret's name), so that a
name the check lets through never fails later, half-way through an apply or a promotion.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from promote_pipeline.promotion.inputs import IDENTIFIER, IDENTIFIER_RULE
from promote_pipeline.promotion.settings import ProcessHost, Retention, SshLogin, StabilityThresholds
from resources.notifiers import NotificationsConfig
from resources.ops_db import EnvironmentKind, WorkerMode


def _rule(pattern: str, message: str) -> AfterValidator:
    """A string that must match ``pattern`` whole; ``message`` says the rule (the error adds what it got)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _between(low: int, high: int, message: str) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(message)
        return value

    return AfterValidator(check)


Identifier = Annotated[str, _rule(IDENTIFIER, IDENTIFIER_RULE)]
# PostgreSQL folds and truncates names past 63 bytes; letters, digits and '_' need no quoting anywhere (a libpq
# DSN, PgBouncer's [databases], Odoo's --db-filter).
DbName = Annotated[str, _rule(r"[A-Za-z0-9_]{1,63}", "must be 1-63 letters, digits or '_'")]
# New deployments' databases are <prefix>_<8 hex digits>: the prefix leaves room for them within 63.
DbPrefix = Annotated[str, _rule(r"[A-Za-z0-9_]{1,54}", "must be 1-54 letters, digits or '_' (new databases are"
                                                       " <prefix>_<8 hex digits>, at most 63)")]
SecretRef = Annotated[str, _rule(r"[A-Za-z_][A-Za-z0-9_]{0,127}",
                                 "must be a secret reference: the NAME of an environment variable or of a key of the"
                                 " secrets file (letters, digits, '_'), never the secret itself")]
Port = Annotated[int, _between(1, 65535, "must be a TCP port, 1-65535")]
CommitSha = Annotated[str, _rule(r"[0-9a-f]{7,40}", "must be a git commit SHA: 7-40 lowercase hex digits")]
PathText = Annotated[str, _rule(r"\S(.*\S)?", "must be a path (relative paths are read from the inventory's folder)")]
Permission = Literal["promote", "admin"]


class Section(BaseModel):
    """A mapping of the inventory: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class SettingsSection(Section):
    """The settings every ``promote`` process reads. Either only ``file`` (an existing settings file, used as it is,
    which must agree with this inventory's router and storage), or ``file`` with the fields below: then
    ``promote inventory apply`` writes that file from this inventory."""

    file: PathText = Field(description="The settings file; PROMOTE_SETTINGS must name it for every promote process"
                           " (the CLI, the Dagster webserver and daemon).")
    ops_dsn_ref: SecretRef | None = Field(default=None, description="Secret reference to the libpq DSN (no dbname) of"
                                          " the PostgreSQL server holding the ops database.")
    ops_database: DbName | None = Field(default=None, description="The ops database (created by apply).")
    secrets_file: PathText | None = Field(default=None, description="JSON file of secret values, mode 0600, read when"
                                          " a reference is not in the environment.")
    role_key_ref: SecretRef | None = Field(default=None, description="Secret reference to the key every deployment"
                                           " role's password is derived from (no role password is stored).")
    run_dir: PathText | None = Field(default=None, description="Where Odoo and PgBouncer processes keep their logs and"
                                     " the PgBouncers their configuration.")
    odoo_command: str | None = Field(default=None, description="Command template starting one Odoo server; each"
                                     " environment may have its own (environments.<id>.odoo_command). Placeholders:"
                                     " {python} {db} {data_dir} {http_port} {websocket_port} {workers}"
                                     " {environment_id} {deployment} {db_host} {db_port} {db_user}.")
    min_free_space_factor: float | None = Field(default=None, ge=1.0, description="Free space a promotion needs, as"
                                                " a multiple of the larger of production's and staging's size (default"
                                                " 3).")
    carry_over_parameters: list[str] | None = Field(default=None, description="ir_config_parameter keys copied from"
                                                    " blue onto green (default: the built-in list).")
    retention: Retention | None = Field(default=None, description="How long artifacts stay in the store:"
                                        " green_keep_last, green_keep_days, blue_keep_days, orphan_grace_hours"
                                        " (default 3, 14, 7, 24).")
    stability: StabilityThresholds | None = Field(
        default=None, description="What green must hold to in the stability window: max_error_rate,"
        " max_5xx_responses, max_p95_ms, min_timed_requests (default 0.01, 50, 5000, 20).")


class Storage(Section):
    """Where runs leave what they produce."""

    evidence_root: PathText = Field(description="Each run writes its evidence folder under it"
                                    " (<date>/promote/<run_id>/).")
    artifact_root: PathText = Field(description="The artifact store: dumps, filestore indexes, content-addressed"
                                    " objects (restores copy them; on the data roots' filesystem, a reflink where it"
                                    " has them).")


class Project(Section):
    """A project: the environments promoted into each other, and who may do it."""

    name: str = Field(min_length=1, max_length=200, description="What people call it.")


class Adopt(Section):
    """The deployment that serves the environment today, taken over as its first deployment. Adopting it gives
    its database to a role of its own behind a PgBouncer of its own and restarts its Odoo once, through them,
    under promote: stop the Odoo serving it (and anything else connected to its database) first."""

    deployment_id: Identifier | None = Field(default=None, description="Its name in ops.deployments and on the router"
                                             " (default dep_<environment id>_live).")
    db_name: DbName = Field(description="Its physical PostgreSQL database, as it is today.")
    data_dir: PathText = Field(description="Its Odoo data_dir today: the filestore is <data_dir>/filestore/"
                               "<odoo_db_name>/. Only that folder and the sessions link are ever removed from it.")
    http_port: Port = Field(description="The HTTP port its Odoo is started on (loopback; on a process host, that"
                            " host's address).")
    websocket_port: Port | None = Field(default=None, description="Prefork only: the port of its gevent (websocket)"
                                        " server; threaded Odoo serves the websocket on http_port.")
    endpoint_port: Port | None = Field(default=None, description="The port of its PgBouncer on loopback (default: a"
                                       " free one, chosen once and recorded).")
    db_role: DbName | None = Field(default=None, description="Its own PostgreSQL role, created by apply (default: the"
                                   " database's name); must not be an existing role.")
    first_blue: bool = Field(default=False, description="Production only, and required there: it becomes the"
                             " router's first live deployment, the blue of the first promotion.")


class Environment(Section):
    """An environment of a project: its kind, its database server, its names and paths, how its Odoo runs, and the
    live deployment to adopt."""

    project: Identifier = Field(description="The project it belongs to (a key of projects).")
    kind: EnvironmentKind = Field(description="staging, production or dev.")
    db_dsn_ref: SecretRef = Field(description="Secret reference to the libpq DSN (no dbname) of its PostgreSQL server;"
                                  " its user must be able to create databases and roles.")
    odoo_db_name: DbName = Field(description="The database name Odoo, its sessions and its clients use, for the"
                                 " environment's whole life, whichever physical database serves it.")
    db_name_prefix: DbPrefix = Field(description="New deployments' physical databases are <prefix>_<8 hex digits>.")
    data_root: PathText = Field(description="Root of the environment's Odoo data: new deployments' data dirs"
                                " (<root>/<deployment id>) and the sessions every deployment shares (<root>/sessions)."
                                " Must exist.")
    odoo_command: str | None = Field(default=None, description="This environment's Odoo command template (default:"
                                     " settings.odoo_command).")
    host: Identifier | None = Field(default=None, description="The process host, a key of hosts, that runs this"
                                    " environment's Odoo, its live deployment's included (its data_root and"
                                    " adopt.data_dir are folders there, absolute); none: the promoter's machine.")
    worker_mode: WorkerMode = Field(description="threaded (one port) or prefork (workers, and a websocket port of"
                                    " its own).")
    workers: int | None = Field(default=None, ge=1, le=256, description="Prefork only: Odoo's worker processes"
                                " ({workers}).")
    git_commit_sha: CommitSha | None = Field(default=None, description="The commit its code is at; a promotion needs"
                                             " staging's and production's to be the same.")
    odoo_url: str | None = Field(default=None, description="Its public URL, for the record.")
    smoke_login: str = Field(min_length=1, description="The Odoo login the smoke tests authenticate as.")
    smoke_password_ref: SecretRef = Field(description="Secret reference to that login's password.")
    require_approval: bool = Field(default=False, description="Production only: every promotion into it waits, after"
                                   " the smoke tests, for a person's approval (`promote approve`) before the cutover,"
                                   " whatever the promotion's --require-approval says.")
    adopt: Adopt = Field(description="Its live deployment, adopted as its first deployment.")
    notifications: NotificationsConfig | None = Field(default=None, description="Where its promotions are announced"
                                                      " (started, awaiting_approval, success, rolled_back, failed,"
                                                      " blue_deleted): webhooks (url, secret_ref of the HMAC key) and"
                                                      " apprise targets (url_ref), with attempts, timeout_seconds and"
                                                      " backoff_seconds. Secrets by reference only.")

    def deployment_id(self, environment_id: str) -> str:
        return self.adopt.deployment_id or f"dep_{environment_id}_live"


class RouterEntry(Section):
    """The two entry points of one production environment on the router."""

    active_port: Port | None = Field(default=None, description="The public entry point (point your proxy or DNS at"
                                     " it); default a free port, chosen once and kept.")
    preview_port: Port | None = Field(default=None, description="Where green is smoke-tested before cutover; default"
                                      " a free port, chosen once and kept.")


class Router(Section):
    """What fronts production: its kind, its folder and addresses, and the environments it serves."""

    kind: Literal["haproxy", "nginx"] = Field(description="haproxy (switches through its runtime API) or nginx"
                                              " (graceful reload).")
    dir: PathText = Field(description="Its configuration, socket, pid, log and routes.json.")
    listen_host: str = Field(default="127.0.0.1", min_length=1, description="The address its entry points listen"
                             " on.")
    fronts: dict[Identifier, RouterEntry] = Field(description="The production environments it fronts, each with"
                                                  " its entry points' ports.")
    mode: Literal["managed", "adopted"] = Field(
        default="managed", description="managed: promote runs a private router of its own in dir. adopted: the"
        " team's own router, never started or stopped by promote, whose entry points listen on listen_host at each"
        " front's active_port and preview_port (both then required). An HAProxy has backends <env>_active_http,"
        " <env>_active_ws, <env>_preview_http, <env>_preview_ws with a server named app, switched through"
        " runtime_api; an nginx includes promote's files from include_dir (http.conf in its http block,"
        " <env>_<entry>.conf in each entry point's server block) and is reloaded by reload_command.")
    runtime_api: str | None = Field(default=None, description="Adopted HAProxy only, and required there: the team's"
                                    " HAProxy runtime API at level admin, a unix socket path or a TCP address"
                                    " (ipv4@10.0.0.7:9999).")
    config_file: PathText | None = Field(default=None, description="Adopted only. HAProxy: the team's haproxy.cfg on"
                                         " this machine (with host: on that host, an absolute path); every switch is"
                                         " also written into it so that their reload keeps it. nginx (required"
                                         " there): the team's main nginx.conf, tested with nginx -t before every"
                                         " reload.")
    host: SshLogin | None = Field(default=None, description="Adopted HAProxy only: how to log in over SSH to the"
                                  " host the team's HAProxy runs on (address, ssh_port, user, identity_ref,"
                                  " known_hosts_file). With it, runtime_api is the path of its admin socket on that"
                                  " host and config_file a path there.")
    include_dir: PathText | None = Field(default=None, description="Adopted nginx only, and required there: the"
                                         " folder of promote's files that the team's nginx includes; promote writes"
                                         " nowhere else of theirs.")
    reload_command: str | None = Field(default=None, description="Adopted nginx only: the command that reloads the"
                                       " team's nginx gracefully (sudo -n systemctl reload nginx); default"
                                       " <nginx_command> -c <config_file> -s reload.")
    nginx_command: str | None = Field(default=None, description="Adopted nginx only: how promote runs the team's"
                                      " nginx binary for nginx -t (sudo -n /usr/sbin/nginx when promote's user"
                                      " cannot read their configuration); default nginx.")


class Inventory(Section):
    """An installation: settings, storage, projects, environments with their live deployments, users, router, and
    the hosts that run environments' Odoo."""

    settings: SettingsSection = Field(description="The settings file, declared here or referenced.")
    storage: Storage = Field(description="Where evidence and artifacts go.")
    projects: dict[Identifier, Project] = Field(description="Projects by id.")
    environments: dict[Identifier, Environment] = Field(description="Environments by id.")
    users: dict[Identifier, dict[Identifier, list[Permission]]] = Field(
        default_factory=dict, description="For each user, per project id, its permissions: promote, or admin"
        " (anything). Grants on these projects that the file does not list are revoked.")
    router: Router = Field(description="The router fronting the production environments.")
    hosts: dict[Identifier, ProcessHost] = Field(
        default_factory=dict, description="Machines that run environments' Odoo (and their PgBouncers), by name,"
        " reached over SSH: address, ssh_port, user, identity_ref (secret reference to the client key),"
        " known_hosts_file (on this machine), run_dir (on the host), python, pgbouncer_bin, endpoint_os_user"
        " (README: Hosts). An environment names one with its host.")
