"""The preconditions on the real host: a real PostgreSQL (the session sandbox's server and its Odoo-shaped
databases, read only), real folders, real advisory locks, and an ops database of the test's own that records a
project pointing at them, so each branch is one change of a row or a folder.

The version check reads the server's version as the connection reports it; an older production server is a
real PostgreSQL reached through a loopback proxy that announces version 14 at start-up, as a 14 would.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from promote_pipeline.cli import sandbox as sbx
from promote_pipeline.cli.sandbox import DSN_REF, Sandbox
from promote_pipeline.promotion.inputs import PromotionInputs
from promote_pipeline.promotion.preflight import CHECKS, PreconditionFailed, Preflight
from promote_pipeline.promotion.settings import default_server_dsn
from resources.artifact_store import LocalArtifactStore
from resources.odoo_host import LocalOdooHost
from resources.ops_db import CompletedRun, DeploymentRecord, EnvironmentRecord, OpsDatabase

pytestmark = pytest.mark.slow

PROMOTE = Path(sys.executable).parent / "promote"
COMMIT = "c" * 40


@dataclass
class Setup:
    """A project (p, staging s, production e, user u may promote) over the sandbox's live databases."""

    ops_db: OpsDatabase
    host: LocalOdooHost
    store: LocalArtifactStore
    box: Sandbox
    prod_dir: Path
    prod_db: str
    staging_db: str

    def preflight(self) -> Preflight:
        inputs = PromotionInputs(project_id="p", staging_env_id="s", prod_env_id="e", user_id="u")
        return Preflight(self.ops_db, self.host, self.store, inputs)

    def run_all(self) -> dict[str, tuple[bool, str]]:
        check = self.preflight()
        try:
            results = check.run(stop_on_failure=False)
        finally:
            check.release()
        return {r.name: (r.passed, r.message) for r in results}

    def set_environment(self, env_id: str, **changes: Any) -> None:
        row = self.ops_db.environment(env_id)
        assert row is not None
        self.ops_db.update_environment(row.model_copy(update=changes))

    def replace_prod_deployment(self, **changes: Any) -> None:
        with self.ops_db.connect() as conn:  # the test's own ops database: retire blue, record another
            conn.execute("UPDATE ops.deployments SET state = 'retired' WHERE deployment_id = 'dep_e'")
        if changes:
            self.ops_db.add_deployment(_deployment("dep_e2", "e", self.prod_db, self.prod_dir).model_copy(
                update=changes))


def _deployment(dep_id: str, env_id: str, db: str, data_dir: Path) -> DeploymentRecord:
    return DeploymentRecord(deployment_id=dep_id, environment_id=env_id, db_name=db, data_dir=str(data_dir),
                            http_port=None, websocket_port=None, pid=None, state="active")


@pytest.fixture
def setup(haproxy_box: Sandbox, private_ops_db: OpsDatabase, tmp_path: Path) -> Setup:
    res = haproxy_box.resources()
    live = res["ops_db"]
    prod, staging = live.active_deployment(sbx.PROD), live.active_deployment(sbx.STAGING)
    assert prod is not None and staging is not None
    envs = [EnvironmentRecord(environment_id=env_id, project_id="p", kind=kind, git_commit_sha=COMMIT,
                              db_dsn_ref=DSN_REF, db_name_prefix=f"pf_{kind}", filestore_root=str(tmp_path))
            for env_id, kind in (("s", "staging"), ("e", "production"))]
    private_ops_db.add_project("p", "P", envs, grants=[("u", "promote")],
                               history=[CompletedRun(environment_id="s", operation_type="deploy", created_by="ci"),
                                        # staging copied from production now: no drift for the gate to find
                                        CompletedRun(environment_id="s", operation_type="restore", created_by="ci",
                                                     metadata={"source_environment_id": "e"})])
    prod_dir = tmp_path / "prod"
    (prod_dir / "filestore" / prod.db_name).mkdir(parents=True)  # served under its physical name here
    private_ops_db.add_deployment(_deployment("dep_e", "e", prod.db_name, prod_dir))
    private_ops_db.add_deployment(_deployment("dep_s", "s", staging.db_name, tmp_path / "staging"))
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"), create_root=True)
    return Setup(private_ops_db, res["odoo_host"], store, haproxy_box, prod_dir, prod.db_name, staging.db_name)


def _failed(results: dict[str, tuple[bool, str]]) -> dict[str, str]:
    return {name: message for name, (passed, message) in results.items() if not passed}


def test_a_project_in_order_passes_every_check(setup: Setup) -> None:
    results = setup.run_all()
    assert list(results) == list(CHECKS) and _failed(results) == {}
    major = setup.host.server_major_version(DSN_REF)
    assert results["postgres_compatible"] == (True, f"PostgreSQL {major} -> {major}")


