"""How long production is read-only with ``--freeze-blue``: from blue's freeze to the router's switch to green.

Runs ``promote run --freeze-blue --accept-drift --stability-seconds 0`` on a benchmark dataset (``bench/dataset.py``,
built if missing) ``--repeats`` times and reads each run's ``cutover.json``: ``blue_freeze.read_only_seconds``
(what users of production live through: writes refused), and, for the part of it that grows with the data, the
time of the last drift check (a ``write_date`` scan of every Odoo table on blue) measured the same way on blue
right after the run. Prints one JSON line and a markdown table for ``bench/RESULTS.md``.

    .venv/bin/python bench/freeze_blue.py --size small|1g [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import dataset  # noqa: E402
from promote_pipeline.cli import sandbox as sbx  # noqa: E402
from promote_pipeline.odoo import watermarks  # noqa: E402

PROMOTE = REPO / ".venv" / "bin" / "promote"


def promote_frozen(box: Any, evidence: Path) -> dict[str, Any]:
    env = {**os.environ, "PROMOTE_SETTINGS": str(box.settings_file), "PROMOTE_EVIDENCE_ROOT": str(evidence)}
    env.pop("PROMOTE_SECRETS_FILE", None)
    cmd = [str(PROMOTE), "run", "--project", sbx.PROJECT, "--staging", sbx.STAGING, "--prod", sbx.PROD,
           "--user", sbx.USER, "--stability-seconds", "0", "--freeze-blue", "--accept-drift", "--json"]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"promote run failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    cut = json.loads((Path(outcome["evidence_dir"]) / "cutover.json").read_text())
    return {"run_id": outcome["run_id"], "wall_seconds": round(time.monotonic() - start, 1),
            "read_only_seconds": cut["blue_freeze"]["read_only_seconds"], "switch_ms": cut["switch_ms"]}


def drift_scan_seconds(box: Any) -> float:
    """One drift count on production as the last check runs it (every table's write_date), timed."""
    res = box.resources()
    prod = res["ops_db"].active_deployment(sbx.PROD)
    with res["odoo_host"].connect(sbx.DSN_REF, prod.db_name) as conn:
        start = time.monotonic()
        watermarks.drift(conn, datetime(2000, 1, 1, tzinfo=UTC))
        return round(time.monotonic() - start, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(dataset.SIZES), default="small")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    size = dataset.SIZES[args.size]
    os.environ.setdefault("PROMOTE_EVIDENCE_ROOT", str(dataset.evidence_root(size)))
    built = dataset.build(size)
    box = dataset.sandbox(size)
    box.activate()
    runs = [promote_frozen(box, dataset.evidence_root(size)) for _ in range(args.repeats)]
    scan = drift_scan_seconds(box)
    ro = [r["read_only_seconds"] for r in runs]
    result = {"size": size.name, "db_bytes": built["db_bytes"], "filestore_bytes": built["filestore_bytes"],
              "runs": runs, "read_only_seconds_median": statistics.median(ro), "read_only_seconds_max": max(ro),
              "drift_scan_seconds": scan, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    print(json.dumps(result))
    print(f"\n| size | runs | read-only s, median | max | one drift scan, s |\n|---|---:|---:|---:|---:|\n"
          f"| {size.name} ({built['db_bytes'] // 2**20} MiB db) | {len(runs)} | {result['read_only_seconds_median']}"
          f" | {result['read_only_seconds_max']} | {scan} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
