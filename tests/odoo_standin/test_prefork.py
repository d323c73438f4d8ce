"""The process model, counted from /proc: prefork (``--workers N``) against threaded (``--workers 0``).

Servers start in a process group of their own, as the promoter starts them, so signalling the group
never reaches pytest.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from .conftest import DSN, Seeded, Server, free_port, group_members, parent_of, wait_for

WORKERS = 2
ORIGIN = "http://127.0.0.1"  # Odoo refuses a websocket handshake without one (400), as browsers always send it


@pytest.fixture
def prefork(seeded: Seeded) -> Iterator[Server]:
    srv = Server(seeded, None, DSN, "--workers", str(WORKERS), "--gevent-port", str(free_port()), own_group=True)
    srv.start()
    assert wait_for(lambda: _answers(websocket_url(srv).replace("ws://", "http://") + "/health"))
    yield srv
    srv.stop()


def websocket_url(srv: Server) -> str:
    port = srv.args[srv.args.index("--gevent-port") + 1]
    return f"ws://127.0.0.1:{port}/websocket"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _echo(url: str) -> str:
    with ws_connect(url, open_timeout=5, origin=ORIGIN) as ws:  # type: ignore[arg-type]
        ws.send("ping")
        return str(ws.recv(timeout=5))


def test_master_http_workers_and_websocket_process_share_one_group(prefork: Server) -> None:
    assert prefork.proc is not None
    master = prefork.proc.pid
    members = group_members(master)
    assert len(members) == 1 + WORKERS + 1  # nothing calls setsid: every child stays in the master's group
    assert {parent_of(pid) for pid in members if pid != master} == {master}
    assert os.getsid(master) == master and {os.getsid(pid) for pid in members} == {master}
    assert [httpx.get(f"{prefork.url}/web/health", timeout=60).status_code for _ in range(6)] == [200] * 6


def test_websockets_only_on_the_websocket_port(prefork: Server) -> None:
    assert _echo(websocket_url(prefork)) == "ping"
    with pytest.raises(InvalidStatus) as refused:
        _echo(f"ws://127.0.0.1:{prefork.port}/websocket")
    assert refused.value.response.status_code == 500  # Odoo: "Couldn't bind the websocket..."
    assert "Couldn't bind the websocket. Is the connection opened on the evented port" in prefork.output()
    incomplete = httpx.get(f"{prefork.url}/websocket", timeout=60)
    assert incomplete.status_code == 400
    with pytest.raises(InvalidStatus) as no_origin:
        with ws_connect(websocket_url(prefork), open_timeout=5):
            pass
    assert no_origin.value.response.status_code == 400


def test_threaded_mode_serves_websockets_on_the_http_port_and_opens_no_other(seeded: Seeded) -> None:
    other_port = free_port()
    srv = Server(seeded, None, DSN, "--workers", "0", "--gevent-port", str(other_port), own_group=True).start()
    try:
        assert _echo(f"ws://127.0.0.1:{srv.port}/websocket") == "ping"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{other_port}/websocket/health", timeout=2)
        assert srv.proc is not None and group_members(srv.proc.pid) == [srv.proc.pid]
    finally:
        srv.stop()


def test_sigterm_to_the_master_stops_every_process(prefork: Server) -> None:
    assert prefork.proc is not None
    master = prefork.proc.pid
    prefork.proc.send_signal(signal.SIGTERM)
    assert prefork.proc.wait(timeout=60) == 0
    assert wait_for(lambda: group_members(master) == [], timeout=60)  # every worker gone, not just the master


def test_killing_only_the_master_leaves_workers_serving(prefork: Server) -> None:
    """A SIGKILL (or a stop that escalates to one) on the master's pid alone: its workers keep the socket and
    keep answering until they notice, and a busy one finishes first. Stopping a deployment for sure means
    signalling its process group."""
    assert prefork.proc is not None
    master = prefork.proc.pid
    before = group_members(master)
    prefork.proc.kill()
    prefork.proc.wait(timeout=60)
    orphans = group_members(master)
    assert len(orphans) == len(before) - 1 and master not in orphans
    assert httpx.get(f"{prefork.url}/web/health", timeout=2).status_code == 200  # served by an orphan
    assert {parent_of(pid) for pid in orphans} != {master}
    os.killpg(master, signal.SIGTERM)
    assert wait_for(lambda: group_members(master) == [], timeout=60)


def test_orphaned_workers_leave_once_they_notice(prefork: Server) -> None:
    """As Odoo's workers check their parent every beat (4 s), the stand-in's leave within a few seconds."""
    assert prefork.proc is not None
    master = prefork.proc.pid
    prefork.proc.kill()
    prefork.proc.wait(timeout=60)
    assert group_members(master) != []
    assert wait_for(lambda: group_members(master) == [], timeout=60, interval=0.2)


def test_a_worker_forked_just_before_the_master_dies_still_leaves(prefork: Server) -> None:
    """A worker that is still starting when the master is killed must compare against the master's pid, not
    whatever its parent is by the time it looks (init's, once orphaned), or it would serve forever."""
    assert prefork.proc is not None
    master = prefork.proc.pid
    os.kill(master, signal.SIGTTIN)  # one HTTP worker more: forked now, still building its app below
    assert wait_for(lambda: len(group_members(master)) == 1 + WORKERS + 2, timeout=60, interval=0.01)
    prefork.proc.kill()
    prefork.proc.wait(timeout=60)
    assert wait_for(lambda: group_members(master) == [], timeout=60, interval=0.2)


def test_a_worker_killed_with_sigterm_dies_and_is_replaced(prefork: Server) -> None:
    assert prefork.proc is not None
    master = prefork.proc.pid
    children = [pid for pid in group_members(master) if pid != master]
    victim = children[0]
    os.kill(victim, signal.SIGTERM)  # a worker's SIGTERM is the default action: immediate death
    assert wait_for(lambda: victim not in group_members(master), timeout=60)
    assert wait_for(lambda: len(group_members(master)) == 1 + WORKERS + 1, timeout=60)
    assert httpx.get(f"{prefork.url}/web/health", timeout=60).status_code == 200


def test_a_critical_worker_error_stops_the_master(seeded: Seeded, tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"crash_after_seconds": 0.5}))  # every worker exits with status 3
    srv = Server(seeded, faults, DSN, "--workers", "2", "--gevent-port", str(free_port()), own_group=True)
    srv.start(wait=False)  # its workers die 0.5 s after they start: it may never answer, and need not
    try:
        assert srv.proc is not None
        assert srv.proc.wait(timeout=60) == 255
        assert wait_for(lambda: group_members(srv.proc.pid) == [], timeout=60)  # type: ignore[union-attr]
        assert "Critical worker error" in srv.output()
    finally:
        srv.stop()
