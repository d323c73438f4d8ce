"""``promote artifacts list|prune [--dry-run]``, ``promote cleanup`` and the clean-up job, as an operator runs them:
child processes reading a settings file that names a private ops database and a real artifact store."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.promotion.settings import Settings
from resources.artifact_store import LocalArtifactStore
from resources.ops_db import EnvironmentRecord, OpsDatabase

_FOREIGN = ("PROMOTE_SETTINGS", "PROMOTE_EVIDENCE_ROOT", "PROMOTE_OPS_DATABASE", "DAGSTER_HOME")


class Store:
    def __init__(self, ops_db: OpsDatabase, root: Path, h: Any) -> None:
        self.ops_db, self.root, self.h = ops_db, root, h
        tag = secrets.token_hex(3)
        self.project, self.staging, self.prod = f"proj_{tag}", f"env_{tag}_stg", f"env_{tag}_prod"
        ops_db.add_project(self.project, "Artifacts", [
            EnvironmentRecord(environment_id=env, project_id=self.project, kind=kind, git_commit_sha=None,
                              db_dsn_ref="X", db_name_prefix="x", filestore_root=str(root / "data"))
            for env, kind in ((self.staging, "staging"), (self.prod, "production"))])
        self.store = LocalArtifactStore(root=str(root / "artifacts"), create_root=True)
        self.settings = root / "settings.json"
        self.write_settings({"green_keep_last": 1, "green_keep_days": 0})

    def write_settings(self, retention: dict[str, Any]) -> None:
        self.settings.write_text(json.dumps({
            "ops_database": self.ops_db.database, "ops_dsn_ref": self.ops_db.dsn_ref,
            "artifact_root": self.store.root, "evidence_root": str(self.root / "evidence"),
            "run_dir": str(self.root / "run"), "router_dir": str(self.root / "router"), "retention": retention}))

    def folder(self, role: str, env: str) -> str:
        artifact_id = self.store.new_artifact_id(env, role)
        self.store.allocate(artifact_id)
        self.store.dump_dir(artifact_id).mkdir()
        (self.store.dump_dir(artifact_id) / "toc.dat").write_bytes(os.urandom(2000))
        src = self.root / "sources" / artifact_id
        content = os.urandom(4000)
        sha1 = hashlib.sha1(content).hexdigest()
        (src / sha1[:2]).mkdir(parents=True)
        (src / sha1[:2] / sha1).write_bytes(content)
        self.store.ingest_filestore(artifact_id, src)
        return artifact_id

    def green(self, days_ago: float) -> str:
        run_id = self.ops_db.create_run(self.project, self.prod, "tester", {"rollback_window_hours": 1}, None)
        self.ops_db.mark_run_finished(run_id, "success")
        artifact_id = self.folder("green", self.staging)
        self.ops_db.register_artifact(artifact_id, self.staging, "green", run_id, {"filestore": {"size_bytes": 4000}})
        self.h.ops_sql(self.ops_db, "UPDATE ops.artifacts SET created_at = now() - make_interval(secs => %s)"
                       " WHERE artifact_id = %s", (days_ago * 86400, artifact_id))
        return artifact_id

    def orphan(self, hours_ago: float) -> str:
        artifact_id = self.folder("blue", self.prod)
        stamp = time.time() - hours_ago * 3600
        for base, _dirs, files in os.walk(self.store.folder(artifact_id)):
            for path in (base, *(os.path.join(base, f) for f in files)):
                os.utime(path, (stamp, stamp))
        return artifact_id

    def promote(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
        env["PROMOTE_SETTINGS"] = str(self.settings)
        return subprocess.run([sys.executable, "-m", "promote_pipeline", *args], capture_output=True, text=True,
                              env=env, timeout=120, check=False)


@pytest.fixture
def store(private_ops_db: OpsDatabase, tmp_path: Path, h: Any) -> Store:
    return Store(private_ops_db, tmp_path, h)


def test_list_then_dry_run_then_prune(store: Store) -> None:
    old, new = store.green(3), store.green(1)
    listed = store.promote("artifacts", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert lines["ID"].split()[:8] == ["ID", "ENVIRONMENT", "ROLE", "RUN", "STATUS", "SIZE", "CREATED", "RETAINED"]
    assert "GOES at the next prune: green snapshot older than 0 days" in lines[old]
    assert f"kept for as long as this holds: one of the newest 1 green snapshots of {store.staging}" in lines[new]
    assert " green " in lines[old] and " success " in lines[old] and store.staging in lines[old]

    dry = store.promote("artifacts", "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {old} (green of {store.staging}" in dry.stdout and new not in dry.stdout
    would = re.search(r"would free (\d+) bytes", dry.stdout)
    assert would and store.store.folder(old).is_dir()

    pruned = store.promote("artifacts", "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert f"deleted {old}" in pruned.stdout
    freed = re.search(r"freed (\d+) bytes", pruned.stdout)
    assert freed and freed.group(1) == would.group(1) and int(freed.group(1)) > 4000 + 2000
    assert not store.store.folder(old).exists() and store.store.folder(new).is_dir()
    as_json = json.loads(store.promote("artifacts", "list", "--json").stdout)
    assert [a["artifact_id"] for a in as_json["artifacts"]] == [new]
    nothing = store.promote("artifacts", "prune")
    assert nothing.returncode == 0 and "nothing to delete (1 kept)" in nothing.stdout


def test_refusals_are_one_line_and_change_nothing(store: Store) -> None:
    old = store.green(3)
    for args, field in ((("artifacts", "list", "--environment", "../etc"), "--environment"),
                        (("artifacts", "list", "--environment", "env_nope"), "--environment")):
        got = store.promote(*args)
        assert got.returncode == 2 and got.stdout == ""
        assert len(got.stderr.strip().splitlines()) == 1 and field in got.stderr and "Traceback" not in got.stderr
    store.write_settings({"green_keep_last": 0})
    got = store.promote("artifacts", "prune")
    assert got.returncode == 2
    assert len(got.stderr.strip().splitlines()) == 1, got.stderr
    assert "retention.green_keep_last" in got.stderr and "greater than or equal to 1" in got.stderr
    store.settings.write_text('{"retention": ')
    got = store.promote("artifacts", "list")
    assert got.returncode == 2 and len(got.stderr.strip().splitlines()) == 1 and "not JSON" in got.stderr
    assert store.store.folder(old).is_dir()
    assert "exit codes:" in store.promote("artifacts", "prune", "--help").stdout


def test_promote_cleanup_and_the_cleanup_job_prune(store: Store) -> None:
    first = store.orphan(48)
    got = store.promote("cleanup")
    assert got.returncode == 0, got.stderr
    assert f"deleted {first}" in got.stdout and not store.store.folder(first).exists()

    from promote_pipeline.defs.jobs import cleanup_due_tasks
    from promote_pipeline.defs.resources import build_resources, for_definitions

    second = store.orphan(48)
    settings = Settings.model_validate(json.loads(store.settings.read_text()))
    result = cleanup_due_tasks.execute_in_process(resources=for_definitions(build_resources(settings)))
    assert result.success and not store.store.folder(second).exists()
    assert list((store.root / "evidence").rglob("prune_*.json"))
