"""``promote launch`` and ``promote status`` against real loopback servers that are not a working Dagster
webserver: one that answers HTML, one that answers GraphQL errors, one that answers HTTP 500 or 403, and one
that accepts the connection and never answers. Each gives one line on stderr and exit code 3 (the webserver
could not take or report the run), within the configured request timeout, never a traceback or a hang.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from promote_pipeline.cli import launch

PROMOTE = Path(sys.executable).parent / "promote"
INPUTS = {"project_id": "proj_x", "staging_env_id": "env_x_staging", "prod_env_id": "env_x_prod", "user_id": "alice"}
EXIT_UNAVAILABLE = 3  # README, "promote launch" and "promote status": the webserver could not take or report it


def _answering(status: int, body: str, content_type: str) -> Callable[[], tuple[str, Callable[[], None]]]:
    def start() -> tuple[str, Callable[[], None]]:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet tests
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

        def stop() -> None:
            server.shutdown()
            server.server_close()

        return f"http://127.0.0.1:{server.server_address[1]}", stop

    return start


def _silent() -> tuple[str, Callable[[], None]]:
    """Accepts every connection, reads what comes, never answers (a hung server, or a proxy to one)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()

    return f"http://127.0.0.1:{listener.getsockname()[1]}", stop


SERVERS: dict[str, Callable[[], tuple[str, Callable[[], None]]]] = {
    "html": _answering(200, "<html><body>It works!</body></html>", "text/html"),
    "graphql_errors": _answering(200, json.dumps({"errors": [{"message": 'Cannot query field "launchRun";'
                                                                        " api_key=sk_live_abcdef123456"}]}),
                                 "application/json"),
    "http_500": _answering(500, "Internal Server Error", "text/plain"),
    "http_403": _answering(403, json.dumps({"detail": "forbidden"}), "application/json"),
    "silent": _silent,
}
# What each says, after "the webserver at URL " (or, for a silent one, the timeout's words).
SAYS = {
    "html": "answered without a GraphQL result: is it a Dagster webserver?",
    "graphql_errors": 'refused the query: Cannot query field "launchRun"; api_key=[REDACTED]',  # redacted, too
    "http_500": "answered HTTP 500: its log says why",
    "http_403": "answered HTTP 403: it refuses this client: does it sit behind a proxy that wants credentials?",
    "silent": "accepted the connection but did not answer within 2s (it may still take the run: look at its runs"
              " before launching again; PROMOTE_GRAPHQL_TIMEOUT allows a slower one)",
}
TIMEOUT = 2  # PROMOTE_GRAPHQL_TIMEOUT for these tests: the silent server is given up on after it


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    url, stop = SERVERS[request.param]()
    try:
        yield request.param, url
    finally:
        stop()


def _promote(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, launch.TIMEOUT_VARIABLE: str(TIMEOUT)}
    started = time.monotonic()
    # A generous bound: a hang shows as a failure here, not as a stuck suite.
    done = subprocess.run([str(PROMOTE), *args], capture_output=True, text=True, timeout=120, env=env)
    return done, time.monotonic() - started


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_launch_says_what_the_server_did_in_one_line_and_exits_3(server: tuple[str, str]) -> None:
    kind, url = server
    done, took = _promote("launch", "--project", INPUTS["project_id"], "--staging", INPUTS["staging_env_id"],
                          "--prod", INPUTS["prod_env_id"], "--user", INPUTS["user_id"], "--url", url)
    assert _one_line(done.stderr) == f"launch failed: the webserver at {url} {SAYS[kind]}"
    assert done.returncode == EXIT_UNAVAILABLE
    if kind == "silent":
        # Given up on after the timeout, per request (the client asks twice: job names, then the launch).
        assert TIMEOUT <= took < 60, took


def test_status_says_what_the_server_did_in_one_line_and_exits_3(server: tuple[str, str]) -> None:
    kind, url = server
    done, took = _promote("status", "00000000-0000-0000-0000-000000000000", "--url", url)
    assert _one_line(done.stderr) == f"status unavailable: the webserver at {url} {SAYS[kind]}"
    assert done.returncode == EXIT_UNAVAILABLE
    if kind == "silent":
        assert TIMEOUT <= took < 60, took


def test_each_failure_has_its_kind(server: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    kind, url = server
    monkeypatch.setenv(launch.TIMEOUT_VARIABLE, str(TIMEOUT))
    for attempt in (lambda: launch.submit(INPUTS, url), lambda: launch.report("0" * 8, url)):
        with pytest.raises(launch.LaunchError) as caught:
            attempt()
        assert caught.value.kind == ("timeout" if kind == "silent" else "server")


def test_a_timeout_that_is_not_a_number_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(launch.TIMEOUT_VARIABLE, "soon")
    with pytest.raises(launch.LaunchError, match="PROMOTE_GRAPHQL_TIMEOUT: must be a whole number of seconds"):
        launch.graphql("http://127.0.0.1:9", "{ version }")
