"""N promotions launched together vs the same N one after the other, through the Dagster instance `make ui` makes.

A sandbox of its own with as many staging/production pairs as the largest N (``promote sandbox up --environments``,
production sized by ``bench/dataset.py``'s ``--size``), on a PostgreSQL cluster of its own (8 pairs, their greens,
PgBouncers and Dagster's run workers need more than a shared server's 100 connections), and a dagster-webserver and
dagster-daemon started by ``scripts/ui.sh`` on the repository's dagster.yaml: queued runs, at most 4 at a time and 1
per production environment. Every promotion is submitted through GraphQL (``promote launch``'s ``submit``), so the
daemon's queue decides what runs when, as it does for a person.

- sequential: one promotion of each environment in turn, each waited for (submit to end) before the next; the
  sequential time of N is the sum of the first N;
- together: N promotions (environments 1..N) submitted at once; wall time from the first submission to the last
  run's end, and the most runs Dagster's storage shows running at one time.

Prints one JSON line, then a markdown table for ``bench/RESULTS.md`` (ratio = together / sequential sum).

    .venv/bin/python bench/many_environments.py --size small [--counts 1,4,8] [--stability-seconds 2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
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

import psycopg  # noqa: E402

from bench import dataset  # noqa: E402
from promote_pipeline.cli import launch  # noqa: E402
from promote_pipeline.cli import sandbox as sbx  # noqa: E402
from resources.odoo_host import free_port  # noqa: E402

UI_SH = REPO / "scripts" / "ui.sh"
RUN_TIMEOUT = 1800  # one round's patience; a round that takes longer is a failure, said as such
MAX_CONNECTIONS = 400


def _work(size: dataset.Size) -> Path:
    return dataset.WORK / f"many-{size.name}"


def _sandbox(size: dataset.Size, environments: int) -> sbx.Sandbox:
    tag = f"{size.name}_{dataset.CHECKOUT_TAG}"
    return sbx.Sandbox(root=_work(size) / "sandbox", ops_database=f"promote_ops_many_{tag}",
                       db_prefix=f"many_{tag}", pbkdf2_rounds=size.pbkdf2_rounds,
                       partners=size.partners, attachments=size.fs_files, attachment_size=size.attachment_size,
                       private_postgres=True, environments=environments)


def _own_cluster(root: Path) -> str:
    """The sandbox's private cluster, started before the sandbox (which then uses it) and allowed more clients."""
    root.mkdir(parents=True, exist_ok=True)
    dsn = sbx.start_private_postgres(root, free_port())
    with psycopg.connect(dsn + " dbname=postgres", autocommit=True) as conn:
        current = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        if current < MAX_CONNECTIONS:
            conn.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
    if current < MAX_CONNECTIONS:
        sbx.restart_postgres(root)
    return dsn


def _ui_env(size: dataset.Size, box: sbx.Sandbox, dsn: str, port: int) -> dict[str, str]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {**os.environ, "UI_DAGSTER_HOME": str(_work(size) / "dagster_home"), "DAGSTER_PORT": str(port),
           "DAGSTER_PG_DB": "dagster_bench_many", "PGHOST": str(params["host"]), "PGPORT": str(params["port"]),
           "PROMOTE_SETTINGS": str(box.settings_file), "PROMOTE_EVIDENCE_ROOT": str(_work(size) / "evidence"),
           "UI_READY_TIMEOUT": "180"}
    env.pop("PROMOTE_SECRETS_FILE", None)
    env.pop("DAGSTER_HOME", None)
    return env


def _inputs(index: int, stability: int) -> dict[str, Any]:
    staging, prod = sbx.pair(index)
    return {"project_id": sbx.PROJECT, "staging_env_id": staging, "prod_env_id": prod, "user_id": sbx.USER,
            "stability_window_seconds": stability}


