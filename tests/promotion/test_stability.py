"""The stability monitor: the verdict (pure logic), and the probes against a real router, stand-in and PostgreSQL.

A failure of the monitor's own probe is made real with a TCP relay that closes the connections it is told to:
put in front of the router (the HTTP probe gets no answer at all) or of PostgreSQL (the ``SELECT 1`` cannot
connect), exactly as a loaded promoter host or a flaky link would.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from promote_pipeline.cli.sandbox import PROD, STAGING, Sandbox
from promote_pipeline.promotion import evidence_schema
from promote_pipeline.promotion.models import StabilityMetrics
from promote_pipeline.promotion.services import upstream
from promote_pipeline.promotion.settings import StabilityThresholds
from promote_pipeline.promotion.stability import _verdict, watch
from resources import secrets


def _m(requests: int, errors: int = 0, db: int = 0, crashes: int = 0) -> StabilityMetrics:
    return StabilityMetrics(window_seconds=300, samples=requests, requests=requests, http_errors=errors,
                            http_error_rate=errors / max(requests, 1), db_connection_errors=db,
                            process_crashes=crashes, passed=True)


@pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)
def test_one_error_early_in_a_long_window_is_not_yet_a_failure() -> None:
    assert _verdict(_m(10, errors=1), expected_requests=1200) is None


@pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)
def test_errors_reaching_one_percent_of_the_window_fail_at_once() -> None:
    assert "error rate" in (_verdict(_m(40, errors=12), expected_requests=1200) or "")


@pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)
def test_a_crash_or_a_database_error_fails_at_once() -> None:
    assert "crash" in (_verdict(_m(3, crashes=1), 1200) or "")
    assert "database" in (_verdict(_m(3, db=1), 1200) or "")


@pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)
def test_the_thresholds_are_the_settings() -> None:
    many = _m(100_000, errors=60)
    many.http_5xx = 60  # 0.06%: under the error rate, over the 5xx count
    assert "max_5xx_responses=50" in (_verdict(many, 1200) or "")
    assert _verdict(many, 1200, StabilityThresholds(max_5xx_responses=100)) is None
    assert _verdict(_m(1000, errors=30), 1200, StabilityThresholds(max_error_rate=0.05)) is None


# -- the probes, for real ------------------------------------------------------------------------------------
class Relay:
    """A TCP relay to ``target`` that closes, unanswered, the first ``drop`` connections (all with ``drop=None``)."""

    def __init__(self, target: tuple[str, int], drop: int | None) -> None:
        self.target, self.drop, self.dropped = target, drop, 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.drop is None or self.dropped < self.drop:
                self.dropped += 1
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def live(haproxy_box: Sandbox) -> Iterator[dict[str, Any]]:
    """Production's serving deployment, its environment and its public URL, watched as if it were a fresh green."""
    res = haproxy_box.resources()
    env = res["ops_db"].environment(PROD)
    serving = res["ops_db"].active_deployment(PROD)
    assert env is not None and serving is not None
    yield {"host": res["odoo_host"], "env": env, "green": serving,
           "url": res["router"].state(PROD).active_url}


def _http_relay(url: str, drop: int | None) -> Relay:
    parts = urlsplit(url)
    return Relay((parts.hostname or "127.0.0.1", parts.port or 80), drop)


@contextlib.contextmanager
def _db_through(env: Any, drop: int | None) -> Iterator[Any]:
    """``env`` whose database DSN goes through a relay dropping ``drop`` connections."""
    dsn = secrets.resolve(env.db_dsn_ref)
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    relay = Relay((str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)), drop)
    ref = "PROMOTE_TEST_RELAYED_DSN"
    os.environ[ref] = psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=relay.port, sslmode="disable",
                                                     gssencmode="disable")
    try:
        yield env.model_copy(update={"db_dsn_ref": ref})
    finally:
        os.environ.pop(ref, None)
        relay.close()


