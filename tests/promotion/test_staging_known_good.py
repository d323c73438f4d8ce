"""Precondition 2 (staging's latest deploy or restore succeeded) on a private ops database: an adoption is
staging's known-good state while nothing was deployed or restored after it; everything else stays strict."""

from __future__ import annotations

import time

import pytest

from promote_pipeline.promotion.preflight import PreconditionFailed, staging_known_good
from resources.ops_db import CompletedRun, DeploymentRecord, EnvironmentRecord, FinalRunStatus, OpsDatabase


def _project(db: OpsDatabase) -> None:
    db.add_project("p", "P", [EnvironmentRecord(environment_id="env_s", project_id="p", kind="staging",
                                                git_commit_sha=None, db_dsn_ref="DSN", db_name_prefix="s",
                                                filestore_root="/srv/s", odoo_db_name="s")])


def _adopt(db: OpsDatabase, status: FinalRunStatus = "success") -> str:
    live = DeploymentRecord(deployment_id="dep_s_live", environment_id="env_s", db_name="s", data_dir="/srv/odoo",
                            http_port=8069, websocket_port=8069, pid=None, state="active", odoo_db_name="s")
    run_id = db.begin_adoption("p", live, "ops", {"deployment_id": "dep_s_live"})
    db.mark_run_finished(run_id, status)
    return run_id


def _then(db: OpsDatabase, operation: str, status: FinalRunStatus) -> str:
    time.sleep(0.01)  # later by created_at, as a real deploy after an adoption is
    run_id = db.create_run("p", "env_s", "ci", {}, None, operation_type=operation)
    db.mark_run_finished(run_id, status)
    return run_id


def test_an_adoption_is_stagings_known_good_state(private_ops_db: OpsDatabase) -> None:
    _project(private_ops_db)
    run_id = _adopt(private_ops_db)
    assert staging_known_good(private_ops_db, "env_s") == \
        f"staging adopted by {run_id} (deployment dep_s_live), nothing deployed or restored since"


@pytest.mark.parametrize("operation", ["deploy", "restore"])
def test_a_failed_deploy_or_restore_after_the_adoption_fails_the_check(private_ops_db: OpsDatabase,
                                                                      operation: str) -> None:
    _project(private_ops_db)
    _adopt(private_ops_db)
    failed = _then(private_ops_db, operation, "failed")
    with pytest.raises(PreconditionFailed, match=f"latest {operation} on staging \\({failed}\\) has status 'failed'"):
        staging_known_good(private_ops_db, "env_s")
    succeeded = _then(private_ops_db, operation, "success")
    assert staging_known_good(private_ops_db, "env_s") == f"latest {operation} on staging ({succeeded}) succeeded"


@pytest.mark.parametrize("status", ["failed", "rolled_back"])
def test_an_adoption_that_did_not_succeed_is_no_known_good_state(private_ops_db: OpsDatabase,
                                                                 status: FinalRunStatus) -> None:
    _project(private_ops_db)
    run_id = _adopt(private_ops_db, status)
    with pytest.raises(PreconditionFailed, match=f"latest adopt on staging \\({run_id}\\) has status '{status}'"):
        staging_known_good(private_ops_db, "env_s")


def test_an_adoption_still_running_and_no_history_at_all_fail(private_ops_db: OpsDatabase) -> None:
    _project(private_ops_db)
    with pytest.raises(PreconditionFailed, match="staging env_s has no deploy, restore or adoption run"):
        staging_known_good(private_ops_db, "env_s")
    live = DeploymentRecord(deployment_id="dep_s_live", environment_id="env_s", db_name="s", data_dir="/srv/odoo",
                            http_port=8069, websocket_port=8069, pid=None, state="active", odoo_db_name="s")
    run_id = private_ops_db.begin_adoption("p", live, "ops", {})
    with pytest.raises(PreconditionFailed, match=f"latest adopt on staging \\({run_id}\\) has status 'running'"):
        staging_known_good(private_ops_db, "env_s")


def test_a_successful_deploy_before_is_still_enough_without_an_adoption(private_ops_db: OpsDatabase) -> None:
    _project(private_ops_db)
    private_ops_db.record_completed_run("p", CompletedRun(environment_id="env_s", operation_type="deploy",
                                                          created_by="ci"))
    assert staging_known_good(private_ops_db, "env_s").startswith("latest deploy on staging (run_")
