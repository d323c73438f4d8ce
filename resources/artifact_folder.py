"""The artifact store's work on one filesystem: checks, listing, sizes, deletion and garbage collection of a store
folder, and the receiving and sending of files. One implementation, run in two places: in process by the local
store (``artifact_store.py``, ``filestore_objects.py``), and on the store's host by the SSH store
(``ssh_artifact_store.py`` sends this file as the program of ``python3 -c <this file> <root> <command>``). One
command runs on a process host instead: ``receive-filestore`` lands a filestore the SSH store relays there
(``<root>`` is then that filestore's folder).

So it is standard library only and self-contained: the store host needs a Python 3 and nothing of this project.
The layout under ``<root>`` is the one ``artifact_store.py`` describes: ``<id>/artifact.json``, ``<id>/db/``,
``<id>/filestore.index``, ``.objects/<ab>/<sha1>`` (read-only), ``.objects.lock``. Everything is owner-only:
folders 0700, files 0600, objects 0400, whatever the umask (run as a program, it sets its own).

Over SSH, files travel as records: ``F <mtime_ns> <tag> <name>\n``, then chunks ``<length>\n<bytes>`` up to a
``0\n``; ``E\n`` ends a list of records. Chunked, not sized up front: a file written to while it is sent is sent
as read, and the receiver records what it received. Checksums are computed where the bytes are written (on the
host for a backup, on the worker for a restore) and compared with what the other side says. A refusal is one
line on standard error and exit status 3.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import IO, Any

CHUNK = 1 << 20
DIR_MODE, FILE_MODE, OBJECT_MODE = 0o700, 0o600, 0o400
OBJECTS, INDEX, DUMP_DIR, CONTRACT = ".objects", "filestore.index", "db", "artifact.json"
REFUSED = 3
_HEX = frozenset("0123456789abcdef")


_local = threading.local()


class ArtifactError(RuntimeError):
    """An artifact failed verification or could not be read; the message names the part (one line)."""


# -- records --------------------------------------------------------------------------------------------------
def send_file(out: IO[bytes], fh: IO[bytes], mtime_ns: int, tag: str, name: str,
              digest: Any = None) -> int:
    """``fh``'s content as one record; returns the bytes sent (``digest`` updated with them when given)."""
    out.write(f"F {mtime_ns} {tag} {name}\n".encode())
    sent = 0
    while chunk := fh.read(CHUNK):
        out.write(b"%d\n" % len(chunk))
        out.write(chunk)
        if digest is not None:
            digest.update(chunk)
        sent += len(chunk)
    out.write(b"0\n")
    return sent


def read_header(inp: IO[bytes]) -> tuple[int, str, str] | None:
    """(mtime_ns, tag, name) of the next record, or None at the end of the list."""
    line = inp.readline()
    if line in (b"E\n", b""):
        return None
    kind, mtime, tag, name = line.decode().rstrip("\n").split(" ", 3)
    if kind != "F":
        raise ArtifactError(f"stream out of step: {line[:60]!r}")
    return int(mtime), tag, name


def read_body(inp: IO[bytes]) -> Iterator[bytes]:
    while True:
        line = inp.readline()
        if not line.strip().isdigit():  # the stream ended (or went astray) inside a file
            raise ArtifactError("stream cut short")
        size = int(line)
        if size == 0:
            return
        chunk = inp.read(size)
        if len(chunk) != size:
            raise ArtifactError("stream cut short")
        yield chunk


# -- helpers --------------------------------------------------------------------------------------------------
def plain(name: str) -> str:
    if not name or "/" in name or name.startswith(".") or "\n" in name:
        raise ArtifactError(f"artifact_id {name!r} is not a plain name")
    return name


def write_private(path: str, chunks: Iterator[bytes] | list[bytes], mode: int = FILE_MODE) -> tuple[str, int]:
    """``path`` replaced atomically by an owner-only file of ``chunks``; (sha256, size)."""
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.urandom(8).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    os.fchmod(fd, mode)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return digest.hexdigest(), size


def _buffer() -> memoryview:
    buf: memoryview | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(CHUNK))
    return buf


