"""Promotion vs hand-run pipelines, on the same data, in the same run: medians and ratios.

Three pipelines, alternated (a b c a b c ...) so that a shared, noisy machine weighs on all alike:

(a) raw: the best hand-run pipeline -- ``pg_dump -Fd -j2 -Z1`` of staging and of production, each
    with a ``tar | zstd -1`` archive of its filestore made at the same time; then ``pg_restore -j2``
    of staging's dump into a new database while staging's archive is extracted;
(b) odoo: Odoo's database manager -- per environment, a zip of a plain ``pg_dump`` and a copy of
    the filestore (Odoo copies it next to the dump, then zips the folder); then unzip, ``psql -f``
    into a new database and the filestore moved into place;
(c) promote: ``promote run --stability-seconds 0`` with smoke tests, with an EMPTY artifact store
    (every artifact deleted and garbage-collected first: the first promotion ever, nothing to
    reuse), its peak RSS sampled from /proc. Right after it, (c2) the same promotion again, the
    store now warm (what every later promotion sees); reported, not used in the ratios.

Before every timed run, untimed: the databases about to be read are vacuumed, PostgreSQL
checkpoints and dirty pages are written out, so that no run pays for the writes of the one before
(a freshly restored database is otherwise vacuumed, and its hint bits written, by whoever reads it
first). Then the filestore alone: a backup of staging's filestore into an empty store, and a second one of
the same, unchanged filestore (repeated, medians). All times are wall-clock seconds.

With ``--topology hosts`` (root: network namespaces) the dataset is a sandbox of ``promote sandbox up --topology
hosts`` (PostgreSQL on the ``db`` host, staging's and production's Odoo on theirs, the team's HAProxy adopted on
``router``), and both pipelines run on the ``worker`` host (``ip netns exec``), as a promoter on another machine:

(a) raw, between the same hosts: from ``worker``, ``pg_dump -Fd -j2 -Z1`` of staging's and of production's database
    on ``db``, each beside a ``tar | zstd -1`` of that environment's filestore read over SSH on its host
    (``ssh staging 'tar -cf - . | zstd -1'``) and written to the worker's artifact folder; then ``pg_restore -j2``
    into a new database on ``db`` while staging's archive is sent over SSH and unpacked on ``production``
    (``ssh production 'zstd -d | tar -x'``). SSH as the project's: key only, strict host keys against the test
    hosts' known_hosts.
(c) promote: ``promote run`` executed on ``worker``, as (c) above (c2 too). (b) is not run on hosts.

    bench/promote_vs_raw --size small|1g|4g [--repeats 3] [--modes a,b,c] [--no-warm] [--keep] [--topology hosts]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import dataset  # noqa: E402
from promote_pipeline.cli import sandbox as sbx  # noqa: E402
from promote_pipeline.cli import sandbox_hosts  # noqa: E402
from promote_pipeline.promotion import cleanup  # noqa: E402
from promote_pipeline.promotion.services import Services  # noqa: E402
from resources import netns_hosts, secrets  # noqa: E402
from resources.artifact_store import LocalArtifactStore  # noqa: E402
from resources.ops_db import OpsDatabase  # noqa: E402

PROMOTE = REPO / ".venv" / "bin" / "promote"
# The hosts topology: which host holds each environment's filestore (the pipelines' scratch names -> host).
ENV_HOST = {"staging": "staging", "prod": "production"}


def sh(script: str, env: dict[str, str], wrap: list[str] | None = None) -> float:
    """Run a bash script (``set -euo pipefail``), inside ``wrap`` (e.g. ``ip netns exec NS``); return its wall
    time."""
    start = time.monotonic()
    proc = subprocess.run([*(wrap or []), "bash", "-c", "set -euo pipefail\n" + script], env=env,
                          capture_output=True, text=True)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"script failed ({proc.returncode}): {proc.stderr.strip()[-800:]}\n{script}")
    return took


class Bench:
    def __init__(self, size: dataset.Size, work: Path, topology: str = "local") -> None:
        self.size = size
        self.work = work
        self.topology = topology
        self.box = dataset.sandbox(size, topology)
        self.res = self.box.resources()
        self.ops_db: OpsDatabase = self.res["ops_db"]
        self.host = self.res["odoo_host"]
        self.store: LocalArtifactStore = self.res["artifact_store"]
        self.svc = Services.from_resources(self.res)
        self.evidence = dataset.evidence_root(size, topology)
        # The hosts topology: the raw pipeline and the promotion both run on the worker host; the settling, the
        # clean-up and the store's emptying stay here (untimed).
        self.wrap: list[str] = []
        self.ssh: dict[str, list[str]] = {}
        if topology == "hosts":
            assert isinstance(self.box, sandbox_hosts.HostsSandbox)
            layout = self.box.layout()
            assert layout is not None
            self.wrap = ["ip", "netns", "exec", layout["hosts"]["worker"]["namespace"]]
            key = secrets.resolve(sandbox_hosts.KEY_REF)  # the path of the owner-only key file, as the settings'
            # The project's SSH options (resources/ssh_session.py): key only, host keys checked strictly against
            # the test hosts' known_hosts, never learned. No ControlMaster: one connection per stream, by hand.
            options = ["-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                       "-o", f"UserKnownHostsFile={layout['known_hosts']}", "-o", "GlobalKnownHostsFile=none",
                       "-o", "IdentitiesOnly=yes", "-i", key, "-o", "LogLevel=ERROR",
                       "-p", str(netns_hosts.SSH_PORT), "-l", layout["ssh_user"]]
            for name in ENV_HOST.values():
                self.ssh[name] = ["ssh", *options, layout["hosts"][name]["address"], "--"]
        dsn = secrets.resolve(sbx.DSN_REF)
        params = dict(part.split("=", 1) for part in dsn.split())
        self.env = {**os.environ, "PGHOST": params.get("host", "127.0.0.1"), "PGPORT": params.get("port", "5432"),
                    "PGUSER": params.get("user", "postgres")}
        if params.get("password"):
            self.env["PGPASSWORD"] = params["password"]
        self.scratch_db = f"bench_{dataset.work_name(size, topology).replace('-', '_')}_{dataset.CHECKOUT_TAG}_scratch"

    # -- the data every pipeline works on ------------------------------------------------------------
    def sources(self) -> dict[str, tuple[str, Path]]:
        out = {}
        for key, env_id in (("staging", sbx.STAGING), ("prod", sbx.PROD)):
            live = self.ops_db.active_deployment(env_id)
            assert live is not None
            out[key] = (live.db_name, self.host.filestore_dir(live.data_dir, live.served_db))
        return out

    def settle(self) -> None:
        """Untimed, before every timed run, so that no run pays for the one before it: the databases about to be
        read vacuumed (a freshly restored table is otherwise vacuumed, and its hint bits written, by whoever
        comes next: autovacuum, or the first pg_dump to read it), a checkpoint, and dirty pages written out."""
        for db, _fs in self.sources().values():
            with self.host.connect(sbx.DSN_REF, db, autocommit=True) as conn:
                conn.execute("VACUUM (ANALYZE)")
        with self.host.connect(sbx.DSN_REF, "postgres", autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        os.sync()

    def _reset_scratch(self) -> None:
        self.host.drop_database(sbx.DSN_REF, self.scratch_db)
        shutil.rmtree(self.work / "scratch", ignore_errors=True)
        (self.work / "scratch").mkdir(parents=True)

    def _pipeline(self, backup: Callable[[str, str, Path], str], restore: Callable[[Path], str]) -> dict[str, Any]:
        """Back up staging and production with ``backup(db, filestore, scratch)``'s script for each, then
        ``restore(scratch)``'s script, in a clean scratch folder and database; the phases' wall times."""
        self._reset_scratch()
        w = self.work / "scratch"
        phases = {}
        for key, (db, fs) in self.sources().items():
            phases[f"backup_{key}"] = sh(backup(db, str(fs), w / key), self.env, self.wrap)
        phases["restore"] = sh(restore(w), self.env, self.wrap)
        self._reset_scratch()
        return {"seconds": sum(phases.values()), "phases": phases}

    # -- (a) the best hand-run pipeline --------------------------------------------------------------
    def run_raw(self) -> dict[str, Any]:
        return self._pipeline(
            lambda db, fs, out: (f"pg_dump -Fd -j2 -Z1 --no-owner -f {out}.dir -d {db} & p1=$!\n"
                                 f"tar -C {fs} -cf - . | zstd -1 -T2 -q -o {out}.tar.zst & p2=$!\n"
                                 "wait $p1; wait $p2\n"),
            lambda w: (f"createdb {self.scratch_db}\n"
                       f"pg_restore -j2 --no-owner --exit-on-error -d {self.scratch_db} {w}/staging.dir & p1=$!\n"
                       f"mkdir -p {w}/restored_fs && zstd -d -q -c {w}/staging.tar.zst"
                       f" | tar -C {w}/restored_fs -xf - & p2=$!\n"
                       "wait $p1; wait $p2\n"))

    # -- (a) by hand between the hosts ---------------------------------------------------------------
    def run_raw_hosts(self) -> dict[str, Any]:
        """(a) on the hosts, from the worker: the databases dumped from and restored into ``db``; each filestore
        archived on its own host and the archive written here over SSH (``out`` is ``<scratch>/staging`` or
        ``<scratch>/prod``); staging's archive unpacked on the production host over SSH."""
        def remote(host: str, script: str) -> str:
            return shlex.join([*self.ssh[host], script])

        return self._pipeline(
            lambda db, fs, out: (
                f"pg_dump -Fd -j2 -Z1 --no-owner -f {out}.dir -d {db} & p1=$!\n"
                + remote(ENV_HOST[out.name], f"tar -C {shlex.quote(fs)} -cf - . | zstd -1 -T2 -q -c")
                + f" > {out}.tar.zst < /dev/null & p2=$!\n"
                "wait $p1; wait $p2\n"),
            lambda w: (f"createdb {self.scratch_db}\n"
                       f"pg_restore -j2 --no-owner --exit-on-error -d {self.scratch_db} {w}/staging.dir & p1=$!\n"
                       + remote("production",
                                f"mkdir -p {w}/restored_fs && zstd -d -q -c | tar -C {w}/restored_fs -xf -")
                       + f" < {w}/staging.tar.zst & p2=$!\n"
                       "wait $p1; wait $p2\n"))

    # -- (b) Odoo's database manager -----------------------------------------------------------------
    def run_odoo(self) -> dict[str, Any]:
        return self._pipeline(
            lambda db, fs, out: (f"mkdir {out}\n"
                                 f"cp -a {fs} {out}/filestore\n"
                                 f"pg_dump --no-owner -f {out}/dump.sql -d {db}\n"
                                 f"cd {out} && zip -q -r {out}.zip dump.sql filestore && cd / && rm -rf {out}\n"),
            lambda w: (f"mkdir {w}/unzipped && unzip -q {w}/staging.zip -d {w}/unzipped\n"
                       f"createdb {self.scratch_db}\n"
                       f"psql -q -X -o /dev/null -d {self.scratch_db} -f {w}/unzipped/dump.sql\n"
                       f"mv {w}/unzipped/filestore {w}/restored_fs\n"))

    # -- (c) the promotion -----------------------------------------------------------------------------
    def empty_store(self) -> None:
        """Delete every artifact (and so, by garbage collection, every object): the store a first promotion sees."""
        root = Path(self.store.root)
        if root.is_dir():
            for entry in root.iterdir():
                if not entry.name.startswith("."):
                    self.store.delete(entry.name)
        self.store.collect_garbage()

    def clean_up_retired(self) -> None:
        """What the cleanup schedule does after the rollback window, done now: old deployments dropped."""
        self.ops_db.make_pending_tasks_due()
        cleanup.run_due_tasks(self.svc, str(self.evidence))

    def run_promote(self) -> dict[str, Any]:
        env = {**os.environ, "PROMOTE_SETTINGS": str(self.box.settings_file),
               "PROMOTE_EVIDENCE_ROOT": str(self.evidence)}
        env.pop("PROMOTE_SECRETS_FILE", None)
        cmd = [*self.wrap, str(PROMOTE), "run", "--project", sbx.PROJECT, "--staging", sbx.STAGING, "--prod", sbx.PROD,
               "--user", sbx.USER, "--stability-seconds", "0", "--json"]
        launched = datetime.now(UTC)
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak_kib = 0
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kib = max(peak_kib, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        took = time.monotonic() - start
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"promote run failed ({proc.returncode}): {err.strip()[-1500:]}\n{out[-1500:]}")
        outcome = json.loads(out.strip().splitlines()[-1])
        return {"seconds": took, "peak_rss_mib": round(peak_kib / 1024, 1), **self._breakdown(outcome, took, launched)}

    @staticmethod
    def _breakdown(outcome: dict[str, Any], wall: float, launched: datetime) -> dict[str, Any]:
        """Tool time (database and filestore work, green's start, smoke tests) from the evidence; the rest is
        the job's own overhead (interpreter, imports, Dagster, ops records, evidence, router), split at the
        moment the run's record was made (final_status.json's ``started_at``, right after the preconditions):
        start-up before it, the steps' own work after it."""
        ev = Path(outcome["evidence_dir"])
        snap = json.loads((ev / "staging_snapshot.json").read_text())
        blue = json.loads((ev / "blue_backup.json").read_text())
        restore = json.loads((ev / "green_restore.json").read_text())
        smoke = json.loads((ev / "smoke_tests.json").read_text())
        smoke_s = sum(r.get("duration_ms", 0) for r in smoke.get("results", [])) / 1000
        phases = {
            "snapshot_staging": snap["total_seconds"], "backup_production": blue["total_seconds"],
            "verify": restore.get("verify_seconds", 0.0),
            "restore": restore["restore_seconds"] - restore.get("verify_seconds", 0.0),
            "green_start": round(restore["ready_seconds"] - restore["restore_seconds"], 3),
            "smoke_tests": round(smoke_s, 3),
        }
        tool = sum(phases.values())
        started = datetime.fromisoformat(json.loads((ev / "final_status.json").read_text())["started_at"])
        start_up = (started - launched).total_seconds()
        return {"phases": phases, "tool_seconds": round(tool, 3), "overhead_seconds": round(wall - tool, 3),
                "start_up_seconds": round(start_up, 3), "in_job_overhead_seconds": round(wall - start_up - tool, 3),
                "new_objects": {"green": snap.get("filestore_new_objects"), "blue": blue.get("filestore_new_objects")}}

    def run_trivial_job(self) -> dict[str, Any]:
        """Dagster's floor: eight trivial ops in process, interpreter start included (as for ``promote run``)."""
        start = time.monotonic()
        subprocess.run([sys.executable, str(BENCH_DIR / "trivial_job.py")], check=True, capture_output=True)
        return {"seconds": time.monotonic() - start}

    # -- the filestore alone: first and second backup -------------------------------------------------
    def filestore_backups(self, repeats: int) -> dict[str, Any]:
        _, fs = self.sources()["staging"]
        first: list[float] = []
        second: list[float] = []
        for _ in range(repeats):
            root = Path(tempfile.mkdtemp(prefix="fsbench-", dir=self.work))
            store = LocalArtifactStore(root=str(root))
            try:
                for times in (first, second):
                    aid = store.new_artifact_id("bench", "blue")
                    store.allocate(aid)
                    start = time.monotonic()
                    store.ingest_filestore(aid, fs)
                    times.append(time.monotonic() - start)
            finally:
                shutil.rmtree(root, ignore_errors=True)
        return {"first": statistics.median(first), "second": statistics.median(second),
                "ratio": statistics.median(second) / statistics.median(first), "runs": [first, second]}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 2**20
    pg = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {pg}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(dataset.SIZES), default="small")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of a b c (default 3)")
    parser.add_argument("--modes", default=None,
                        help="which pipelines to run (default a,b,c; a,c with --topology hosts)")
    parser.add_argument("--no-warm", action="store_true", help="skip c2, the promotion on a warm store")
    parser.add_argument("--keep", action="store_true",
                        help="keep the dataset (its databases, processes and folder) for another run")
    parser.add_argument("--topology", choices=dataset.TOPOLOGIES, default="local",
                        help="local (default), or hosts: the test hosts as network namespaces, (a) and (c) run on the"
                             " worker host (root)")
    args = parser.parse_args(argv)
    size = dataset.SIZES[args.size]
    modes = [m.strip() for m in (args.modes or ("a,c" if args.topology == "hosts" else "a,b,c")).split(",")
             if m.strip()]
    if args.topology == "hosts":
        if "b" in modes:
            parser.error("--topology hosts: (b), Odoo's database manager, is not run on hosts (--modes a,c)")
        why = sandbox_hosts.unavailable_reason()
        if why:
            parser.error(f"--topology hosts: {why}")
        # A SIGTERM (timeout, a CI's cancel) ends the run through the teardown below, like Ctrl-C, not past it.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            return _main(args, size, modes)
        finally:
            # The hosts (namespaces, their sshds and PostgreSQL, every process started in them) go even after a
            # failure: the sandbox's own teardown.
            if not args.keep:
                prefix = _prefix(size)
                dataset.down(size, args.topology)
                left = netns_hosts.leftovers(prefix) if prefix else []
                print(f"(dataset {size.name} and its hosts removed{'; left over: ' + ', '.join(left) if left else ''};"
                      " --keep keeps them)", flush=True)
    return _main(args, size, modes)


