"""Staging and production on different PostgreSQL servers, the ops database on a third.

The layout: staging's databases on a private cluster S, production's on a private cluster P (each initdb'd into a
temporary folder, on a free port, with ``log_connections`` on), the ops database on the suite's own server. The
promoter runs pg_dump/pg_restore with each environment's DSN. A promotion must dump the snapshot from S, back blue
up from P, restore green on P (its role made there, its PgBouncer pointing there), and create nothing on S; a
rollback must put the router back on blue, on P.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from promote_pipeline.cli import drills
from promote_pipeline.cli import sandbox as sandbox_mod
from promote_pipeline.cli.runner import run_rollback
from promote_pipeline.cli.sandbox import PROD, PROJECT, STAGING, USER, Sandbox
from promote_pipeline.promotion import settings as settings_mod
from promote_pipeline.promotion.inputs import PromotionInputs
from promote_pipeline.promotion.preflight import Preflight
from promote_pipeline.promotion.smoke import SmokeFailure, SmokeSuite
from resources import secrets
from resources.odoo_host import HostError, LocalOdooHost, free_port
from resources.ops_db import CompletedRun, DeploymentRecord, OpsDatabase

pytestmark = pytest.mark.slow

STAGING_REF = "PROMOTE_TEST_STAGING_PG_DSN"
PROD_REF = "PROMOTE_TEST_PROD_PG_DSN"
REFS = {STAGING: STAGING_REF, PROD: PROD_REF}


@dataclass
class TwoServerSandbox(Sandbox):
    """The sandbox, with staging's and production's databases each on its own server (``REFS``); the ops database
    stays on the sandbox's own server (``DSN_REF``), which is neither."""

    def _seed_ops(self, ops_db: OpsDatabase, count: int = 1) -> str:
        commit = super()._seed_ops(ops_db, count)
        for env_id, ref in REFS.items():
            env = ops_db.environment(env_id)
            assert env is not None
            if env.db_dsn_ref != ref:
                ops_db.update_environment(env.model_copy(update={"db_dsn_ref": ref}))
        return commit

    def _env_for(self, ref: str) -> dict[str, str]:
        return {**os.environ, "STANDIN_DSN": secrets.resolve(ref),
                "STANDIN_ADMIN_PASSWORD": secrets.resolve(sandbox_mod.ADMIN_REF)}

    def _make_production(self, host: LocalOdooHost, prod: DeploymentRecord) -> None:
        subprocess.run(
            [sys.executable, "-m", "odoo_standin", "init", "--db", prod.db_name, "--data-dir", prod.data_dir,
             "--replace", "--partners", str(self.partners), "--attachments", str(self.attachments),
             "--pbkdf2-rounds", str(self.pbkdf2_rounds)],
            check=True, env=self._env_for(PROD_REF), stdout=subprocess.DEVNULL)

    def _neutralize(self, host: LocalOdooHost, staging: DeploymentRecord) -> None:
        subprocess.run([sys.executable, "-m", "odoo_standin", "neutralize", "--db", staging.db_name,
                        "--base-url", "http://staging.localhost"], check=True, env=self._env_for(STAGING_REF),
                       stdout=subprocess.DEVNULL)

    def _copy_production(self, ops_db: OpsDatabase, host: LocalOdooHost, staging: DeploymentRecord,
                         prod_id: str = PROD) -> None:
        """Staging made as a team with two servers makes it: production dumped from P, restored on S."""
        prod = ops_db.active_deployment(prod_id)
        assert prod is not None
        with tempfile.TemporaryDirectory() as tmp:
            host.dump_database(PROD_REF, prod.db_name, Path(tmp) / "dump")
            host.drop_database(STAGING_REF, staging.db_name)
            host.restore_database(STAGING_REF, staging.db_name, Path(tmp) / "dump")
        target = host.filestore_dir(staging.data_dir, staging.served_db)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(host.filestore_dir(prod.data_dir, prod.served_db), target)
        ops_db.record_completed_run(PROJECT, CompletedRun(
            environment_id=STAGING, operation_type="restore", created_by=USER,
            metadata={"source_environment_id": PROD, "source_db": prod.db_name,
                      "note": "staging made from a dump of production, on its own server"}))
        with host.connect(STAGING_REF, staging.db_name) as conn:
            self._add_staging_contacts(conn)


