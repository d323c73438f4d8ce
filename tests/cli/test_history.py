"""`promote history`, `promote show` and `promote live` after real sandbox promotions (a success, then one rolled
back), the outcome tags on the Dagster runs (executed on a real DagsterInstance), and the summary's closing section.

Real sandbox: PostgreSQL, HAProxy, odoo_standin processes; the commands run through `promote`'s own entry point.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance

from promote_pipeline.cli import sandbox as sandbox_mod
from promote_pipeline.cli.main import main
from promote_pipeline.cli.sandbox import PROD, STAGING, Sandbox
from promote_pipeline.defs.promotion_job import DESCRIPTION_TAG, OUTCOME_TAG
from promote_pipeline.promotion.models import PromotionOutcome

pytestmark = pytest.mark.slow


def promote_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture(scope="module")
def two_runs(sandbox_factory: Callable[[str], Sandbox],
             instance: DagsterInstance) -> Iterator[tuple[PromotionOutcome, PromotionOutcome]]:
    """A successful promotion, then one whose smoke tests fail (rolled back before its cutover), both executed on
    ``instance``; once for the module's tests, which only read."""
    from promote_pipeline.cli.runner import run_promotion

    box = sandbox_factory("haproxy")
    inputs = {"project_id": sandbox_mod.PROJECT, "staging_env_id": STAGING, "prod_env_id": PROD,
              "user_id": sandbox_mod.USER, "stability_window_seconds": 1}
    code, ok, message = run_promotion(inputs, quiet=True, instance=instance)
    assert code == 0 and ok is not None, message
    fault = box.root / "faults" / f"{PROD}.json"  # as the suite's write_fault: green's logins refused
    fault.write_text(json.dumps({"not_before": time.time(), "refuse_login": True}))
    try:
        code, back, message = run_promotion(inputs, quiet=True, instance=instance)
    finally:
        fault.unlink(missing_ok=True)
    assert code == 1 and back is not None and back.status == "rolled_back", message
    yield ok, back


def test_outcome_tags_and_a_one_line_failure_on_the_dagster_runs(haproxy_box: Sandbox, two_runs: Any,
                                                                  instance: DagsterInstance) -> None:
    ok, back = two_runs
    ops_db = haproxy_box.resources()["ops_db"]
    ok_run = instance.get_run_by_id(ops_db.run(ok.run_id).dagster_run_id)
    back_run = instance.get_run_by_id(ops_db.run(back.run_id).dagster_run_id)
    assert ok_run is not None and back_run is not None
    assert ok_run.tags[OUTCOME_TAG] == "success"
    assert ok_run.tags[DESCRIPTION_TAG].startswith("promotion succeeded: ")
    assert back_run.tags[OUTCOME_TAG] == "rolled_back"
    description = back_run.tags[DESCRIPTION_TAG]
    assert description.startswith("promotion ROLLED BACK: smoke_test_green failed: smoke tests failed")
    assert back.run_id in description and "\n" not in description
    failures = [e for e in instance.all_logs(back_run.run_id, of_type=DagsterEventType.STEP_FAILURE)]
    assert len(failures) == 1
    data = failures[0].dagster_event.step_failure_data
    assert data.user_failure_data.description.endswith("; the run is rolled_back")
    assert "\n" not in data.user_failure_data.description and "Traceback" not in data.user_failure_data.description