def hash_file(path: str | os.PathLike[str], algorithm: str = "sha256") -> tuple[str, int]:
    """(hex digest, size) of a file, read into one reused buffer per thread."""
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


def settle_object(objects: str, tmp: str, sha1: str, size: int, mtime_ns: int) -> bool:
    """Put the complete, hashed temporary file ``tmp`` in place as the object ``sha1``; True when it is new.

    An object already there with that size and mtime was stored meanwhile (the copy is dropped); one with another
    size or mtime is replaced by the copy just hashed: it may have been written through a hard link of an older
    restore, and the bytes just hashed are known to be right."""
    final = f"{objects}/{sha1[:2]}/{sha1}"
    try:
        present = os.stat(final)
    except FileNotFoundError:
        os.rename(tmp, final)
        return True
    if (present.st_size, present.st_mtime_ns) == (size, mtime_ns):
        os.unlink(tmp)
    else:
        os.rename(tmp, final)
    return False


def dump_digest(files: list[tuple[str, str, int]]) -> tuple[str, int]:
    """As ``filestore_objects.dump_digest``: one sha256 over the sorted ``"<sha256>  <size>  <name>"`` lines."""
    digest = hashlib.sha256()
    for name, sha, size in sorted(files):
        digest.update(f"{sha}  {size}  {name}\n".encode())
    return digest.hexdigest(), sum(size for _, _, size in files)


