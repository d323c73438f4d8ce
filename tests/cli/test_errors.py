"""What the real ``promote`` entry point says when something is wrong: one line naming what failed, the exit code of
the one table (cli/exits.py), never a traceback, never a prefix twice, never an operator's id echoed raw."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from promote_pipeline.cli.exits import EXIT_FAILED, EXIT_REJECTED, EXIT_UNAVAILABLE
from resources.odoo_host import free_port
from resources.ops_db import OpsDatabase

PROMOTE = Path(sys.executable).with_name("promote")
# Variables of the surrounding test session that would redirect a promote process started here.
_FOREIGN = ("PROMOTE_SETTINGS", "PROMOTE_EVIDENCE_ROOT", "PROMOTE_OPS_DATABASE", "PROMOTE_SECRETS_FILE",
            "PROMOTE_MIN_FREE_SPACE_FACTOR", "DAGSTER_HOME")
DOWN_REF = "PROMOTE_TEST_DOWN_OPS_DSN"


def _settings(root: Path, dsn_ref: str, database: str) -> Path:
    """A settings file whose folders are all under ``root``."""
    path = root / "settings.json"
    path.write_text(json.dumps({
        "ops_dsn_ref": dsn_ref, "ops_database": database, "evidence_root": str(root / "evidence"),
        "artifact_root": str(root / "artifacts"), "run_dir": str(root / "run"), "router_dir": str(root / "router")}))
    return path


def _env(settings_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    return {**env, "PROMOTE_SETTINGS": str(settings_file), **extra}


def _promote(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _promote_all(env, [args])[0]


def _promote_all(env: dict[str, str], commands: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess[str]]:
    """Each command in a ``promote`` process of its own, all at once (each spends its seconds starting up)."""
    procs = [(args, subprocess.Popen([str(PROMOTE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)) for args in commands]
    done = []
    for args, proc in procs:
        out, err = proc.communicate(timeout=180)
        done.append(subprocess.CompletedProcess([str(PROMOTE), *args], proc.returncode, out, err))
    return done


# -- the ops database unreachable ---------------------------------------------------------------------------
NEEDS_OPS_DB = [
    ("run", "--project", "proj_x", "--staging", "env_x_staging", "--prod", "env_x_prod", "--user", "u"),
    ("preflight", "proj_x"),
    ("verify-staging", "env_x_staging"),
    ("validate", "env_x_prod"),
    ("db", "upgrade"),
    ("rollback", "run_x"),
    ("abort", "run_x", "--user", "u", "--wait", "1"),
    ("recover", "run_x"),
    ("cleanup",),
    ("window", "run_x", "--hours", "3"),
]


def test_an_unreachable_ops_database_is_one_line_naming_it_for_every_command(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    password = secrets.token_urlsafe(12)
    database = f"promote_ops_down_{secrets.token_hex(3)}"
    env = _env(_settings(tmp_path, DOWN_REF, database),
               **{DOWN_REF: f"host=127.0.0.1 port={port} user=postgres password={password}"})
    expected = f"promote: ops database {database} unreachable at 127.0.0.1:{port} (connection refused)"
    wrong = {}
    for args, result in zip(NEEDS_OPS_DB, _promote_all(env, NEEDS_OPS_DB), strict=True):
        if (result.returncode, result.stdout, result.stderr.strip()) != (EXIT_UNAVAILABLE, "", expected) or \
                password in result.stdout + result.stderr:
            wrong[args[0]] = (result.returncode, result.stdout[-500:], result.stderr[-1500:])
    assert wrong == {}


def test_an_ops_dsn_reference_nothing_sets_is_one_line(tmp_path: Path) -> None:
    env = _env(_settings(tmp_path, "PROMOTE_TEST_UNSET_OPS_DSN", "promote_ops_none"))
    env.pop("PROMOTE_TEST_UNSET_OPS_DSN", None)
    result = _promote(env, "cleanup")
    assert (result.returncode, result.stdout, result.stderr.strip()) == (EXIT_REJECTED, "", (
        "promote: ops database: secret reference 'PROMOTE_TEST_UNSET_OPS_DSN' is not set (environment or"
        " PROMOTE_SECRETS_FILE)"))


def test_a_rollback_whose_job_loses_the_ops_database_names_it(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The rollback job's op fails on the ops database: the caller gets that cause, not Dagster's
    'Error occurred while executing op' wrapper (in process, where the command's first check cannot step in)."""
    from promote_pipeline.cli.runner import run_rollback
    from promote_pipeline.promotion import settings
    from resources.ops_db import OpsDatabaseUnreachable, connection

    port = free_port()
    monkeypatch.setenv(DOWN_REF, f"host=127.0.0.1 port={port} user=postgres")
    monkeypatch.setattr(connection, "RECONNECT_SECONDS", 0.5)  # the job's patience for a restart, shortened
    settings.select(_settings(tmp_path, DOWN_REF, "promote_ops_gone"))
    try:
        with pytest.raises(OpsDatabaseUnreachable) as lost:
            run_rollback("run_x", "test", "test", quiet=True)
    finally:
        settings.select(None)
    assert str(lost.value) == f"ops database promote_ops_gone unreachable at 127.0.0.1:{port} (connection refused)"


