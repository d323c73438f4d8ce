"""The artifact store on a host reached over SSH (resources/ssh_artifact_store.py), against the test hosts: the
promoter (the root namespace) backs up into a store in ``worker``'s namespace through worker's sshd, restores
from it, and the store's checks run there. The dump comes from the suite's own PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promote_pipeline.cli.sandbox import PROD, STAGING, Sandbox
from promote_pipeline.promotion import settings
from resources import artifact_folder
from resources.artifact_store import ArtifactError, LocalArtifactStore
from resources.filestore_objects import FilestoreObjects, dump_digest
from resources.netns_hosts import HostNetwork
from resources.odoo_host import LocalOdooHost
from resources.ssh_artifact_store import SshArtifactStore

from ..conftest import backup, contract, dump_source, odoo_file

KEY_REF = "PROMOTE_TEST_STORE_SSH_KEY"
DSN_REF = "PROMOTE_TEST_SSH_STORE_DSN"


@pytest.fixture(scope="module")
def client_key(host_network: HostNetwork) -> Iterator[str]:
    """The secret reference of the client key: its text, kept off disk."""
    assert host_network.ssh is not None
    saved = os.environ.get(KEY_REF)
    os.environ[KEY_REF] = host_network.ssh.identity_file.read_text()
    try:
        yield KEY_REF
    finally:
        if saved is None:
            os.environ.pop(KEY_REF, None)
        else:
            os.environ[KEY_REF] = saved


@pytest.fixture
def store(host_network: HostNetwork, client_key: str) -> Iterator[SshArtifactStore]:
    """A store of its own in worker's namespace, its root made by the store itself (create_root)."""
    assert host_network.ssh is not None
    root = host_network.host_dir("worker") / f"store-{secrets.token_hex(4)}" / "artifacts"
    store = SshArtifactStore(root=str(root), create_root=True, host=host_network["worker"].address,
                             user=host_network.ssh.user, identity_ref=client_key,
                             known_hosts_file=str(host_network.ssh.known_hosts))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(DSN_REF, settings.default_server_dsn())
    with dump_source("ssh_store", rows=20000) as name:
        yield name


def test_only_missing_objects_are_sent_and_a_restore_is_byte_identical(store: SshArtifactStore,
                                                                       tmp_path: Path) -> None:
    src = tmp_path / "filestore"
    rels = [odoo_file(src, os.urandom(2000 + i)) for i in range(40)]
    (src / "checklist").mkdir()
    (src / "checklist" / "not-a-sha1").write_bytes(b"named by Odoo's caller, not by content")
    first_id, first = backup(store, src)
    assert first["file_count"] == 41 and first["sent_files"] == 41 and first["new_objects"] == 41
    assert first["renamed_by_content"] == 1
    # Unchanged: the host holds every object with the file's size and mtime, so no attachment goes over the
    # wire; only the file not named by content is sent again (only a name that is an object id can be asked
    # about, as the local store copies it again), and stored under the object it already is.
    other = len(b"named by Odoo's caller, not by content")
    second_id, second = backup(store, src)
    assert (second["sent_files"], second["sent_bytes"], second["new_objects"]) == (1, other, 0), second
    # Two new attachments: exactly those two are sent, with that file.
    rels += [odoo_file(src, b"new one"), odoo_file(src, b"new two")]
    third_id, third = backup(store, src)
    assert (third["sent_files"], third["new_objects"], third["file_count"]) == (3, 2, 43), third
    assert third["sent_bytes"] == len(b"new one") + len(b"new two") + other
    assert list(store.iter_index(first_id)) == list(store.iter_index(second_id))

    result = store.verify_filestore(third_id, contract(store, third_id, third), full=True, deep=True)
    assert result["objects_checked"] == 43 and result["ok"]

    dest = tmp_path / "restored"
    restored = store.materialize_filestore(third_id, dest)
    assert restored["streamed"] == 43
    for rel in [*rels, "checklist/not-a-sha1"]:
        assert (dest / rel).read_bytes() == (src / rel).read_bytes(), rel
    # A restored file carries its object's mtime: backing the restored folder up sends nothing.
    _again_id, again = backup(store, dest)
    assert again["sent_files"] == 1  # the one not named by content, as ever

    # What retention's dry run asks: the objects named, and those freed were these artifacts gone.
    ours = frozenset({first_id, second_id, third_id, _again_id})
    named = {sha1 for sha1, _size, _rel in store.iter_index(third_id)}
    assert store.live_objects(without=frozenset({first_id})) >= named
    assert store.objects_freed_by(ours) == (43, int(str(third["size_bytes"])))
    # Deleting an artifact keeps the objects the others still name; the GC runs on the host.
    for artifact_id in (first_id, second_id, _again_id):
        store.delete(artifact_id)
    assert store.collect_garbage()["removed_objects"] == 0
    gone = store.delete(third_id)
    assert gone["removed_objects"] == 43 and gone["live_objects"] == 0
    assert first_id not in store.artifact_ids()


