"""The ops database against the real PostgreSQL, a fresh database per test.

Its connections: reused within a process, never trusted blindly, never shared with a child. A connection
cut by the server (``pg_terminate_backend``, what a restart or a forced ``DROP DATABASE`` does to it) is
replaced before the caller sees it; a block that raises leaves nothing behind; a forked child opens its own.

Its typed methods: records come back typed, the run's state machine moves only as its owner allows (a
finalize after the safety net marked the run is refused), deployments move at cutover and rollback, and
due tasks are claimed once each.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from promote_pipeline.promotion import settings
from resources.ops_db import (
    ArtifactRecord,
    CompletedRun,
    DeploymentOnServer,
    DeploymentRecord,
    DeploymentState,
    EnvironmentRecord,
    FinalRunStatus,
    OpsDatabase,
    RunRecord,
    ScheduledTaskRecord,
    TaskRequest,
)

DSN_REF = "PROMOTE_TEST_OPS_DSN"


@pytest.fixture
def ops_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpsDatabase]:
    monkeypatch.setenv(DSN_REF, settings.default_server_dsn())
    db = OpsDatabase(dsn_ref=DSN_REF, database=f"ops_conn_test_{secrets.token_hex(4)}")
    db.upgrade()
    yield db
    admin = psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.database)))


def _backend(db: OpsDatabase) -> int:
    with db.connect() as conn:
        row = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
    assert row is not None
    return int(row["pid"])


def _project_ids(db: OpsDatabase) -> list[dict[str, object]]:
    with db.connect() as conn:
        return conn.execute("SELECT project_id FROM ops.projects").fetchall()


def _terminate(pid: int) -> None:
    admin = psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_a_connection_is_reused_and_a_cut_one_replaced(ops_db: OpsDatabase) -> None:
    first = _backend(ops_db)
    assert _backend(ops_db) == first  # the same backend answers the next question: no new connection

    _terminate(first)  # what a PostgreSQL restart does to an idle connection
    replaced = _backend(ops_db)  # the caller's query does not fail on the dead one
    assert replaced != first
    assert _backend(ops_db) == replaced


def test_a_block_commits_or_rolls_back_like_a_fresh_connection(ops_db: OpsDatabase) -> None:
    with ops_db.connect() as conn:
        conn.execute("INSERT INTO ops.projects (project_id, name) VALUES ('kept', 'k')")
    with pytest.raises(RuntimeError), ops_db.connect() as conn:
        conn.execute("INSERT INTO ops.projects (project_id, name) VALUES ('dropped', 'd')")
        raise RuntimeError("the step failed")
    with pytest.raises(psycopg.errors.UniqueViolation), ops_db.connect() as conn:
        conn.execute("INSERT INTO ops.projects (project_id, name) VALUES ('kept', 'again')")

    names = {r["project_id"] for r in _project_ids(ops_db)}
    assert names == {"kept"}  # committed once, the failed blocks left nothing (and their connection is usable)


def test_a_forked_child_opens_its_own_connection(ops_db: OpsDatabase) -> None:
    parent = _backend(ops_db)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: must not use, nor close, the parent's idle connection
        code = 1
        try:
            os.close(read)
            os.write(write, str(_backend(ops_db)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    child_backend = int(os.read(read, 64).decode() or 0)
    os.close(read)
    assert os.waitpid(child, 0)[1] == 0
    assert child_backend not in (0, parent)
    assert _backend(ops_db) == parent  # the parent's connection survived the child


def test_a_transaction_cut_by_the_server_is_done_again_once(ops_db: OpsDatabase) -> None:
    backends: list[int] = []

    def work(conn: psycopg.Connection[dict[str, object]]) -> int:
        row = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
        assert row is not None
        backends.append(int(str(row["pid"])))
        if len(backends) == 1:
            _terminate(backends[0])  # a restart's fast shutdown, in the middle of the transaction
            conn.execute("SELECT 1")
        conn.execute("INSERT INTO ops.projects (project_id, name) VALUES ('once', 'o')")
        return backends[-1]

    assert ops_db.transaction(work) == backends[1] != backends[0]
    assert _project_ids(ops_db) == [{"project_id": "once"}]


def test_other_operational_errors_are_not_repeated(ops_db: OpsDatabase) -> None:
    calls: list[int] = []

    def work(conn: psycopg.Connection[dict[str, object]]) -> None:
        calls.append(1)
        conn.execute("SET LOCAL statement_timeout = 1")
        conn.execute("SELECT pg_sleep(1)")

    with pytest.raises(psycopg.errors.QueryCanceled):
        ops_db.transaction(work)
    assert calls == [1]
    assert _backend(ops_db)  # and the connection it used is usable again


# -- the owner's typed methods: records, the run's state machine, deployments, tasks ------------------------
def _seed(db: OpsDatabase) -> None:
    """A project with a staging and a production environment, blue live on production."""
    envs = [EnvironmentRecord(environment_id=env_id, project_id="p", kind=kind, git_commit_sha="c" * 40,
                              db_dsn_ref="DSN", db_name_prefix=f"x_{kind}", filestore_root="/tmp")
            for env_id, kind in (("env_s", "staging"), ("env_p", "production"))]
    db.add_project("p", "P", envs, grants=[("alice", "promote")],
                   history=[CompletedRun(environment_id="env_s", operation_type="deploy", created_by="ci")])
    db.add_deployment(_deployment("dep_blue", "active"))


def _deployment(deployment_id: str, state: DeploymentState) -> DeploymentRecord:
    return DeploymentRecord(deployment_id=deployment_id, environment_id="env_p", db_name=f"db_{deployment_id}",
                            data_dir="/tmp", http_port=8069, websocket_port=8072, pid=None, state=state)


def _promotion(db: OpsDatabase) -> str:
    return db.create_run("p", "env_p", "alice", {"blue_deployment_id": "dep_blue"}, "dagster-1")


def _blue_deletion(run_id: str) -> TaskRequest:
    return TaskRequest(task_type="delete_backup", delay=timedelta(hours=24), run_id=run_id,
                       metadata={"deployment_id": "dep_blue"})


def test_records_come_back_typed(ops_db: OpsDatabase) -> None:
    _seed(ops_db)
    run_id = _promotion(ops_db)
    ops_db.register_artifact("art_1", "env_p", "blue", run_id, {"at": datetime(2026, 1, 1, tzinfo=UTC)})

    env = ops_db.environment("env_p")
    assert isinstance(env, EnvironmentRecord) and env.kind == "production" and env.git_commit_sha == "c" * 40
    blue = ops_db.active_deployment("env_p")
    assert isinstance(blue, DeploymentRecord) and (blue.deployment_id, blue.http_port) == ("dep_blue", 8069)
    run = ops_db.run(run_id)
    assert isinstance(run, RunRecord) and run.status == "running" and isinstance(run.created_at, datetime)
    assert run.metadata == {"blue_deployment_id": "dep_blue"} and run.completed_at is None
    assert ops_db.promote_run_for_dagster_run("dagster-1") == run
    artifact = ops_db.artifact("art_1")
    assert isinstance(artifact, ArtifactRecord) and artifact.contract == {"at": "2026-01-01 00:00:00+00:00"}
    on_server = ops_db.deployment_on_server("dep_blue")
    assert isinstance(on_server, DeploymentOnServer) and on_server.db_dsn_ref == "DSN"
    staging_run = ops_db.latest_run("env_s", ("deploy", "restore"))
    assert isinstance(staging_run, RunRecord) and staging_run.status == "success"
    assert ops_db.project_exists("p") and ops_db.has_permission("alice", "p", "promote")
    assert [e.environment_id for e in ops_db.environments_of("p")] == ["env_p", "env_s"]
    # Unknown ids are None, never an empty dict.
    assert ops_db.run("run_nope") is None and ops_db.environment("nope") is None
    assert ops_db.deployment("nope") is None and ops_db.artifact("nope") is None and ops_db.task(0) is None


def test_finalize_marks_a_running_run_success_only_once(ops_db: OpsDatabase) -> None:
    _seed(ops_db)
    run_id = _promotion(ops_db)

    assert ops_db.mark_run_succeeded(run_id, "/evidence/1", then=_blue_deletion(run_id)) is True
    run = ops_db.run(run_id)
    assert run is not None and run.status == "success" and run.evidence_dir == "/evidence/1"
    assert run.completed_at is not None and run.rolled_back_at is None
    [task] = ops_db.tasks_for_run(run_id)
    assert task.status == "pending" and task.task_type == "delete_backup"
    assert (task.execute_at - task.created_at).total_seconds() == pytest.approx(24 * 3600, abs=5)

    # A second finalize changes nothing and schedules nothing.
    assert ops_db.mark_run_succeeded(run_id, "/evidence/2", then=_blue_deletion(run_id)) is False
    again = ops_db.run(run_id)
    assert again is not None and again.evidence_dir == "/evidence/1" and again.completed_at == run.completed_at
    assert len(ops_db.tasks_for_run(run_id)) == 1


def test_a_finalize_after_the_safety_net_marked_the_run_is_refused(ops_db: OpsDatabase) -> None:
    _seed(ops_db)
    run_id = _promotion(ops_db)
    ops_db.mark_run_finished(run_id, "rolled_back", evidence_dir="/evidence/1",
                             metadata={"failed_step": "finalize", "failure_reason": "WorkerDied: lock released"})

    assert ops_db.mark_run_succeeded(run_id, "/evidence/1", then=_blue_deletion(run_id)) is False
    run = ops_db.run(run_id)
    assert run is not None and run.status == "rolled_back" and run.rolled_back_at is not None
    assert ops_db.tasks_for_run(run_id) == []  # blue's deletion was not scheduled


@pytest.mark.parametrize("status", ["failed", "rolled_back"])
def test_a_running_run_ends_failed_or_rolled_back(ops_db: OpsDatabase, status: FinalRunStatus) -> None:
    _seed(ops_db)
    run_id = _promotion(ops_db)
    ops_db.set_run_evidence_dir(run_id, "/evidence/1")
    ops_db.mark_run_finished(run_id, status, metadata={"failed_step": "cutover"})

    run = ops_db.run(run_id)
    assert run is not None and run.status == status and run.completed_at is not None
    assert (run.rolled_back_at is not None) == (status == "rolled_back")
    assert run.evidence_dir == "/evidence/1"  # kept when not given
    assert run.metadata == {"blue_deployment_id": "dep_blue", "failed_step": "cutover"}
    assert ops_db.running_promotion("env_p") is None and ops_db.running_promotions() == []


def test_a_dead_promotions_restores_fail_and_a_manual_rollback_keeps_completion(ops_db: OpsDatabase) -> None:
    _seed(ops_db)
    run_id = _promotion(ops_db)
    child = ops_db.create_run("p", "env_p", "alice", {"parent_run_id": run_id}, None, operation_type="restore")
    other = ops_db.create_run("p", "env_p", "alice", {"parent_run_id": "run_other"}, None, operation_type="restore")
    assert [r.run_id for r in ops_db.running_promotions()] == [run_id]

    assert ops_db.fail_running_restores(run_id) == 1
    assert [ops_db.run(r).status for r in (child, other)] == ["failed", "running"]

    ops_db.mark_run_succeeded(run_id, "/evidence/1", then=_blue_deletion(run_id))
    completed = ops_db.run(run_id).completed_at
    ops_db.mark_run_rolled_back(run_id, {"rolled_back_by": "oncall"})
    run = ops_db.run(run_id)
    assert run is not None and run.status == "rolled_back" and run.rolled_back_at is not None
    assert run.completed_at == completed and run.metadata["rolled_back_by"] == "oncall"


def test_cutover_and_rollback_move_the_deployments(ops_db: OpsDatabase) -> None:
    _seed(ops_db)
    run_id = _promotion(ops_db)
    ops_db.add_deployment(_deployment("dep_green", "standby"), created_by_run=run_id, artifact_id="art_1")
    ops_db.set_deployment_pid("dep_green", 4242, 1234)
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)

    ops_db.record_cutover("dep_blue", "dep_green", run_id, at)
    assert ops_db.active_deployment("env_p").deployment_id == "dep_green"
    assert ops_db.deployment("dep_blue").state == "standby"
    assert ops_db.run_serving("env_p") == run_id
    assert ops_db.run(run_id).metadata["cutover_timestamp"] == at.isoformat()

    ops_db.reactivate_deployment("env_p", "dep_blue")
    assert ops_db.active_deployment("env_p").deployment_id == "dep_blue"
    [green] = ops_db.deployments_created_by(run_id)
    assert green.state == "retired" and green.pid == 4242
    assert ops_db.deployments_created_by(run_id, states=("active", "standby")) == []
    assert ops_db.run_serving("env_p") is None  # blue was a seed, no run made it

    ops_db.mark_deployment_deleted("dep_green")
    deleted = ops_db.latest_deployment_of_run(run_id)
    assert deleted is not None and deleted.state == "deleted" and deleted.pid is None


def test_a_project_is_set_up_whole_or_not_at_all(ops_db: OpsDatabase) -> None:
    env = EnvironmentRecord(environment_id="env_q", project_id="q", kind="dev", git_commit_sha=None,
                            db_dsn_ref="DSN", db_name_prefix="q", filestore_root="/tmp")
    with pytest.raises(psycopg.errors.UniqueViolation):
        ops_db.add_project("q", "Q", [env, env])
    assert not ops_db.project_exists("q") and ops_db.environment("env_q") is None


def test_due_tasks_are_claimed_once_in_order_and_a_stale_claim_again(ops_db: OpsDatabase) -> None:
    first = ops_db.schedule_task(TaskRequest(task_type="delete_deployment", delay=timedelta(seconds=-2)))
    second = ops_db.schedule_task(TaskRequest(task_type="delete_deployment", delay=timedelta(seconds=-1)))
    ops_db.schedule_task(TaskRequest(task_type="delete_deployment", delay=timedelta(hours=1)))  # not due
    lease = timedelta(minutes=10)

    claimed = ops_db.claim_due_task("w1", lease)
    assert isinstance(claimed, ScheduledTaskRecord)
    assert (claimed.task_id, claimed.status, claimed.attempts, claimed.claimed_by) == (first, "running", 1, "w1")
    assert ops_db.claim_due_task("w2", lease).task_id == second
    assert ops_db.claim_due_task("w2", lease) is None  # nothing else due, and claims are not taken over

    with ops_db.connect() as conn:  # w1 died: its claim is older than the lease
        conn.execute("UPDATE ops.scheduled_tasks SET claimed_at = now() - interval '11 minutes'"
                     " WHERE task_id = %s", (first,))
    again = ops_db.claim_due_task("w3", lease)
    assert again is not None and (again.task_id, again.attempts, again.claimed_by) == (first, 2, "w3")


def test_a_task_locked_by_another_claim_is_skipped(ops_db: OpsDatabase) -> None:
    first = ops_db.schedule_task(TaskRequest(task_type="delete_deployment", delay=timedelta(seconds=-2)))
    second = ops_db.schedule_task(TaskRequest(task_type="delete_deployment", delay=timedelta(seconds=-1)))
    conninfo = psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname=ops_db.database)
    with psycopg.connect(conninfo) as other:  # another worker, mid-claim on the first task
        other.execute("SELECT 1 FROM ops.scheduled_tasks WHERE task_id = %s FOR UPDATE", (first,))
        claimed = ops_db.claim_due_task("w2", timedelta(minutes=10))
        assert claimed is not None and claimed.task_id == second


def test_a_claimed_task_is_settled(ops_db: OpsDatabase) -> None:
    _seed(ops_db)
    run_id = _promotion(ops_db)
    ids = [ops_db.schedule_task(TaskRequest(task_type="delete_backup", delay=timedelta(seconds=-1), run_id=run_id))
           for _ in range(4)]
    for _ in ids:
        ops_db.claim_due_task("w", timedelta(minutes=10))
    ops_db.mark_task_done(ids[0])
    ops_db.cancel_task(ids[1], "deployment is active again")
    ops_db.record_task_failure(ids[2], "boom", retry_in_minutes=2, give_up=False)
    ops_db.record_task_failure(ids[3], "boom", retry_in_minutes=4, give_up=True)

    tasks = {t.task_id: t for t in ops_db.tasks_for_run(run_id, "delete_backup")}
    assert [tasks[i].status for i in ids] == ["done", "cancelled", "pending", "failed"]
    assert tasks[ids[0]].done_at is not None and tasks[ids[0]].last_error is None
    assert tasks[ids[1]].last_error == "deployment is active again"
    retry_in = tasks[ids[2]].execute_at - tasks[ids[2]].updated_at
    assert retry_in.total_seconds() == pytest.approx(120, abs=1) and tasks[ids[2]].last_error == "boom"
    assert ops_db.claim_due_task("w", timedelta(minutes=10)) is None  # the retry is not due yet


def test_pending_tasks_are_cancelled_or_moved_by_run_and_type(ops_db: OpsDatabase) -> None:
    _seed(ops_db)
    run_id = _promotion(ops_db)
    backup = ops_db.schedule_task(_blue_deletion(run_id))
    green = ops_db.schedule_task(TaskRequest(task_type="delete_deployment", delay=timedelta(hours=1), run_id=run_id))
    base = datetime(2026, 3, 1, tzinfo=UTC)

    moved = ops_db.reschedule_pending_task(run_id, "delete_backup", base, 2)
    assert moved is not None and moved.task_id == backup and moved.execute_at == base + timedelta(hours=2)
    assert ops_db.cancel_pending_tasks(run_id, "delete_backup", "blue reactivated by rollback") == 1
    assert ops_db.task(backup).status == "cancelled"
    assert ops_db.task(green).status == "pending"
    assert ops_db.reschedule_pending_task(run_id, "delete_backup", base, 2) is None  # none pending any more
    assert ops_db.make_pending_tasks_due() == 1
    assert ops_db.claim_due_task("w", timedelta(minutes=10)).task_id == green


def _hashtext_twins(ops_db: OpsDatabase) -> tuple[str, str]:
    """Two environment ids whose 32-bit ``hashtext`` is the same, found on the real server (a few hundred thousand
    ids hold such pairs: the birthday bound of 32 bits)."""
    with ops_db.connect() as conn:
        row = conn.execute(
            "SELECT min(n), max(n) FROM (SELECT 'env_' || g AS n FROM generate_series(1, 400000) g) s"
            " GROUP BY hashtext(n) HAVING count(*) > 1 LIMIT 1").fetchone()
    assert row is not None, "no hashtext collision among 400000 ids"
    return str(row["min"]), str(row["max"])


def test_two_environments_whose_hashtext_collides_do_not_share_a_lock(ops_db: OpsDatabase) -> None:
    first, second = _hashtext_twins(ops_db)
    held = ops_db.try_lock_environment(first)
    assert held is not None and held.conn is not None
    other = ops_db.try_lock_environment(second)
    try:
        assert other is not None, f"{second} is locked by the promotion of {first}"
        assert ops_db.try_lock_environment(first) is None  # the lock itself still excludes
        # The safety net's liveness read finds each lock's own holder, and no other.
        assert ops_db.lock_holder_pid(first) == held.conn.info.backend_pid
        assert other.conn is not None and ops_db.lock_holder_pid(second) == other.conn.info.backend_pid
        other.release()
        assert ops_db.lock_holder_pid(second) is None and ops_db.lock_holder_pid(first) is not None
        waited = ops_db.wait_lock_environment(second, timeout_seconds=5)
        assert waited is not None
        waited.release()
    finally:
        held.release()
        if other is not None:
            other.release()
    assert ops_db.lock_holder_pid(first) is None
