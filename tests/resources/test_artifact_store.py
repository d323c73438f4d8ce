"""The artifact store: content-addressed filestore, restore by copy, verification, deletion with GC.

Real files, a real pg_dump/pg_restore against the machine's PostgreSQL; nothing mocked.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from promote_pipeline.promotion import settings
from resources.artifact_store import ArtifactError, LocalArtifactStore, dump_digest
from resources.odoo_host import DirectoryHasher, LocalOdooHost

from ..conftest import backup, contract, dump_source, odoo_file

DSN_REF = "PROMOTE_TEST_STORE_DSN"


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(root=str(tmp_path / "artifacts"), create_root=True)


def test_a_missing_root_is_refused_unless_the_settings_say_to_create_it(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted" / "artifacts"
    refusing = LocalArtifactStore(root=str(missing))
    with pytest.raises(ArtifactError, match="^artifact_root .* does not exist: create it, or set create_artifact_root"):
        refusing.allocate(refusing.new_artifact_id("env", "blue"))
    with pytest.raises(ArtifactError, match="does not exist"):
        refusing.collect_garbage()
    assert not missing.parent.exists()  # nothing made on the way
    creating = LocalArtifactStore(root=str(missing), create_root=True)
    assert creating.allocate(creating.new_artifact_id("env", "blue")).is_dir()
    assert oct(missing.stat().st_mode & 0o777) == oct(0o700)


def test_second_backup_of_an_unchanged_filestore_copies_nothing(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "fs"
    for i in range(30):
        odoo_file(src, os.urandom(1000 + i))
    first_id, first = backup(store, src)
    assert first["file_count"] == 30 and first["new_objects"] == 30
    second_id, second = backup(store, src)
    assert second["new_objects"] == 0 and second["new_bytes"] == 0
    assert store.index_path(first_id).read_bytes() == store.index_path(second_id).read_bytes()
    for sha1, size, rel in store.iter_index(first_id):
        obj = store.object_path(sha1)
        assert obj.stat().st_size == size and rel.endswith(sha1)
        assert obj.stat().st_mode & 0o777 == 0o400  # read-only (never edited in place), owner-only


def test_a_file_whose_name_is_not_its_content_is_stored_by_content(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "fs"
    liar = odoo_file(src, b"actual content", name="ab" + "0" * 38)
    (src / "checklist").mkdir()
    (src / "checklist" / "notes.txt").write_bytes(b"not content-addressed")
    artifact_id, facts = backup(store, src)
    assert facts["renamed_by_content"] == 2
    lines = {rel: sha1 for sha1, _size, rel in store.iter_index(artifact_id)}
    assert lines[liar] == hashlib.sha1(b"actual content").hexdigest()
    dest = tmp_path / "restored"
    store.materialize_filestore(artifact_id, dest)
    assert (dest / liar).read_bytes() == b"actual content"
    assert (dest / "checklist" / "notes.txt").read_bytes() == b"not content-addressed"


def test_restore_copies_the_objects(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "fs"
    rels = [odoo_file(src, os.urandom(5000)) for _ in range(10)]
    artifact_id, facts = backup(store, src)
    dest = tmp_path / "green"
    result = store.materialize_filestore(artifact_id, dest)
    assert sum(result[k] for k in ("reflinked", "kernel_copied", "copied")) == 10
    assert result["bytes"] == facts["size_bytes"]
    for rel in rels:
        obj = store.object_path(rel.rsplit("/", 1)[1])
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
        assert (dest / rel).stat().st_ino != obj.stat().st_ino  # a copy, never a link to the object
        assert (dest / rel).stat().st_mtime_ns == obj.stat().st_mtime_ns  # so the next backup can trust it
    store.verify_filestore(artifact_id, contract(store, artifact_id, facts), full=True, deep=True)


def test_delete_keeps_objects_another_artifact_references(store: LocalArtifactStore, tmp_path: Path) -> None:
    only_a, shared, only_b = b"only in a", b"in both", b"only in b"
    fs_a, fs_b = tmp_path / "a", tmp_path / "b"
    for content in (only_a, shared):
        odoo_file(fs_a, content)
    for content in (shared, only_b):
        odoo_file(fs_b, content)
    a_id, _ = backup(store, fs_a)
    b_id, b_facts = backup(store, fs_b)
    assert b_facts["new_objects"] == 1  # the shared file was already there

    def present(content: bytes) -> bool:
        return store.object_path(hashlib.sha1(content).hexdigest()).exists()

    dest = tmp_path / "green_from_a"
    store.materialize_filestore(a_id, dest)
    gc = store.delete(a_id)
    assert gc["removed_objects"] == 1
    assert not present(only_a) and present(shared) and present(only_b)
    assert not store.folder(a_id).exists()
    store.verify_filestore(b_id, contract(store, b_id, b_facts), full=True, deep=True)
    # a filestore restored from the deleted artifact keeps its files (they are copies)
    assert sorted(p.read_bytes() for p in dest.rglob("*") if p.is_file()) == sorted([only_a, shared])
    store.delete(b_id)
    assert not present(shared) and not present(only_b)
    assert not any(p.is_file() for p in store.objects.rglob("*"))


def test_garbage_collection_waits_for_a_backup_in_progress(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "fs"
    odoo_file(src, b"x" * 100)
    a_id, _ = backup(store, src)
    deleted = threading.Event()
    [(sha1, _size, _rel)] = store.iter_index(a_id)
    with store._objects_lock(exclusive=False):  # what an ingest or a restore holds
        worker = threading.Thread(target=lambda: (store.delete(a_id), deleted.set()), daemon=True)
        worker.start()
        # Not "nothing happened within a pause" (true of a thread that is merely slow): the kernel shows the
        # collection blocked on its exclusive lock, behind ours.
        assert _waits_for_exclusive_lock(Path(store.root) / ".objects.lock", timeout=60)
        assert not deleted.is_set() and store.object_path(sha1).exists()
    worker.join(timeout=60)
    assert deleted.is_set() and not store.object_path(sha1).exists()


def _waits_for_exclusive_lock(lock_file: Path, timeout: float) -> bool:
    """A process of ours is queued in /proc/locks ("->") for an exclusive flock on ``lock_file``."""
    inode, deadline = os.stat(lock_file).st_ino, time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in Path("/proc/locks").read_text().splitlines():
            # "N: -> FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<inode> 0 EOF" is a request waiting for the lock
            waiting = line.split("->", 1)[1].split() if "->" in line else []
            if (waiting[:3] == ["FLOCK", "ADVISORY", "WRITE"] and int(waiting[3]) == os.getpid()
                    and int(waiting[4].rsplit(":", 1)[1]) == inode):
                return True
        time.sleep(0.01)
    return False


def test_an_index_that_escapes_the_filestore_is_refused(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "fs"
    odoo_file(src, b"payload")
    artifact_id, _ = backup(store, src)
    index = store.index_path(artifact_id)
    sha1, size, _rel = next(store.iter_index(artifact_id))
    index.write_text(f"{sha1} {size} ../../escaped\n")
    with pytest.raises(ArtifactError, match="outside the filestore"):
        store.materialize_filestore(artifact_id, tmp_path / "dest")


# -- the database dump ------------------------------------------------------------------------------
@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(DSN_REF, settings.default_server_dsn())
    with dump_source("store_test", rows=50000) as name:
        yield name


def test_dump_is_hashed_while_written_verified_and_restorable(store: LocalArtifactStore, database: str,
                                                              tmp_path: Path) -> None:
    host = LocalOdooHost(command_template="true", run_dir=str(tmp_path / "run"))
    artifact_id = store.new_artifact_id("env_t", "green")
    store.allocate(artifact_id)
    store.write_contract(artifact_id, "{}")
    with store.receiving_dump(artifact_id) as into:  # the local store's dump seam: its own folder
        assert into == store.dump_dir(artifact_id)
        files = host.dump_database(DSN_REF, database, into)
    assert {name for name, _, _ in files} == {p.name for p in store.dump_dir(artifact_id).iterdir()}
    for name, sha, size in files:  # the streamed checksums are the files' checksums
        data = (store.dump_dir(artifact_id) / name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (sha, size)
    digest, total = dump_digest(files)
    db_dump = {"path": str(store.dump_dir(artifact_id)), "sha256": digest, "size_bytes": total,
               "files": [{"name": n, "sha256": s, "size_bytes": z} for n, s, z in files]}
    result = store.verify_dump(artifact_id, db_dump, full=True)
    assert result["ok"] and result["toc_entries"]

    with store.readable_dump(artifact_id, db_dump) as dump:  # read where it lies, no copy
        assert dump == store.dump_dir(artifact_id)
        host.restore_database(DSN_REF, f"{database}_r", dump)
    with host.connect(DSN_REF, f"{database}_r") as conn:
        assert conn.execute("SELECT count(*) FROM big").fetchone() == (50000,)

    largest = max(store.dump_dir(artifact_id).iterdir(), key=lambda p: p.stat().st_size)
    with largest.open("r+b") as fh:  # what the corrupt-artifact drill does
        fh.seek(largest.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactError, match=f"checksum mismatch in {largest.name}"):
        store.verify_dump(artifact_id, db_dump, full=True)


def test_directory_hasher_follows_a_growing_file_and_catches_a_rewrite(tmp_path: Path) -> None:
    folder = tmp_path / "dump"
    hasher = DirectoryHasher(folder).start()
    folder.mkdir()
    chunks = [os.urandom(300_000) for _ in range(8)]
    with (folder / "data.dat").open("wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            fh.flush()
            time.sleep(0.03)
    (folder / "toc.dat").write_bytes(b"toc")
    time.sleep(0.1)
    with (folder / "toc.dat").open("r+b") as fh:  # rewritten in place, same size: must be hashed again
        time.sleep(0.01)
        fh.write(b"TOC")
    result = dict((name, (sha, size)) for name, sha, size in hasher.finish())
    assert result["data.dat"] == (hashlib.sha256(b"".join(chunks)).hexdigest(), 8 * 300_000)
    assert result["toc.dat"] == (hashlib.sha256(b"TOC").hexdigest(), 3)


def _modes(root: Path) -> dict[str, int]:
    """Mode of every folder and file under ``root`` (the root itself as '.')."""
    found = {".": root.stat().st_mode & 0o777}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = path.lstat().st_mode & 0o777
    return found


def test_artifacts_are_owner_only_whatever_the_umask(store: LocalArtifactStore, database: str,
                                                     tmp_path: Path) -> None:
    # A dump holds password hashes and database.secret: no umask may leave any of it readable by others.
    previous = os.umask(0)
    try:
        host = LocalOdooHost(command_template="true", run_dir=str(tmp_path / "run"))
        src = tmp_path / "filestore"
        rel = odoo_file(src, b"attachment content")
        artifact_id, facts = backup(store, src)
        host.dump_database(DSN_REF, database, store.dump_dir(artifact_id))
    finally:
        os.umask(previous)
    modes = _modes(Path(store.root))
    loose = {name: f"{mode:o}" for name, mode in modes.items() if mode & 0o077}
    assert not loose, loose
    folder = str(store.folder(artifact_id).relative_to(store.root))
    assert modes[folder] == 0o700 and modes[f"{folder}/db"] == 0o700
    assert modes[f"{folder}/artifact.json"] == 0o600 and modes[f"{folder}/filestore.index"] == 0o600
    assert {mode for name, mode in modes.items() if name.startswith(f"{folder}/db/")} == {0o600}
    assert modes[f".objects/{rel}"] == 0o400  # read-only (never edited in place), owner-only
    # The restore copies them out, and the copies are readable by their owner.
    dest = tmp_path / "restored"
    restored = store.materialize_filestore(artifact_id, dest)
    assert sum(n for key, n in restored.items() if key != "bytes") == 1
    assert (dest / rel).read_bytes() == b"attachment content"
    assert contract(store, artifact_id, facts)["file_count"] == 1
    assert store.has_objects() and store.free_bytes() > 0


class _ListedSource:
    """A filestore as ``ingest_filestore_from`` sees one on another host, from a local folder: its listing taken
    now, its fetch made later (by which time files may have gone), or naming a file it was not asked for."""

    name = "elsewhere"
    where = "elsewhere (a local folder)"

    def __init__(self, root: Path, extra: str = "") -> None:
        self.root, self.extra = root, extra
        facts: dict[str, int] = {"skipped_not_regular": 0}
        self.listing = [(rel, size, mtime) for rel, _p, size, mtime in LocalArtifactStore._walk(root, facts)]
        self.skipped = facts["skipped_not_regular"]

    def list_files(self) -> tuple[list[tuple[str, int, int]], int]:
        return self.listing, self.skipped

    @contextmanager
    def fetch(self, rels: Sequence[str]) -> Iterator[Iterator[tuple[str, IO[bytes]]]]:
        def members() -> Iterator[tuple[str, IO[bytes]]]:
            for rel in [*rels, *([self.extra] if self.extra else [])]:
                if (self.root / rel).is_file():
                    with open(self.root / rel, "rb") as fh:
                        yield rel, fh
        yield members()


@pytest.mark.unit
def test_a_file_gone_between_listing_and_fetch_is_left_out_and_counted(tmp_path: Path) -> None:
    src = tmp_path / "filestore"
    rels = [odoo_file(src, os.urandom(100 + i)) for i in range(5)]
    store = LocalArtifactStore(root=str(tmp_path / "store"), create_root=True)
    source = _ListedSource(src)
    (src / rels[2]).unlink()  # Odoo's file GC, after the listing
    artifact_id = store.new_artifact_id("env_t", "blue")
    store.allocate(artifact_id)
    facts = store.ingest_filestore_from(artifact_id, source)
    assert (facts["file_count"], facts["vanished"], facts["fetched_files"]) == (4, 1, 4), facts
    assert [rel for _s, _z, rel in store.iter_index(artifact_id)] == [r for r in sorted(rels) if r != rels[2]]
    # The same index as a local ingest of what is there now.
    local_id, local = backup(store, src)
    assert local["index_sha256"] == facts["index_sha256"]


@pytest.mark.unit
def test_a_file_not_asked_for_in_the_stream_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "filestore"
    rels = [odoo_file(src, os.urandom(100 + i)) for i in range(3)]
    store = LocalArtifactStore(root=str(tmp_path / "store"), create_root=True)
    artifact_id = store.new_artifact_id("env_t", "blue")
    store.allocate(artifact_id)
    with pytest.raises(ArtifactError, match="arrived but was not asked for"):
        store.ingest_filestore_from(artifact_id, _ListedSource(src, extra=rels[0]))
    assert not store.index_path(artifact_id).exists()
