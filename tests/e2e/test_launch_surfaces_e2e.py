"""The three ways to launch, end to end, on a real webserver and daemon (tests/e2e/conftest.py).

- GraphQL: examples/launch_via_graphql.py promotes the sandbox through the webserver, the daemon's
  queue and a run worker; the evidence is complete, the run view's metadata carries what a person
  wants to see, the run's tags name the promotion, and no secret reaches the event log;
- the CLI: ``promote launch`` does the same with progress lines, ``promote status`` reads it back;
- errors from the server (invalid config, server down; job not found on a real webserver whose code
  location lacks the job) are one clear message;
- the UI: headless Chromium opens the finished run's page; its status and summary are on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from promote_pipeline.cli import launch
from promote_pipeline.cli import main as cli
from promote_pipeline.cli.sandbox import ADMIN_REF, DSN_REF, PROD, PROJECT, STAGING, USER
from promote_pipeline.promotion.evidence import required_files
from promote_pipeline.promotion.settings import PROJECT_DIR
from resources.odoo_host import free_port

pytestmark = pytest.mark.slow

EXAMPLE = PROJECT_DIR / "examples" / "launch_via_graphql.py"
PROMOTE = Path(sys.executable).parent / "promote"


def _secrets(ui: Any) -> list[str]:
    """The sandbox's generated credentials: the Odoo admin password and the password inside the DSN."""
    values = json.loads(Path(ui.box.secrets_file).read_text())
    planted = [values[ADMIN_REF], str(psycopg.conninfo.conninfo_to_dict(values[DSN_REF])["password"])]
    assert all(len(p) >= 12 for p in planted)
    return planted


def _metadata(events: list[dict[str, Any]], step: str) -> dict[str, Any]:
    for event in events:
        if event["__typename"] == "ExecutionStepOutputEvent" and event.get("stepKey") == step:
            return {e["label"]: launch._value(e) for e in event["metadataEntries"]}
    raise AssertionError(f"no output event of {step}")


_STEP_KEYS = """query Keys($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
  __typename ... on ExecutionStepOutputEvent { stepKey metadataEntries { __typename label
  ... on TextMetadataEntry { text } ... on PathMetadataEntry { path } ... on IntMetadataEntry { intRepr }
  ... on FloatMetadataEntry { floatValue } ... on BoolMetadataEntry { boolValue }
  ... on JsonMetadataEntry { jsonString } ... on MarkdownMetadataEntry { mdStr } } } } } } }"""


@pytest.fixture(scope="module")
def example_run(dagster_ui: Any) -> dict[str, Any]:
    """examples/launch_via_graphql.py, run as a person would, against the webserver: its outputs object."""
    result = subprocess.run([sys.executable, str(EXAMPLE), "--url", dagster_ui.url, "--stability-seconds", "1"],
                            capture_output=True, text=True, timeout=600, env=dagster_ui.env)
    assert result.returncode == 0, result.stdout + result.stderr
    outputs: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outputs


