"""``promote inventory check`` and ``apply`` on real services: a private ops database per test, real PostgreSQL
roles, PgBouncers, HAProxy and odoo_standin processes (the ``installation`` fixture, tests/cli/conftest.py).

The check prints one line per problem and exits 2 having written nothing; apply makes the installation, and a
second apply changes nothing; an environment onboarded only through apply (no other row) is promoted through the
router.
"""

from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

import resources
from promote_pipeline.promotion.settings import default_server_dsn
from resources.odoo_host import port_in_use

pytestmark = pytest.mark.slow


def _lines(result: Any, code: int) -> list[str]:
    assert result.returncode == code, result.stdout + result.stderr
    return str(result.stdout).splitlines()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def _server_facts(inst: Any) -> dict[str, Any]:
    """What an apply would change on the PostgreSQL server: the live databases' owners and grants, the roles."""
    with psycopg.connect(default_server_dsn(), dbname="postgres") as conn:
        dbs = conn.execute("SELECT datname, datdba, datacl::text FROM pg_database WHERE datname = ANY(%s)"
                           " ORDER BY datname", ([inst.db("prod"), inst.db("staging"), inst.ops_database],)).fetchall()
        roles = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"inv_{inst.tag}_%",)).fetchall()
    return {"databases": dbs, "roles": roles}


def _nothing_written(inst: Any, before_tree: dict[str, Any], before_server: dict[str, Any]) -> None:
    assert _tree(inst.root) == before_tree  # no settings file, router, run or evidence folder, no data moved
    assert _server_facts(inst) == before_server  # no ops database, no role, the live databases as they were
    ports = [inst.data["environments"][e]["adopt"]["endpoint_port"] for e in (inst.prod, inst.staging)]
    ports += list(inst.data["router"]["fronts"][inst.prod].values())
    assert not any(port_in_use("127.0.0.1", p) for p in ports)  # no PgBouncer, no router started


def test_check_prints_one_line_per_problem_exits_2_and_writes_nothing(installation: Any) -> None:
    inst = installation
    bad_format = copy.deepcopy(inst.data)
    bad_format["environments"][inst.prod]["odoo_db_name"] = "my-db"
    bad_format["router"]["kind"] = "traefik"
    bad_format["environments"][inst.staging]["adopt"]["http_portt"] = 8069
    live = copy.deepcopy(inst.data)
    prod, staging = live["environments"][inst.prod], live["environments"][inst.staging]
    prod["smoke_password_ref"] = "PROMOTE_INV_TEST_NOT_SET"
    prod["odoo_db_name"] = f"inv_{inst.tag}_renamed"
    prod["data_root"] = "data/nowhere"
    staging["adopt"]["db_name"] = f"inv_{inst.tag}_nosuch"
    format_file, live_file = inst.write(bad_format, "format.yaml"), inst.write(live, "live.yaml")
    before_tree, before_server = _tree(inst.root), _server_facts(inst)
    assert before_server["databases"][0][0] == inst.db("prod") and before_server["roles"] == []

    result = inst.promote("inventory", "check", str(format_file))
    assert _lines(result, 2) == [
        f"environments.{inst.staging}.adopt.http_portt: is not a key of the inventory format (examples/inventory.yaml"
        " shows them all)",
        f"environments.{inst.prod}.odoo_db_name: must be 1-63 letters, digits or '_' (got 'my-db')",
        "router.kind: must be 'haproxy' or 'nginx' (got 'traefik')"]

    taken = socket.create_server(("127.0.0.1", prod["adopt"]["http_port"]))  # the operator's Odoo still runs
    with taken, psycopg.connect(default_server_dsn(), dbname=inst.db("prod"), application_name="odoo-cron"):
        lines = _lines(inst.promote("inventory", "check", str(live_file)), 2)
    secrets_file = inst.root / "secrets.json"
    assert lines[:3] == [
        f"environments.{inst.prod}.smoke_password_ref: secret reference 'PROMOTE_INV_TEST_NOT_SET' resolves to"
        f" nothing: set it in the environment or the secrets file {secrets_file}",
        f"environments.{inst.prod}.data_root: {inst.root / 'data' / 'nowhere'} does not exist (create it: new"
        " deployments' data dirs and the shared sessions go under it)",
        f"environments.{inst.staging}.adopt.db_name: database inv_{inst.tag}_nosuch does not exist on the server of"
        " PROMOTE_INV_TEST_PG_DSN"]
    assert lines[3].startswith(f"environments.{inst.prod}.adopt.db_name: 1 session(s) connected to {inst.db('prod')}"
                               " (postgres/odoo-cron (pid ")
    assert lines[3].endswith("): stop the Odoo serving it and anything else connected first (adoption restarts it"
                             " once, behind the router)")
    assert lines[4:] == [
        f"environments.{inst.prod}.adopt.data_dir: its filestore is {inst.root / 'live/prod/filestore'}/"
        f"{inst.db('prod')}, but Odoo will serve the database as inv_{inst.tag}_renamed: rename that folder to"
        f" filestore/inv_{inst.tag}_renamed",
        f"environments.{inst.prod}.adopt.http_port: port {prod['adopt']['http_port']} is in use: stop the Odoo"
        f" serving {inst.db('prod')} (and whatever else holds the port) first (adoption restarts it once, behind the"
        " router)"]

    missing = inst.promote("inventory", "apply", str(inst.root / "nowhere.yaml"))
    assert _lines(missing, 2) == [f"{inst.root / 'nowhere.yaml'}: does not exist"]
    # apply refuses on the same problems, before changing anything
    assert _lines(inst.promote("inventory", "apply", str(format_file)), 2)[-1].startswith("router.kind")
    assert _lines(inst.promote("inventory", "apply", str(live_file)), 2)[0].startswith(
        f"environments.{inst.prod}.smoke_password_ref")
    _nothing_written(inst, before_tree, before_server)


