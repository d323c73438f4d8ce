"""Two promotions launched at once on the same production: exactly one runs; the other is refused
with a message naming the run that holds the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from promote_pipeline.cli.sandbox import PROD, PROJECT, STAGING, USER, Sandbox

pytestmark = pytest.mark.slow


def test_two_promotions_at_once_one_runs_one_is_refused(haproxy_box: Sandbox) -> None:
    cmd = [sys.executable, "-m", "promote_pipeline", "run", "--project", PROJECT, "--staging", STAGING,
           "--prod", PROD, "--user", USER, "--stability-seconds", "2", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(2)]
    results: list[tuple[int, str, str]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        results.append((proc.returncode, out, err))
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = next(json.loads(out.strip().splitlines()[-1]) for code, out, _ in results if code == 0)
    loser_err = next(err for code, _, err in results if code == 2)
    assert f"no_concurrent_operations: production {PROD} is busy: run {winner['run_id']} holds it" in loser_err