@dataclass
class Cluster:
    root: Path
    dsn: str

    @property
    def log(self) -> Path:
        data = sandbox_mod.private_cluster(self.root)
        assert data is not None
        return data / "server.log"

    def databases(self) -> set[str]:
        with psycopg.connect(self.dsn, dbname="postgres") as conn:
            return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")}

    def roles(self) -> set[str]:
        with psycopg.connect(self.dsn, dbname="postgres") as conn:
            return {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}

    def connections(self, application: str) -> list[str]:
        """The databases ``application`` connected to, from the server's log (``log_connections``)."""
        pattern = re.compile(rf"connection authorized: user=\S+ database=(\S+) application_name={application}\b")
        return [m.group(1) for m in pattern.finditer(self.log.read_text(errors="replace"))]


def _start_cluster(root: Path) -> Cluster:
    root.mkdir(parents=True)
    dsn = sandbox_mod.start_private_postgres(root, free_port())
    with psycopg.connect(dsn, dbname="postgres", autocommit=True) as conn:
        # Every connection logged: where pg_dump and pg_restore went is read back from each server's own log.
        conn.execute("ALTER SYSTEM SET log_connections = on")
        conn.execute("SELECT pg_reload_conf()")
    return Cluster(root, dsn)


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TwoServerSandbox, Cluster, Cluster]]:
    base = tmp_path_factory.mktemp("two-servers")
    saved = {k: os.environ.get(k) for k in ("PROMOTE_SETTINGS", "PROMOTE_EVIDENCE_ROOT")}
    clusters: list[Cluster] = []
    box: TwoServerSandbox | None = None
    try:
        s = _start_cluster(base / "S")
        clusters.append(s)
        p = _start_cluster(base / "P")
        clusters.append(p)
        tag = secrets_token()
        box = TwoServerSandbox(root=base / "box", ops_database=f"promote_ops_2s_{tag}", db_prefix=f"p2s_{tag}",
                               pbkdf2_rounds=1000, partners=30, attachments=8)
        box.root.mkdir()
        # The ops database on the sandbox's server (the suite's, neither S nor P); staging's and production's
        # servers named by references of their own.
        secrets.write_secrets_file(box.secrets_file, {
            sandbox_mod.DSN_REF: sandbox_mod.ensure_postgres(box.root), STAGING_REF: s.dsn, PROD_REF: p.dsn,
            sandbox_mod.ADMIN_REF: secrets_token(18), sandbox_mod.ROLE_KEY_REF: secrets_token(32)})
        box.up()
        os.environ.update(box.env())
        os.environ["PROMOTE_EVIDENCE_ROOT"] = str(base / "evidence")
        yield box, s, p
    finally:
        if box is not None:
            box.down()
        for cluster in clusters:
            sandbox_mod.stop_private_postgres(cluster.root)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if saved["PROMOTE_SETTINGS"]:
            settings_mod.select(Path(saved["PROMOTE_SETTINGS"]))


def secrets_token(n: int = 3) -> str:
    import secrets as pysecrets

    return pysecrets.token_hex(n) if n <= 4 else pysecrets.token_urlsafe(n)


def _served_by_router(box: Sandbox) -> str:
    url = box.status()["router_url"]
    resp = httpx.post(f"{url}/web/webclient/version_info",
                      json={"jsonrpc": "2.0", "method": "call", "params": {}, "id": 1}, timeout=30)
    assert resp.status_code == 200
    header = resp.headers.get("X-Promote-Upstream")
    assert header and box.resources()["router"].served_upstream(PROD).name == header
    return header