# Every migration the package ships, in order (a new one adds itself here).
_MIGRATIONS = ", ".join(p.stem for p in sorted((Path(resources.__file__).parent / "migrations").glob("*.sql")))


def _expected_apply(inst: Any) -> list[str]:
    s, p = inst.data["environments"][inst.staging]["adopt"], inst.data["environments"][inst.prod]["adopt"]
    return [
        f"settings: {inst.settings_file} written (PROMOTE_SETTINGS must name it)",
        f"ops database {inst.ops_database}: created, migrations {_MIGRATIONS} applied",
        f"project {inst.project}: added ('Onboarded')",
        f"environment {inst.staging}: added (staging of {inst.project}, Odoo database name {inst.db('stg')} for life)",
        f"environment {inst.prod}: added (production of {inst.project}, Odoo database name {inst.db('prod')} for"
        " life)",
        f"grant: inv_user may promote on {inst.project}",
        f"adopt {inst.staging}: its live deployment dep_{inst.staging}_live (database {inst.db('staging')}, port"
        f" {s['http_port']}); its Odoo restarts once",
        f"adopt {inst.prod}: its live deployment dep_{inst.prod}_live (database {inst.db('prod')}, port"
        f" {p['http_port']}); its Odoo restarts once",
        f"router: haproxy started in {inst.root / 'router'}",
        f"router: {inst.prod} registered, on its live deployment",
        f"10 change(s) made from {inst.file}"]


def _served_by(url: str) -> str | None:
    resp = httpx.get(f"{url}/web/health", timeout=5)
    assert resp.status_code == 200
    return resp.headers.get("X-Promote-Upstream")


