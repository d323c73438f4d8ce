"""The failure branches of the in-job rollback, each reached by a real fault, and the evidence of real runs checked
against its schema.

Each branch ends with the run's status in ops.runs, ``completed`` and ``problems`` in rollback.json, the events in
ops.run_events, the outcome ``promote run`` acts on (its exit code), and what the router itself serves (its
``X-Promote-Upstream`` response header, asked through the public entry point) all telling the same story, and
with every other safety action of the rollback done.

The faults are real: a stopped router, a trigger in PostgreSQL refusing a write, a privilege that keeps a role from
being dropped, a file where the evidence folder should be. To act at one exact point of a run, a test listens to the
progress lines, which the job says synchronously in its own thread as a step starts (no race with the job).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg import sql

from promote_pipeline.cli import sandbox as sandbox_mod
from promote_pipeline.cli.runner import EXIT_FAILED, run_promotion, run_rollback
from promote_pipeline.cli.sandbox import PROD, Sandbox
from promote_pipeline.odoo import carry_over
from promote_pipeline.promotion import deployment, evidence_schema, progress, steps
from promote_pipeline.promotion.models import PromotionOutcome
from promote_pipeline.promotion.services import Services
from resources.haproxy_router import HAProxyRouter
from resources.nginx_router import NginxRouter
from resources.ops_db import OpsDatabase, RunRecord
from resources.router import RouterError, RouterResource, RoutingState, Upstream

pytestmark = pytest.mark.slow

SANDBOX_DSN = "PROMOTE_SANDBOX_PG_DSN"


def served_upstream(box: Sandbox) -> str | None:
    """The deployment the router sends a user's request to, as the router says it (response header)."""
    url = box.status()["router_url"]
    resp = httpx.get(f"{url}/web/health", timeout=5)
    return resp.headers.get("X-Promote-Upstream")


