"""A complete promotion playground on one machine: ops database, router, staging and production.

``promote sandbox up`` builds it in ``.sandbox/`` (idempotently): a private router (HAProxy by
default, nginx on request) on loopback ports, odoo_standin servers for staging and production
(blue) over Odoo-shaped databases and filestores, and the ops records a promotion needs. With
``--environments N`` it makes N such pairs in the one project, each production with its own entry
points on the one router (``pair`` names them), so N promotions can run side by side. All
credentials are generated here, per sandbox, kept in a mode-0600 secrets file and referenced by
name everywhere else. The same class builds the isolated sandboxes the test-suite uses.
"""

from __future__ import annotations

import glob
import json
import os
import secrets as pysecrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from promote_pipeline.defs.location import SANDBOX_DSN_REF, SANDBOX_IDS
from promote_pipeline.defs.resources import build_resources
from promote_pipeline.promotion import deployment
from promote_pipeline.promotion import settings as settings_mod
from promote_pipeline.promotion.services import Services
from resources import secrets
from resources.notifiers import NotificationsConfig, WebhookTarget
from resources.odoo_host import LocalOdooHost, free_port
from resources.ops_db import CompletedRun, DeploymentRecord, EnvironmentRecord, OpsDatabase
from resources.redaction import redact_text
from resources.router import RouterError, RouterResource, ServedUpstream, Upstream

# The sandbox's ids are the code location's (its launchpad opens with them): one definition, in defs/location.py.
PROJECT = SANDBOX_IDS["project_id"]
STAGING = SANDBOX_IDS["staging_env_id"]
PROD = SANDBOX_IDS["prod_env_id"]
USER = SANDBOX_IDS["user_id"]
DSN_REF = SANDBOX_DSN_REF
ADMIN_REF = "PROMOTE_SANDBOX_ODOO_ADMIN_PASSWORD"
ROLE_KEY_REF = "PROMOTE_SANDBOX_ROLE_KEY"
WEBHOOK_KEY_REF = "PROMOTE_SANDBOX_WEBHOOK_KEY"
# How many staging/production pairs `promote sandbox up --environments` makes at most: each pair is four
# processes (two stand-ins, two PgBouncers) and two databases, and the router gets two entry points per pair.
MAX_ENVIRONMENTS = 16


def pair(index: int) -> tuple[str, str]:
    """The staging and production environment ids of the sandbox's ``index``-th pair (from 1). The first keeps the
    ids the code location's launchpad opens with (``make demo``, the drills and the tests use them); the others
    carry their number: ``env_demo_staging_2``/``env_demo_prod_2``, and so on."""
    if index == 1:
        return STAGING, PROD
    return f"{STAGING}_{index}", f"{PROD}_{index}"


def _suffix(index: int) -> str:
    """What the ``index``-th pair adds to its folders' and databases' names (nothing for the first: as before)."""
    return "" if index == 1 else f"_{index}"