def test_apply_makes_the_installation_and_a_second_apply_changes_nothing(installation: Any, h: Any) -> None:
    inst = installation
    check = _lines(inst.promote("inventory", "check", str(inst.file)), 0)
    assert check == [
        f"inventory {inst.file}: fine (1 project(s), 2 environment(s), 1 user(s); router haproxy fronting {inst.prod})",
        f"apply would make 10 change(s), adopting the live deployments of {inst.staging}, {inst.prod} (each Odoo"
        f" restarted once): `promote inventory apply {inst.file}`"]

    applied = _lines(inst.promote("inventory", "apply", str(inst.file)), 0)
    assert [line for line in applied if not line.startswith("  ")] == _expected_apply(inst)
    assert any(line.startswith("  its Odoo restarted once, here, behind the router: it serves") for line in applied)
    assert _lines(inst.promote("inventory", "apply", str(inst.file)), 0) == [
        f"nothing to change: the settings file, the ops database and the router match {inst.file}"]
    assert _lines(inst.promote("inventory", "check", str(inst.file)), 0)[1] == \
        "apply would change nothing: the settings file, the ops database and the router match it"

    ops_db = inst.ops_db()
    for env_id, kind in ((inst.staging, "staging"), (inst.prod, "prod")):
        live = ops_db.active_deployment(env_id)
        assert live is not None and live.deployment_id == f"dep_{env_id}_live" and not live.owns_data_dir
        assert (live.db_name, live.db_role) == (inst.db(kind), inst.db(kind))
        adoption = ops_db.latest_run(env_id, ("adopt",))
        assert adoption is not None and adoption.status == "success"
        assert adoption.metadata["deployment_id"] == live.deployment_id and adoption.metadata["db_name"] == live.db_name
    assert ops_db.environment(inst.staging).odoo_command.endswith("--server-version 17.0")
    assert [(g.user_id, g.permission) for g in ops_db.permissions_of(inst.project)] == [("inv_user", "promote")]
    counts = h.ops_sql(ops_db, "SELECT (SELECT count(*) FROM ops.runs) AS runs,"
                               " (SELECT count(*) FROM ops.deployments) AS deployments")[0]
    assert counts == {"runs": 2, "deployments": 2}  # the two adoptions, nothing made up

    settings = json.loads(inst.settings_file.read_text())
    assert (settings["ops_database"], settings["router_dir"]) == (inst.ops_database, str(inst.root / "router"))
    url = f"http://127.0.0.1:{inst.data['router']['fronts'][inst.prod]['active_port']}"
    assert _served_by(url) == f"dep_{inst.prod}_live"
    shared = inst.root / "data" / "prod" / "sessions"
    assert (shared / "werkzeug_session1.sess").is_file()  # logged-in users stay logged in
    assert os.readlink(inst.root / "live" / "prod" / "sessions") == str(shared)

    # What an adoption fixed for good, changed in the file, is refused, and nothing is changed.
    changed = copy.deepcopy(inst.data)
    changed["environments"][inst.prod]["odoo_db_name"] = f"inv_{inst.tag}_other"
    changed["environments"][inst.prod]["adopt"]["http_port"] += 1
    refused = _lines(inst.promote("inventory", "apply", str(inst.write(changed, "changed.yaml"))), 2)
    assert refused == [
        f"environments.{inst.prod}.odoo_db_name: the ops database records '{inst.db('prod')}': an environment's"
        " odoo_db_name never changes",
        f"environments.{inst.prod}.adopt.http_port: dep_{inst.prod}_live was adopted with"
        f" {inst.data['environments'][inst.prod]['adopt']['http_port']}: an adopted deployment is not changed"]
    assert h.ops_sql(ops_db, "SELECT count(*) AS runs FROM ops.runs")[0]["runs"] == 2

    # The approval gate is a setting of production that apply changes in place (the run reads it from the record).
    gated = copy.deepcopy(inst.data)
    gated["environments"][inst.prod]["require_approval"] = True
    applied = _lines(inst.promote("inventory", "apply", str(inst.write(gated, "gated.yaml"))), 0)
    assert f"environment {inst.prod}: require_approval False -> True" in applied, applied
    assert ops_db.environment(inst.prod).require_approval is True


