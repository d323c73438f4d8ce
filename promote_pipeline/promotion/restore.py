"""restore-odoo-environment: a verified v1 artifact as a new deployment next to the live one.

Green gets its own database and its own filestore folder in the environment's data directory,
and its own Odoo process on its own port; blue is never touched. The deployment row is written
*before* anything is created, so whoever cleans up after a failure (the op itself, or the
rollback job) finds every piece by reading the ops database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from promote_pipeline.odoo import database as odoo_db
from promote_pipeline.promotion import deployment
from promote_pipeline.promotion.backup import verify
from promote_pipeline.promotion.models import Artifact
from promote_pipeline.promotion.services import Services
from resources.artifact_store import LocalArtifactStore
from resources.odoo_host import HostError, LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentRecord
from resources.ssh_artifact_store import SshArtifactStore
from resources.ssh_odoo_host import SshOdooHost


class RestoreCheckFailed(RuntimeError):
    """A post-restore check found green different from the artifact it came from."""


def plan_green(svc: Services, env: EnvironmentRecord, run_id: str, artifact_id: str) -> DeploymentRecord:
    """Green's record, on the process host the settings name for production (README: Hosts), written before
    anything of it exists."""
    suffix = run_id.rsplit("_", 1)[-1]
    green = deployment.plan_on_host(svc, env, f"dep_{env.environment_id}_{suffix}", f"{env.db_name_prefix}_{suffix}")
    svc.ops_db.add_deployment(green, created_by_run=run_id, artifact_id=artifact_id)
    return green


def post_restore_checks(host: LocalOdooHost, env: EnvironmentRecord, green: DeploymentRecord,
                        artifact: Artifact, files_on: SshOdooHost | None = None) -> dict[str, Any]:
    """The restored database against the artifact's manifest (here, by DSN), and the filestore's file count on
    the host it was restored to (``files_on``; None: this machine)."""
    with host.connect(env.db_dsn_ref, green.db_name) as conn:
        modules, _ = odoo_db.installed_modules(conn)
        attachments = odoo_db.attachment_count(conn)
    files, _ = (files_on or host).filestore_stats(green.data_dir, green.served_db)
    checks = {
        "modules_match_manifest": modules == artifact.manifest.modules_installed,
        "attachments_match_manifest": attachments == artifact.manifest.attachment_count,
        "filestore_files_match_archive": files == artifact.filestore.file_count,
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise RestoreCheckFailed(f"post-restore checks failed on {green.db_name}: {', '.join(failed)}")
    return checks


def restore_data(host: LocalOdooHost, store: LocalArtifactStore, env: EnvironmentRecord, green: DeploymentRecord,
                 artifact: Artifact, files_on: SshOdooHost | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The artifact verified in full and deep (every dump file, the index and every object it names hashed
    again), then the database (``pg_restore -j``, here, by DSN) and the filestore restored at the same time: on
    this machine as copies of the store's objects (reflinks where the filesystem has them), on a process host
    (``files_on``) streamed there over SSH. Returns the verification and the timings."""
    t0 = time.monotonic()
    verification = verify(store, artifact, full=True, deep=True)
    t1 = time.monotonic()
    dest = host.filestore_dir(green.data_dir, green.served_db)
    if files_on is not None:
        if files_on.filestore_stats(green.data_dir, green.served_db)[0]:
            raise HostError(f"restore refused: filestore {dest} on {files_on.name} already exists")
    elif dest.exists() and any(dest.iterdir()):
        raise HostError(f"restore refused: filestore {dest} already exists")

    def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        start = time.monotonic()
        return fn(*args), time.monotonic() - start

    with ThreadPoolExecutor(max_workers=2) as pool:
        def restore_db() -> None:
            # pg_restore reads a folder of this machine: the store's own, or one the store fills from its host.
            with store.readable_dump(artifact.artifact_id, artifact.db_dump.model_dump()) as dump:
                host.restore_database(env.db_dsn_ref, green.db_name, dump)

        db_job = pool.submit(timed, restore_db)
        if files_on is not None:
            fs_job = pool.submit(timed, send_filestore, files_on, store, artifact.artifact_id, str(dest))
        else:
            fs_job = pool.submit(timed, store.materialize_filestore, artifact.artifact_id, dest)
        (_, db_seconds), (fs_facts, fs_seconds) = db_job.result(), fs_job.result()
    return verification, {"verify_seconds": round(t1 - t0, 3), "db_restore_seconds": round(db_seconds, 3),
                          "filestore_restore_seconds": round(fs_seconds, 3), "filestore_restore": fs_facts}


def send_filestore(to: SshOdooHost, store: LocalArtifactStore, artifact_id: str, dest: str) -> dict[str, Any]:
    """The artifact's filestore written into ``dest`` on the process host ``to``, nothing copied here first. From
    the local store: each file of its index streamed from its object (one tar over the shared SSH connection); the
    objects are immutable and named by their content, and the verification just hashed every one of them. From
    the SSH store: the store's host sends the objects, this worker relays the stream to ``to``, and each file is
    hashed where it lands (``SshArtifactStore.send_filestore_to``)."""
    if isinstance(store, SshArtifactStore):
        return {"method": "ssh-relay", **store.send_filestore_to(artifact_id, to.filestore_folder(dest))}
    entries = ((rel, store.object_path(sha1)) for sha1, _size, rel in store.iter_index(artifact_id))
    return {"method": "ssh-tar", **to.receive_files(dest, entries)}


def restore_next_to_blue(svc: Services, env: EnvironmentRecord, artifact: Artifact, run_id: str,
                         before_start: Callable[[DeploymentRecord], dict[str, Any]] | None = None,
                         ) -> tuple[DeploymentRecord, dict[str, Any]]:
    """Restore, check, run ``before_start`` on the restored database (carry-over and fencing must happen
    before green's Odoo can run a cron), give the database to green's own role, then start green (its
    PgBouncer, then its Odoo)."""
    green = plan_green(svc, env, run_id, artifact.artifact_id)
    deployment.prepare_data_dir(env, green, svc)
    started = time.monotonic()
    remote = svc.remote_host(green)
    verification, timings = restore_data(svc.host, svc.store, env, green, artifact, remote)
    restored = time.monotonic()
    checks = post_restore_checks(svc.host, env, green, artifact, remote)
    prepared = before_start(green) if before_start else {}
    deployment.give_database(svc, env, green)
    deployment.start(svc, env, green)
    facts = {
        "verification": verification, "checks": checks, **prepared, **timings,
        "restore_seconds": round(restored - started, 3),
        "ready_seconds": round(time.monotonic() - started, 3),
    }
    return green, facts
