"""Where things live, for a process that runs promotions.

Which settings file a process reads, in this order:

1. the one a sandbox selected in this process (``Sandbox.activate``: the sandbox machinery, drills, tests);
2. the one ``PROMOTE_SETTINGS`` names, which must exist (``promote inventory apply`` writes it from an
   inventory; ``examples/settings.json`` shows one);
3. ``.sandbox/settings.json`` in this checkout, written by ``promote sandbox up``.

A process is *outside a sandbox* when none of the three gives a file: no sandbox selected, no
``PROMOTE_SETTINGS``, and no ``.sandbox/settings.json``. Then, and when ``PROMOTE_SETTINGS`` names a file
that does not exist, loading fails with one line saying what to write (``SettingsError``): a real
installation must never run on the stand-in's command and ``.sandbox/`` paths because a file was missing.
The field defaults below still describe the project's own folder; a settings file that leaves a field out
takes its default, as it always did. Environment variables named below override single values.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from promote_pipeline.odoo.carry_over import DEFAULT_PARAMETERS

PROJECT_DIR = Path(__file__).resolve().parents[2]
# The ops DSN's reference when the settings name none; unset, it means the machine's local PostgreSQL.
DEFAULT_OPS_DSN_REF = "PROMOTE_OPS_DSN"


class Retention(BaseModel):
    """How long artifacts stay in the store (``promotion/retention.py`` applies it; README: Artifact retention).

    Whatever it says, an artifact is kept while something may still need it: a run still running, a deployment
    restored from it (production's included), a blue backup within its run's rollback window, the blue backup
    of a run whose green production still runs on."""

    model_config = ConfigDict(extra="forbid")

    green_keep_last: int = Field(default=3, ge=1, le=1000, description="Green snapshots kept per staging"
                                 " environment, newest first, whatever their age.")
    green_keep_days: int = Field(default=14, ge=0, le=3650, description="Days a green snapshot is kept at least,"
                                 " even when it is not among the newest.")
    blue_keep_days: int = Field(default=7, ge=0, le=3650, description="Days the blue backup of a failed or"
                                " rolled-back run is kept after the run ended.")
    orphan_grace_hours: int = Field(default=24, ge=1, le=8760, description="Hours an artifact folder with no ops"
                                    " row (a crash mid-backup) is left alone after its last change before it is"
                                    " swept; never while a run that started before that change still runs.")


class SshArtifactStoreSettings(BaseModel):
    """The artifact store kept on a named host, reached over SSH (``resources/ssh_artifact_store.py``; README:
    Where artifacts live): what lets a run worker on any machine back up and restore."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="Address or DNS name of the store's host: where its sshd listens, and the name its"
                      " key is under in known_hosts_file.")
    port: int = Field(default=22, ge=1, le=65535, description="Port of the host's sshd.")
    user: str = Field(description="User to log in as on the host; it owns the store's folder and files (owner-only).")
    identity_ref: str = Field(description="Secret reference to the client's private key: the key's text (kept off"
                              " disk), or the path of an owner-only key file.")
    known_hosts_file: str = Field(description="known_hosts file on this machine holding the host's key; a key not"
                                  " there, or a different one, is refused (never learned).")
    root: str = Field(description="Absolute path of the store's folder on the host (dumps, filestore indexes,"
                      " .objects/).")
    create_root: bool = Field(default=False, description="Create root (owner-only) on the host when it does not"
                              " exist. Off, a missing root is refused: a typo or an unmounted volume there must"
                              " not send backups onto whatever disk holds that path.")
    python: str = Field(default="python3", description="Python 3 on the host (standard library only), which runs the"
                        " store's side of each call.")
    spool_dir: str = Field(default="", description="Folder on this machine for a dump in transit: pg_dump writes it"
                           " there before it is sent, and it is received there for pg_restore; removed after use."
                           " Empty: the system's temporary folder. Needs room for one compressed dump.")

    @model_validator(mode="after")
    def _absolute(self) -> SshArtifactStoreSettings:
        if not self.root.startswith("/"):
            raise ValueError(f"artifact_store.ssh.root must be an absolute path on the host, not {self.root!r}")
        return self


