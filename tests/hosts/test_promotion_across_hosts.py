"""A promotion whose Odoo processes run on other hosts, reached over SSH.

The hosts are network namespaces (``resources/netns_hosts.py``), each with its own sshd: PostgreSQL in ``db`` (the
environments' databases and the ops database), staging's and production's Odoo stand-ins (and their PgBouncers)
in ``staging`` and ``production``, the team's HAProxy in ``router`` (started here, inside that namespace, and
adopted: promote switches it through its runtime API over TCP), and the promotion itself run by the CLI on
``worker``. The machine's file system is shared by the namespaces, so a data_dir is the same path everywhere; what
each host does with it goes through SSH all the same (the README's Hosts section says what is and is not remote).

One module-scoped layout; the promotion runs first, is rolled back by hand (``promote rollback`` on the worker),
then a promotion whose smoke test fails is rolled back on its own; last, ``sandbox down`` removes it all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from promote_pipeline.cli import sandbox as sandbox_mod
from promote_pipeline.cli.sandbox import PROD, PROJECT, STAGING, USER, Sandbox
from promote_pipeline.cli.sandbox_hosts import (
    ACTIVE_PORT,
    API_PORT,
    ENV_HOSTS,
    PREVIEW_PORT,
    admin_socket_dir,
    start_team_haproxy,
)
from promote_pipeline.promotion import settings as settings_mod
from promote_pipeline.promotion.evidence_schema import validate_folder
from promote_pipeline.promotion.services import close_ssh_hosts
from promote_pipeline.promotion.settings import ProcessHost
from resources import secrets
from resources.haproxy_adopted import AdoptedHAProxyRouter
from resources.netns_hosts import HostNetwork
from resources.ops_db import OpsDatabase
from resources.router import RouterResource, Upstream

from .conftest import sshd_pid

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists(),
                                 reason="haproxy not installed"),
              pytest.mark.skipif(shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists(),
                                 reason="pgbouncer not installed")]

KEY_REF = "PROMOTE_TEST_HOSTS_SSH_KEY"



@dataclass
class HostsSandbox(Sandbox):
    """The sandbox with staging's and production's Odoo on their hosts, the team's HAProxy adopted, and every
    database (the ops database included) on the ``db`` host's server."""

    net: HostNetwork | None = None
    hosts_root: Path = field(default_factory=Path)

    def settings(self) -> settings_mod.Settings:
        base = super().settings()
        if self.settings_file.exists():
            return base
        assert self.net is not None and self.net.ssh is not None
        hosts = {name: ProcessHost(address=self.net[name].address, user=self.net.ssh.user, identity_ref=KEY_REF,
                                   known_hosts_file=str(self.net.ssh.known_hosts),
                                   run_dir=str(self.hosts_root / name / "run"), python=sys.executable)
                 for name in ENV_HOSTS.values()}
        return settings_mod.Settings.model_validate({
            **base.model_dump(), "process_hosts": {k: v.model_dump() for k, v in hosts.items()},
            "environment_hosts": ENV_HOSTS, "router_mode": "adopted",
            "router_runtime_api": f"ipv4@{self.net['router'].address}:{API_PORT}",
            "router_listen_host": self.net["router"].address})

    def odoo_command(self) -> str:
        # On its host's address ({http_interface}): the router and the promoter reach it from other hosts.
        return super().odoo_command() + " --host {http_interface}"

    def _register(self, router: RouterResource, prod: str, blue: Upstream) -> None:
        router.register_environment(prod, blue, active_port=ACTIVE_PORT, preview_port=PREVIEW_PORT)