@contextmanager
def on_step_start(step: steps.Step, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` in the job's thread as ``step`` starts, before its body (the line is said synchronously)."""
    line = f"{step.label} ..."

    def listener(said: str) -> None:
        if said == line:
            action()

    progress.subscribe(listener)
    try:
        yield
    finally:
        progress.unsubscribe(listener)


def query(ops_db: OpsDatabase, text: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with ops_db.connect() as conn:
        cur = conn.execute(text, params)
        return cur.fetchall() if cur.description else []


def running_run(ops_db: OpsDatabase) -> RunRecord:
    [row] = query(ops_db, "SELECT run_id FROM ops.runs WHERE status = 'running' AND operation_type = 'promote'")
    run = ops_db.run(row["run_id"])
    assert run is not None
    return run


def events(ops_db: OpsDatabase, run_id: str) -> list[dict[str, Any]]:
    return query(ops_db, "SELECT step, level, message, details FROM ops.run_events WHERE run_id = %s"
                         " ORDER BY event_id", (run_id,))


def promote(**overrides: Any) -> tuple[int, PromotionOutcome | None, str | None]:
    """The conftest's ``h.promote``, which a module-scoped fixture cannot take (``h`` is per test)."""
    return run_promotion({"project_id": sandbox_mod.PROJECT, "staging_env_id": sandbox_mod.STAGING,
                          "prod_env_id": PROD, "user_id": sandbox_mod.USER, "stability_window_seconds": 1,
                          **overrides}, quiet=True)


def write_fault(box: Sandbox, **faults: Any) -> None:
    """The conftest's ``h.write_fault``: fault switches for the stand-ins started from now on (blue is spared)."""
    (box.root / "faults" / f"{PROD}.json").write_text(json.dumps({"not_before": time.time(), **faults}))


def clear_faults(box: Sandbox) -> None:
    (box.root / "faults" / f"{PROD}.json").unlink(missing_ok=True)


def promote_with(router: RouterResource) -> tuple[int, PromotionOutcome | None, str | None]:
    return run_promotion({"project_id": sandbox_mod.PROJECT, "staging_env_id": sandbox_mod.STAGING,
                          "prod_env_id": PROD, "user_id": sandbox_mod.USER, "stability_window_seconds": 1},
                         quiet=True, resource_overrides={"router": router})


def refusing_preview_reset(box: Sandbox) -> RouterResource:
    """The sandbox's own router (same kind, same folder, same processes) whose preview entry point refuses to go
    back to blue. The one adapter method overridden, because no real fault can break only that switch: the preview
    and the public entry point change through the same runtime API, and stopping the router breaks both (that is
    the switch-back branch above)."""
    cfg = box.settings()
    base = NginxRouter if box.router_kind == "nginx" else HAProxyRouter

    class RefusingPreviewReset(base):  # type: ignore[valid-type,misc]
        def set_preview(self, environment_id: str, target: Upstream) -> RoutingState:
            if target.colour == "blue":
                raise RouterError("injected: the preview entry point refuses to change")
            return super().set_preview(environment_id, target)

    return RefusingPreviewReset(work_dir=cfg.router_dir, listen_host=cfg.router_listen_host)


def after_cutover(ops_db: OpsDatabase, action: Callable[[], None], timeout: float = 60) -> threading.Thread:
    """The conftest's ``h.after_cutover``, for the module-scoped fixture."""
    def wait() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ops_db.running_promotion_after_cutover():
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def read(outcome: Any, name: str) -> dict[str, Any]:
    data = json.loads((Path(outcome.evidence_dir) / name).read_text())
    assert isinstance(data, dict)
    return data


def read_text(outcome: Any, name: str) -> str:
    return (Path(outcome.evidence_dir) / name).read_text()


def active_counts(box: Sandbox, db: str) -> dict[str, int]:
    with box.resources()["odoo_host"].connect(SANDBOX_DSN, db) as conn:
        return carry_over.active_counts(conn)


# -- one success, one rollback and one failure per router, shared by the tests below ----------------------------
@pytest.fixture(scope="module", params=["haproxy", "nginx"])
def router_runs(request: pytest.FixtureRequest, sandbox_factory: Callable[[str], Sandbox],
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three promotions through one router, and what was seen at each moment that later ones change.

    - ``success``: a plain promotion;
    - ``preview``: green refuses logins, so the smoke tests fail with the preview entry point on green and the
      public one still on blue, and the router refuses to put the preview back on blue: the rollback needs no
      switch and cannot reset the preview;
    - ``failed``: the router stopped after the cutover: the stability window fails and the switch back to blue is
      refused. Its evidence is copied before a manual rollback (router started again) puts traffic back on blue.
    """
    box = sandbox_factory(request.param)
    router = box.resources()["router"]
    ops_db: OpsDatabase = box.resources()["ops_db"]
    seen: dict[str, Any] = {"box": box, "router": request.param}

    code, outcome, message = promote()
    assert code == 0, message
    seen["success"] = outcome

    blue = box.status()["serving"]["deployment"]
    seen["preview_blue"] = blue
    try:
        write_fault(box, refuse_login=True)
        seen["preview_result"] = promote_with(refusing_preview_reset(box))
    finally:
        clear_faults(box)
    seen["preview_served"] = served_upstream(box)

    blue = box.status()["serving"]["deployment"]
    seen["failed_blue"] = blue
    blue_counts = active_counts(box, ops_db.deployment(blue).db_name)
    try:
        watcher = after_cutover(ops_db, router.stop)
        seen["failed_result"] = promote(stability_window_seconds=8)
        watcher.join(timeout=90)  # never outlives this fixture: it fires at the cutover or gives up at 60 s
        assert not watcher.is_alive()
    finally:
        router.start()
    _, failed, _ = seen["failed_result"]
    assert failed is not None
    copy = tmp_path_factory.mktemp(f"failed-{request.param}")
    shutil.copytree(failed.evidence_dir, copy, dirs_exist_ok=True)
    seen["failed_evidence"] = copy
    seen["failed_row"] = ops_db.run(failed.run_id)
    seen["failed_events"] = events(ops_db, failed.run_id)
    seen["failed_greens"] = ops_db.deployments_created_by(failed.run_id)
    seen["failed_green_alive"] = [box.resources()["odoo_host"].is_alive(g.pid) for g in seen["failed_greens"]]
    seen["failed_served"] = served_upstream(box)
    seen["failed_blue_counts_before"] = blue_counts
    seen["failed_blue_counts_after"] = active_counts(box, ops_db.deployment(blue).db_name)
    # An operator's answer once the router is back: the rollback job, as `promote rollback` runs it.
    seen["manual_result"] = run_rollback(failed.run_id, "router back after the failed switch", "ops-oncall",
                                         quiet=True)
    seen["manual_served"] = served_upstream(box)
    seen["manual_row"] = ops_db.run(failed.run_id)
    return seen


def test_switch_back_to_blue_failing_leaves_the_run_failed_and_says_so(router_runs: dict[str, Any]) -> None:
    code, outcome, message = router_runs["failed_result"]
    assert code == EXIT_FAILED and outcome is not None and outcome.status == "failed", message
    assert router_runs["failed_row"].status == "failed"
    folder: Path = router_runs["failed_evidence"]
    rollback = json.loads((folder / steps.ROLLBACK_JSON).read_text())
    assert rollback["triggered"] is True and rollback["completed"] is False
    assert rollback["failed_step"] == steps.MONITOR_STABILITY.name
    assert "RouterError" in rollback["error"] and "not running" in rollback["error"]
    final = json.loads((folder / steps.FINAL_STATUS_JSON).read_text())
    assert final["status"] == "failed" and final["failed_step"] == steps.MONITOR_STABILITY.name
    summary = (folder / steps.PROMOTION_SUMMARY_MD).read_text()
    assert "THE ROLLBACK DID NOT COMPLETE" in summary and "Traffic back on blue" not in summary
    logged = [(e["step"], e["level"]) for e in router_runs["failed_events"]]
    assert (steps.MONITOR_STABILITY.name, "error") in logged
    [rollback_error] = [e for e in router_runs["failed_events"] if e["step"] == "rollback"]
    assert rollback_error["level"] == "error" and "not running" in rollback_error["message"]
    # Green still has the traffic (the router, started again, serves it): it was not stopped under its users,
    # and blue's crons and mail stay fenced off, since green's run.
    [green] = router_runs["failed_greens"]
    assert router_runs["failed_green_alive"] == [True]
    assert router_runs["failed_served"] == green.deployment_id
    assert router_runs["failed_blue_counts_after"]["active_crons"] == 0
    # The manual rollback then puts traffic back on blue, and blue's crons back as they were.
    code, result, message = router_runs["manual_result"]
    assert code == 0 and result and result["action"] == "rolled_back", message
    assert router_runs["manual_served"] == router_runs["failed_blue"]
    assert router_runs["manual_row"].status == "rolled_back"


def test_preview_reset_failing_still_rolls_back_and_says_what_failed(router_runs: dict[str, Any], h: Any) -> None:
    code, outcome, message = router_runs["preview_result"]
    assert code == EXIT_FAILED and outcome is not None and outcome.status == "rolled_back", message
    box: Sandbox = router_runs["box"]
    ops_db: OpsDatabase = box.resources()["ops_db"]
    assert ops_db.run(outcome.run_id).status == "rolled_back"
    rollback = read(outcome, steps.ROLLBACK_JSON)
    assert rollback["completed"] is True and rollback["router_switched_back"] is False
    [problem] = rollback["problems"]
    assert problem["part"] == "preview_reset" and "injected: the preview entry point refuses" in problem["error"]
    warnings = [e for e in events(ops_db, outcome.run_id) if e["step"] == "rollback"]
    assert [(e["level"], e["details"]["part"]) for e in warnings] == [("warning", "preview_reset")]
    # Everything else was done: green stopped and removed, traffic on blue (asked of the router).
    [green] = ops_db.deployments_created_by(outcome.run_id)
    assert green.state == "deleted" and not box.resources()["odoo_host"].is_alive(green.pid)
    assert rollback["green_stopped"] is True
    assert router_runs["preview_served"] == router_runs["preview_blue"]


# -- the evidence of those runs, against its schema ---------------------------------------------------------------
def check_dump_files(artifact: evidence_schema.Artifact) -> None:
    """The dump's files hashed here, independently of the store: each is the one its checksum names, and the
    directory's digest covers exactly them."""
    folder = Path(artifact.db_dump.path)
    on_disk = {p.name for p in folder.iterdir() if p.is_file()}
    assert on_disk == {f.name for f in artifact.db_dump.files}
    for f in artifact.db_dump.files:
        data = (folder / f.name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (f.sha256, f.size_bytes), f.name
    lines = "".join(f"{f.sha256}  {f.size_bytes}  {f.name}\n" for f in sorted(artifact.db_dump.files,
                                                                             key=lambda f: f.name))
    assert hashlib.sha256(lines.encode()).hexdigest() == artifact.db_dump.sha256
    index = Path(artifact.filestore.path).read_bytes()
    assert (hashlib.sha256(index).hexdigest(), len(index)) == (artifact.filestore.sha256,
                                                                artifact.filestore.index_bytes)


def test_evidence_of_a_success_matches_its_schema(router_runs: dict[str, Any]) -> None:
    outcome = router_runs["success"]
    folder = Path(outcome.evidence_dir)
    checked = evidence_schema.validate_folder(folder, run_id=outcome.run_id, status="success")
    assert checked == steps.evidence_files()
    final = evidence_schema.FinalStatusEvidence.model_validate_json((folder / steps.FINAL_STATUS_JSON).read_text())
    assert (final.blue_backup_id, final.green_artifact_id) == (outcome.blue_backup_id, outcome.green_artifact_id)
    # The checksums name the artifacts' real files (both still kept: blue's for the rollback window).
    for name, model, artifact_id in (
            (steps.BLUE_BACKUP_JSON, evidence_schema.ArtifactEvidence, outcome.blue_backup_id),
            (steps.STAGING_SNAPSHOT_JSON, evidence_schema.StagingSnapshotEvidence, outcome.green_artifact_id)):
        body = model.model_validate_json((folder / name).read_text())
        assert isinstance(body, evidence_schema.ArtifactEvidence) and body.artifact_id == artifact_id
        check_dump_files(body.artifact)
    inputs = evidence_schema.InputsEvidence.model_validate_json((folder / steps.INPUTS_JSON).read_text())
    assert inputs.prod_env_id == PROD and all(r.passed is True for r in inputs.preflight)
    # The run's row names the Dagster run that executed it: a UUID.
    row = router_runs["box"].resources()["ops_db"].run(outcome.run_id)
    assert row is not None and re.fullmatch(evidence_schema.DAGSTER_RUN_ID, str(row.dagster_run_id))


def test_evidence_of_a_rollback_matches_its_schema(router_runs: dict[str, Any]) -> None:
    _, outcome, _ = router_runs["preview_result"]
    checked = evidence_schema.validate_folder(Path(outcome.evidence_dir), run_id=outcome.run_id,
                                              status="rolled_back")
    assert sorted(checked) == sorted(steps.evidence_files())


def test_evidence_of_a_failure_then_its_manual_rollback_matches_its_schema(router_runs: dict[str, Any]) -> None:
    _, outcome, _ = router_runs["failed_result"]
    evidence_schema.validate_folder(router_runs["failed_evidence"], run_id=outcome.run_id, status="failed")
    # The rollback job rewrote rollback.json and final_status.json of the same run.
    evidence_schema.validate_folder(Path(outcome.evidence_dir), run_id=outcome.run_id, status="rolled_back")


# -- branches the router does not decide: one router is enough --------------------------------------------------
REFUSE_FUNCTION = ("CREATE FUNCTION promote_test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
                   " $$ BEGIN RAISE EXCEPTION 'injected: ir_cron is read-only'; END $$")
REFUSE_TRIGGER = ("CREATE TRIGGER promote_test_refuse BEFORE UPDATE ON ir_cron"
                  " FOR EACH STATEMENT EXECUTE FUNCTION promote_test_refuse()")
UNREFUSE = ("DROP TRIGGER IF EXISTS promote_test_refuse ON ir_cron", "DROP FUNCTION IF EXISTS promote_test_refuse()")


@pytest.mark.parametrize("refusing", ["green", "blue"])
def test_unfencing_failing_on_one_side_still_does_the_other_and_says_so(haproxy_box: Sandbox, h: Any,
                                                                        refusing: str) -> None:
    """Green refusing to be fenced off must not leave blue without its crons and mail; blue refusing them back is
    reported loudly (blue serves without them), and green is fenced off all the same."""
    box = haproxy_box
    host = box.resources()["odoo_host"]
    ops_db: OpsDatabase = box.resources()["ops_db"]
    blue = ops_db.deployment(box.status()["serving"]["deployment"])
    assert blue is not None
    blue_counts = active_counts(box, blue.db_name)
    assert blue_counts["active_crons"] > 0  # else "restored" could not be told from "left off"
    fault_path = box.root / "faults" / f"{PROD}.json"
    not_before = time.time()  # the fault then spares blue, started before
    greens: list[Any] = []

    def refuse_cron_writes() -> None:
        # After the cutover (which turned blue's crons off and green's on), one side's database refuses every write
        # to ir_cron; then green fails its stability window.
        [green] = ops_db.deployments_created_by(running_run(ops_db).run_id)
        greens.append(green)
        with host.connect(SANDBOX_DSN, (green if refusing == "green" else blue).db_name, autocommit=True) as conn:
            conn.execute(REFUSE_FUNCTION)
            conn.execute(REFUSE_TRIGGER)
        fault_path.write_text(json.dumps({"not_before": not_before, "error_rate": 0.5}))

    watcher = h.after_cutover(box, refuse_cron_writes)
    try:
        code, outcome, message = h.promote(stability_window_seconds=8)
    finally:
        try:
            watcher.finish(required=False)  # whether it fired is what the assertions below are about
        finally:
            h.clear_faults(box)  # never left behind: every later promotion in this sandbox would fail
            with host.connect(SANDBOX_DSN, blue.db_name, autocommit=True) as conn:
                for statement in UNREFUSE:
                    conn.execute(statement)
    [green] = greens
    refused = green if refusing == "green" else blue
    try:
        assert code == EXIT_FAILED and outcome is not None and outcome.status == "rolled_back", message
        assert ops_db.run(outcome.run_id).status == "rolled_back"
        rollback = read(outcome, steps.ROLLBACK_JSON)
        assert rollback["completed"] is True and rollback["router_switched_back"] is True
        [problem] = rollback["problems"]
        assert problem["part"] == "unfence" and problem["deployment"] == refused.deployment_id
        assert "injected: ir_cron is read-only" in problem["error"]
        assert rollback["fence"]["errors"] == {refused.deployment_id: problem["error"]}
        [warning] = [e for e in events(ops_db, outcome.run_id) if e["step"] == "rollback"]
        assert warning["level"] == "warning" and "injected" in warning["message"]
        # The other safety actions: traffic on blue, green stopped and kept, and the side that did not refuse
        # fenced as it should be.
        assert served_upstream(box) == blue.deployment_id
        green_now = ops_db.deployment(green.deployment_id)
        assert green_now and green_now.state == "retired" and not host.is_alive(green.pid)
        if refusing == "green":
            assert active_counts(box, blue.db_name) == blue_counts
        else:
            assert active_counts(box, blue.db_name)["active_crons"] == 0  # what the problem above reports
            assert active_counts(box, green.db_name) == {"active_crons": 0, "active_mail_servers": 0}
            assert rollback["fence"]["green_turned_off"][green.deployment_id]["crons_off"] > 0
        evidence_schema.validate_folder(Path(outcome.evidence_dir), run_id=outcome.run_id, status="rolled_back")
    finally:
        if refusing == "blue":  # blue's crons and mail back as they were, for the tests after this one
            plan = carry_over.FencePlan.model_validate(ops_db.run(outcome.run_id).metadata["fence"])  # type: ignore
            with host.connect(SANDBOX_DSN, blue.db_name, autocommit=True) as conn:
                carry_over.at_rollback_blue(conn, plan)
            assert active_counts(box, blue.db_name) == blue_counts


def test_green_cleanup_failing_is_reported_and_the_rollback_completes(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    res = box.resources()
    ops_db: OpsDatabase = res["ops_db"]
    blue = box.status()["serving"]["deployment"]
    greens: list[Any] = []
    grant = "GRANT CONNECT ON DATABASE {} TO {}"

    def keep_green_role() -> None:
        # A privilege on another database keeps PostgreSQL from dropping green's role (DROP ROLE refuses).
        [green] = ops_db.deployments_created_by(running_run(ops_db).run_id)
        greens.append(green)
        with res["odoo_host"].connect(SANDBOX_DSN, "postgres", autocommit=True) as conn:
            conn.execute(sql.SQL(grant).format(sql.Identifier(ops_db.database), sql.Identifier(green.db_role)))

    h.write_fault(box, refuse_login=True)
    try:
        with on_step_start(steps.SMOKE_TEST_GREEN, keep_green_role):
            code, outcome, message = h.promote()
    finally:
        h.clear_faults(box)
    [green] = greens
    try:
        assert code == EXIT_FAILED and outcome is not None and outcome.status == "rolled_back", message
        assert ops_db.run(outcome.run_id).status == "rolled_back"
        rollback = read(outcome, steps.ROLLBACK_JSON)
        assert rollback["completed"] is True
        [problem] = rollback["problems"]
        assert problem["part"] == "green_cleanup" and "cannot be dropped" in problem["error"]
        [warning] = [e for e in events(ops_db, outcome.run_id) if e["step"] == "rollback"]
        assert warning["level"] == "warning" and warning["details"]["part"] == "green_cleanup"
        summary = read_text(outcome, steps.PROMOTION_SUMMARY_MD)
        assert "clean-up incomplete" in summary and "removed (it never served traffic)" not in summary
        assert f"- green_cleanup: {problem['error']}" in summary
        # Stopped all the same, its database dropped, and its record not claiming more than was done.
        assert rollback["green_stopped"] is True and not res["odoo_host"].is_alive(green.pid)
        assert not res["odoo_host"].database_exists(SANDBOX_DSN, green.db_name)
        green_now = ops_db.deployment(green.deployment_id)
        assert green_now and green_now.state != "deleted"
        assert served_upstream(box) == blue
    finally:
        with res["odoo_host"].connect(SANDBOX_DSN, "postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                sql.Identifier(ops_db.database), sql.Identifier(green.db_role)))
        prod = ops_db.environment(PROD)
        assert prod is not None
        deployment.remove(Services.from_resources(res), prod.db_dsn_ref, green)
        ops_db.mark_deployment_deleted(green.deployment_id)


def test_event_write_failing_is_recorded_in_the_evidence_and_the_run(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    ops_db: OpsDatabase = box.resources()["ops_db"]
    blue = box.status()["serving"]["deployment"]
    # ops.run_events refuses error events (what a failure writes first); info events of the steps still go in.
    query(ops_db, "CREATE FUNCTION ops.promote_test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
                      " $$ BEGIN RAISE EXCEPTION 'injected: run_events refused'; END $$")
    query(ops_db, "CREATE TRIGGER promote_test_refuse BEFORE INSERT ON ops.run_events FOR EACH ROW"
                      " WHEN (NEW.level = 'error') EXECUTE FUNCTION ops.promote_test_refuse()")
    h.write_fault(box, refuse_login=True)
    try:
        code, outcome, message = h.promote()
    finally:
        h.clear_faults(box)
        query(ops_db, "DROP TRIGGER promote_test_refuse ON ops.run_events")
        query(ops_db, "DROP FUNCTION ops.promote_test_refuse()")
    assert code == EXIT_FAILED and outcome is not None and outcome.status == "rolled_back", message
    row = ops_db.run(outcome.run_id)
    assert row and row.status == "rolled_back"
    assert "injected: run_events refused" in row.metadata["event_log_error"]
    rollback = read(outcome, steps.ROLLBACK_JSON)
    assert rollback["completed"] is True and "injected: run_events refused" in rollback["event_log_error"]
    assert [e for e in events(ops_db, outcome.run_id) if e["level"] == "error"] == []
    [green] = ops_db.deployments_created_by(outcome.run_id)
    assert green.state == "deleted" and not box.resources()["odoo_host"].is_alive(green.pid)
    assert served_upstream(box) == blue


def test_evidence_write_failing_still_rolls_back_and_records_why(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    ops_db: OpsDatabase = box.resources()["ops_db"]
    blue = box.status()["serving"]["deployment"]
    moved: list[Path] = []

    def block_evidence_folder() -> None:
        # A regular file where the run's evidence folder was: every later write fails with an OSError, root or not.
        folder = Path(str(running_run(ops_db).evidence_dir))
        folder.rename(folder.with_name(folder.name + ".aside"))
        folder.write_text("")
        moved.append(folder)

    try:
        with on_step_start(steps.SMOKE_TEST_GREEN, block_evidence_folder):
            code, outcome, message = h.promote()
    finally:
        for folder in moved:
            folder.unlink()
            folder.with_name(folder.name + ".aside").rename(folder)
    assert code == EXIT_FAILED and outcome is not None and outcome.status == "rolled_back", message
    row = ops_db.run(outcome.run_id)
    assert row and row.status == "rolled_back" and row.metadata["failed_step"] == steps.SMOKE_TEST_GREEN.name
    assert "FileExistsError" in row.metadata["evidence_error"]
    [logged] = [e for e in events(ops_db, outcome.run_id) if e["step"] == "evidence"]
    assert logged["level"] == "error" and "FileExistsError" in logged["message"]
    # The rollback did everything else: green stopped and removed, traffic on blue.
    [green] = ops_db.deployments_created_by(outcome.run_id)
    assert green.state == "deleted" and not box.resources()["odoo_host"].is_alive(green.pid)
    assert served_upstream(box) == blue
    assert not (Path(outcome.evidence_dir) / steps.ROLLBACK_JSON).exists()  # nothing claims more than was written


def test_manual_rollback_whose_evidence_cannot_be_written_still_marks_the_run(haproxy_box: Sandbox, h: Any) -> None:
    """`promote rollback` of a success: traffic back on blue and the run `rolled_back`, even when its evidence
    folder has become unwritable (the status was once written after the evidence, and stayed `success`)."""
    box = haproxy_box
    ops_db: OpsDatabase = box.resources()["ops_db"]
    blue = box.status()["serving"]["deployment"]
    code, outcome, message = h.promote()
    assert code == 0 and outcome is not None, message
    folder = Path(outcome.evidence_dir)
    aside = folder.with_name(folder.name + ".aside")
    folder.rename(aside)
    folder.write_text("")  # a regular file where the folder was: every write fails with an OSError, root or not
    try:
        code, result, message = run_rollback(outcome.run_id, "customer reports", "ops-oncall", quiet=True)
    finally:
        folder.unlink()
        aside.rename(folder)
    assert code == 0 and result and result["action"] == "rolled_back", message
    row = ops_db.run(outcome.run_id)
    assert row and row.status == "rolled_back" and "FileExistsError" in row.metadata["evidence_error"]
    [logged] = [e for e in events(ops_db, outcome.run_id) if e["step"] == "evidence"]
    assert logged["level"] == "error" and "FileExistsError" in logged["message"]
    assert served_upstream(box) == blue
    # The evidence of the promotion itself is untouched: it still says what the promotion did.
    evidence_schema.validate_folder(folder, run_id=outcome.run_id, status="success")
