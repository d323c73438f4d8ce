"""backup-odoo-environment: one deployment's database and filestore as a verified v1 artifact.

The database dump (``pg_dump -Fd``, parallel, fast compression, each file hashed while pg_dump
writes it) and the filestore (into the store's content-addressed objects: only content the store
does not hold yet is copied, hashed on the way) run at the same time; meanwhile the manifest is
read from the database. Then the contract is written, checked (sizes and the dump's table of
contents: the bytes were hashed as they were written, and are hashed again before any restore)
and registered. Both the green artifact (staging snapshot) and the blue one (production backup)
are made here, so they share one contract by construction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from promote_pipeline.odoo import database as odoo_db
from promote_pipeline.promotion.models import (
    Artifact,
    DbDump,
    DumpFile,
    FilestoreArchive,
    Manifest,
    SourceEnv,
)
from resources.artifact_store import LocalArtifactStore, dump_digest
from resources.odoo_host import LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentRecord, OpsDatabase
from resources.ssh_odoo_host import SshOdooHost

T = TypeVar("T")


def read_manifest(host: LocalOdooHost, env: EnvironmentRecord, db: str) -> Manifest:
    with host.connect(env.db_dsn_ref, db) as conn:
        modules, licenses = odoo_db.installed_modules(conn)
        neutralized = (odoo_db.config_parameter(conn, "database.is_neutralized") or "").lower() in ("true", "1")
        attachments = odoo_db.attachment_count(conn)
    return Manifest(
        odoo_version=odoo_db.odoo_series(modules),
        addons_hash=odoo_db.addons_hash(modules),
        modules_installed=modules,
        module_licenses=licenses,
        db_major_version=host.server_major_version(env.db_dsn_ref),
        git_commit_sha=env.git_commit_sha,
        neutralized=neutralized,
        attachment_count=attachments,
    )


def back_up(host: LocalOdooHost, store: LocalArtifactStore, ops_db: OpsDatabase, env: EnvironmentRecord,
            deployment: DeploymentRecord, role: str, run_id: str,
            files_on: SshOdooHost | None = None) -> tuple[Artifact, dict[str, Any]]:
    """Snapshot ``deployment`` of ``env``; returns the registered artifact and timing/verification facts.
    ``files_on``: the process host ``deployment`` runs on, when it is another machine: its filestore is read
    there, over SSH."""
    artifact_id = store.new_artifact_id(env.environment_id, role)
    store.allocate(artifact_id)
    dump_dir = store.dump_dir(artifact_id)
    started = time.monotonic()
    # pg_dump writes into a folder of this machine: the store's own (local store), or one the store sends to
    # its host when the block ends (SSH store).
    with store.receiving_dump(artifact_id) as dump_into, ThreadPoolExecutor(max_workers=2) as pool:
        db_job = pool.submit(_timed, host.dump_database, env.db_dsn_ref, deployment.db_name, dump_into)
        if files_on is None:
            fs_job = pool.submit(_timed, store.ingest_filestore, artifact_id,
                                 host.filestore_dir(deployment.data_dir, deployment.served_db))
        else:
            # On a process host the filestore is that host's folder (the promoter may not see it at all): listed
            # there, and only what the store lacks fetched over SSH.
            fs_job = pool.submit(_timed, store.ingest_filestore_from, artifact_id,
                                 files_on.filestore_source(deployment.data_dir, deployment.served_db))
        manifest = read_manifest(host, env, deployment.db_name)
        (files, db_seconds), (fs, fs_seconds) = db_job.result(), fs_job.result()
    dumped = time.monotonic()
    digest, size = dump_digest(files)
    artifact = Artifact(
        artifact_id=artifact_id,
        created_at=datetime.now(UTC),
        source_env=SourceEnv(environment_id=env.environment_id, kind=env.kind, db=deployment.db_name,
                             db_dsn_ref=env.db_dsn_ref),
        db_dump=DbDump(path=str(dump_dir), sha256=digest, size_bytes=size, pg_dump_version=host.pg_dump_version(),
                       compression=host.dump_compression,
                       files=[DumpFile(name=n, sha256=h, size_bytes=z) for n, h, z in files]),
        filestore=FilestoreArchive(path=str(store.index_path(artifact_id)), sha256=fs["index_sha256"],
                                   size_bytes=fs["size_bytes"], file_count=fs["file_count"],
                                   index_bytes=fs["index_bytes"], store=fs["store"], new_objects=fs["new_objects"],
                                   new_bytes=fs["new_bytes"]),
        manifest=manifest,
    )
    store.write_contract(artifact_id, artifact.model_dump_json(indent=2))
    verification = verify(store, artifact, full=False)
    ops_db.register_artifact(artifact_id, env.environment_id, role, run_id, artifact.model_dump(mode="json"))
    facts = {"dump_seconds": round(dumped - started, 3), "db_dump_seconds": round(db_seconds, 3),
             "filestore_seconds": round(fs_seconds, 3), "total_seconds": round(time.monotonic() - started, 3),
             "filestore_new_objects": fs["new_objects"], "filestore_new_bytes": fs["new_bytes"],
             "filestore_renamed_by_content": fs["renamed_by_content"],
             "filestore_changed_while_copied": fs["changed_while_copied"], "filestore_vanished": fs["vanished"],
             **({"filestore_fetched_files": fs["fetched_files"], "filestore_fetched_bytes": fs["fetched_bytes"],
                 "filestore_read_on": files_on.name} if files_on is not None else {}),
             "verification": verification}
    return artifact, facts


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    start = time.monotonic()
    return fn(*args), time.monotonic() - start


def verify(store: LocalArtifactStore, artifact: Artifact, full: bool = True, deep: bool = False) -> dict[str, Any]:
    """``full``: every dump file and the index hashed again, every object present with its size. ``deep``
    (before a restore): every object the index names hashed again too, so what green gets is proven content."""
    return store.verify(artifact.artifact_id, artifact.db_dump.model_dump(), artifact.filestore.model_dump(),
                        full=full, deep=deep)