def _wait(run_ids: list[str], url: str) -> list[dict[str, Any]]:
    """Each run's Dagster record once all have ended; raises if one did not succeed."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        infos = [launch.run_info(run_id, url) for run_id in run_ids]
        if all(info["status"] in launch.FINISHED for info in infos):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs still going after {RUN_TIMEOUT}s: {[i['status'] for i in infos]}")
        time.sleep(0.5)
    for info in infos:
        if info["status"] != "SUCCESS":
            report = launch.report(info["runId"], url)
            where = (f"{report.failed_step}: {report.error}" if report.failed_step
                     else "before its first step (the daemon's log, ui_logs/daemon.log, says why)")
            raise RuntimeError(f"run {info['runId']} ({info['tags'].get('promote/prod_env')}) ended"
                               f" {info['status']} {where}")
    return infos


def _most_at_once(infos: list[dict[str, Any]]) -> int:
    """The most runs running at one instant, from their start and end times."""
    edges = sorted([(i["startTime"], 1) for i in infos] + [(i["endTime"], -1) for i in infos])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def sequential(url: str, count: int, stability: int) -> list[float]:
    """One promotion of each of environments 1..count in turn; each one's wall seconds, submit to end."""
    seconds = []
    for index in range(1, count + 1):
        start = time.monotonic()
        _wait([launch.submit(_inputs(index, stability), url, source="bench")], url)
        seconds.append(round(time.monotonic() - start, 2))
        print(f"  sequential {index}/{count}: {seconds[-1]} s", file=sys.stderr)
    return seconds


def together(url: str, count: int, stability: int) -> dict[str, Any]:
    """Environments 1..count promoted at once: the round's wall seconds and what ran when."""
    start = time.monotonic()
    run_ids = [launch.submit(_inputs(index, stability), url, source="bench") for index in range(1, count + 1)]
    infos = _wait(run_ids, url)
    wall = round(time.monotonic() - start, 2)
    runs = [round(i["endTime"] - i["startTime"], 2) for i in infos]
    print(f"  together N={count}: {wall} s", file=sys.stderr)
    return {"wall_seconds": wall, "run_seconds": runs, "most_at_once": _most_at_once(infos)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(dataset.SIZES), default="small", help="production's size")
    parser.add_argument("--counts", default="1,4,8", help="the numbers of promotions launched together")
    parser.add_argument("--stability-seconds", type=int, default=2, help="each promotion's stability window")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox and the UI up afterwards")
    args = parser.parse_args(argv)
    counts = sorted({int(c) for c in args.counts.split(",")})
    if not counts or counts[0] < 1 or counts[-1] > sbx.MAX_ENVIRONMENTS:
        parser.error(f"--counts: whole numbers from 1 to {sbx.MAX_ENVIRONMENTS}")
    size = dataset.SIZES[args.size]
    biggest = counts[-1]
    box = _sandbox(size, biggest)
    env: dict[str, str] = {}
    try:
        t0 = time.monotonic()
        dsn = _own_cluster(box.root)
        box.up()
        setup = round(time.monotonic() - t0, 1)
        port = free_port()
        env = _ui_env(size, box, dsn, port)
        subprocess.run(["bash", str(UI_SH), "up"], env=env, check=True, stdout=subprocess.DEVNULL, timeout=600)
        url = f"http://127.0.0.1:{port}"
        print(f"sandbox of {biggest} environments up in {setup} s; UI at {url}", file=sys.stderr)
        seq = sequential(url, biggest, args.stability_seconds)
        rounds = {n: together(url, n, args.stability_seconds) for n in counts}
    finally:
        if not args.keep:
            if env:
                subprocess.run(["bash", str(UI_SH), "down"], env=env, stdout=subprocess.DEVNULL, timeout=300)
            box.down()
    rows = []
    for n in counts:
        seq_sum = round(sum(seq[:n]), 2)
        rows.append({"n": n, "sequential_sum": seq_sum, "together": rounds[n]["wall_seconds"],
                     "ratio": round(rounds[n]["wall_seconds"] / seq_sum, 3),
                     "speed_up": round(seq_sum / rounds[n]["wall_seconds"], 2),
                     "most_at_once": rounds[n]["most_at_once"], "run_seconds": rounds[n]["run_seconds"]})
    result = {"size": size.name, "stability_seconds": args.stability_seconds, "sequential_seconds": seq,
              "rows": rows, "cores": os.cpu_count(), "load_average": os.getloadavg(),
              "at": datetime.now(UTC).isoformat(timespec="seconds")}
    print(json.dumps(result))
    print("\n| N | N sequential, sum s | N together, wall s | together / sequential | speed-up | most running at"
          " once |\n|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['n']} | {row['sequential_sum']} | {row['together']} | {row['ratio']} | {row['speed_up']}"
              f" | {row['most_at_once']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