def test_layout_puts_each_environment_on_its_own_server(two_servers: tuple[TwoServerSandbox, Cluster, Cluster]
                                                        ) -> None:
    box, s, p = two_servers
    ops_db: OpsDatabase = box.resources()["ops_db"]
    staging, blue = ops_db.active_deployment(STAGING), ops_db.active_deployment(PROD)
    assert staging and blue
    assert staging.db_name in s.databases() and staging.db_name not in p.databases()
    assert blue.db_name in p.databases() and blue.db_name not in s.databases()
    assert box.settings().ops_database not in s.databases() | p.databases()
    assert staging.db_role in s.roles() and staging.db_role not in p.roles()
    assert blue.db_role in p.roles() and blue.db_role not in s.roles()


def test_promotion_and_rollback_across_two_servers(two_servers: tuple[TwoServerSandbox, Cluster, Cluster],
                                                   h: Any) -> None:
    box, s, p = two_servers
    res = box.resources()
    ops_db: OpsDatabase = res["ops_db"]
    staging = ops_db.active_deployment(STAGING)
    blue = ops_db.active_deployment(PROD)
    assert staging and blue
    s_before, p_before = s.databases(), p.databases()
    s_roles_before = s.roles()
    s_dumps, p_dumps = len(s.connections("pg_dump")), len(p.connections("pg_dump"))

    code, outcome, message = h.promote(stability_window_seconds=2)
    assert code == 0, message
    assert outcome is not None and outcome.status == "success"
    green = ops_db.active_deployment(PROD)
    assert green and green.deployment_id != blue.deployment_id
    # Green on production's router, in the router's own words.
    assert _served_by_router(box) == green.deployment_id == box.status()["serving"]["deployment"]

    # Where the databases are: green only on P; nothing the run made on S.
    assert green.db_name in p.databases() and green.db_name not in s.databases()
    assert s.databases() == s_before and s.roles() == s_roles_before
    assert p.databases() == p_before | {green.db_name}
    assert green.db_role in p.roles()
    # The snapshot was dumped from S, blue's backup from P (each server's own log), green restored on P.
    assert s.connections("pg_dump")[s_dumps:] and set(s.connections("pg_dump")[s_dumps:]) == {staging.db_name}
    assert set(p.connections("pg_dump")[p_dumps:]) == {blue.db_name}
    assert green.db_name in p.connections("pg_restore") and green.db_name not in s.connections("pg_restore")
    # The artifact records say so too.
    snapshot = ops_db.artifact(outcome.green_artifact_id)
    backup = ops_db.artifact(outcome.blue_backup_id)
    assert snapshot and backup
    assert snapshot.contract["source_env"]["environment_id"] == STAGING
    assert snapshot.contract["source_env"]["db"] == staging.db_name
    assert snapshot.contract["source_env"]["db_dsn_ref"] == STAGING_REF
    assert backup.contract["source_env"]["environment_id"] == PROD
    assert backup.contract["source_env"]["db"] == blue.db_name
    assert backup.contract["source_env"]["db_dsn_ref"] == PROD_REF
    # Green's PgBouncer points at P.
    ini = (res["odoo_host"].endpoint_dir(green.deployment_id) / "pgbouncer.ini").read_text()
    assert f"port={p.dsn.split('port=')[1].split()[0]}" in ini.replace(" ", "")
    evidence = h.evidence(outcome)
    restore = json.loads((evidence / "green_restore.json").read_text())
    assert restore  # the step wrote its facts

    code, result, message = run_rollback(outcome.run_id, "two-server drill", "ops-oncall", quiet=True)
    assert code == 0 and result and result["action"] == "rolled_back", message
    assert _served_by_router(box) == blue.deployment_id
    assert ops_db.run(outcome.run_id).status == "rolled_back"
    # Blue serves from P again, writable; green's database kept (it served traffic), on P.
    with psycopg.connect(p.dsn, dbname=blue.db_name) as conn:
        conn.execute("SELECT 1 FROM res_partner LIMIT 1")
    assert green.db_name in p.databases() and s.databases() == s_before


