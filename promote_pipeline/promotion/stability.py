"""Watching green after cutover: HTTP error rate, 5xx count and p95 on real traffic, database errors, crashes.

Green is judged on the requests users actually make, not only on a synthetic one: each second the router's
own counters for green are read (``RouterResource.traffic_since``: HAProxy's ``show stat`` and request ring,
nginx's access log), since a mark taken as the window starts; the error rate is over every request the router
sent green, users' and the probe's, and every failed one is listed with its time, path and status. The
thresholds are settings (``settings.StabilityThresholds``). Where the router cannot be read, the window says so
and is judged on the probe alone.

Alongside, every quarter second: a real request through the router's public entry point
(``/web/health?db_server_status=1``, which makes Odoo open a database cursor), a check that green's process is
alive, and, each second, a ``SELECT 1`` on green's database from this host. The verdict is reached as early as
it is certain: a crash, a database error or too many 5xx fail at once, and the error rate fails as soon as even
a clean remainder could not bring it under the threshold, so that rollback starts within a second of the
evidence, not at the window's end. The p95 is judged at the end, over the whole window.

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

from promote_pipeline.promotion.models import RouterTraffic, StabilityEvent, StabilityMetrics, StabilitySource
from promote_pipeline.promotion.settings import StabilityThresholds
from resources import http_clients
from resources.odoo_host import LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentRecord
from resources.redaction import redact_text
from resources.router import RouterError, RouterResource, Traffic, TrafficError, TrafficMark, Upstream
from resources.ssh_odoo_host import SshOdooHost

SAMPLE_INTERVAL = 0.25
TRAFFIC_INTERVAL = 1.0  # the router's counters at most this often: a second is as soon as a rollback could start
MAX_LISTED_ERRORS = 100  # an hour-long window of a flaky probe must not make a megabyte of evidence
HEALTH_PATH = "/web/health"


class _Counts:
    """The probe's own figures, kept apart from the router's: the window's figures are made from both."""

    def __init__(self) -> None:
        self.errors = 0  # the probe's counted HTTP errors (5xx, unreadable answers, no answer twice)
        self.http_5xx = 0
        self.traffic: Traffic | None = None
        self.router_read_failed = False

    def first_failed(self) -> TrafficError | None:
        return self.traffic.errors[0] if self.traffic and self.traffic.errors else None


def watch(host: LocalOdooHost, env: EnvironmentRecord, green: DeploymentRecord, public_url: str,
          window_seconds: int, on_sample: Callable[[StabilityMetrics, float], None] | None = None,
          stop_check: Callable[[], None] | None = None,
          on_end: Callable[[StabilityMetrics], None] | None = None, router: RouterResource | None = None,
          green_upstream: Upstream | None = None,
          thresholds: StabilityThresholds | None = None,
          green_host: LocalOdooHost | SshOdooHost | None = None) -> StabilityMetrics:
    """``stop_check`` is called before every sample and raises to end the window at once (an abort request):
    a window may be an hour long, and an operator who wants out must not wait for it. ``on_end`` receives the
    metrics of the window as watched however it ended (verdict, full window, or an exception), so the evidence
    of an aborted window says what was seen before the abort. ``router`` and ``green_upstream``: whose counters
    to read for green (without them, the probe alone is judged). ``green_host``: the process host green's Odoo
    runs on, asked whether it is alive (None: ``host``, this machine)."""
    limits = thresholds or StabilityThresholds()
    expected = max(1, int(window_seconds / SAMPLE_INTERVAL))
    m = StabilityMetrics(window_seconds=window_seconds, samples=0, requests=0, http_errors=0, http_error_rate=0.0,
                         db_connection_errors=0, process_crashes=0, passed=True, started_at=datetime.now(UTC),
                         thresholds=limits)
    counts = _Counts()
    mark = _mark(router, env, green_upstream, m, counts)
    start = time.monotonic()
    last_db_check = last_traffic = last_alive = -1.0
    traffic_every = TRAFFIC_INTERVAL
    # Asking a process host costs an SSH round trip (a process here and a shell there): once a second, as the
    # database is probed, rather than at every sample.
    alive_every = 1.0 if isinstance(green_host, SshOdooHost) else 0.0
    try:
        with http_clients.client(base_url=public_url, timeout=2.0) as client:
            while True:
                if stop_check:
                    stop_check()
                tick = time.monotonic()
                m.samples += 1
                m.probe_requests += 1  # one per sample: a confirming retry is part of the same request
                _probe_http(client, m, counts)
                if tick - last_alive >= alive_every:
                    last_alive = tick
                    if not (green_host or host).is_alive(green.pid):
                        m.process_crashes = 1
                        _record(m, "process", f"green's Odoo process (pid {green.pid}) is not running", counted=True)
                if tick - last_db_check >= 1.0:
                    last_db_check = tick
                    _probe_db(host, env, green, m)
                elapsed = tick - start
                if mark is not None and (tick - last_traffic >= traffic_every or elapsed >= window_seconds):
                    last_traffic = tick
                    _read_traffic(router, mark, green_upstream, m, counts)
                    # A busy window's read takes longer (tens of thousands of log lines): keep it to a fifth of
                    # the monitor's time, so the probe keeps its pace.
                    traffic_every = max(TRAFFIC_INTERVAL, 4 * (time.monotonic() - last_traffic))
                _figures(m, counts)
                if on_sample:
                    on_sample(m, max(0.0, window_seconds - elapsed))
                reason = _verdict(m, expected, limits, counts.first_failed())
                if reason:
                    m.passed, m.reason, m.ended_early = False, reason, elapsed < window_seconds
                    return m
                if elapsed >= window_seconds:
                    break
                time.sleep(max(0.0, SAMPLE_INTERVAL - (time.monotonic() - tick)))
        m.passed, m.reason = _final_verdict(m, limits, counts.first_failed())
        return m
    except BaseException as exc:  # an abort (or anything else) ends the window here: say so, then let it go on
        m.passed, m.ended_early = False, True
        m.reason = m.reason or redact_text(f"window ended early: {type(exc).__name__}: {exc}")
        raise
    finally:
        m.watched_seconds = round(time.monotonic() - start, 3)
        _list_traffic_errors(m, counts)
        if on_end:
            on_end(m)


