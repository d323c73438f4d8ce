"""Gates through the real job: input rules, the seven preconditions and staging's reachability each refuse on their own,
leave nothing but the rejection record, and the Enterprise-module guardrail refuses before any
restore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from promote_pipeline.cli.drills import full_disk
from promote_pipeline.cli.sandbox import DSN_REF, PROD, STAGING, Sandbox
from resources.artifact_store import LocalArtifactStore

pytestmark = pytest.mark.slow


def _counts(box: Sandbox, h: Any) -> dict[str, int]:
    ops_db = box.resources()["ops_db"]
    return {t: h.ops_sql(ops_db, f"SELECT count(*) AS n FROM ops.{t}")[0]["n"]  # noqa: S608 - fixed names
            for t in ("runs", "deployments", "artifacts", "rejections", "scheduled_tasks")}


def _assert_rejected(box: Sandbox, h: Any, check: str, fragment: str, **inputs: Any) -> None:
    before = _counts(box, h)
    code, outcome, message = h.promote(**inputs)
    assert code == 2 and outcome is None, message
    assert message is not None and message.startswith(f"promotion rejected: {check}:") and fragment in message
    after = _counts(box, h)
    assert after == {**before, "rejections": before["rejections"] + 1}
    [last] = h.ops_sql(box.resources()["ops_db"],
                       "SELECT check_name, message FROM ops.rejections ORDER BY rejection_id DESC LIMIT 1")
    assert last["check_name"] == check


@pytest.mark.parametrize("inputs,check,fragment", [
    ({"rollback_window_hours": 0}, "rollback_window_hours", ">= 1"),
    ({"rollback_window_hours": 169}, "rollback_window_hours", "<= 168"),
    ({"skip_smoke_tests": True}, "skip_smoke_tests", "must be false for production"),
    ({"prod_env_id": "env_nope"}, "prod_env_id", "does not exist"),
    ({"staging_env_id": "x'; DROP TABLE ops.runs;--"}, "staging_env_id", "ASCII"),
    ({"user_id": "../root"}, "user_id", "ASCII"),
    ({"prod_env_id": STAGING}, "prod_env_id", "must differ"),
])
def test_input_rules_refuse(haproxy_box: Sandbox, h: Any, inputs: dict[str, Any], check: str,
                            fragment: str) -> None:
    _assert_rejected(haproxy_box, h, check, fragment, **inputs)


@contextmanager
def _sql(box: Sandbox, h: Any, do: str, undo: str, params: tuple[Any, ...] = ()) -> Iterator[None]:
    ops_db = box.resources()["ops_db"]
    h.ops_sql(ops_db, do, params)
    try:
        yield
    finally:
        h.ops_sql(ops_db, undo, params if "%s" in undo else ())


def test_1_project_must_exist(haproxy_box: Sandbox, h: Any) -> None:
    _assert_rejected(haproxy_box, h, "project_exists", "no row", project_id="proj_missing")


def test_2_staging_must_be_successful(haproxy_box: Sandbox, h: Any) -> None:
    with _sql(haproxy_box, h,
              "INSERT INTO ops.runs (run_id, project_id, environment_id, operation_type, status, created_by)"
              " VALUES ('run_failed_deploy', 'proj_demo', %s, 'deploy', 'failed', 'ci')",
              "DELETE FROM ops.runs WHERE run_id = 'run_failed_deploy'", (STAGING,)):
        _assert_rejected(haproxy_box, h, "staging_successful", "'failed'")


def test_3_commit_sha_must_match(haproxy_box: Sandbox, h: Any) -> None:
    with _sql(haproxy_box, h,
              "UPDATE ops.environments SET git_commit_sha = reverse(git_commit_sha) WHERE environment_id = %s",
              "UPDATE ops.environments SET git_commit_sha = reverse(git_commit_sha) WHERE environment_id = %s",
              (STAGING,)):
        _assert_rejected(haproxy_box, h, "same_commit_sha", "but production targets")


def test_4_caller_needs_promote_permission(haproxy_box: Sandbox, h: Any) -> None:
    _assert_rejected(haproxy_box, h, "promote_permission", "lacks 'promote'", user_id="mallory")


def test_5_no_concurrent_operation(haproxy_box: Sandbox, h: Any) -> None:
    lock = haproxy_box.resources()["ops_db"].try_lock_environment(PROD)
    assert lock is not None
    try:
        _assert_rejected(haproxy_box, h, "no_concurrent_operations", "is busy")
    finally:
        lock.release()


def test_6_production_must_be_accessible(haproxy_box: Sandbox, h: Any) -> None:
    ops_db = haproxy_box.resources()["ops_db"]
    blue = ops_db.active_deployment(PROD)
    fs = haproxy_box.resources()["odoo_host"].filestore_dir(blue.data_dir, blue.served_db)
    fs.rename(fs.with_name(fs.name + ".away"))
    try:
        _assert_rejected(haproxy_box, h, "production_accessible", "filestore")
    finally:
        fs.with_name(fs.name + ".away").rename(fs)


def test_7_disk_space_must_hold_three_times_production(haproxy_box: Sandbox, h: Any) -> None:
    """The artifact store on a real full disk: a 1 MiB tmpfs filled until the kernel refuses another byte (the
    disk-full drill's own, so that the drill and this test fill a disk one way)."""
    with full_disk() as disk:
        if disk is None:
            pytest.skip("mounting a tmpfs for a real full disk needs root")
        store = LocalArtifactStore(root=str(disk / "artifacts"))
        _assert_rejected(haproxy_box, h, "sufficient_disk_space", f"artifact store {disk / 'artifacts'} has 0 MiB free",
                         resource_overrides={"artifact_store": store})
        assert list((disk / "artifacts").iterdir()) == []  # nothing was written to the full disk


def test_enterprise_module_is_refused_before_any_restore(haproxy_box: Sandbox, h: Any) -> None:
    res = haproxy_box.resources()
    staging = res["ops_db"].active_deployment(STAGING)
    live_before = haproxy_box.status()["serving"]["deployment"]
    with res["odoo_host"].connect(DSN_REF, staging.db_name) as conn:
        conn.execute("INSERT INTO ir_module_module (name, state, latest_version, license)"
                     " VALUES ('web_enterprise', 'installed', '17.0.1.0', 'OEEL-1')")
    try:
        code, outcome, message = h.promote()
    finally:
        with res["odoo_host"].connect(DSN_REF, staging.db_name) as conn:
            conn.execute("DELETE FROM ir_module_module WHERE name = 'web_enterprise'")
    assert code == 1 and outcome is not None and outcome.status == "failed"
    assert message and "forbid_enterprise_modules" in message and "web_enterprise" in message
    assert res["ops_db"].deployments_created_by(outcome.run_id) == []
    final = json.loads((h.evidence(outcome) / "final_status.json").read_text())
    assert final["failed_step"] == "snapshot_staging"
    assert json.loads((h.evidence(outcome) / "green_restore.json").read_text())["reached"] is False
    assert haproxy_box.status()["serving"]["deployment"] == live_before


def test_staging_database_must_be_reachable(haproxy_box: Sandbox, h: Any) -> None:
    """A staging whose database is gone is refused by a check of its own, not as an Odoo version mismatch."""
    staging = haproxy_box.resources()["ops_db"].active_deployment(STAGING)
    assert staging is not None
    ops_db = haproxy_box.resources()["ops_db"]
    h.ops_sql(ops_db, "UPDATE ops.deployments SET db_name = db_name || '_gone' WHERE deployment_id = %s",
              (staging.deployment_id,))
    try:
        _assert_rejected(haproxy_box, h, "staging_accessible", f"staging database {staging.db_name}_gone")
    finally:
        h.ops_sql(ops_db, "UPDATE ops.deployments SET db_name = %s WHERE deployment_id = %s",
                  (staging.db_name, staging.deployment_id))


def test_a_missing_artifact_root_is_refused_not_created(haproxy_box: Sandbox, h: Any, tmp_path: Any) -> None:
    """A typo or an unmounted volume must not send backups elsewhere: unless create_artifact_root says so."""
    from resources.artifact_store import LocalArtifactStore

    missing = tmp_path / "unmounted" / "artifacts"
    _assert_rejected(haproxy_box, h, "sufficient_disk_space", f"artifact_root {missing} does not exist",
                     resource_overrides={"artifact_store": LocalArtifactStore(root=str(missing))})
    assert not missing.parent.exists()