def test_a_single_failure_of_each_monitor_probe_is_confirmed_not_counted(live: dict[str, Any]) -> None:
    http = _http_relay(live["url"], drop=1)
    try:
        with _db_through(live["env"], drop=1) as env:
            before = datetime.now(UTC)
            m = watch(live["host"], env, live["green"], f"http://127.0.0.1:{http.port}", window_seconds=2)
            after = datetime.now(UTC)
    finally:
        http.close()
    assert m.passed, m.reason
    assert (m.http_errors, m.db_connection_errors, m.process_crashes) == (0, 0, 0)
    assert m.unconfirmed_probe_failures == 2 and not m.ended_early
    assert sorted(e.source for e in m.errors) == ["db_probe", "http"]
    for e in m.errors:
        assert not e.counted and before <= e.at <= after and "retry" in e.detail
    assert m.requests == m.samples and m.watched_seconds >= 2


@pytest.mark.parametrize("probe", ["db_probe", "http"])
def test_a_persistent_failure_of_a_monitor_probe_counts_and_ends_the_window(live: dict[str, Any],
                                                                            probe: str) -> None:
    http = _http_relay(live["url"], drop=None if probe == "http" else 0)
    try:
        with _db_through(live["env"], drop=None if probe == "db_probe" else 0) as env:
            m = watch(live["host"], env, live["green"], f"http://127.0.0.1:{http.port}", window_seconds=60)
    finally:
        http.close()
    assert not m.passed and m.ended_early
    counted = [e for e in m.errors if e.counted]
    assert counted and {e.source for e in counted} == {probe} and "twice" in counted[0].detail
    # The figures are those of the window watched, which the verdict ended long before its 60 s.
    assert m.requests == m.samples < 60 * 4 and m.watched_seconds < 60
    if probe == "db_probe":
        assert "db_probe" in (m.reason or "") and m.db_connection_errors == 1


def test_an_abort_ends_the_window_and_the_record_says_what_was_watched(live: dict[str, Any]) -> None:
    calls = [0]
    seen: list[StabilityMetrics] = []

    def stop_check() -> None:
        calls[0] += 1
        if calls[0] == 4:
            raise RuntimeError("aborted: operator asked")

    with pytest.raises(RuntimeError):
        watch(live["host"], live["env"], live["green"], live["url"], window_seconds=60, stop_check=stop_check,
              on_end=seen.append)
    [m] = seen
    assert m.requests == 3 and m.ended_early and not m.passed and "operator asked" in (m.reason or "")
    assert m.watched_seconds < 60


# -- green judged on real traffic: the router's counts, users' requests included ------------------------------
@pytest.fixture
def prod(box: Sandbox) -> Iterator[dict[str, Any]]:
    """Production's serving deployment, watched as if it were a fresh green, on either router; its fault file
    (which the running process reads) is removed afterwards."""
    res = box.resources()
    env = res["ops_db"].environment(PROD)
    serving = res["ops_db"].active_deployment(PROD)
    assert env is not None and serving is not None
    other = res["ops_db"].active_deployment(STAGING)
    assert other is not None
    faults, router = box.root / "faults" / f"{PROD}.json", res["router"]
    was = router.state(PROD).preview
    # The preview entry point sends to another deployment (staging's), as it may to blue: the same router, the
    # same environment's backends, traffic that is not green's.
    preview = router.set_preview(PROD, upstream(other, "blue")).preview_url
    try:
        yield {"host": res["odoo_host"], "env": env, "green": serving, "router": router,
               "upstream": upstream(serving, "green"), "url": router.state(PROD).active_url,
               "other_url": preview, "faults": faults}
    finally:
        faults.unlink(missing_ok=True)
        router.set_preview(PROD, was or upstream(serving, "green"))


class Users:
    """Real users through the public entry point: sequential GETs of ``paths`` in turn, started on the window's
    first sample (the router's mark is taken as the window starts), ``count`` of them."""

    def __init__(self, url: str, paths: list[str], count: int) -> None:
        self.url, self.paths, self.count = url, paths, count
        self.statuses: list[tuple[str, int]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def on_sample(self, m: StabilityMetrics, left: float) -> None:
        if not self.thread.is_alive() and not self.statuses:
            self.thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30, follow_redirects=False) as client:
            for i in range(self.count):
                path = self.paths[i % len(self.paths)]
                self.statuses.append((path, client.get(path).status_code))
                time.sleep(0.05)

    def done(self) -> list[tuple[str, int]]:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive() and len(self.statuses) == self.count
        return self.statuses