@dataclass
class Layout:
    net: HostNetwork
    box: HostsSandbox
    db_dsn: str
    evidence: Path

    def ns(self, host: str) -> str:
        return self.net[host].namespace

    def ops(self) -> OpsDatabase:
        ops_db: OpsDatabase = self.box.resources()["ops_db"]
        return ops_db

    def router(self) -> AdoptedHAProxyRouter:
        router: AdoptedHAProxyRouter = self.box.resources()["router"]
        return router

    def promote_on_worker(self, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
        """``promote run`` on the worker host, as an operator there would run it."""
        return self.on_worker("run", "--project", PROJECT, "--staging", STAGING, "--prod", PROD, "--user", USER,
                              "--stability-seconds", "2", "--json", *extra)

    def on_worker(self, *command: str) -> tuple[subprocess.CompletedProcess[str], float]:
        """A ``promote`` command run on the worker host."""
        argv = [str(Path(sys.executable).parent / "promote"), *command]
        env = {**os.environ, **self.box.env(), "PROMOTE_EVIDENCE_ROOT": str(self.evidence)}
        started = time.monotonic()
        done = subprocess.run(self.net["worker"].exec_argv(argv), capture_output=True, text=True, env=env,
                              timeout=600, stdin=subprocess.DEVNULL)
        return done, time.monotonic() - started

    def processes_in(self, host: str) -> dict[int, str]:
        """pid -> command line of every process in ``host``'s namespace."""
        out = subprocess.run(["ip", "netns", "pids", self.ns(host)], capture_output=True, text=True).stdout
        found = {}
        for pid in (int(p) for p in out.split() if p.isdigit()):
            try:
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
        return found


@pytest.fixture(scope="module")
def layout(host_network: HostNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    net = host_network
    assert net.ssh is not None
    base = tmp_path_factory.mktemp("across-hosts")
    saved = {k: os.environ.get(k) for k in ("PROMOTE_SETTINGS", "PROMOTE_EVIDENCE_ROOT")}
    pg = net.start_postgres("db")
    start_team_haproxy(net, base / "team-haproxy")
    tag = os.urandom(3).hex()
    box = HostsSandbox(root=base / "box", ops_database=f"promote_ops_hosts_{tag}", db_prefix=f"phx_{tag}",
                       pbkdf2_rounds=1000, partners=30, attachments=8, net=net, hosts_root=base / "hosts")
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


def _outputs(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def test_seed_deployments_run_on_their_hosts(layout: Layout) -> None:
    ops_db = layout.ops()
    for env_id, host in ENV_HOSTS.items():
        dep = ops_db.active_deployment(env_id)
        assert dep is not None and dep.host == host and dep.pid
        identified = subprocess.run(["ip", "netns", "identify", str(dep.pid)], capture_output=True, text=True)
        assert identified.stdout.strip() == layout.ns(host)
    blue = ops_db.active_deployment(PROD)
    assert blue is not None
    served = layout.router().served_upstream(PROD)
    assert served.name == blue.deployment_id and served.host == layout.net["production"].address


def test_promotion_and_rollback_across_hosts(layout: Layout) -> None:
    net, box = layout.net, layout.box
    ops_db = layout.ops()
    blue = ops_db.active_deployment(PROD)
    assert blue is not None

    done, seconds = layout.promote_on_worker()
    print(f"promotion on worker: {seconds:.1f}s")
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = _outputs(done)
    run = ops_db.run(outputs["run_id"])
    assert run is not None and run.status == "success"
    validate_folder(Path(outputs["evidence_dir"]), run.run_id, "success")
    preflight = json.loads((Path(outputs["evidence_dir"]) / "inputs.json").read_text())["preflight"]
    disk = next(c for c in preflight if c["check"] == "sufficient_disk_space")
    assert disk["passed"] and disk["message"].endswith("(production data dir asked on production)"), disk
    green = ops_db.active_deployment(PROD)
    assert green and green.deployment_id != blue.deployment_id and green.host == "production"
    # The router itself (its runtime API) serves green, on production's address.
    served = layout.router().served_upstream(PROD)
    assert served.name == green.deployment_id
    assert (served.host, served.http_port) == (net["production"].address, green.http_port)
    # Green's Odoo runs in the production namespace; its PgBouncer too.
    for pid in (green.pid, green.endpoint_pid):
        identified = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True)
        assert identified.stdout.strip() == layout.ns("production"), pid
    # Its filestore was streamed to the host: as many files as the artifact records, under green's data_dir.
    snapshot = ops_db.artifact(outputs["green_artifact_id"])
    assert snapshot is not None
    files = [p for p in (Path(green.data_dir) / "filestore" / green.served_db).rglob("*") if p.is_file()]
    assert len(files) == snapshot.contract["filestore"]["file_count"] > 0
    # A real XML-RPC call through the router reaches green's database (and not blue's).
    url = f"http://{net['router'].address}:{ACTIVE_PORT}"
    password = secrets.resolve(sandbox_mod.ADMIN_REF)
    common = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/common")
    uid = common.authenticate(green.served_db, "admin", password, {})
    assert isinstance(uid, int) and uid > 0
    marker = f"across-hosts {os.urandom(4).hex()}"
    models = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/object")
    models.execute_kw(green.served_db, uid, password, "res.partner", "create", [{"name": marker}])
    count = "SELECT count(*) FROM res_partner WHERE name = %s"
    with psycopg.connect(layout.db_dsn, dbname=green.db_name) as conn:
        assert conn.execute(count, (marker,)).fetchone() == (1,)
    with psycopg.connect(layout.db_dsn, dbname=blue.db_name) as conn:
        assert conn.execute(count, (marker,)).fetchone() == (0,)

    # A rollback by hand, from the worker: the router back on blue (on production), green stopped there.
    rolled, seconds = layout.on_worker("rollback", outputs["run_id"], "--reason", "cross-host drill", "--user", USER)
    print(f"rollback on worker: {seconds:.1f}s")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    served = layout.router().served_upstream(PROD)
    assert served.name == blue.deployment_id and served.host == net["production"].address
    rolled_run = ops_db.run(outputs["run_id"])
    assert rolled_run is not None and rolled_run.status == "rolled_back"
    running = layout.processes_in("production")
    assert not [cmd for cmd in running.values() if green.data_dir in cmd], running
    assert [cmd for cmd in running.values() if blue.data_dir in cmd]

    # A second promotion whose smoke test fails (logins refused by the green it starts) rolls back across hosts.
    # The partner written above is production's drift since staging was copied: accepted, it is a test row.
    fault = box.root / "faults" / f"{PROD}.json"
    fault.write_text(json.dumps({"not_before": time.time(), "refuse_login": True}))
    try:
        failed, seconds = layout.promote_on_worker("--accept-drift")
    finally:
        fault.unlink(missing_ok=True)
    print(f"failing promotion on worker: {seconds:.1f}s")
    assert failed.returncode != 0, failed.stdout[-2000:]
    second = ops_db.promotions(PROD, limit=1)[0].run_id
    assert second != outputs["run_id"], failed.stdout + failed.stderr
    rows = ops_db.deployments_created_by(second)
    assert rows, (failed.stdout[-2000:], failed.stderr[-2000:])
    row = ops_db.run(second)
    assert row is not None and row.status == "rolled_back" and row.evidence_dir
    validate_folder(Path(row.evidence_dir), second, "rolled_back")
    restore = json.loads((Path(row.evidence_dir) / "green_restore.json").read_text())
    assert restore["filestore_restore"]["method"] == "ssh-tar" and restore["filestore_restore"]["files"] > 0
    # The router back on blue.
    served = layout.router().served_upstream(PROD)
    assert served.name == blue.deployment_id and served.host == net["production"].address
    # The failed green was started on the production host (its log is there) and is gone from it.
    second_green = rows[-1]
    assert second_green.host == "production"
    assert (box.hosts_root / "production" / "run" / f"{second_green.deployment_id}.log").exists()
    running = layout.processes_in("production")
    assert not [cmd for cmd in running.values() if second_green.data_dir in cmd], running
    assert [cmd for cmd in running.values() if blue.data_dir in cmd]  # what serves stays up


def test_a_promotion_with_productions_data_only_on_its_host(layout: Layout) -> None:
    """Production's data root moved where only the production host sees it: a tmpfs mounted in the mount namespace
    of production's sshd (conftest.sshd_pid says why that is the host's alone), the files copied in and removed
    from the machine's own view. The promoter (on ``worker``) then sees an empty folder at blue's data_dir, as it
    would a folder on another machine's disk; blue (started over SSH) and green see the files. The promotion
    checks, backs up and restores blue's filestore on the host, over SSH."""
    net, ops_db = layout.net, layout.ops()
    prod = ops_db.environment(PROD)
    blue = ops_db.active_deployment(PROD)
    assert prod is not None and blue is not None
    root = Path(prod.filestore_root)
    pid = sshd_pid(net, "production")

    def on_host(*argv: str) -> None:
        subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *argv], check=True, capture_output=True)

    aside = Path(layout.box.root) / "prod-data-aside"
    shutil.copytree(root, aside, symlinks=True)
    on_host("mount", "-t", "tmpfs", "-o", "size=256m,mode=0700", "tmpfs", str(root))
    try:
        on_host("cp", "-a", f"{aside}/.", str(root))
        for entry in root.iterdir():  # the machine's own view of the data root: emptied
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        fs = Path(blue.data_dir) / "filestore" / blue.served_db
        assert not fs.exists()

        done, seconds = layout.promote_on_worker("--accept-drift")
        print(f"promotion with production's data only on its host: {seconds:.1f}s")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        outputs = _outputs(done)
        evidence = Path(outputs["evidence_dir"])
        preflight = json.loads((evidence / "inputs.json").read_text())["preflight"]
        access = next(c for c in preflight if c["check"] == "production_accessible")
        assert access["passed"], access
        backed = json.loads((evidence / "blue_backup.json").read_text())
        count = backed["artifact"]["filestore"]["file_count"]
        assert backed["filestore_read_on"] == "production" and count > 0, backed
        # Read on the host: the store lacked some of blue's files (green's were restored from staging's), so
        # what it lacked travelled; and the index holds every file blue has there.
        listing = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "find", str(fs), "-type", "f"],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert len(listing) == count
        green = ops_db.active_deployment(PROD)
        assert green is not None and green.deployment_id != blue.deployment_id
        assert not (Path(green.data_dir) / "filestore").exists()  # restored where only the host sees it
    finally:
        # Back to the machine's view, for sandbox down and its checks: what the host holds now copied out, the
        # mount undone, and copied back where everyone sees it.
        back = Path(layout.box.root) / "prod-data-back"
        back.mkdir()
        on_host("cp", "-a", f"{root}/.", str(back))
        on_host("umount", "--lazy", str(root))
        shutil.copytree(back, root, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(back, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)


def test_sandbox_down_removes_each_deployment_on_its_host(layout: Layout) -> None:
    """Last in this module: it takes the layout down. Every deployment's Odoo and PgBouncer stopped on its host,
    its data_dir and PgBouncer folder removed there (through SSH), its database and role gone from db."""
    ops_db = layout.ops()
    deployments = ops_db.all_deployments()
    assert {d.host for d in deployments} == {"staging", "production"}
    owned = [d for d in deployments if d.owns_data_dir and d.state != "deleted"]
    assert owned and all(Path(d.data_dir).is_dir() for d in owned)
    # The failed green of the second run was removed at its rollback (it never served): data_dir gone already.
    assert not [d.data_dir for d in deployments if d.state == "deleted" and Path(d.data_dir).exists()]
    assert any(layout.processes_in("production").values())
    layout.box.down()
    for host in ENV_HOSTS.values():
        left = [cmd for cmd in layout.processes_in(host).values() if "sshd" not in cmd]
        assert not left, (host, left)
        assert not list((layout.box.hosts_root / host / "run" / "endpoints").glob("*"))
    assert not [d.data_dir for d in owned if Path(d.data_dir).exists()]
    with psycopg.connect(layout.db_dsn) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
    assert not names & {d.db_name for d in deployments}
    assert not roles & {d.db_role for d in deployments if d.db_role}
