"""`make ui`: scripts/ui.sh runs dagster-webserver and dagster-daemon on the repository's dagster.yaml.

The instance is a temporary one (its own DAGSTER_HOME, PostgreSQL database and port), with
PROMOTE_SETTINGS naming a file that does not exist: the code location must fail to load with the one line
saying what to write (the UI shows it; `promote launch` repeats it), and load once the file is written.

PROMOTE_OPS_DATABASE names the temporary database, which exists (without an ops schema): with the
default ``promote_ops``, which does not, the sensor ``detect_dead_promotions`` spends each tick in
the ops database's 20-second reconnect loop, and the daemon, which finishes its in-flight tick
before it exits on SIGTERM, would take about as long to stop.
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

import httpx
import psycopg
import pytest
from psycopg import sql

from promote_pipeline.cli import launch
from promote_pipeline.promotion import settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
UI_SH = REPO / "scripts" / "ui.sh"
SERVER_DSN = f"host={os.environ.get('PGHOST', '127.0.0.1')} port={os.environ.get('PGPORT', '5432')} user=postgres"
LOCATIONS_QUERY = ("{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename"
                   " ... on PythonError { message cause { message cause { message } } } } } } } }")
RELOAD = ('mutation { reloadRepositoryLocation(repositoryLocationName: "promote_pipeline") { __typename'
          " ... on WorkspaceLocationEntry { locationOrLoadError { __typename } } } }")
DAEMON_QUERY = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy lastHeartbeatTime } } } }"


@dataclass
class UiInstance:
    home: Path
    port: int
    database: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ui(self, command: str, timeout: float = 330) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(UI_SH), command], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def pid(self, service: str) -> int:
        return int((self.home / f"{service}.pid").read_text())

    def graphql(self, query: str) -> dict[str, Any]:
        # Generous: a reload imports the code location anew, which takes a minute on a loaded machine.
        response = httpx.post(f"{self.url}/graphql", json={"query": query}, timeout=180)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _missing_settings_message(path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The one line a process whose PROMOTE_SETTINGS names ``path`` (missing) fails with."""
    with monkeypatch.context() as m:
        m.setattr(settings, "_selected", None)
        m.setenv("PROMOTE_SETTINGS", str(path))
        with pytest.raises(settings.SettingsError) as exc:
            settings.load()
    return str(exc.value)


