"""No production write lost without a decision: the drift gate, ``--accept-drift``, the last check before the
cutover, and ``--freeze-blue`` (blue read-only from the last check to the cutover, writable again on rollback:
the run's own, the safety net's for a worker that died, and ``promote abort``'s).

Against the sandbox: real PostgreSQL, router and stand-in Odoo processes; writes on production are made with a
real XML-RPC client (``xmlrpc.client``) as an integration would, or in SQL where the test needs exact rows.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance, build_sensor_context

from promote_pipeline.cli.exits import EXIT_REJECTED
from promote_pipeline.cli.sandbox import ADMIN_REF, DSN_REF, PROD, PROJECT, STAGING, USER, Sandbox
from promote_pipeline.defs.in_process import execute
from promote_pipeline.defs.sensors import dead_runs, detect_dead_promotions
from promote_pipeline.promotion import settings
from promote_pipeline.promotion.services import upstream
from resources import secrets

pytestmark = pytest.mark.slow


def _blue(box: Sandbox) -> Any:
    return box.resources()["ops_db"].active_deployment(PROD)


def _sql(box: Sandbox, db: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with box.resources()["odoo_host"].connect(DSN_REF, db) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def _can_insert(box: Sandbox, dep: Any, relation: str, privilege: str = "INSERT") -> bool:
    """Whether ``dep``'s own role (the one its Odoo logs in as) holds ``privilege`` on ``relation``."""
    function = "has_sequence_privilege" if relation.endswith("_seq") else "has_table_privilege"
    return bool(_sql(box, dep.db_name, f"SELECT {function}(%s, %s, %s)", (dep.db_role, relation, privilege))[0][0])


def _ids(ranges: str) -> set[int]:
    """``"3-4, 9"`` -> {3, 4, 9} (the report's id ranges; only the listed ones, see ``_named``)."""
    out: set[int] = set()
    for part in ranges.split(" … ")[0].split(", "):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


def _named(table: dict[str, Any], ids: list[int]) -> bool:
    """Whether a table's report names every id of ``ids``: listed, or among the rows past the listed ones that
    ``… (N more, up to id M)`` counts (the report lists at most 200 ids; a slow run lets a writer make more)."""
    listed = _ids(table["ids"])
    more = re.search(r"… \((\d+) more, up to id (\d+)\)", table["ids"])
    beyond = {i for i in ids if i not in listed}
    if not beyond:
        return True
    return more is not None and all(max(listed) < i <= int(more.group(2)) for i in beyond) \
        and len(beyond) <= int(more.group(1))


class Writer:
    """Creates a contact on one deployment over XML-RPC, again and again, and keeps every answer: the id it
    got, or the fault it was refused with."""

    def __init__(self, url: str, db: str) -> None:
        self.url, self.db = url, db
        self.created: list[int] = []
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def once(self) -> int:
        models = xmlrpc.client.ServerProxy(f"{self.url}/xmlrpc/2/object")
        return int(models.execute_kw(self.db, 2, secrets.resolve(ADMIN_REF), "res.partner", "create",
                                     [{"name": "written on production"}]))

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                self.created.append(self.once())
            except xmlrpc.client.Fault as exc:
                self.refused.append(exc.faultString.strip().splitlines()[-1])
            except OSError as exc:  # blue's process stopped: nothing was written
                self.refused.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.05)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def _evidence(outcome: Any, name: str) -> Any:
    path = Path(outcome.evidence_dir) / name
    return json.loads(path.read_text()) if name.endswith(".json") else path.read_text()


