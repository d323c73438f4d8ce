"""Odoo-aware promotion against real databases: live settings carried over from a neutralized staging,
crons and mail fenced to one side, writes on green reported and recoverable after a rollback,
compatibility preflight, module differences and production drift."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.cli.main import main as promote_cli
from promote_pipeline.cli.sandbox import DSN_REF, PROD, STAGING, Sandbox
from promote_pipeline.odoo import carry_over as live_settings

pytestmark = pytest.mark.slow


def _db(box: Sandbox, env_id: str) -> str:
    return str(box.resources()["ops_db"].active_deployment(env_id).db_name)


def _sql(box: Sandbox, db: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with box.resources()["odoo_host"].connect(DSN_REF, db) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def _flags(box: Sandbox, db: str) -> tuple[dict[str, bool], dict[str, bool]]:
    with box.resources()["odoo_host"].connect(DSN_REF, db) as conn:
        return ({k: v[1] for k, v in live_settings.crons(conn).items()}, live_settings.mail_servers(conn))


def test_neutralized_staging_becomes_a_live_production_with_one_side_running_crons(haproxy_box: Sandbox,
                                                                                  h: Any) -> None:
    box = haproxy_box
    staging_db, blue_db = _db(box, STAGING), _db(box, PROD)
    assert _sql(box, staging_db, "SELECT value FROM ir_config_parameter WHERE key = 'database.is_neutralized'")
    blue_crons, blue_mail = _flags(box, blue_db)
    blue_url = _sql(box, blue_db, "SELECT value FROM ir_config_parameter WHERE key = 'web.base.url'")[0][0]
    sides: list[tuple[int, int]] = []

    def count_active_sides() -> None:
        green_db = box.status()["serving"]["database"]
        for _ in range(5):
            sides.append((
                _sql(box, blue_db, "SELECT count(*) FROM ir_cron WHERE active")[0][0],
                _sql(box, green_db, "SELECT count(*) FROM ir_cron WHERE active")[0][0]))
            time.sleep(0.2)

    with h.after_cutover(box, count_active_sides):
        code, outcome, message = h.promote(stability_window_seconds=3)
    assert code == 0, message
    green_db = box.status()["serving"]["database"]
    assert _flags(box, green_db) == (blue_crons, blue_mail)
    assert _sql(box, green_db, "SELECT value FROM ir_config_parameter WHERE key = 'web.base.url'")[0][0] == blue_url
    assert not _sql(box, green_db, "SELECT 1 FROM ir_config_parameter WHERE key = 'database.is_neutralized'")
    assert _sql(box, green_db, "SELECT state FROM payment_provider WHERE code = 'stripe'")[0][0] == "enabled"
    assert sides and all((b == 0) != (g == 0) for b, g in sides), sides  # exactly one side runs crons
    assert _sql(box, blue_db, "SELECT count(*) FROM ir_cron WHERE active")[0][0] == 0
    restore = json.loads((h.evidence(outcome) / "green_restore.json").read_text())
    keys = {c.get("key") for c in restore["carry_over"]["changes"]}
    assert {"web.base.url", "database.is_neutralized"} <= keys
    cut = json.loads((h.evidence(outcome) / "cutover.json").read_text())
    assert cut["fence"]["active_after"]["blue"]["active_crons"] == 0


def test_writes_on_green_are_reported_on_rollback_and_recovered(haproxy_box: Sandbox, h: Any, tmp_path: Path) -> None:
    box = haproxy_box
    blue_db = _db(box, PROD)
    blue_flags = _flags(box, blue_db)
    not_before = time.time()

    def write_then_fail() -> None:
        green_db = box.status()["serving"]["database"]
        _sql(box, green_db, "INSERT INTO res_partner (name, email, company_id) SELECT 'Order ' || n,"
                            " 'buyer' || n || '@example.com', 1 FROM generate_series(1, 3) AS n")
        _sql(box, green_db, "UPDATE res_partner SET name = name || ' (edited)', write_date = now() AT TIME ZONE 'UTC'"
                            " WHERE id IN (1, 2)")
        _sql(box, green_db, "UPDATE res_users SET write_date = now() AT TIME ZONE 'UTC' WHERE login = 'admin'")
        h.write_fault(box, error_rate=0.5)
        (box.root / "faults" / f"{PROD}.json").write_text(json.dumps({"not_before": not_before, "error_rate": 0.5}))

    try:
        with h.after_cutover(box, write_then_fail):
            code, outcome, _ = h.promote(stability_window_seconds=8)
    finally:
        h.clear_faults(box)
    assert code == 1 and outcome.status == "rolled_back"
    rollback = json.loads((h.evidence(outcome) / "rollback.json").read_text())
    assert rollback["writes_on_green"]["res_partner"] == {"created": 3, "changed": 2}
    assert rollback["writes_on_green"]["res_users"] == {"created": 0, "changed": 1}
    assert "row(s) were written on green" in (h.evidence(outcome) / "promotion_summary.md").read_text()
    assert _flags(box, blue_db) == blue_flags  # blue's crons and mail servers back as they were
    assert promote_cli(["recover", outcome.run_id, "--out", str(tmp_path)]) == 0
    with (tmp_path / "res_partner.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and sum(r["name"].startswith("Order ") for r in rows) == 3
    with (tmp_path / "res_users.csv").open() as fh:
        users = list(csv.DictReader(fh))
    assert users[0]["login"] == "admin" and users[0]["password"] == "[REDACTED]"


def test_carry_over_off_keeps_the_artifacts_settings_and_says_so(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    code, outcome, message = h.promote(carry_over_settings=False)
    assert code == 0, message
    green_db = box.status()["serving"]["database"]
    assert _sql(box, green_db, "SELECT value FROM ir_config_parameter WHERE key = 'web.base.url'")[0][0] == \
        "http://staging.localhost"
    assert "CARRY-OVER WAS TURNED OFF" in (h.evidence(outcome) / "promotion_summary.md").read_text()
    # Put the sandbox back on a normal production for the other tests.
    code, _, message = h.promote()
    assert code == 0, message


def test_module_difference_and_production_drift_are_reported(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    staging_db, blue_db = _db(box, STAGING), _db(box, PROD)
    _sql(box, staging_db, "UPDATE ir_module_module SET latest_version = '17.0.1.9' WHERE name = 'sale'")
    _sql(box, blue_db, "UPDATE res_partner SET write_date = now() AT TIME ZONE 'UTC' + interval '1 second'"
                       " WHERE id IN (3, 4)")
    try:
        code, outcome, message = h.promote(accept_drift=True)  # the writes on blue are production drift
    finally:
        _sql(box, staging_db, "UPDATE ir_module_module SET latest_version = '17.0.1.0' WHERE name = 'sale'")
    assert code == 0, message
    snap = json.loads((h.evidence(outcome) / "staging_snapshot.json").read_text())
    assert snap["module_diff"]["version_changed"]["sale"]["green"] == "17.0.1.9"
    assert snap["production_drift"]["known"] is True
    assert snap["production_drift"]["tables"]["res_partner"]["rows"] >= 2


@pytest.mark.parametrize("query,undo,check", [
    ("UPDATE ir_module_module SET latest_version = '18.0.1.3' WHERE name = 'base'",
     "UPDATE ir_module_module SET latest_version = '17.0.1.3' WHERE name = 'base'", "same_odoo_version"),
    ("UPDATE ir_module_module SET state = 'to upgrade' WHERE name = 'sale'",
     "UPDATE ir_module_module SET state = 'installed' WHERE name = 'sale'", "no_pending_modules"),
])
def test_compatibility_preflight_refuses(haproxy_box: Sandbox, h: Any, query: str, undo: str, check: str) -> None:
    staging_db = _db(haproxy_box, STAGING)
    before = _sql(haproxy_box, staging_db, "SELECT latest_version FROM ir_module_module WHERE name = 'base'")[0][0]
    _sql(haproxy_box, staging_db, query)
    try:
        code, outcome, message = h.promote()
    finally:
        _sql(haproxy_box, staging_db, undo.replace("17.0.1.3", before))
    assert code == 2 and outcome is None and message and message.startswith(f"promotion rejected: {check}:")