def _load_error(instance: UiInstance) -> dict[str, Any]:
    entries = instance.graphql(LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
    [entry] = [e for e in entries if e["name"] == "promote_pipeline"]
    error: dict[str, Any] = entry["locationOrLoadError"]
    return error


def _assert_fails_to_load_then_loads(instance: UiInstance, settings_file: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No settings file: the code location is an error in the UI whose innermost cause is the one line, and
    `promote launch` says the same; written, a reload brings the location up."""
    expected = _missing_settings_message(settings_file, monkeypatch)
    assert "\n" not in expected and "PROMOTE_SETTINGS" in expected and "examples/settings.json" in expected
    error = _load_error(instance)
    assert error["__typename"] == "PythonError", error
    while error.get("cause"):
        error = error["cause"]
    assert error["message"].strip() == f"{settings.SettingsError.__module__}.SettingsError: {expected}"
    with pytest.raises(launch.LaunchError) as refused:
        launch.submit({"project_id": "p", "staging_env_id": "s", "prod_env_id": "e", "user_id": "u"}, instance.url,
                      source="cli")
    assert str(refused.value).endswith(f"the code location promote_pipeline failed to load: {expected}")

    settings_file.write_text(json.dumps({"artifact_root": str(instance.home / "artifacts"),
                                         "run_dir": str(instance.home / "run"),
                                         "router_dir": str(instance.home / "router")}))
    reloaded = instance.graphql(RELOAD)["reloadRepositoryLocation"]
    assert reloaded["locationOrLoadError"]["__typename"] == "RepositoryLocation", reloaded


@pytest.fixture
def ui_instance(tmp_path: Path) -> Iterator[UiInstance]:
    database = f"dagster_test_{secrets.token_hex(4)}"
    home = tmp_path / "dagster_home"
    env = {**os.environ, "UI_DAGSTER_HOME": str(home), "DAGSTER_PORT": str(_free_port()),
           "DAGSTER_PG_DB": database, "PROMOTE_SETTINGS": str(tmp_path / "no-such-settings.json"),
           "PROMOTE_OPS_DATABASE": database,
           # A loaded machine starts and stops them slowly: the test asserts that they stop on SIGTERM, not how
           # fast (under a load average of 12 the webserver once took more than ui.sh's default 20 s).
           "UI_READY_TIMEOUT": "150", "UI_STOP_TIMEOUT": "120"}
    instance = UiInstance(home=home, port=int(env["DAGSTER_PORT"]), database=database, env=env)
    try:
        yield instance
    finally:
        instance.ui("down", timeout=60)
        with psycopg.connect(SERVER_DSN, dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def test_ui_serves_the_code_location_with_healthy_daemons_and_stops_cleanly(ui_instance: UiInstance,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    started_at = time.time()
    up = ui_instance.ui("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"Dagster UI: {ui_instance.url}" in up.stdout
    # A new database gets Dagster's tables before either process starts (both starting on an empty one raced).
    assert up.stdout.index("created Dagster's tables") < up.stdout.index("started webserver"), up.stdout
    _assert_fails_to_load_then_loads(ui_instance, Path(ui_instance.env["PROMOTE_SETTINGS"]), monkeypatch)

    # The instance is the repository's dagster.yaml, on the temporary database.
    assert (ui_instance.home / "dagster.yaml").resolve() == REPO / "dagster.yaml"
    pids = {service: ui_instance.pid(service) for service in ("webserver", "daemon")}
    assert all(_group_alive(pid) for pid in pids.values())

    info = httpx.get(f"{ui_instance.url}/server_info", timeout=10)
    assert info.status_code == 200 and "dagster_webserver_version" in info.json()

    repos = ui_instance.graphql(
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } jobs { name } } } } }"
    )["repositoriesOrError"]["nodes"]
    jobs = {job["name"] for repo in repos if repo["location"]["name"] == "promote_pipeline" for job in repo["jobs"]}
    assert "promote_staging_to_prod" in jobs, repos

    query = "{ instance { info runQueueConfig { maxConcurrentRuns tagConcurrencyLimitsYaml } } }"
    instance = ui_instance.graphql(query)["instance"]
    assert "run_storage: PostgresRunStorage" in instance["info"]
    assert "run_monitoring:\n  enabled: true" in instance["info"]
    assert "key: promote/prod_env" in instance["runQueueConfig"]["tagConcurrencyLimitsYaml"]

    # Every daemon the instance requires beats, freshly (heartbeats of earlier processes would also
    # count as healthy for 30 minutes, so a heartbeat older than this start proves nothing).
    deadline = time.monotonic() + 150
    while True:
        statuses = ui_instance.graphql(DAEMON_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
        required = {s["daemonType"]: s for s in statuses if s["required"]}
        if all(s["healthy"] and (s["lastHeartbeatTime"] or 0) >= int(started_at) for s in required.values()):
            break
        assert time.monotonic() < deadline, f"daemons not healthy within 150 s: {statuses}"
        time.sleep(1)
    assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= set(required)

    # The heartbeats are rows of the temporary PostgreSQL database.
    with psycopg.connect(SERVER_DSN, dbname=ui_instance.database) as conn:
        row = conn.execute("SELECT count(*) FROM daemon_heartbeats").fetchone()
    assert row is not None and row[0] >= len(required)

    down = ui_instance.ui("down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.count("stopped on SIGTERM") == 2 and "SIGKILL" not in down.stdout, down.stdout
    assert not any(_group_alive(pid) for pid in pids.values())
    assert not list(ui_instance.home.glob("*.pid"))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{ui_instance.url}/server_info", timeout=2)

    again = ui_instance.ui("down", timeout=30)
    assert again.returncode == 0 and again.stdout.count("not running") == 2
