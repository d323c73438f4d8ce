"""Artifact retention against a real ops database and a real artifact store: what the rule keeps and why, what a
prune deletes and the bytes it frees (the dry run's figure is what the real prune frees), and the guard that keeps
an artifact something still needs whatever the rule says.

Artifacts are built through the store's own API (a dump folder, a filestore ingested into the shared objects, a
contract) and registered in ``ops.artifacts`` for real runs; their age is set by moving the rows' times back (and a
folder's mtimes, for an orphan), which is what waiting would do.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.promotion import retention
from promote_pipeline.promotion.models import PromotionOutcome
from promote_pipeline.promotion.services import Services
from promote_pipeline.promotion.settings import Retention, Settings
from resources.artifact_store import LocalArtifactStore
from resources.ops_db import DeploymentRecord, EnvironmentRecord, OpsDatabase, TaskRequest

POLICY = Retention(green_keep_last=2, green_keep_days=14, blue_keep_days=7, orphan_grace_hours=24)


class World:
    """A project with a staging and a production environment, and helpers to make runs and artifacts in it."""

    def __init__(self, ops_db: OpsDatabase, root: Path, h: Any) -> None:
        self.ops_db, self.root, self.h = ops_db, root, h
        tag = secrets.token_hex(3)
        self.project, self.staging, self.prod = f"proj_{tag}", f"env_{tag}_stg", f"env_{tag}_prod"
        ops_db.add_project(self.project, "Retention", [
            EnvironmentRecord(environment_id=env, project_id=self.project, kind=kind, git_commit_sha=None,
                              db_dsn_ref="X", db_name_prefix="x", filestore_root=str(root / "data"))
            for env, kind in ((self.staging, "staging"), (self.prod, "production"))])
        self.store = LocalArtifactStore(root=str(root / "artifacts"), create_root=True)
        self.svc = Services(ops_db=ops_db, host=None, store=self.store, router=None,  # type: ignore[arg-type]
                            settings=Settings(artifact_root=self.store.root, evidence_root=str(root / "evidence"),
                                              retention=POLICY))

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self.h.ops_sql(self.ops_db, query, params)

    def run(self, status: str, days_ago: float, window_hours: int = 2) -> str:
        run_id = self.ops_db.create_run(self.project, self.prod, "tester", {"rollback_window_hours": window_hours},
                                        None)
        if status != "running":
            self.ops_db.mark_run_finished(run_id, status)  # type: ignore[arg-type]
        self.sql("UPDATE ops.runs SET created_at = now() - make_interval(secs => %s),"
                 " completed_at = CASE WHEN status = 'running' THEN NULL ELSE now() - make_interval(secs => %s) END,"
                 " rolled_back_at = CASE WHEN status = 'rolled_back' THEN now() - make_interval(secs => %s) END"
                 " WHERE run_id = %s", (days_ago * 86400 + 600, days_ago * 86400, days_ago * 86400, run_id))
        return run_id

    def folder(self, role: str, env: str, contents: list[bytes]) -> str:
        """An artifact folder as a backup leaves it: a dump, the filestore ingested into the objects, a contract."""
        artifact_id = self.store.new_artifact_id(env, role)
        self.store.allocate(artifact_id)
        self.store.dump_dir(artifact_id).mkdir()
        (self.store.dump_dir(artifact_id) / "toc.dat").write_bytes(os.urandom(3000))
        src = self.root / "sources" / artifact_id
        for content in contents:
            sha1 = hashlib.sha1(content).hexdigest()
            (src / sha1[:2]).mkdir(parents=True, exist_ok=True)
            (src / sha1[:2] / sha1).write_bytes(content)
        facts = self.store.ingest_filestore(artifact_id, src)
        self.store.write_contract(artifact_id, json.dumps({"artifact_id": artifact_id}))
        self._facts = facts
        return artifact_id

    def artifact(self, role: str, run_id: str | None, days_ago: float, contents: list[bytes]) -> str:
        env = self.staging if role == "green" else self.prod
        artifact_id = self.folder(role, env, contents)
        self.ops_db.register_artifact(artifact_id, env, role, run_id or "", {
            "filestore": {"size_bytes": self._facts["size_bytes"]}})
        self.sql("UPDATE ops.artifacts SET created_at = now() - make_interval(secs => %s),"
                 " created_by_run = nullif(created_by_run, '') WHERE artifact_id = %s", (days_ago * 86400, artifact_id))
        return artifact_id

    def deployment(self, run_id: str, artifact_id: str, state: str = "active") -> str:
        dep = f"dep_{secrets.token_hex(4)}"
        self.ops_db.add_deployment(DeploymentRecord(
            deployment_id=dep, environment_id=self.prod, db_name=f"x_{dep}", data_dir=str(self.root / dep),
            http_port=None, websocket_port=None, pid=None, state=state), created_by_run=run_id, artifact_id=artifact_id)
        return dep

    def blue_deletion(self, run_id: str, artifact_id: str, hours: float) -> int:
        return self.ops_db.schedule_task(TaskRequest(task_type="delete_backup", delay=timedelta(hours=hours),
                                                     run_id=run_id, metadata={"artifact_id": artifact_id}))

    def age_folder(self, artifact_id: str, hours: float) -> None:
        stamp = time.time() - hours * 3600
        for base, _dirs, files in os.walk(self.store.folder(artifact_id)):
            for path in (base, *(os.path.join(base, f) for f in files)):
                os.utime(path, (stamp, stamp))

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in Path(self.store.root).rglob("*") if p.is_file())

    def files(self) -> dict[str, int]:
        return {str(p): p.stat().st_size for p in Path(self.store.root).rglob("*") if p.is_file()}


@pytest.fixture
def world(private_ops_db: OpsDatabase, tmp_path: Path, h: Any) -> World:
    return World(private_ops_db, tmp_path, h)


def _by_id(verdicts: list[Any]) -> dict[str, Any]:
    return {v.artifact_id: v for v in verdicts}


def test_every_kind_of_artifact_has_a_rule_and_prune_frees_what_its_dry_run_said(world: World) -> None:
    shared, unique, crashed = os.urandom(5000), os.urandom(7000), os.urandom(11000)
    # Production runs on the green of a failed run (--no-auto-rollback): its green and its blue stay, however old.
    serving = world.run("failed", 30)
    g_serving = world.artifact("green", serving, 30, [os.urandom(100)])
    b_serving = world.artifact("blue", serving, 30, [os.urandom(100)])
    world.deployment(serving, g_serving, "active")
    # A success whose rollback window is still open: its blue goes with blue's deployment, by its task.
    windowed = world.run("success", 20)
    g_old = world.artifact("green", windowed, 20, [shared, unique])
    b_windowed = world.artifact("blue", windowed, 20, [os.urandom(100)])
    world.blue_deletion(windowed, b_windowed, 5)
    rolled = world.run("rolled_back", 8)
    g_second = world.artifact("green", rolled, 16, [shared])
    b_rolled = world.artifact("blue", rolled, 8, [os.urandom(300)])
    failed = world.run("failed", 2)
    g_newest = world.artifact("green", failed, 1, [os.urandom(100)])
    b_failed = world.artifact("blue", failed, 2, [os.urandom(100)])
    # A success whose blue deletion failed for good: its window is long over, the prune takes the artifact.
    stuck = world.run("success", 10, window_hours=2)
    b_stuck = world.artifact("blue", stuck, 10, [os.urandom(100)])
    world.sql("UPDATE ops.scheduled_tasks SET status = 'failed' WHERE task_id = %s",
              (world.blue_deletion(stuck, b_stuck, -1),))
    gone = world.run("rolled_back", 10)
    b_missing = world.artifact("blue", gone, 10, [os.urandom(100)])
    world.store.remove_folder(b_missing)
    orphan = world.folder("blue", world.prod, [crashed])  # a crash mid-backup: a folder, no row
    world.age_folder(orphan, 48)
    foreign = Path(world.store.root) / "lost+found"  # the store on a mount of its own: not an artifact
    foreign.mkdir()
    (foreign / "inode_1234").write_bytes(b"fsck found this")
    os.utime(foreign, (time.time() - 86400 * 30,) * 2)
    fresh = world.folder("green", world.staging, [os.urandom(100)])  # a backup in progress
    leftover = world.artifact("blue", None, 40, [os.urandom(100)])
    world.sql("UPDATE ops.artifacts SET deleted_at = now() - interval '2 days' WHERE artifact_id = %s", (leftover,))
    in_progress = world.artifact("blue", None, 40, [os.urandom(100)])  # claimed a moment ago, folder not yet gone
    world.sql("UPDATE ops.artifacts SET deleted_at = now() WHERE artifact_id = %s", (in_progress,))

    verdicts = _by_id(retention.evaluate(world.svc))
    going = {a for a, v in verdicts.items() if not v.keep}
    assert going == {g_old, b_rolled, b_stuck, b_missing, orphan, leftover}, {a: v.why for a, v in verdicts.items()}
    assert "rollback window (2 h), over since" in verdicts[b_stuck].why
    assert "restored from it" in verdicts[g_serving].why
    assert "production runs on the green of its run" in verdicts[b_serving].why
    assert "rollback window" in verdicts[b_windowed].why and verdicts[b_windowed].retained_until is not None
    assert "newest 2 green snapshots" in verdicts[g_second].why and "newest 2" in verdicts[g_newest].why
    failed_until = verdicts[b_failed].retained_until
    assert failed_until is not None and 4.9 < (failed_until - datetime.now(UTC)).total_seconds() / 86400 < 5.1
    assert verdicts[fresh].keep and verdicts[fresh].state == "orphan"
    assert verdicts[in_progress].keep and verdicts[in_progress].state == "leftover"
    assert (verdicts[orphan].state, verdicts[b_missing].state, verdicts[leftover].state) == \
        ("orphan", "missing", "leftover")

    rows_before = world.sql("SELECT artifact_id, deleted_at FROM ops.artifacts ORDER BY artifact_id")
    files_before, disk_before = world.files(), world.disk_bytes()
    dry = retention.prune(world.svc, dry_run=True)
    assert world.files() == files_before and world.sql(
        "SELECT artifact_id, deleted_at FROM ops.artifacts ORDER BY artifact_id") == rows_before
    assert {v.artifact_id for v in dry.going} == going
    # The unique objects of the green and of the crash go; the object the green shares with a kept one stays.
    # unique, crashed, the rolled-back blue's, the stuck blue's, the leftover's, and the one the missing blue left
    # unreferenced
    assert dry.objects == 6
    assert dry.object_bytes >= len(unique) + len(crashed)

    done = retention.prune(world.svc, evidence_root=str(world.root / "evidence"))
    assert not done.failures and not done.skipped
    assert {v.artifact_id for v in done.going} == going
    assert done.freed_bytes == dry.freed_bytes == disk_before - world.disk_bytes()
    for artifact_id in going:
        assert not world.store.folder(artifact_id).exists()
    rows = {r["artifact_id"]: r for r in world.sql("SELECT * FROM ops.artifacts")}
    assert rows[g_old]["deleted_at"] is not None and "older than 14 days" in rows[g_old]["deleted_reason"]
    assert rows[b_missing]["deleted_at"] is not None and "missing" in rows[b_missing]["deleted_reason"]
    for kept in (g_serving, b_serving, b_windowed, g_second, g_newest, b_failed):
        assert rows[kept]["deleted_at"] is None and world.store.folder(kept).is_dir()
    assert world.store.object_path(hashlib.sha1(shared).hexdigest()).is_file()
    assert not world.store.object_path(hashlib.sha1(unique).hexdigest()).exists()
    assert not world.store.object_path(hashlib.sha1(crashed).hexdigest()).exists()
    for artifact_id in set(world.store.artifact_ids()) - {"lost+found"}:  # what stays is whole: every object its
        # index names is there
        for sha1, size, _rel in world.store.iter_index(artifact_id):
            assert world.store.object_path(sha1).stat().st_size == size
    assert list((world.root / "evidence").rglob("prune_*.json"))
    assert (foreign / "inode_1234").read_bytes() == b"fsck found this" and "lost+found" not in verdicts
    again = retention.prune(world.svc)
    assert not again.going and again.freed_bytes == 0


def test_the_deletion_claim_refuses_what_something_still_needs(world: World) -> None:
    running = world.run("running", 30)
    of_running = world.artifact("blue", running, 30, [os.urandom(100)])
    done = world.run("rolled_back", 30)
    restored = world.artifact("green", done, 30, [os.urandom(100)])
    world.deployment(done, restored, "retired")
    windowed = world.run("success", 30)
    in_window = world.artifact("blue", windowed, 30, [os.urandom(100)])
    world.blue_deletion(windowed, in_window, 1)
    serving = world.run("failed", 30)
    of_serving = world.artifact("blue", serving, 30, [os.urandom(100)])
    world.deployment(serving, world.artifact("green", serving, 30, [os.urandom(100)]), "active")
    free = world.artifact("blue", done, 30, [os.urandom(100)])
    for needed in (of_running, restored, in_window, of_serving):
        assert not world.ops_db.claim_artifact_deletion(needed, "test"), needed
    assert world.ops_db.claim_artifact_deletion(free, "test")
    assert not world.ops_db.claim_artifact_deletion(free, "test")  # taken once, by one worker
    kept = {v.artifact_id for v in retention.evaluate(world.svc) if v.keep}
    assert {of_running, restored, in_window, of_serving} <= kept


def test_two_prunes_at_once_delete_each_artifact_once(world: World) -> None:
    old = {world.artifact("green", world.run("success", 30), 30 - i / 10, [os.urandom(1000)]) for i in range(6)}
    newest = {world.artifact("green", world.run("success", 1), 1 - i / 10, [os.urandom(1000)]) for i in range(2)}
    reports: list[Any] = []
    workers = [threading.Thread(target=lambda: reports.append(retention.prune(world.svc, evidence_root=str(
        world.root / "evidence")))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert len(reports) == 2 and not any(r.failures for r in reports)
    taken = [v.artifact_id for r in reports for v in r.going]
    assert sorted(taken) == sorted(old)  # each once, by one of the two
    assert {a for a in old if not world.store.folder(a).exists()} == old
    assert all(world.store.folder(a).is_dir() for a in newest)
    for artifact_id in newest:
        for sha1, _size, _rel in world.store.iter_index(artifact_id):
            assert world.store.object_path(sha1).is_file()


def test_an_orphan_folder_waits_for_a_run_that_may_be_writing_it(world: World) -> None:
    running = world.run("running", 3)
    orphan = world.folder("blue", world.prod, [os.urandom(100)])
    world.age_folder(orphan, 30)  # older than the grace period, but younger than the run
    verdict = _by_id(retention.evaluate(world.svc))[orphan]
    assert verdict.keep and "still runs" in verdict.why
    assert not retention.prune(world.svc).going and world.store.folder(orphan).is_dir()
    world.ops_db.mark_run_finished(running, "failed")
    pruned = retention.prune(world.svc, evidence_root=str(world.root / "evidence"))
    assert [v.artifact_id for v in pruned.going] == [orphan] and not world.store.folder(orphan).exists()


def test_a_wrong_artifact_root_costs_no_row_its_record(world: World) -> None:
    old = world.artifact("blue", world.run("rolled_back", 30), 30, [os.urandom(100)])
    elsewhere = LocalArtifactStore(root=str(world.root / "not-the-store"))
    svc = Services(ops_db=world.ops_db, host=None, store=elsewhere, router=None,  # type: ignore[arg-type]
                   settings=world.svc.settings)
    verdict = _by_id(retention.evaluate(svc))[old]
    assert verdict.keep and verdict.state == "missing" and "is artifact_root right?" in verdict.why
    assert not retention.prune(svc).going
    assert world.ops_db.artifact(old).deleted_at is None
    assert [v.artifact_id for v in retention.prune(world.svc).going] == [old]  # the right store: it goes


def test_summary_lines_say_when_each_artifact_of_a_run_goes() -> None:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    completed = started + timedelta(minutes=5)
    inputs = {"staging_env_id": "env_s", "rollback_window_hours": 12}
    ok = PromotionOutcome(run_id="run_1", status="success", evidence_dir="/e", blue_backup_id="art_b",
                          green_artifact_id="art_g", cutover_timestamp="x")
    lines = retention.summary_lines(POLICY, ok, started, completed, inputs)
    assert "2026-01-01T12:05:00+00:00" in lines["art_b"] and "12 h rollback window" in lines["art_b"]
    assert "newest 2 green snapshots of `env_s`" in lines["art_g"] and "2026-01-15T00:00:00+00:00" in lines["art_g"]
    rolled = ok.model_copy(update={"status": "rolled_back"})
    assert "kept until 2026-01-08T00:05:00+00:00" in retention.summary_lines(POLICY, rolled, started, completed,
                                                                             inputs)["art_b"]
    early = ok.model_copy(update={"status": "failed", "blue_backup_id": None, "green_artifact_id": None})
    assert retention.summary_lines(POLICY, early, started, completed, inputs) == {}


@pytest.mark.slow
def test_a_real_promotion_says_when_its_artifacts_go_and_keeps_what_production_runs_on(haproxy_box: Any,
                                                                                        h: Any) -> None:
    code, outcome, message = h.promote(rollback_window_hours=3)
    assert code == 0, message
    summary = (h.evidence(outcome) / "promotion_summary.md").read_text()
    final = json.loads((h.evidence(outcome) / "final_status.json").read_text())
    assert "## Artifacts" in summary
    assert f"`{outcome.blue_backup_id}` blue: deleted with blue's deployment at" in summary
    assert "the end of the 3 h rollback window" in summary
    assert f"`{outcome.green_artifact_id}` green: kept while a deployment restored from it exists" in summary
    assert set(final["artifact_retention"]) == {outcome.blue_backup_id, outcome.green_artifact_id}
    svc = Services.from_resources(haproxy_box.resources())
    verdicts = _by_id(retention.evaluate(svc))
    serving = svc.ops_db.active_deployment(h.demo_inputs()["prod_env_id"])
    green = verdicts[outcome.green_artifact_id]
    assert green.keep and f"deployment {serving.deployment_id} (active) was restored from it" in green.why
    blue = verdicts[outcome.blue_backup_id]
    assert blue.keep and "rollback window" in blue.why
    assert abs((blue.retained_until - svc.ops_db.run(outcome.run_id).completed_at).total_seconds() - 3 * 3600) < 5
    assert not svc.ops_db.claim_artifact_deletion(outcome.blue_backup_id, "test")
    assert not svc.ops_db.claim_artifact_deletion(outcome.green_artifact_id, "test")