@dataclass
class Sandbox:
    root: Path
    router_kind: str = "haproxy"
    ops_database: str | None = None  # None: a fresh name per sandbox, so two checkouts never share one
    db_prefix: str | None = None
    pbkdf2_rounds: int = 600_000
    partners: int = 200
    attachments: int = 40
    attachment_size: int = 2048  # bytes per attachment file (the benchmark sizes filestores with it)
    # Its databases on a PostgreSQL cluster of its own, on a free port: the only kind a drill may restart.
    private_postgres: bool = False
    # How many staging/production pairs `up` makes (1 to MAX_ENVIRONMENTS); pairs an earlier `up` made are kept.
    environments: int = 1

    # -- layout --------------------------------------------------------------------------------
    @property
    def settings_file(self) -> Path:
        return self.root / "settings.json"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    def settings(self) -> settings_mod.Settings:
        if self.settings_file.exists():
            return settings_mod.Settings.model_validate_json(self.settings_file.read_text())
        tag = pysecrets.token_hex(3)
        self.ops_database = self.ops_database or f"promote_ops_sbx_{tag}"
        self.db_prefix = self.db_prefix or f"sbx_{tag}"
        return settings_mod.Settings(
            ops_database=self.ops_database, ops_dsn_ref=DSN_REF, db_prefix=self.db_prefix,
            evidence_root=str(settings_mod.PROJECT_DIR / "docs" / "evidence"),
            artifact_root=str(self.root / "artifacts"), create_artifact_root=True, run_dir=str(self.root / "run"),
            router_kind=self.router_kind, router_dir=str(self.root / "router"),
            odoo_command=self.odoo_command(),
            secrets_file=str(self.secrets_file), role_key_ref=ROLE_KEY_REF,
        )

    def odoo_command(self) -> str:
        """The template that starts one Odoo server of this sandbox: the stand-in, with its fault switches."""
        return ("{python} -m odoo_standin serve --db {db} --data-dir {data_dir} --port {http_port}"
                f" --fault-file {self.root / 'faults'}/{{environment_id}}.json")

    def activate(self) -> settings_mod.Settings:
        """Point this process at the sandbox: its settings (which name its secrets file) from now on. A child
        process is pointed at it with ``env()``."""
        settings_mod.select(self.settings_file)
        return settings_mod.load()

    def env(self) -> dict[str, str]:
        """What a child process (a webserver, a daemon, another ``promote``) needs in its environment to use
        this sandbox."""
        return {"PROMOTE_SETTINGS": str(self.settings_file)}

    def resources(self) -> dict[str, Any]:
        cfg = settings_mod.load(self.settings_file) if self.settings_file.exists() else self.settings()
        return build_resources(cfg)

    # -- up ------------------------------------------------------------------------------------
    def up(self) -> dict[str, Any]:
        if not 1 <= self.environments <= MAX_ENVIRONMENTS:
            raise ValueError(f"environments: must be 1 to {MAX_ENVIRONMENTS} (got {self.environments})")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "faults").mkdir(exist_ok=True)
        server = self._database_server()
        if not self.secrets_file.exists():
            secrets.write_secrets_file(self.secrets_file, {
                # trust auth ignores the password, but it is a real credential in a real DSN: redaction is tested on it
                DSN_REF: server + f" password={pysecrets.token_urlsafe(18)}",
                ADMIN_REF: pysecrets.token_urlsafe(18),
                ROLE_KEY_REF: pysecrets.token_urlsafe(32),  # every deployment role's password derives from it
            })
        cfg = self.settings()
        self.settings_file.write_text(cfg.model_dump_json(indent=2))
        self.activate()
        res = self.resources()
        ops_db: OpsDatabase = res["ops_db"]
        host: LocalOdooHost = res["odoo_host"]
        router: RouterResource = res["router"]
        ops_db.upgrade()
        # A smaller N than an earlier `up` made removes nothing: `down` removes every pair.
        count = max(self.environments, len(self.production_ids(ops_db)))
        commit = self._seed_ops(ops_db, count)
        for index in range(1, count + 1):
            staging, prod = pair(index)
            self._ensure_deployment(ops_db, host, prod, start=False)  # staging is copied from it: no sessions yet
            self._ensure_deployment(ops_db, host, staging, source=prod)
            self._ensure_deployment(ops_db, host, prod)
        router.start()
        for index in range(1, count + 1):
            prod = pair(index)[1]
            blue = ops_db.active_deployment(prod)
            assert blue is not None
            self._register(router, prod, Services.from_resources(res).upstream(blue, "blue"))
        return {"commit": commit, **self.status()}

    def _database_server(self) -> str:
        """The DSN of the server the sandbox's databases (the ops database's included) live on, started if need be."""
        if self.private_postgres and private_cluster(self.root) is None:
            return start_private_postgres(self.root, free_port())
        return ensure_postgres(self.root)

    def _register(self, router: RouterResource, prod: str, blue: Upstream) -> None:
        """Production's entry points on the router, serving blue (a sandbox on an adopted router gives its
        frontends' ports)."""
        router.register_environment(prod, blue)

    @staticmethod
    def pairs(ops_db: OpsDatabase) -> list[tuple[str, str]]:
        """The (staging, production) pairs the sandbox's project has, in ``pair``'s order."""
        ids = {e.environment_id for e in ops_db.environments_of(PROJECT)}
        return [ids_ for ids_ in (pair(i) for i in range(1, len(ids) // 2 + 1)) if ids_[1] in ids]

    def production_ids(self, ops_db: OpsDatabase) -> list[str]:
        return [prod for _, prod in self.pairs(ops_db)]

    def announce_to(self, url: str) -> None:
        """Announce every production environment's promotions to a signed JSON webhook at ``url`` (as an
        inventory's ``notifications`` would); the HMAC key is made once and kept in the secrets file (owner-only),
        where the receiver reads it."""
        current = json.loads(self.secrets_file.read_text()) if self.secrets_file.exists() else {}
        key = current.get(WEBHOOK_KEY_REF) or pysecrets.token_urlsafe(32)
        secrets.write_secrets_file(self.secrets_file, {WEBHOOK_KEY_REF: key})
        ops_db: OpsDatabase = self.resources()["ops_db"]
        config = NotificationsConfig(webhooks=[WebhookTarget(url=url, secret_ref=WEBHOOK_KEY_REF)])
        for prod in self.production_ids(ops_db):
            env = ops_db.environment(prod)
            assert env is not None
            ops_db.update_environment(env.model_copy(update={"notifications": config}))

    def _seed_ops(self, ops_db: OpsDatabase, count: int = 1) -> str:
        """The project, its user and the first pair in one transaction; then pairs 2..``count``, each one
        environment at a time (a repeated ``up`` adds what a cut one left out)."""
        existing = ops_db.environment(PROD)
        if existing:
            commit = str(existing.git_commit_sha)
        else:
            commit = pysecrets.token_hex(20)
            seed_deploy = CompletedRun(environment_id=STAGING, operation_type="deploy", created_by=USER,
                                       metadata={"git_commit_sha": commit, "note": "sandbox seed"})
            ops_db.add_project(PROJECT, "Demo project", self._environment_records(1, commit),
                               grants=[(USER, "promote")], history=[seed_deploy])
        for index in range(2, count + 1):
            for record in self._environment_records(index, commit):
                if ops_db.environment(record.environment_id) is None:
                    ops_db.add_environment(record)
                    if record.kind == "staging":
                        ops_db.record_completed_run(PROJECT, CompletedRun(
                            environment_id=record.environment_id, operation_type="deploy", created_by=USER,
                            metadata={"git_commit_sha": commit, "note": "sandbox seed"}))
        return commit

    def _environment_records(self, index: int, commit: str) -> list[EnvironmentRecord]:
        """The ``index``-th pair's staging and production records."""
        prefix = self.settings().db_prefix
        staging, prod = pair(index)
        return [EnvironmentRecord(environment_id=env_id, project_id=PROJECT, kind=kind, git_commit_sha=commit,
                                  db_dsn_ref=DSN_REF, db_name_prefix=f"{prefix}_{kind}{_suffix(index)}",
                                  filestore_root=str(self.root / "data" / f"{kind}{_suffix(index)}"),
                                  router_name=self.router_kind, smoke_login="admin", smoke_password_ref=ADMIN_REF,
                                  # the name Odoo and its clients use for the environment's whole life
                                  odoo_db_name=f"{prefix}_{kind}{_suffix(index)}")
                for env_id, kind in ((staging, "staging"), (prod, "production"))]

    def _ensure_deployment(self, ops_db: OpsDatabase, host: LocalOdooHost, env_id: str, start: bool = True,
                           source: str = PROD) -> None:
        """Production made by ``_make_production``; staging as Odoo.sh makes it: a neutralized copy of production.
        Each seed deployment's physical database carries the environment's name, as a production adopted from
        an existing installation does; the greens promoted later get databases of their own. A deployment is
        recorded as soon as its database exists, so ``down`` finds it whatever fails after. A staging is copied from
        the production ``source``."""
        env = ops_db.environment(env_id)
        assert env is not None
        if env.odoo_db_name is None:
            raise RuntimeError(f"sandbox in {self.root} was made by an older version (environment {env_id} has no"
                               " database name of its own): `promote sandbox down`, then `promote sandbox up`")
        dep = ops_db.active_deployment(env_id)
        svc = Services.from_resources(self.resources())
        if dep is None:
            dep = deployment.plan_on_host(svc, env, f"dep_{env_id}_seed", env.odoo_db_name, state="active")
            deployment.prepare_data_dir(env, dep, svc)
            if env.kind == "production":
                self._make_production(host, dep)
            else:
                self._copy_production(ops_db, host, dep, source)
            ops_db.add_deployment(dep)
            deployment.give_database(svc, env, dep)
            if env.kind != "production":
                self._neutralize(host, dep)  # as Odoo.sh does, once staging has its data and its own role
        if start and not svc.process_host(dep).is_alive(dep.pid):
            deployment.start(svc, env, dep)

    def _standin_env(self) -> dict[str, str]:
        return {**os.environ, "STANDIN_DSN": secrets.resolve(DSN_REF),
                "STANDIN_ADMIN_PASSWORD": secrets.resolve(ADMIN_REF)}

    def _make_production(self, host: LocalOdooHost, prod: DeploymentRecord) -> None:
        """Production's database and filestore, its admin's password the sandbox's generated one."""
        subprocess.run(
            [sys.executable, "-m", "odoo_standin", "init", "--db", prod.db_name, "--data-dir", prod.data_dir,
             "--replace", "--partners", str(self.partners), "--attachments", str(self.attachments),
             "--attachment-size", str(self.attachment_size), "--pbkdf2-rounds", str(self.pbkdf2_rounds)],
            check=True, env=self._standin_env(), stdout=subprocess.DEVNULL)

    def _neutralize(self, host: LocalOdooHost, staging: DeploymentRecord) -> None:
        subprocess.run([sys.executable, "-m", "odoo_standin", "neutralize", "--db", staging.db_name,
                        "--base-url", "http://staging.localhost"], check=True, env=self._standin_env())

    def _add_staging_contacts(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("INSERT INTO res_partner (name, email, company_id)"
                     " SELECT 'Staging contact ' || n, 'staging' || n || '@example.com', 1"
                     " FROM generate_series(1, 25) AS n")

    def _copy_production(self, ops_db: OpsDatabase, host: LocalOdooHost, staging: DeploymentRecord,
                         prod_id: str = PROD) -> None:
        """Staging = production's data, then staging's own work (new contacts); neutralized once it is given
        to its role (``_neutralize``)."""
        prod = ops_db.active_deployment(prod_id)
        assert prod is not None
        db = staging.db_name
        host.drop_database(DSN_REF, db)
        with host.connect(DSN_REF, "postgres", autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                         (prod.db_name,))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(db),
                                                                          sql.Identifier(prod.db_name)))
        target = host.filestore_dir(staging.data_dir, staging.served_db)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(host.filestore_dir(prod.data_dir, prod.served_db), target)
        ops_db.record_completed_run(PROJECT, CompletedRun(
            environment_id=staging.environment_id, operation_type="restore", created_by=USER,
            metadata={"source_environment_id": prod_id, "source_db": prod.db_name,
                      "note": "staging made from a copy of production"}))
        with host.connect(DSN_REF, db) as conn:
            self._add_staging_contacts(conn)

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What production serves, as the running router says (``served_upstream``), never as routes.json
        records: a switch the router did not carry out must not show as done. ``recorded`` is routes.json's
        active upstream, shown apart so a disagreement is visible. The top-level entries are the first pair's
        (as before there were several); ``environments`` has the same for every pair, the first included."""
        self.activate()
        res = self.resources()
        ops_db: OpsDatabase = res["ops_db"]
        router: RouterResource = res["router"]
        svc = Services.from_resources(res)
        pairs = [{"production": prod, "staging": staging, **self._serving(svc, prod)}
                 for staging, prod in self.pairs(ops_db) or [pair(1)]]
        first = {k: v for k, v in pairs[0].items() if k not in ("production", "staging")}
        return {
            "router": router.kind,
            **first,
            "environments": pairs,
            "ops_database": self.settings().ops_database,
            # Where the sandbox's secrets are and their names; never their values (status output is pasted
            # into chats and tickets).
            "secrets_file": str(self.secrets_file),
            "secret_refs": sorted(json.loads(self.secrets_file.read_text())) if self.secrets_file.exists() else [],
        }

    @staticmethod
    def _serving(svc: Services, prod: str) -> dict[str, Any]:
        """One production environment's entry points, what the router serves on the public one and what
        routes.json records."""
        ops_db, router = svc.ops_db, svc.router
        state = router.state(prod)
        served: ServedUpstream | None = None
        router_error: str | None = None
        try:
            served = router.served_upstream(prod)
        except RouterError as exc:
            router_error = str(exc)
        row = ops_db.deployment(served.name) if served and served.name else None
        # The router's name must also be the deployment's address, or the name alone proves nothing.
        if row is not None and (row.http_port is None or not served
                                or not served.is_upstream(svc.upstream(row, "live"))):
            row = None
        recorded = state.active
        # The router knows no colours; the recorded one holds only if the router agrees on the deployment.
        colour = recorded.colour if recorded and row and recorded.name == row.deployment_id else None
        return {
            "router_url": state.active_url,
            "preview_url": state.preview_url,
            "serving": {
                "deployment": row.deployment_id if row else None,
                "colour": colour,
                "database": row.db_name if row else None,
                "odoo_database": row.served_db if row else None,
                "url": f"http://{served.host}:{served.http_port}" if row and served else None,
                "asked": served.source if served else router_error,
            },
            "recorded": {"deployment": recorded.name if recorded else None,
                         "colour": recorded.colour if recorded else None},
        }

    # -- down ----------------------------------------------------------------------------------
    def down(self) -> None:
        if not self.settings_file.exists():
            shutil.rmtree(self.root, ignore_errors=True)
            return
        cfg = self.activate()
        res = self.resources()
        ops_db: OpsDatabase = res["ops_db"]
        res["router"].stop()
        try:
            rows = ops_db.all_deployments()
        except psycopg.Error:
            rows = []
        svc = Services.from_resources(res)
        for row in rows:
            # Each on its environment's server (staging's and production's may differ); a reused pid is another's
            # process: said, not killed. One that cannot be removed (its server's reference unset, the server
            # gone) is named and the rest still go: `down` must not stop half-way.
            try:
                for note in deployment.remove(svc, row.db_dsn_ref, row):
                    print(note)
            except Exception as exc:  # noqa: BLE001 - named, then the next one
                print(redact_text(f"{row.deployment_id}: not removed ({type(exc).__name__}: {exc})"))
        dsn = secrets.resolve(DSN_REF)
        with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cfg.ops_database)))
        stop_private_postgres(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


# -- PostgreSQL: the machine's, or a private cluster the sandbox starts (on request, or when none answers) ------
# Only a private cluster may be restarted (the db-restart drill): the machine's server is shared with everything
# else on it. The cluster's data lives in a folder of its own under the system's temporary folder, which the
# ``postgres`` OS user can reach (a sandbox's root may sit under a folder only root may enter); the sandbox
# keeps a symlink to it (``pgdata``) and the port it listens on (``pgdata.port``).
def _answers(dsn: str | None = None) -> bool:
    try:
        with psycopg.connect((dsn or settings_mod.default_server_dsn()) + " dbname=postgres connect_timeout=3"):
            return True
    except psycopg.OperationalError:
        return False


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _pg_bin(name: str) -> str:
    bins = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not bins:
        raise RuntimeError(f"no PostgreSQL {name} is installed (/usr/lib/postgresql/*/bin)")
    return bins[-1]


def private_cluster(root: Path) -> Path | None:
    """The data folder of the cluster this sandbox started, or None if it uses a server it did not start."""
    link = root / "pgdata"
    return link.resolve() if link.exists() else None


def private_server_dsn(root: Path) -> str | None:
    """The connection string of the sandbox's own cluster (None if it has none)."""
    port_file = root / "pgdata.port"
    if private_cluster(root) is None or not port_file.exists():
        return None
    return f"host=127.0.0.1 port={port_file.read_text().strip()} user=postgres"


def start_private_postgres(root: Path, port: int) -> str:
    """Start (making it first if need be) the sandbox's own cluster on ``port``; its connection string."""
    data = private_cluster(root)
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="promote-pg-"))
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        subprocess.run([*_as_postgres(), _pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                       check=True, stdout=subprocess.DEVNULL)
        (root / "pgdata").symlink_to(data)
    if not (root / "pgdata.port").exists():  # an older sandbox's cluster listened on PGPORT
        (root / "pgdata.port").write_text(f"{port or os.environ.get('PGPORT', '5432')}\n")
    dsn = private_server_dsn(root)
    assert dsn is not None
    if not _answers(dsn):
        port = int((root / "pgdata.port").read_text())
        # The options are kept in postmaster.opts, so `pg_ctl restart` brings it back on the same port.
        subprocess.run([*_as_postgres(), _pg_bin("pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w",
                        "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {data}", "start"], check=True,
                       stdout=subprocess.DEVNULL)
    for _ in range(50):
        if _answers(dsn):
            return dsn
        time.sleep(0.2)
    raise RuntimeError(f"the sandbox's private PostgreSQL cluster ({data}) did not start")


def ensure_postgres(root: Path) -> str:
    """The server the sandbox's databases live on: its own cluster if it has one, the machine's if that answers,
    else a private cluster started on PGPORT. Its connection string."""
    if private_cluster(root) is not None:
        return start_private_postgres(root, 0)
    if _answers():
        return settings_mod.default_server_dsn()
    start_private_postgres(root, int(os.environ.get("PGPORT", "5432")))
    return settings_mod.default_server_dsn()


def stop_private_postgres(root: Path) -> None:
    data = private_cluster(root)
    if data is None:
        return
    if (data / "postmaster.pid").exists():
        subprocess.run([*_as_postgres(), _pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       check=False, stdout=subprocess.DEVNULL)
    shutil.rmtree(data, ignore_errors=True)
    (root / "pgdata").unlink(missing_ok=True)
    (root / "pgdata.port").unlink(missing_ok=True)


class NotOurServer(RuntimeError):
    """A restart was asked of a PostgreSQL server the sandbox did not start."""


def restart_postgres(root: Path) -> float:
    """Restart the sandbox's own PostgreSQL cluster; return seconds taken. Refuses any other server: the machine's
    is shared, and restarting it would cut every other user's sessions."""
    data = private_cluster(root)
    dsn = private_server_dsn(root)
    if data is None or dsn is None:
        raise NotOurServer(f"refusing to restart PostgreSQL: the sandbox in {root} did not start the server it uses"
                           " (bring it up with `promote sandbox up --private-postgres`)")
    start = time.monotonic()
    subprocess.run([*_as_postgres(), _pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "restart"], check=True,
                   stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not _answers(dsn) and time.monotonic() < deadline:
        time.sleep(0.1)
    return time.monotonic() - start
