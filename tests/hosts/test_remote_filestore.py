"""A filestore the promoter cannot see, backed up from its process host over SSH (``ingest_filestore_from``).

The test hosts share the machine's file system, so a data_dir would otherwise be the same path on the promoter and
on the host and the remote read would prove nothing. Here production's data root is a tmpfs mounted inside the
mount namespace of production's sshd only: ``ip netns exec`` gives that sshd a mount namespace of its own (a
slave of the machine's, so nothing mounted in it comes back out), and every SSH session, and every process a
session starts, lives in it. On the host the data root holds the filestore; on the promoter the same path is an
empty folder, as a data_dir on another machine's disk would be absent here.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from promote_pipeline.promotion.restore import send_filestore
from resources.artifact_store import ArtifactError, LocalArtifactStore
from resources.netns_hosts import HostNetwork
from resources.odoo_host import LocalOdooHost
from resources.ssh_artifact_store import SshArtifactStore
from resources.ssh_odoo_host import SshOdooHost

from ..conftest import backup, contract, odoo_file
from .conftest import sshd_pid

KEY_REF = "PROMOTE_TEST_REMOTE_FS_SSH_KEY"
DB = "prod_remote_fs"


@dataclass
class Hidden:
    """Production's host, its data_dir (a path that is empty on the promoter), and a way to write there."""

    host: SshOdooHost
    data_dir: str
    pid: int

    @property
    def filestore(self) -> Path:
        return SshOdooHost.filestore_dir(self.data_dir, DB)

    def on_host(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """``argv`` run in the sshd's mount namespace: someone working on the host itself."""
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", *argv], capture_output=True, text=True,
                              check=True)


@pytest.fixture(scope="module")
def hidden(host_network: HostNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hidden]:
    assert host_network.ssh is not None
    pid = sshd_pid(host_network, "production")
    root = host_network.host_dir("production") / f"data-{secrets.token_hex(4)}"
    root.mkdir()
    done = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "mount", "-t", "tmpfs", "-o", "size=32m,mode=0700",
                           "tmpfs", str(root)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount in the host's mount namespace: {done.stderr.strip()}")
    saved = os.environ.get(KEY_REF)
    os.environ[KEY_REF] = host_network.ssh.identity_file.read_text()
    host = SshOdooHost(name="production", address=host_network["production"].address, user=host_network.ssh.user,
                       identity_ref=KEY_REF, known_hosts_file=str(host_network.ssh.known_hosts),
                       command_template="true", run_dir=str(root / "run"), python=sys.executable)
    try:
        yield Hidden(host=host, data_dir=str(root / "dep_1"), pid=pid)
    finally:
        host.close()
        subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "umount", "--lazy", str(root)], check=False)
        if saved is None:
            os.environ.pop(KEY_REF, None)
        else:
            os.environ[KEY_REF] = saved


def put_on_host(hidden: Hidden, local: Path) -> None:
    """The files of ``local`` copied into the filestore on the host (mtimes kept)."""
    hidden.on_host("mkdir", "-p", str(hidden.filestore))
    hidden.on_host("cp", "-a", f"{local}/.", str(hidden.filestore))


def new_backup(store: LocalArtifactStore, hidden: Hidden, data_dir: str | None = None
               ) -> tuple[str, dict[str, object]]:
    artifact_id = store.new_artifact_id("env_prod", "blue")
    store.allocate(artifact_id)
    store.write_contract(artifact_id, "{}")
    return artifact_id, store.ingest_filestore_from(artifact_id,
                                                    hidden.host.filestore_source(data_dir or hidden.data_dir, DB))


