"""Shared fixtures: isolated sandboxes (real PostgreSQL, router and odoo_standin processes).

Each router gets one sandbox for the whole session, with its own ops database and database
names, built in a temporary folder; tests promote through it in any order, because every test
reads the current state (which deployment is blue) instead of assuming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from promote_pipeline.cli import sandbox as sandbox_mod
from promote_pipeline.cli.runner import run_promotion
from promote_pipeline.cli.sandbox import Sandbox
from promote_pipeline.promotion import settings
from promote_pipeline.promotion.models import PromotionOutcome
from resources.artifact_store import LocalArtifactStore
from resources.odoo_host import free_port
from resources.ops_db import OpsDatabase

_boxes: dict[str, Sandbox] = {}
_suite_settings: list[Path] = []


_suite_cluster: list[Path] = []


def _start_suite_cluster() -> None:
    """The suite's own PostgreSQL cluster, started once (by the first pytest process; xdist's workers inherit it
    through PGHOST/PGPORT): the machine's server may be in use by another suite or a real team, and each of our
    deployments holds a PgBouncer and a stand-in's connections, so two suites on one server run out of its 100
    clients. Durability is off (fsync, full pages): its data lives for this run only."""
    data = Path(tempfile.mkdtemp(prefix="promote-suite-pg-"))
    if os.geteuid() == 0:  # initdb refuses root; the data folder must be the postgres user's
        shutil.chown(data, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not bins:
        raise pytest.UsageError("no PostgreSQL server is installed (/usr/lib/postgresql/*/bin): run `make deps`")
    subprocess.run([*as_postgres, str(bins[-1] / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    options = (f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c max_connections=400 -c fsync=off"
               " -c synchronous_commit=off -c full_page_writes=off")
    subprocess.run([*as_postgres, str(bins[-1] / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w",
                    "-o", options, "start"], check=True, stdout=subprocess.DEVNULL)
    _suite_cluster.append(data)
    os.environ.update({"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres",
                       "STANDIN_DSN": f"host=127.0.0.1 port={port} user=postgres", "PROMOTE_SUITE_PG": str(port)})


def _stop_suite_cluster() -> None:
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    for data in _suite_cluster:
        pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
        subprocess.run([*as_postgres, str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"], check=False,
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
    _suite_cluster.clear()


def pytest_configure(config: pytest.Config) -> None:
    """The suite's own settings file, for what runs before (or without) a sandbox: importing the code location,
    building definitions. Outside a sandbox a missing settings file is an error, so the suite names one of its own
    (unless the caller's PROMOTE_SETTINGS names one), and never reads the checkout's ``.sandbox/``."""
    pure = config.getoption("markexpr", "") == "unit"  # `make unit`: no test may reach a server anyway
    if not pure and not os.environ.get("PROMOTE_SUITE_PG") and not os.environ.get("PROMOTE_TEST_SHARED_POSTGRES"):
        _start_suite_cluster()
    if os.environ.get("PROMOTE_SETTINGS"):
        return
    folder = Path(tempfile.mkdtemp(prefix="promote-suite-"))
    path = folder / "settings.json"
    path.write_text(json.dumps({"artifact_root": str(folder / "artifacts"), "run_dir": str(folder / "run"),
                                "router_dir": str(folder / "router")}))
    os.environ["PROMOTE_SETTINGS"] = str(path)
    _suite_settings.append(folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_suite_cluster()
    for folder in _suite_settings:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _unit_tests_stay_pure(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked ``unit`` (``make unit``) connects to no PostgreSQL and starts no process: enforced here,
    so the marker cannot drift into a promise the fast run does not keep."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError(f"{request.node.nodeid} is marked unit but connects to PostgreSQL or starts a process")

    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(refuse))
    monkeypatch.setattr(psycopg, "connect", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session")
def sandbox_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Sandbox]]:
    evidence_root = tmp_path_factory.mktemp("evidence")

    def get(router: str) -> Sandbox:
        if router not in _boxes:
            tag = secrets.token_hex(3)
            box = Sandbox(root=tmp_path_factory.mktemp(f"sandbox-{router}"), router_kind=router,
                          ops_database=f"promote_ops_test_{tag}", db_prefix=f"pt_{tag}", pbkdf2_rounds=1000,
                          partners=30, attachments=8)
            try:
                box.up()
            except BaseException:
                # What it started before failing (stand-ins, PgBouncers, the router, its databases) would outlive
                # the suite: the teardown below only takes down the sandboxes that came up.
                with contextlib.suppress(Exception):
                    box.down()
                raise
            _boxes[router] = box
        box = _boxes[router]
        box.activate()
        # Child processes the tests start (`promote`, a worker, a webserver) inherit the sandbox and evidence root.
        os.environ.update(box.env())
        os.environ["PROMOTE_EVIDENCE_ROOT"] = str(evidence_root)
        return box

    yield get
    for box in _boxes.values():
        box.down()
    _boxes.clear()


@pytest.fixture(params=["haproxy", "nginx"])
def box(request: pytest.FixtureRequest, sandbox_factory: Callable[[str], Sandbox]) -> Sandbox:
    return sandbox_factory(request.param)


@pytest.fixture
def private_ops_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpsDatabase]:
    """A private ops database, migrated, with a random name, on the machine's PostgreSQL; dropped afterwards."""
    from promote_pipeline.promotion.settings import default_server_dsn

    monkeypatch.setenv("PROMOTE_TEST_PRIVATE_OPS_DSN", default_server_dsn())
    ops_db = OpsDatabase(dsn_ref="PROMOTE_TEST_PRIVATE_OPS_DSN", database=f"promote_ops_t_{secrets.token_hex(4)}")
    ops_db.upgrade()
    yield ops_db
    drop_database(ops_db.database)


def drop_database(name: str) -> None:
    from promote_pipeline.promotion.settings import default_server_dsn

    with psycopg.connect(default_server_dsn(), dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[..., Path]]:
    """Mount a real, small tmpfs on a test's folder: a real full disk (``size``), or with ``read_only`` a file system
    nobody writes to, root included (after making the folders of ``make`` in it). Every mount is undone after the
    test; the test is skipped, saying why, where mounting is not permitted (not root, or a container without it)."""
    mounted: list[Path] = []

    def mount(path: Path, size: str = "4m", read_only: bool = False, make: tuple[str, ...] = ()) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs for a real full or read-only disk: {done.stderr.strip() or 'not root'}")
        mounted.append(path)
        for folder in make:
            (path / folder).mkdir(parents=True, exist_ok=True)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "--lazy", str(path)], check=False)