def _break_a_page(live: dict[str, Any], path: str) -> None:
    """The running production process answers 500 on ``path`` (its fault file, re-read every 0.1 s), while
    /web/health stays 200; waited for on the server itself, not through the router."""
    live["faults"].write_text(json.dumps({"error_paths": [path]}))
    direct = f"http://127.0.0.1:{live['green'].http_port}"
    deadline = time.monotonic() + 60
    while httpx.get(direct + path, timeout=30).status_code != 500:
        assert time.monotonic() < deadline, "the stand-in did not take the fault"
        time.sleep(0.1)
    assert httpx.get(direct + "/web/health", timeout=30).status_code == 200


def _evidence(m: StabilityMetrics, url: str) -> None:
    """What monitor_stability writes is valid evidence."""
    evidence_schema.validate_json(evidence_schema.StabilityEvidence,
                                  json.dumps({"schema_version": 1, **m.model_dump(mode="json"), "target": url}))


def test_users_5xx_fail_the_window_that_the_probe_alone_passes(prod: dict[str, Any]) -> None:
    _break_a_page(prod, "/odoo/sale")
    # The probe alone (no router counts): green looks healthy, whatever users get.
    users = Users(prod["url"], ["/web/login", "/odoo/sale/7"], 10)
    alone = watch(prod["host"], prod["env"], prod["green"], prod["url"], window_seconds=3, on_sample=users.on_sample)
    assert ("/odoo/sale/7", 500) in users.done()
    assert alone.passed and alone.judged_on == "probe" and not [e for e in alone.errors if e.counted], alone.reason

    # Judged on every request green served: the users' 500s fail the window, naming the page and the status.
    users = Users(prod["url"], ["/web/login", "/odoo/sale/7"], 20)
    m = watch(prod["host"], prod["env"], prod["green"], prod["url"], window_seconds=120, on_sample=users.on_sample,
              router=prod["router"], green_upstream=prod["upstream"])
    users.done()
    assert not m.passed and m.ended_early and m.judged_on == "router"
    assert "HTTP 500 on /odoo/sale/7" in (m.reason or ""), m.reason
    failed = [e for e in m.errors if e.counted]
    assert failed and all((e.source, e.path, e.status) == ("traffic", "/odoo/sale/7", 500) for e in failed), failed
    assert m.traffic is not None and m.http_5xx == m.traffic.responses_5xx == m.http_errors >= 2
    assert all(m.started_at is not None and e.at >= m.started_at.replace(microsecond=0) for e in failed)
    _evidence(m, prod["url"])


def test_a_healthy_window_counts_users_requests_and_only_greens(prod: dict[str, Any]) -> None:
    users = Users(prod["url"], ["/web/login", "/web/health", "/odoo"], 24)
    others = Users(prod["other_url"], ["/web/login", "/odoo/sale/7"], 30)  # another deployment, same router
    both = Users.on_sample

    def start(m: StabilityMetrics, left: float) -> None:
        both(users, m, left)
        both(others, m, left)

    m = watch(prod["host"], prod["env"], prod["green"], prod["url"], window_seconds=12, on_sample=start,
              router=prod["router"], green_upstream=prod["upstream"])
    users.done()
    others.done()
    assert m.passed and m.judged_on == "router", m.reason
    assert m.traffic is not None and m.http_errors == 0 and m.http_5xx == 0
    # Every user request and every probe request, none of the other deployment's; the probe's last request may
    # end an instant after the window's last read (the router counts a request once it has ended).
    retries = m.unconfirmed_probe_failures
    assert m.probe_requests + 24 - 1 <= m.requests <= m.probe_requests + 24 + retries, (m.requests, m.probe_requests)
    assert m.traffic.responses_3xx >= 8 and m.traffic.timed_requests > 0 and m.p95_ms is not None
    _evidence(m, prod["url"])