def test_verification_runs_on_the_host_and_finds_a_corrupt_object(store: SshArtifactStore,
                                                                   tmp_path: Path) -> None:
    src = tmp_path / "filestore"
    rel = odoo_file(src, os.urandom(5000))
    artifact_id, facts = backup(store, src)
    obj = Path(store.root) / ".objects" / rel
    data = bytearray(obj.read_bytes())
    data[100] ^= 0xFF
    obj.chmod(0o600)
    obj.write_bytes(bytes(data))  # same size: only a hash finds it
    obj.chmod(0o400)
    checks = contract(store, artifact_id, facts)
    assert store.verify_filestore(artifact_id, checks, full=True)["ok"]  # presence and size only
    with pytest.raises(ArtifactError, match=f"filestore object {rel[3:]} .* is corrupt") as caught:
        store.verify_filestore(artifact_id, checks, full=True, deep=True)
    assert "\n" not in str(caught.value)
    # A backup of the intact file repairs it (the object's mtime no longer matches: sent, hashed, replaced).
    backup(store, src)
    assert store.verify_filestore(artifact_id, checks, full=True, deep=True)["ok"]


def test_a_dump_goes_to_the_host_and_comes_back_for_pg_restore(store: SshArtifactStore, database: str,
                                                               tmp_path: Path) -> None:
    host = LocalOdooHost(command_template="true", run_dir=str(tmp_path / "run"))
    artifact_id = store.new_artifact_id("env_t", "green")
    store.allocate(artifact_id)
    store.write_contract(artifact_id, '{"artifact": "v1"}')
    with store.receiving_dump(artifact_id) as into:
        spool = into
        files = host.dump_database(DSN_REF, database, into)
    assert not spool.exists()  # the worker's copy is gone once sent
    on_host = store.dump_dir(artifact_id)
    for name, sha, size in files:  # what the host holds is what pg_dump wrote
        data = (on_host / name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (sha, size)
    digest, total = dump_digest(files)
    db_dump = {"path": str(on_host), "sha256": digest, "size_bytes": total,
               "files": [{"name": n, "sha256": s, "size_bytes": z} for n, s, z in files]}
    checked = store.verify_dump(artifact_id, db_dump, full=True)
    assert checked["ok"] and checked["hashed"] and checked["toc_entries"]
    assert store.read_contract(artifact_id) == {"artifact": "v1"}

    with store.readable_dump(artifact_id, db_dump) as dump:
        received = dump
        assert received != on_host and {p.name for p in dump.iterdir()} == {n for n, _, _ in files}
        host.restore_database(DSN_REF, f"{database}_r", dump)
    assert not received.exists()
    with host.connect(DSN_REF, f"{database}_r") as conn:
        assert conn.execute("SELECT count(*), sum(length(payload)) FROM big").fetchone() == (20000, 640000)

    largest = max(on_host.iterdir(), key=lambda p: p.stat().st_size)
    with largest.open("r+b") as fh:  # corrupted on the host
        fh.seek(largest.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactError, match=f"checksum mismatch in {largest.name}"):
        store.verify_dump(artifact_id, db_dump, full=True)
    with pytest.raises(ArtifactError, match=f"db_dump file {largest.name} as received"), \
            store.readable_dump(artifact_id, db_dump):
        pass
    store.delete(artifact_id)


def test_the_store_on_the_host_is_owner_only(store: SshArtifactStore, database: str, tmp_path: Path) -> None:
    previous = os.umask(0)  # the worker's umask does not matter; the host's side sets its own
    try:
        host = LocalOdooHost(command_template="true", run_dir=str(tmp_path / "run"))
        src = tmp_path / "filestore"
        rel = odoo_file(src, b"attachment")
        artifact_id, _facts = backup(store, src)
        with store.receiving_dump(artifact_id) as into:
            host.dump_database(DSN_REF, database, into)
    finally:
        os.umask(previous)
    root = Path(store.root)
    modes = {".": root.stat().st_mode & 0o777}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder) / name
            modes[str(path.relative_to(root))] = path.lstat().st_mode & 0o777
    loose = {name: f"{mode:o}" for name, mode in modes.items() if mode & 0o077}
    assert not loose, loose
    assert root.parent.stat().st_mode & 0o777 == 0o700  # made by create_root: owner-only too
    assert modes["."] == 0o700 and modes[artifact_id] == 0o700 and modes[f"{artifact_id}/db"] == 0o700
    assert modes[f"{artifact_id}/artifact.json"] == 0o600 and modes[f"{artifact_id}/filestore.index"] == 0o600
    assert {m for n, m in modes.items() if n.startswith(f"{artifact_id}/db/")} == {0o600}
    assert modes[f".objects/{rel}"] == 0o400  # read-only and owner-only
    assert store.has_objects() and store.free_bytes() > 0
    store.delete(artifact_id)


