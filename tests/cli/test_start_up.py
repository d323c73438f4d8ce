"""What ``promote run`` pays before its first step: no GraphQL client library, no garbage collection
over start-up's objects (the job's own overhead is measured by bench/promote_vs_raw)."""

from __future__ import annotations

import gc
import subprocess
import sys

from promote_pipeline.cli.runner import end_of_start_up


def test_the_run_path_does_not_import_the_graphql_client() -> None:
    # Everything `promote run` imports before executing the job: the CLI, its parser (drills, sandbox, the
    # code location's definitions) and the runner. dagster_graphql (gql, requests) is only for `launch`.
    code = ("import sys; from promote_pipeline import definitions; from promote_pipeline.cli import main, runner; "
            "main.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster_graphql', 'gql')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_end_of_start_up_freezes_and_turns_collection_back_on() -> None:
    gc.disable()
    try:
        end_of_start_up()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0  # start-up's objects are out of the collector's way
    finally:
        gc.unfreeze()
        gc.enable()


def test_end_of_start_up_leaves_a_caller_that_kept_collection_on_alone() -> None:
    assert gc.isenabled()
    before = gc.get_freeze_count()
    end_of_start_up()
    assert gc.isenabled() and gc.get_freeze_count() == before


def test_the_command_line_turns_collection_back_on_whatever_happens() -> None:
    # `--help` leaves through SystemExit while the parser is built, before any command runs.
    code = ("import gc\nfrom promote_pipeline.cli.main import main\ntry:\n    main(['cleanup', '--help'])\n"
            "except SystemExit:\n    pass\nprint(gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True"