# -- the router's counters -----------------------------------------------------------------------------------
def _mark(router: RouterResource | None, env: EnvironmentRecord, green_upstream: Upstream | None,
          m: StabilityMetrics, counts: _Counts) -> TrafficMark | None:
    if router is None or green_upstream is None:
        return None
    try:
        mark = router.traffic_mark(env.environment_id, green_upstream)
    except (RouterError, OSError) as exc:
        counts.router_read_failed = True
        _record(m, "router", f"the router's counters for green could not be read, the window is judged on the"
                f" probe alone: {_describe(exc)}", counted=False)
        return None
    return mark


def _read_traffic(router: RouterResource | None, mark: TrafficMark, green_upstream: Upstream | None,
                  m: StabilityMetrics, counts: _Counts) -> None:
    """A failed read keeps the last figures: the router's counts only grow, the next read catches up."""
    assert router is not None and green_upstream is not None
    try:
        counts.traffic = router.traffic_since(mark, green_upstream)
    except (RouterError, OSError) as exc:
        if not counts.router_read_failed:  # once: a router that cannot be read every second is one event
            counts.router_read_failed = True
            _record(m, "router", f"the router's counters for green could not be read (the last read stands):"
                    f" {_describe(exc)}", counted=False)


def _figures(m: StabilityMetrics, counts: _Counts) -> None:
    """The window's figures. From the router when it was read: its requests and failures are all of green's,
    the probe's included (not added twice), plus the probe's requests that never reached the router."""
    t = counts.traffic
    m.judged_on = "router" if t is not None else "probe"
    if t is not None:
        m.requests = t.requests + m.probe_unanswered
        m.http_errors = t.failed + m.probe_unanswered
        m.http_5xx = t.responses_5xx
        m.p95_ms = t.p95_ms
        m.traffic = RouterTraffic(**t.model_dump(include=set(RouterTraffic.model_fields)))
    else:
        m.requests, m.http_errors, m.http_5xx = m.probe_requests, counts.errors, counts.http_5xx
    m.requests = max(m.requests, m.http_errors)
    m.http_error_rate = round(m.http_errors / m.requests, 4) if m.requests else 0.0


def _list_traffic_errors(m: StabilityMetrics, counts: _Counts) -> None:
    """The failed requests the router logged, into the window's errors with their path and status, in time order.
    Those on the probe's own path are the probe's, listed by it already."""
    t = counts.traffic
    if t is None:
        return
    for e in t.errors:
        if e.path != HEALTH_PATH:
            _record(m, "traffic", f"HTTP {e.status} on {e.path}" + (f" (entry point {e.entry})" if e.entry else ""),
                    counted=True, at=e.at, path=e.path, status=e.status)
    m.errors_not_listed += t.errors_not_listed
    m.errors.sort(key=lambda e: e.at)


