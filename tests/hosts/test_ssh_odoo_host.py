"""An Odoo host reached over SSH (resources/ssh_odoo_host.py), against the test hosts: a private PostgreSQL cluster
in ``db``, the stand-in started in ``production`` through its sshd and answering from the root namespace on
production's address, stopped with its whole process group; strict host keys; files, disk and versions asked of
the host."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from resources import db_endpoint
from resources.netns_hosts import HostNetwork, PgCluster
from resources.odoo_host import HostError, free_port
from resources.ssh_odoo_host import SshOdooHost

KEY_REF = "PROMOTE_TEST_HOSTS_SSH_KEY"
DSN_REF = "PROMOTE_TEST_HOSTS_PROD_DSN"
ROLE = "odoo_app"
TEMPLATE = ("{python} -m odoo_standin serve --db {db} --data-dir {data_dir} --port {http_port}"
            " --host {http_interface} --workers {workers} --websocket-port {websocket_port}")


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (field 5 of /proc/PID/stat); the hosts share this pid space."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state, _ppid, pgrp = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:3]
            except OSError:
                continue
            if int(pgrp) == pgid and state not in ("Z", "X"):
                members.append(int(entry))
    return members


@pytest.fixture(scope="module")
def cluster(host_network: HostNetwork) -> PgCluster:
    """db's own PostgreSQL: the promoter and production reach it on db's address; ``odoo_app`` by password."""
    return host_network.start_postgres("db", scram_users=(ROLE,))


@pytest.fixture(scope="module")
def production(host_network: HostNetwork, cluster: PgCluster) -> Iterator[tuple[SshOdooHost, str, str]]:
    """An SshOdooHost for production, and a stand-in database (on db) with its data_dir (on production)."""
    assert host_network.ssh is not None
    password = secrets.token_urlsafe(16)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(ROLE),
                                                                                 sql.Literal(password)))
    db = f"prod_{secrets.token_hex(4)}"
    data_dir = host_network.host_dir("production") / "data"
    env = {**os.environ, "PGPASSWORD": password, "STANDIN_TEST_ADMIN": secrets.token_urlsafe(12)}
    done = subprocess.run([sys.executable, "-m", "odoo_standin", "init", "--dsn",
                           f"host={cluster.address} port={cluster.port} user={ROLE} dbname=postgres", "--db", db,
                           "--data-dir", str(data_dir), "--admin-password-env", "STANDIN_TEST_ADMIN",
                           "--pbkdf2-rounds", "1000", "--users", "2", "--partners", "5", "--attachments", "3"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    saved = {k: os.environ.get(k) for k in (KEY_REF, DSN_REF)}
    os.environ[KEY_REF] = host_network.ssh.identity_file.read_text()  # the key's text: kept off disk
    os.environ[DSN_REF] = f"host={cluster.address} port={cluster.port} user={ROLE} password={password}"
    host = SshOdooHost(name="production", address=host_network["production"].address, user=host_network.ssh.user,
                       identity_ref=KEY_REF, known_hosts_file=str(host_network.ssh.known_hosts),
                       command_template=TEMPLATE, run_dir=str(host_network.host_dir("production") / "run"),
                       python=sys.executable, startup_timeout_seconds=60)
    try:
        yield host, db, str(data_dir)
    finally:
        host.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_the_stand_in_runs_on_production_over_ssh_and_stops_with_its_whole_group(
        host_network: HostNetwork, production: tuple[SshOdooHost, str, str]) -> None:
    host, db, data_dir = production
    port, bus = free_port(), free_port()
    pid = host.start_odoo(DSN_REF, "env_prod", "dep_ssh_1", db, data_dir, port, bus, workers=2)
    try:
        host.wait_healthy(host.url(port), pid, websocket_port=bus)
        # Answered from the root namespace, on production's address, by a process in production's namespace.
        health = httpx.get(f"{host.url(port)}/web/health", timeout=10)
        assert health.status_code == 200 and health.json().get("status") == "pass", health.text
        where = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True)
        assert where.stdout.strip() == host_network["production"].namespace
        # The password reached it through its environment, never its argv (nor any argv on the way).
        password = os.environ[DSN_REF].rsplit("password=", 1)[1]
        assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert f"PGPASSWORD={password}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        # Its own session and group, outliving the SSH session that started it; a master and its workers.
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid
        assert wait_for(lambda: len(group_members(pid)) >= 3), group_members(pid)
        started = host.process_started(pid)
        assert started == db_endpoint.process_started(pid) and host.is_alive(pid)
        # A recorded start time that is not this process's: left alone, and said why.
        assert started is not None
        refusal = host.stop_odoo(pid, started + 1)
        assert refusal is not None and "reused pid" in refusal and "production" in refusal
        assert host.is_alive(pid)
        assert host.stop_odoo(pid, started) is None
        assert wait_for(lambda: group_members(pid) == []), group_members(pid)
        assert not host.is_alive(pid)
        assert host.stop_odoo(pid, started) is None  # already gone: nothing to do
    finally:
        db_endpoint.stop_group(pid)


def test_a_start_that_fails_on_the_host_is_said(production: tuple[SshOdooHost, str, str]) -> None:
    host, _db, data_dir = production
    port = free_port()
    pid = host.start_odoo(DSN_REF, "env_prod", "dep_ssh_bad", "no_such_db", data_dir, port, port,
                          command_template="{python} -c 'import sys; sys.exit(3)'")
    with pytest.raises(HostError, match="exited during start-up") as caught:
        host.wait_healthy(host.url(port), pid)
    assert "production" in str(caught.value)


def _host_with(production: tuple[SshOdooHost, str, str], **changes: str) -> SshOdooHost:
    return production[0].model_copy(update=changes)


def test_an_unknown_host_key_is_one_line_naming_the_host(production: tuple[SshOdooHost, str, str],
                                                          tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = SshOdooHost(**{**production[0].model_dump(), "known_hosts_file": str(empty)})
    try:
        with pytest.raises(HostError) as caught:
            host.is_alive(1)
    finally:
        host.close()
    message = str(caught.value)
    assert "\n" not in message and "production" in message and "host key unknown" in message, message


def test_a_changed_host_key_is_one_line_naming_the_host(host_network: HostNetwork,
                                                         production: tuple[SshOdooHost, str, str],
                                                         tmp_path: Path) -> None:
    assert host_network.ssh is not None
    keys = {line.split()[0]: line.split(" ", 1)[1] for line in host_network.ssh.known_hosts.read_text().splitlines()}
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{host_network['production'].address} {keys[host_network['staging'].address]}\n")
    host = SshOdooHost(**{**production[0].model_dump(), "known_hosts_file": str(wrong)})
    try:
        with pytest.raises(HostError) as caught:
            host.is_alive(1)
    finally:
        host.close()
    message = str(caught.value)
    assert "\n" not in message and "production" in message and "host key CHANGED" in message, message


def test_the_key_copy_lasts_only_for_the_handshake(production: tuple[SshOdooHost, str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    host = SshOdooHost(**production[0].model_dump())
    seen: list[tuple[int, int]] = []  # (file mode, folder mode) of the key's copy when ssh was handed it
    real_run = subprocess.run

    def watching(argv: list[str], *args: object, **kwargs: object) -> object:
        if "-i" in argv:
            key = Path(argv[argv.index("-i") + 1])
            seen.append((key.stat().st_mode & 0o777, key.parent.stat().st_mode & 0o777))
            assert str(key).startswith("/dev/shm/") or not Path("/dev/shm").is_dir()
        return real_run(argv, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "run", watching)
    try:
        assert host.is_alive(os.getpid())  # this test's own process, seen from production (one pid space)
        assert host.is_alive(os.getpid())
        folder = host._runtime["dir"]
        assert seen == [(0o600, 0o700)]  # one handshake; the second call went over the shared connection
        assert not (folder / "id").exists()
    finally:
        host.close()
    assert not folder.exists()


def test_a_key_file_path_works_and_a_loose_one_is_refused(host_network: HostNetwork,
                                                          production: tuple[SshOdooHost, str, str],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert host_network.ssh is not None
    key = tmp_path / "id"
    shutil.copy(host_network.ssh.identity_file, key)
    key.chmod(0o600)
    monkeypatch.setenv("PROMOTE_TEST_HOSTS_KEY_PATH", str(key))
    host = SshOdooHost(**{**production[0].model_dump(), "identity_ref": "PROMOTE_TEST_HOSTS_KEY_PATH"})
    try:
        assert host.is_alive(os.getpid())
        key.chmod(0o640)
        host.close()
        with pytest.raises(HostError, match="readable by group or others"):
            host.is_alive(os.getpid())
    finally:
        host.close()


def test_files_disk_and_versions_are_the_hosts(production: tuple[SshOdooHost, str, str]) -> None:
    host, db, data_dir = production
    local = [p for p in Path(data_dir, "filestore", db).rglob("*") if p.is_file()]
    assert host.filestore_stats(data_dir, db) == (len(local), sum(p.stat().st_size for p in local))
    assert host.filestore_stats(data_dir, "missing_db") == (0, 0)
    assert host.free_disk_bytes(f"{data_dir}/not/yet/made") > 0
    pg_dump = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.split()[-1]
    assert host.pg_dump_version() == pg_dump
    with pytest.raises(HostError, match="cannot name a filestore"):
        host.remove_filestore(data_dir, "../..")
    # Removing a filestore removes that one only (a copy made for the purpose).
    copy = f"{db}_copy"
    shutil.copytree(Path(data_dir, "filestore", db), Path(data_dir, "filestore", copy))
    host.remove_filestore(data_dir, copy)
    assert not Path(data_dir, "filestore", copy).exists() and Path(data_dir, "filestore", db).is_dir()
    json.dumps(host.filestore_stats(data_dir, db))  # plain ints


def test_files_streamed_to_the_host_land_where_named(production: tuple[SshOdooHost, str, str],
                                                    tmp_path: Path) -> None:
    """receive_files: one tar over the shared connection, each file under its relative name with its mtime,
    owner-only; a name outside the destination refused; remove_tree removes it all and refuses the root."""
    host, _db, data_dir = production
    sources = {"ab/one.bin": os.urandom(3000), "cd/ef/two.bin": b"", "three.txt": b"three\n"}
    entries = []
    for i, (rel, content) in enumerate(sources.items()):
        local = tmp_path / f"object{i}"
        local.write_bytes(content)
        os.utime(local, (1_700_000_000 + i, 1_700_000_000 + i))
        entries.append((rel, local))
    dest = f"{data_dir}/received"
    assert host.receive_files(dest, iter(entries)) == {"files": 3, "bytes": 3006}
    for i, (rel, content) in enumerate(sources.items()):
        landed = Path(dest, rel)
        assert landed.read_bytes() == content and int(landed.stat().st_mtime) == 1_700_000_000 + i
        assert landed.stat().st_mode & 0o077 == 0
    with pytest.raises(HostError, match="refusing to write '../escape'"):
        host.receive_files(dest, iter([("../escape", entries[0][1])]))
    assert not Path(data_dir, "escape").exists()
    host.remove_tree(dest)
    assert not Path(dest).exists()
    with pytest.raises(HostError, match="refusing to remove"):
        host.remove_tree("/")


def test_a_deployments_pgbouncer_runs_next_to_its_odoo_on_the_host(
        host_network: HostNetwork, cluster: PgCluster, production: tuple[SshOdooHost, str, str]) -> None:
    """start_endpoint writes the configuration there and starts PgBouncer in production's namespace, on its
    loopback; endpoint_query reaches the database through it from there (and only the name it serves);
    stop_endpoint stops it."""
    host, db, _data_dir = production
    role, password = f"ep_{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    salt = os.urandom(16)
    verifier = db_endpoint.scram_verifier(password, salt)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
    port = host.free_port()
    deployment = f"dep_ep_{secrets.token_hex(3)}"
    auth = Path(host.endpoint_dir(deployment)) / "userlist.txt"
    auth_text, ini_text = db_endpoint.config_texts(auth, port, "served_name", db, cluster.address,
                                                   str(cluster.port), role, verifier,
                                                   host.endpoint_os_user if host.user == "root" else None)
    pid = host.start_endpoint(deployment, port, auth_text, ini_text)
    try:
        identified = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True)
        assert identified.stdout.strip() == host_network["production"].namespace
        assert auth.stat().st_mode & 0o077 == 0
        endpoint = db_endpoint.Endpoint(host="127.0.0.1", port=port, user=role, password=password,
                                        dbname="served_name")
        assert host.endpoint_query(endpoint, "SELECT 1, current_database()") == f"1|{db}"
        assert host.endpoint_query(replace(endpoint, dbname=db), "SELECT 1") is None  # only the served name
        started = host.process_started(pid)
        assert host.stop_endpoint(pid, started) is None
        assert wait_for(lambda: not host.is_alive(pid), 15)
    finally:
        if host.is_alive(pid):
            host.stop_endpoint(pid, host.process_started(pid))
        host.remove_tree(host.endpoint_dir(deployment))
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_free_port_is_the_hosts(production: tuple[SshOdooHost, str, str], host_network: HostNetwork) -> None:
    """Picked there: a port a server on the host's address can listen on (checked by listening there)."""
    host, _db, _data_dir = production
    port = host.free_port()
    address = host_network["production"].address
    done = host_network.run("production", [sys.executable, "-c", "import socket; s = socket.socket();"
                                           f" s.bind(('{address}', {port})); s.listen(); print('ok')"])
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.unit
def test_both_hosts_offer_what_a_promotion_asks_of_an_odoo_host(tmp_path: Path) -> None:
    from resources.odoo_host import LocalOdooHost, OdooProcessHost

    ssh_host = SshOdooHost(name="production", address="192.0.2.1", user="odoo", identity_ref="K",
                           known_hosts_file=str(tmp_path / "known_hosts"), command_template="x",
                           run_dir="/srv/odoo/run")
    remote: OdooProcessHost = ssh_host  # mypy checks the signatures; isinstance, the names
    local: OdooProcessHost = LocalOdooHost(command_template="x", run_dir=str(tmp_path))
    assert isinstance(remote, OdooProcessHost) and isinstance(local, OdooProcessHost)
    assert remote.filestore_dir("/srv/odoo/data", "prod") == Path("/srv/odoo/data/filestore/prod")
    assert ssh_host.url(8069) == "http://192.0.2.1:8069"
