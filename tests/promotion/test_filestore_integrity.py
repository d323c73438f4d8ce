"""A write into production's live filestore cannot reach the store, nor ship to the next production.

The incident: restores hard-linked the store's objects into the live filestore, so 16 bytes written in place
into one production file changed the object that 19 artifacts named; the backups trusted files by name and
size, verification checked sizes, and the next promotion shipped the corrupt bytes although staging's copy
was intact. Here the same write, into blue's file, then a promotion: green gets staging's bytes, the blue
backup records what blue's file really holds, and no stored object or earlier artifact changes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.cli.sandbox import PROD, STAGING, Sandbox

pytestmark = pytest.mark.slow


def _filestores(box: Sandbox) -> tuple[Path, Path]:
    res = box.resources()
    blue, staging = res["ops_db"].active_deployment(PROD), res["ops_db"].active_deployment(STAGING)
    host = res["odoo_host"]
    return host.filestore_dir(blue.data_dir, blue.served_db), host.filestore_dir(staging.data_dir, staging.served_db)


def _store_state(box: Sandbox) -> tuple[dict[str, str], dict[str, bytes]]:
    """Every object's content hash by name, and every artifact's index."""
    store = box.resources()["artifact_store"]
    objects = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in store.objects.rglob("*")
               if p.is_file() and not p.name.startswith(".")}
    indexes = {p.parent.name: p.read_bytes() for p in Path(store.root).glob("*/filestore.index")}
    return objects, indexes


def _write_in_place(path: Path) -> bytes:
    os.chmod(path, 0o644)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\xde\xad\xbe\xef" * 4, 64)  # 16 bytes, same size, same name
    finally:
        os.close(fd)
    return path.read_bytes()


def _promote_and_check(box: Sandbox, h: Any, rel: str, corrupt: bytes) -> None:
    _, staging_fs = _filestores(box)
    objects_before, indexes_before = _store_state(box)
    code, outcome, message = h.promote()
    assert code == 0, message
    assert outcome is not None and outcome.status == "success"
    green_fs, _ = _filestores(box)  # green is production now
    assert (green_fs / rel).read_bytes() == (staging_fs / rel).read_bytes()
    assert hashlib.sha1((green_fs / rel).read_bytes()).hexdigest() == rel.rsplit("/", 1)[1]
    objects_after, indexes_after = _store_state(box)
    assert all(name == digest for name, digest in objects_after.items())  # every object holds its name's content
    assert {k: objects_after.get(k) for k in objects_before} == {k: k for k in objects_before}
    assert {k: indexes_after.get(k) for k in indexes_before} == indexes_before  # earlier artifacts unchanged
    store = box.resources()["artifact_store"]
    blue_lines = {r: sha1 for sha1, _size, r in store.iter_index(outcome.blue_backup_id)}
    assert blue_lines[rel] == hashlib.sha1(corrupt).hexdigest()  # the rollback target says what blue held


def test_a_write_into_blues_filestore_does_not_ship(haproxy_box: Sandbox, h: Any) -> None:
    blue_fs, staging_fs = _filestores(haproxy_box)
    rel = next(str(p.relative_to(blue_fs)) for p in sorted(blue_fs.rglob("*")) if p.is_file() and len(p.name) == 40)
    assert (staging_fs / rel).read_bytes() == (blue_fs / rel).read_bytes()
    _promote_and_check(haproxy_box, h, rel, _write_in_place(blue_fs / rel))
    # production is now a restore from the store: the same write into it changes a copy, not the object
    blue_fs, _ = _filestores(haproxy_box)
    _promote_and_check(haproxy_box, h, rel, _write_in_place(blue_fs / rel))


def test_a_write_through_a_hard_link_of_an_older_restore_does_not_ship(haproxy_box: Sandbox, h: Any) -> None:
    """Production restored before this fix shares its files' inodes with the objects: the write does change the
    object. Staging's intact copy is hashed at the snapshot (its mtime is not the object's any more), the
    object gets its bytes back, and verification before the restore would refuse anything else."""
    code, _, message = h.promote()
    assert code == 0, message
    blue_fs, _ = _filestores(haproxy_box)
    rel = next(str(p.relative_to(blue_fs)) for p in sorted(blue_fs.rglob("*")) if p.is_file() and len(p.name) == 40)
    obj = haproxy_box.resources()["artifact_store"].object_path(rel.rsplit("/", 1)[1])
    (blue_fs / rel).unlink()
    os.link(obj, blue_fs / rel)  # what materialize_filestore used to do
    os.chmod(obj, 0o644)
    corrupt = _write_in_place(blue_fs / rel)
    assert obj.read_bytes() == corrupt
    code, outcome, message = h.promote()
    assert code == 0, message
    assert outcome is not None
    green_fs, staging_fs = _filestores(haproxy_box)
    assert (green_fs / rel).read_bytes() == (staging_fs / rel).read_bytes()
    assert hashlib.sha1(obj.read_bytes()).hexdigest() == obj.name
    objects, _ = _store_state(haproxy_box)
    assert all(name == digest for name, digest in objects.items())