def _prefix(size: dataset.Size) -> str:
    """The hosts' name prefix, from the hosts sandbox's layout (empty once it is gone)."""
    box = dataset.sandbox(size, "hosts")
    assert isinstance(box, sandbox_hosts.HostsSandbox)
    layout = box.layout()
    return str(layout["prefix"]) if layout else ""


def _main(args: argparse.Namespace, size: dataset.Size, modes: list[str]) -> int:
    topology: str = args.topology
    os.environ["PROMOTE_EVIDENCE_ROOT"] = str(dataset.evidence_root(size, topology))
    load_before = os.getloadavg()
    built = dataset.build(size, topology)
    print(f"dataset {size.name} ({topology}): database {built['db_bytes'] / 2**20:.0f} MiB, filestore"
          f" {built['filestore_files']} files / {built['filestore_bytes'] / 2**20:.0f} MiB (built or checked in"
          f" {built['seconds']} s); load average {', '.join(f'{x:.2f}' for x in load_before)}", flush=True)
    bench = Bench(size, dataset.WORK / dataset.work_name(size, topology), topology)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in ("a", "b", "c", "c2", "j")}
    for rep in range(1, args.repeats + 1):
        for mode in modes:
            if mode == "c":
                bench.clean_up_retired()
                bench.empty_store()
            bench.settle()
            if mode == "a":
                result = bench.run_raw_hosts() if topology == "hosts" else bench.run_raw()
            elif mode == "b":
                result = bench.run_odoo()
            else:
                result = bench.run_promote()
            runs[mode].append(result)
            print(f"round {rep} {mode}: {result['seconds']:.2f} s "
                  + json.dumps({k: v for k, v in result.items() if k != "seconds"}), flush=True)
            if mode == "c" and not args.no_warm:
                bench.clean_up_retired()
                bench.settle()
                warm = bench.run_promote()
                runs["c2"].append(warm)
                print(f"round {rep} c2 (warm store): {warm['seconds']:.2f} s " + json.dumps(
                    {k: v for k, v in warm.items() if k != "seconds"}), flush=True)
            if mode == "c":
                bench.settle()
                runs["j"].append(bench.run_trivial_job())
                print(f"round {rep} j (Dagster floor: eight trivial ops): {runs['j'][-1]['seconds']:.2f} s", flush=True)
    bench.clean_up_retired()
    bench.settle()
    fs = bench.filestore_backups(args.repeats)
    print(f"filestore backup: first {fs['first']:.3f} s, second (unchanged) {fs['second']:.3f} s,"
          f" ratio {fs['ratio']:.3f}", flush=True)

    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items() if rs}
    report: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                              "topology": topology, "load_average": {"start": load_before, "end": os.getloadavg()},
                              "size": size.name, "dataset": built, "repeats": args.repeats, "medians": med,
                              "filestore_backup": fs, "runs": runs}
    if "c" in med:
        report["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs["c"] + runs["c2"])
        report["overhead_seconds"] = statistics.median(r["overhead_seconds"] for r in runs["c"])
        report["tool_seconds"] = statistics.median(r["tool_seconds"] for r in runs["c"])
        report["overhead_above_floor_seconds"] = report["overhead_seconds"] - med["j"]
        for key in ("start_up_seconds", "in_job_overhead_seconds"):
            report[key] = statistics.median(r[key] for r in runs["c"])
        for m in ("a", "b"):
            if m in med:
                report[f"c/{m}"] = med["c"] / med[m]
                if "c2" in med:
                    report[f"c2/{m}"] = med["c2"] / med[m]
    out = bench.work / f"results-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(markdown(report))
    if args.keep:
        print(f"(raw results: {out})")
    else:
        saved = dataset.WORK / f"results-{dataset.work_name(size, topology)}-{out.name.removeprefix('results-')}"
        saved.write_text(out.read_text())
        if topology == "local":  # the hosts' teardown is main()'s, failure or not
            dataset.down(size)
            print(f"(dataset {size.name} removed; --keep keeps it)")
        print(f"(raw results: {saved})")
    return 0


# What (c) does that (a) does not, whatever the topology (the local mode's accounting, README: Benchmarks).
C_BEYOND_A = ("(c) also: preconditions (disk space, drift report), a production backup that is a verified artifact"
              " (every dump file hashed as written, the filestore content-addressed and hashed), a deep check before"
              " the restore, green's PgBouncer and Odoo started and health-checked, smoke tests, the router switched,"
              " ops records and evidence; its breakdown below is from its evidence.")
HOSTS_A = ("(a) on hosts, all from the worker host: pg_dump -Fd -j2 -Z1 of staging's and of production's database on"
           " db, each beside tar | zstd -1 of that environment's filestore on its own host over SSH (archive written on"
           " the worker); pg_restore -j2 into a new database on db beside staging's archive unpacked on production"
           " over SSH (zstd -d | tar -x there). It starts no Odoo, switches nothing, hashes and checks nothing. (c) on"
           " the same hosts reads both filestores from the file system the test hosts share (not over SSH: README,"
           " Hosts, not remote yet) and sends green's filestore to production as one uncompressed tar over SSH.")


def markdown(r: dict[str, Any]) -> str:
    hosts = r.get("topology") == "hosts"
    names = {"a": ("(a) raw, from worker: 2x (pg_dump -Fd -j2 -Z1 + ssh host tar \\| zstd -1), pg_restore -j2 +"
                   " ssh production zstd -d \\| tar -x" if hosts else
                   "(a) raw: 2x pg_dump -Fd -j2 -Z1 + tar \\| zstd -1, pg_restore -j2 + extraction"),
             "b": "(b) Odoo database manager: 2x zip(pg_dump plain + filestore), unzip + psql",
             "c": ("(c) promote run on worker" if hosts else "(c) promote run")
             + " --stability-seconds 0 (smoke tests on), empty artifact store",
             "c2": "(c2) the same promotion again, warm artifact store",
             "j": "(j) Dagster's floor: a job of eight trivial ops, in process"}
    load = r.get("load_average")
    lines = [f"Size `{r['size']}`{' on hosts (network namespaces)' if hosts else ''}: database"
             f" {r['dataset']['db_bytes'] / 2**20:.0f} MiB, filestore"
             f" {r['dataset']['filestore_files']} files / {r['dataset']['filestore_bytes'] / 2**20:.0f} MiB;"
             f" {r['repeats']} rounds, alternated. {r['date']}, {r['machine']}."
             + (f" Load average (1, 5, 15 min) at the start {', '.join(f'{x:.2f}' for x in load['start'])},"
                f" at the end {', '.join(f'{x:.2f}' for x in load['end'])}." if load else ""), ""]
    if hosts:
        lines += [HOSTS_A, ""]
    lines += [C_BEYOND_A, "", "| pipeline | median s | runs (s) |", "|---|---:|---|"]
    for m, rs in r["runs"].items():
        if rs:
            each = ", ".join(f"{x['seconds']:.2f}" for x in rs)
            lines.append(f"| {names[m]} | {r['medians'][m]:.2f} | {each} |")
    lines += ["", "| ratio / figure | value |", "|---|---:|"]
    for key in ("c/a", "c/b", "c2/a", "c2/b"):
        if key in r:
            lines.append(f"| {key} | {r[key]:.3f} |")
    fs = r["filestore_backup"]
    lines.append(f"| filestore backup, second (unchanged) / first | {fs['ratio']:.3f}"
                 f" ({fs['second']:.3f} s / {fs['first']:.3f} s) |")
    if "peak_rss_mib" in r:
        lines.append(f"| peak RSS of the promotion process | {r['peak_rss_mib']:.0f} MiB |")
        lines.append(f"| promotion (c): tool time / job overhead (median) | {r['tool_seconds']:.2f} s /"
                     f" {r['overhead_seconds']:.2f} s |")
        lines.append("| job overhead above Dagster's floor (c overhead - j) |"
                     f" {r['overhead_above_floor_seconds']:.2f} s |")
        lines.append("| overhead: start-up, launch to the run's record (interpreter, imports, Dagster instance,"
                     f" preconditions) / the steps' own work after it | {r['start_up_seconds']:.2f} s /"
                     f" {r['in_job_overhead_seconds']:.2f} s |")
    lines += ["", "| round | a: phases (s) | c: phases from its evidence (s) |", "|---|---|---|"]
    for i, (a, c) in enumerate(zip(r["runs"].get("a", []), r["runs"].get("c", []), strict=False), start=1):
        lines.append(f"| {i} | {' / '.join(f'{k} {v:.2f}' for k, v in a['phases'].items())} |"
                     f" {' / '.join(f'{k} {v:.2f}' for k, v in c['phases'].items())}; overhead"
                     f" {c['overhead_seconds']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
