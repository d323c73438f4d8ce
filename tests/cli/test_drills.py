"""Every drill ends in the safe state; the worker-kill drill goes through a real webserver and daemon."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from promote_pipeline.cli import sandbox as sbx
from promote_pipeline.cli.drills import Drill, DrillError
from promote_pipeline.cli.sandbox import Sandbox
from promote_pipeline.promotion import settings
from promote_pipeline.promotion.settings import PROJECT_DIR, default_server_dsn

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fault", ["smoke-fail", "stability-5xx", "green-crash", "router-fail", "corrupt-artifact",
                                   "disk-full"])
def test_drill_ends_safe(haproxy_box: Sandbox, fault: str) -> None:
    report = Drill(haproxy_box, fault, stability_seconds=4, say=lambda _: None).run()
    assert report["safe"], report
    assert report["checks"]["router_on_blue"] is True  # asked of HAProxy's runtime API (Sandbox.status)
    if fault in ("stability-5xx", "green-crash", "corrupt-artifact", "db-restart"):
        assert report["checks"]["fault_injected"] is True, report  # the fault really happened
    if fault == "disk-full":
        if os.geteuid() != 0:
            pytest.skip(f"the drill could not mount a real full disk: {report['full_disk']}")
        assert report["full_disk"].startswith("tmpfs at ") and report["full_disk"].endswith(" 0 bytes free"), report
        assert "sufficient_disk_space" in report["message"], report
    else:
        assert report["status"] == "rolled_back", report
        # Recorded, not raced: how fast traffic is back is measured (README), not bounded on a loaded machine.
        assert isinstance(report["detection_to_blue_ms"], int) and report["detection_to_blue_ms"] >= 0


def test_db_restart_refuses_a_server_the_sandbox_did_not_start(haproxy_box: Sandbox) -> None:
    """The suite's sandboxes live on the machine's PostgreSQL, shared with everything else: never restarted."""
    with pytest.raises(DrillError, match="uses a server it did not start"):
        Drill(haproxy_box, "db-restart", say=lambda _: None).run()
    with pytest.raises(sbx.NotOurServer, match="did not start the server it uses"):
        sbx.restart_postgres(haproxy_box.root)


@pytest.fixture
def private_pg_box(tmp_path: Path) -> Iterator[Sandbox]:
    """A sandbox whose databases live on a PostgreSQL cluster it started itself (initdb, pg_ctl, a free port)."""
    if not shutil.which("runuser") and os.geteuid() == 0:
        pytest.skip("runuser is needed to run a private cluster as the postgres user")
    tag = secrets.token_hex(3)
    box = Sandbox(root=tmp_path / "box", private_postgres=True, ops_database=f"promote_ops_pg_{tag}",
                  db_prefix=f"ppg_{tag}", pbkdf2_rounds=1000, partners=30, attachments=8)
    try:
        box.up()
        yield box
    finally:
        box.down()
        settings.select(None)  # the session's sandboxes activate themselves again when asked for


def test_db_restart_drill_restarts_only_its_own_cluster_and_ends_safe(private_pg_box: Sandbox) -> None:
    own = sbx.private_server_dsn(private_pg_box.root)
    assert own is not None and own != default_server_dsn()
    with psycopg.connect(default_server_dsn() + " dbname=postgres") as conn:
        shared_started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    with psycopg.connect(own + " dbname=postgres") as conn:
        own_started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()

    report = Drill(private_pg_box, "db-restart", stability_seconds=4, say=lambda _: None).run()
    assert report["safe"], report
    assert report["status"] == "rolled_back", report
    assert report["postgres_restart_seconds"] > 0 and report["checks"]["fault_injected"] is True, report

    with psycopg.connect(own + " dbname=postgres") as conn:
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone() != own_started  # it was restarted
    with psycopg.connect(default_server_dsn() + " dbname=postgres") as conn:
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone() == shared_started  # the machine's not


@pytest.fixture
def daemon(haproxy_box: Sandbox, tmp_path: Path) -> Iterator[dict[str, str]]:
    """scripts/ui.sh on a temporary instance, serving the test sandbox's code location."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    database = f"dagster_test_{secrets.token_hex(4)}"
    env = {**os.environ, "UI_DAGSTER_HOME": str(tmp_path / "dagster_home"), "DAGSTER_PORT": port,
           "DAGSTER_PG_DB": database, "PROMOTE_SETTINGS": str(haproxy_box.settings_file), "UI_READY_TIMEOUT": "150"}
    ui = [str(PROJECT_DIR / "scripts" / "ui.sh")]
    up = subprocess.run(["bash", *ui, "up"], env=env, capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield env
    finally:
        subprocess.run(["bash", *ui, "down"], env=env, capture_output=True, timeout=90)
        with psycopg.connect(default_server_dsn() + " dbname=postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def test_worker_kill_is_recovered_by_the_daemon(haproxy_box: Sandbox, daemon: dict[str, str],
                                               monkeypatch: Any) -> None:
    monkeypatch.setenv("DAGSTER_PORT", daemon["DAGSTER_PORT"])
    report = Drill(haproxy_box, "worker-kill", stability_seconds=60, say=print).run()
    print(f"worker-kill: traffic on blue {report['kill_to_blue_seconds']} s after SIGKILL")
    assert report["safe"], report
    # The router itself served blue again while the drill watched (it gives up after 120 s); how soon is printed
    # and measured, not bounded here.
    assert report["kill_to_blue_seconds"] is not None
    assert report["status"] == "rolled_back", report
