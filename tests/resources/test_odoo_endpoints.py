"""A deployment's database endpoint on the real PostgreSQL and a real PgBouncer, and stopping a whole process group.

Each test makes its own databases and roles (random names) and drops them. The fence: through a deployment's
PgBouncer only the environment's name opens, and only onto its own database; on the server its role can
connect to its own database and to nothing else.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from promote_pipeline.promotion import settings
from resources.odoo_host import LocalOdooHost, free_port
from resources.ops_db import DeploymentRecord

DSN_REF = "PROMOTE_TEST_ENDPOINT_DSN"
KEY_REF = "PROMOTE_TEST_ROLE_KEY"


def _admin() -> str:
    return psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname="postgres")


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalOdooHost:
    monkeypatch.setenv(DSN_REF, settings.default_server_dsn())
    monkeypatch.setenv(KEY_REF, secrets.token_urlsafe(24))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.chmod(tmp_path, 0o755)  # PgBouncer runs as an unprivileged user when we are root
    return LocalOdooHost(command_template="{python} -c pass", run_dir=str(run_dir), role_key_ref=KEY_REF)


@pytest.fixture
def two_databases(host: LocalOdooHost) -> Iterator[tuple[str, str]]:
    tag = secrets.token_hex(4)
    blue, green = f"endpoint_test_blue_{tag}", f"endpoint_test_green_{tag}"
    with psycopg.connect(_admin(), autocommit=True) as admin:
        for name in (blue, green):
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            with psycopg.connect(psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname=name)) as db:
                db.execute("CREATE TABLE res_partner (id serial PRIMARY KEY, name text)")
                db.execute("INSERT INTO res_partner (name) VALUES (%s)", (name,))
    try:
        yield blue, green
    finally:
        with psycopg.connect(_admin(), autocommit=True) as admin:
            for name in (blue, green):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _deployment(physical: str, name: str) -> DeploymentRecord:
    return DeploymentRecord(deployment_id=f"dep_{physical}", environment_id="env_test", db_name=physical,
                            data_dir="/nonexistent", http_port=None, websocket_port=None, pid=None, state="standby",
                            odoo_db_name=name, db_role=physical, endpoint_port=free_port())


def test_the_environments_name_opens_the_deployments_own_database_and_nothing_else(
        host: LocalOdooHost, two_databases: tuple[str, str]) -> None:
    blue_db, green_db = two_databases
    name = f"prod_{secrets.token_hex(3)}"
    green = _deployment(green_db, name)
    host.grant_database_to_role(DSN_REF, blue_db, blue_db)
    host.grant_database_to_role(DSN_REF, green_db, green_db)
    pid = host.start_endpoint(DSN_REF, green)
    try:
        endpoint = host.endpoint(green)
        assert endpoint is not None and endpoint.dbname == name and endpoint.user == green_db
        with psycopg.connect(endpoint.dsn()) as conn:
            row = conn.execute("SELECT current_database(), current_user, (SELECT name FROM res_partner)").fetchone()
            assert row == (green_db, green_db, green_db)  # the name is the environment's, the data green's
            owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'res_partner'").fetchone()
            assert owner == (green_db,)  # its role owns its tables (Odoo upgrades its own schema)
        with pytest.raises(psycopg.OperationalError, match="no such database"):
            psycopg.connect(endpoint.dsn().replace(f"dbname={name}", f"dbname={blue_db}"))
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(endpoint.dsn().replace("password=", "password=wrong"))
        server = psycopg.conninfo.conninfo_to_dict(settings.default_server_dsn())
        as_role = psycopg.conninfo.make_conninfo(host=server.get("host"), port=server.get("port"), user=green_db,
                                                 password=endpoint.password)
        with psycopg.connect(as_role + f" dbname={green_db}") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        for other in (blue_db, "postgres_nonexistent"):
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(as_role + f" dbname={other}")
        with psycopg.connect(_admin()) as admin:
            role = admin.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
                                 (green_db,)).fetchone()
        assert role == (False, False, False)
    finally:
        host.stop_endpoint(pid, host.process_started(pid))
    assert list(host.processes_of(pid)) == []


def test_no_password_is_stored_the_auth_file_holds_a_verifier_owner_only(
        host: LocalOdooHost, two_databases: tuple[str, str]) -> None:
    _, green_db = two_databases
    green = _deployment(green_db, "prod_x")
    host.grant_database_to_role(DSN_REF, green_db, green_db)
    pid = host.start_endpoint(DSN_REF, green)
    try:
        password = host.role_password(green_db)
        folder = host.endpoint_dir(green.deployment_id)
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        for path in folder.iterdir():
            assert oct(path.stat().st_mode & 0o777) == "0o600"
            assert password not in path.read_text()
        assert "SCRAM-SHA-256$" in (folder / "userlist.txt").read_text()
        assert password == host.role_password(green_db)  # derived again, the same, by any process with the key
    finally:
        host.stop_endpoint(pid, host.process_started(pid))


def test_stopping_an_odoo_stops_its_whole_process_group(host: LocalOdooHost) -> None:
    # A master that forks workers which outlive a signal to the master alone, as a prefork Odoo's do.
    script = ("import os, signal, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "for _ in range(3):\n"
              "    if os.fork() == 0:\n"
              "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "        time.sleep(60); os._exit(0)\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 60
    while len(list(host.processes_of(proc.pid))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(host.processes_of(proc.pid))) == 4
    # SIGTERM ignored by all: the group is killed after the timeout
    host.stop_odoo(proc.pid, host.process_started(proc.pid), timeout=1)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while list(host.processes_of(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(host.processes_of(proc.pid)) == []


def test_the_endpoint_reaches_the_server_the_dsn_reaches_when_it_names_no_port(
        host: LocalOdooHost, two_databases: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A DSN without a port leaves it to libpq (PGPORT, else its default): the PgBouncer goes where the promoter's
    own connections go, not to an assumed 5432, which may be another server (staging's, the ops database's)."""
    _, green_db = two_databases
    server = psycopg.conninfo.conninfo_to_dict(settings.default_server_dsn())
    port = str(server.get("port") or 5432)
    monkeypatch.setenv(DSN_REF, f"host={server.get('host', '127.0.0.1')} user={server.get('user', 'postgres')}")
    monkeypatch.setenv("PGPORT", port)
    green = _deployment(green_db, "prod_noport")
    host.grant_database_to_role(DSN_REF, green_db, green_db)
    pid = host.start_endpoint(DSN_REF, green)
    try:
        config = (host.endpoint_dir(green.deployment_id) / "pgbouncer.ini").read_text()
        assert f"prod_noport = host={server.get('host', '127.0.0.1')} port={port} dbname={green_db}" in config
        endpoint = host.endpoint(green)
        assert endpoint is not None
        with psycopg.connect(endpoint.dsn()) as conn:
            assert conn.execute("SELECT current_database(), inet_server_port()").fetchone() == (green_db, int(port))
    finally:
        host.stop_endpoint(pid, host.process_started(pid))
