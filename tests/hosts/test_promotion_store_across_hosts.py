"""A promotion with its artifacts on one host and its Odoo processes on others, run from a third.

The layout of ``test_promotion_across_hosts.py`` (PostgreSQL in ``db``, staging's and production's stand-ins and
PgBouncers on their hosts, the team's HAProxy adopted in ``router``), with the artifact store kept over SSH on
``db`` (``artifact_store.kind: ssh``) and the promotion run by the CLI on ``worker``. The worker holds both logins;
the hosts have no keys to each other. Staging's snapshot and production's backup are read on their hosts and sent
into the store on ``db`` through the worker; green's filestore goes from the store to production the same way.

One promotion and one rollback (the across-hosts tests are slow); the layout is taken down at the module's end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from promote_pipeline.cli import sandbox as sandbox_mod
from promote_pipeline.cli.sandbox import PROD, STAGING, USER
from promote_pipeline.cli.sandbox_hosts import ACTIVE_PORT, admin_socket_dir, start_team_haproxy
from promote_pipeline.promotion import settings as settings_mod
from promote_pipeline.promotion.evidence_schema import validate_folder
from promote_pipeline.promotion.services import close_ssh_hosts
from resources import secrets
from resources.netns_hosts import HostNetwork
from resources.ssh_artifact_store import SshArtifactStore

from .test_promotion_across_hosts import KEY_REF, HostsSandbox, Layout, _outputs

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists(),
                                 reason="haproxy not installed"),
              pytest.mark.skipif(shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists(),
                                 reason="pgbouncer not installed")]


@dataclass
class StoreHostSandbox(HostsSandbox):
    """``HostsSandbox`` with its artifacts in a store on the ``db`` host, reached over SSH."""

    store_root: Path = Path()
    spool: Path = Path()

    def settings(self) -> settings_mod.Settings:
        base = super().settings()
        if self.settings_file.exists():
            return base
        assert self.net is not None and self.net.ssh is not None
        store = {"host": self.net["db"].address, "user": self.net.ssh.user, "identity_ref": KEY_REF,
                 "known_hosts_file": str(self.net.ssh.known_hosts), "root": str(self.store_root), "create_root": True,
                 "python": sys.executable, "spool_dir": str(self.spool)}
        return settings_mod.Settings.model_validate({**base.model_dump(),
                                                     "artifact_store": {"kind": "ssh", "ssh": store}})


@pytest.fixture(scope="module")
def layout(host_network: HostNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    net = host_network
    assert net.ssh is not None
    base = tmp_path_factory.mktemp("store-across-hosts")
    saved = {k: os.environ.get(k) for k in ("PROMOTE_SETTINGS", "PROMOTE_EVIDENCE_ROOT")}
    pg = net.start_postgres("db")
    start_team_haproxy(net, base / "team-haproxy")
    tag = os.urandom(3).hex()
    box = StoreHostSandbox(root=base / "box", ops_database=f"promote_ops_storehosts_{tag}", db_prefix=f"psx_{tag}",
                           pbkdf2_rounds=1000, partners=30, attachments=8, net=net, hosts_root=base / "hosts",
                           store_root=net.host_dir("db") / f"store-{tag}" / "artifacts", spool=base / "spool")
    box.root.mkdir()
    secrets.write_secrets_file(box.secrets_file, {
        sandbox_mod.DSN_REF: pg.dsn(), sandbox_mod.ADMIN_REF: os.urandom(12).hex(),
        sandbox_mod.ROLE_KEY_REF: os.urandom(24).hex(), KEY_REF: str(net.ssh.identity_file)})
    try:
        box.up()
        os.environ.update(box.env())
        os.environ["PROMOTE_EVIDENCE_ROOT"] = str(base / "evidence")
        yield Layout(net, box, pg.dsn(), base / "evidence")
    finally:
        try:
            box.down()
        finally:
            close_ssh_hosts()
            shutil.rmtree(admin_socket_dir(net.prefix), ignore_errors=True)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            settings_mod.select(Path(saved["PROMOTE_SETTINGS"]) if saved["PROMOTE_SETTINGS"] else None)


def sha1_of_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def test_a_promotion_with_the_store_on_db_and_odoo_on_its_hosts_run_from_the_worker(layout: Layout) -> None:
    net, box, ops_db = layout.net, layout.box, layout.ops()
    store = box.resources()["artifact_store"]
    assert isinstance(store, SshArtifactStore) and store.host == net["db"].address
    blue, staging = ops_db.active_deployment(PROD), ops_db.active_deployment(STAGING)
    assert blue is not None and staging is not None and blue.host == "production" and staging.host == "staging"
    # An attachment production has and staging has not: the store lacks it, so blue's backup must fetch it (the
    # rest are staging's files, which the snapshot just stored with the same size and mtime, and stay put).
    extra = os.urandom(5000)
    sha1 = hashlib.sha1(extra).hexdigest()
    blue_fs = Path(blue.data_dir) / "filestore" / blue.served_db
    (blue_fs / sha1[:2]).mkdir(exist_ok=True)
    (blue_fs / sha1[:2] / sha1).write_bytes(extra)
    blue_files = sha1_of_files(blue_fs)
    staging_files = sha1_of_files(Path(staging.data_dir) / "filestore" / staging.served_db)
    assert blue_files and staging_files

    done, seconds = layout.promote_on_worker()
    print(f"promotion on worker, store on db: {seconds:.1f}s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outputs = _outputs(done)
    run = ops_db.run(outputs["run_id"])
    assert run is not None and run.status == "success"
    evidence = Path(outputs["evidence_dir"])
    validate_folder(evidence, run.run_id, "success")
    green = ops_db.active_deployment(PROD)
    assert green is not None and green.deployment_id != blue.deployment_id and green.host == "production"

    # Both artifacts are in the store on db, none on the worker's disk.
    assert {outputs["green_artifact_id"], outputs["blue_backup_id"]} <= set(store.artifact_ids())
    assert not (box.root / "artifacts").exists()
    backed = json.loads((evidence / "blue_backup.json").read_text())
    restored = json.loads((evidence / "green_restore.json").read_text())
    assert backed["filestore_read_on"] == "production", backed
    assert backed["filestore_fetched_files"] >= 1 and backed["filestore_fetched_bytes"] >= len(extra), backed
    fs_restore = restored["filestore_restore"]
    assert fs_restore["method"] == "ssh-relay" and fs_restore["files"] == len(staging_files), fs_restore
    print(f"blue backup's filestore ({backed['artifact']['filestore']['file_count']} files,"
          f" {backed['filestore_fetched_files']} fetched) read on production into the store on db:"
          f" {backed['filestore_seconds']:.2f}s; green's filestore ({fs_restore['files']} files,"
          f" {fs_restore['bytes']} bytes) from the store on db to production:"
          f" {restored['filestore_restore_seconds']:.2f}s")

    # The blue backup's filestore in the store: complete (every file blue has, by content) and verified on db,
    # every object hashed again there.
    blue_artifact = ops_db.artifact(outputs["blue_backup_id"])
    assert blue_artifact is not None
    contract = blue_artifact.contract
    checked = store.verify(outputs["blue_backup_id"], contract["db_dump"], contract["filestore"], full=True,
                           deep=True)
    assert checked["mode"] == "deep" and checked["filestore"]["ok"], checked
    assert {rel: sha1 for sha1, _size, rel in store.iter_index(outputs["blue_backup_id"])} == blue_files

    # Green holds staging's files byte for byte on production, and serves a real attachment with its bytes,
    # through the router.
    green_fs = Path(green.data_dir) / "filestore" / green.served_db
    assert sha1_of_files(green_fs) == staging_files
    with psycopg.connect(layout.db_dsn, dbname=green.db_name) as conn:
        row = conn.execute("SELECT id, store_fname, checksum FROM ir_attachment WHERE public AND store_fname IS NOT"
                           " NULL ORDER BY id LIMIT 1").fetchone()
    assert row is not None
    attachment_id, store_fname, checksum = row
    with urllib.request.urlopen(f"http://{net['router'].address}:{ACTIVE_PORT}/web/content/{attachment_id}",
                                timeout=10) as response:
        body = response.read()
    assert hashlib.sha1(body).hexdigest() == checksum == staging_files[store_fname]

    # A rollback by hand, from the worker: the router back on blue, green stopped on production.
    rolled, seconds = layout.on_worker("rollback", outputs["run_id"], "--reason", "store-host drill", "--user", USER)
    print(f"rollback on worker: {seconds:.1f}s")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    served = layout.router().served_upstream(PROD)
    assert served.name == blue.deployment_id and served.host == net["production"].address
    rolled_run = ops_db.run(outputs["run_id"])
    assert rolled_run is not None and rolled_run.status == "rolled_back"
    running = layout.processes_in("production")
    assert not [cmd for cmd in running.values() if green.data_dir in cmd], running
    assert [cmd for cmd in running.values() if blue.data_dir in cmd]
    # Blue serves its own files again.
    assert sha1_of_files(blue_fs) == blue_files
    # The dumps in transit went through the worker's spool and were removed.
    assert not list(box.spool.glob("promote-*"))