def test_history_lists_both_newest_first(haproxy_box: Sandbox, two_runs: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ok, back = two_runs
    code, out, err = promote_cli(capsys, "history", "--env", PROD, "--limit", "2", "--json")
    assert code == 0, err
    entries = json.loads(out)
    assert [e["run_id"] for e in entries] == [back.run_id, ok.run_id]
    newest, older = entries
    assert (newest["status"], older["status"]) == ("rolled_back", "success")
    assert newest["staging_env_id"] == STAGING and newest["prod_env_id"] == PROD
    assert newest["cutover_at"] is None and newest["rolled_back_at"] is not None
    assert older["cutover_at"] == ok.cutover_timestamp and older["rolled_back_at"] is None
    assert older["blue_deletion_status"] == "pending" and older["blue_deletion_at"] is not None
    assert older["duration_seconds"] > 0

    code, out, err = promote_cli(capsys, "history", "--env", PROD, "--limit", "2")
    assert code == 0, err
    header, first, second = out.splitlines()
    assert header.split()[:3] == ["STARTED", "RUN", "STAGING"]
    assert back.run_id in first and "rolled_back" in first
    assert ok.run_id in second and "success" in second and "(pending)" in second


@pytest.mark.parametrize("args, message", [
    (("history", "--limit", "0"), "history refused: --limit: must be 1 to 1000 (got 0)"),
    (("history", "--env", "env_nowhere"), "history refused: --env: no environment env_nowhere in the ops database"),
    (("show", "run_19700101T000000_deadbeef"), "show refused: run: no run run_19700101T000000_deadbeef in the ops"
                                               " database"),
    (("show", "0b5a4a8e-1111-2222-3333-444455556666"), "show refused: run: no run 0b5a4a8e-1111-2222-3333"),
    (("status", "run_19700101T000000_deadbeef"), "status refused: run: no run run_19700101T000000_deadbeef"),
])
def test_bad_input_is_one_line_and_exit_2(haproxy_box: Sandbox, capsys: pytest.CaptureFixture[str],
                                          args: tuple[str, ...], message: str) -> None:
    code, out, err = promote_cli(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(message), err


def test_show_accepts_either_id(haproxy_box: Sandbox, two_runs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ok, back = two_runs
    ops_db = haproxy_box.resources()["ops_db"]
    for outcome in (ok, back):
        summary = (Path(outcome.evidence_dir) / "promotion_summary.md").read_text()
        by_run = promote_cli(capsys, "show", outcome.run_id)
        by_dagster = promote_cli(capsys, "show", ops_db.run(outcome.run_id).dagster_run_id)
        assert by_run == by_dagster == (0, summary, "")
    code, out, _ = promote_cli(capsys, "show", back.run_id, "--json")
    assert code == 0 and json.loads(out)["run"]["status"] == "rolled_back"


def test_the_summaries_end_with_what_is_live_and_how_to_roll_back(two_runs: Any) -> None:
    ok, back = two_runs
    ok_text = (Path(ok.evidence_dir) / "promotion_summary.md").read_text()
    live_now = ok_text.split("## Live now\n", 1)[1]
    assert "is served by green `" in live_now and ok.cutover_timestamp in live_now
    assert f"`promote rollback {ok.run_id} --reason \"why\"`" in live_now
    assert "will be deleted at" in live_now and f"promote window {ok.run_id} --hours N" in live_now
    back_text = (Path(back.evidence_dir) / "promotion_summary.md").read_text()
    back_now = back_text.split("## Live now\n", 1)[1]
    assert "is still served by blue `" in back_now and "the run never cut over" in back_now
    assert "`promote live`" in back_now
    assert f"`promote validate {PROD}`" in back_now


def test_live_names_the_routers_actual_upstream(haproxy_box: Sandbox, two_runs: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ok, _ = two_runs
    res = haproxy_box.resources()
    served = res["router"].served_upstream(PROD).name
    assert served == res["ops_db"].active_deployment(PROD).deployment_id
    # Other tests of this worker may add production environments to the same sandbox: ask about this one.
    code, out, err = promote_cli(capsys, "live", "--env", PROD, "--json")
    assert code == 0, err
    [entry] = [e for e in json.loads(out) if e["environment_id"] == PROD]
    assert entry["router_serves"] == served and entry["recorded"] == served and entry["agrees"] is True
    # the rolled-back run never cut over: the success before it still serves, since its cutover
    assert (entry["how"], entry["by_run"]) == ("cutover", ok.run_id)
    assert entry["since"].replace("Z", "+00:00") == ok.cutover_timestamp
    assert entry["blue_deletion_status"] == "pending"
    assert entry["rollback_command"] == f'promote rollback {ok.run_id} --reason "why"'
    code, out, err = promote_cli(capsys, "live", "--env", PROD)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith(f"{PROD}: "))
    assert line.startswith(f"{PROD}: {served} serves since ") and f"the cutover of run {ok.run_id}" in line
    assert f'  roll back: promote rollback {ok.run_id} --reason "why"' in out.splitlines()
    code, out, err = promote_cli(capsys, "live", "--env", "no_such_env")
    assert (code, out) == (2, "") and err.strip() == (
        "live refused: --env: no_such_env is not a production environment in the ops database")
