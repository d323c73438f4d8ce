"""The local artifact store: where backups live between a snapshot and its restore or deletion.

Layout under ``root``::

    <artifact_id>/artifact.json        the v1 contract
    <artifact_id>/db/                  pg_dump -Fd (parallel), every file's sha256 in the contract
    <artifact_id>/filestore.index      one line per filestore file: "<sha1> <size> <relative path>"
    .objects/<sha1[:2]>/<sha1>         filestore content, once per distinct content, read-only
    .objects.lock                      flock: shared while objects are written or copied, exclusive for GC

Odoo names every filestore file by the SHA-1 of its content, so the filestore is stored by
content: a backup copies into ``.objects`` only the files the store does not hold yet (hashing
them while they are copied, so a file whose name is not its content's SHA-1 is stored under the
SHA-1 of what it really holds), and writes the index. Each object keeps its source's mtime, and a
restore gives each file it copies its object's mtime, so a second backup of an unchanged filestore
reads no file content at all: a file is trusted by name only when its size and mtime are the object's
(an in-place write moves the mtime on, and the file is hashed). A filestore on another machine (a process
host) goes through ``ingest_filestore_from``: the same decision per file on its listing there, and only the
files not trusted travel, in one stream (``filestore_objects.py``, ``ssh_filestore.py``; the SSH store relays
them to its host, ``ssh_artifact_store.py``).

A restore copies the objects (a reflink where the filesystem has them), never hard-links them: Odoo does not
rewrite a filestore file in place, but anyone else may, and through a link that write would change the object
and every artifact naming it.

An artifact's references are its index. ``delete`` removes the artifact's folder and then
collects garbage under the exclusive lock: every object that no remaining index names is
removed, and nothing else. Backups and restores hold the shared lock for as long as they write
or copy objects, so the collector never runs between a backup's "this object is already there"
and the moment its index is in place.

Verification re-derives what the contract claims, from the caller's copy of the contract (the
run's own record, not the file next to the data): before a restore (``full=True``) every dump file
is hashed again, its table of contents read, and the index hashed, every object it names checked
for presence and size; ``deep=True`` (what a restore asks for) also re-hashes every object, so green
gets content proven against its name, not a file of the right size. Right after a backup, whose
bytes were hashed as they were written, the check is on sizes and the table of contents only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from resources.artifact_folder import StoreFolder
from resources.filestore_objects import DUMP_DIR, ArtifactError, FilestoreObjects, dump_digest
from resources.private_files import DIR_MODE, make_private_dirs, write_private

__all__ = ["ArtifactError", "LocalArtifactStore", "dump_digest"]


class LocalArtifactStore(FilestoreObjects, ConfigurableResource):
    """Artifacts as folders on a local (or mounted) filesystem; filestore content shared by SHA-1."""

    root: str = Field(description="Folder that holds one sub-folder per artifact, and the shared objects.")
    pg_restore_bin: str = Field(default="pg_restore", description="pg_restore used to list a dump.")
    create_root: bool = Field(default=False, description="Create ``root`` when it does not exist; otherwise a missing"
                              " root is an error (the settings' create_artifact_root).")

    # -- artifacts ---------------------------------------------------------------------------------
    def new_artifact_id(self, environment_id: str, role: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return f"art_{role}_{environment_id}_{stamp}_{token_hex(4)}"


    def ensure_root(self) -> Path:
        """The store's root, owner-only; created only when ``create_root`` says so, otherwise ArtifactError naming
        the setting. A missing root is more often a typo or an unmounted volume than a wish for a new folder."""
        root = Path(self.root)
        if not root.is_dir():
            if root.exists():
                raise ArtifactError(f"artifact_root {root} is not a folder")
            if not self.create_root:
                raise ArtifactError(f"artifact_root {root} does not exist: create it, or set create_artifact_root"
                                    " to true in the settings")
        return make_private_dirs(root)  # no one else lists or enters it

    def allocate(self, artifact_id: str) -> Path:
        path = self.folder(artifact_id)
        self.ensure_root()
        path.mkdir(exist_ok=False)
        os.chmod(path, DIR_MODE)  # a dump holds password hashes and database.secret; chmod: whatever the umask
        return path

    def dump_dir(self, artifact_id: str) -> Path:
        """Where the artifact's dump lives in the store (what the contract's ``db_dump.path`` says)."""
        return self.folder(artifact_id) / DUMP_DIR

    # The two seams between the store and pg_dump/pg_restore, which read and write a dump directory on the
    # worker's own filesystem. Here the store *is* that filesystem: both are the dump's own folder. A store on
    # another host (ssh_artifact_store.py) gives a local folder and carries it to or from the host.
    @contextmanager
    def receiving_dump(self, artifact_id: str) -> Iterator[Path]:
        """A new folder for pg_dump -Fd to write the artifact's dump into; stored when the block ends."""
        yield self.dump_dir(artifact_id)

    @contextmanager
    def readable_dump(self, artifact_id: str, db_dump: Mapping[str, Any]) -> Iterator[Path]:
        """A folder pg_restore can read the artifact's dump from, for the length of the block."""
        yield Path(str(db_dump["path"]))

    def free_bytes(self) -> int:
        """Bytes free for new artifacts (after ``ensure_root``)."""
        return shutil.disk_usage(self.root).free

    def has_objects(self) -> bool:
        """Whether the store holds its objects folder (retention keeps every row whose folder is missing while it
        does not: a wrong root must not cost every row its record)."""
        return self.objects.is_dir()


    def write_contract(self, artifact_id: str, contract_json: str) -> Path:
        path = self.folder(artifact_id) / "artifact.json"
        write_private(path, contract_json.encode())
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

    # -- verification ------------------------------------------------------------------------------
    def verify(self, artifact_id: str, db_dump: Mapping[str, Any], filestore: Mapping[str, Any],
               full: bool = True, deep: bool = False) -> dict[str, object]:
        """Check the artifact against the caller's copy of its contract (``db_dump``/``filestore`` sections).

        ``full``: re-hash every dump file and the index, and check every object's presence and size (before a
        restore). Otherwise sizes and the dump's table of contents only (right after a backup, whose bytes
        were hashed as they were written). ``deep``: also re-hash every filestore object.
        """
        self.read_contract(artifact_id)
        results: dict[str, object] = {"mode": "deep" if deep else "full" if full else "sizes"}
        results["db_dump"] = self.verify_dump(artifact_id, db_dump, full)
        results["filestore"] = self.verify_filestore(artifact_id, filestore, full, deep)
        return results

    def verify_dump(self, artifact_id: str, db_dump: Mapping[str, Any], full: bool = True) -> dict[str, object]:
        """See ``StoreFolder.verify_dump`` (the files and their checksums); and the dump's table of contents read."""
        result = StoreFolder(self.root).verify_dump(artifact_id, dict(db_dump), full)
        path = self.dump_dir(artifact_id)
        listing = subprocess.run([self.pg_restore_bin, "--list", str(path)], capture_output=True, text=True)
        if listing.returncode != 0:
            raise ArtifactError(f"artifact {artifact_id}: pg_restore --list failed: {listing.stderr.strip()[:300]}")
        toc = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
        return {**result, "toc_entries": toc}

    # -- listing and deletion ----------------------------------------------------------------------
    def artifact_ids(self) -> list[str]:
        """Every artifact folder in the store, whatever state it is in (complete, half-written, half-deleted)."""
        return StoreFolder(self.root).artifact_ids()

    def folder_usage(self, artifact_id: str) -> tuple[int, float]:
        """(bytes on disk of the artifact's own folder: dump, index, contract; its newest mtime). The mtime of
        every file and folder counts: a backup in progress moves at least one of them on as it writes."""
        self.folder(artifact_id)  # a plain name
        return StoreFolder(self.root).usage(artifact_id)

    def remove_folder(self, artifact_id: str) -> bool:
        """Remove the artifact's folder (its objects stay until ``collect_garbage``); False when there was none (another
        worker removed it meanwhile: no error). Renamed away first: a removal cut short leaves trash the collector
        removes, never a half-artifact under its own name, and of two workers only one renames it."""
        self.folder(artifact_id)
        return StoreFolder(self.root).remove(artifact_id)

    def delete(self, artifact_id: str) -> dict[str, int]:
        """Remove the artifact, then every object no other artifact's index still names."""
        self.remove_folder(artifact_id)
        return self.collect_garbage()
