"""Fault switches: make a running stand-in misbehave on purpose, from a JSON file.

Deployment tooling is only trustworthy if its failure paths are exercised: a health check
that must catch a crashing release, a smoke test that must catch a broken login, a rollback
drill. The switches live in a file (``serve --fault-file PATH``) rather than an HTTP admin
route, so that nothing reachable through a router can break production, and so a drill can
flip them without knowing which port a deployment listens on.

The file is a JSON object, all fields optional::

    {"not_before": 1767225600.0,   # only processes started at/after this unix time are affected
     "error_rate": 0.5,            # this fraction of HTTP requests answer 500 (every k-th, exactly)
     "error_paths": ["/odoo/sale"], # every HTTP request whose path starts with one of these answers 500
     "crash_after_seconds": 30,    # os._exit(3) that long after the switch was first seen
     "refuse_login": true,         # /web/session/authenticate answers AccessDenied, RPC logins False
     "missing_attachment": true,   # /web/content answers 404 as if the file were gone
     "slow_ms": 250,               # every HTTP response is delayed that much
     "db_down": true}              # /web/health?db_server_status=1 answers the 500 fail shape

With ``serve --workers N`` every worker reads the file itself; ``crash_after_seconds`` makes
them all exit with status 3, which stops the master (exit status 255), as a critical worker
error stops Odoo's.

It is re-read when its mtime, size or inode change, looked at no more often than every
``poll_interval`` seconds; a missing file means no faults. A file that does not parse (say,
caught half-written) is reported and the previous switches stay in force. ``not_before``
exists so a drill can target the deployment that starts *next* while the one already
serving the same configuration stays healthy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 3


@dataclass(frozen=True)
class Faults:
    """One snapshot of the switches; the defaults mean "behave"."""

    not_before: float | None = None
    error_rate: float = 0.0
    error_paths: tuple[str, ...] = ()
    crash_after_seconds: float | None = None
    refuse_login: bool = False
    missing_attachment: bool = False
    slow_ms: int = 0
    db_down: bool = False

    @classmethod
    def parse(cls, data: Any) -> Faults:
        """Validate a decoded fault file; unknown keys are an error so a typo cannot go unnoticed."""
        if not isinstance(data, dict):
            raise ValueError("the fault file must hold a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault switches: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if value is None:
                continue
            if key == "error_paths":
                # one broken page of a release: users hitting it get a 500 while /web/health stays fine
                if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith("/") for v in value):
                    raise ValueError("error_paths must be a list of paths starting with /")
                values[key] = tuple(value)
            elif key in ("refuse_login", "missing_attachment", "db_down"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
                values[key] = value
            elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{key} must be a number")
            else:
                values[key] = int(value) if key == "slow_ms" else float(value)
        if not 0.0 <= values.get("error_rate", 0.0) <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        return cls(**values)

    def describe(self) -> str:
        """The switches that differ from "behave", as compact JSON for the log."""
        changed = {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)
                   if getattr(self, f.name) != f.default}
        return json.dumps(changed) if changed else "none"


NO_FAULTS = Faults()


class FaultSwitch:
    """The switches currently in force for this process, kept fresh from the fault file.

    Everything here runs on the event loop thread, so no locking is needed.
    """

    def __init__(self, path: Path | None, started_at: float, poll_interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.started_at = started_at
        self.poll_interval = poll_interval
        self._clock = clock
        self._checked_at = -math.inf
        self._file_key: tuple[int, int, int] | None = None
        self._bad_key: tuple[int, int, int] | None = None
        self._loaded = NO_FAULTS
        self._error_debt = 0.0
        self._crash_seen_at: float | None = None

    def current(self) -> Faults:
        """The faults that apply to this process (:data:`NO_FAULTS` if ``not_before`` spares it)."""
        now = self._clock()
        if self.path is not None and now - self._checked_at >= self.poll_interval:
            self._checked_at = now
            self._reload()
        faults = self._loaded
        if faults.not_before is not None and self.started_at < faults.not_before:
            faults = NO_FAULTS
        if faults.crash_after_seconds is None:
            self._crash_seen_at = None
        elif self._crash_seen_at is None:
            self._crash_seen_at = now
        return faults

    def _reload(self) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            key = None
        else:
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self._file_key or key == self._bad_key:
            return
        if key is None:
            faults = NO_FAULTS
        else:
            try:
                faults = Faults.parse(json.loads(self.path.read_text()))
            except (OSError, ValueError) as exc:
                log.warning("ignoring fault file %s, previous switches stay: %s", self.path, exc)
                self._bad_key = key  # retried once the file changes again
                return
        self._file_key = key
        if faults != self._loaded:
            spared = faults.not_before is not None and self.started_at < faults.not_before
            log.warning("fault switches now %s%s", faults.describe(),
                        " (not applied: this process started before not_before)" if spared else "")
            self._loaded = faults
            self._error_debt = 0.0

    def should_fail(self) -> bool:
        """Whether this request is one of the ``error_rate`` share that answers 500.

        A running "debt" rather than a random draw: 0.5 fails exactly every second request,
        0.25 every fourth, so a test can assert exact counts.
        """
        rate = self.current().error_rate
        if rate <= 0.0:
            return False
        self._error_debt += rate
        if self._error_debt >= 1.0 - 1e-9:
            self._error_debt -= 1.0
            return True
        return False

    def crash_due(self) -> bool:
        """True once ``crash_after_seconds`` have passed since the switch was first seen."""
        faults = self.current()
        return (faults.crash_after_seconds is not None and self._crash_seen_at is not None
                and self._clock() - self._crash_seen_at >= faults.crash_after_seconds)

    async def watch(self) -> None:
        """Poll the file even when no requests come, and carry out ``crash_after_seconds``."""
        while True:
            if self.crash_due():
                log.error("crash_after_seconds fault fired, exiting with %d", CRASH_EXIT_CODE)
                logging.shutdown()
                os._exit(CRASH_EXIT_CODE)
            await asyncio.sleep(self.poll_interval)


class FaultMiddleware:
    """Applies the request-wide switches (``slow_ms``, ``error_rate``, ``error_paths``) to every HTTP request.

    WebSocket handshakes and lifespan events pass through untouched; route-specific switches
    (``refuse_login``, ``missing_attachment``, ``db_down``) are applied by the routes themselves.
    """

    def __init__(self, app: ASGIApp, switch: FaultSwitch) -> None:
        self.app = app
        self.switch = switch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        faults = self.switch.current()
        if faults.slow_ms > 0:
            await asyncio.sleep(faults.slow_ms / 1000)
        if self.switch.should_fail() or any(scope["path"].startswith(p) for p in faults.error_paths):
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            return
        await self.app(scope, receive, send)
