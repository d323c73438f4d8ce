"""Watching green after cutover: HTTP error rate, database connection errors, process crashes.

Samples every quarter second for the whole window: a real request through the router's public
entry point (``/web/health?db_server_status=1``, which makes Odoo open a database cursor), a
check that green's process is alive, and, each second, a ``SELECT 1`` on green's database from
this host. The verdict is reached as early as it is certain: a crash or a database error fails at
once, and the error rate fails as soon as even a clean remainder could not bring it under the
threshold, so that rollback starts within a second of the evidence, not at the window's end.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import psycopg

from promote_pipeline.promotion.models import StabilityMetrics
from resources import http_clients
from resources.odoo_host import LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentRecord

SAMPLE_INTERVAL = 0.25
MAX_ERROR_RATE = 0.01


def watch(host: LocalOdooHost, env: EnvironmentRecord, green: DeploymentRecord, public_url: str,
          window_seconds: int, on_sample: Callable[[StabilityMetrics, float], None] | None = None,
          stop_check: Callable[[], None] | None = None) -> StabilityMetrics:
    """``stop_check`` is called before every sample and raises to end the window at once (an abort request):
    a window may be an hour long, and an operator who wants out must not wait for it."""
    expected = max(1, int(window_seconds / SAMPLE_INTERVAL))
    m = StabilityMetrics(window_seconds=window_seconds, samples=0, requests=0, http_errors=0, http_error_rate=0.0,
                         db_connection_errors=0, process_crashes=0, passed=True)
    start = time.monotonic()
    last_db_check = -1.0
    with http_clients.client(base_url=public_url, timeout=2.0) as client:
        while True:
            if stop_check:
                stop_check()
            tick = time.monotonic()
            m.samples += 1
            m.requests += 1
            try:
                resp = client.get("/web/health", params={"db_server_status": "1"})
                if resp.status_code >= 500:
                    m.http_errors += 1
                    if '"db_server_status": false' in resp.text or '"db_server_status":false' in resp.text:
                        m.db_connection_errors += 1
            except httpx.HTTPError:
                m.http_errors += 1
            if not host.is_alive(green.pid):
                m.process_crashes = 1
            if tick - last_db_check >= 1.0:
                last_db_check = tick
                try:
                    with host.connect(env.db_dsn_ref, green.db_name, retry=False) as conn:
                        conn.execute("SELECT 1")
                except psycopg.Error:
                    m.db_connection_errors += 1
            m.http_error_rate = round(m.http_errors / m.requests, 4)
            elapsed = tick - start
            if on_sample:
                on_sample(m, max(0.0, window_seconds - elapsed))
            reason = _verdict(m, expected)
            if reason:
                m.passed, m.reason = False, reason
                return m
            if elapsed >= window_seconds:
                break
            time.sleep(max(0.0, SAMPLE_INTERVAL - (time.monotonic() - tick)))
    if m.http_error_rate >= MAX_ERROR_RATE:
        m.passed, m.reason = False, f"HTTP error rate {m.http_error_rate:.2%} >= 1%"
    return m


def _verdict(m: StabilityMetrics, expected_requests: int) -> str | None:
    if m.process_crashes:
        return f"green Odoo process {m.process_crashes} crash(es)"
    if m.db_connection_errors:
        return f"{m.db_connection_errors} database connection error(s)"
    if m.http_errors / max(expected_requests, m.requests) >= MAX_ERROR_RATE:
        return f"HTTP errors {m.http_errors} of {m.requests} requests: the window's error rate is >= 1%"
    return None
