"""A deployment's recorded pid is signalled only while it names the process started then: a pid the kernel has
since given to an unrelated process is reported and left alone (real processes, real ops database)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from promote_pipeline.cli.sandbox import DSN_REF, PROD, Sandbox
from promote_pipeline.promotion import cleanup
from promote_pipeline.promotion.services import Services
from resources import db_endpoint
from resources.ops_db import DeploymentRecord, TaskRequest

pytestmark = pytest.mark.slow


def _sleep() -> subprocess.Popen[bytes]:
    # Its own session, as the host starts Odoo and PgBouncer: it leads its own process group.
    return subprocess.Popen(["sleep", "120"], start_new_session=True)


def _sleep_holding_signals() -> subprocess.Popen[bytes]:
    """A sleeper that blocks the catchable stop signals: one sent to it stays pending (visible in /proc) instead
    of killing it some time later, so "never signalled" is checked at once, not by waiting to see it live on."""
    script = ("import signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT,"
              " signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2}); print(flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline()  # the mask is in place
    return proc


def _never_signalled(proc: subprocess.Popen[bytes]) -> bool:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
    return proc.poll() is None and int(status["SigPnd"], 16) == 0 and int(status["ShdPnd"], 16) == 0


def _retired_with_pid(svc: Services, pid: int, started: int | None) -> str:
    tag = secrets.token_hex(3)
    db, dep = f"pti_{tag}", f"dep_identity_{tag}"
    svc.host.create_database(DSN_REF, db)
    svc.ops_db.add_deployment(DeploymentRecord(deployment_id=dep, environment_id=PROD, db_name=db,
                                               data_dir="/nonexistent", http_port=None, websocket_port=None,
                                               pid=None, state="standby"))
    svc.ops_db.retire_deployment(dep)
    svc.ops_db.set_deployment_pid(dep, pid, started)
    svc.ops_db.schedule_task(TaskRequest(task_type="delete_deployment", delay=timedelta(seconds=-1),
                                         metadata={"deployment_id": dep}))
    return dep


def _clean_up(svc: Services, dep: str, evidence: Path) -> dict[str, object]:
    done = [r for r in cleanup.run_due_tasks(svc, str(evidence)) if r["metadata"].get("deployment_id") == dep]
    assert len(done) == 1 and done[0]["status"] == "done", done
    return done[0]


def test_cleanup_leaves_an_unrelated_process_holding_a_recorded_pid_alone(haproxy_box: Sandbox,
                                                                         tmp_path: Path) -> None:
    svc = Services.from_resources(haproxy_box.resources())
    genuine = _sleep()
    started = db_endpoint.process_started(genuine.pid)
    genuine.kill()
    genuine.wait()
    time.sleep(0.05)  # start times count clock ticks (10 ms): the two must not share one
    unrelated = _sleep_holding_signals()  # the pid recorded for the deployment now names this one, started later
    try:
        assert db_endpoint.process_started(unrelated.pid) != started
        dep = _retired_with_pid(svc, unrelated.pid, started)
        record = _clean_up(svc, dep, tmp_path)
        assert _never_signalled(unrelated)
        line = " ".join(record["done"])  # type: ignore[arg-type]
        assert f"Odoo not stopped: pid {unrelated.pid}: started at tick" in line and "left alone" in line
        assert svc.ops_db.deployment(dep).state == "deleted"
    finally:
        unrelated.kill()
        unrelated.wait()


def test_cleanup_stops_the_deployments_own_process(haproxy_box: Sandbox, tmp_path: Path) -> None:
    svc = Services.from_resources(haproxy_box.resources())
    own = _sleep()
    try:
        dep = _retired_with_pid(svc, own.pid, db_endpoint.process_started(own.pid))
        record = _clean_up(svc, dep, tmp_path)
        assert own.wait(timeout=60) is not None  # stopped by the clean-up
        assert "processes stopped" in " ".join(record["done"])  # type: ignore[arg-type]
    finally:
        if own.poll() is None:
            own.kill()
            own.wait()


def test_a_pid_without_a_recorded_start_time_is_not_signalled() -> None:
    proc = _sleep_holding_signals()
    try:
        why = db_endpoint.stop_recorded(proc.pid, None, timeout=1)
        assert why is not None and "no start time recorded" in why
        assert _never_signalled(proc)
    finally:
        proc.kill()
        proc.wait()