def test_an_unknown_or_changed_host_key_is_refused_in_one_line(host_network: HostNetwork, store: SshArtifactStore,
                                                               tmp_path: Path) -> None:
    assert host_network.ssh is not None
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    keys = {ln.split()[0]: ln.split(" ", 1)[1] for ln in host_network.ssh.known_hosts.read_text().splitlines()}
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"{host_network['worker'].address} {keys[host_network['db'].address]}\n")
    for known, words in ((empty, "host key unknown"), (wrong, "host key CHANGED")):
        other = SshArtifactStore(**{**store.model_dump(), "known_hosts_file": str(known)})
        try:
            with pytest.raises(ArtifactError) as caught:
                other.artifact_ids()
        finally:
            other.close()
        message = str(caught.value)
        assert "\n" not in message and words in message and host_network["worker"].address in message, message


def test_a_missing_root_is_refused_unless_create_root(store: SshArtifactStore) -> None:
    missing = str(Path(store.root).parent / "not-mounted" / "artifacts")
    refusing = SshArtifactStore(**{**store.model_dump(), "root": missing, "create_root": False})
    try:
        with pytest.raises(ArtifactError, match="does not exist: create it there, or set the store's create_root"):
            refusing.ensure_root()
    finally:
        refusing.close()
    assert not Path(missing).parent.exists()


def test_what_the_host_refuses_is_one_line_naming_the_store(store: SshArtifactStore) -> None:
    artifact_id = store.new_artifact_id("env_t", "blue")
    store.allocate(artifact_id)
    cases = [(lambda: store.allocate(artifact_id), "FileExistsError"),
             (lambda: store.read_contract(artifact_id), "artifact.json is missing"),
             (lambda: list(store.iter_index("art_none")), "filestore.index is missing"),
             (lambda: store.folder_usage("../etc"), "is not a plain name")]
    no_python = SshArtifactStore(**{**store.model_dump(), "python": "no-such-python3"})
    cases.append((no_python.artifact_ids, "the host's side failed (exit 127)"))
    try:
        for call, words in cases:
            with pytest.raises(ArtifactError) as caught:
                call()
            message = str(caught.value)
            assert "\n" not in message and words in message, message
            assert words == "is not a plain name" or f"root {store.root}" in message, message
    finally:
        no_python.close()
        store.delete(artifact_id)


