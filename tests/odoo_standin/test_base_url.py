"""``web.base.url`` follows a system user's web login, as in Odoo (res_users.py ``authenticate``)."""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterator

import httpx
import pytest

from .conftest import ADMIN_PASSWORD, DSN, Seeded, Server, connect, rpc

AUTH = "/web/session/authenticate"


def base_url(seeded: Seeded) -> str:
    with connect(seeded.db) as conn:
        row = conn.execute("SELECT value FROM ir_config_parameter WHERE key = 'web.base.url'").fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def reset_url(seeded: Seeded) -> Iterator[None]:
    """Start each test from the seed's value, without a freeze."""
    with connect(seeded.db) as conn:
        conn.execute("UPDATE ir_config_parameter SET value = 'http://localhost' WHERE key = 'web.base.url'")
        conn.execute("DELETE FROM ir_config_parameter WHERE key = 'web.base.url.freeze'")
    yield
    with connect(seeded.db) as conn:
        conn.execute("DELETE FROM ir_config_parameter WHERE key = 'web.base.url.freeze'")


def web_login(srv: Server, seeded: Seeded, login: str = "admin", password: str = ADMIN_PASSWORD,
              headers: dict[str, str] | None = None) -> None:
    with httpx.Client(headers=headers, timeout=60) as client:
        body = rpc(client, srv.url + AUTH, {"db": seeded.db, "login": login, "password": password})
    assert "result" in body, body


@pytest.mark.usefixtures("reset_url")
def test_an_admin_web_login_sets_the_request_url_root(server: Server, seeded: Seeded) -> None:
    web_login(server, seeded)
    assert base_url(seeded) == server.url


@pytest.mark.usefixtures("reset_url")
def test_freeze_keeps_it(server: Server, seeded: Seeded) -> None:
    with connect(seeded.db) as conn:
        conn.execute("INSERT INTO ir_config_parameter (key, value) VALUES ('web.base.url.freeze', 'True')")
    web_login(server, seeded)
    assert base_url(seeded) == "http://localhost"


@pytest.mark.usefixtures("reset_url")
def test_a_user_outside_settings_does_not_change_it(server: Server, seeded: Seeded) -> None:
    with connect(seeded.db) as conn:
        original = conn.execute("SELECT password FROM res_users WHERE login = 'user1'").fetchone()
        conn.execute("UPDATE res_users SET password = 'user1-pw' WHERE login = 'user1'")
    try:
        web_login(server, seeded, "user1", "user1-pw")
    finally:
        with connect(seeded.db) as conn:
            conn.execute("UPDATE res_users SET password = %s WHERE login = 'user1'", original)
    assert base_url(seeded) == "http://localhost"


@pytest.mark.usefixtures("reset_url")
def test_xmlrpc_changes_it_only_when_the_caller_sends_base_location(server: Server, seeded: Seeded) -> None:
    common = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc/2/common")
    assert common.login(seeded.db, "admin", ADMIN_PASSWORD) == 2
    assert common.authenticate(seeded.db, "admin", ADMIN_PASSWORD, {}) == 2
    assert base_url(seeded) == "http://localhost"
    assert common.authenticate(seeded.db, "admin", ADMIN_PASSWORD, {"base_location": "https://erp.example.com"}) == 2
    assert base_url(seeded) == "https://erp.example.com"


@pytest.mark.usefixtures("reset_url")
def test_behind_a_proxy(make_server, seeded: Seeded) -> None:
    """Without --proxy-mode the Host header counts; with it, X-Forwarded-Host and -Proto (Odoo's ProxyFix)."""
    forwarded = {"X-Forwarded-Host": "erp.example.com", "X-Forwarded-Proto": "https", "Host": "10.0.0.5:8069"}
    plain = make_server(None, DSN)
    web_login(plain, seeded, headers=forwarded)
    assert base_url(seeded) == "http://10.0.0.5:8069"
    proxied = make_server(None, DSN, "--proxy-mode")
    web_login(proxied, seeded, headers=forwarded)
    assert base_url(seeded) == "https://erp.example.com"


@pytest.mark.usefixtures("reset_url")
def test_a_second_login_from_the_same_url_writes_nothing(server: Server, seeded: Seeded) -> None:
    """``set_param`` writes only a changed value (Odoo's ``ir.config_parameter.set_param``): a login that finds
    the URL already right leaves no write on production for the drift gate to count."""
    web_login(server, seeded)
    with connect(seeded.db) as conn:
        first = conn.execute("SELECT write_date FROM ir_config_parameter WHERE key = 'web.base.url'").fetchone()
    web_login(server, seeded)
    with connect(seeded.db) as conn:
        again = conn.execute("SELECT write_date FROM ir_config_parameter WHERE key = 'web.base.url'").fetchone()
    assert first is not None and again == first
