"""backup-odoo-environment: one deployment's database and filestore as a verified v1 artifact.

The database dump and the filestore archive run at the same time (each is a pipeline of
external tools; this process only hashes the bytes as they pass), then the manifest is read
from the database, the contract written, the artifact verified and registered. Both the green
artifact (staging snapshot) and the blue one (production backup) are made here, so they share
one contract by construction.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from promote_pipeline import odoo_db
from promote_pipeline.models import (
    Artifact,
    DbDump,
    DeploymentRecord,
    EnvironmentRecord,
    FilestoreArchive,
    Manifest,
    SourceEnv,
)
from resources.artifact_store import LocalArtifactStore
from resources.odoo_host import LocalOdooHost
from resources.ops_db import OpsDatabase


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
            deployment: DeploymentRecord, role: str, run_id: str) -> tuple[Artifact, dict[str, Any]]:
    """Snapshot ``deployment`` of ``env``; returns the registered artifact and timing/verification facts."""
    artifact_id = store.new_artifact_id(env.environment_id, role)
    folder = store.allocate(artifact_id)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        db_job = pool.submit(host.dump_database, env.db_dsn_ref, deployment.db_name, folder / "db.dump")
        fs_job = pool.submit(host.archive_filestore, deployment.data_dir, deployment.db_name,
                             folder / "filestore.tar.zst")
        db_sha, db_size = db_job.result()
        fs_sha, fs_size, fs_count = fs_job.result()
    dumped = time.monotonic()
    artifact = Artifact(
        artifact_id=artifact_id,
        created_at=datetime.now(UTC),
        source_env=SourceEnv(environment_id=env.environment_id, kind=env.kind, db=deployment.db_name),
        db_dump=DbDump(path=str(folder / "db.dump"), sha256=db_sha, size_bytes=db_size,
                       pg_dump_version=host.pg_dump_version()),
        filestore=FilestoreArchive(path=str(folder / "filestore.tar.zst"), sha256=fs_sha, size_bytes=fs_size,
                                   file_count=fs_count),
        manifest=read_manifest(host, env, deployment.db_name),
    )
    store.write_contract(artifact_id, artifact.model_dump_json(indent=2))
    verification = verify(store, artifact)
    ops_db.register_artifact(artifact_id, env.environment_id, role, run_id, artifact.model_dump(mode="json"))
    facts = {"dump_seconds": round(dumped - started, 3), "total_seconds": round(time.monotonic() - started, 3),
             "verification": verification}
    return artifact, facts


def verify(store: LocalArtifactStore, artifact: Artifact) -> dict[str, Any]:
    return store.verify(artifact.artifact_id, artifact.db_dump.sha256, artifact.db_dump.size_bytes,
                        artifact.filestore.sha256, artifact.filestore.size_bytes)
