"""The benchmark's ``small`` size as a smoke check (no timing assertion): one round of the three
pipelines and the promotion on a warm store, on a dataset built for it and removed afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_promote_vs_raw_small_runs_end_to_end() -> None:
    try:
        proc = subprocess.run([str(REPO / "bench" / "promote_vs_raw"), "--size", "small", "--repeats", "1"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
        for figure in ("| c/a |", "| c/b |", "peak RSS of the promotion process", "second (unchanged) / first"):
            assert figure in proc.stdout
        raw = Path(proc.stdout.strip().splitlines()[-1].removeprefix("(raw results: ").rstrip(")"))
        report = json.loads(raw.read_text())
        assert report["medians"]["a"] > 0 and report["medians"]["b"] > 0 and report["medians"]["c"] > 0
        cold, warm = report["runs"]["c"][0], report["runs"]["c2"][0]
        assert cold["new_objects"]["green"] > 0 and warm["new_objects"] == {"green": 0, "blue": 0}
        assert report["filestore_backup"]["second"] < report["filestore_backup"]["first"]
    finally:
        subprocess.run([sys.executable, str(REPO / "bench" / "dataset.py"), "--size", "small", "--down"],
                       capture_output=True, timeout=300)
