"""A write into a live filestore cannot change a stored object, and no check trusts a file by its name and size.

The defect these guard: restores hard-linked the store's objects into green's filestore, a backup skipped a file
whose name was a SHA-1 with a stored object of the same size, and verification before a restore checked sizes
only. One in-place write into a live file changed the object, and every artifact naming it, unnoticed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from resources.artifact_store import ArtifactError, LocalArtifactStore
from resources.file_copy import CopyMethod


def odoo_file(root: Path, content: bytes) -> str:
    sha1 = hashlib.sha1(content).hexdigest()
    (root / sha1[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha1[:2] / sha1).write_bytes(content)
    return f"{sha1[:2]}/{sha1}"


def write_in_place(path: Path, data: bytes, offset: int = 100) -> None:
    """What the incident did: overwrite bytes of an existing file, same size, same name."""
    os.chmod(path, 0o644)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def backup(store: LocalArtifactStore, src: Path) -> tuple[str, dict[str, object]]:
    artifact_id = store.new_artifact_id("env_t", "blue")
    store.allocate(artifact_id)
    store.write_contract(artifact_id, "{}")
    return artifact_id, store.ingest_filestore(artifact_id, src)


def contract(store: LocalArtifactStore, artifact_id: str, facts: dict[str, object]) -> dict[str, object]:
    return {"path": str(store.index_path(artifact_id)), "sha256": facts["index_sha256"],
            "size_bytes": facts["size_bytes"], "file_count": facts["file_count"], "index_bytes": facts["index_bytes"]}


def all_objects_intact(store: LocalArtifactStore) -> bool:
    objects = [p for p in store.objects.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return all(hashlib.sha1(p.read_bytes()).hexdigest() == p.name for p in objects)


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(root=str(tmp_path / "artifacts"), create_root=True)


def test_a_write_into_a_restored_file_leaves_the_object_alone(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "staging"
    rel = odoo_file(src, os.urandom(4096))
    artifact_id, facts = backup(store, src)
    index_before = store.index_path(artifact_id).read_bytes()
    live = tmp_path / "prod"
    store.materialize_filestore(artifact_id, live)
    write_in_place(live / rel, b"X" * 16)
    assert all_objects_intact(store)
    assert store.index_path(artifact_id).read_bytes() == index_before
    store.verify_filestore(artifact_id, contract(store, artifact_id, facts), full=True, deep=True)


def test_a_backup_hashes_a_file_whose_mtime_moved_on(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "staging"
    rels = [odoo_file(src, os.urandom(4096)) for _ in range(5)]
    artifact_id, _ = backup(store, src)
    live = tmp_path / "prod"
    store.materialize_filestore(artifact_id, live)
    _, untouched = backup(store, live)
    assert untouched["rehashed_by_stat"] == 0 and untouched["new_objects"] == 0  # restored files are trusted
    write_in_place(live / rels[0], b"X" * 16)
    corrupt = (live / rels[0]).read_bytes()
    prod_id, facts = backup(store, live)
    assert facts["rehashed_by_stat"] == 1 and facts["renamed_by_content"] == 1 and facts["new_objects"] == 1
    lines = {rel: sha1 for sha1, _size, rel in store.iter_index(prod_id)}
    assert lines[rels[0]] == hashlib.sha1(corrupt).hexdigest()  # the index says what the file really holds
    assert all(lines[rel] == rel.rsplit("/", 1)[1] for rel in rels[1:])
    assert all_objects_intact(store)


def test_verification_before_a_restore_finds_a_corrupt_object(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "staging"
    rel = odoo_file(src, os.urandom(4096))
    artifact_id, facts = backup(store, src)
    sha1 = rel.rsplit("/", 1)[1]
    write_in_place(store.object_path(sha1), b"X" * 16)  # e.g. through a hard link an older restore made
    store.verify_filestore(artifact_id, contract(store, artifact_id, facts), full=True)  # sizes: still equal
    with pytest.raises(ArtifactError, match=rf"filestore object {sha1} \({rel}\) is corrupt"):
        store.verify_filestore(artifact_id, contract(store, artifact_id, facts), full=True, deep=True)


def test_a_backup_of_an_intact_copy_repairs_a_corrupt_object(store: LocalArtifactStore, tmp_path: Path) -> None:
    """Staging's own copy was intact in the incident: backing it up must store its bytes, not trust the object."""
    src = tmp_path / "staging"
    content = os.urandom(4096)
    rel = odoo_file(src, content)
    backup(store, src)
    sha1 = rel.rsplit("/", 1)[1]
    write_in_place(store.object_path(sha1), b"X" * 16)
    artifact_id, facts = backup(store, src)
    assert facts["rehashed_by_stat"] == 1
    assert store.object_path(sha1).read_bytes() == content
    store.verify_filestore(artifact_id, contract(store, artifact_id, facts), full=True, deep=True)


def test_copy_method_falls_back_and_copies_every_byte(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 << 20))
    method = CopyMethod()
    method.copy(str(src), str(tmp_path / "a"), src.stat().st_size)
    method.reflink = method.kernel_copy = False  # as on a filesystem that has neither
    method.copy(str(src), str(tmp_path / "b"), src.stat().st_size)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == src.read_bytes()
    assert method.counts["copied"] == 1 and sum(method.counts.values()) == 2