class ArtifactStoreSettings(BaseModel):
    """Which store keeps the artifacts (README: Where artifacts live)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ssh"] = Field(default="local", description="'local': artifact_root on this machine's"
                                          " (or a mounted) filesystem. 'ssh': a folder on a named host, reached over"
                                          " SSH (the `ssh` section), for run workers on other machines.")
    ssh: SshArtifactStoreSettings | None = Field(default=None, description="The SSH store's host, login and folder;"
                                                 " required when kind is 'ssh', refused otherwise.")

    @model_validator(mode="after")
    def _section(self) -> ArtifactStoreSettings:
        if self.kind == "ssh" and self.ssh is None:
            raise ValueError("artifact_store kind 'ssh' needs its `ssh` section (host, user, identity_ref,"
                             " known_hosts_file, root)")
        if self.kind == "local" and self.ssh is not None:
            raise ValueError("artifact_store has an `ssh` section but kind 'local': set kind to 'ssh', or remove it")
        return self


class StabilityThresholds(BaseModel):
    """What green must hold to during the stability window (``promotion/stability.py``; README: Green judged on
    real traffic). Judged on every request the router sent green, users' and the monitor's own probe's alike, as
    the router itself counted them."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate: float = Field(
        default=0.01, gt=0, le=1, description="The window fails when green's failed requests (5xx answers, and"
        " requests it never answered) reach this share of all the requests it served. The spec's 'HTTP error rate"
        " < 1%'. Judged as early as it is certain: against the larger of the requests served and the probe's own"
        " requests over the whole window.")
    max_5xx_responses: int = Field(
        default=50, ge=0, le=1_000_000, description="The window fails at once when green has answered more 5xx"
        " than this, whatever their share: under heavy traffic 1% may be thousands of users' failed requests. 0:"
        " any 5xx fails the window.")
    max_p95_ms: int = Field(
        default=5000, ge=1, le=3_600_000, description="The window fails when the 95th percentile of green's"
        " request times (ms, as the router timed them, websocket tunnels left out) is above this at the window's"
        " end. 5 s: Odoo's heavy pages (reports, large lists) take seconds, not a twentieth of all requests.")
    min_timed_requests: int = Field(
        default=20, ge=1, le=1_000_000, description="The p95 is judged only over at least this many timed requests:"
        " on fewer, one slow request is the percentile.")