def test_staging_with_no_deploy_run_is_refused(setup: Setup) -> None:
    with setup.ops_db.connect() as conn:
        conn.execute("DELETE FROM ops.runs WHERE environment_id = 's'")
    failed = _failed(setup.run_all())
    assert failed.pop("staging_successful") == "staging s has no deploy, restore or adoption run"
    # The copy of production into staging went with the runs: the drift gate cannot tell what would be lost.
    assert list(failed) == ["no_production_drift"] and "is unknown" in failed["no_production_drift"]
    assert "--accept-drift" in failed["no_production_drift"]


def test_an_unknown_commit_is_refused(setup: Setup) -> None:
    setup.set_environment("s", git_commit_sha=None)
    assert _failed(setup.run_all()) == {"same_commit_sha": f"commit SHA unknown (staging None, production {COMMIT!r})"}


def test_a_dead_run_holding_no_lock_is_refused_and_the_lock_given_back(setup: Setup) -> None:
    run_id = setup.ops_db.create_run("p", "e", "u", {}, None)  # marked running; its worker (and lock) are gone
    assert _failed(setup.run_all()) == {"no_concurrent_operations": (
        f"run {run_id} is still marked running on e but holds no lock (it died): roll it back first")}
    assert setup.ops_db.lock_holder_pid("e") is None


def test_a_live_holder_of_the_lock_is_named(setup: Setup) -> None:
    run_id = setup.ops_db.create_run("p", "e", "u", {}, None)
    lock = setup.ops_db.try_lock_environment("e")  # its worker, alive
    assert lock is not None
    try:
        assert _failed(setup.run_all()) == {"no_concurrent_operations": f"production e is busy: run {run_id} holds it"}
    finally:
        lock.release()


def test_production_with_no_active_deployment_fails_its_check_and_the_rest_still_run(setup: Setup) -> None:
    setup.replace_prod_deployment()
    results = setup.run_all()
    assert list(results) == list(CHECKS)  # every check has its line, none crashed on the missing deployment
    failed = _failed(results)
    assert failed["production_accessible"] == "production e has no active deployment"
    assert set(failed) == {"production_accessible", "sufficient_disk_space", "same_odoo_version", "no_production_drift"}
    assert all("not checked" in failed[name] for name in ("sufficient_disk_space", "same_odoo_version",
                                                          "no_production_drift"))


def test_an_unreachable_production_database_is_refused(setup: Setup) -> None:
    missing = f"pf_gone_{secrets.token_hex(3)}"
    setup.replace_prod_deployment(db_name=missing)  # PostgreSQL answers: no such database
    message = _failed(setup.run_all())["production_accessible"]
    assert message.startswith(f"cannot connect to production database {missing}:")
    assert f'database "{missing}" does not exist' in message


def test_a_filestore_that_is_not_writable_is_refused(setup: Setup, tmp_path: Path,
                                                     mount_tmpfs: Callable[..., Path]) -> None:
    data_dir = tmp_path / "prod_ro"
    filestore = f"filestore/{setup.prod_db}"
    if os.geteuid() == 0:  # root writes through any mode bits: only a read-only file system stops it
        mount_tmpfs(data_dir, size="1m", read_only=True, make=(filestore,))
    else:
        (data_dir / filestore).mkdir(parents=True)
        (data_dir / filestore).chmod(0o500)
    setup.replace_prod_deployment(data_dir=str(data_dir))
    assert _failed(setup.run_all())["production_accessible"] == \
        f"production filestore {data_dir / filestore} is missing or not writable"


def test_a_missing_filestore_is_refused(setup: Setup, tmp_path: Path) -> None:
    setup.replace_prod_deployment(data_dir=str(tmp_path / "nowhere"))
    assert _failed(setup.run_all())["production_accessible"] == \
        f"production filestore {tmp_path / 'nowhere' / 'filestore' / setup.prod_db} is missing or not writable"