@pytest.fixture
def haproxy_box(sandbox_factory: Callable[[str], Sandbox]) -> Sandbox:
    return sandbox_factory("haproxy")


def demo_inputs(**overrides: Any) -> dict[str, Any]:
    return {"project_id": sandbox_mod.PROJECT, "staging_env_id": sandbox_mod.STAGING,
            "prod_env_id": sandbox_mod.PROD, "user_id": sandbox_mod.USER, "stability_window_seconds": 1,
            **overrides}


def promote(**overrides: Any) -> tuple[int, PromotionOutcome | None, str | None]:
    resource_overrides = overrides.pop("resource_overrides", None)
    return run_promotion(demo_inputs(**overrides), quiet=True, resource_overrides=resource_overrides)


def write_fault(box: Sandbox, **faults: Any) -> None:
    """Fault switches for deployments started from now on (blue, already running, is spared)."""
    path = box.root / "faults" / f"{sandbox_mod.PROD}.json"
    path.write_text(json.dumps({"not_before": time.time(), **faults}))


def clear_faults(box: Sandbox) -> None:
    (box.root / "faults" / f"{sandbox_mod.PROD}.json").unlink(missing_ok=True)


def ops_sql(ops_db: OpsDatabase, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """SQL straight on the ops database, for a test's set-up and checks where no typed method fits."""
    with ops_db.connect() as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


class AfterCutover:
    """Runs ``action`` once the running promotion has cut over (read from the ops database), in a thread that
    never outlives its test: ``finish()`` stops the polling and joins the thread (an action under way runs to
    its end), re-raises what the action raised, and fails the test if the action was required and never ran.
    Use it as a context manager around the promotion; an autouse fixture finishes any the test left."""

    def __init__(self, box: Sandbox, action: Callable[[], None], timeout: float = 300) -> None:
        self._ops_db = box.resources()["ops_db"]
        self._action = action
        self._deadline = time.monotonic() + timeout
        self._stop = threading.Event()
        self.fired = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._wait, daemon=True)
        _watchers.append(self)
        self._thread.start()

    def _wait(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            if self._ops_db.running_promotion_after_cutover():
                try:
                    self._action()
                except BaseException as exc:  # handed to the test's thread by finish()
                    self.error = exc
                finally:
                    self.fired.set()
                return
            self._stop.wait(0.05)

    def finish(self, required: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=max(0.0, self._deadline - time.monotonic()) + 60)
        if self._thread.is_alive():
            pytest.fail("the after-cutover action is still running long after its deadline")
        if self.error is not None:
            raise self.error
        if required and not self.fired.is_set():
            pytest.fail("the promotion was never seen after its cutover: the after-cutover action never ran")

    def __enter__(self) -> AfterCutover:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        # With the test already failing, only stop and join: its own error says more than "never fired".
        self.finish(required=exc_type is None)


_watchers: list[AfterCutover] = []


@pytest.fixture(autouse=True)
def _no_watcher_outlives_its_test() -> Iterator[None]:
    yield
    while _watchers:
        _watchers.pop().finish(required=False)


def after_cutover(box: Sandbox, action: Callable[[], None], timeout: float = 300) -> AfterCutover:
    return AfterCutover(box, action, timeout)


class Helpers:
    """The helpers above, handed to tests as one fixture (test modules cannot import conftest)."""

    promote = staticmethod(promote)
    demo_inputs = staticmethod(demo_inputs)
    write_fault = staticmethod(write_fault)
    clear_faults = staticmethod(clear_faults)
    after_cutover = staticmethod(after_cutover)
    ops_sql = staticmethod(ops_sql)
    drop_database = staticmethod(drop_database)

    @staticmethod
    def evidence_files() -> list[str]:
        from promote_pipeline.promotion.evidence import required_files

        return required_files()

    @staticmethod
    def evidence(outcome: PromotionOutcome) -> Path:
        return Path(outcome.evidence_dir)


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers


# -- artifact stores: what the local and the SSH store's tests both back up ------------------------------
def odoo_file(root: Path, content: bytes, name: str | None = None) -> str:
    """Write ``content`` where Odoo would (``<sha1[:2]>/<sha1>``), or under ``name``; return its relative path."""
    sha1 = name or hashlib.sha1(content).hexdigest()
    (root / sha1[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha1[:2] / sha1).write_bytes(content)
    return f"{sha1[:2]}/{sha1}"


def contract(store: LocalArtifactStore, artifact_id: str, facts: dict[str, object]) -> dict[str, object]:
    return {"path": str(store.index_path(artifact_id)), "sha256": facts["index_sha256"],
            "size_bytes": facts["size_bytes"], "file_count": facts["file_count"], "index_bytes": facts["index_bytes"]}


def backup(store: LocalArtifactStore, src: Path) -> tuple[str, dict[str, object]]:
    artifact_id = store.new_artifact_id("env_t", "blue")
    store.allocate(artifact_id)
    store.write_contract(artifact_id, "{}")
    return artifact_id, store.ingest_filestore(artifact_id, src)


@contextmanager
def dump_source(prefix: str, rows: int) -> Iterator[str]:
    """A database of the suite's server to dump: ``big`` (``rows`` rows of id, md5 text) and ``small`` (2 rows);
    dropped afterwards with its restored copy ``<name>_r``."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname=name)) as conn:
            conn.execute("CREATE TABLE big (id int PRIMARY KEY, payload text)")
            conn.execute("INSERT INTO big SELECT n, md5(n::text) FROM generate_series(1, %s) n", (rows,))
            conn.execute("CREATE TABLE small (id int)")
            conn.execute("INSERT INTO small VALUES (1), (2)")
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for db in (name, f"{name}_r"):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
