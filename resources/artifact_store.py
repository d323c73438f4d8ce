"""The local artifact store: where backups live between a snapshot and its restore or deletion.

Layout under ``root``::

    <artifact_id>/artifact.json        the v1 contract
    <artifact_id>/db/                  pg_dump -Fd (parallel), every file's sha256 in the contract
    <artifact_id>/filestore.index      one line per filestore file: "<sha1> <size> <relative path>"
    .objects/<sha1[:2]>/<sha1>         filestore content, once per distinct content, read-only
    .objects.lock                      flock: shared while objects are written or linked, exclusive for GC

Odoo names every filestore file by the SHA-1 of its content, so the filestore is stored by
content: a backup copies into ``.objects`` only the files the store does not hold yet (hashing
them while they are copied, so a file whose name is not its content's SHA-1 is stored under the
SHA-1 of what it really holds), and writes the index. A second backup of an unchanged filestore
reads no file content at all. A restore on the same filesystem hard-links the objects into the
new filestore (a copy otherwise); objects are read-only, and Odoo never rewrites a filestore file
in place (it writes new names and unlinks old ones), so a link is as good as a copy.

An artifact's references are its index. ``delete`` removes the artifact's folder and then
collects garbage under the exclusive lock: every object that no remaining index names is
removed, and nothing else. Backups and restores hold the shared lock for as long as they write
or link objects, so the collector never runs between a backup's "this object is already there"
and the moment its index is in place.

Verification re-derives what the contract claims, from the caller's copy of the contract (the
run's own record, not the file next to the data): before a restore (``full=True``) every dump file
is hashed again, its table of contents read, and the index hashed, every object it names checked
for presence and size (``deep=True`` also re-hashes every object). Right after a backup, whose
bytes were hashed as they were written, the check is on sizes and the table of contents only.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

CHUNK = 1 << 20
OBJECTS = ".objects"
INDEX = "filestore.index"
DUMP_DIR = "db"
_HEX = frozenset("0123456789abcdef")
_local = threading.local()


class ArtifactError(RuntimeError):
    """An artifact failed verification or could not be read; the message names the part."""


def _buffer() -> memoryview:
    buf: memoryview | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(CHUNK))
    return buf


def _hash_file(path: Path, algorithm: str = "sha256") -> tuple[str, int]:
    digest = hashlib.new(algorithm)
    size = 0
    buf = _buffer()
    fd = os.open(path, os.O_RDONLY)
    try:
        while n := os.readv(fd, [buf]):
            digest.update(buf[:n])
            size += n
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def dump_digest(files: list[tuple[str, str, int]]) -> tuple[str, int]:
    """One sha256 for a dump directory: over the sorted ``"<sha256>  <size>  <name>"`` lines; and the total size."""
    digest = hashlib.sha256()
    for name, sha, size in sorted(files):
        digest.update(f"{sha}  {size}  {name}\n".encode())
    return digest.hexdigest(), sum(size for _, _, size in files)


class LocalArtifactStore(ConfigurableResource):
    """Artifacts as folders on a local (or mounted) filesystem; filestore content shared by SHA-1."""

    root: str = Field(description="Folder that holds one sub-folder per artifact, and the shared objects.")
    pg_restore_bin: str = Field(default="pg_restore", description="pg_restore used to list a dump.")

    # -- artifacts ---------------------------------------------------------------------------------
    def new_artifact_id(self, environment_id: str, role: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return f"art_{role}_{environment_id}_{stamp}_{token_hex(4)}"

    def folder(self, artifact_id: str) -> Path:
        if "/" in artifact_id or artifact_id.startswith(".") or not artifact_id:
            raise ArtifactError(f"artifact_id {artifact_id!r} is not a plain name")
        return Path(self.root) / artifact_id

    def allocate(self, artifact_id: str) -> Path:
        path = self.folder(artifact_id)
        path.mkdir(parents=True, exist_ok=False)
        return path

    def dump_dir(self, artifact_id: str) -> Path:
        return self.folder(artifact_id) / DUMP_DIR

    def index_path(self, artifact_id: str) -> Path:
        return self.folder(artifact_id) / INDEX

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

    # -- content-addressed objects -----------------------------------------------------------------
    @property
    def objects(self) -> Path:
        return Path(self.root) / OBJECTS

    def object_path(self, sha1: str) -> Path:
        return self.objects / sha1[:2] / sha1

    @contextmanager
    def _objects_lock(self, exclusive: bool) -> Iterator[None]:
        Path(self.root).mkdir(parents=True, exist_ok=True)
        fd = os.open(Path(self.root) / ".objects.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _ensure_object_dirs(self) -> None:
        if (self.objects / "ff").is_dir():
            return
        for i in range(256):
            (self.objects / f"{i:02x}").mkdir(parents=True, exist_ok=True)

    def _copy_in(self, src: str, name_hint: str, objects: str) -> tuple[str, int, bool]:
        """Copy one file into the store, hashing it on the way; (sha1, size, newly stored).

        The copy is written to a temporary name in the object's own sub-folder (a rename within one folder
        is cheap; across folders it costs as much again) and renamed into place once complete, so an object
        name never points at partial content. ``name_hint`` picks the sub-folder; a file whose content does
        not hash to its name is moved to where its content belongs.
        """
        buf = _buffer()
        digest = hashlib.sha1()
        sub = name_hint[:2] if len(name_hint) == 40 and set(name_hint) <= _HEX else "00"
        tmp = f"{objects}/{sub}/.in-{token_hex(8)}"
        fd_in = os.open(src, os.O_RDONLY)
        try:
            fd_out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            copied = 0
            try:
                while n := os.readv(fd_in, [buf]):
                    view = buf[:n]
                    digest.update(view)
                    while view:
                        view = view[os.write(fd_out, view):]
                    copied += n
            finally:
                os.close(fd_out)
        finally:
            os.close(fd_in)
        sha1 = digest.hexdigest()
        final = f"{objects}/{sha1[:2]}/{sha1}"
        try:
            if os.stat(final).st_size == copied:  # someone stored the same content meanwhile
                os.unlink(tmp)
                return sha1, copied, False
        except FileNotFoundError:
            pass
        os.rename(tmp, final)
        return sha1, copied, True

    def ingest_filestore(self, artifact_id: str, src: Path) -> dict[str, Any]:
        """Store the filestore ``src`` for ``artifact_id``: new content into the objects, and the index.

        A file named ``<sha1[:2]>/<sha1>`` (Odoo's layout) whose object is present with the same size is
        not read at all. Every other file is copied in and hashed while it is copied (one thread: on a
        loaded machine more threads only fight over the interpreter lock). Returns the index's sha256 and
        size, and the counts the contract records.
        """
        index = self.index_path(artifact_id)
        tmp_index = index.with_name(INDEX + ".tmp")
        facts = {"file_count": 0, "size_bytes": 0, "new_objects": 0, "new_bytes": 0, "renamed_by_content": 0,
                 "skipped_not_regular": 0, "vanished": 0, "changed_while_copied": 0}
        digest = hashlib.sha256()
        index_bytes = 0
        objects = str(self.objects)
        with self._objects_lock(exclusive=False):
            self._ensure_object_dirs()
            with tmp_index.open("wb") as out:
                for rel, path, size in (self._walk(src, facts) if src.is_dir() else ()):
                    name = rel.rpartition("/")[2]
                    sha1 = ""
                    if len(name) == 40 and rel == f"{name[:2]}/{name}" and set(name) <= _HEX:
                        try:
                            if os.stat(f"{objects}/{name[:2]}/{name}").st_size == size:
                                sha1 = name
                        except FileNotFoundError:
                            pass
                    if not sha1:
                        try:
                            sha1, got, new = self._copy_in(path, name, objects)
                        except FileNotFoundError:  # removed since the walk saw it (Odoo's file GC): not needed
                            facts["vanished"] += 1
                            continue
                        if got != size:  # written to while the backup ran: what was copied is what is stored
                            facts["changed_while_copied"] += 1
                            size = got
                        if new:
                            facts["new_objects"] += 1
                            facts["new_bytes"] += size
                        if name != sha1:
                            facts["renamed_by_content"] += 1
                    line = f"{sha1} {size} {rel}\n".encode()
                    out.write(line)
                    digest.update(line)
                    index_bytes += len(line)
                    facts["file_count"] += 1
                    facts["size_bytes"] += size
            tmp_index.replace(index)
        return {**facts, "index_sha256": digest.hexdigest(), "index_bytes": index_bytes, "store": objects}

    @staticmethod
    def _walk(src: Path, facts: dict[str, int]) -> Iterator[tuple[str, str, int]]:
        """(relative path, path, size) of every regular file under ``src``, in a stable order."""
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            base = os.path.join(src, rel_dir) if rel_dir else str(src)
            with os.scandir(base) as it:
                entries = sorted(it, key=lambda e: e.name)
            subdirs = []
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if "\n" in rel:
                    raise ArtifactError(f"filestore file name with a newline: {rel!r}")
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    yield rel, entry.path, entry.stat(follow_symlinks=False).st_size
                else:
                    facts["skipped_not_regular"] += 1
            stack.extend(reversed(subdirs))

    def iter_index(self, artifact_id: str) -> Iterator[tuple[str, int, str]]:
        with self.index_path(artifact_id).open("rb") as fh:
            for raw in fh:
                sha1, size, rel = raw.decode().rstrip("\n").split(" ", 2)
                yield sha1, int(size), rel

    def materialize_filestore(self, artifact_id: str, dest: Path) -> dict[str, Any]:
        """Recreate the artifact's filestore at ``dest`` (new or empty): hard links to the objects when they
        are on the same filesystem, copies otherwise (or where a link is refused)."""
        dest.mkdir(parents=True, exist_ok=True)
        linked = copied = total = 0
        objects, root = str(self.objects), str(dest)
        with self._objects_lock(exclusive=False):
            can_link = os.stat(objects).st_dev == os.stat(root).st_dev
            made: set[str] = set()
            for sha1, size, rel in self.iter_index(artifact_id):
                if rel.startswith("/") or ".." in rel.split("/"):
                    raise ArtifactError(f"artifact {artifact_id}: index names a path outside the filestore: {rel!r}")
                parent = rel.rpartition("/")[0]
                if parent and parent not in made:
                    os.makedirs(f"{root}/{parent}", exist_ok=True)
                    made.add(parent)
                target, obj = f"{root}/{rel}", f"{objects}/{sha1[:2]}/{sha1}"
                total += size
                if can_link:
                    try:
                        os.link(obj, target)
                        linked += 1
                        continue
                    except OSError as exc:
                        if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
                            raise
                        can_link = exc.errno == errno.EMLINK
                shutil.copyfile(obj, target)
                copied += 1
        return {"linked": linked, "copied": copied, "bytes": total}

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
        path = Path(str(db_dump["path"]))
        if path != self.dump_dir(artifact_id):
            raise ArtifactError(f"artifact {artifact_id}: db_dump path {path} is not inside the artifact")
        if not path.is_dir():
            raise ArtifactError(f"artifact {artifact_id}: db_dump directory {path} is missing")
        want = {str(f["name"]): (str(f["sha256"]), int(f["size_bytes"])) for f in db_dump.get("files") or []}
        present = {e.name for e in os.scandir(path) if e.is_file(follow_symlinks=False)}
        if present != set(want) or not want:
            extra, missing = sorted(present - set(want)), sorted(set(want) - present)
            raise ArtifactError(f"artifact {artifact_id}: db_dump files differ from the contract"
                                f" (missing {missing[:5]}, unexpected {extra[:5]})")
        if full:
            names = sorted(want, key=lambda n: -want[n][1])
            with ThreadPoolExecutor(max_workers=2) as pool:
                got = dict(zip(names, pool.map(lambda n: _hash_file(path / n), names), strict=True))
        else:
            got = {n: (want[n][0], (path / n).stat().st_size) for n in want}
        for name, (sha, size) in sorted(want.items()):
            if got[name] != (sha, size):
                raise ArtifactError(
                    f"artifact {artifact_id}: db_dump checksum mismatch in {name} (expected sha256 {sha[:12]}…"
                    f" {size} bytes, found {got[name][0][:12]}… {got[name][1]} bytes)")
        digest, total = dump_digest([(n, s, z) for n, (s, z) in got.items()])
        if digest != db_dump["sha256"] or total != int(db_dump["size_bytes"]):
            raise ArtifactError(f"artifact {artifact_id}: db_dump digest mismatch (expected sha256"
                                f" {str(db_dump['sha256'])[:12]}… {db_dump['size_bytes']} bytes, found {digest[:12]}…"
                                f" {total} bytes)")
        listing = subprocess.run([self.pg_restore_bin, "--list", str(path)], capture_output=True, text=True)
        if listing.returncode != 0:
            raise ArtifactError(f"artifact {artifact_id}: pg_restore --list failed: {listing.stderr.strip()[:300]}")
        toc = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
        return {"sha256": digest, "size_bytes": total, "files": len(want), "hashed": full, "toc_entries": toc,
                "ok": True}

    def verify_filestore(self, artifact_id: str, filestore: Mapping[str, Any], full: bool = True,
                         deep: bool = False) -> dict[str, object]:
        index = Path(str(filestore["path"]))
        if index != self.index_path(artifact_id):
            raise ArtifactError(f"artifact {artifact_id}: filestore index {index} is not inside the artifact")
        if not index.is_file():
            raise ArtifactError(f"artifact {artifact_id}: filestore index {index} is missing")
        if not full:
            size = index.stat().st_size
            if size != int(filestore.get("index_bytes") or size):
                raise ArtifactError(f"artifact {artifact_id}: filestore index size {size} differs from the contract")
            return {"index_bytes": size, "objects_checked": 0, "ok": True}
        sha, size = _hash_file(index)
        if sha != filestore["sha256"]:
            raise ArtifactError(f"artifact {artifact_id}: filestore index checksum mismatch (expected sha256"
                                f" {str(filestore['sha256'])[:12]}…, found {sha[:12]}…)")
        count = total = 0
        with self._objects_lock(exclusive=False):
            objects = str(self.objects)
            for sha1, want, rel in self.iter_index(artifact_id):
                obj = f"{objects}/{sha1[:2]}/{sha1}"
                try:
                    got = os.stat(obj).st_size
                except FileNotFoundError:
                    raise ArtifactError(f"artifact {artifact_id}: filestore object {sha1} ({rel}) is missing") from None
                if got != want:
                    raise ArtifactError(f"artifact {artifact_id}: filestore object {sha1} ({rel}) has {got} bytes,"
                                        f" the index says {want}")
                if deep and _hash_file(Path(obj), "sha1")[0] != sha1:
                    raise ArtifactError(f"artifact {artifact_id}: filestore object {sha1} ({rel}) is corrupt")
                count += 1
                total += want
        if count != int(filestore["file_count"]) or total != int(filestore["size_bytes"]):
            raise ArtifactError(f"artifact {artifact_id}: filestore index holds {count} files / {total} bytes, the"
                                f" contract says {filestore['file_count']} / {filestore['size_bytes']}")
        return {"index_sha256": sha, "index_bytes": size, "objects_checked": count, "bytes": total,
                "rehashed_objects": deep, "ok": True}

    # -- deletion ----------------------------------------------------------------------------------
    def delete(self, artifact_id: str) -> dict[str, int]:
        """Remove the artifact, then every object no other artifact's index still names."""
        folder = self.folder(artifact_id)
        if folder.exists():
            trash = Path(self.root) / f".trash-{artifact_id}-{token_hex(4)}"
            folder.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        return self.collect_garbage()

    def live_objects(self) -> set[str]:
        """SHA-1s named by the index of any artifact in the store."""
        live: set[str] = set()
        root = Path(self.root)
        if not root.is_dir():
            return live
        for entry in os.scandir(root):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            index = Path(entry.path) / INDEX
            if index.is_file():
                with index.open("rb") as fh:
                    live.update(raw[:40].decode() for raw in fh)
        return live

    def collect_garbage(self) -> dict[str, int]:
        """Under the exclusive lock (no backup or restore in progress): remove unreferenced objects, leftover
        temporary files of an interrupted copy, and trash of an interrupted delete."""
        removed = removed_bytes = 0
        with self._objects_lock(exclusive=True):
            for entry in os.scandir(self.root):
                if entry.name.startswith(".trash-"):
                    shutil.rmtree(entry.path, ignore_errors=True)
            live = self.live_objects()
            if self.objects.is_dir():
                for entry in os.scandir(self.objects):
                    if entry.name.startswith(".in-"):
                        os.unlink(entry.path)
                        continue
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    for obj in os.scandir(entry.path):
                        if obj.name not in live:
                            removed_bytes += obj.stat(follow_symlinks=False).st_size
                            os.unlink(obj.path)
                            removed += 1
        return {"removed_objects": removed, "removed_bytes": removed_bytes, "live_objects": len(live)}
