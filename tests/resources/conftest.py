"""Real upstreams, real sockets and a load generator for the router tests (no mocks).

A *deployment* is two threaded ``http.server`` instances on loopback: the HTTP port answers
``blue`` (its colour; a 500 on paths under ``/boom``) and the websocket port answers ``ws-blue``;
an ``Upgrade: websocket`` request on the websocket port gets ``101`` and then echoes ``ws-blue:<bytes>`` — a raw tunnel,
which is all a router sees of a websocket once it is upgraded.

Helpers are handed out as fixtures (``net``) rather than imported, because this folder is not
a package: ``tests/resources`` as a package would shadow the project's ``resources`` package.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from resources.router import Upstream


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so routers can reuse connections to us
    disable_nagle_algorithm = True  # headers and body go out separately: avoid 40 ms ACK stalls
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        label = self.server.label
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            key = self.headers.get("Sec-WebSocket-Key", "") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
            accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
            self.send_header("Sec-WebSocket-Accept", accept)  # HAProxy checks the handshake
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            self.connection.settimeout(30)
            try:
                while data := self.connection.recv(4096):
                    self.connection.sendall(label.encode() + b":" + data)
            except OSError:
                pass
            return
        body = f"{label}\n".encode()
        # /boom...: this upstream fails that request, as a broken page of a release would
        self.send_response(500 if self.path.startswith("/boom") else 200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet tests
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, label: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.label = label
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # routers reset idle connections to us; that is expected, not a test failure

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@dataclass
class Deployment:
    colour: str
    http: _Server
    ws: _Server

    @property
    def upstream(self) -> Upstream:
        return Upstream(name=f"prod-{self.colour}", colour=self.colour, http_port=self.http.port,
                        websocket_port=self.ws.port)


@pytest.fixture
def deployments() -> Iterator[dict[str, Deployment]]:
    deps = {c: Deployment(c, _Server(c), _Server(f"ws-{c}")) for c in ("blue", "green")}
    yield deps
    for dep in deps.values():
        dep.http.stop()
        dep.ws.stop()


@dataclass
class LoadResult:
    requests: int = 0
    failures: int = 0
    connections: int = 0
    stale: int = 0  # answered by the previous upstream after a switch returned (see load)
    errors: list[str] = field(default_factory=list)


class Net:
    """Loopback client helpers: one-shot GETs, a websocket tunnel, and keep-alive load."""

    @staticmethod
    def _hostport(url: str) -> tuple[str, int]:
        parts = urlsplit(url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def get(self, url: str, path: str = "/") -> str:
        conn = http.client.HTTPConnection(*self._hostport(url), timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode().strip()
        finally:
            conn.close()

    def served_by(self, url: str, path: str = "/") -> str | None:
        """The router's ``X-Promote-Upstream`` header: the deployment it routed to."""
        conn = http.client.HTTPConnection(*self._hostport(url), timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.getheader("X-Promote-Upstream")
        finally:
            conn.close()

    def tunnel(self, url: str) -> socket.socket:
        """Open an upgraded connection on ``/websocket`` through the router."""
        host, port = self._hostport(url)
        sock = socket.create_connection((host, port), timeout=5)
        sock.sendall(f"GET /websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"tunnel closed during handshake: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        return sock

    @staticmethod
    def echo(sock: socket.socket, data: bytes = b"ping") -> str:
        sock.sendall(data)
        return sock.recv(4096).decode()

    def load(self, url: str, switches: list[Callable[[], str]], clients: int = 4,
             per_window: int = 200, max_requests: int = 50_000, timeout: float = 120) -> LoadResult:
        """``clients`` threads, each on ONE keep-alive connection, GET continuously while the
        ``switches`` run, ``per_window`` requests apart (counted, not a pause: a loaded machine
        would otherwise run the switches with next to no load between them; ``timeout`` s at most
        for each window, then AssertionError). A failed request counts and the client reconnects
        (that counts as a new connection); there is no retry. Each switch returns the body the
        entry point must answer once it has returned: a request made entirely between one
        switch's return and the next switch's start that gets another body counts as stale.
        """
        host, port = self._hostport(url)
        result, lock, stop = LoadResult(), threading.Lock(), threading.Event()
        samples: list[tuple[float, float, str]] = []  # (sent, answered, body) of good requests

        def client() -> None:
            conn, conns, done = http.client.HTTPConnection(host, port, timeout=5), 1, 0
            while not stop.is_set() and done < max_requests:
                done += 1
                sent = time.monotonic()
                try:
                    conn.request("GET", "/")
                    body = conn.getresponse().read().decode().strip()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn, conns = http.client.HTTPConnection(host, port, timeout=5), conns + 1
                    with lock:
                        result.failures += 1
                        result.errors.append(repr(exc))
                    continue
                with lock:
                    samples.append((sent, time.monotonic(), body))
            conn.close()
            with lock:
                result.connections += conns

        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        windows: list[tuple[float, str]] = []  # (switch returned, body from then on)
        starts: list[float] = []
        def window() -> None:
            with lock:
                target = len(samples) + result.failures + per_window
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with lock:
                    if len(samples) + result.failures >= target:
                        return
                time.sleep(0.01)
            raise AssertionError(f"fewer than {per_window} requests through {url} within {timeout}s")

        try:
            for switch in switches:
                window()
                starts.append(time.monotonic())
                body = switch()
                windows.append((time.monotonic(), body))
            window()
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        ends = [*starts[1:], float("inf")]
        result.requests = len(samples) + result.failures
        result.stale = sum(1 for sent, answered, body in samples
                           for (ret, want), end in zip(windows, ends, strict=True)
                           if ret < sent and answered < end and body != want)
        return result


@pytest.fixture
def net() -> Net:
    return Net()
