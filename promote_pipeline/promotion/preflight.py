"""The seven preconditions of a promotion (then staging's database reachable, three of Odoo compatibility, and the
drift gate), each a named check with one clear message.

``scripts/odoo_preflight_promote.sh`` and ``promote preflight`` run all eleven and print a line
each (twelve); the job runs them in order and stops at the first that fails. Check 5 takes the
environment's advisory lock, and a passing preflight inside the job keeps holding it: the check
and the exclusion are one act, so no second promotion can slip in between them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from promote_pipeline.odoo import database as odoo_db
from promote_pipeline.promotion import drift, guardrails, inputs
from promote_pipeline.promotion.inputs import PromotionInputs
from promote_pipeline.promotion.services import Services
from resources.artifact_store import ArtifactError, LocalArtifactStore
from resources.odoo_host import HostError, LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentLock, EnvironmentRecord, OpsDatabase
from resources.ssh_odoo_host import SshOdooHost

HOLDER_WAIT_SECONDS = 5.0

CHECKS = (
    "project_exists",
    "staging_successful",
    "same_commit_sha",
    "promote_permission",
    "no_concurrent_operations",
    "production_accessible",
    "sufficient_disk_space",
    # Beyond the seed's seven: staging's database answers (its own check, so a missing staging database is not
    # reported as a version mismatch), then Odoo compatibility.
    "staging_accessible",
    "same_odoo_version",
    "postgres_compatible",
    "no_pending_modules",
    # Last, as it reads production's tables: no production write made since staging was copied would be lost
    # (drift.py), unless the operator accepts the loss (--accept-drift).
    "no_production_drift",
)


# What puts a staging environment in a known state: a deploy, a restore (a copy of production), or its adoption
# (`promote inventory apply` recording the deployment that already ran it).
KNOWN_STATE_OPERATIONS = ("deploy", "restore", "adopt")


def staging_known_good(ops_db: OpsDatabase, environment_id: str) -> str:
    """Precondition 2: the latest of the environment's deploys, restores and adoptions succeeded; raises
    PreconditionFailed otherwise.

    An adoption counts only while it is the latest: it records that the deployment already running staging was
    taken over as it was, which is the only known state of an environment onboarded from an existing
    installation. A deploy or restore after it is judged on its own, and a failed, running or rolled-back
    latest operation (an adoption included) fails the check, as does an environment with none."""
    row = ops_db.latest_run(environment_id, KNOWN_STATE_OPERATIONS)
    if not row:
        raise PreconditionFailed(f"staging {inputs.shown(environment_id)} has no deploy, restore or adoption run")
    if row.status != "success":
        raise PreconditionFailed(
            f"latest {row.operation_type} on staging ({row.run_id}) has status {row.status!r}, not 'success'")
    if row.operation_type == "adopt":
        return (f"staging adopted by {row.run_id} (deployment {row.metadata.get('deployment_id')}), nothing deployed"
                " or restored since")
    return f"latest {row.operation_type} on staging ({row.run_id}) succeeded"


def no_such_project(project_id: str) -> str:
    """Why check 1 fails (also what ``promote preflight`` says when it cannot even look up the environments)."""
    return f"ops.projects has no row for project_id {inputs.shown(project_id, quote=True)}"


@dataclass
class CheckResult:
    name: str
    passed: bool
    message: str


@dataclass
class Preflight:
    """Runs the checks; keeps what later steps need (records, the lock, sizes)."""

    ops_db: OpsDatabase
    host: LocalOdooHost
    store: LocalArtifactStore
    inputs: PromotionInputs
    min_free_space_factor: float = 3.0
    # The ir_config_parameter keys the carry-over copies from blue onto green (settings.carry_over_parameters):
    # a write to one of them is carried, not lost, so the drift gate does not count it.
    carried_parameters: tuple[str, ...] = ()
    # Where Odoo processes run (Services.process_host): a deployment's files are measured, and green's disk asked,
    # on the host they are on. None: everything on this machine.
    hosts: Services | None = None
    staging: EnvironmentRecord | None = None
    prod: EnvironmentRecord | None = None
    blue: DeploymentRecord | None = None
    lock: EnvironmentLock | None = None
    drift_report: drift.DriftReport | None = None
    results: list[CheckResult] = field(default_factory=list)

    def run(self, stop_on_failure: bool) -> list[CheckResult]:
        try:
            return self._run(stop_on_failure)
        except BaseException:
            self.release()  # never leave the environment locked by a check that blew up
            raise

    def _run(self, stop_on_failure: bool) -> list[CheckResult]:
        steps: dict[str, Callable[[], str]] = {
            "project_exists": self.project_exists,
            "staging_successful": self.staging_successful,
            "same_commit_sha": self.same_commit_sha,
            "promote_permission": self.promote_permission,
            "no_concurrent_operations": self.no_concurrent_operations,
            "production_accessible": self.production_accessible,
            "sufficient_disk_space": self.sufficient_disk_space,
            "staging_accessible": self.staging_accessible,
            "same_odoo_version": self.same_odoo_version,
            "postgres_compatible": self.postgres_compatible,
            "no_pending_modules": self.no_pending_modules,
            "no_production_drift": self.no_production_drift,
        }
        for name in CHECKS:
            try:
                if name != "project_exists" and (self.staging is None or self.prod is None):
                    # `promote preflight` goes on past a failed check 1: the others have nothing to check
                    raise PreconditionFailed("not checked: the project's environments were not found")
                result = CheckResult(name, True, steps[name]())
            except PreconditionFailed as exc:
                result = CheckResult(name, False, str(exc))
            except psycopg.Error as exc:
                result = CheckResult(name, False, f"database error: {str(exc).strip()[:200]}")
            except OSError as exc:  # a folder a check measures is missing or unreadable (free space of a data_dir)
                result = CheckResult(name, False, f"cannot read {exc.filename or 'a folder'}: {exc.strerror or exc}")
            except HostError as exc:
                # A process host that stopped answering (its sshd down, its key changed) fails the check that asked
                # it, in the host's own one line, as a closed database does: `promote preflight` goes on to the
                # next check, and no traceback reaches the operator.
                result = CheckResult(name, False, str(exc))
            self.results.append(result)
            if not result.passed and (stop_on_failure or name == "project_exists"):
                break  # every check after the first reads the project's environments: with no project, none can run
            if name == "project_exists":
                self._load_environments()  # input rules that need the records: raises InputRejected
        return self.results

    @property
    def passed(self) -> bool:
        return len(self.results) == len(CHECKS) and all(r.passed for r in self.results)

    def release(self) -> None:
        if self.lock:
            self.lock.release()
            self.lock = None

    # -- the seven checks --------------------------------------------------------------------------
    def project_exists(self) -> str:
        if not self.ops_db.project_exists(self.inputs.project_id):
            raise PreconditionFailed(no_such_project(self.inputs.project_id))
        return f"project {self.inputs.project_id} exists"

    def _load_environments(self) -> None:
        staging = self.ops_db.environment(self.inputs.staging_env_id)
        prod = self.ops_db.environment(self.inputs.prod_env_id)
        inputs.validate_against_ops(self.inputs, staging, prod)
        assert staging is not None and prod is not None
        self.staging, self.prod = staging, prod

    def staging_successful(self) -> str:
        assert self.staging and self.prod
        if not guardrails.current().prod_requires_staging_success:
            return "guardrail prod_requires_staging_success is off: not checked"
        return staging_known_good(self.ops_db, self.staging.environment_id)

    def same_commit_sha(self) -> str:
        assert self.staging and self.prod
        s, p = self.staging.git_commit_sha, self.prod.git_commit_sha
        if not s or not p:
            raise PreconditionFailed(f"commit SHA unknown (staging {s!r}, production {p!r})")
        if s != p:
            raise PreconditionFailed(f"staging targets {s[:12]} but production targets {p[:12]}")
        return f"both target {s[:12]}"

    def promote_permission(self) -> str:
        if not self.ops_db.has_permission(self.inputs.user_id, self.inputs.project_id, "promote"):
            raise PreconditionFailed(
                f"user {self.inputs.user_id!r} lacks 'promote' on project {self.inputs.project_id}")
        return f"user {self.inputs.user_id} may promote"

    def no_concurrent_operations(self) -> str:
        assert self.prod
        env_id = self.prod.environment_id
        lock = self.ops_db.try_lock_environment(env_id)
        running = self.ops_db.running_promotion(env_id)
        if lock is None:
            # The holder may be a promotion between its own check 5 and its ops.runs row: give it a moment
            # so the refusal can name it.
            deadline = time.monotonic() + HOLDER_WAIT_SECONDS
            while running is None and time.monotonic() < deadline:
                time.sleep(0.1)
                running = self.ops_db.running_promotion(env_id)
            holder = f"run {running.run_id}" if running else "another session (not a promotion run)"
            raise PreconditionFailed(f"production {env_id} is busy: {holder} holds it")
        if running:
            lock.release()
            raise PreconditionFailed(
                f"run {running.run_id} is still marked running on {env_id} but holds no lock (it died):"
                f" roll it back first")
        self.lock = lock
        return f"no operation running on {env_id}; lock taken"

    def production_accessible(self) -> str:
        assert self.prod
        self.blue = self.ops_db.active_deployment(self.prod.environment_id)
        if not self.blue:
            raise PreconditionFailed(f"production {self.prod.environment_id} has no active deployment")
        try:
            with self.host.connect(self.prod.db_dsn_ref, self.blue.db_name, retry=False) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise PreconditionFailed(f"cannot connect to production database {self.blue.db_name}:"
                                     f" {str(exc).strip()[:200]}") from None
        # Asked where blue runs: on a process host, its filestore is that host's folder, which the promoter may
        # not see at all (the backup reads it over SSH).
        files_on = self._files_host(self.blue)
        fs = files_on.filestore_dir(self.blue.data_dir, self.blue.served_db)
        try:
            usable = files_on.filestore_usable(self.blue.data_dir, self.blue.served_db)
        except HostError as exc:  # the host did not answer: the check fails saying so, as a closed database does
            raise PreconditionFailed(f"production filestore {fs}: {exc}") from None
        if not usable:
            where = f" on {files_on.name}" if isinstance(files_on, SshOdooHost) else ""
            raise PreconditionFailed(f"production filestore {fs}{where} is missing or not writable")
        return f"database {self.blue.db_name} and filestore reachable"

    def _needs_blue(self) -> None:
        """A check after check 6 needs production's live deployment; ``promote preflight`` runs it even when
        check 6 found none, and it then says so rather than fail on the missing record."""
        if self.blue is None:
            raise PreconditionFailed("not checked: production has no active deployment (production_accessible)")

    def sufficient_disk_space(self) -> str:
        self._needs_blue()
        assert self.prod and self.blue
        db_bytes = self.host.database_size(self.prod.db_dsn_ref, self.blue.db_name)
        _, fs_bytes = self._files_host(self.blue).filestore_stats(self.blue.data_dir, self.blue.served_db)
        # The snapshot (and green, restored from it) is staging's size, asked on staging's own server: it may be
        # another server than production's, with a database of quite another size.
        staging_bytes = self._staging_bytes()
        size, basis = db_bytes + fs_bytes, "production size"
        if staging_bytes is not None and staging_bytes > size:
            size, basis = staging_bytes, "staging size (larger than production's)"
        need = int(self.min_free_space_factor * size)
        try:
            self.store.ensure_root()
        except ArtifactError as exc:
            raise PreconditionFailed(str(exc)) from None
        green_on = self._green_host()
        for label, path in (("artifact store", self.store.root), ("production data dir", self.blue.data_dir)):
            if label == "artifact store":
                free = self.store.free_bytes()  # the store's own disk: on its host for a store kept over SSH
            elif green_on is not None:
                # Green's filestore goes to production's process host: its disk, asked there. Blue's data_dir
                # when blue runs there too, else the environment's data root (green's data_dir is made in it).
                path = self.blue.data_dir if self.blue.host == green_on.name else self.prod.filestore_root
                label, free = f"production data dir on {green_on.name}", green_on.free_disk_bytes(path)
            else:
                free = shutil.disk_usage(path).free
            if free < need:
                raise PreconditionFailed(
                    f"{label} {path} has {free // 2**20} MiB free; {self.min_free_space_factor:g}x {basis}"
                    f" needs {need // 2**20} MiB")
        where = f" (production data dir asked on {green_on.name})" if green_on is not None else ""
        return f"{self.min_free_space_factor:g}x {basis} ({need // 2**20} MiB) available{where}"

    def _staging_bytes(self) -> int | None:
        """Staging's live database (on staging's server) and filestore, in bytes; None when they cannot be read
        (staging_accessible, which runs next, says why)."""
        assert self.staging
        live = self.ops_db.active_deployment(self.staging.environment_id)
        if live is None:
            return None
        try:
            with self.host.connect(self.staging.db_dsn_ref, live.db_name, retry=False) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        except psycopg.Error:
            return None
        _, fs_bytes = self._files_host(live).filestore_stats(live.data_dir, live.served_db)
        return (int(row[0]) if row else 0) + fs_bytes

    def _files_host(self, dep: DeploymentRecord) -> LocalOdooHost | SshOdooHost:
        return self.hosts.process_host(dep) if self.hosts is not None else self.host

    def _green_host(self) -> SshOdooHost | None:
        """The process host green will run on, when it is another machine."""
        if self.hosts is None or self.prod is None:
            return None
        where = self.hosts.process_host(self.hosts.host_name_for(self.prod.environment_id))
        return where if isinstance(where, SshOdooHost) else None


    # -- Odoo compatibility --------------------------------------------------------------------------
    def _staging_live(self) -> DeploymentRecord:
        assert self.staging
        live = self.ops_db.active_deployment(self.staging.environment_id)
        if not live:
            raise PreconditionFailed(f"staging {self.staging.environment_id} has no active deployment")
        return live

    def _staging_db(self) -> str:
        return self._staging_live().db_name

    def staging_accessible(self) -> str:
        assert self.staging
        live = self._staging_live()
        db = live.db_name
        try:
            with self.host.connect(self.staging.db_dsn_ref, db, retry=False) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise PreconditionFailed(f"cannot connect to staging database {db}: {str(exc).strip()[:200]}") from None
        # The snapshot reads staging's filestore where staging's Odoo runs: on a process host, over SSH. A host
        # that does not answer is found here, before production is touched, not half-way through the snapshot
        # (one call, not a walk of the filestore: sufficient_disk_space measures it).
        files_on = self._files_host(live)
        if isinstance(files_on, SshOdooHost):
            fs = files_on.filestore_dir(live.data_dir, live.served_db)
            try:
                files_on.answers()
            except HostError as exc:
                raise PreconditionFailed(f"staging filestore {fs}: {exc}") from None
            return f"database {db} and filestore on {files_on.name} reachable"
        return f"database {db} reachable"

    def same_odoo_version(self) -> str:
        self._needs_blue()
        assert self.staging and self.prod and self.blue
        with self.host.connect(self.staging.db_dsn_ref, self._staging_db(), retry=False) as conn:
            staging_series = odoo_db.odoo_series(odoo_db.installed_modules(conn)[0])
        with self.host.connect(self.prod.db_dsn_ref, self.blue.db_name, retry=False) as conn:
            prod_series = odoo_db.odoo_series(odoo_db.installed_modules(conn)[0])
        if staging_series.split(".")[0] != prod_series.split(".")[0]:
            raise PreconditionFailed(f"staging runs Odoo {staging_series} but production runs Odoo {prod_series}:"
                                     " a major upgrade is not a promotion")
        return f"both run Odoo {prod_series}"

    def postgres_compatible(self) -> str:
        assert self.staging and self.prod
        source = self.host.server_major_version(self.staging.db_dsn_ref)
        target = self.host.server_major_version(self.prod.db_dsn_ref)
        if target < source:
            raise PreconditionFailed(f"production's PostgreSQL {target} is older than staging's {source}:"
                                     " its dump may not restore")
        # pg_dump refuses a server newer than itself, and the promoter's one pg_dump dumps both servers (the
        # snapshot from staging's, blue's backup from production's): each is asked, not one taken for both.
        tools = self.host.pg_dump_major()
        for label, major in (("staging", source), ("production", target)):
            if tools is not None and tools < major:
                raise PreconditionFailed(f"pg_dump {tools} on the promoter cannot dump {label}'s PostgreSQL {major}"
                                         f" (it refuses a newer server): install PostgreSQL {major}'s client tools"
                                         " and point pg_bin_dir at them")
        return f"PostgreSQL {source} -> {target}"

    def no_pending_modules(self) -> str:
        assert self.staging
        with self.host.connect(self.staging.db_dsn_ref, self._staging_db(), retry=False) as conn:
            pending = odoo_db.pending_modules(conn)
        if pending:
            listed = ", ".join(f"{name} ({state})" for name, state in sorted(pending.items()))
            raise PreconditionFailed(f"staging has modules waiting for an install, upgrade or removal: {listed}")
        return "no module in to install, to upgrade or to remove"

    # -- the drift gate -----------------------------------------------------------------------------------
    def no_production_drift(self) -> str:
        """Refuse a promotion that would silently drop production's writes made since staging was copied."""
        self._needs_blue()
        assert self.staging and self.prod and self.blue
        carried = self.carried_parameters if self.inputs.carry_over_settings else ()
        report = drift.measure(self.ops_db, self.host, self.staging.environment_id, self.prod, self.blue.db_name,
                               carried)
        self.drift_report = report
        if report.drifted and not self.inputs.accept_drift:
            raise PreconditionFailed(drift.gate_refusal(report))
        return drift.gate_passed(report, self.inputs.accept_drift)


class PreconditionFailed(RuntimeError):
    pass