class StoreFolder:
    """A store's folder on this filesystem."""

    def __init__(self, root: str) -> None:
        self.root = str(root).rstrip("/") or "/"
        self.objects = f"{self.root}/{OBJECTS}"

    def need_root(self) -> None:
        if not os.path.isdir(self.root):
            raise ArtifactError("its root folder does not exist")

    @contextmanager
    def lock(self, exclusive: bool) -> Iterator[None]:
        """The local store's lock, on the host: shared while objects are written or read, exclusive for GC."""
        self.need_root()
        fd = os.open(f"{self.root}/.objects.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def folder(self, artifact_id: str) -> str:
        return f"{self.root}/{plain(artifact_id)}"

    # -- commands ----------------------------------------------------------------------------------
    def ensure(self, create: str) -> None:
        if not os.path.isdir(self.root):
            if os.path.lexists(self.root):
                raise ArtifactError("its root is not a folder")
            if create != "1":
                raise ArtifactError("its root folder does not exist")
            missing, parent = [], self.root
            while not os.path.lexists(parent) and parent != "/":
                missing.append(parent)
                parent = os.path.dirname(parent)
            os.makedirs(self.root, exist_ok=True)
            for folder in missing:
                os.chmod(folder, DIR_MODE)
        os.chmod(self.root, DIR_MODE)  # no one else lists or enters it

    def allocate(self, artifact_id: str, create: str) -> None:
        self.ensure(create)
        os.mkdir(self.folder(artifact_id), DIR_MODE)
        os.chmod(self.folder(artifact_id), DIR_MODE)

    def ingest(self, artifact_id: str, inp: IO[bytes], out: IO[bytes]) -> None:
        """One backup's filestore, under the shared lock from "which do you have" to the index in place."""
        folder = self.folder(artifact_id)
        with self.lock(exclusive=False):
            if not os.path.isdir(self.objects):
                os.mkdir(self.objects, DIR_MODE)
            os.chmod(self.objects, DIR_MODE)
            if not os.path.isdir(f"{self.objects}/ff"):
                for i in range(256):
                    os.makedirs(f"{self.objects}/{i:02x}", DIR_MODE, exist_ok=True)
            # 1. which of the named objects are here: size and mtime, for the worker to compare with its files
            for raw in iter(inp.readline, b"E\n"):
                if not raw:
                    raise ArtifactError("stream cut short")
                name = raw.decode().strip()
                if len(name) == 40 and set(name) <= _HEX:
                    try:
                        st = os.stat(f"{self.objects}/{name[:2]}/{name}")
                    except FileNotFoundError:
                        continue
                    out.write(f"H {name} {st.st_size} {st.st_mtime_ns}\n".encode())
            out.write(b"E\n")
            out.flush()
            # 2. the missing ones, hashed while written
            while (header := read_header(inp)) is not None:
                mtime_ns, hint, _name = header
                sha1, size, new = self._object_in(read_body(inp), hint, mtime_ns)
                out.write(f"R {sha1} {size} {int(new)}\n".encode())
            out.flush()
            # 3. the index, once every object it names is in place
            header = read_header(inp)
            if header is None:
                raise ArtifactError("no index sent")
            sha, size = write_private(f"{folder}/{INDEX}", read_body(inp))
            out.write(f"I {sha} {size}\n".encode())
            out.flush()

    def _object_in(self, chunks: Iterator[bytes], hint: str, mtime_ns: int) -> tuple[str, int, bool]:
        """As ``FilestoreObjects._copy_in`` does locally: written under a temporary name in the hinted sub-folder,
        hashed as it is written, then settled under its content's SHA-1 (``settle_object``)."""
        sub = hint[:2] if len(hint) == 40 and set(hint) <= _HEX else "00"
        tmp = f"{self.objects}/{sub}/.in-{os.urandom(8).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, OBJECT_MODE)
        os.fchmod(fd, OBJECT_MODE)
        digest, size = hashlib.sha1(), 0
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
        sha1 = digest.hexdigest()
        return sha1, size, settle_object(self.objects, tmp, sha1, size, mtime_ns)

    def put_dump(self, artifact_id: str, inp: IO[bytes], out: IO[bytes]) -> None:
        dump = f"{self.folder(artifact_id)}/{DUMP_DIR}"
        os.mkdir(dump, DIR_MODE)
        os.chmod(dump, DIR_MODE)
        while (header := read_header(inp)) is not None:
            name = plain(header[2])
            sha, size = write_private(f"{dump}/{name}", read_body(inp))
            out.write(f"D {sha} {size} {name}\n".encode())
        out.flush()

    def put_file(self, artifact_id: str, name: str, inp: IO[bytes], out: IO[bytes]) -> None:
        if name not in (CONTRACT, INDEX):
            raise ArtifactError(f"{name!r} is not a file of an artifact")
        sha, size = write_private(f"{self.folder(artifact_id)}/{name}", iter(lambda: inp.read(CHUNK), b""))
        out.write(f"{sha} {size}\n".encode())

    def get_file(self, artifact_id: str, name: str, out: IO[bytes]) -> None:
        if name not in (CONTRACT, INDEX):
            raise ArtifactError(f"{name!r} is not a file of an artifact")
        try:
            with open(f"{self.folder(artifact_id)}/{name}", "rb") as fh:
                shutil.copyfileobj(fh, out, CHUNK)
        except FileNotFoundError:
            raise ArtifactError(f"artifact {artifact_id}: {name} is missing") from None

    def get_dump(self, artifact_id: str, out: IO[bytes]) -> None:
        dump = f"{self.folder(artifact_id)}/{DUMP_DIR}"
        if not os.path.isdir(dump):
            raise ArtifactError(f"artifact {artifact_id}: db_dump directory {dump} is missing")
        for name in sorted(os.listdir(dump)):
            with open(f"{dump}/{name}", "rb") as fh:
                send_file(out, fh, os.fstat(fh.fileno()).st_mtime_ns, "-", name)
        out.write(b"E\n")

    def get_objects(self, artifact_id: str, out: IO[bytes]) -> None:
        """Every file of the artifact's index, as the object it names, with the object's mtime and SHA-1."""
        with self.lock(exclusive=False), open(f"{self.folder(artifact_id)}/{INDEX}", "rb") as index:
            for raw in index:
                sha1, _size, rel = raw.decode().rstrip("\n").split(" ", 2)
                try:
                    fh = open(f"{self.objects}/{sha1[:2]}/{sha1}", "rb")  # noqa: SIM115 (closed below)
                except FileNotFoundError:
                    raise ArtifactError(f"artifact {artifact_id}: filestore object {sha1} ({rel}) is missing") from None
                with fh:
                    send_file(out, fh, os.fstat(fh.fileno()).st_mtime_ns, sha1, rel)
        out.write(b"E\n")

    def verify(self, artifact_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """The checks of ``LocalArtifactStore.verify`` over the stored bytes (the dump's table of contents, which
        needs pg_restore, is read by the caller)."""
        if not os.path.isfile(f"{self.folder(artifact_id)}/{CONTRACT}"):
            raise ArtifactError(f"artifact {artifact_id}: manifest unreadable (no {CONTRACT})")
        full, deep = bool(request.get("full", True)), bool(request.get("deep", False))
        result: dict[str, Any] = {"mode": "deep" if deep else "full" if full else "sizes"}
        if request.get("db_dump") is not None:
            result["db_dump"] = self.verify_dump(artifact_id, request["db_dump"], full)
        if request.get("filestore") is not None:
            result["filestore"] = self.verify_filestore(artifact_id, request["filestore"], full, deep)
        return result

    def verify_dump(self, artifact_id: str, db_dump: dict[str, Any], full: bool) -> dict[str, Any]:
        """Every file the contract names there and no other; with ``full`` each one hashed again (the largest
        first, two at a time: hashlib lets go of the interpreter lock), otherwise sizes only."""
        path = f"{self.folder(artifact_id)}/{DUMP_DIR}"
        if os.path.normpath(str(db_dump["path"])) != os.path.normpath(path):
            raise ArtifactError(f"artifact {artifact_id}: db_dump path {db_dump['path']} is not inside the artifact")
        if not os.path.isdir(path):
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
                got = dict(zip(names, pool.map(lambda n: hash_file(f"{path}/{n}"), names), strict=True))
        else:
            got = {n: (want[n][0], os.stat(f"{path}/{n}").st_size) for n in want}
        for name, (sha, size) in sorted(want.items()):
            if got[name] != (sha, size):
                raise ArtifactError(f"artifact {artifact_id}: db_dump checksum mismatch in {name} (expected sha256"
                              f" {sha[:12]}… {size} bytes, found {got[name][0][:12]}… {got[name][1]} bytes)")
        digest, total = dump_digest([(n, s, z) for n, (s, z) in got.items()])
        if digest != db_dump["sha256"] or total != int(db_dump["size_bytes"]):
            raise ArtifactError(f"artifact {artifact_id}: db_dump digest mismatch (expected sha256"
                          f" {str(db_dump['sha256'])[:12]}… {db_dump['size_bytes']} bytes, found {digest[:12]}…"
                          f" {total} bytes)")
        return {"sha256": digest, "size_bytes": total, "files": len(want), "hashed": full, "ok": True}

    def verify_filestore(self, artifact_id: str, filestore: dict[str, Any], full: bool,
                         deep: bool) -> dict[str, Any]:
        """The index against the contract; with ``full`` its checksum and every object it names present with its
        size; with ``deep`` every object hashed again too (two at a time)."""
        index = f"{self.folder(artifact_id)}/{INDEX}"
        if os.path.normpath(str(filestore["path"])) != os.path.normpath(index):
            raise ArtifactError(f"artifact {artifact_id}: filestore index {filestore['path']} is not inside the"
                                " artifact")
        if not os.path.isfile(index):
            raise ArtifactError(f"artifact {artifact_id}: filestore index {index} is missing")
        if not full:
            size = os.stat(index).st_size
            if size != int(filestore.get("index_bytes") or size):
                raise ArtifactError(f"artifact {artifact_id}: filestore index size {size} differs from the contract")
            return {"index_bytes": size, "objects_checked": 0, "ok": True}
        sha, size = hash_file(index)
        if sha != filestore["sha256"]:
            raise ArtifactError(f"artifact {artifact_id}: filestore index checksum mismatch (expected sha256"
                          f" {str(filestore['sha256'])[:12]}…, found {sha[:12]}…)")
        count = total = 0
        named: dict[str, str] = {}
        with self.lock(exclusive=False), open(index, "rb") as fh:
            for raw in fh:
                sha1, want_size, rel = raw.decode().rstrip("\n").split(" ", 2)
                try:
                    got = os.stat(f"{self.objects}/{sha1[:2]}/{sha1}").st_size
                except FileNotFoundError:
                    raise ArtifactError(f"artifact {artifact_id}: filestore object {sha1} ({rel}) is missing") from None
                if got != int(want_size):
                    raise ArtifactError(f"artifact {artifact_id}: filestore object {sha1} ({rel}) has {got} bytes, the"
                                  f" index says {want_size}")
                named.setdefault(sha1, rel)
                count += 1
                total += int(want_size)
            if deep:
                # Two threads: hashlib lets go of the interpreter lock while it hashes a 1 MiB chunk, and the
                # objects are usually in the page cache (just written by the backups), so both cores hash.
                objects = self.objects
                with ThreadPoolExecutor(max_workers=2) as pool:
                    sums = pool.map(lambda s: hash_file(f"{objects}/{s[:2]}/{s}", "sha1")[0], named)
                    pairs = list(zip(named.items(), sums, strict=True))
                for (sha1, rel), got_sha1 in pairs:
                    if got_sha1 != sha1:
                        raise ArtifactError(f"artifact {artifact_id}: filestore object {sha1} ({rel}) is corrupt: its"
                                      f" content hashes to {got_sha1}")
        if count != int(filestore["file_count"]) or total != int(filestore["size_bytes"]):
            raise ArtifactError(f"artifact {artifact_id}: filestore index holds {count} files / {total} bytes, the"
                          f" contract says {filestore['file_count']} / {filestore['size_bytes']}")
        return {"index_sha256": sha, "index_bytes": size, "objects_checked": count, "bytes": total,
                "rehashed_objects": deep, "ok": True}

    def artifact_ids(self) -> list[str]:
        if not os.path.isdir(self.root):
            return []
        return sorted(e.name for e in os.scandir(self.root)
                      if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))

    def usage(self, artifact_id: str) -> tuple[int, float]:
        total, newest = 0, 0.0
        for base, _dirs, files in os.walk(self.folder(artifact_id)):
            for path in (base, *(os.path.join(base, name) for name in files)):
                try:
                    st = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                total += st.st_size if path != base else 0
                newest = max(newest, st.st_mtime)
        return total, newest

    def remove(self, artifact_id: str) -> bool:
        trash = f"{self.root}/.trash-{plain(artifact_id)}-{os.urandom(4).hex()}"
        try:
            os.rename(self.folder(artifact_id), trash)
        except FileNotFoundError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def live(self, without: frozenset[str] = frozenset()) -> set[str]:
        live: set[str] = set()
        for name in self.artifact_ids():
            if name in without:
                continue
            index = f"{self.root}/{name}/{INDEX}"
            if os.path.isfile(index):
                with open(index, "rb") as fh:
                    live.update(raw[:40].decode() for raw in fh)
        return live

    def freed(self, going: frozenset[str]) -> tuple[int, int]:
        live = self.live(without=going)
        count = total = 0
        if os.path.isdir(self.objects):
            for entry in os.scandir(self.objects):
                if entry.is_dir(follow_symlinks=False):
                    for obj in os.scandir(entry.path):
                        if obj.name not in live:
                            count += 1
                            total += obj.stat(follow_symlinks=False).st_size
        return count, total

    def gc(self) -> dict[str, int]:
        removed = removed_bytes = 0
        with self.lock(exclusive=True):
            for entry in os.scandir(self.root):
                if entry.name.startswith(".trash-"):
                    shutil.rmtree(entry.path, ignore_errors=True)
            live = self.live()
            if os.path.isdir(self.objects):
                for entry in os.scandir(self.objects):
                    if entry.name.startswith(".in-"):  # a copy cut short, where older code wrote them
                        os.unlink(entry.path)
                        continue
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    for obj in os.scandir(entry.path):
                        if obj.name.startswith(".in-"):  # a copy cut short: never an object
                            os.unlink(obj.path)
                        elif obj.name not in live:
                            removed_bytes += obj.stat(follow_symlinks=False).st_size
                            os.unlink(obj.path)
                            removed += 1
        return {"removed_objects": removed, "removed_bytes": removed_bytes, "live_objects": len(live)}

    def free(self) -> int:
        path = self.root
        while not os.path.exists(path):
            path = os.path.dirname(path)
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize


def receive_filestore(dest: str, inp: IO[bytes], out: IO[bytes]) -> None:
    """The landing side of ``get-objects``, run on a process host (the SSH store relays the store's stream to it
    through the worker): each record written under ``dest`` at its name, hashed as it is written and put in place
    only when its SHA-1 is the object's (the record's tag), with the object's mtime; ``<files> <bytes>`` answered
    at the end. Only the end mark ends it: a stream that stops before (the store's side failed, a connection
    dropped) is refused, whatever had arrived."""
    os.makedirs(dest, DIR_MODE, exist_ok=True)
    made: set[str] = set()
    count = total = 0
    while (line := inp.readline()) != b"E\n":
        if not line:
            raise ArtifactError(f"stream cut short after {count} files: no end mark")
        kind, mtime, sha1, rel = line.decode().rstrip("\n").split(" ", 3)
        if kind != "F" or len(sha1) != 40 or not set(sha1) <= _HEX:
            raise ArtifactError(f"stream out of step: {line[:60]!r}")
        if rel.startswith("/") or not rel or ".." in rel.split("/"):
            raise ArtifactError(f"refusing to write {rel!r} outside {dest}")
        parent = rel.rpartition("/")[0]
        if parent and parent not in made:
            os.makedirs(f"{dest}/{parent}", DIR_MODE, exist_ok=True)
            made.add(parent)
        final = f"{dest}/{rel}"
        tmp = f"{dest}/{parent + '/' if parent else ''}.in-{os.urandom(8).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        digest, size = hashlib.sha1(), 0
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in read_body(inp):
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            if digest.hexdigest() != sha1:
                raise ArtifactError(f"{rel} arrived hashing to {digest.hexdigest()}, not {sha1} (its object)")
            if os.path.lexists(final):
                raise ArtifactError(f"{rel} is already there")
            os.utime(tmp, ns=(int(mtime), int(mtime)))
            os.rename(tmp, final)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        count, total = count + 1, total + size
    out.write(f"{count} {total}\n".encode())


def main(argv: list[str]) -> int:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    os.umask(0o077)
    try:
        if not os.path.isabs(argv[0]):
            raise ArtifactError(f"root {argv[0]!r} is not an absolute path")
        store, command, args = StoreFolder(argv[0]), argv[1], argv[2:]
        if command == "receive-filestore":  # on a process host: argv[0] is the filestore folder, not a store
            receive_filestore(argv[0], inp, out)
        elif command == "ensure":
            store.ensure(args[0])
        elif command == "allocate":
            store.allocate(args[0], args[1])
        elif command == "ingest":
            store.ingest(args[0], inp, out)
        elif command == "put-dump":
            store.put_dump(args[0], inp, out)
        elif command == "put-file":
            store.put_file(args[0], args[1], inp, out)
        elif command == "get-file":
            store.get_file(args[0], args[1], out)
        elif command == "get-dump":
            store.get_dump(args[0], out)
        elif command == "get-objects":
            store.get_objects(args[0], out)
        elif command == "verify":
            out.write(json.dumps(store.verify(args[0], json.load(inp))).encode())
        elif command == "list":
            out.write("".join(f"{name}\n" for name in store.artifact_ids()).encode())
        elif command == "usage":
            out.write(json.dumps(store.usage(args[0])).encode())
        elif command == "remove":
            out.write(b"1" if store.remove(args[0]) else b"0")
        elif command == "live":  # the artifacts to leave out, one a line on standard input
            out.write("".join(f"{sha1}\n" for sha1 in sorted(store.live(frozenset(inp.read().decode().split()))))
                      .encode())
        elif command == "freed":
            out.write(json.dumps(store.freed(frozenset(inp.read().decode().split()))).encode())
        elif command == "gc":
            out.write(json.dumps(store.gc()).encode())
        elif command == "free":
            out.write(str(store.free()).encode())
        elif command == "has-objects":
            out.write(b"1" if os.path.isdir(store.objects) else b"0")
        else:
            raise ArtifactError(f"unknown command {command!r}")
        out.flush()
    except ArtifactError as exc:
        sys.stderr.write(f"{exc}\n")
        return REFUSED
    except OSError as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