# -- refusals, through a real ops database -------------------------------------------------------------------
@pytest.fixture
def ops_env(private_ops_db: OpsDatabase, tmp_path: Path) -> dict[str, str]:
    """A promote process's environment whose ops database is the private one (migrated, empty)."""
    return _env(_settings(tmp_path, private_ops_db.dsn_ref, private_ops_db.database))


def _one_line(result: subprocess.CompletedProcess[str], code: int, progress: bool = False) -> str:
    """The one line a command printed (on stderr after its progress lines when ``progress``)."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = (result.stderr if progress else result.stdout + result.stderr).splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_refusals_say_their_prefix_once_and_agree_on_exit_2(ops_env: dict[str, str]) -> None:
    rollback, window, recover, abort = _promote_all(ops_env, [
        ("rollback", "run_nope"), ("window", "run_nope", "--hours", "3"), ("recover", "run_nope"),
        ("abort", "run_nope", "--user", "u")])
    assert _one_line(rollback, EXIT_REJECTED) == "rollback refused: run_id run_nope is not a promotion run"
    assert _one_line(window, EXIT_REJECTED) == "refused: run_id: run_nope is not a promotion run"
    assert _one_line(recover, EXIT_REJECTED) == "refused: run_id: run_nope is not a promotion run"
    assert _one_line(abort, EXIT_REJECTED) == "abort refused: run_exists: no promotion run run_nope"


def test_an_unregistered_project_is_refused_in_one_line(ops_env: dict[str, str]) -> None:
    flags = ("--project", "proj_nope", "--staging", "env_a", "--prod", "env_b", "--user", "u")
    # launch applies the input rules before it asks the webserver anything, and says it as run does
    run, launched, *preflights = _promote_all(ops_env, [
        ("run", *flags), ("launch", *flags, "--stability-seconds", "9999", "--url", "http://127.0.0.1:9"),
        ("preflight", "proj_nope"), ("preflight", "proj_nope", "--staging", "env_a", "--prod", "env_b")])
    assert _one_line(run, EXIT_REJECTED, progress=True) == \
        "promotion rejected: project_exists: ops.projects has no row for project_id 'proj_nope'"
    assert _one_line(launched, EXIT_REJECTED) == \
        "promotion rejected: stability_window_seconds: must be >= 0 and <= 3600 (got 9999)"
    for result in preflights:  # a line per check, as always: the first failed, the others could not run
        assert result.returncode == EXIT_REJECTED and result.stderr == "", (result.args, result.stdout, result.stderr)
        first, *rest = result.stdout.splitlines()
        assert first == "FAIL 1. project_exists: ops.projects has no row for project_id 'proj_nope'", result.args
        assert rest and all(line.startswith("SKIP ") and line.endswith(": not reached") for line in rest), rest


# -- operator ids echoed --------------------------------------------------------------------------------------
TRICKY = [
    ("newline", "env\nPASS env_demo_staging: forged", r"'env\nPASS env_demo_staging: forged'"),
    ("RTL override", "env_\u202egnitsat", r"'env_\u202egnitsat'"),
    ("escape sequence", "env\x1b[2J", r"'env\x1b[2J'"),
    ("5,000 characters", "e" * 5000, "'" + "e" * 80 + "'…(5000 chars)"),
]


def test_ids_are_echoed_escaped_and_cut(ops_env: dict[str, str]) -> None:
    commands = [(command, value) for _, value, _ in TRICKY for command in ("verify-staging", "validate")]
    results = iter(_promote_all(ops_env, [*commands, ("window", TRICKY[0][1], "--hours", "3")]))
    for name, _, echo in TRICKY:
        verify, validate = next(results), next(results)
        assert _one_line(verify, EXIT_FAILED) == \
            f"FAIL {echo}: staging {echo} has no deploy, restore or adoption run", name
        assert _one_line(validate, EXIT_FAILED) == f"FAIL {echo}: unknown environment or no active deployment", name
    # what the rules of the promotion layer refuse, the same way
    assert _one_line(next(results), EXIT_REJECTED) == f"refused: run_id: {TRICKY[0][2]} is not a promotion run"


def test_a_launched_run_reports_the_cause_not_dagsters_wrapper() -> None:
    """`promote launch`/`status` read a failed step from the webserver: the exception the op raised, not the
    'Error occurred while executing op' Dagster wraps it in; the query asking for it is valid for the webserver."""
    from dagster_graphql.schema import create_schema
    from graphql import parse, validate

    from promote_pipeline.cli import launch

    schema = create_schema()
    assert validate(getattr(schema, "graphql_schema", schema), parse(launch._EVENTS)) == []
    report = launch.RunReport(dagster_run_id="r", dagster_status="FAILURE")
    launch._apply(report, [{"__typename": "ExecutionStepFailureEvent", "stepKey": "roll_back_promotion", "error": {
        "message": 'dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op'
                   ' "roll_back_promotion":\n',
        "className": "DagsterExecutionStepExecutionError",
        "cause": {"message": "resources.ops_db.connection.OpsDatabaseUnreachable: ops database promote_ops"
                             " unreachable at 127.0.0.1:1 (connection refused)\n",
                  "className": "OpsDatabaseUnreachable"}}}])
    assert report.error == "ops database promote_ops unreachable at 127.0.0.1:1 (connection refused)"
    assert report.failed_step == "roll_back_promotion" and not report.rejected
