"""The evidence schema refuses what a reader could not rely on: hand-made files, one fault each.

The real files of real runs are checked in ``test_rollback_branches.py``; here each rule is shown to bite, the
first of them being a verdict blanked by redaction (``"passed": "[REDACTED]"``), which the older tests, accepting
any truthy value, let through.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.promotion import evidence_schema, steps
from promote_pipeline.promotion.evidence import Evidence
from promote_pipeline.promotion.preflight import CHECKS
from resources.redaction import REDACTED

RUN_ID = "run_20261130T101500_0a1b2c3d"
NOT_REACHED = {"schema_version": 1, "reached": False, "reason": "not reached: the run failed at snapshot_staging"}


def good_files() -> dict[str, Any]:
    """A run that failed at its snapshot, written as the code writes it: the smallest complete folder."""
    return {
        steps.INPUTS_JSON: {
            "schema_version": 1, "project_id": "proj_demo", "staging_env_id": "env_s", "prod_env_id": "env_p",
            "user_id": "demo_admin", "rollback_window_hours": 24, "skip_smoke_tests": False,
            "auto_rollback_on_failure": True, "carry_over_settings": True, "stability_window_seconds": 300,
            "accept_drift": False, "freeze_blue": False,
            "preflight": [{"check": name, "passed": True, "message": f"{name}: ok"} for name in CHECKS]},
        steps.RUN_ID_TXT: f"{RUN_ID}\n",
        **{name: NOT_REACHED for name in sorted(evidence_schema.MAY_BE_NOT_REACHED)},
        steps.ROLLBACK_JSON: {"schema_version": 1, "triggered": False,
                              "reason": "failure at snapshot_staging: nothing rolled back", "blue_untouched": True,
                              "failed_step": "snapshot_staging"},
        steps.FINAL_STATUS_JSON: {
            "schema_version": 1, "run_id": RUN_ID, "status": "failed", "evidence_dir": "/evidence/x",
            "blue_backup_id": None, "green_artifact_id": None, "cutover_timestamp": None,
            "started_at": "2026-11-30T10:15:00.000001+00:00", "completed_at": "2026-11-30T10:15:03.5+00:00",
            "duration_seconds": 3.5, "failed_step": "snapshot_staging", "reason": "StepFailed: no space"},
        steps.PROMOTION_SUMMARY_MD: f"# Promotion {RUN_ID}: FAILED\n\n- Failed at **snapshot_staging**\n",
    }


def write(folder: Path, files: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / name).write_text(body if isinstance(body, str) else json.dumps(body, indent=2) + "\n")
    return folder


def test_the_hand_made_folder_is_valid(tmp_path: Path) -> None:
    assert evidence_schema.validate_folder(write(tmp_path, good_files()), RUN_ID, "failed") == steps.evidence_files()


def _set(name: str, path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(files: dict[str, Any]) -> None:
        node = files[name]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


@pytest.mark.parametrize("change,complaint", [
    # A verdict blanked by redaction, or turned into another type: a reader can no longer count on it.
    (_set(steps.INPUTS_JSON, ["preflight", 3, "passed"], REDACTED), "redacted outside a secret's key"),
    (_set(steps.INPUTS_JSON, ["preflight", 3, "passed"], "true"), "valid boolean"),
    (_set(steps.INPUTS_JSON, ["preflight", 3, "passed"], 1), "valid boolean"),
    (_set(steps.INPUTS_JSON, ["skip_smoke_tests"], REDACTED), "redacted outside a secret's key"),
    (_set(steps.ROLLBACK_JSON, ["triggered"], "false"), "triggered"),
    (_set(steps.INPUTS_JSON, ["preflight", 0, "message"], REDACTED), "redacted outside a secret's key"),
    # The preflight table lists every precondition, in order.
    (lambda f: f[steps.INPUTS_JSON]["preflight"].pop(), "every precondition"),
    # Counts are integers >= 0.
    (_set(steps.INPUTS_JSON, ["stability_window_seconds"], "300"), "valid integer"),
    (_set(steps.INPUTS_JSON, ["stability_window_seconds"], -1), "greater than or equal to 0"),
    # Ids, and the run's own id in run_id.txt and the summary.
    (_set(steps.FINAL_STATUS_JSON, ["run_id"], "run_x"), "should match pattern"),
    (lambda f: f.update({steps.RUN_ID_TXT: "run_20261130T101500_ffffffff\n"}), "not the run id"),
    (lambda f: f.update({steps.PROMOTION_SUMMARY_MD: "# Promotion\n"}), "run's title"),
    # Timestamps carry their timezone.
    (_set(steps.FINAL_STATUS_JSON, ["started_at"], "2026-11-30T10:15:00"), "timezone"),
    (_set(steps.FINAL_STATUS_JSON, ["completed_at"], "yesterday"), "datetime"),
    # The files agree with how the run ended.
    (_set(steps.FINAL_STATUS_JSON, ["status"], "rolled_back"), "expected"),
    (lambda f: f.pop(steps.CUTOVER_JSON), "missing"),
    (lambda f: f.update({steps.INPUTS_JSON: NOT_REACHED}), "Field required"),
])
def test_a_fault_in_one_file_is_refused(tmp_path: Path, change: Callable[[dict[str, Any]], Any],
                                        complaint: str) -> None:
    files = copy.deepcopy(good_files())
    change(files)
    with pytest.raises(ValueError, match=complaint):
        evidence_schema.validate_folder(write(tmp_path, files), RUN_ID, "failed")


def test_checksums_and_smoke_verdicts_are_checked() -> None:
    good = {"name": "toc.dat", "sha256": "a" * 64, "size_bytes": 10}
    evidence_schema.DumpFile.model_validate_json(json.dumps(good))
    for bad in ({**good, "sha256": "a" * 63}, {**good, "sha256": "A" * 64}, {**good, "sha256": REDACTED}):
        with pytest.raises(ValueError, match="pattern"):
            evidence_schema.DumpFile.model_validate_json(json.dumps(bad))
    results = [{"name": n, "passed": True, "detail": "ok", "duration_ms": 3} for n in evidence_schema.SMOKE_TESTS]
    smoke = {"schema_version": 1, "skipped": False, "passed": True, "target": "http://127.0.0.1:1", "results": results,
             "carried_over_settings": {"unchanged": True, "changed": {}, "watched": 11}}
    evidence_schema.validate_json(evidence_schema.SmokeTestsEvidence, json.dumps(smoke))
    lying = copy.deepcopy(smoke)
    lying["results"][4]["passed"] = False  # one failed, yet the file says passed
    with pytest.raises(ValueError, match="passed must be true exactly when"):
        evidence_schema.validate_json(evidence_schema.SmokeTestsEvidence, json.dumps(lying))
    blanked = copy.deepcopy(smoke)
    blanked["results"][0]["passed"] = REDACTED
    with pytest.raises(ValueError, match="redacted outside"):
        evidence_schema.validate_json(evidence_schema.SmokeTestsEvidence, json.dumps(blanked))


def _redact_by_substring(data: Any, key: str = "") -> Any:
    """The redaction that once blanked every verdict: any key *containing* a secret's name ("pass" in "passed")."""
    if isinstance(data, dict):
        return {k: _redact_by_substring(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [_redact_by_substring(v, key) for v in data]
    return REDACTED if "pass" in key.lower() else data


def test_the_writer_keeps_verdicts_and_a_substring_redaction_would_be_caught(tmp_path: Path) -> None:
    # Through the real writer (its redaction included), the files stay valid.
    files = good_files()
    evidence = Evidence(tmp_path / "run")
    for name, body in files.items():
        if isinstance(body, str):
            evidence.write_text(name, body)
        else:
            evidence.write_json(name, {k: v for k, v in body.items() if k != "schema_version"})
    evidence_schema.validate_folder(evidence.folder, RUN_ID, "failed")
    # The redaction that matched "pass" inside "passed" blanks the preflight verdicts: the schema refuses it.
    inputs = _redact_by_substring(files[steps.INPUTS_JSON])
    assert inputs["preflight"][0]["passed"] == REDACTED
    with pytest.raises(ValueError, match=r"redacted outside a secret's key: \['preflight\[0\]\.passed'"):
        evidence_schema.validate_json(evidence_schema.InputsEvidence, json.dumps(inputs))


def test_stability_errors_name_the_failed_request() -> None:
    """Every error of the window is typed; a failed request the router logged carries its path and status."""
    error = {"at": "2026-11-30T10:20:00.123+00:00", "source": "traffic", "detail": "HTTP 500 on /odoo/sale",
             "counted": True, "path": "/odoo/sale", "status": 500}
    traffic = {"router": "haproxy", "source": "show stat", "requests": 40, "responses_1xx": 0, "responses_2xx": 30,
               "responses_3xx": 0, "responses_4xx": 0, "responses_5xx": 10, "connection_errors": 0,
               "timed_requests": 40, "p95_ms": 12.0, "max_ms": 30.0}
    good = {"schema_version": 1, "window_seconds": 10, "samples": 20, "requests": 40, "http_errors": 10,
            "http_error_rate": 0.25, "db_connection_errors": 0, "process_crashes": 0, "passed": False,
            "reason": "HTTP errors 10 of 40 requests", "target": "http://127.0.0.1:1", "errors": [error],
            "judged_on": "router", "http_5xx": 10, "p95_ms": 12.0, "traffic": traffic,
            "thresholds": {"max_error_rate": 0.01, "max_5xx_responses": 50, "max_p95_ms": 5000,
                           "min_timed_requests": 20}}
    evidence_schema.validate_json(evidence_schema.StabilityEvidence, json.dumps(good))
    for change, complaint in (
            (lambda d: d["errors"][0].pop("path"), "path and status"),
            (lambda d: d["errors"][0].update(status="500"), "valid integer"),
            (lambda d: d["errors"][0].update(path="odoo/sale"), "pattern"),
            (lambda d: d["errors"][0].update(source="users"), "source"),
            (lambda d: d.update(traffic=None), "carries them"),
            (lambda d: d["traffic"].update(requests=-1), "greater than or equal to 0"),
            (lambda d: d["thresholds"].update(max_error_rate=0), "greater than 0")):
        bad = copy.deepcopy(good)
        change(bad)
        with pytest.raises(ValueError, match=complaint):
            evidence_schema.validate_json(evidence_schema.StabilityEvidence, json.dumps(bad))
