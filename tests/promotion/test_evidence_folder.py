"""A run whose evidence folder cannot be written is refused before its row exists (so it never stays `running`),
and nothing writes evidence to a folder that was not chosen for it (never the current directory)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.cli.main import main as promote_cli
from promote_pipeline.cli.runner import run_rollback
from promote_pipeline.cli.sandbox import PROD, STAGING, Sandbox
from promote_pipeline.promotion.evidence import Evidence, EvidenceError


def test_evidence_refuses_an_empty_or_relative_folder() -> None:
    for folder in ("", ".", "docs/evidence"):
        with pytest.raises(EvidenceError, match="not an absolute path"):
            Evidence(folder)


@pytest.mark.slow
def test_an_unwritable_evidence_root_is_refused_before_the_run_exists(haproxy_box: Sandbox, h: Any, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A regular file where a folder of the root should be: no mkdir gets past it, root or not.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PROMOTE_EVIDENCE_ROOT", str(blocker / "evidence"))
    ops_db = haproxy_box.resources()["ops_db"]
    runs = h.ops_sql(ops_db, "SELECT count(*) AS n FROM ops.runs")[0]["n"]
    code, outcome, message = h.promote()
    assert code == 2 and outcome is None, message
    assert message and message.startswith("promotion rejected: evidence_dir: evidence folder ") and "\n" not in message
    assert str(blocker / "evidence") in message and "Not a directory" in message
    assert h.ops_sql(ops_db, "SELECT count(*) AS n FROM ops.runs")[0]["n"] == runs
    [row] = h.ops_sql(ops_db, "SELECT check_name FROM ops.rejections ORDER BY rejection_id DESC LIMIT 1")
    assert row["check_name"] == "evidence_dir"
    # Nothing was left behind that blocks the next promotion (no `running` row, the lock released).
    monkeypatch.delenv("PROMOTE_EVIDENCE_ROOT")
    code, outcome, message = h.promote()
    assert code == 0 and outcome is not None, message


@pytest.mark.slow
def test_rollback_and_recover_of_a_run_without_evidence_folder_write_nothing_here(
        haproxy_box: Sandbox, h: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ops_db = haproxy_box.resources()["ops_db"]
    blue = ops_db.active_deployment(PROD)
    assert blue is not None
    # The row an older version left when its evidence folder could not be created: no evidence_dir.
    run_id = ops_db.create_run("proj_demo", PROD, "demo_admin", {
        "staging_env_id": STAGING, "blue_deployment_id": blue.deployment_id, "rollback_window_hours": 1,
        "auto_rollback_on_failure": True}, None)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    try:
        code, result, message = run_rollback(run_id, "no evidence folder", "ops-oncall", quiet=True)
        assert code == 2 and result is None and message and "no evidence folder is recorded" in message, message
        assert promote_cli(["recover", run_id]) != 0
    finally:
        ops_db.mark_run_finished(run_id, "failed")
    assert list(here.iterdir()) == []


def test_evidence_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    folder = tmp_path / "evidence" / "20260101-0000" / "promote" / "run_x"
    previous = os.umask(0)
    try:
        evidence = Evidence(folder)
        evidence.create()
        evidence.write_json("inputs.json", {"user_id": "u"})
        evidence.write_text("run_id.txt", "run_x\n")
    finally:
        os.umask(previous)
    for made in (folder, folder.parent, folder.parent.parent, tmp_path / "evidence"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    assert sorted(p.name for p in folder.iterdir()) == ["inputs.json", "run_id.txt"]  # no temporary left
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
