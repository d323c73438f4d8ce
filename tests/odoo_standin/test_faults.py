"""Fault switches and process lifecycle: each switch on a live server, ``not_before``, crashes, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect as ws_connect

from .conftest import ADMIN_PASSWORD, Seeded, Server, rpc, wait_for


def write_faults(path: Path, faults: dict[str, Any] | str, *servers: Server) -> None:
    """Replace the fault file atomically, as a drill script should, then wait until each server has logged that
    it read it (it looks every 0.1 s; a loaded machine may take much longer, so a deadline, not a pause)."""
    seen = {srv: _reads(srv) for srv in servers}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(faults if isinstance(faults, str) else json.dumps(faults))
    os.replace(tmp, path)
    for srv, before in seen.items():
        assert wait_for(lambda srv=srv, before=before: _reads(srv) > before, timeout=30), srv.output()[-2000:]


def _reads(srv: Server) -> int:
    """How many times the server has logged a change of its switches or an unreadable fault file."""
    out = srv.output()
    return out.count("fault switches now") + out.count("ignoring fault file")


def login(srv: Server, seeded: Seeded) -> dict[str, Any]:
    with httpx.Client(timeout=60) as client:
        return rpc(client, srv.url + "/web/session/authenticate",
                   {"db": seeded.db, "login": "admin", "password": ADMIN_PASSWORD})


def test_each_switch_on_a_live_server(make_server, seeded: Seeded, tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    srv = make_server(fault_file=faults)  # no file yet: no faults
    assert httpx.get(f"{srv.url}/web/health", timeout=60).status_code == 200

    write_faults(faults, {"error_rate": 0.5}, srv)
    statuses = [httpx.get(f"{srv.url}{p}", timeout=60).status_code for p in ("/web/health", "/web/login") * 10]
    assert statuses.count(500) == 10 and statuses.count(200) == 10

    write_faults(faults, {"error_rate": 0.25}, srv)
    statuses = [httpx.get(f"{srv.url}/web/health", timeout=60).status_code for _ in range(20)]
    assert statuses.count(500) == 5

    write_faults(faults, {"error_paths": ["/web/login"]}, srv)  # one broken page; the health check still fine
    assert [httpx.get(f"{srv.url}{p}", timeout=60).status_code for p in ("/web/login", "/web/login?x=1",
                                                                        "/web/health")] == [500, 500, 200]

    write_faults(faults, {"refuse_login": True}, srv)
    assert login(srv, seeded)["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"

    write_faults(faults, "{half-written", srv)  # unparsable: the previous switches stay in force
    assert login(srv, seeded)["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"

    write_faults(faults, {"missing_attachment": True}, srv)
    assert "result" in login(srv, seeded)
    assert httpx.get(f"{srv.url}/web/content/1", timeout=60).status_code == 404

    write_faults(faults, {"db_down": True}, srv)
    down = httpx.get(f"{srv.url}/web/health?db_server_status=1", timeout=60)
    assert (down.status_code, down.json()) == (500, {"status": "fail", "db_server_status": False})
    assert httpx.get(f"{srv.url}/web/health", timeout=60).json() == {"status": "pass"}
    assert httpx.get(f"{srv.url}/web/content/1", timeout=60).status_code == 200

    write_faults(faults, {"slow_ms": 400}, srv)
    started = time.monotonic()
    assert httpx.get(f"{srv.url}/web/health", timeout=60).status_code == 200
    assert time.monotonic() - started >= 0.4  # a lower bound: a loaded machine only makes it slower

    seen = _reads(srv)
    faults.unlink()  # no file: no faults, as the server says (how fast it answers then is not a behaviour)
    assert wait_for(lambda: _reads(srv) > seen and srv.output().rstrip().endswith("fault switches now none"),
                    timeout=30), srv.output()[-2000:]
    assert httpx.get(f"{srv.url}/web/health?db_server_status=1", timeout=60).json()["db_server_status"] is True
    assert srv.proc is not None and srv.proc.poll() is None


def test_not_before_targets_only_later_processes(make_server, seeded: Seeded, tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    old = make_server(fault_file=faults)
    # Long enough for three requests on a loaded machine: the new process must still be up to answer them.
    write_faults(faults, {"not_before": time.time(), "error_rate": 1.0, "crash_after_seconds": 8}, old)
    new = make_server(fault_file=faults)
    assert [httpx.get(f"{new.url}/web/health", timeout=60).status_code for _ in range(3)] == [500] * 3
    assert new.proc is not None and new.proc.wait(timeout=60) == 3
    assert [httpx.get(f"{old.url}/web/health", timeout=60).status_code for _ in range(3)] == [200] * 3
    assert old.proc is not None and old.proc.poll() is None


def test_crash_after_seconds(make_server, tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"crash_after_seconds": 0.5}))
    started = time.monotonic()
    srv = make_server(fault_file=faults)
    assert srv.proc is not None and srv.proc.wait(timeout=60) == 3
    assert time.monotonic() - started >= 0.5


def test_sigterm_stops_cleanly_with_open_connections(make_server) -> None:
    srv = make_server()
    with httpx.Client(timeout=60) as client, ws_connect(f"ws://127.0.0.1:{srv.port}/websocket",
                                              origin="http://127.0.0.1") as ws:  # type: ignore[arg-type]
        assert client.get(f"{srv.url}/web/health").status_code == 200  # keep-alive connection left open
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        # exits on its own with open connections (it does not wait for the clients to leave); no timing claim
        assert srv.proc.wait(timeout=60) == 0
