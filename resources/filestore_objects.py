"""The content-addressed half of the artifact store: filestore objects, indexes, verification and GC.

``LocalArtifactStore`` (``artifact_store.py``) holds the artifacts' folders, contracts and dumps; this mixin
holds what they share: ``.objects/<sha1[:2]>/<sha1>``, one file per distinct content, written once and
read-only, the per-artifact ``filestore.index`` that references them, the lock that keeps the garbage
collector away from a backup or restore in progress, and the collector itself. See ``artifact_store.py``
for the layout and why the filestore is stored by content. The checks, the listing and the collector are
``artifact_folder.py``'s, the one implementation the SSH store runs on its host too.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from secrets import token_hex
from typing import IO, TYPE_CHECKING, Any, Protocol

from resources.artifact_folder import (
    _HEX,
    DUMP_DIR,
    INDEX,
    OBJECT_MODE,
    OBJECTS,
    ArtifactError,
    StoreFolder,
    _buffer,
    dump_digest,
    hash_file,
    settle_object,
)
from resources.file_copy import CopyMethod
from resources.private_files import DIR_MODE, create_exclusive, make_private_dirs

__all__ = ["DUMP_DIR", "INDEX", "OBJECTS", "ArtifactError", "FilestoreObjects", "FilestoreSource", "dump_digest",
           "hash_file"]



def _count_stored(facts: dict[str, int], name: str, sha1: str, listed: int, got: int, new: bool) -> int:
    """Count a file just stored as an object; returns its size as stored. A file written to while the backup read
    it is stored as read (``got`` bytes, not the ``listed`` size); the next backup sees its newer mtime."""
    if got != listed:
        facts["changed_while_copied"] += 1
    if new:
        facts["new_objects"] += 1
        facts["new_bytes"] += got
    if name != sha1:
        facts["renamed_by_content"] += 1
    return got


def _index_line(out: IO[bytes], digest: Any, facts: dict[str, int], sha1: str, size: int, rel: str) -> int:
    """One ``<sha1> <size> <path>`` line of the index written, hashed and counted; returns its length."""
    line = f"{sha1} {size} {rel}\n".encode()
    out.write(line)
    digest.update(line)
    facts["file_count"] += 1
    facts["size_bytes"] += size
    return len(line)

class FilestoreSource(Protocol):
    """A filestore the store cannot open as a path: one on a process host (``SshOdooHost.filestore_source``).

    ``list_files``: every regular file as (relative path, size, mtime in ns), in the order of the local ingest's walk
    (sorted names, depth first), and how many entries were not regular files. ``fetch``: the named files' content,
    in the order asked, as (relative path, readable) pairs over one stream; a file gone since the listing is simply
    not among them, and each readable must be read before the next pair is asked for. ``where``: the host and
    folder, as a failure names them."""

    name: str

    @property
    def where(self) -> str: ...

    def list_files(self) -> tuple[list[tuple[str, int, int]], int]: ...

    def fetch(self, rels: Sequence[str]) -> AbstractContextManager[Iterator[tuple[str, IO[bytes]]]]: ...


class FilestoreObjects:
    """Mixin of ``LocalArtifactStore``: everything that works on the shared objects (it supplies ``root``)."""

    if TYPE_CHECKING:
        root: str

        def ensure_root(self) -> Path: ...

    # -- content-addressed objects -----------------------------------------------------------------
    def folder(self, artifact_id: str) -> Path:
        if "/" in artifact_id or artifact_id.startswith(".") or not artifact_id:
            raise ArtifactError(f"artifact_id {artifact_id!r} is not a plain name")
        return Path(self.root) / artifact_id

    def index_path(self, artifact_id: str) -> Path:
        return self.folder(artifact_id) / INDEX

    @property
    def objects(self) -> Path:
        return Path(self.root) / OBJECTS

    def object_path(self, sha1: str) -> Path:
        return self.objects / sha1[:2] / sha1

    @contextmanager
    def _objects_lock(self, exclusive: bool) -> Iterator[None]:
        self.ensure_root()
        fd = os.open(Path(self.root) / ".objects.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _ensure_object_dirs(self) -> None:
        # Owner-only (a store made by older code is tightened here): the objects are production's attachments.
        make_private_dirs(self.objects)
        if (self.objects / "ff").is_dir():
            return
        for i in range(256):
            (self.objects / f"{i:02x}").mkdir(mode=DIR_MODE, exist_ok=True)

    def _copy_in(self, src: str, name_hint: str, objects: str) -> tuple[str, int, bool]:
        """Copy one file into the store, hashing it on the way; (sha1, size, newly stored).

        The copy is written to a temporary name in the object's own sub-folder (a rename within one folder
        is cheap; across folders it costs as much again) and renamed into place once complete, so an object
        name never points at partial content. ``name_hint`` picks the sub-folder; a file whose content does
        not hash to its name is moved to where its content belongs.

        The object takes the source's mtime (read before its first byte, so a write during the copy leaves the
        source newer than the object): a live file later found with the object's name, size *and* mtime is
        the one that was hashed, and a backup may skip it. ``settle_object`` puts it in place (and says why an
        object already there with another size or mtime is replaced).
        """
        buf = _buffer()
        digest = hashlib.sha1()
        sub = name_hint[:2] if len(name_hint) == 40 and set(name_hint) <= _HEX else "00"
        tmp = f"{objects}/{sub}/.in-{token_hex(8)}"
        fd_in = os.open(src, os.O_RDONLY)
        try:
            source = os.fstat(fd_in)
            # Read-only (objects are never edited in place: restores copy them) and owner-only (they hold
            # production's files).
            fd_out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, OBJECT_MODE)
            os.fchmod(fd_out, OBJECT_MODE)
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
        os.utime(tmp, ns=(source.st_atime_ns, source.st_mtime_ns))
        sha1 = digest.hexdigest()
        return sha1, copied, settle_object(objects, tmp, sha1, copied, source.st_mtime_ns)

    def ingest_filestore(self, artifact_id: str, src: Path) -> dict[str, Any]:
        """Store the filestore ``src`` for ``artifact_id``: new content into the objects, and the index.

        A file named ``<sha1[:2]>/<sha1>`` (Odoo's layout) whose object is present with the same size and
        mtime (a restore gives each file its object's mtime; an in-place write moves it on) is not read at
        all; a name and a size alone prove nothing. Every other file is copied in and hashed while it is
        copied (one thread: on a loaded machine more threads only fight over the interpreter lock). Returns
        the index's sha256 and size, and the counts the contract records.
        """
        index = self.index_path(artifact_id)
        facts = {"file_count": 0, "size_bytes": 0, "new_objects": 0, "new_bytes": 0, "renamed_by_content": 0,
                 "skipped_not_regular": 0, "vanished": 0, "changed_while_copied": 0, "rehashed_by_stat": 0}
        digest = hashlib.sha256()
        index_bytes = 0
        objects = str(self.objects)
        with self._objects_lock(exclusive=False):
            self._ensure_object_dirs()
            fd, tmp_index = create_exclusive(index.parent, f".{INDEX}.")
            with os.fdopen(fd, "wb") as out:
                for rel, path, size, mtime_ns in (self._walk(src, facts) if src.is_dir() else ()):
                    name = rel.rpartition("/")[2]
                    if self._trusted(objects, rel, size, mtime_ns, facts):
                        sha1 = name
                    else:
                        try:
                            sha1, got, new = self._copy_in(path, name, objects)
                        except FileNotFoundError:  # removed since the walk saw it (Odoo's file GC): not needed
                            facts["vanished"] += 1
                            continue
                        size = _count_stored(facts, name, sha1, size, got, new)
                    index_bytes += _index_line(out, digest, facts, sha1, size, rel)
            os.replace(tmp_index, index)
        return {**facts, "index_sha256": digest.hexdigest(), "index_bytes": index_bytes, "store": objects}

    def _trusted(self, objects: str, rel: str, size: int, mtime_ns: int, facts: dict[str, int]) -> bool:
        """Whether ``rel`` is an Odoo file name (``<sha1[:2]>/<sha1>``) whose object is present with the same size
        and mtime: then it is that object, and is not read at all (``ingest_filestore`` says why)."""
        name = rel.rpartition("/")[2]
        if not (len(name) == 40 and rel == f"{name[:2]}/{name}" and set(name) <= _HEX):
            return False
        try:
            obj = os.stat(f"{objects}/{name[:2]}/{name}")
        except FileNotFoundError:
            return False
        if (obj.st_size, obj.st_mtime_ns) == (size, mtime_ns):
            return True
        facts["rehashed_by_stat"] += 1
        return False

    def _store_stream(self, reader: IO[bytes], name_hint: str, objects: str, mtime_ns: int) -> tuple[str, int, bool]:
        """``_copy_in`` for content that arrives on a stream: hashed while written to a temporary object, which
        takes ``mtime_ns`` (the source's mtime when it was listed, before its first byte was read: a write since
        leaves the source newer than the object, so the next backup reads it again)."""
        buf = _buffer()
        digest = hashlib.sha1()
        sub = name_hint[:2] if len(name_hint) == 40 and set(name_hint) <= _HEX else "00"
        tmp = f"{objects}/{sub}/.in-{token_hex(8)}"
        fd_out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, OBJECT_MODE)
        copied = 0
        try:
            os.fchmod(fd_out, OBJECT_MODE)
            while n := reader.readinto(buf):  # type: ignore[attr-defined]
                view = buf[:n]
                digest.update(view)
                while view:
                    view = view[os.write(fd_out, view):]
                copied += n
        except BaseException:
            os.close(fd_out)
            os.unlink(tmp)
            raise
        os.close(fd_out)
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
        sha1 = digest.hexdigest()
        return sha1, copied, settle_object(objects, tmp, sha1, copied, mtime_ns)

    def ingest_filestore_from(self, artifact_id: str, source: FilestoreSource) -> dict[str, Any]:
        """``ingest_filestore`` for a filestore on another machine (``source``): the same decision per file, the
        same index and facts, so the same verification afterwards. The source's listing (names, sizes, mtimes:
        metadata only) is compared with the objects here; only the files not trusted by name, size and mtime are
        fetched, all in one stream, each hashed as it arrives and stored as an object. ``fetched_files`` and
        ``fetched_bytes`` say what travelled."""
        index = self.index_path(artifact_id)
        facts = {"file_count": 0, "size_bytes": 0, "new_objects": 0, "new_bytes": 0, "renamed_by_content": 0,
                 "skipped_not_regular": 0, "vanished": 0, "changed_while_copied": 0, "rehashed_by_stat": 0,
                 "fetched_files": 0, "fetched_bytes": 0}
        listing, facts["skipped_not_regular"] = source.list_files()
        for rel, _, _ in listing:
            if "\n" in rel:
                raise ArtifactError(f"filestore file name with a newline on {source.name}: {rel!r}")
        digest = hashlib.sha256()
        index_bytes = 0
        objects = str(self.objects)
        with self._objects_lock(exclusive=False):
            self._ensure_object_dirs()
            # Decided under the lock: the collector cannot remove a trusted object before the index names it.
            trusted = [self._trusted(objects, rel, size, mtime_ns, facts) for rel, size, mtime_ns in listing]
            wanted = [rel for (rel, _, _), ok in zip(listing, trusted, strict=True) if not ok]
            fd, tmp_index = create_exclusive(index.parent, f".{INDEX}.")
            with os.fdopen(fd, "wb") as out, source.fetch(wanted) as arriving:
                pending: tuple[str, IO[bytes]] | None = next(arriving, None)
                for (rel, size, mtime_ns), ok in zip(listing, trusted, strict=True):
                    name = rel.rpartition("/")[2]
                    if ok:
                        sha1 = name
                    else:
                        # The stream holds the wanted files in the order asked, less those gone meanwhile.
                        if pending is None or pending[0] != rel:
                            facts["vanished"] += 1
                            continue
                        sha1, got, new = self._store_stream(pending[1], name, objects, mtime_ns)
                        pending = next(arriving, None)
                        facts["fetched_files"] += 1
                        facts["fetched_bytes"] += got
                        size = _count_stored(facts, name, sha1, size, got, new)
                    index_bytes += _index_line(out, digest, facts, sha1, size, rel)
                if pending is not None:
                    raise ArtifactError(f"filestore on {source.name}: {pending[0]!r} arrived but was not asked for")
            os.replace(tmp_index, index)
        return {**facts, "index_sha256": digest.hexdigest(), "index_bytes": index_bytes, "store": objects}

    @staticmethod
    def _walk(src: Path, facts: dict[str, int]) -> Iterator[tuple[str, str, int, int]]:
        """(relative path, path, size, mtime_ns) of every regular file under ``src``, in a stable order."""
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
                    stat = entry.stat(follow_symlinks=False)
                    yield rel, entry.path, stat.st_size, stat.st_mtime_ns
                else:
                    facts["skipped_not_regular"] += 1
            stack.extend(reversed(subdirs))

    def iter_index(self, artifact_id: str) -> Iterator[tuple[str, int, str]]:
        with self.index_path(artifact_id).open("rb") as fh:
            for raw in fh:
                sha1, size, rel = raw.decode().rstrip("\n").split(" ", 2)
                yield sha1, int(size), rel

    def materialize_filestore(self, artifact_id: str, dest: Path) -> dict[str, Any]:
        """Recreate the artifact's filestore at ``dest`` (new or empty) as copies of the objects: a reflink
        where the filesystem has them, an in-kernel copy otherwise. Never a hard link: a write into the live
        file would be a write into the object, and into every artifact that names it. Each file takes its
        object's mtime, so the next backup of this filestore can trust it without reading it."""
        dest.mkdir(parents=True, exist_ok=True)
        total = 0
        objects, root = str(self.objects), str(dest)
        method = CopyMethod()
        with self._objects_lock(exclusive=False):
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
                method.copy(obj, target, size)
                stamp = os.stat(obj)
                os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        return {**method.counts, "bytes": total}

    def verify_filestore(self, artifact_id: str, filestore: Mapping[str, Any], full: bool = True,
                         deep: bool = False) -> dict[str, object]:
        """See ``StoreFolder.verify_filestore``: the index against the contract, every object present with its
        size (``full``), every object hashed again (``deep``)."""
        self.ensure_root()
        return StoreFolder(self.root).verify_filestore(artifact_id, dict(filestore), full, deep)

    # -- garbage collection --------------------------------------------------------------------------
    def live_objects(self, without: frozenset[str] = frozenset()) -> set[str]:
        """SHA-1s named by the index of any artifact in the store (but those named in ``without``)."""
        return StoreFolder(self.root).live(without)

    def objects_freed_by(self, going: frozenset[str]) -> tuple[int, int]:
        """(objects, bytes) the collector would remove once the artifacts ``going`` are removed: every object no
        other artifact's index names (what a crash left unreferenced included). Read without the lock: an estimate
        for a dry run, which a backup finishing meanwhile may make smaller."""
        return StoreFolder(self.root).freed(going)

    def collect_garbage(self) -> dict[str, int]:
        """Under the exclusive lock (no backup or restore in progress): remove unreferenced objects, leftover
        temporary files of an interrupted copy, and trash of an interrupted delete."""
        self.ensure_root()
        return StoreFolder(self.root).gc()
