"""Several production environments promoted at once through the Dagster instance `make ui` makes.

A sandbox of its own with two staging/production pairs (``promote sandbox up --environments 2``) behind one
HAProxy, a real dagster-webserver and dagster-daemon (scripts/ui.sh) on the repository's dagster.yaml (queued
runs: at most 4 at a time, 1 per ``promote/prod_env``) with a PostgreSQL storage of its own. Three promotions are
submitted together through GraphQL: one of each environment, and a second one of the first environment.

What the queue does with the second promotion of the same environment: it waits, QUEUED, until the first has
ended (the tag limit), then runs and succeeds; the environment's advisory lock never has to refuse it (it would,
with "no_concurrent_operations", only for a run started around the queue, e.g. by ``promote run``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dagster import DagsterEventType, DagsterInstance
from psycopg import sql

from promote_pipeline.cli import launch
from promote_pipeline.cli import main as cli
from promote_pipeline.cli.sandbox import PROJECT, USER, Sandbox, pair
from promote_pipeline.promotion import settings as settings_mod
from promote_pipeline.promotion.settings import PROJECT_DIR, default_server_dsn

pytestmark = pytest.mark.slow

UI_SH = PROJECT_DIR / "scripts" / "ui.sh"
FINISH_TIMEOUT = 600  # three promotions on a busy two-core machine: generous, never waited for when they end sooner


@dataclass
class ManyUI:
    box: Sandbox
    url: str
    home: Path
    pg_url: str


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManyUI]:
    tag = secrets.token_hex(3)
    root = tmp_path_factory.mktemp("many-envs")
    box = Sandbox(root=root / "sandbox", ops_database=f"promote_ops_many_{tag}", db_prefix=f"pm_{tag}",
                  pbkdf2_rounds=1000, partners=30, attachments=8, environments=2)
    database = f"dagster_many_{tag}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    home = root / "dagster_home"
    env = {**os.environ, "UI_DAGSTER_HOME": str(home), "DAGSTER_PORT": port, "DAGSTER_PG_DB": database,
           "PROMOTE_SETTINGS": str(box.settings_file), "PROMOTE_EVIDENCE_ROOT": str(root / "evidence"),
           "UI_READY_TIMEOUT": "150"}
    env.pop("PROMOTE_SECRETS_FILE", None)  # the box's settings name its own secrets file
    try:
        box.up()
        up = subprocess.run(["bash", str(UI_SH), "up"], env=env, capture_output=True, text=True, timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        yield ManyUI(box=box, url=f"http://127.0.0.1:{port}", home=home,
                     pg_url=(home / "dagster_pg_url").read_text().strip())
    finally:
        subprocess.run(["bash", str(UI_SH), "down"], env=env, capture_output=True, timeout=120)
        with psycopg.connect(default_server_dsn() + " dbname=postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        box.down()
        settings_mod.select(None)  # the next test's sandbox activates itself again


def _inputs(index: int) -> dict[str, Any]:
    staging, prod = pair(index)
    return {"project_id": PROJECT, "staging_env_id": staging, "prod_env_id": prod, "user_id": USER,
            "stability_window_seconds": 3}


def _wait_all(run_ids: list[str], url: str) -> dict[str, launch.RunReport]:
    deadline = time.monotonic() + FINISH_TIMEOUT
    while True:
        reports = {run_id: launch.report(run_id, url) for run_id in run_ids}
        if all(r.finished for r in reports.values()):
            return reports
        if time.monotonic() > deadline:
            pytest.fail(f"runs not finished after {FINISH_TIMEOUT}s: "
                        f"{ {k: r.dagster_status for k, r in reports.items()} }")
        time.sleep(1)


def test_promotions_of_different_environments_run_together_and_one_environment_queues(
        many: ManyUI, monkeypatch: pytest.MonkeyPatch) -> None:
    box = many.box
    res = box.resources()
    ops_db, router = res["ops_db"], res["router"]
    (_, prod1), (_, prod2) = pair(1), pair(2)

    # Submitted together: environment 1, environment 2, environment 1 again.
    first, other, second = (launch.submit(_inputs(i), many.url, source="test") for i in (1, 2, 1))
    reports = _wait_all([first, other, second], many.url)
    for run_id, report in reports.items():
        assert report.status == "success", (run_id, report.failed_step, report.error, report.outputs)

    # From Dagster's storage (the instance's PostgreSQL): when each run started and ended, and when it left the
    # queue.
    monkeypatch.setenv("DAGSTER_PG_URL", many.pg_url)
    with DagsterInstance.from_config(str(many.home)) as instance:
        span = {}
        for run_id in (first, other, second):
            record = instance.get_run_record_by_id(run_id)
            assert record is not None and record.start_time and record.end_time, run_id
            span[run_id] = (record.start_time, record.end_time)
        # The daemon's queue records RUN_ENQUEUED when a run joins it and RUN_STARTING when it takes it out to
        # launch its worker.
        queued = {run_id: {kind: [e.timestamp for e in instance.all_logs(run_id, of_type=kind)]
                           for kind in (DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING)}
                  for run_id in (first, other, second)}
        tags = {run_id: instance.get_run_by_id(run_id).tags for run_id in (first, other, second)}  # type: ignore[union-attr]

    assert [tags[r]["promote/prod_env"] for r in (first, other, second)] == [prod1, prod2, prod1]
    # Different environments ran at the same time: the second environment's run overlapped the first's.
    assert span[other][0] < span[first][1] and span[first][0] < span[other][1], span
    # The same environment's two runs never did: the second was in the queue while the first ran, and left it
    # only once the first had ended.
    assert span[second][0] >= span[first][1], span
    [enqueued] = queued[second][DagsterEventType.RUN_ENQUEUED]
    [dequeued] = queued[second][DagsterEventType.RUN_STARTING]
    assert enqueued < span[first][1] <= dequeued, (queued, span)

    # Each environment ends on its green, as the router itself says (not routes.json): the deployment made by the
    # last promotion of that environment.
    for prod, run_id in ((prod1, second), (prod2, other)):
        [green] = ops_db.deployments_created_by(reports[run_id].outputs["run_id"])
        assert green.environment_id == prod
        assert router.served_upstream(prod).name == green.deployment_id
        assert ops_db.active_deployment(prod).deployment_id == green.deployment_id
    # The first promotion of environment 1 had handed over to its own green, which the second then replaced.
    [earlier] = ops_db.deployments_created_by(reports[first].outputs["run_id"])
    assert earlier.environment_id == prod1 and earlier.deployment_id != router.served_upstream(prod1).name


def test_sandbox_status_lists_every_environment(many: ManyUI, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sandbox", "status", "--json", "--dir", str(many.box.root)]) == 0
    out = capsys.readouterr().out
    info = json.loads(out)
    assert [(e["staging"], e["production"]) for e in info["environments"]] == [pair(1), pair(2)]
    # The secrets file's path and key names, never a value.
    kept = json.loads(Path(info["secrets_file"]).read_text())
    assert info["secret_refs"] == sorted(kept) and kept
    assert not [key for key, value in kept.items() if str(value) in out], "a secret's value in status --json"
    urls = {e["router_url"] for e in info["environments"]}
    assert len(urls) == 2  # an entry point of its own each, on the one router
    for env in info["environments"]:
        assert env["serving"]["deployment"] == env["recorded"]["deployment"] is not None, env
    # The top level stays the first environment's, as with one.
    assert info["serving"] == info["environments"][0]["serving"]
    assert cli.main(["sandbox", "status", "--dir", str(many.box.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [pair(1)[1], pair(2)[1]]


def test_sandbox_down_removes_every_environment(many: ManyUI) -> None:
    box = many.box
    res = box.resources()
    rows = res["ops_db"].all_deployments()
    assert {r.environment_id for r in rows} == {*pair(1), *pair(2)}
    pids = [r.pid for r in rows if r.pid]
    databases = [r.db_name for r in rows] + [box.settings().ops_database]
    assert cli.main(["sandbox", "down", "--dir", str(box.root)]) == 0
    assert not box.root.exists() and not res["router"].is_running()
    for pid in pids:  # each stand-in exited (a pid the system gave to another since is not one)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        assert b"odoo_standin" not in cmdline, pid
    with psycopg.connect(default_server_dsn() + " dbname=postgres") as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (databases,)).fetchall()
    assert left == []


@pytest.mark.unit
@pytest.mark.parametrize("value", ["0", "17", "x", "2.5", "-1", ""])
def test_a_bad_environments_count_is_refused_before_anything_is_made(
        value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "box"
    assert cli.main(["sandbox", "up", "--dir", str(folder), "--environments", value]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("sandbox refused: --environments: must be a whole number from 1 to 16 (got ")
    assert not folder.exists()