def test_a_filestore_only_the_host_sees_is_backed_up_fetching_only_what_the_store_lacks(
        hidden: Hidden, tmp_path: Path) -> None:
    local = tmp_path / "made"
    contents = [os.urandom(1000 + 37 * i) for i in range(30)]
    rels = [odoo_file(local, content) for content in contents]
    put_on_host(hidden, local)
    # The gap this closes: the promoter sees nothing at the data_dir's path, the host sees the files there.
    assert not hidden.filestore.exists()
    assert hidden.host.filestore_stats(hidden.data_dir, DB) == (30, sum(map(len, contents)))
    assert hidden.host.filestore_usable(hidden.data_dir, DB)
    assert not LocalOdooHost(command_template="true", run_dir=str(tmp_path)).filestore_usable(hidden.data_dir, DB)

    store = LocalArtifactStore(root=str(tmp_path / "store"), create_root=True)
    blind_id = store.new_artifact_id("env_prod", "blue")
    store.allocate(blind_id)
    assert store.ingest_filestore(blind_id, hidden.filestore)["file_count"] == 0  # what a local read gets

    first_id, first = new_backup(store, hidden)
    assert (first["file_count"], first["fetched_files"], first["new_objects"]) == (30, 30, 30), first
    assert first["fetched_bytes"] == first["size_bytes"] == sum(map(len, contents))
    index = list(store.iter_index(first_id))
    assert sorted(rel for _sha1, _size, rel in index) == sorted(rels)
    for sha1, size, rel in index:
        content = (local / rel).read_bytes()
        assert (sha1, size) == (hashlib.sha1(content).hexdigest(), len(content))
        assert hashlib.sha1(store.object_path(sha1).read_bytes()).hexdigest() == sha1
        # The object keeps the host file's mtime: what lets the next backup trust the file by its metadata.
        assert store.object_path(sha1).stat().st_mtime_ns == (local / rel).stat().st_mtime_ns
    verified = store.verify_filestore(first_id, contract(store, first_id, first), full=True, deep=True)
    assert verified["ok"] and verified["objects_checked"] == 30, verified
    # The very index a local ingest of the same files writes (the host's walk is the local one, line for line).
    _local_id, local_facts = backup(store, local)
    assert local_facts["index_sha256"] == first["index_sha256"] and local_facts["new_objects"] == 0

    # Unchanged: only metadata crosses, no file is fetched, and the index is the same.
    second_id, second = new_backup(store, hidden)
    assert (second["fetched_files"], second["fetched_bytes"], second["new_objects"]) == (0, 0, 0), second
    assert list(store.iter_index(second_id)) == index

    # One new attachment on the host: exactly that one travels.
    extra = tmp_path / "extra"
    rels.append(odoo_file(extra, b"one new attachment"))
    put_on_host(hidden, extra)
    third_id, third = new_backup(store, hidden)
    assert (third["fetched_files"], third["fetched_bytes"], third["new_objects"], third["file_count"]) == (
        1, len(b"one new attachment"), 1, 31), third
    assert store.verify_filestore(third_id, contract(store, third_id, third), full=True, deep=True)["ok"]

    # Restored to the host (green's path there): byte-identical to the filestore it was read from.
    restored = f"{hidden.data_dir}-green/filestore/{DB}"
    assert send_filestore(hidden.host, store, third_id, restored)["files"] == 31
    diff = subprocess.run(["nsenter", "-t", str(hidden.pid), "-m", "--", "diff", "-r", str(hidden.filestore),
                           restored], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    # Restored files carry their objects' mtimes: a backup of green's filestore fetches nothing.
    green_id = store.new_artifact_id("env_prod", "blue")
    store.allocate(green_id)
    again = store.ingest_filestore_from(green_id, hidden.host.filestore_source(f"{hidden.data_dir}-green", DB))
    assert (again["fetched_files"], again["file_count"]) == (0, 31), again


def test_a_file_changed_in_place_is_fetched_again_and_stored_by_its_content(hidden: Hidden, tmp_path: Path) -> None:
    store = LocalArtifactStore(root=str(tmp_path / "store"), create_root=True)
    before_id, before = new_backup(store, hidden)
    assert before["file_count"] >= 1
    sha1, _size, rel = next(iter(store.iter_index(before_id)))
    # Someone on the host rewrites an attachment in place (not Odoo's way): its mtime moves on, so it is read
    # again, and stored under the SHA-1 of what it now holds.
    hidden.on_host("sh", "-c", f"printf 'rewritten' > {hidden.filestore / rel}")
    after_id, after = new_backup(store, hidden)
    assert (after["fetched_files"], after["rehashed_by_stat"], after["renamed_by_content"]) == (1, 1, 1), after
    changed = [line for line in store.iter_index(after_id) if line[2] == rel]
    assert changed == [(hashlib.sha1(b"rewritten").hexdigest(), len(b"rewritten"), rel)]
    assert sha1 != changed[0][0]


def test_an_absent_filestore_on_the_host_is_an_empty_one(hidden: Hidden, tmp_path: Path) -> None:
    store = LocalArtifactStore(root=str(tmp_path / "store"), create_root=True)
    artifact_id = store.new_artifact_id("env_prod", "blue")
    store.allocate(artifact_id)
    facts = store.ingest_filestore_from(artifact_id, hidden.host.filestore_source(f"{hidden.data_dir}-none", DB))
    assert (facts["file_count"], facts["fetched_files"]) == (0, 0)
    assert not hidden.host.filestore_usable(f"{hidden.data_dir}-none", DB)


@pytest.fixture
def store_on_db(host_network: HostNetwork, hidden: Hidden) -> Iterator[SshArtifactStore]:
    """An SSH store of its own on the ``db`` host: neither it nor the promoter sees production's files, so every byte
    between the two is relayed by the promoter (the worker), which holds both logins."""
    assert host_network.ssh is not None
    root = host_network.host_dir("db") / f"store-{secrets.token_hex(4)}" / "artifacts"
    store = SshArtifactStore(root=str(root), create_root=True, host=host_network["db"].address,
                             user=host_network.ssh.user, identity_ref=KEY_REF,
                             known_hosts_file=str(host_network.ssh.known_hosts))
    try:
        yield store
    finally:
        store.close()


def files_on_host(hidden: Hidden, tmp_path: Path, name: str, count: int) -> tuple[str, Path, list[str]]:
    """``count`` Odoo-named files put in the filestore of a new data_dir on production only: (data_dir, the same
    files made here, their relative names)."""
    local = tmp_path / name
    rels = [odoo_file(local, os.urandom(3000 + 53 * i)) for i in range(count)]
    data_dir = f"{hidden.data_dir}-{name}"
    folder = str(SshOdooHost.filestore_dir(data_dir, DB))
    hidden.on_host("mkdir", "-p", folder)
    hidden.on_host("cp", "-a", f"{local}/.", folder)
    return data_dir, local, rels


def test_the_ssh_store_on_its_own_host_backs_up_and_restores_a_filestore_only_the_process_host_sees(
        hidden: Hidden, store_on_db: SshArtifactStore, tmp_path: Path) -> None:
    store = store_on_db
    data_dir, local, rels = files_on_host(hidden, tmp_path, "relay", 25)
    total = sum((local / rel).stat().st_size for rel in rels)
    assert not SshOdooHost.filestore_dir(data_dir, DB).exists()  # the promoter sees nothing there
    store.ensure_root()

    first_id, first = new_backup(store, hidden, data_dir)
    assert (first["file_count"], first["fetched_files"], first["new_objects"]) == (25, 25, 25), first
    assert first["fetched_bytes"] == first["size_bytes"] == total
    index = list(store.iter_index(first_id))
    assert sorted(rel for _sha1, _size, rel in index) == sorted(rels)
    for sha1, size, rel in index:
        content = (local / rel).read_bytes()
        assert (sha1, size) == (hashlib.sha1(content).hexdigest(), len(content))
    # Verified on the store's host, every object hashed again there.
    verified = store.verify_filestore(first_id, contract(store, first_id, first), full=True, deep=True)
    assert verified["ok"] and verified["objects_checked"] == 25, verified
    # The very index a local ingest of the same files writes, and nothing new stored by it.
    _local_id, local_facts = backup(store, local)
    assert local_facts["index_sha256"] == first["index_sha256"] and local_facts["new_objects"] == 0

    # Unchanged on the host: only metadata crosses.
    second_id, second = new_backup(store, hidden, data_dir)
    assert (second["fetched_files"], second["new_objects"]) == (0, 0) and second["file_count"] == 25, second
    assert list(store.iter_index(second_id)) == index

    # Restored onto production from the store on db, relayed by the promoter: byte-identical, every file hashed
    # where it landed, with its object's mtime (so a backup of the restored filestore fetches nothing).
    green_dir = f"{data_dir}-green"
    restored = str(SshOdooHost.filestore_dir(green_dir, DB))
    assert send_filestore(hidden.host, store, first_id, restored) == {"method": "ssh-relay", "files": 25,
                                                                       "bytes": total}
    diff = subprocess.run(["nsenter", "-t", str(hidden.pid), "-m", "--", "diff", "-r",
                           str(SshOdooHost.filestore_dir(data_dir, DB)), restored], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert not Path(restored).exists()  # it went to the host, not here
    _green_id, again = new_backup(store, hidden, green_dir)
    assert (again["fetched_files"], again["file_count"]) == (0, 25), again


def landed(hidden: Hidden, folder: str) -> dict[str, str]:
    """Every file under ``folder`` on the host: relative name -> SHA-1 of its content."""
    out = hidden.on_host("sh", "-c", f"cd {folder} 2>/dev/null && find . -type f -exec sha1sum {{}} + || true")
    return {line.split("  ", 1)[1][2:]: line.split("  ", 1)[0] for line in out.stdout.splitlines()}


def test_a_relay_that_fails_on_either_side_fails_in_one_line_naming_both_hosts(
        hidden: Hidden, store_on_db: SshArtifactStore, host_network: HostNetwork, tmp_path: Path) -> None:
    store = store_on_db
    data_dir, _local, _rels = files_on_host(hidden, tmp_path, "faults", 25)
    store.ensure_root()
    artifact_id, facts = new_backup(store, hidden, data_dir)
    index = list(store.iter_index(artifact_id))
    names = ("artifact store", store.host, "production", hidden.host.address)

    # The store's side fails half-way (an object gone from the store): the landing side saw the stream end with no
    # end mark; the failure is the store's, said once, and whatever landed is whole and right (no temporary file).
    sha1, _size, rel = index[len(index) // 2]
    missing = Path(store.root) / ".objects" / sha1[:2] / sha1
    missing.unlink()
    dest = str(SshOdooHost.filestore_dir(f"{data_dir}-cut", DB))
    with pytest.raises(ArtifactError) as cut:
        send_filestore(hidden.host, store, artifact_id, dest)
    message = str(cut.value)
    assert "\n" not in message and all(n in message for n in names), message
    assert f"filestore object {sha1} ({rel}) is missing" in message, message
    arrived = landed(hidden, dest)
    assert arrived and rel not in arrived and not [n for n in arrived if "/.in-" in n or n.startswith(".in-")]
    assert all(arrived[r] == s for s, _z, r in index if r in arrived)

    # The landing side fails half-way (production's disk full): one line naming both hosts, the cause first.
    full = str(SshOdooHost.filestore_dir(f"{data_dir}-full", DB))
    hidden.on_host("mkdir", "-p", full)
    hidden.on_host("mount", "-t", "tmpfs", "-o", "size=48k,mode=0700", "tmpfs", full)
    try:
        _again_id, _f = new_backup(store, hidden, data_dir)  # the removed object back in the store
        with pytest.raises(ArtifactError) as no_room:
            send_filestore(hidden.host, store, artifact_id, full)
        message = str(no_room.value)
        assert "\n" not in message and all(n in message for n in names), message
        assert "No space left on device" in message and "Broken pipe" not in message, message
        arrived = landed(hidden, full)
        assert all(arrived[r] == s for s, _z, r in index if r in arrived) and len(arrived) < len(index)
    finally:
        hidden.on_host("umount", "--lazy", full)

    # The backup's store fails half-way (the store's disk full, on db): one line naming both hosts, and no index
    # written, so no artifact to record.
    db_pid = sshd_pid(host_network, "db")
    small = host_network.host_dir("db") / f"small-{secrets.token_hex(4)}"
    small.mkdir()
    subprocess.run(["nsenter", "-t", str(db_pid), "-m", "--", "mount", "-t", "tmpfs", "-o", "size=40k,mode=0700",
                    "tmpfs", str(small)], check=True, capture_output=True)
    tiny = SshArtifactStore(**{**store.model_dump(), "root": str(small / "artifacts")})
    try:
        tiny.ensure_root()
        tiny_id = tiny.new_artifact_id("env_prod", "blue")
        tiny.allocate(tiny_id)
        with pytest.raises(ArtifactError) as backup_full:
            tiny.ingest_filestore_from(tiny_id, hidden.host.filestore_source(data_dir, DB))
        message = str(backup_full.value)
        assert "\n" not in message and all(n in message for n in names), message
        assert "No space left on device" in message, message
        with pytest.raises(ArtifactError, match="filestore.index is missing"):
            list(tiny.iter_index(tiny_id))
    finally:
        tiny.close()
        subprocess.run(["nsenter", "-t", str(db_pid), "-m", "--", "umount", "--lazy", str(small)], check=False)
    assert facts["file_count"] == 25


def test_names_tar_or_a_shell_could_misread_arrive_as_they_are(hidden: Hidden, tmp_path: Path) -> None:
    """Not Odoo's names, but anyone may drop a file into a filestore: a leading dash (an option to tar unless taken
    verbatim), a backslash (an escape to tar's list reader unless taken verbatim), spaces, UTF-8, a link."""
    local = tmp_path / "odd"
    names = ["-dash", "back\\slash", "two  spaces", "café", "deep/er/ -x"]
    for name in names:
        (local / "odd" / name).parent.mkdir(parents=True, exist_ok=True)
        (local / "odd" / name).write_bytes(name.encode() * 3)
    (local / "odd" / "link").symlink_to("-dash")  # not a regular file: skipped, as locally
    put_on_host(hidden, local)
    store = LocalArtifactStore(root=str(tmp_path / "store"), create_root=True)
    artifact_id, facts = new_backup(store, hidden)
    assert facts["skipped_not_regular"] >= 1 and facts["vanished"] == 0, facts
    indexed = {rel: (sha1, size) for sha1, size, rel in store.iter_index(artifact_id)}
    for name in names:
        content = name.encode() * 3
        assert indexed[f"odd/{name}"] == (hashlib.sha1(content).hexdigest(), len(content)), name