def test_an_environment_onboarded_only_through_apply_is_promoted_through_the_router(installation: Any,
                                                                                    h: Any) -> None:
    inst = installation
    _lines(inst.promote("inventory", "apply", str(inst.file)), 0)

    # Adopted as they were: nothing says when staging was copied from production, so the drift gate cannot tell
    # what production wrote since, and asks for the operator's word first.
    args = ("run", "--project", inst.project, "--staging", inst.staging, "--prod", inst.prod,
            "--user", "inv_user", "--stability-seconds", "1", "--json")
    refused = inst.promote(*args, settings=True)
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "no_production_drift" in said and "unknown" in said, said
    promoted = inst.promote(*args, "--accept-drift", settings=True)
    outcome = json.loads(_lines(promoted, 0)[-1])
    assert outcome["status"] == "success"

    ops_db = inst.ops_db()
    green = ops_db.active_deployment(inst.prod)
    assert green is not None and green.deployment_id != f"dep_{inst.prod}_live"
    assert ops_db.deployment_on_server(green.deployment_id).created_by_run == outcome["run_id"]
    assert ops_db.deployment(f"dep_{inst.prod}_live").state == "standby"  # the first blue, kept for rollback
    url = f"http://127.0.0.1:{inst.data['router']['fronts'][inst.prod]['active_port']}"
    assert _served_by(url) == green.deployment_id
    login = httpx.post(f"{url}/web/session/authenticate", timeout=5, json={
        "jsonrpc": "2.0", "method": "call", "id": 1,
        "params": {"db": inst.db("prod"), "login": "admin", "password": inst.admin_password}}).json()
    assert isinstance(login["result"]["uid"], int)  # through the router, under the environment's lifelong name
    preflight = json.loads((Path(outcome["evidence_dir"]) / "inputs.json").read_text())
    assert "staging adopted by run_" in json.dumps(preflight)  # precondition 2 passed on the adoption
    kinds = h.ops_sql(ops_db, "SELECT operation_type, count(*) AS n FROM ops.runs GROUP BY 1 ORDER BY 1")
    assert {r["operation_type"]: r["n"] for r in kinds}["adopt"] == 2
    assert {r["operation_type"] for r in kinds} <= {"adopt", "promote", "restore"}  # only what the tool did

    # The inventory still describes the installation after a promotion: nothing to change.
    assert _lines(inst.promote("inventory", "apply", str(inst.file)), 0)[0].startswith("nothing to change")


def test_a_failed_adoption_is_recorded_failed_and_resumed_by_the_next_apply(installation: Any, h: Any) -> None:
    inst = installation
    broken = copy.deepcopy(inst.data)
    broken["environments"][inst.staging]["odoo_command"] += " --no-such-flag"  # its Odoo exits at start-up
    failed = _lines(inst.promote("inventory", "apply", str(inst.write(broken, "broken.yaml"))), 1)
    assert failed[-2].startswith(f"FAILED adopt {inst.staging}: its live deployment dep_{inst.staging}_live")
    assert "exited during start-up" in failed[-2] and failed[-2].endswith("marked failed)")
    assert failed[-1] == "6 change(s) made before it; fix the cause and apply again"
    ops_db = inst.ops_db()
    first = ops_db.latest_run(inst.staging, ("adopt",))
    assert first is not None and first.status == "failed" and "exited during start-up" in first.metadata["error"]
    verify = inst.promote("verify-staging", inst.staging, settings=True)
    assert _lines(verify, 1) == [f"FAIL {inst.staging}: latest adopt on staging ({first.run_id}) has status"
                                 " 'failed', not 'success'"]

    resumed = [line for line in _lines(inst.promote("inventory", "apply", str(inst.file)), 0)
               if not line.startswith("  ")]
    assert resumed[:2] == [
        f"environment {inst.staging}: odoo_command {broken['environments'][inst.staging]['odoo_command']!r}"
        f" -> {inst.data['environments'][inst.staging]['odoo_command']!r}",
        f"adopt {inst.staging}: the adoption of dep_{inst.staging}_live did not succeed; resuming it"]
    assert ops_db.latest_run(inst.staging, ("adopt",)).status == "success"
    assert _lines(inst.promote("verify-staging", inst.staging, settings=True), 0)[0].startswith(
        f"PASS {inst.staging}: staging adopted by run_")

    # A live deployment whose Odoo stopped (a reboot) is started again, and that is all apply does.
    live = ops_db.active_deployment(inst.staging)
    inst.stop(live.pid)
    assert _lines(inst.promote("inventory", "apply", str(inst.file)), 0)[:2] == [
        f"deployment dep_{inst.staging}_live: not running; starting it",
        f"  started Odoo on port {live.http_port} (pid {ops_db.active_deployment(inst.staging).pid})"]
    assert h.ops_sql(ops_db, "SELECT count(*) AS n FROM ops.runs WHERE environment_id = %s",
                     (inst.staging,))[0]["n"] == 2
