"""An installation whose Odoo runs on other hosts, onboarded through the inventory.

The hosts are network namespaces (``resources/netns_hosts.py``), each with its own sshd: PostgreSQL in ``db``,
staging's and production's Odoo (odoo_standin, started here on their hosts as the operator ran them before
onboarding) in ``staging`` and ``production``, and ``promote inventory`` itself run on ``worker`` (so the router it
starts lives and dies with that namespace). The inventory declares the two hosts and puts each environment on its
own: the check asks each host over SSH (a host whose key the known_hosts file lacks is one line) and probes the
adoption there (its data_dir, its ports); apply adopts both, each Odoo restarted on its own host, and records it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from resources.netns_hosts import HostNetwork
from resources.odoo_host import free_port
from resources.ops_db import OpsDatabase

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists(),
                                 reason="haproxy not installed"),
              pytest.mark.skipif(shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists(),
                                 reason="pgbouncer not installed")]

DSN_REF, ROLE_KEY_REF, ADMIN_REF = "PROMOTE_INVH_PG_DSN", "PROMOTE_INVH_ROLE_KEY", "PROMOTE_INVH_ADMIN"
KEY_REF = "PROMOTE_INVH_SSH_KEY"
STANDIN = "{python} -m odoo_standin serve --db {db} --data-dir {data_dir} --port {http_port} --host {http_interface}"
# Variables of the surrounding test session that would redirect a promote process started here.
_FOREIGN = ("PROMOTE_SETTINGS", "PROMOTE_EVIDENCE_ROOT", "PROMOTE_OPS_DATABASE", "PROMOTE_SECRETS_FILE",
            "DAGSTER_HOME")


def _promote(net: HostNetwork, *args: str) -> subprocess.CompletedProcess[str]:
    """``promote ARGS`` on the worker host, knowing only this installation (its inventory names the rest)."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    return subprocess.run(net["worker"].exec_argv([sys.executable, "-m", "promote_pipeline", *args]),
                          capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)


def _lines(done: subprocess.CompletedProcess[str], code: int) -> list[str]:
    assert done.returncode == code, done.stdout + done.stderr
    return done.stdout.splitlines()


def _operators_odoo(net: HostNetwork, host: str, dsn: str, db: str, data_dir: Path, port: int, log: Path) -> int:
    """An Odoo as the operator runs it on ``host`` before onboarding: on the host's address, straight to the
    database (no PgBouncer)."""
    pid = net.spawn(host, [sys.executable, "-m", "odoo_standin", "serve", "--db", db, "--data-dir", str(data_dir),
                           "--port", str(port), "--host", net[host].address, "--dsn", dsn,
                           # The operator's Odoo logs in as the server's superuser here (the test cluster's only
                           # user); adoption gives the database a role of its own.
                           "--allow-superuser-role-for-tests"], log,
                    env={**os.environ, "STANDIN_DSN": dsn})
    net.wait_listening(host, port, pid, timeout=60)
    return pid


def _gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped when it is this process's child (the operator's Odoo)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _stop(pid: int) -> None:
    """A process group stopped, and waited for until its leader is gone."""
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.05)
    os.killpg(pid, signal.SIGKILL)