def test_gate_refuses_a_production_write_then_accept_drift_names_what_is_lost(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    code, _, message = h.promote(accept_drift=True)  # whatever earlier tests wrote on production: a clean start
    assert code == 0, message
    blue = _blue(box)
    ops_db = box.resources()["ops_db"]
    _sql(box, blue.db_name, "UPDATE res_partner SET name = name || ' (edited on production)',"
                            " write_date = now() AT TIME ZONE 'UTC' WHERE id IN (3, 4)")
    created = _sql(box, blue.db_name, "INSERT INTO res_partner (name, company_id) VALUES ('new on production', 1)"
                                      " RETURNING id")[0][0]
    runs_before = h.ops_sql(ops_db, "SELECT count(*) AS n FROM ops.runs")[0]["n"]
    code, outcome, message = h.promote()
    assert code == EXIT_REJECTED and outcome is None
    assert message is not None and "\n" not in message
    assert "no_production_drift" in message and "res_partner 3" in message and "--accept-drift" in message
    # Nothing was created: no run, no deployment; the refusal is recorded like any precondition's.
    assert h.ops_sql(ops_db, "SELECT count(*) AS n FROM ops.runs")[0]["n"] == runs_before
    assert _blue(box).deployment_id == blue.deployment_id
    rejection = h.ops_sql(ops_db, "SELECT check_name, message FROM ops.rejections"
                                  " ORDER BY rejection_id DESC LIMIT 1")[0]
    assert rejection["check_name"] == "no_production_drift" and "res_partner 3" in rejection["message"]

    code, outcome, message = h.promote(accept_drift=True)
    assert code == 0, message
    cut = _evidence(outcome, "cutover.json")
    lost = cut["production_writes_not_on_green"]
    assert lost["tables"]["res_partner"]["rows"] == 3
    assert _ids(lost["tables"]["res_partner"]["ids"]) == {3, 4, created}
    assert lost["in_words"].startswith("3 row(s): res_partner 3")
    assert cut["blue_freeze"] == {"frozen": False}
    summary = _evidence(outcome, "promotion_summary.md")
    assert "## Production writes green does not contain" in summary
    assert f"| res_partner | 3 | {lost['tables']['res_partner']['ids']} |" in summary
    assert "{'res_partner'" not in summary  # a table, not a Python dict
    inputs = _evidence(outcome, "inputs.json")
    gate = {c["check"]: c for c in inputs["preflight"]}["no_production_drift"]
    assert gate["passed"] and "accepted" in gate["message"]


def test_repeated_promotions_show_no_false_drift(haproxy_box: Sandbox, h: Any) -> None:
    """Staging's own contacts (written on staging after its copy) reach production with the first promotion;
    the second must not count them as production's writes."""
    first_code, first, message = h.promote(accept_drift=True)  # whatever earlier tests left on production
    assert first_code == 0, message
    code, second, message = h.promote()  # no flag: the gate must pass on its own
    assert code == 0, message
    drift = _evidence(second, "staging_snapshot.json")["production_drift"]
    assert drift["known"] is True and drift["total"] == 0 and drift["tables"] == {}
    assert drift["live_run_id"] == first.run_id and drift["since"] == drift["live_cutover_at"]
    staging_contacts = _sql(box := haproxy_box, _blue(box).db_name,
                            "SELECT count(*) FROM res_partner WHERE name LIKE %s", ("Staging contact %",))[0][0]
    assert staging_contacts >= 25  # they are on production, and were not counted as drift
    assert _evidence(second, "cutover.json")["production_writes_not_on_green"]["in_words"] == "none"
    assert "None: no row written on production" in _evidence(second, "promotion_summary.md")


def test_unknown_copy_time_requires_accept_drift(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    ops_db = box.resources()["ops_db"]
    blue = _blue(box)
    copies = h.ops_sql(ops_db, "SELECT run_id FROM ops.runs WHERE environment_id = %s AND operation_type = 'restore'"
                               " AND metadata->>'source_environment_id' = %s", (STAGING, PROD))
    created_by = h.ops_sql(ops_db, "SELECT created_by_run FROM ops.deployments WHERE deployment_id = %s",
                           (blue.deployment_id,))[0]["created_by_run"]
    # Forget where staging's data came from: no copy recorded, production not served by a promoted green.
    h.ops_sql(ops_db, "UPDATE ops.runs SET metadata = jsonb_set(metadata, '{source_environment_id}', '\"elsewhere\"')"
                      " WHERE run_id = ANY(%s)", ([r["run_id"] for r in copies],))
    h.ops_sql(ops_db, "UPDATE ops.deployments SET created_by_run = NULL WHERE deployment_id = %s",
              (blue.deployment_id,))
    try:
        code, outcome, message = h.promote()
        assert code == EXIT_REJECTED and outcome is None
        assert message is not None and "no_production_drift" in message and "unknown" in message
        assert "--accept-drift" in message
    finally:
        h.ops_sql(ops_db, "UPDATE ops.runs SET metadata = jsonb_set(metadata, '{source_environment_id}', %s)"
                          " WHERE run_id = ANY(%s)", (json.dumps(PROD), [r["run_id"] for r in copies]))
        h.ops_sql(ops_db, "UPDATE ops.deployments SET created_by_run = %s WHERE deployment_id = %s",
                  (created_by, blue.deployment_id))


def test_a_write_after_the_gate_fails_the_cutover_unless_accepted(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    code, _, message = h.promote(accept_drift=True)  # a clean start
    assert code == 0, message
    blue = _blue(box)
    ops_db = box.resources()["ops_db"]
    wrote = threading.Event()

    def write_once_the_run_started() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not ops_db.running_promotion(PROD):
            time.sleep(0.05)
        _sql(box, blue.db_name, "INSERT INTO res_partner (name, company_id) VALUES ('written mid-promotion', 1)")
        wrote.set()

    writer = threading.Thread(target=write_once_the_run_started, daemon=True)
    writer.start()
    code, outcome, message = h.promote(freeze_blue=True)
    writer.join(timeout=300)
    assert wrote.is_set()
    assert code == 1 and outcome is not None and outcome.status == "rolled_back", message
    rollback = _evidence(outcome, "rollback.json")
    assert rollback["failed_step"] == "cutover" and "no_production_drift at cutover" in rollback["reason"]
    assert "res_partner 1" in rollback["reason"]
    assert _blue(box).deployment_id == blue.deployment_id
    # Frozen for the last check, writable again now that the run failed with blue serving.
    assert rollback["blue_freeze"]["frozen"] is True and rollback["blue_freeze"]["thawed_at"]
    assert Writer(f"http://127.0.0.1:{blue.http_port}", blue.served_db).once() > 0
    code, _, message = h.promote(accept_drift=True)  # leave production without drift for the other tests
    assert code == 0, message


def test_freeze_blue_refuses_writes_and_loses_none(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    blue = _blue(box)
    with Writer(f"http://127.0.0.1:{blue.http_port}", blue.served_db) as writer:
        code, outcome, message = h.promote(freeze_blue=True, accept_drift=True)
        # Blue stays read-only after the cutover: still refusing while it stands by for a rollback.
        refused_before = len(writer.refused)
        deadline = time.monotonic() + 120
        while len(writer.refused) == refused_before and time.monotonic() < deadline:
            time.sleep(0.1)
    assert code == 0, message
    assert writer.created, "the writer never got a write in before the freeze"
    # Refused by the revoked privilege: the stand-in, like Odoo 18, begins its transactions READ WRITE, so the
    # database's read-only default alone would have let these writes in.
    assert writer.refused and any("permission denied for table res_partner" in r for r in writer.refused), \
        writer.refused
    cut = _evidence(outcome, "cutover.json")
    freeze = cut["blue_freeze"]
    assert freeze["frozen"] is True and freeze["read_only_seconds"] >= 0 and freeze["relations_revoked"] > 0
    assert not _can_insert(box, blue, "res_partner"), "blue stands by frozen after the cutover"
    # Every write blue accepted is named as lost (green, made from staging, holds none of them): none silently.
    lost = cut["production_writes_not_on_green"]["tables"]["res_partner"]
    assert _named(lost, writer.created), (lost, writer.created)
    # Nothing was accepted after the freeze: the last check and the count after the switch agree.
    assert cut["last_drift_check"]["tables"] == cut["production_writes_not_on_green"]["tables"]
    green = _blue(box)
    on_green = {r[0] for r in _sql(box, green.db_name, "SELECT id FROM res_partner WHERE name = %s",
                                   ("written on production",))}
    assert not on_green & set(writer.created)
    assert f"Blue frozen read-only at {freeze['frozen_at']}" in _evidence(outcome, "promotion_summary.md")


def test_rollback_after_freezing_leaves_blue_writable(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    blue = _blue(box)
    fault_path = box.root / "faults" / f"{PROD}.json"
    not_before = time.time()
    try:
        with h.after_cutover(box, lambda: fault_path.write_text(json.dumps({"not_before": not_before,
                                                                            "error_rate": 0.5}))):
            code, outcome, message = h.promote(freeze_blue=True, accept_drift=True, stability_window_seconds=8)
    finally:
        h.clear_faults(box)
    assert code == 1 and outcome is not None and outcome.status == "rolled_back", message
    rollback = _evidence(outcome, "rollback.json")
    assert rollback["failed_step"] == "monitor_stability"
    assert rollback["blue_freeze"]["frozen"] is True and rollback["blue_freeze"]["thawed_at"]
    assert _blue(box).deployment_id == blue.deployment_id
    assert _sql(box, blue.db_name, "SHOW default_transaction_read_only")[0][0] == "off"
    assert _can_insert(box, blue, "res_partner") and _can_insert(box, blue, "res_partner_id_seq", "UPDATE")
    new_id = Writer(f"http://127.0.0.1:{blue.http_port}", blue.served_db).once()
    assert _sql(box, blue.db_name, "SELECT name FROM res_partner WHERE id = %s", (new_id,))[0][0] == \
        "written on production"
    code, _, message = h.promote(accept_drift=True)  # leave production without drift for the other tests
    assert code == 0, message


def test_logins_on_production_are_not_drift(haproxy_box: Sandbox, h: Any) -> None:
    """Odoo writes a res_users_log row on every successful login (res.users._login -> _update_last_login), web
    and XML-RPC alike: a person's or an integration's login on production is Odoo's bookkeeping, not a write green
    would lose, so the gate lets the next promotion through without accept_drift."""
    box = haproxy_box
    code, _, message = h.promote(accept_drift=True)  # whatever earlier tests wrote on production: a clean start
    assert code == 0, message
    blue = _blue(box)
    url, password = f"http://127.0.0.1:{blue.http_port}", secrets.resolve(ADMIN_REF)
    logged = _sql(box, blue.db_name, "SELECT count(*) FROM res_users_log WHERE create_uid = 2")[0][0]
    assert xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/common").login(blue.served_db, "admin", password) == 2
    with httpx.Client(timeout=60) as client:
        body = client.post(f"{url}/web/session/authenticate", json={"jsonrpc": "2.0", "method": "call", "id": 1,
                           "params": {"db": blue.served_db, "login": "admin", "password": password}}).json()
    assert body["result"]["uid"] == 2, body
    # Both logins wrote their row on production (so the gate below really has a login's write to ignore).
    assert _sql(box, blue.db_name, "SELECT count(*) FROM res_users_log WHERE create_uid = 2")[0][0] == logged + 2

    code, outcome, message = h.promote()  # no flag: the gate must pass on its own
    assert code == 0, message
    drift = _evidence(outcome, "staging_snapshot.json")["production_drift"]
    assert drift["known"] is True and drift["total"] == 0 and drift["tables"] == {}, drift
    assert _evidence(outcome, "cutover.json")["production_writes_not_on_green"]["in_words"] == "none"


def _back_on_writable_blue(box: Sandbox, blue: Any, run_id: str) -> None:
    """Traffic on blue (the router's word), the thaw in rollback.json, and a real write through the public entry
    point landing on blue."""
    res = box.resources()
    assert res["router"].served_upstream(PROD).name == blue.deployment_id
    row = res["ops_db"].run(run_id)
    assert row is not None and row.status == "rolled_back" and row.evidence_dir
    freeze = json.loads((Path(row.evidence_dir) / "rollback.json").read_text())["blue_freeze"]
    assert freeze["frozen"] is True and freeze["thawed_at"], freeze
    new_id = Writer(res["router"].state(PROD).active_url, blue.served_db).once()
    assert _sql(box, blue.db_name, "SELECT name FROM res_partner WHERE id = %s", (new_id,))[0][0] == \
        "written on production"


def test_a_worker_killed_while_blue_is_frozen_is_rolled_back_by_the_safety_net_and_blue_thawed(
        haproxy_box: Sandbox, h: Any, tmp_path: Path) -> None:
    """The worker that froze blue is SIGKILLed in the stability window: nothing in it will thaw blue. The dead-run
    sensor's rollback, evaluated and executed as the daemon would, finds the freeze in the ops database (recorded
    before it was made) and grants blue's writes back as it puts traffic on blue."""
    box = haproxy_box
    ops_db, router = box.resources()["ops_db"], box.resources()["router"]
    blue = _blue(box)
    log = tmp_path / "promote-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "promote_pipeline", "run", "--project", PROJECT, "--staging",
                                 STAGING, "--prod", PROD, "--user", USER, "--freeze-blue", "--accept-drift",
                                 "--stability-seconds", "900"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        row = None
        while row is None and proc.poll() is None and time.monotonic() < deadline:
            row = ops_db.running_promotion_after_cutover()
            time.sleep(0 if row else 0.1)
        assert row is not None, f"the promotion never cut over: {log.read_text()[-3000:]}"
        [green] = ops_db.deployments_created_by(row.run_id)
        assert router.serves(PROD, upstream(green, "green")) and not _can_insert(box, blue, "res_partner")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    deadline = time.monotonic() + 120  # PostgreSQL ends the dead session's lock when it sees the socket close
    while row.run_id not in [r.run_id for r in dead_runs(ops_db)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _can_insert(box, blue, "res_partner")  # still frozen: only the safety net is left to thaw it
    with DagsterInstance.ephemeral() as instance:
        # A cursor that first saw the run long ago: its grace period is over.
        requests = detect_dead_promotions(build_sensor_context(
            instance=instance, cursor=json.dumps({row.run_id: 0}), resources={"ops_db": ops_db}))
        assert isinstance(requests, list) and [r.run_key for r in requests] == [f"dead:{row.run_id}"], requests
        result = execute("rollback_promotion", requests[0].run_config, requests[0].tags, settings.load(), instance)
        assert result.success and result.output_for_node("roll_back_promotion") == {
            "action": "completed_dead_run", "failed_step": "monitor_stability", "status": "rolled_back"}
    _back_on_writable_blue(box, blue, row.run_id)
    code, _, message = h.promote(accept_drift=True)  # leave production without drift for the other tests
    assert code == 0, message


def test_promote_abort_of_a_frozen_run_leaves_blue_serving_and_writable(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    ops_db = box.resources()["ops_db"]
    blue = _blue(box)
    aborts: list[subprocess.CompletedProcess[str]] = []

    def abort() -> None:  # from another process, as a person would, once blue is frozen and green serves
        row = ops_db.running_promotion_after_cutover()
        assert row is not None and not _can_insert(box, blue, "res_partner")
        aborts.append(subprocess.run([sys.executable, "-m", "promote_pipeline", "abort", row.run_id, "--user", USER,
                                      "--reason", "test"], capture_output=True, text=True, timeout=300))

    with h.after_cutover(box, abort):  # the window is long: the abort, not its end, must be what stops the run
        code, outcome, message = h.promote(freeze_blue=True, accept_drift=True, stability_window_seconds=600)
    assert code == 1 and outcome is not None and outcome.status == "rolled_back", message
    assert aborts[0].returncode == 0, (aborts[0].stdout, aborts[0].stderr)
    assert aborts[0].stdout.strip() == f"rolled_back: run {outcome.run_id} aborted by {USER}"
    assert _evidence(outcome, "rollback.json")["failed_step"] == "monitor_stability"
    _back_on_writable_blue(box, blue, outcome.run_id)
    code, _, message = h.promote(accept_drift=True)  # leave production without drift for the other tests
    assert code == 0, message
