"""Watching green after cutover: HTTP error rate, database connection errors, process crashes.

Samples every quarter second for the whole window: a real request through the router's public
entry point (``/web/health?db_server_status=1``, which makes Odoo open a database cursor), a
check that green's process is alive, and, each second, a ``SELECT 1`` on green's database from
this host. The verdict is reached as early as it is certain: a crash or a database error fails at
once, and the error rate fails as soon as even a clean remainder could not bring it under the
threshold, so that rollback starts within a second of the evidence, not at the window's end.

Two kinds of failure are told apart. What green itself reports -- a 5xx through the router (which
answers 502/503 for a dead or refusing green), ``db_server_status`` false in green's own answer, its
process gone -- counts at once. A failure of the monitor's own probes -- its HTTP client getting no
answer at all from the router, its ``SELECT 1`` from this host failing to connect or timing out --
may be this host's trouble (a loaded promoter host times out on its own), so it is retried at once
and counts only if the retry fails too. Every error, counted or not, is recorded with its time,
source and detail: a rollback must be explainable from the evidence alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import psycopg

from promote_pipeline.promotion.models import StabilityEvent, StabilityMetrics, StabilitySource
from resources import http_clients
from resources.odoo_host import LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentRecord
from resources.redaction import redact_text

SAMPLE_INTERVAL = 0.25
MAX_ERROR_RATE = 0.01
MAX_LISTED_ERRORS = 100  # an hour-long window of a flaky probe must not make a megabyte of evidence
HEALTH_PATH = "/web/health"


def watch(host: LocalOdooHost, env: EnvironmentRecord, green: DeploymentRecord, public_url: str,
          window_seconds: int, on_sample: Callable[[StabilityMetrics, float], None] | None = None,
          stop_check: Callable[[], None] | None = None,
          on_end: Callable[[StabilityMetrics], None] | None = None) -> StabilityMetrics:
    """``stop_check`` is called before every sample and raises to end the window at once (an abort request):
    a window may be an hour long, and an operator who wants out must not wait for it. ``on_end`` receives the
    metrics of the window as watched however it ended (verdict, full window, or an exception), so the evidence
    of an aborted window says what was seen before the abort."""
    expected = max(1, int(window_seconds / SAMPLE_INTERVAL))
    m = StabilityMetrics(window_seconds=window_seconds, samples=0, requests=0, http_errors=0, http_error_rate=0.0,
                         db_connection_errors=0, process_crashes=0, passed=True, started_at=datetime.now(UTC))
    start = time.monotonic()
    last_db_check = -1.0
    try:
        with http_clients.client(base_url=public_url, timeout=2.0) as client:
            while True:
                if stop_check:
                    stop_check()
                tick = time.monotonic()
                m.samples += 1
                m.requests += 1  # one per sample: a confirming retry is part of the same request
                _probe_http(client, m)
                if not host.is_alive(green.pid):
                    m.process_crashes = 1
                    _record(m, "process", f"green's Odoo process (pid {green.pid}) is not running", counted=True)
                if tick - last_db_check >= 1.0:
                    last_db_check = tick
                    _probe_db(host, env, green, m)
                m.http_error_rate = round(m.http_errors / m.requests, 4)
                elapsed = tick - start
                if on_sample:
                    on_sample(m, max(0.0, window_seconds - elapsed))
                reason = _verdict(m, expected)
                if reason:
                    m.passed, m.reason, m.ended_early = False, reason, elapsed < window_seconds
                    return m
                if elapsed >= window_seconds:
                    break
                time.sleep(max(0.0, SAMPLE_INTERVAL - (time.monotonic() - tick)))
        if m.http_error_rate >= MAX_ERROR_RATE:
            m.passed, m.reason = False, f"HTTP error rate {m.http_error_rate:.2%} >= 1%"
        return m
    except BaseException as exc:  # an abort (or anything else) ends the window here: say so, then let it go on
        m.passed, m.ended_early = False, True
        m.reason = m.reason or redact_text(f"window ended early: {type(exc).__name__}: {exc}")
        raise
    finally:
        m.watched_seconds = round(time.monotonic() - start, 3)
        if on_end:
            on_end(m)


def _probe_http(client: httpx.Client, m: StabilityMetrics) -> None:
    try:
        resp = _get_health(client)
    except httpx.TransportError as first:
        # No answer at all, not even the router's 502/503: the trouble is between this host and the router.
        # Confirm at once before holding it against green.
        try:
            resp = _get_health(client)
        except httpx.HTTPError as again:
            m.http_errors += 1
            _record(m, "http", f"no answer from the router, twice: {_describe(first)}; retry: {_describe(again)}",
                    counted=True)
            return
        m.unconfirmed_probe_failures += 1
        _record(m, "http", f"no answer from the router ({_describe(first)}); the immediate retry got HTTP"
                f" {resp.status_code}", counted=False)
    except httpx.HTTPError as exc:  # an answer that could not be read: green's doing, not the connection's
        m.http_errors += 1
        _record(m, "http", f"unreadable answer: {_describe(exc)}", counted=True)
        return
    if resp.status_code >= 500:
        m.http_errors += 1
        _record(m, "http", f"HTTP {resp.status_code} on {HEALTH_PATH}", counted=True)
        if '"db_server_status": false' in resp.text or '"db_server_status":false' in resp.text:
            m.db_connection_errors += 1
            _record(m, "green_db", "green's own health answer says db_server_status false", counted=True)


def _get_health(client: httpx.Client) -> httpx.Response:
    return client.get(HEALTH_PATH, params={"db_server_status": "1"})


def _probe_db(host: LocalOdooHost, env: EnvironmentRecord, green: DeploymentRecord, m: StabilityMetrics) -> None:
    try:
        _select_1(host, env, green)
    except psycopg.Error as first:
        # From this host, not from green: a loaded promoter host can time out on its own. Confirm at once.
        try:
            _select_1(host, env, green)
        except psycopg.Error as again:
            m.db_connection_errors += 1
            _record(m, "db_probe", f"SELECT 1 on {green.db_name} failed twice: {_describe(first)}; retry:"
                    f" {_describe(again)}", counted=True)
            return
        m.unconfirmed_probe_failures += 1
        _record(m, "db_probe", f"SELECT 1 on {green.db_name} failed ({_describe(first)}); the immediate retry"
                " succeeded", counted=False)


def _select_1(host: LocalOdooHost, env: EnvironmentRecord, green: DeploymentRecord) -> None:
    with host.connect(env.db_dsn_ref, green.db_name, retry=False) as conn:
        conn.execute("SELECT 1")


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return redact_text(f"{type(exc).__name__}: {text[:300]}")


def _record(m: StabilityMetrics, source: StabilitySource, detail: str, counted: bool) -> None:
    if len(m.errors) < MAX_LISTED_ERRORS:
        m.errors.append(StabilityEvent(at=datetime.now(UTC), source=source,
                                       detail=detail, counted=counted))
    else:
        m.errors_not_listed += 1


def _verdict(m: StabilityMetrics, expected_requests: int) -> str | None:
    if m.process_crashes:
        return f"green Odoo process {m.process_crashes} crash(es)"
    if m.db_connection_errors:
        return f"{m.db_connection_errors} database connection error(s)" + _first_counted(m, ("green_db", "db_probe"))
    if m.http_errors / max(expected_requests, m.requests) >= MAX_ERROR_RATE:
        return f"HTTP errors {m.http_errors} of {m.requests} requests: the window's error rate is >= 1%"
    return None


def _first_counted(m: StabilityMetrics, sources: tuple[str, ...]) -> str:
    """The reason names the error that decided it, so a one-line summary already says which probe, when, why."""
    for e in m.errors:
        if e.counted and e.source in sources:
            return f" (first: {e.source} at {e.at.isoformat(timespec='milliseconds')}: {e.detail})"
    return ""
