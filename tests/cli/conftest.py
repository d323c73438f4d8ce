"""An existing Odoo installation to onboard, on the real PostgreSQL: a production database made by
``odoo_standin init`` with its data_dir (filestore and sessions), a staging copied from it and neutralized (its
filestore under its own Odoo name), data roots, a secrets file, and an inventory declaring all of it with a
private ops database, router folder and ports. Names carry a tag unique to the test. Afterwards every process
the ops database records is stopped, and the databases, roles and ops database are dropped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from promote_pipeline.promotion.settings import default_server_dsn
from resources import db_endpoint
from resources.haproxy_router import HAProxyRouter
from resources.odoo_host import free_port
from resources.ops_db import OpsDatabase

DSN_REF, ROLE_KEY_REF, ADMIN_REF = "PROMOTE_INV_TEST_PG_DSN", "PROMOTE_INV_TEST_ROLE_KEY", "PROMOTE_INV_TEST_ADMIN"
STANDIN = "{python} -m odoo_standin serve --db {db} --data-dir {data_dir} --port {http_port}"
# Variables of the surrounding test session that would redirect a promote process started here.
_FOREIGN = ("PROMOTE_SETTINGS", "PROMOTE_EVIDENCE_ROOT", "PROMOTE_OPS_DATABASE", "PROMOTE_SECRETS_FILE",
            "DAGSTER_HOME")


@dataclass
class Installation:
    root: Path
    tag: str
    admin_password: str
    data: dict[str, Any]

    @property
    def file(self) -> Path:
        return self.root / "inventory.yaml"

    @property
    def settings_file(self) -> Path:
        return self.root / "etc" / "settings.json"

    @property
    def project(self) -> str:
        return f"proj_{self.tag}"

    @property
    def prod(self) -> str:
        return f"env_{self.tag}_prod"

    @property
    def staging(self) -> str:
        return f"env_{self.tag}_staging"

    def db(self, kind: str) -> str:
        return f"inv_{self.tag}_{kind}"

    @property
    def ops_database(self) -> str:
        return f"promote_ops_inv_{self.tag}"

    def write(self, data: dict[str, Any] | None = None, name: str = "inventory.yaml") -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump(data if data is not None else self.data, sort_keys=False))
        return path

    def promote(self, *args: str, settings: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``promote ARGS`` in a child process that knows only this installation (and its settings file when
        ``settings``)."""
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
        if settings:
            env["PROMOTE_SETTINGS"] = str(self.settings_file)
        return subprocess.run([sys.executable, "-m", "promote_pipeline", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, check=False)

    def ops_db(self) -> OpsDatabase:
        return OpsDatabase(dsn_ref=DSN_REF, database=self.ops_database)

    @staticmethod
    def stop(pid: int | None) -> None:
        """Stop a process group the installation's deployments started (an Odoo, as a reboot would)."""
        db_endpoint.stop_group(pid)


def _admin(query: sql.Composable, dbname: str = "postgres") -> None:
    with psycopg.connect(default_server_dsn(), dbname=dbname, autocommit=True) as conn:
        conn.execute(query)


def _make_live_installation(inst: Installation) -> None:
    """What the operator has before onboarding: production's database and data_dir, staging copied from it."""
    env = {**os.environ, "STANDIN_DSN": default_server_dsn(), "STANDIN_ADMIN_PASSWORD": inst.admin_password}
    prod_dir, staging_dir = inst.root / "live" / "prod", inst.root / "live" / "staging"
    subprocess.run([sys.executable, "-m", "odoo_standin", "init", "--db", inst.db("prod"), "--data-dir",
                    str(prod_dir), "--partners", "20", "--attachments", "4", "--pbkdf2-rounds", "1000"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    (prod_dir / "sessions").mkdir()
    (prod_dir / "sessions" / "werkzeug_session1.sess").write_text("a user's session")
    _admin(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(inst.db("staging")),
                                                            sql.Identifier(inst.db("prod"))))
    shutil.copytree(prod_dir / "filestore" / inst.db("prod"), staging_dir / "filestore" / inst.db("stg"))
    subprocess.run([sys.executable, "-m", "odoo_standin", "neutralize", "--db", inst.db("staging"), "--base-url",
                    "http://staging.localhost"], check=True, env=env, stdout=subprocess.DEVNULL)
    for kind in ("prod", "staging"):
        (inst.root / "data" / kind).mkdir(parents=True)
    (inst.root / "etc").mkdir()


def _inventory(inst: Installation) -> dict[str, Any]:
    commit = secrets.token_hex(20)

    def environment(kind: str, name: str, odoo_db_name: str) -> dict[str, Any]:
        return {"project": inst.project, "kind": kind, "db_dsn_ref": DSN_REF, "odoo_db_name": odoo_db_name,
                "db_name_prefix": f"inv_{inst.tag}_{name}", "data_root": f"data/{name}", "worker_mode": "threaded",
                "git_commit_sha": commit, "smoke_login": "admin", "smoke_password_ref": ADMIN_REF,
                "adopt": {"db_name": inst.db(name), "data_dir": f"live/{name}", "http_port": free_port(),
                          "endpoint_port": free_port()}}

    prod = environment("production", "prod", inst.db("prod"))
    prod["adopt"]["first_blue"] = True
    staging = environment("staging", "staging", inst.db("stg"))
    staging["odoo_command"] = STANDIN + " --server-version 17.0"  # an environment's own template
    return {
        "settings": {"file": "etc/settings.json", "ops_dsn_ref": DSN_REF, "ops_database": inst.ops_database,
                     "secrets_file": "secrets.json", "role_key_ref": ROLE_KEY_REF, "run_dir": "run",
                     "odoo_command": STANDIN},
        "storage": {"evidence_root": "evidence", "artifact_root": "artifacts"},
        "projects": {inst.project: {"name": "Onboarded"}},
        "environments": {inst.staging: staging, inst.prod: prod},
        "users": {"inv_user": {inst.project: ["promote"]}},
        "router": {"kind": "haproxy", "dir": "router", "fronts": {inst.prod: {"active_port": free_port(),
                                                                              "preview_port": free_port()}}},
    }


def _tear_down(inst: Installation) -> None:
    HAProxyRouter(work_dir=str(inst.root / "router")).stop()
    ops_db = inst.ops_db()
    try:
        deployments = ops_db.all_deployments() if ops_db.schema_state().database_exists else []
    except psycopg.Error:
        deployments = []
    for dep in deployments:
        db_endpoint.stop_group(dep.pid)
        db_endpoint.stop_group(dep.endpoint_pid)
    names = {d.db_name for d in deployments} | {inst.db("prod"), inst.db("staging"), inst.ops_database}
    for name in sorted(names):
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    for role in sorted({d.db_role for d in deployments if d.db_role}):
        _admin(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Installation]:
    tag = secrets.token_hex(3)
    password = secrets.token_urlsafe(12)
    inst = Installation(root=tmp_path, tag=tag, admin_password=password, data={})
    values = {DSN_REF: default_server_dsn(), ROLE_KEY_REF: secrets.token_urlsafe(24), ADMIN_REF: password}
    fd = os.open(tmp_path / "secrets.json", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(values))
    monkeypatch.setenv(DSN_REF, values[DSN_REF])  # this process reads the private ops database too
    try:
        _make_live_installation(inst)
        inst.data = _inventory(inst)
        inst.write()
        yield inst
    finally:
        _tear_down(inst)