class SshLogin(BaseModel):
    """How promote logs in to one host over SSH: what every section naming a host shares (a process host, the
    adopted router's host), so each says it the same way and is checked the same way (``resources/ssh_session.py``:
    the OpenSSH client, host keys checked strictly, never learned)."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(min_length=1, description="Address or DNS name of the host: where its sshd listens, and the"
                         " name known_hosts_file holds its key under.")
    ssh_port: int = Field(default=22, ge=1, le=65535, description="Port of the host's sshd.")
    user: str = Field(min_length=1, description="User to log in as on the host.")
    identity_ref: str = Field(min_length=1, description="Secret reference to the SSH client key: the key's text (kept"
                              " off disk), or the path of an owner-only key file.")
    known_hosts_file: str = Field(min_length=1, description="known_hosts file (on the promoter) holding the host's"
                                  " key under `address`; a key not there, or a different one, is refused.")


class ProcessHost(SshLogin):
    """A machine that runs Odoo processes (and their PgBouncers), reached over SSH (``resources/ssh_odoo_host.py``).
    Its `address` is also where its Odoo serves HTTP: the router's upstreams point there; Odoo and PgBouncer run
    as `user` (as root, PgBouncer switches to endpoint_os_user).

    Only processes and their files move there: the database work (pg_dump/pg_restore, the checks' SQL) stays on
    the promoter and reaches each environment's server by its DSN, and the artifact store stays the promoter's."""

    run_dir: str = Field(min_length=1, description="Folder on the host for Odoo's and PgBouncer's logs and"
                         " PgBouncer's configuration (owner-only).")
    python: str = Field(default="python3", description="Python on the host: fills {python} of the Odoo command and"
                        " picks free ports there.")
    pgbouncer_bin: str = Field(default="pgbouncer", description="PgBouncer on the host: each deployment's database"
                               " endpoint runs next to its Odoo.")
    endpoint_os_user: str = Field(default="postgres", description="Unix user on the host PgBouncer switches to when"
                                  " `user` is root (it refuses to run as root).")


class Settings(BaseModel):
    ops_database: str = Field(default="promote_ops", description="Database of the ops schema.")
    ops_dsn_ref: str = Field(default=DEFAULT_OPS_DSN_REF, description="Secret reference of the ops server DSN.")
    db_prefix: str = Field(default="odoo", description="Prefix of the databases the sandbox creates.")
    evidence_root: str = Field(default=str(PROJECT_DIR / "docs" / "evidence"),
                               description="Where each run writes its evidence folder (<date>/promote/<run_id>/).")
    artifact_root: str = Field(default=str(PROJECT_DIR / ".sandbox" / "artifacts"),
                               description="Root of the artifact store (dumps, filestore indexes, .objects/).")
    create_artifact_root: bool = Field(
        default=False, description="Create artifact_root (owner-only) when it does not exist. Off, a promotion refuses"
        " a missing one: a typo or an unmounted volume must not send backups onto whatever disk holds that path.")
    artifact_store: ArtifactStoreSettings = Field(
        default_factory=ArtifactStoreSettings, description="Which store keeps the artifacts: the local folder"
        " artifact_root (the default), or a folder on a host over SSH.")
    run_dir: str = Field(default=str(PROJECT_DIR / ".sandbox" / "run"),
                         description="Where started Odoo servers keep their pid and log files.")
    router_kind: str = Field(default="haproxy", description="'haproxy' or 'nginx'.")
    router_dir: str = Field(default=str(PROJECT_DIR / ".sandbox" / "router"),
                            description="Where the router keeps its configuration, socket, pid and log.")
    router_listen_host: str = Field(default="127.0.0.1", description="Address the router's entry points listen on.")
    router_mode: Literal["managed", "adopted"] = Field(
        default="managed", description="'managed': promote runs a private router of its own in router_dir. 'adopted':"
        " the team's own router, never started or stopped by promote; its entry points listen on router_listen_host."
        " An adopted HAProxy is switched through its runtime API; an adopted nginx through files of promote's in"
        " router_include_dir that it includes, tested with nginx -t and reloaded by router_reload_command.")
    router_runtime_api: str | None = Field(
        default=None, description="Adopted HAProxy only, and required there: the team's HAProxy runtime API (stats"
        " socket at level admin), a unix socket path or a TCP address such as 'ipv4@10.0.0.7:9999'.")
    router_config_file: str | None = Field(
        default=None, description="Adopted only. HAProxy: the team's haproxy.cfg, into which every switch is also"
        " written so that their reload keeps it (none: the switch lives in the running process only). nginx (required"
        " there): the team's main nginx.conf, tested with `nginx -t -c` before every reload.")
    router_include_dir: str | None = Field(
        default=None, description="Adopted nginx only, and required there: the folder promote writes its files into"
        " and the team's nginx includes (http.conf in its http block, <env>_<entry>.conf in each entry point's server"
        " block). promote writes nowhere else of the team's.")
    router_reload_command: str | None = Field(
        default=None, description="Adopted nginx only: the command that reloads the team's nginx gracefully, e.g."
        " 'sudo -n systemctl reload nginx'. None: '<router_nginx_command> -c <router_config_file> -s reload'.")
    router_nginx_command: str | None = Field(
        default=None, description="Adopted nginx only: how promote runs the team's nginx binary for nginx -t, e.g."
        " 'sudo -n /usr/sbin/nginx' when promote's user cannot read their configuration (nginx -t opens their logs"
        " and certificates). None: 'nginx'.")
    router_host: SshLogin | None = Field(
        default=None, description="Adopted only: how to log in over SSH to the host the team's HAProxy runs on."
        " With it, router_runtime_api is the path of its admin socket on that host (reached through the SSH"
        " connection's unix-socket forwarding) and router_config_file a path on that host.")

    @model_validator(mode="after")
    def _adoption(self) -> Settings:
        nginx_only = {"router_include_dir": self.router_include_dir,
                      "router_reload_command": self.router_reload_command,
                      "router_nginx_command": self.router_nginx_command}
        if self.router_mode == "adopted" and self.router_kind == "nginx":
            for name, what in (("router_include_dir", "the folder of promote's files that the team's nginx includes"),
                               ("router_config_file", "the team's main nginx.conf, for nginx -t")):
                if not getattr(self, name):
                    raise ValueError(f"router_mode 'adopted' with router_kind 'nginx' needs {name} ({what})")
            if self.router_runtime_api:
                raise ValueError("router_runtime_api is for an adopted haproxy, not nginx")
        elif self.router_mode == "adopted":
            if self.router_kind != "haproxy":
                raise ValueError(f"router_mode 'adopted' needs router_kind 'haproxy' or 'nginx', not"
                                 f" {self.router_kind!r}")
            if not self.router_runtime_api:
                raise ValueError("router_mode 'adopted' needs router_runtime_api (the team's HAProxy runtime API)")
        elif self.router_runtime_api or self.router_config_file:
            raise ValueError("router_runtime_api and router_config_file are for router_mode 'adopted' only")
        if any(nginx_only.values()) and (self.router_mode, self.router_kind) != ("adopted", "nginx"):
            raise ValueError(f"{', '.join(k for k, v in nginx_only.items() if v)}: for router_mode 'adopted' with"
                             " router_kind 'nginx' only")
        for env_id, name in self.environment_hosts.items():
            if name not in self.process_hosts:
                raise ValueError(f"environment_hosts.{env_id}: {name!r} is not a name of process_hosts")
        return self

    @model_validator(mode="after")
    def _router_over_ssh(self) -> Settings:
        if self.router_host is None:
            return self
        if self.router_mode != "adopted":
            raise ValueError("router_host is for router_mode 'adopted' only (the team's HAProxy on another host)")
        if self.router_kind != "haproxy":
            raise ValueError("router_host is for an adopted haproxy only (adopting an nginx on another host over SSH"
                             " is not built)")
        api = (self.router_runtime_api or "").removeprefix("unix@")
        if not api.startswith("/") or ":" in api:
            raise ValueError("router_runtime_api must be the absolute path of the admin socket on router_host (no"
                             " ':') when router_host is given: it is reached through SSH, not over TCP")
        if self.router_config_file is not None and not self.router_config_file.startswith("/"):
            raise ValueError("router_config_file must be an absolute path on router_host when router_host is given")
        return self

    odoo_command: str = Field(
        default="{python} -m odoo_standin serve --db {db} --data-dir {data_dir} --port {http_port}",
        description="Command template that starts one Odoo server.",
    )
    secrets_file: str | None = Field(default=None, description="JSON file of secret values (mode 0600).")
    role_key_ref: str = Field(default="PROMOTE_ROLE_KEY", description="Secret reference to the key each deployment"
                              " role's password is derived from (no role password is stored anywhere).")
    min_free_space_factor: float = Field(default=3.0, description="Free space needed, as a multiple of the larger of"
                                         " production's and staging's size (each asked on its own server).")
    carry_over_parameters: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PARAMETERS),
        description="ir_config_parameter keys copied from blue onto green (see live_settings.DEFAULT_PARAMETERS).")
    process_hosts: dict[str, ProcessHost] = Field(
        default_factory=dict, description="Machines that run Odoo processes, by name, reached over SSH (README:"
        " Hosts). None: every Odoo runs on the promoter's machine.")
    environment_hosts: dict[str, str] = Field(
        default_factory=dict, description="Environment id -> name in process_hosts where that environment's new"
        " deployments run their Odoo. An environment not named here runs them on the promoter's machine. A"
        " deployment keeps the host it was started on (ops.deployments.host).")
    retention: Retention = Field(default_factory=Retention, description="How long artifacts stay in the store.")
    stability: StabilityThresholds = Field(default_factory=StabilityThresholds,
                                           description="What green must hold to during the stability window.")


EXAMPLE_FILE = "examples/settings.json"


class SettingsError(RuntimeError):
    """No settings file where this process looks for one; the message is one line saying what to write."""


_selected: Path | None = None


def select(path: Path | None) -> None:
    """Use this settings file in this process from now on (a sandbox activating itself); None: back to
    ``PROMOTE_SETTINGS`` or the checkout's sandbox."""
    global _selected
    _selected = path


def sandbox_settings_file() -> Path:
    """What ``promote sandbox up`` writes in this checkout."""
    return PROJECT_DIR / ".sandbox" / "settings.json"


def settings_path() -> Path | None:
    """The settings file this process uses (see the module's docstring); None outside a sandbox with no
    ``PROMOTE_SETTINGS``."""
    if _selected is not None:
        return _selected
    if os.environ.get("PROMOTE_SETTINGS"):
        return Path(os.environ["PROMOTE_SETTINGS"])
    sandbox = sandbox_settings_file()
    return sandbox if sandbox.exists() else None


_WHAT_TO_WRITE = (f"a settings file like {EXAMPLE_FILE} (`promote inventory apply` writes one from an inventory like"
                  " examples/inventory.yaml)")


def _missing(path: Path | None) -> SettingsError:
    """One line: where the process looked, and what to write."""
    if path is None:
        return SettingsError(f"no settings: set PROMOTE_SETTINGS to {_WHAT_TO_WRITE}, or run `promote sandbox up`"
                             " for a sandbox")
    if _selected is None and os.environ.get("PROMOTE_SETTINGS") == str(path):
        return SettingsError(f"PROMOTE_SETTINGS names {path}, which does not exist: write there {_WHAT_TO_WRITE}")
    return SettingsError(f"settings file {path} does not exist: write there {_WHAT_TO_WRITE}, or set PROMOTE_SETTINGS"
                         " to yours")


def load(path: Path | None = None) -> Settings:
    """The settings file (``path``, or the one this process uses), with the single values that environment
    variables override. Reads the environment, never writes it: the resources built from these settings carry
    them to the ops. Raises SettingsError when there is no such file."""
    path = path or settings_path()
    if path is None or not path.is_file():
        raise _missing(path)
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:  # one line, as for any bad operator input: where, and what is wrong
        raise SettingsError(f"settings file {path}: not JSON ({exc})") from None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:  # one line: the field and its rule
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise SettingsError(f"settings file {path}: {field}: {first['msg']}") from None
    if os.environ.get("PROMOTE_EVIDENCE_ROOT"):
        settings.evidence_root = os.environ["PROMOTE_EVIDENCE_ROOT"]
    if os.environ.get("PROMOTE_OPS_DATABASE"):
        settings.ops_database = os.environ["PROMOTE_OPS_DATABASE"]
    return settings


def default_server_dsn() -> str:
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    return f"host={host} port={port} user={user}"
