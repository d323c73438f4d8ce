"""Continuous requests over keep-alive connections through the sandbox router, during a cutover and a
rollback: not one failed request with HAProxy; with nginx the count is measured and printed."""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from promote_pipeline.cli.runner import run_rollback
from promote_pipeline.cli.sandbox import Sandbox

pytestmark = pytest.mark.slow
CLIENTS = 4
MAX_SECONDS = 120


class Load:
    """CLIENTS threads, each with ONE keep-alive connection, sending GET /web/login until stopped."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.stop = threading.Event()
        self.ok = 0
        self.failed: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        deadline = time.monotonic() + MAX_SECONDS
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn.request("GET", "/web/login")
                resp = conn.getresponse()
                resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                    else:
                        self.failed.append(f"HTTP {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failed.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            time.sleep(0.002)
        conn.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


def test_no_request_fails_during_cutover_and_rollback(box: Sandbox, h: Any) -> None:
    url = box.status()["router_url"]
    blue = box.status()["serving"]["deployment"]
    with Load(url) as load:
        time.sleep(0.5)
        code, outcome, message = h.promote(stability_window_seconds=1)
        assert code == 0, message
        code, result, message = run_rollback(outcome.run_id, "zero-downtime test", "test", quiet=True)
        assert code == 0, message
        time.sleep(0.5)
    assert box.status()["serving"]["deployment"] == blue
    print(f"\n{box.router_kind}: {load.ok} requests ok, {len(load.failed)} failed over a cutover and a rollback"
          f" ({sorted(set(load.failed))})")
    assert load.ok > 100
    if box.router_kind == "haproxy":
        assert load.failed == []
