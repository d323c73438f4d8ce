"""What users and integrations keep across a cutover and a rollback: production's database name, their
sessions, and where their writes land.

Through the sandbox's router, with the stand-in (which keeps sessions as files and serves /xmlrpc/2 and
/jsonrpc, opening any database by name, as Odoo does): an integration using Python's standard
``xmlrpc.client`` and production's database name keeps working, without one failed call, through a
promotion and a rollback, and what it writes lands in the database the router serves at that moment; a
browser session taken before the cutover is still logged in after it, and after the rollback.
"""

from __future__ import annotations

import threading
import time
import xmlrpc.client
from typing import Any

import httpx
import pytest

from promote_pipeline.cli.runner import run_rollback
from promote_pipeline.cli.sandbox import PROD, Sandbox
from resources import secrets

pytestmark = pytest.mark.slow


class Integration:
    """An integration configured once: production's database name, a login, calls in a loop."""

    def __init__(self, url: str, database: str, login: str, password: str) -> None:
        self.url, self.database, self.login, self.password = url, database, login, password
        self.uid = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/common").authenticate(database, login, password, {})
        self.calls, self.failures = 0, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def execute(self, model: str, method: str, *args: Any) -> Any:
        models = xmlrpc.client.ServerProxy(f"{self.url}/xmlrpc/2/object", allow_none=True)
        return models.execute_kw(self.database, self.uid, self.password, model, method, list(args))

    def _loop(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.execute("res.partner", "search_count", [])
                self.calls += 1
            except (OSError, xmlrpc.client.Error) as exc:
                self.failures.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            time.sleep(0.01)

    def __enter__(self) -> Integration:
        self._thread.start()
        return self

    def wait_for_calls(self, more: int, timeout: float = 120) -> None:
        """Until ``more`` further calls have succeeded (a condition, not a pause)."""
        target, deadline = self.calls + more, time.monotonic() + timeout
        while self.calls < target and not self.failures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.calls >= target, f"{self.calls} calls, {target} expected within {timeout}s: {self.failures}"

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the integration's thread did not stop"


def _session(url: str, database: str, login: str, password: str) -> str:
    resp = httpx.post(f"{url}/web/session/authenticate", json={
        "jsonrpc": "2.0", "method": "call", "id": 1, "params": {"db": database, "login": login, "password": password}})
    assert resp.json()["result"]["uid"], resp.text
    cookie = resp.cookies.get("session_id")
    assert cookie
    return cookie


def _logged_in_as(url: str, cookie: str) -> Any:
    resp = httpx.post(f"{url}/web/session/get_session_info", cookies={"session_id": cookie},
                      json={"jsonrpc": "2.0", "method": "call", "id": 1, "params": {}})
    return (resp.json().get("result") or {}).get("uid")


def _landed_in(box: Sandbox, partner_id: int, name: str) -> list[str]:
    """The physical databases of production's deployments that hold the partner."""
    res = box.resources()
    env = res["ops_db"].environment(PROD)
    found = []
    for dep in res["ops_db"].all_deployments():
        if dep.environment_id != PROD or dep.state == "deleted":
            continue
        with res["odoo_host"].connect(env.db_dsn_ref, dep.db_name) as conn:
            if conn.execute("SELECT 1 FROM res_partner WHERE id = %s AND name = %s", (partner_id, name)).fetchone():
                found.append(dep.db_name)
    return found


def test_production_keeps_its_name_its_sessions_and_where_writes_land(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    res = box.resources()
    env = res["ops_db"].environment(PROD)
    blue = res["ops_db"].active_deployment(PROD)
    url = res["router"].state(PROD).active_url
    name = blue.served_db
    assert name == env.odoo_db_name
    password = secrets.resolve(env.smoke_password_ref)
    cookie = _session(url, name, env.smoke_login, password)
    uid = _logged_in_as(url, cookie)
    assert uid

    with Integration(url, name, env.smoke_login, password) as integration:
        integration.wait_for_calls(5)  # the integration is calling blue before the promotion starts
        code, outcome, message = h.promote(stability_window_seconds=1)
        assert code == 0, message
        green = res["ops_db"].active_deployment(PROD)
        assert green.deployment_id != blue.deployment_id and green.served_db == name
        assert _logged_in_as(url, cookie) == uid  # the session taken on blue, on green
        made = integration.execute("res.partner", "create", {"name": "Written after cutover"})
        assert _landed_in(box, made, "Written after cutover") == [green.db_name]

        code, result, message = run_rollback(outcome.run_id, "kept-across test", "test", quiet=True)
        assert code == 0, message
        assert res["ops_db"].active_deployment(PROD).deployment_id == blue.deployment_id
        assert _logged_in_as(url, cookie) == uid  # and on blue again
        made = integration.execute("res.partner", "create", {"name": "Written after rollback"})
        assert _landed_in(box, made, "Written after rollback") == [blue.db_name]
        # The test's own write on production goes: left there, every later promotion in this sandbox would meet
        # it at the drift gate.
        with res["odoo_host"].connect(env.db_dsn_ref, blue.db_name) as conn:
            conn.execute("DELETE FROM res_partner WHERE id = %s", (made,))
        integration.wait_for_calls(5)  # and goes on calling after the rollback
    assert integration.failures == []  # not one call of the integration failed over a cutover and a rollback
    # The retired green's physical name is no name production answers to: through the router it opens nothing.
    try:
        got = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/common").authenticate(
            green.db_name, env.smoke_login, password, {})
    except xmlrpc.client.Error:
        got = None
    assert not got