def test_the_example_promotes_through_graphql_with_evidence_run_view_and_tags(dagster_ui: Any,
                                                                             example_run: dict[str, Any]) -> None:
    outputs = example_run
    assert outputs["status"] == "success" and outputs["run_id"].startswith("run_"), outputs
    for key in ("evidence_dir", "blue_backup_id", "green_artifact_id", "cutover_timestamp"):
        assert outputs[key], (key, outputs)
    run_id = outputs["dagster_run_id"]

    # The evidence: all eleven files.
    folder = Path(outputs["evidence_dir"])
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(required_files())

    # The run: tags naming the promotion, SUCCESS, the outputs object readable back.
    report = launch.report(run_id, dagster_ui.url)
    assert report.dagster_status == "SUCCESS" and report.status == "success"
    assert report.outputs_object()["evidence_dir"] == str(folder)
    assert {k: report.tags[k] for k in ("promote/project", "promote/staging_env", "promote/prod_env", "promote/user")} \
        == {"promote/project": PROJECT, "promote/staging_env": STAGING, "promote/prod_env": PROD, "promote/user": USER}

    # The run view: what each step shows.
    events = dagster_ui.graphql(_STEP_KEYS, {"runId": run_id})["logsForRun"]["events"]
    snap = _metadata(events, "snapshot_staging")
    assert snap["green_artifact_id"] == outputs["green_artifact_id"]
    assert len(snap["db_dump_sha256"]) == 64 and snap["db_dump_bytes"] > 0 and snap["seconds"] > 0
    assert snap["evidence: staging_snapshot.json"] == str(folder / "staging_snapshot.json")
    blue = _metadata(events, "backup_production")
    assert blue["blue_backup_id"] == outputs["blue_backup_id"] and len(blue["filestore_sha256"]) == 64
    smoke = _metadata(events, "smoke_test_green")
    assert smoke["passed"] == "5/5" and "| test | result | detail | ms |" in smoke["results"]
    cut = _metadata(events, "cutover")
    # Production before the cutover may be an earlier run's green (its label stays): what counts is that the public
    # entry point moved from that deployment to this run's green.
    before, after = cut["routing_before"]["active"], cut["routing_after"]["active"]
    assert after["colour"] == "green" and before["name"] != after["name"], (before, after)
    assert "| active |" in cut["routing"]
    stab = _metadata(events, "monitor_stability")
    assert stab["verdict"] == "pass" and stab["requests"] > 0 and "error_rate" in stab
    final = _metadata(events, "finalize")
    assert final["summary"].startswith(f"# Promotion {outputs['run_id']}") and final["status"] == "success"
    assert {k for k in final if k.startswith("evidence: ")} == {f"evidence: {n}" for n in required_files()}
    assert all(isinstance(m.get("step_seconds"), float) for m in (snap, blue, smoke, cut, stab))
    first = _metadata(events, "create_ops_run")
    assert first["run_id"] == outputs["run_id"] and "| # | check | result | detail |" in first["preflight"]

    # The progress lines are in the event log (what `promote launch` follows), and no secret is anywhere in it.
    raw = json.dumps(launch.events(run_id, dagster_ui.url)[0])
    assert "[7/8] monitor_stability done in" in raw and "[8/8] finalize done in" in raw
    assert not [s for s in _secrets(dagster_ui) if s in raw]