def test_pg_dump_and_pg_restore_reach_a_server_exactly_as_its_dsn_says(
        two_servers: tuple[TwoServerSandbox, Cluster, Cluster], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tools get the whole DSN (sslmode, options, ...), not only its host, port and user: a server whose DSN
    demands TLS is never dumped in the clear. S runs without TLS, so a DSN requiring it is refused by the tools as
    by the promoter's own connections; its other settings reach the server (its log names the application)."""
    box, s, p = two_servers
    staging = box.resources()["ops_db"].active_deployment(STAGING)
    assert staging
    host: LocalOdooHost = box.resources()["odoo_host"]
    monkeypatch.setenv("PROMOTE_TEST_TLS_DSN", s.dsn + " sslmode=require")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(s.dsn + " sslmode=require dbname=postgres")
    with pytest.raises(HostError, match="pg_dump of database .* failed: .*SSL"):
        host.dump_database("PROMOTE_TEST_TLS_DSN", staging.db_name, tmp_path / "refused")
    monkeypatch.setenv("PROMOTE_TEST_NAMED_DSN", s.dsn + " application_name=promote_dsn_probe")
    host.dump_database("PROMOTE_TEST_NAMED_DSN", staging.db_name, tmp_path / "dump")
    assert staging.db_name in s.connections("promote_dsn_probe")
    copy = f"{staging.db_name}_probe"
    try:
        host.restore_database("PROMOTE_TEST_NAMED_DSN", copy, tmp_path / "dump")
        assert copy in s.connections("promote_dsn_probe") and copy not in p.databases()
    finally:
        host.drop_database("PROMOTE_TEST_NAMED_DSN", copy)


def _disk_check(box: Sandbox, factor: float) -> tuple[bool, str]:
    res = box.resources()
    inputs = PromotionInputs(project_id=PROJECT, staging_env_id=STAGING, prod_env_id=PROD, user_id=USER)
    check = Preflight(res["ops_db"], res["odoo_host"], res["artifact_store"], inputs, factor)
    try:
        results = {r.name: (r.passed, r.message) for r in check.run(stop_on_failure=False)}
    finally:
        check.release()
    return results["sufficient_disk_space"]


def test_the_disk_check_asks_stagings_server_for_the_snapshots_size(
        two_servers: tuple[TwoServerSandbox, Cluster, Cluster]) -> None:
    """The snapshot, and green restored from it, are staging's size, which only staging's server knows: a staging
    several times production's size is refused where production's size alone would have passed."""
    box, s, p = two_servers
    res = box.resources()
    ops_db: OpsDatabase = res["ops_db"]
    host: LocalOdooHost = res["odoo_host"]
    staging, blue = ops_db.active_deployment(STAGING), ops_db.active_deployment(PROD)
    assert staging and blue
    with psycopg.connect(s.dsn, dbname=staging.db_name, autocommit=True) as conn:
        # ~40 MB of incompressible rows, on S only
        conn.execute("CREATE TABLE promote_bulk AS SELECT n, (SELECT string_agg(md5(random()::text || n || k), '')"
                     " FROM generate_series(1, 30) AS k) AS pad FROM generate_series(1, 40000) AS n")
    try:
        def size(ref: str, dep: DeploymentRecord) -> int:
            return host.database_size(ref, dep.db_name) + host.filestore_stats(dep.data_dir, dep.served_db)[1]

        prod_bytes, staging_bytes = size(PROD_REF, blue), size(STAGING_REF, staging)
        assert staging_bytes > 3 * prod_bytes
        res["artifact_store"].ensure_root()
        free = min(shutil.disk_usage(res["artifact_store"].root).free, shutil.disk_usage(blue.data_dir).free)
        # Room for this factor times production's size, not for it times staging's (each side ~1.7x off).
        factor = free / (prod_bytes * staging_bytes) ** 0.5
        passed, message = _disk_check(box, factor)
        assert not passed and "staging size (larger than production's) needs" in message, message
        passed, message = _disk_check(box, 1.0)
        assert passed and message.startswith("1x staging size (larger than production's) ("), message
    finally:
        with psycopg.connect(s.dsn, dbname=staging.db_name, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS promote_bulk")


def test_the_drills_read_production_on_productions_server(two_servers: tuple[TwoServerSandbox, Cluster, Cluster]
                                                          ) -> None:
    """The drills' fingerprint of blue (taken before and after each drill) reads production's server."""
    box, _, p = two_servers
    blue = box.resources()["ops_db"].active_deployment(PROD)
    assert blue
    assert drills.prod_dsn_ref(box) == PROD_REF
    prints = drills.fingerprint(box, blue.db_name)
    with psycopg.connect(p.dsn, dbname=blue.db_name) as conn:
        expected = conn.execute("SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x.id), '')) FROM res_partner x"
                             ).fetchone()
    assert expected and prints["res_partner"] == expected[0]


def test_the_fence_check_reaches_productions_server_as_its_dsn_does(
        two_servers: tuple[TwoServerSandbox, Cluster, Cluster], monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoke test's fence check connects to production's server as green's role, to blue's database: with a
    DSN naming the server by ``hostaddr`` (no ``host``), it must still reach that server, and so find a fence that
    is broken (here: green's role given CONNECT on blue's database), not fail to connect and call it whole."""
    box, _, p = two_servers
    res = box.resources()
    ops_db: OpsDatabase = res["ops_db"]
    host: LocalOdooHost = res["odoo_host"]
    prod_env, blue = ops_db.environment(PROD), ops_db.active_deployment(PROD)
    assert prod_env and blue
    tag = secrets_token(4)
    green = DeploymentRecord(deployment_id=f"dep_fence_{tag}", environment_id=PROD, db_name=f"fence_{tag}",
                             data_dir="/nonexistent", http_port=None, websocket_port=None, pid=None, state="standby",
                             odoo_db_name=prod_env.odoo_db_name, db_role=f"fence_{tag}", endpoint_port=free_port())
    port = p.dsn.split("port=")[1].split()[0]
    monkeypatch.setenv("PROMOTE_TEST_HOSTADDR_DSN", f"hostaddr=127.0.0.1 port={port} user=postgres")
    monkeypatch.delenv("PGHOST", raising=False)  # or libpq would take it for the host the DSN does not name
    env = prod_env.model_copy(update={"db_dsn_ref": "PROMOTE_TEST_HOSTADDR_DSN"})
    host.create_database(PROD_REF, green.db_name)
    pid = None
    try:
        host.grant_database_to_role(PROD_REF, green.db_name, green.db_role)
        pid = host.start_endpoint(PROD_REF, green)
        endpoint = host.endpoint(green)
        assert endpoint is not None
        suite = SmokeSuite(host, env, green, None, "http://127.0.0.1:9", blue_db=blue.db_name)  # type: ignore[arg-type]
        assert "not reachable through it, nor as its role on the server" in suite._fence(endpoint)
        with psycopg.connect(p.dsn, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'GRANT CONNECT ON DATABASE "{blue.db_name}" TO "{green.db_role}"')
        with pytest.raises(SmokeFailure, match=f"fence broken: green's role {green.db_role} connects to"):
            suite._fence(endpoint)
    finally:
        if green.db_role in p.roles():
            with psycopg.connect(p.dsn, dbname="postgres", autocommit=True) as conn:
                conn.execute(f'REVOKE CONNECT ON DATABASE "{blue.db_name}" FROM "{green.db_role}"')
        if pid is not None:
            host.stop_endpoint(pid, host.process_started(pid))
        host.drop_database(PROD_REF, green.db_name)
        host.drop_role(PROD_REF, green.db_role)


def test_sandbox_down_removes_each_deployment_from_its_own_server(
        two_servers: tuple[TwoServerSandbox, Cluster, Cluster]) -> None:
    """Last in this module: it takes the layout down. Each deployment's database and role go from its
    environment's server, not from the ops database's."""
    box, s, p = two_servers
    deployments = box.resources()["ops_db"].all_deployments()
    assert {d.db_dsn_ref for d in deployments} == {STAGING_REF, PROD_REF}
    names = {d.db_name for d in deployments}
    roles = {d.db_role for d in deployments if d.db_role}
    assert names & s.databases() and names & p.databases()
    box.down()
    assert not names & (s.databases() | p.databases())
    assert not roles & (s.roles() | p.roles())