@pytest.mark.slow
def test_a_promotion_keeps_its_artifacts_on_the_worker_and_restores_green_from_there(
        store: SshArtifactStore, haproxy_box: Sandbox, h: Any, tmp_path: Path) -> None:
    # The promotion's code as it is, given the SSH store in place of the local one: staging's snapshot and
    # production's backup go to worker's store, green is restored from it, and nothing stays on the promoter.
    # The spool is this test's own: the machine's temporary folder also holds other runs' dumps in transit.
    spool = tmp_path / "spool"
    remote = SshArtifactStore(**{**store.model_dump(), "root": str(Path(store.root).parent / "promotions"),
                                 "spool_dir": str(spool)})
    res = haproxy_box.resources()
    staging = res["ops_db"].active_deployment(STAGING)
    staging_fs = res["odoo_host"].filestore_dir(staging.data_dir, staging.served_db)

    def in_transit() -> set[str]:
        return {p.name for pattern in ("promote-dump-*", "promote-restore-*") for p in spool.glob(pattern)}

    try:
        code, outcome, message = h.promote(resource_overrides={"artifact_store": remote})
        assert code == 0, message
        assert outcome is not None and outcome.status == "success" and outcome.green_artifact_id
        assert outcome.blue_backup_id
        assert {outcome.green_artifact_id, outcome.blue_backup_id} <= set(remote.artifact_ids())
        local_root = Path(res["artifact_store"].root)
        assert not (local_root / outcome.green_artifact_id).exists()
        contract = remote.read_contract(outcome.green_artifact_id)
        db_dump, filestore = contract["db_dump"], contract["filestore"]
        assert isinstance(db_dump, dict) and isinstance(filestore, dict)
        assert str(db_dump["path"]).startswith(f"{remote.root}/")
        checked = remote.verify(outcome.green_artifact_id, db_dump, filestore, full=True, deep=True)
        assert checked["mode"] == "deep"
        # Green, now production, holds staging's files byte for byte.
        green = res["ops_db"].active_deployment(PROD)
        green_fs = res["odoo_host"].filestore_dir(green.data_dir, green.served_db)
        files = sorted(p.relative_to(staging_fs) for p in staging_fs.rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(green_fs) for p in green_fs.rglob("*") if p.is_file())
        assert all((green_fs / f).read_bytes() == (staging_fs / f).read_bytes() for f in files)
        # The dumps in transit went through this spool and were removed (pg_dump's before sending, pg_restore's
        # after restoring).
        assert spool.is_dir() and in_transit() == set()
    finally:
        remote.close()


@pytest.mark.unit
def test_every_method_that_touches_the_stores_files_is_the_ssh_stores_own() -> None:
    # SshArtifactStore is a LocalArtifactStore to the steps; a method it inherited would work on the worker's
    # disk, silently (and the test hosts share this machine's filesystem, so no other test would notice).
    pure = {"new_artifact_id", "folder", "index_path", "object_path", "objects", "dump_dir", "delete"}
    inherited = {name for cls in (LocalArtifactStore, FilestoreObjects) for name, value in vars(cls).items()
                 if not name.startswith("__") and (callable(value) or isinstance(value, property))
                 and name not in pure}
    # The local store's own helpers, called only from methods the SSH store replaces (and _walk reads the
    # worker's filestore, which is where it is; _trusted and _store_stream serve the local ingest_filestore_from,
    # which the SSH store replaces with its own).
    helpers = {"_objects_lock", "_ensure_object_dirs", "_copy_in", "_walk", "_trusted", "_store_stream"}
    missing = sorted(inherited - helpers - set(vars(SshArtifactStore)))
    assert not missing, missing
    # The host's side travels in the command line, one argument capped at 128 KiB by Linux.
    assert len(Path(artifact_folder.__file__).read_bytes()) < 64 * 1024
