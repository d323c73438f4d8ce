"""How soon traffic is back on blue after a failure is detected, measured: the drills' ``detection_to_blue_ms``.

The tests check that a rollback happens and that the router itself serves blue again; how fast is a
measurement, taken here on the ``small`` benchmark sandbox (bench/.work/small/), never asserted in a test
that a loaded machine would make flaky. ``db-restart`` restarts the PostgreSQL the sandbox uses (the
machine's, when no private cluster runs), so it is only run when named.

    .venv/bin/python bench/rollback_speed.py --rounds 3
    .venv/bin/python bench/rollback_speed.py --faults stability-5xx,router-fail --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import dataset  # noqa: E402
from promote_pipeline.cli.drills import Drill  # noqa: E402

# The drills whose rollback moves traffic (smoke-fail and disk-full never cut over).
DEFAULT_FAULTS = ("stability-5xx", "green-crash", "router-fail", "corrupt-artifact")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--faults", default=",".join(DEFAULT_FAULTS))
    parser.add_argument("--stability-seconds", type=int, default=4)
    args = parser.parse_args(argv)
    size = dataset.SIZES["small"]
    os.environ.setdefault("PROMOTE_EVIDENCE_ROOT", str(dataset.evidence_root(size)))
    dataset.build(size)
    box = dataset.sandbox(size)
    faults = [f for f in args.faults.split(",") if f]
    measured: dict[str, list[int]] = {f: [] for f in faults}
    unsafe: list[str] = []
    for round_no in range(1, args.rounds + 1):
        for fault in faults:  # alternated, so a slow moment of the machine spreads over every fault
            report = Drill(box, fault, stability_seconds=args.stability_seconds, say=lambda _: None).run()
            if not report["safe"]:
                unsafe.append(f"round {round_no} {fault}: {report['checks']}")
            if isinstance(report.get("detection_to_blue_ms"), int):
                measured[fault].append(report["detection_to_blue_ms"])
            print(f"round {round_no} {fault}: {report.get('detection_to_blue_ms')} ms, safe={report['safe']}",
                  flush=True)
    print("\n| drill | detection to blue, ms (runs) | median | max |\n|---|---|---:|---:|")
    for fault, runs in measured.items():
        if runs:
            print(f"| {fault} | {', '.join(map(str, runs))} | {statistics.median(runs):.0f} | {max(runs)} |")
    for line in unsafe:
        print(f"NOT SAFE: {line}", file=sys.stderr)
    return 1 if unsafe else 0


if __name__ == "__main__":
    sys.exit(main())
