"""A planted secret never reaches evidence, Dagster's event log, the ops database or process logs,
and redaction never hides the evidence's own verdicts.

The sandbox generates its credentials: a password inside the PostgreSQL DSN every tool uses,
and the Odoo admin password the login smoke test sends. Both are planted in every code path a
run takes, on success and on rollback; afterwards every byte the run left is searched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dagster import DagsterInstance
from dagster._serdes import serialize_value

from promote_pipeline.cli.runner import run_promotion
from promote_pipeline.cli.sandbox import ADMIN_REF, DSN_REF, Sandbox
from promote_pipeline.odoo.credentials import is_credential
from promote_pipeline.promotion.models import PromotionOutcome
from resources.redaction import REDACTED, is_secret_key

pytestmark = pytest.mark.slow


def _planted(box: Sandbox) -> list[str]:
    values = json.loads(box.secrets_file.read_text())
    dsn_password = psycopg.conninfo.conninfo_to_dict(values[DSN_REF])["password"]
    return [str(dsn_password), values[ADMIN_REF]]


def _files_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()
                     and p.suffix in (".json", ".md", ".txt", ".log", ".cfg", ".conf"))


def test_planted_secrets_never_leak(haproxy_box: Sandbox, h: Any, tmp_path: Path) -> None:
    planted = _planted(haproxy_box)
    assert all(len(s) > 10 for s in planted)
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        code_ok, ok, _ = run_promotion(h.demo_inputs(), quiet=True, instance=instance)
        h.write_fault(haproxy_box, refuse_login=True)
        try:
            code_bad, bad, _ = run_promotion(h.demo_inputs(), quiet=True, instance=instance)
        finally:
            h.clear_faults(haproxy_box)
        assert (code_ok, code_bad) == (0, 1) and ok and bad
        event_log = "\n".join(serialize_value(record) for run in instance.get_runs()
                              for record in instance.all_logs(run.run_id))
    ops_db = haproxy_box.resources()["ops_db"]
    ops_text = json.dumps([h.ops_sql(ops_db, f"SELECT * FROM ops.{t}")  # noqa: S608 - fixed names
                           for t in ("runs", "run_events", "rejections", "artifacts", "environments",
                                     "deployments", "scheduled_tasks")], default=str)
    places = {
        "evidence": _files_text(h.evidence(ok)) + _files_text(h.evidence(bad)),
        "dagster event log": event_log,
        "ops database": ops_text,
        "process logs and router config": _files_text(Path(haproxy_box.settings().run_dir))
        + _files_text(Path(haproxy_box.settings().router_dir)),
        "artifact contracts": "\n".join(p.read_text() for p in Path(haproxy_box.settings().artifact_root)
                                        .rglob("artifact.json")),
    }
    assert "smoke_test_green" in event_log  # the log really holds the runs
    for where, text in places.items():
        for secret in planted:
            assert secret not in text, f"a planted secret reached the {where}"


def _leaves(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every (key, value) of a JSON document whose value is not a container; a list item takes its list's key."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, str(k))]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v, key)]
    return [(key, value)]


def _verdicts(folder: Path) -> dict[str, list[Any]]:
    """{file: the values of its ``passed`` and ``triggered`` keys, wherever they are}."""
    return {p.name: [v for k, v in _leaves(json.loads(p.read_text())) if k in ("passed", "triggered")]
            for p in sorted(folder.glob("*.json"))}


def test_evidence_keeps_its_verdicts_and_no_secret(haproxy_box: Sandbox, h: Any) -> None:
    planted = _planted(haproxy_box)
    code_ok, ok, _ = h.promote()
    h.write_fault(haproxy_box, refuse_login=True)
    try:
        code_bad, bad, _ = h.promote()
    finally:
        h.clear_faults(haproxy_box)
    assert (code_ok, code_bad) == (0, 1) and isinstance(ok, PromotionOutcome) and isinstance(bad, PromotionOutcome)
    for outcome in (ok, bad):
        folder = h.evidence(outcome)
        verdicts = _verdicts(folder)
        assert {"smoke_tests.json", "inputs.json", "rollback.json"} <= {f for f, v in verdicts.items() if v}
        for name, values in verdicts.items():
            assert all(isinstance(v, bool) for v in values), f"{name} hides a verdict: {values}"
        for path in folder.glob("*.json"):  # whatever is blanked sits under a secret's exact name
            blanked = {k for k, v in _leaves(json.loads(path.read_text())) if v == REDACTED}
            assert all(is_secret_key(k) or is_credential(k) for k in blanked), f"{path.name} blanks {blanked}"
        assert not [s for s in planted if s in _files_text(folder)]

    def read(outcome: PromotionOutcome, name: str) -> dict[str, Any]:
        data = json.loads((h.evidence(outcome) / name).read_text())
        assert isinstance(data, dict)
        return data

    for outcome in (ok, bad):
        checks = [c["passed"] for c in read(outcome, "inputs.json")["preflight"]]
        assert checks and all(c is True for c in checks)
    smoke_ok, smoke_bad = read(ok, "smoke_tests.json"), read(bad, "smoke_tests.json")
    assert smoke_ok["passed"] is True and all(r["passed"] is True for r in smoke_ok["results"])
    assert smoke_bad["passed"] is False
    assert {r["name"]: r["passed"] for r in smoke_bad["results"]}["user_authentication"] is False
    assert "login 'admin' on database" in {r["name"]: r["detail"] for r in smoke_ok["results"]}["user_authentication"]
    assert read(ok, "stability_metrics.json")["passed"] is True
    assert read(ok, "rollback.json")["triggered"] is False and read(bad, "rollback.json")["triggered"] is True