def _inventory(root: Path, net: HostNetwork, tag: str, known_hosts: Path) -> dict[str, Any]:
    assert net.ssh is not None
    commit = secrets.token_hex(20)

    def environment(kind: str, name: str) -> dict[str, Any]:
        return {"project": f"proj_{tag}", "kind": kind, "db_dsn_ref": DSN_REF, "odoo_db_name": f"invh_{tag}_{name}",
                "db_name_prefix": f"invh_{tag}_{name}", "data_root": str(root / "data" / name),
                "worker_mode": "threaded", "git_commit_sha": commit, "smoke_login": "admin",
                "smoke_password_ref": ADMIN_REF, "host": name,
                "adopt": {"db_name": f"invh_{tag}_{name}", "data_dir": str(root / "live" / name),
                          "http_port": free_port(), "endpoint_port": free_port()}}

    prod = environment("production", "production")
    prod["adopt"]["first_blue"] = True
    hosts = {name: {"address": net[name].address, "user": net.ssh.user, "identity_ref": KEY_REF,
                    "known_hosts_file": str(known_hosts), "run_dir": str(root / "hosts" / name / "run"),
                    "python": sys.executable} for name in ("staging", "production")}
    return {
        "settings": {"file": "etc/settings.json", "ops_dsn_ref": DSN_REF, "ops_database": f"promote_ops_invh_{tag}",
                     "secrets_file": "secrets.json", "role_key_ref": ROLE_KEY_REF, "run_dir": "run",
                     "odoo_command": STANDIN},
        "storage": {"evidence_root": "evidence", "artifact_root": "artifacts"},
        "projects": {f"proj_{tag}": {"name": "Onboarded on hosts"}},
        "environments": {f"env_{tag}_staging": environment("staging", "staging"), f"env_{tag}_prod": prod},
        "users": {"invh_user": {f"proj_{tag}": ["promote"]}},
        "router": {"kind": "haproxy", "dir": "router",
                   "fronts": {f"env_{tag}_prod": {"active_port": free_port(), "preview_port": free_port()}}},
        "hosts": hosts,
    }