def test_promote_preflight_runs_every_check_and_reports_each(setup: Setup) -> None:
    """Three checks fail; the command does not stop at the first: each check gets a PASS or FAIL line."""
    setup.set_environment("s", git_commit_sha=None)
    setup.ops_db.revoke_permission("u", "p", "promote")
    setup.replace_prod_deployment()
    env = {**os.environ, "PROMOTE_SETTINGS": str(setup.box.settings_file),
           "PROMOTE_OPS_DATABASE": setup.ops_db.database}
    done = subprocess.run([str(PROMOTE), "preflight", "p", "--staging", "s", "--prod", "e", "--user", "u"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and not done.stderr, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(" ", 2)[1] for line in lines] == [f"{n}." for n in range(1, len(CHECKS) + 1)]
    verdicts = {line.split(" ", 2)[2].split(":")[0]: line.split(" ", 1)[0] for line in lines}
    assert verdicts == {name: ("FAIL" if name in ("same_commit_sha", "promote_permission", "production_accessible",
                                                  "sufficient_disk_space", "same_odoo_version",
                                                  "no_production_drift") else "PASS")
                        for name in CHECKS}
    assert "Traceback" not in done.stderr


# -- the version check, against a PostgreSQL that says it is 14 -------------------------------------------------
def _announcing(version: str, server: tuple[str, int]) -> Iterator[int]:
    """A loopback proxy to ``server`` that rewrites the ``server_version`` the server reports at start-up."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pump(src: socket.socket, dst: socket.socket, rewrite: bool) -> None:
        buffer = b""
        try:
            while data := src.recv(65536):
                if not rewrite:
                    dst.sendall(data)
                    continue
                buffer += data
                out = b""
                while len(buffer) >= 5 and len(buffer) >= 1 + struct.unpack("!I", buffer[1:5])[0]:
                    size = 1 + struct.unpack("!I", buffer[1:5])[0]
                    message, buffer = buffer[:size], buffer[size:]
                    if message[:1] == b"S" and message[5:].split(b"\0")[0] == b"server_version":
                        body = b"server_version\0" + version.encode() + b"\0"
                        message = b"S" + struct.pack("!I", 4 + len(body)) + body
                    out += message
                    if message[:1] == b"Z":  # ready for query: start-up is over, the rest passes as it is
                        rewrite = False
                dst.sendall(out + (buffer if not rewrite else b""))
                if not rewrite:
                    buffer = b""
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(server)
            threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, True), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.fixture
def postgres_14(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    params = psycopg.conninfo.conninfo_to_dict(default_server_dsn())
    for port in _announcing("14.11", (str(params.get("host", "127.0.0.1")), int(params.get("port", 5432)))):
        # sslmode=disable: the proxy reads the start-up in the clear
        monkeypatch.setenv("PROMOTE_TEST_PG14_DSN", f"host=127.0.0.1 port={port} user={params.get('user', 'postgres')}"
                                                    " sslmode=disable")
        yield "PROMOTE_TEST_PG14_DSN"


def _versions(setup: Setup, staging_ref: str, prod_ref: str) -> Preflight:
    check = setup.preflight()
    check.staging = setup.ops_db.environment("s").model_copy(update={"db_dsn_ref": staging_ref})
    check.prod = setup.ops_db.environment("e").model_copy(update={"db_dsn_ref": prod_ref})
    return check


def test_target_postgres_may_be_newer_or_equal(setup: Setup, postgres_14: str) -> None:
    assert setup.host.server_major_version(postgres_14) == 14  # what the proxy announces, read as usual
    major = setup.host.server_major_version(DSN_REF)
    assert major > 14, "the test needs a server newer than the 14 its proxy announces"
    assert _versions(setup, DSN_REF, DSN_REF).postgres_compatible() == f"PostgreSQL {major} -> {major}"
    assert _versions(setup, postgres_14, DSN_REF).postgres_compatible() == f"PostgreSQL 14 -> {major}"


def test_target_postgres_older_than_the_dump_is_refused(setup: Setup, postgres_14: str) -> None:
    with pytest.raises(PreconditionFailed, match="production's PostgreSQL 14 is older than staging's 1[5-9]"):
        _versions(setup, DSN_REF, postgres_14).postgres_compatible()


@pytest.fixture
def postgres_99(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A server newer than any pg_dump installed here: pg_dump refuses to dump it."""
    params = psycopg.conninfo.conninfo_to_dict(default_server_dsn())
    for port in _announcing("99.1", (str(params.get("host", "127.0.0.1")), int(params.get("port", 5432)))):
        monkeypatch.setenv("PROMOTE_TEST_PG99_DSN", f"host=127.0.0.1 port={port} user={params.get('user', 'postgres')}"
                                                    " sslmode=disable")
        yield "PROMOTE_TEST_PG99_DSN"


def test_each_server_is_checked_against_the_promoters_pg_dump(setup: Setup, postgres_99: str) -> None:
    """The snapshot is dumped from staging's server and blue's backup from production's, by the promoter's one
    pg_dump: a server newer than it, on either side, is refused before anything starts, naming that side."""
    tools = setup.host.pg_dump_major()
    assert tools is not None and tools < 99
    with pytest.raises(PreconditionFailed, match=rf"^pg_dump {tools} on the promoter cannot dump production's"
                                                 r" PostgreSQL 99 "):
        _versions(setup, DSN_REF, postgres_99).postgres_compatible()
    with pytest.raises(PreconditionFailed, match=rf"^pg_dump {tools} on the promoter cannot dump staging's"
                                                 r" PostgreSQL 99 "):
        _versions(setup, postgres_99, postgres_99).postgres_compatible()
