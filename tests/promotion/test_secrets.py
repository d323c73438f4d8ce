"""A planted secret never reaches evidence, Dagster's event log, the ops database or process logs.

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
