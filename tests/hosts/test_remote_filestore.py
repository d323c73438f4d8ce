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
from resources.artifact_store import LocalArtifactStore
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


def new_backup(store: LocalArtifactStore, hidden: Hidden) -> tuple[str, dict[str, object]]:
    artifact_id = store.new_artifact_id("env_prod", "blue")
    store.allocate(artifact_id)
    store.write_contract(artifact_id, "{}")
    return artifact_id, store.ingest_filestore_from(artifact_id, hidden.host.filestore_source(hidden.data_dir, DB))


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


def test_the_ssh_store_refuses_a_filestore_on_a_process_host_in_one_line(hidden: Hidden, tmp_path: Path) -> None:
    store = SshArtifactStore(root=str(tmp_path / "unused"), host="127.0.0.1", user="nobody", identity_ref=KEY_REF,
                             known_hosts_file=str(tmp_path / "none"))
    with pytest.raises(Exception, match="SSH artifact store cannot read a filestore on process host production"):
        store.ingest_filestore_from("art_x", hidden.host.filestore_source(hidden.data_dir, DB))


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
