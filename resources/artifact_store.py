"""The local artifact store: where backups live between a snapshot and its restore or deletion.

An artifact is a folder ``<root>/<artifact_id>/`` holding ``db.dump`` (pg_dump custom format),
``filestore.tar.zst`` and ``artifact.json`` (the v1 contract). Verification re-derives what the
contract claims: checksums and sizes of both files, a readable table of contents
(``pg_restore --list``) and a readable manifest, so that nothing unverified is ever restored.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex

from dagster import ConfigurableResource
from pydantic import Field

CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """An artifact failed verification or could not be read; the message names the part."""


def sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class LocalArtifactStore(ConfigurableResource):
    """Artifacts as folders on a local (or mounted) filesystem."""

    root: str = Field(description="Folder that holds one sub-folder per artifact.")
    pg_restore_bin: str = Field(default="pg_restore", description="pg_restore used to list a dump.")

    def new_artifact_id(self, environment_id: str, role: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return f"art_{role}_{environment_id}_{stamp}_{token_hex(4)}"

    def folder(self, artifact_id: str) -> Path:
        if "/" in artifact_id or artifact_id.startswith("."):
            raise ArtifactError(f"artifact_id {artifact_id!r} is not a plain name")
        path = Path(self.root) / artifact_id
        return path

    def allocate(self, artifact_id: str) -> Path:
        path = self.folder(artifact_id)
        path.mkdir(parents=True, exist_ok=False)
        return path

    def write_contract(self, artifact_id: str, contract_json: str) -> Path:
        path = self.folder(artifact_id) / "artifact.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(contract_json)
        tmp.replace(path)
        return path

    def read_contract(self, artifact_id: str) -> dict[str, object]:
        path = self.folder(artifact_id) / "artifact.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"artifact {artifact_id}: manifest unreadable ({exc})") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"artifact {artifact_id}: manifest is not an object")
        return data

    def verify(self, artifact_id: str, db_sha256: str, db_size: int, fs_sha256: str, fs_size: int) -> dict[str, object]:
        """Check both files against the contract's checksums and the dump's table of contents."""
        folder = self.folder(artifact_id)
        self.read_contract(artifact_id)
        results: dict[str, object] = {}
        for label, name, want_sha, want_size in (
            ("db_dump", "db.dump", db_sha256, db_size),
            ("filestore", "filestore.tar.zst", fs_sha256, fs_size),
        ):
            path = folder / name
            if not path.exists():
                raise ArtifactError(f"artifact {artifact_id}: {label} file {name} is missing")
            got_sha, got_size = sha256_of(path)
            if got_sha != want_sha or got_size != want_size:
                raise ArtifactError(
                    f"artifact {artifact_id}: {label} checksum mismatch (expected sha256 {want_sha[:12]}…"
                    f" {want_size} bytes, found {got_sha[:12]}… {got_size} bytes)"
                )
            results[label] = {"sha256": got_sha, "size_bytes": got_size, "ok": True}
        listing = subprocess.run(
            [self.pg_restore_bin, "--list", str(folder / "db.dump")], capture_output=True, text=True
        )
        if listing.returncode != 0:
            raise ArtifactError(f"artifact {artifact_id}: pg_restore --list failed: {listing.stderr.strip()[:300]}")
        results["toc_entries"] = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
        return results

    def delete(self, artifact_id: str) -> None:
        shutil.rmtree(self.folder(artifact_id), ignore_errors=True)
