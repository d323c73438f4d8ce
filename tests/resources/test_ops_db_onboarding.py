"""The ops database's methods for onboarding (``promote inventory``), on a private database per test: its state
read without a write, projects renamed, environments updated but for what is theirs for life, grants listed and
revoked, and an adoption recorded with its run in one transaction."""

from __future__ import annotations

import secrets

import psycopg
import pytest

from resources.ops_db import DeploymentRecord, EnvironmentRecord, OpsDatabase, PermissionRecord, ProjectRecord


def _environment(**changes: object) -> EnvironmentRecord:
    values: dict[str, object] = {
        "environment_id": "env_p", "project_id": "p", "kind": "production", "git_commit_sha": "a" * 40,
        "db_dsn_ref": "DSN", "db_name_prefix": "acme_prod", "filestore_root": "/srv/prod", "odoo_db_name": "acme"}
    return EnvironmentRecord.model_validate({**values, **changes})


def _adopted() -> DeploymentRecord:
    return DeploymentRecord(deployment_id="dep_live", environment_id="env_p", db_name="acme", data_dir="/srv/odoo",
                            http_port=8069, websocket_port=8069, pid=None, state="active", odoo_db_name="acme",
                            db_role="acme", endpoint_port=6433, owns_data_dir=False)


def test_the_schema_state_is_read_without_creating_anything(private_ops_db: OpsDatabase) -> None:
    state = private_ops_db.schema_state()
    assert state.database_exists and state.pending == [] and state.ready

    absent = OpsDatabase(dsn_ref=private_ops_db.dsn_ref, database=f"promote_ops_absent_{secrets.token_hex(4)}")
    state = absent.schema_state()
    assert not state.database_exists and state.pending[0] == "001_ops_schema" and not state.ready
    assert not absent.schema_state().database_exists  # still not there: reading created nothing


def test_a_project_is_renamed_and_an_environment_updated_but_not_its_lifelong_columns(
        private_ops_db: OpsDatabase) -> None:
    db = private_ops_db
    db.add_project("p", "Acme", [_environment()], grants=[("alice", "promote"), ("bob", "admin")])
    assert db.project("p") == ProjectRecord(project_id="p", name="Acme") and db.project("nope") is None

    db.rename_project("p", "Acme Corp")
    db.update_environment(_environment(smoke_login="ops", odoo_command="odoo-bin -d {db}", worker_mode="prefork",
                                       workers=4, kind="staging", odoo_db_name="other", project_id="q"))
    env = db.environment("env_p")
    assert db.project("p").name == "Acme Corp"
    assert env is not None and (env.smoke_login, env.odoo_command, env.worker_mode, env.workers) == \
        ("ops", "odoo-bin -d {db}", "prefork", 4)
    assert (env.kind, env.odoo_db_name, env.project_id) == ("production", "acme", "p")  # theirs for life


def test_grants_are_listed_and_revoked(private_ops_db: OpsDatabase) -> None:
    db = private_ops_db
    db.add_project("p", "Acme", [_environment()], grants=[("bob", "admin"), ("alice", "promote")])
    assert db.permissions_of("p") == [PermissionRecord(user_id="alice", project_id="p", permission="promote"),
                                      PermissionRecord(user_id="bob", project_id="p", permission="admin")]
    db.revoke_permission("bob", "p", "admin")
    assert [g.user_id for g in db.permissions_of("p")] == ["alice"] and not db.has_permission("bob", "p", "promote")


def test_an_adoption_records_its_run_and_its_deployment_together(private_ops_db: OpsDatabase) -> None:
    db = private_ops_db
    db.add_project("p", "Acme", [_environment()])
    run_id = db.begin_adoption("p", _adopted(), "ops", {"deployment_id": "dep_live", "db_name": "acme"})

    run, dep = db.run(run_id), db.deployment("dep_live")
    assert run is not None and (run.operation_type, run.status, run.environment_id) == ("adopt", "running", "env_p")
    assert dep is not None and dep.state == "active" and dep.owns_data_dir is False
    assert db.deployment_on_server("dep_live").created_by_run == run_id
    db.mark_run_finished(run_id, "success", metadata={"odoo_pid": 1})
    assert db.latest_run("env_p", ("adopt",)).status == "success"

    # A second adoption of the environment's live deployment leaves neither a run nor a deployment.
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.begin_adoption("p", _adopted().model_copy(update={"deployment_id": "dep_other"}), "ops", {})
    assert db.deployment("dep_other") is None
    assert [r.run_id for r in [db.latest_run("env_p", ("adopt",))] if r] == [run_id]