def test_promote_launch_follows_the_run_with_progress_lines_and_status_reads_it_back(
        dagster_ui: Any, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["launch", "--project", PROJECT, "--staging", STAGING, "--prod", PROD, "--user", USER,
            "--stability-seconds", "1", "--url", dagster_ui.url, "--json"]
    result = subprocess.run([str(PROMOTE), *args], capture_output=True, text=True, timeout=600, env=dagster_ui.env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # Not a terminal: plain lines, each with the time since the launch; every step, with its duration.
    for n, step in enumerate(["create_ops_run", "snapshot_staging", "backup_production", "restore_green",
                              "smoke_test_green", "cutover", "monitor_stability", "finalize"], 1):
        assert any(line.startswith("+") and f"[{n}/8] {step} done in" in line for line in lines), result.stdout
    assert any("stability:" in line and "error rate" in line and "s left" in line for line in lines), result.stdout
    assert any(line.startswith("success: run run_") for line in lines), result.stdout
    outputs = json.loads(lines[-1])
    assert outputs["status"] == "success" and Path(outputs["evidence_dir"], "promotion_summary.md").exists()
    assert not [s for s in _secrets(dagster_ui) if s in result.stdout + result.stderr]

    assert cli.main(["status", outputs["dagster_run_id"], "--url", dagster_ui.url]) == 0
    status = capsys.readouterr().out
    assert f"Dagster run {outputs['dagster_run_id']}: SUCCESS in " in status
    assert f"promotion of {STAGING} to {PROD} (project {PROJECT}, by {USER})" in status
    assert f"run_id: {outputs['run_id']}" in status and f"evidence_dir: {outputs['evidence_dir']}" in status
    assert cli.main(["status", outputs["dagster_run_id"], "--url", dagster_ui.url, "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert {k: as_json[k] for k in outputs} == outputs and as_json["dagster_status"] == "SUCCESS"
    tags = launch.run_info(outputs["dagster_run_id"], dagster_ui.url)["tags"]
    assert tags["promote/launched_by"] == "cli" and tags["promote/prod_env"] == PROD
    assert tags["promote/outcome"] == "success" and tags["promote/description"].startswith("promotion succeeded: ")
    # The promotion's own id reads the same run back (its Dagster run found in the ops database).
    assert cli.main(["status", outputs["run_id"], "--url", dagster_ui.url]) == 0
    assert capsys.readouterr().out == status


def test_server_errors_are_one_clear_message(dagster_ui: Any) -> None:
    inputs = {"project_id": PROJECT, "staging_env_id": STAGING, "prod_env_id": PROD, "user_id": USER}
    # Invalid config: the job's config types refuse it before any run exists.
    with pytest.raises(launch.LaunchError) as invalid:
        launch.submit({**inputs, "stability_window_seconds": "soon"}, dagster_ui.url)
    assert invalid.value.kind == "invalid_config"
    assert str(invalid.value).startswith("invalid run config for promote_staging_to_prod: Invalid scalar at path"
                                         " root:ops:create_ops_run:config:stability_window_seconds")
    with pytest.raises(launch.LaunchError) as unknown:
        launch.submit({**inputs, "window": 3}, dagster_ui.url)
    assert unknown.value.kind == "invalid_config" and 'unexpected config entry "window"' in str(unknown.value)
    assert "Expected:" not in str(unknown.value)
    # A run that does not exist.
    with pytest.raises(launch.LaunchError) as missing_run:
        launch.report("00000000-0000-0000-0000-000000000000", dagster_ui.url)
    assert missing_run.value.kind == "run_not_found"
    # Server down: nothing listens there.
    down = subprocess.run([str(PROMOTE), "launch", "--project", PROJECT, "--staging", STAGING, "--prod", PROD,
                           "--user", USER, "--url", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60,
                          env=dagster_ui.env)
    assert down.returncode == 3 and "Traceback" not in down.stderr
    assert down.stderr.strip() == ("launch failed: cannot reach the Dagster webserver at http://127.0.0.1:9"
                                   " (connection refused): is it running? (`make ui` starts one; --url or"
                                   " DAGSTER_PORT name another)")
    # A rule broken: refused before it reaches the server, as `promote run` refuses it.
    rejected = subprocess.run([str(PROMOTE), "launch", "--project", PROJECT, "--staging", STAGING, "--prod", PROD,
                               "--user", USER, "--stability-seconds", "9999", "--url", dagster_ui.url],
                              capture_output=True, text=True, timeout=60, env=dagster_ui.env)
    assert rejected.returncode == 2 and rejected.stderr.strip() == \
        "promotion rejected: stability_window_seconds: must be >= 0 and <= 3600 (got 9999)"


_OTHER_DEFS = """from dagster import Definitions, job, op


@op
def hello() -> None:
    pass


@job
def say_hello() -> None:
    hello()


defs = Definitions(jobs=[say_hello])
"""


@pytest.fixture
def webserver_without_the_job(tmp_path: Path) -> Iterator[str]:
    """A real dagster-webserver whose code location is called promote_pipeline but holds another job (what an old
    or foreign deployment of the location looks like to a client), on its own temporary instance."""
    (tmp_path / "other_defs.py").write_text(_OTHER_DEFS)
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"python_file": {
        "relative_path": "other_defs.py", "location_name": launch.LOCATION}}]}))
    (tmp_path / "home").mkdir()
    port = str(free_port())
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    log = (tmp_path / "webserver.log").open("wb")
    server = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-w",
                               str(tmp_path / "workspace.yaml"), "-h", "127.0.0.1", "-p", port], cwd=tmp_path,
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"the webserver did not come up: {(tmp_path / 'webserver.log').read_text()[-2000:]}")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def test_a_webserver_whose_location_lacks_the_job_says_so(webserver_without_the_job: str) -> None:
    inputs = {"project_id": PROJECT, "staging_env_id": STAGING, "prod_env_id": PROD, "user_id": USER}
    with pytest.raises(launch.LaunchError) as no_job:
        launch.submit(inputs, webserver_without_the_job)
    assert no_job.value.kind == "job_not_found"
    assert str(no_job.value) == (f"job promote_staging_to_prod not found on the webserver at"
                                 f" {webserver_without_the_job} (the code location promote_pipeline is loaded but"
                                 " has no such job)")


def test_the_ui_shows_the_finished_run_with_its_status_and_summary(dagster_ui: Any, example_run: dict[str, Any],
                                                                   chromium: Callable[[str, str], Any]) -> None:
    run_id = example_run["dagster_run_id"]
    page = chromium(f"{dagster_ui.url}/runs/{run_id}", "run_page")
    print(f"screenshot: {page.screenshot}")
    assert page.screenshot.stat().st_size > 20_000
    text = page.text
    assert f"Runs / {run_id[:8]}" in text, text[:2000]
    assert "Success" in text and "RUN_SUCCESS" in text
    # The summary's headline (its first line, as text metadata of finalize) and its markdown entry.
    assert f"summary_headline Promotion {example_run['run_id']}" in text and "success" in text
    assert "summary [Show Markdown]" in text