def test_check_asks_the_hosts_and_apply_adopts_each_odoo_on_its_own_host(host_network: HostNetwork,
                                                                          tmp_path: Path) -> None:
    net = host_network
    assert net.ssh is not None
    pg = net.start_postgres("db")
    tag = secrets.token_hex(3)
    root = tmp_path
    password = secrets.token_urlsafe(12)
    dbs = {name: f"invh_{tag}_{name}" for name in ("staging", "production")}
    standin_env = {**os.environ, "STANDIN_DSN": pg.dsn(), "STANDIN_ADMIN_PASSWORD": password}
    # What the operator has: production's database and data_dir, staging copied from it, on db.
    subprocess.run([sys.executable, "-m", "odoo_standin", "init", "--db", dbs["production"], "--data-dir",
                    str(root / "live" / "production"), "--partners", "10", "--attachments", "3", "--pbkdf2-rounds",
                    "1000"], check=True, env=standin_env, stdout=subprocess.DEVNULL)
    (root / "live" / "production" / "sessions").mkdir()
    (root / "live" / "production" / "sessions" / "werkzeug_session1.sess").write_text("a user's session")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(dbs["staging"]),
                                                                      sql.Identifier(dbs["production"])))
    shutil.copytree(root / "live" / "production" / "filestore" / dbs["production"],
                    root / "live" / "staging" / "filestore" / dbs["staging"])
    subprocess.run([sys.executable, "-m", "odoo_standin", "neutralize", "--db", dbs["staging"], "--base-url",
                    "http://staging.localhost"], check=True, env=standin_env, stdout=subprocess.DEVNULL)
    for name in ("staging", "production"):
        (root / "data" / name).mkdir(parents=True)
    (root / "etc").mkdir()
    fd = os.open(root / "secrets.json", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps({DSN_REF: pg.dsn(), ROLE_KEY_REF: secrets.token_urlsafe(24),
                                          ADMIN_REF: password, KEY_REF: str(net.ssh.identity_file)}))
    # A known_hosts file holding production's key only: staging's is unknown.
    partial_hosts = root / "known_hosts_partial"
    partial_hosts.write_text("".join(line + "\n" for line in net.ssh.known_hosts.read_text().splitlines()
                                     if line.strip() and net["staging"].address not in line.split()[0].split(",")))
    data = _inventory(root, net, tag, partial_hosts)
    inventory = root / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    staging_id, prod_id = f"env_{tag}_staging", f"env_{tag}_prod"
    ports = {name: data["environments"][env_id]["adopt"]["http_port"]
             for name, env_id in (("staging", staging_id), ("production", prod_id))}

    # The operator's Odoo still runs on each host.
    running = {name: _operators_odoo(net, name, pg.dsn(), dbs[name], root / "live" / name, ports[name],
                                     root / f"operator-{name}.log") for name in ("staging", "production")}
    try:
        started = time.monotonic()
        lines = _lines(_promote(net, "inventory", "check", str(inventory)), 2)
        print(f"check, staging's key unknown: {time.monotonic() - started:.1f}s")
        hosts_lines = [line for line in lines if line.startswith("hosts.")]
        assert hosts_lines == [line for line in lines if line.startswith("hosts.staging: ")], lines
        assert len(hosts_lines) == 1 and "host key unknown" in hosts_lines[0], lines
        assert str(partial_hosts) in hosts_lines[0]
        # Production's host answers: its adoption is probed there, where its Odoo still holds the port.
        assert (f"environments.{prod_id}.adopt.http_port: port {ports['production']} is in use on host production:"
                f" stop the Odoo serving {dbs['production']} (and whatever else holds the port) first (adoption"
                " restarts it once, behind the router)") in lines, lines
        # Staging's host does not answer: nothing of its adoption is asked.
        assert not [line for line in lines if line.startswith(f"environments.{staging_id}.")], lines
    finally:
        for pid in running.values():
            _stop(pid)

    data["hosts"]["staging"]["known_hosts_file"] = data["hosts"]["production"]["known_hosts_file"] = \
        str(net.ssh.known_hosts)
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    started = time.monotonic()
    check = _lines(_promote(net, "inventory", "check", str(inventory)), 0)
    print(f"check: {time.monotonic() - started:.1f}s")
    assert check[0].startswith(f"inventory {inventory}: fine"), check

    started = time.monotonic()
    applied = _lines(_promote(net, "inventory", "apply", str(inventory)), 0)
    print(f"apply: {time.monotonic() - started:.1f}s")
    assert (f"adopt {staging_id}: its live deployment dep_{staging_id}_live (database {dbs['staging']}, port"
            f" {ports['staging']} on host staging); its Odoo restarts once") in applied, applied
    assert any(line.startswith("  its Odoo restarted once, on host production, behind the router") for line in applied)

    ops_db = OpsDatabase(dsn_ref=DSN_REF, database=data["settings"]["ops_database"])
    os.environ[DSN_REF] = pg.dsn()  # this process reads the ops database too
    try:
        for env_id, host in ((staging_id, "staging"), (prod_id, "production")):
            live = ops_db.active_deployment(env_id)
            assert live is not None and live.host == host and live.pid and live.endpoint_pid, live
            for pid in (live.pid, live.endpoint_pid):  # restarted on its own host, its PgBouncer next to it
                identified = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True)
                assert identified.stdout.strip() == net[host].namespace, (env_id, pid)
            adoption = ops_db.latest_run(env_id, ("adopt",))
            assert adoption is not None and adoption.status == "success" and adoption.metadata["host"] == host
        # The sessions joined the environment's shared folder (on the host: the file system is shared here).
        shared = root / "data" / "production" / "sessions"
        assert (shared / "werkzeug_session1.sess").is_file()
        assert os.readlink(root / "live" / "production" / "sessions") == str(shared)
        # The router (on the worker) serves production's adopted Odoo, on production's address.
        active = data["router"]["fronts"][prod_id]["active_port"]
        served = net.run("worker", [sys.executable, "-c", "import urllib.request; print(urllib.request.urlopen("
                                    f"'http://127.0.0.1:{active}/web/health', timeout=10).headers.get("
                                    "'X-Promote-Upstream'))"])
        assert served.stdout.strip() == f"dep_{prod_id}_live", served.stdout + served.stderr
        # A second apply changes nothing; the check asks the hosts again and agrees.
        assert _lines(_promote(net, "inventory", "apply", str(inventory)), 0) == [
            f"nothing to change: the settings file, the ops database and the router match {inventory}"]

        # Production's Odoo gone (as after a reboot of its host): apply asks that host, and starts it there again.
        before = ops_db.active_deployment(prod_id)
        assert before is not None and before.pid
        _stop(before.pid)
        restarted = _lines(_promote(net, "inventory", "apply", str(inventory)), 0)
        assert restarted[0] == f"deployment dep_{prod_id}_live: not running; starting it", restarted
        after = ops_db.active_deployment(prod_id)
        assert after is not None and after.pid and after.pid != before.pid and after.host == "production"
        identified = subprocess.run(["ip", "netns", "identify", str(after.pid)], capture_output=True, text=True)
        assert identified.stdout.strip() == net["production"].namespace
    finally:
        os.environ.pop(DSN_REF, None)
