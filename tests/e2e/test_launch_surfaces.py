"""The launch surfaces without a webserver: planned promotions (promotion_schedules.yaml → schedules,
validated at load, busy environments skipped), the progress printer, the descriptions the UI shows,
and the launchpad's scaffold."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from dagster import DagsterRunStatus, DefaultScheduleStatus, DefaultSensorStatus, instance_for_test
from dagster import build_schedule_context as schedule_context
from dagster._config import validate_config

from promote_pipeline.cli import printer as progress
from promote_pipeline.cli import sandbox as sandbox_mod
from promote_pipeline.defs import jobs, planned
from promote_pipeline.defs.location import (
    SANDBOX_DSN_REF,
    SANDBOX_IDS,
    SANDBOX_INPUTS,
    build_definitions,
    promotion_job,
)
from promote_pipeline.defs.planned import PlannedPromotionError
from promote_pipeline.promotion.inputs import run_config
from promote_pipeline.promotion.settings import Settings

GOOD = {"name": "sunday", "cron": "0 2 * * 0", "timezone": "Europe/Brussels", "description": "Weekly",
        "inputs": {"project_id": sandbox_mod.PROJECT, "staging_env_id": sandbox_mod.STAGING,
                   "prod_env_id": sandbox_mod.PROD, "user_id": sandbox_mod.USER, "stability_window_seconds": 1}}


def _file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *entries: Any, text: str | None = None) -> Path:
    path = tmp_path / "promotion_schedules.yaml"
    path.write_text(text if text is not None else yaml.safe_dump({"schedules": list(entries)}))
    monkeypatch.setenv("PROMOTE_SCHEDULES_FILE", str(path))
    return path


# -- planned promotions ---------------------------------------------------------------------------------
def test_the_repository_file_loads_and_its_commented_example_is_a_valid_entry(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert planned.read(planned.DEFAULT_FILE) == []
    lines = planned.DEFAULT_FILE.read_text().splitlines()
    start = lines.index("# schedules:")
    example = "\n".join(line[2:] for line in lines[start:] if line.startswith("# "))
    _file(tmp_path, monkeypatch, text=example)
    [entry] = planned.read()
    assert entry.name == "demo_sunday_0200" and entry.cron == "0 2 * * 0" and entry.timezone == "Europe/Brussels"
    assert entry.inputs["prod_env_id"] == sandbox_mod.PROD and entry.inputs["skip_smoke_tests"] is False


@pytest.mark.parametrize(("change", "message"), [
    ({"cron": "0 2 * *"}, "cron: '0 2 * *' is not a cron expression (five fields: minute hour day-of-month month"
                          " day-of-week, e.g. '0 2 * * 0')"),
    ({"timezone": "Mars/Olympus"}, "timezone: 'Mars/Olympus' is not an IANA time zone (e.g. UTC, Europe/Brussels)"),
    ({"inputs": {**GOOD["inputs"], "stability_window_seconds": 5000}},
     "inputs.stability_window_seconds: must be >= 0 and <= 3600 (got 5000)"),
    ({"inputs": {**GOOD["inputs"], "project_id": "proj;drop"}},
     "inputs.project_id: must be 1-64 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit"
     " (got 'proj;drop')"),
    ({"inputs": {k: v for k, v in GOOD["inputs"].items() if k != "user_id"}}, "inputs.user_id: is required"),
    ({"inputs": {**GOOD["inputs"], "rollback_window": 3}}, "inputs.rollback_window: is not a known input"),
    ({"inputs": {**GOOD["inputs"], "stability_window_seconds": "10"}},
     "inputs.stability_window_seconds: must be an integer, got '10' (str; write a number without quotes)"),
    ({"inputs": {**GOOD["inputs"], "rollback_window_hours": True}},
     "inputs.rollback_window_hours: must be an integer, got True (bool; write a number without quotes)"),
    ({"inputs": {**GOOD["inputs"], "staging_env_id": sandbox_mod.PROD}},
     "inputs.prod_env_id: must differ from staging_env_id"),
    ({"when": "sunday"}, "when: Extra inputs are not permitted"),
    ({"cron": None}, "cron: Input should be a valid string"),
    ({"name": "cleanup_when_due"}, "name: the code location already has a schedule or sensor of that name"),
])
def test_a_bad_entry_fails_loading_with_a_message_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            change: dict[str, Any], message: str) -> None:
    bad = {**GOOD, "name": "nightly", **change}
    _file(tmp_path, monkeypatch, GOOD, bad)
    with pytest.raises(PlannedPromotionError) as exc:
        build_definitions()
    label = f"entry {bad['name']!r}" if "already has" in message else f"entry 2 ({bad['name']!r})"
    assert str(exc.value) == f"promotion_schedules.yaml, {label}: {message}"


@pytest.mark.parametrize(("text", "message"), [
    ("schedules: [", "promotion_schedules.yaml: not valid YAML"),
    ("- name: x", "promotion_schedules.yaml: expected a mapping with one key, 'schedules' (a list)"),
    ("schedules: {name: x}", "promotion_schedules.yaml: 'schedules' must be a list of entries"),
    ("schedules:\n  - name: a\n    cron: '0 2 * * 0'\n    cron: '0 3 * * 0'\n    inputs: {}",
     "promotion_schedules.yaml: not valid YAML: line 4: duplicate key 'cron'"),
    ("schedules: []\nschedules: []", "promotion_schedules.yaml: not valid YAML: line 2: duplicate key 'schedules'"),
    ("schedules: [hello]", "promotion_schedules.yaml, entry 1: must be a mapping with name, cron, timezone and inputs"),
    ("schedules: [{name: a b, cron: '0 2 * * 0', inputs: {}}]", "promotion_schedules.yaml, entry 1 ('a b'): name:"
                                                               " must be letters, digits and '_'"),
])
def test_a_bad_file_fails_loading_with_a_message_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           text: str, message: str) -> None:
    _file(tmp_path, monkeypatch, text=text)
    with pytest.raises(PlannedPromotionError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        build_definitions()


def test_a_duplicate_name_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _file(tmp_path, monkeypatch, GOOD, GOOD)
    with pytest.raises(PlannedPromotionError) as exc:
        planned.read()
    assert str(exc.value) == "promotion_schedules.yaml, entry 2 ('sunday'): name: 'sunday' is used by an earlier entry"


def test_planned_promotions_become_stopped_schedules_of_the_promotion_job(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _file(tmp_path, monkeypatch, GOOD, {**GOOD, "name": "daily_at_six", "cron": "0 6 * * *", "timezone": "UTC"})
    defs = build_definitions().get_repository_def()
    sunday = defs.get_schedule_def("sunday")
    assert sunday.default_status == DefaultScheduleStatus.STOPPED
    assert (sunday.cron_schedule, sunday.execution_timezone, sunday.job_name) == \
        ("0 2 * * 0", "Europe/Brussels", "promote_staging_to_prod")
    assert sunday.description and sunday.description.startswith("Weekly — Planned promotion of env_demo_staging")
    assert defs.get_schedule_def("daily_at_six").default_status == DefaultScheduleStatus.STOPPED
    assert defs.get_sensor_def("cleanup_when_due").default_status == DefaultSensorStatus.RUNNING


@pytest.mark.slow
def test_a_tick_for_a_busy_environment_is_skipped_with_the_reason(haproxy_box: Any, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _file(tmp_path, monkeypatch, GOOD)
    defs = build_definitions().get_repository_def()
    schedule = defs.get_schedule_def("sunday")
    ops_db = haproxy_box.resources()["ops_db"]
    tick = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    with instance_for_test() as instance:
        def evaluate() -> Any:
            # As a context manager: the context enters the instance (and its resources) and must exit them.
            with schedule_context(instance=instance, scheduled_execution_time=tick,
                                  resources={"ops_db": ops_db}) as context:
                return schedule.evaluate_tick(context)

        # Free: one run request, the checked inputs complete in its config, tags naming it.
        free = evaluate()
        [request] = free.run_requests
        assert request.run_config == run_config({**planned.read()[0].inputs})
        assert request.run_config["ops"]["create_ops_run"]["config"]["rollback_window_hours"] == 24
        assert request.tags["promote/schedule"] == "sunday" and request.tags["promote/launched_by"] == "schedule"
        assert request.tags["promote/prod_env"] == sandbox_mod.PROD and request.run_key == f"sunday:{tick.isoformat()}"

        # Its lock held (a promotion in another process).
        lock = ops_db.try_lock_environment(sandbox_mod.PROD)
        assert lock is not None
        try:
            held = evaluate()
        finally:
            lock.release()
        assert not held.run_requests
        assert held.skip_message.startswith(f"{sandbox_mod.PROD} is busy: its promotion lock is held (PostgreSQL"
                                            " backend pid ")
        assert held.skip_message.endswith("; this tick is skipped, not queued behind it")

        # A promotion marked running in ops.runs.
        run_id = ops_db.create_run(sandbox_mod.PROJECT, sandbox_mod.PROD, sandbox_mod.USER, {}, None)
        try:
            running = evaluate()
        finally:
            with ops_db.connect() as conn:  # no typed method removes a run: only this test needs to
                conn.execute("DELETE FROM ops.runs WHERE run_id = %s", (run_id,))
        assert not running.run_requests
        assert running.skip_message.startswith(f"{sandbox_mod.PROD} is busy: promotion {run_id} is running (since ")

        # A Dagster run for it launched, not yet at step 1 (queued or starting).
        queued = instance.create_run_for_job(defs.get_job("promote_staging_to_prod"),
                                             run_config=run_config(GOOD["inputs"]),
                                             tags={"promote/prod_env": sandbox_mod.PROD})
        waiting = evaluate()
        assert not waiting.run_requests
        assert waiting.skip_message.startswith(f"{sandbox_mod.PROD} is busy: Dagster run {queued.run_id} for it is"
                                               f" {DagsterRunStatus.NOT_STARTED.value}")
        instance.report_run_canceled(queued)
        assert evaluate().run_requests


# -- the progress printer ---------------------------------------------------------------------------------
LINES = ["[7/8] monitor_stability ...", "      stability: 40 requests, error rate 0.50%, 8s left",
         "[7/8] monitor_stability done in 10.0s", "run run_x: something worth a line",
         "[8/8] finalize ...", "[8/8] finalize FAILED after 0.3s"]


def test_plain_lines_when_the_output_is_not_a_terminal() -> None:
    out = io.StringIO()
    printer = progress.Printer(out)  # StringIO is not a terminal
    assert not printer.live
    for line in LINES:
        printer(line)
    printer.close()
    lines = out.getvalue().splitlines()
    assert all(re.match(r"\+ *\d+\.\ds ", line) for line in lines), lines  # the time since the start
    assert [re.sub(r"^\+ *\d+\.\ds ", "", line) for line in lines] == [line.strip() for line in LINES]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_terminal_gets_a_status_line_with_elapsed_time_live_error_rate_and_time_left(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The printer's clock, not the machine's: the countdown is arithmetic on it, and a pause on a loaded machine
    # would make "7s left" a race (1.2 s of sleep can take 1.6).
    now = [1000.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: now[0]))
    out = io.StringIO()
    printer = progress.Printer(out, live=True, tick=0.05)
    printer(LINES[0])
    printer(LINES[1])
    now[0] += 1.2
    status = printer.status_text()
    assert status is not None and "[7/8] monitor_stability" in status
    assert "40 requests, error rate 0.50%, 7s left" in status  # counted down from the 8 s the run reported
    assert float(status.split("monitor_stability")[1].split("s")[0]) == 1.2  # the step's elapsed time
    now[0] += 10
    assert "0s left" in (printer.status_text() or "")  # never below zero
    for line in LINES[2:]:
        printer(line)
    printer.close()
    text = out.getvalue()
    assert "\r\x1b[K… [7/8] monitor_stability" in text  # redrawn in place
    assert re.search(r"✓ \[7/8\] monitor_stability +10\.0s\n", text)
    assert re.search(r"✗ \[8/8\] finalize +0\.3s  FAILED\n", text)
    assert "run run_x: something worth a line\n" in text
    assert printer.status_text() is None


def test_parse_understands_the_jobs_lines() -> None:
    assert progress.parse("[3/8] backup_production done in 2.1s") == progress.Event(
        kind="done", text="[3/8] backup_production done in 2.1s", number=3, name="backup_production", seconds=2.1)
    stab = progress.parse("      stability: 12 requests, error rate 0.00%, 44s left")
    assert (stab.kind, stab.requests, stab.error_rate, stab.left) == ("stability", 12, 0.0, 44.0)
    assert progress.parse("anything else").kind == "note"


# -- what the UI shows --------------------------------------------------------------------------------
def test_every_job_op_sensor_schedule_and_resource_has_a_description(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _file(tmp_path, monkeypatch, GOOD)
    repo = build_definitions().get_repository_def()
    missing = [f"job {j.name}" for j in repo.get_all_jobs() if not j.description]
    missing += [f"op {n.name}" for j in repo.get_all_jobs() for n in j.all_node_defs if not n.description]
    missing += [f"schedule {s.name}" for s in repo.schedule_defs if not s.description]
    missing += [f"sensor {s.name}" for s in repo.sensor_defs if not s.description]
    missing += [f"resource {k}" for k, r in repo.get_top_level_resources().items() if not r.description]
    assert not missing
    assert {s.name for s in repo.schedule_defs} == {"sunday"}


def test_the_launchpad_scaffold_is_the_sandboxs_and_elsewhere_the_ids_stay_required() -> None:
    assert SANDBOX_IDS == {"project_id": sandbox_mod.PROJECT, "staging_env_id": sandbox_mod.STAGING,
                           "prod_env_id": sandbox_mod.PROD, "user_id": sandbox_mod.USER}
    assert SANDBOX_DSN_REF == sandbox_mod.DSN_REF
    in_sandbox = promotion_job(Settings(ops_dsn_ref=sandbox_mod.DSN_REF))
    schema = in_sandbox.run_config_schema.config_type
    assert validate_config(schema, {}).success  # launched without config: the sandbox's inputs
    assert schema.fields["ops"].default_value == run_config(SANDBOX_INPUTS)["ops"]
    assert SANDBOX_INPUTS["stability_window_seconds"] == 10 and SANDBOX_INPUTS["rollback_window_hours"] == 24
    assert in_sandbox.description and "launchpad opens with the sandbox's inputs" in in_sandbox.description

    elsewhere = promotion_job(Settings())  # a real installation: no default, the ids are required
    assert elsewhere is jobs.promote_staging_to_prod
    result = validate_config(elsewhere.run_config_schema.config_type, {})
    assert not result.success and "create_ops_run" in str([e.message for e in result.errors or []])