# -- the probe --------------------------------------------------------------------------------------------------
def _probe_http(client: httpx.Client, m: StabilityMetrics, counts: _Counts) -> None:
    try:
        resp = _get_health(client)
    except httpx.TransportError as first:
        # No answer at all, not even the router's 502/503: the trouble is between this host and the router.
        # Confirm at once before holding it against green.
        try:
            resp = _get_health(client)
        except httpx.HTTPError as again:
            counts.errors += 1
            m.probe_unanswered += 1
            _record(m, "http", f"no answer from the router, twice: {_describe(first)}; retry: {_describe(again)}",
                    counted=True, path=HEALTH_PATH)
            return
        m.unconfirmed_probe_failures += 1
        _record(m, "http", f"no answer from the router ({_describe(first)}); the immediate retry got HTTP"
                f" {resp.status_code}", counted=False)
    except httpx.HTTPError as exc:  # an answer that could not be read: green's doing, not the connection's
        counts.errors += 1
        _record(m, "http", f"unreadable answer: {_describe(exc)}", counted=True, path=HEALTH_PATH)
        return
    if resp.status_code >= 500:
        counts.errors += 1
        counts.http_5xx += 1
        _record(m, "http", f"HTTP {resp.status_code} on {HEALTH_PATH}", counted=True, path=HEALTH_PATH,
                status=resp.status_code)
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


def _record(m: StabilityMetrics, source: StabilitySource, detail: str, counted: bool, at: datetime | None = None,
            path: str | None = None, status: int | None = None) -> None:
    if len(m.errors) < MAX_LISTED_ERRORS:
        m.errors.append(StabilityEvent(at=at or datetime.now(UTC), source=source, detail=detail, counted=counted,
                                       path=path, status=status))
    else:
        m.errors_not_listed += 1


# -- the verdict ------------------------------------------------------------------------------------------------
def _verdict(m: StabilityMetrics, expected_requests: int, limits: StabilityThresholds | None = None,
             first: TrafficError | None = None) -> str | None:
    """What fails the window already, whatever the rest of it brings. ``first``: the first failed request the
    router logged, which the reason names."""
    limits = limits or StabilityThresholds()
    if m.process_crashes:
        return f"green Odoo process {m.process_crashes} crash(es)"
    if m.db_connection_errors:
        return f"{m.db_connection_errors} database connection error(s)" + _first_counted(m, ("green_db", "db_probe"))
    if m.http_5xx > limits.max_5xx_responses:
        return (f"{m.http_5xx} 5xx answers from green, more than max_5xx_responses={limits.max_5xx_responses}"
                + _first_failed(m, first))
    if m.http_errors / max(expected_requests, m.requests) >= limits.max_error_rate:
        return (f"HTTP errors {m.http_errors} of {m.requests} requests{_whose(m)}: the window's error rate is"
                f" >= {limits.max_error_rate:.2%}" + _first_failed(m, first))
    return None


def _final_verdict(m: StabilityMetrics, limits: StabilityThresholds,
                   first: TrafficError | None) -> tuple[bool, str | None]:
    """At the window's end: the error rate over what was served, and the p95 over the whole window."""
    if m.http_error_rate >= limits.max_error_rate:
        return False, (f"HTTP error rate {m.http_error_rate:.2%} >= {limits.max_error_rate:.2%}"
                       f" ({m.http_errors} of {m.requests} requests{_whose(m)})" + _first_failed(m, first))
    t = m.traffic
    if (t is not None and m.p95_ms is not None and t.timed_requests >= limits.min_timed_requests
            and m.p95_ms > limits.max_p95_ms):
        return False, (f"p95 response time {m.p95_ms:.0f} ms > max_p95_ms={limits.max_p95_ms} over green's"
                       f" {t.timed_requests} timed requests (slowest {t.max_ms:.0f} ms)")
    return True, None


def _whose(m: StabilityMetrics) -> str:
    return " green served (users' and the probe's, as the router counted them)" if m.judged_on == "router" else \
        " of the probe"


def _first_counted(m: StabilityMetrics, sources: tuple[str, ...]) -> str:
    """The reason names the error that decided it, so a one-line summary already says which probe, when, why."""
    for e in m.errors:
        if e.counted and e.source in sources:
            return f" (first: {e.source} at {e.at.isoformat(timespec='milliseconds')}: {e.detail})"
    return ""


def _first_failed(m: StabilityMetrics, first: TrafficError | None) -> str:
    """The first failed request by path and status, as the router logged it (a user's as well as the probe's);
    without the router's log, the probe's first error."""
    if first is not None:
        return (f" (first: HTTP {first.status} on {first.path} at {first.at.isoformat(timespec='milliseconds')}"
                + (f" via the {first.entry} entry point" if first.entry else "") + ")")
    return _first_counted(m, ("http",))
