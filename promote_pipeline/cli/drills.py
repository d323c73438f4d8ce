"""Drills: a promotion in the sandbox with one fault injected, judged by the state it leaves.

A drill passes (exit 0) only when the system ends safe: the run ``rolled_back`` (or ``failed``
or rejected with blue untouched), the router on the blue that was live before, blue's data
unchanged (a fingerprint of its tables taken before and after), green stopped, and the
evidence complete. Faults are injected into the real parts: fault switches of the Odoo
stand-in, a real refusal of the router, a SIGKILL of the run worker, a restart of the sandbox's
own PostgreSQL cluster (``db-restart`` refuses a server the sandbox did not start: the machine's
is shared), a corrupted artifact byte, an artifact store on a full disk (a filled 1 MiB tmpfs; without root,
a free-space requirement no disk meets, and the report says it was simulated).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from promote_pipeline.cli import sandbox as sbx
from promote_pipeline.cli.main import FAULTS
from promote_pipeline.cli.sandbox import Sandbox
from promote_pipeline.promotion import steps
from promote_pipeline.promotion.evidence import Evidence
from promote_pipeline.promotion.services import Services
from resources.artifact_store import LocalArtifactStore
from resources.ops_db import ArtifactRecord, OpsDatabase

# How long the worker-kill drill waits for the safety net to put traffic back on blue and end the killed run.
RECOVERY_WINDOW_SECONDS = 300

T = TypeVar("T")

FINGERPRINT_TABLES = ("res_partner", "res_users", "ir_attachment", "ir_config_parameter", "ir_module_module")


class DrillError(RuntimeError):
    pass


@contextmanager
def full_disk(size: str = "1m") -> Iterator[Path | None]:
    """A real, small tmpfs in a temporary folder, filled until the kernel says ENOSPC; unmounted and removed
    afterwards. None where mounting is not permitted (not root)."""
    folder = Path(tempfile.mkdtemp(prefix="promote-full-disk-"))
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        capture_output=True).returncode == 0
    try:
        if mounted:
            (folder / "artifacts").mkdir()
            try:
                with (folder / "filler").open("wb") as fh:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def prod_dsn_ref(box: Sandbox) -> str:
    """Production's server, as its environment records it: not the sandbox's ops server, which may be another."""
    env = box.resources()["ops_db"].environment(sbx.PROD)
    return env.db_dsn_ref if env else sbx.DSN_REF


def fingerprint(box: Sandbox, db: str) -> dict[str, str]:
    host = box.resources()["odoo_host"]
    with host.connect(prod_dsn_ref(box), db) as conn:
        return {t: str(conn.execute(f"SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x.id), ''))"  # noqa: S608
                                    f" FROM {t} x").fetchone()[0]) for t in FINGERPRINT_TABLES}


class _Watch:
    """Run ``action(found)`` as soon as ``probe`` finds something in the ops database (polled every ``interval``
    seconds), in a thread that ``finish()`` stops and joins: it never outlives its drill (a fault injected into
    the next drill's promotion would judge the wrong run)."""

    def __init__(self, box: Sandbox, probe: Callable[[OpsDatabase], T | None], action: Callable[[T], None],
                 interval: float = 0.02) -> None:
        self._ops_db: OpsDatabase = box.resources()["ops_db"]
        self._probe, self._action, self._interval = probe, action, interval
        self._stop = threading.Event()
        self.fired = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            found = self._probe(self._ops_db)
            if found is not None:
                self.fired = True
                try:
                    self._action(found)
                except BaseException as exc:  # reported by the drill, not lost in a thread
                    self.error = exc
                return
            self._stop.wait(self._interval)

    def finish(self) -> None:
        """Stop polling; wait for an action under way to end (a PostgreSQL restart can take a while)."""
        self._stop.set()
        self._thread.join(timeout=600)
        if self._thread.is_alive():
            raise DrillError("the drill's fault action did not end within 10 minutes")


class Drill:
    def __init__(self, box: Sandbox, fault: str, stability_seconds: int = 8, say: Callable[[str], None] = print):
        if fault not in FAULTS:
            raise DrillError(f"fault: must be one of {', '.join(FAULTS)} (got {fault!r})")
        self.box, self.fault, self.stability_seconds, self.say = box, fault, stability_seconds, say
        self.fault_file = box.root / "faults" / f"{sbx.PROD}.json"
        self.facts: dict[str, Any] = {"fault": fault}

    def _fault(self, not_before: float, **switches: Any) -> None:
        self.fault_file.write_text(json.dumps({"not_before": not_before, **switches}))

    def _inputs(self) -> dict[str, Any]:
        return {"project_id": sbx.PROJECT, "staging_env_id": sbx.STAGING, "prod_env_id": sbx.PROD,
                "user_id": sbx.USER, "stability_window_seconds": self.stability_seconds}

    def run(self) -> dict[str, Any]:
        from promote_pipeline.cli.runner import run_promotion

        if self.fault == "db-restart" and sbx.private_cluster(self.box.root) is None:
            raise DrillError("db-restart restarts PostgreSQL, and this sandbox uses a server it did not start (shared"
                             " with everything else on the machine): bring it up with `promote sandbox up"
                             " --private-postgres`")
        cfg = self.box.activate()
        before = self.box.status()["serving"]
        blue_print = fingerprint(self.box, before["database"])
        self.say(f"drill {self.fault}: blue is {before['deployment']} ({before['database']})")
        start = time.time()
        overrides: dict[str, Any] = {}
        watcher: _Watch | None = None
        stack = ExitStack()
        try:
            if self.fault == "smoke-fail":
                self._fault(start, refuse_login=True)
            elif self.fault == "stability-5xx":
                watcher = _Watch(self.box, OpsDatabase.running_promotion_after_cutover,
                                 lambda _r: self._write_on_green_then_fail(start))
            elif self.fault == "green-crash":
                watcher = _Watch(self.box, OpsDatabase.running_promotion_after_cutover,
                                 lambda _r: self._fault(start, crash_after_seconds=0))
            elif self.fault == "router-fail":
                cfg = self.box.settings()
                router = self.box.resources()["router"]
                overrides["router"] = type(router)(work_dir=cfg.router_dir, drill_refuse_switch=True)
            elif self.fault == "corrupt-artifact":
                watcher = _Watch(self.box, lambda db: db.running_run_artifact("green"), self._corrupt)
            elif self.fault == "db-restart":
                # Only once pg_restore is connected to green's database: a restart before it would be ridden
                # out by the reconnecting steps, and the drill would not test a failed restore.
                watcher = _Watch(self.box, OpsDatabase.restoring_backend_pid, lambda _pid: self._restart_postgres(),
                                 interval=0.005)
            elif self.fault == "disk-full":
                overrides.update(self._full_disk(cfg, stack))
            if self.fault == "worker-kill":
                code, outcome = self._worker_kill()
            else:
                code, outcome, message = run_promotion(self._inputs(), quiet=True, resource_overrides=overrides)
                self.facts["message"] = message
        finally:
            if watcher:
                watcher.finish()
            self.fault_file.unlink(missing_ok=True)
            stack.close()
        if watcher:
            # A drill whose fault never happened proves nothing, whatever state it ends in.
            self.facts["fault_injected"] = watcher.fired and watcher.error is None
            if watcher.error is not None:
                self.facts["fault_error"] = f"{type(watcher.error).__name__}: {watcher.error}"
        return self._judge(code, outcome, before, blue_print)

    # -- fault actions -------------------------------------------------------------------------------
    def _full_disk(self, cfg: Any, stack: ExitStack) -> dict[str, Any]:
        """The artifact store on a real disk with no space left: a 1 MiB tmpfs, filled. Mounting needs root;
        without it the drill says so and falls back to a free-space requirement no disk can meet."""
        folder = stack.enter_context(full_disk())
        if folder is None:
            self.facts["full_disk"] = "simulated (mounting a tmpfs needs root): free space required x1e9"
            self.say("disk-full: simulated, not a real full disk (mounting a tmpfs needs root)")
            return {"settings": cfg.model_copy(update={"min_free_space_factor": 1e9})}
        self.facts["full_disk"] = f"tmpfs at {folder}, {shutil.disk_usage(folder).free} bytes free"
        return {"artifact_store": LocalArtifactStore(root=str(folder / "artifacts"))}

    def _corrupt(self, artifact: ArtifactRecord) -> None:
        path = Path(artifact.contract["db_dump"]["path"])
        if path.is_dir():  # a directory-format dump: flip a byte of its largest file (a table's data)
            path = max((f for f in path.iterdir() if f.is_file()), key=lambda f: (f.stat().st_size, f.name))
        with path.open("r+b") as fh:
            fh.seek(max(0, path.stat().st_size // 2))
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([(byte[0] if byte else 0) ^ 0xFF]))
        self.facts["corrupted"] = str(path)

    def _write_on_green_then_fail(self, start: float) -> None:
        """Customers' writes on green while it serves (three new contacts, one edited), then the 5xx fault."""
        green_db = self.box.status()["serving"]["database"]
        with self.box.resources()["odoo_host"].connect(prod_dsn_ref(self.box), green_db) as conn:
            conn.execute("INSERT INTO res_partner (name, email, company_id) SELECT 'Drill order ' || n,"
                         " 'drill' || n || '@example.com', 1 FROM generate_series(1, 3) AS n")
            conn.execute("UPDATE res_partner SET name = name || ' (edited)', write_date = now() AT TIME ZONE 'UTC'"
                         " WHERE id = (SELECT min(id) FROM res_partner)")
        self.facts["written_on_green"] = {"res_partner": {"created": 3, "changed": 1}}
        self._fault(start, error_rate=0.5)

    def _restart_postgres(self) -> None:
        # A fast shutdown's first act is to terminate every session; do that at once for pg_restore's, so the
        # restore cannot finish in the ~0.2 s the restart command takes to get going, then restart.
        # Through the server's maintenance database: this is about PostgreSQL's sessions, not the ops schema.
        with self.box.resources()["odoo_host"].connect(sbx.DSN_REF, "postgres", autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pg_restore'")
        took = sbx.restart_postgres(self.box.root)
        self.facts["postgres_restart_seconds"] = round(took, 2)

    def _worker_kill(self) -> tuple[int, Any]:
        """Launch through the daemon-backed webserver, SIGKILL the run worker after cutover, time the recovery."""
        from promote_pipeline.cli.launch import submit

        router = self.box.resources()["router"]
        ops_db: OpsDatabase = self.box.resources()["ops_db"]
        blue_row = ops_db.deployment(self.box.status()["serving"]["deployment"])
        if blue_row is None:
            raise DrillError("the router serves no recorded deployment before the drill")
        blue = Services.from_resources(self.box.resources()).upstream(blue_row, "blue")
        dagster_run_id = submit(self._inputs())
        self.facts["dagster_run_id"] = dagster_run_id
        deadline = time.monotonic() + 180
        row = None
        while time.monotonic() < deadline:
            row = ops_db.running_promotion_after_cutover()
            if row:
                break
            time.sleep(0.05)
        if row is None:
            raise DrillError("the promotion launched through the daemon never reached cutover")
        pid = int(row.metadata["worker_pid"])
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        self.say(f"killed run worker {pid} after cutover of {row.run_id}")
        on_blue = None
        # Generous: the safety net's sensor ticks, then launches the rollback as a run of its own; on a loaded
        # machine that takes minutes, not seconds. How long it took is the measure, reported; this is a bound.
        while time.monotonic() < killed + RECOVERY_WINDOW_SECONDS:
            if on_blue is None and router.serves(sbx.PROD, blue):  # the router's word, not routes.json
                on_blue = time.monotonic() - killed
            final = ops_db.run(row.run_id)
            if on_blue is not None and final and final.status != "running":
                break
            time.sleep(0.05)
        self.facts["kill_to_blue_seconds"] = round(on_blue, 2) if on_blue is not None else None
        final = ops_db.run(row.run_id)
        if final is None or final.status == "running":
            self._roll_back_what_the_safety_net_missed(row.run_id)
        from promote_pipeline.promotion.models import PromotionOutcome

        outcome = PromotionOutcome(run_id=row.run_id, status=final.status if final and final.status != "running"
                                   else "failed", evidence_dir=(final.evidence_dir if final else None) or "",
                                   blue_backup_id=None, green_artifact_id=None, cutover_timestamp=None)
        return 1, outcome

    def _roll_back_what_the_safety_net_missed(self, run_id: str) -> None:
        """The safety net did not roll back the dead run within the window: the drill fails (its verdict is
        judged on what the safety net did, before this), but the sandbox is not left with a dead run holding
        production, which every later promotion there would be refused on (no_concurrent_operations). The
        rollback is the one an operator would run (`promote rollback`); what it did is in the facts."""
        from promote_pipeline.cli.runner import run_rollback

        self.say(f"worker-kill: the safety net did not roll back {run_id} within {RECOVERY_WINDOW_SECONDS}s;"
                 " rolling it back by hand to leave the sandbox safe")
        try:
            code, _result, message = run_rollback(run_id, "drill: the safety net missed its window", "drill",
                                                  quiet=True)
        except Exception as exc:  # noqa: BLE001 - the verdict (already failed) is still reported, with this
            code, message = 1, f"{type(exc).__name__}: {exc}"
        self.facts["rolled_back_by_drill"] = {"exit_code": code, "message": message}

    # -- verdict -------------------------------------------------------------------------------------
    def _judge(self, code: int, outcome: Any, before: dict[str, Any], blue_print: dict[str, str]) -> dict[str, Any]:
        # Sandbox.status() names the deployment the running router serves (asked of HAProxy's runtime API or
        # through nginx's public port), never routes.json: a switch back the router did not make fails here.
        after = self.box.status()["serving"]
        checks: dict[str, bool] = {
            "router_on_blue": after["deployment"] is not None and after["deployment"] == before["deployment"],
            "blue_data_unchanged": fingerprint(self.box, before["database"]) == blue_print,
        }
        if "fault_injected" in self.facts:
            checks["fault_injected"] = self.facts["fault_injected"]
        if self.fault == "worker-kill":
            # The drill's point: the safety net, not the drill's own clean-up, put traffic back on blue.
            checks["safety_net_recovered"] = (self.facts.get("kill_to_blue_seconds") is not None
                                              and "rolled_back_by_drill" not in self.facts)
        if outcome is None:  # rejected before anything was created
            checks["rejected"] = code == 2
        else:
            checks["status_safe"] = outcome.status in ("rolled_back", "failed")
            checks["evidence_complete"] = bool(outcome.evidence_dir) and not Evidence(outcome.evidence_dir).missing()
            svc = Services.from_resources(self.box.resources())
            greens = svc.ops_db.deployments_created_by(outcome.run_id)
            checks["green_stopped"] = all(not svc.process_host(g).is_alive(g.pid) for g in greens)
            self.facts.update(run_id=outcome.run_id, status=outcome.status, evidence_dir=outcome.evidence_dir)
            if outcome.evidence_dir and Evidence(outcome.evidence_dir).exists(steps.ROLLBACK_JSON):
                rb = Evidence(outcome.evidence_dir).read_json(steps.ROLLBACK_JSON)
                self.facts["detection_to_blue_ms"] = rb.get("detection_to_blue_ms")
                if "written_on_green" in self.facts:
                    reported = rb.get("writes_on_green", {}).get("res_partner")
                    checks["writes_on_green_reported"] = reported == self.facts["written_on_green"]["res_partner"]
        return {**self.facts, "checks": checks, "safe": all(checks.values())}
