"""Odoo's HTTP contract as served by ``odoo_standin serve``: shapes compared exactly where Odoo fixes them."""

from __future__ import annotations

import hashlib

import httpx
from websockets.sync.client import connect as ws_connect

from .conftest import ADMIN_PASSWORD, DSN, PgProxy, Seeded, Server, connect, rpc

AUTH = "/web/session/authenticate"
ACCESS_DENIED = {"code": 200, "message": "Odoo Server Error",
                 "data": {"name": "odoo.exceptions.AccessDenied", "debug": "", "message": "Access Denied",
                          "arguments": ["Access Denied"], "context": {}}}


def test_health_without_database_check(server: Server) -> None:
    response = httpx.get(f"{server.url}/web/health", timeout=60)
    assert response.status_code == 200
    assert response.text == '{"status": "pass"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"


def test_health_with_database_check(server: Server) -> None:
    response = httpx.get(f"{server.url}/web/health", params={"db_server_status": "1"}, timeout=60)
    assert response.status_code == 200
    assert response.json() == {"status": "pass", "db_server_status": True}
    assert response.headers["cache-control"] == "no-store"


def test_health_when_postgres_is_unreachable(make_server) -> None:
    srv = make_server(dsn="host=127.0.0.1 port=1 user=postgres connect_timeout=2")
    plain = httpx.get(f"{srv.url}/web/health", timeout=60)
    assert (plain.status_code, plain.json()) == (200, {"status": "pass"})  # liveness never touches the DB
    checked = httpx.get(f"{srv.url}/web/health?db_server_status=1", timeout=10)
    assert checked.status_code == 500
    assert checked.json() == {"status": "fail", "db_server_status": False}


def test_health_opens_the_postgres_database_and_only_when_asked(make_server) -> None:
    """Odoo's ``/web/health`` never uses a database; ``db_server_status`` opens a cursor on ``postgres``."""
    proxy = PgProxy()
    try:
        srv = make_server(None, proxy.dsn())
        for _ in range(3):
            assert httpx.get(f"{srv.url}/web/health", timeout=60).json() == {"status": "pass"}
        assert proxy.databases == []  # not at start-up either
        checked = httpx.get(f"{srv.url}/web/health", params={"db_server_status": "1"}, timeout=60)
        assert (checked.status_code, checked.json()) == (200, {"status": "pass", "db_server_status": True})
        assert proxy.databases == ["postgres"]
        proxy.stop()  # PostgreSQL unreachable from now on
        down = httpx.get(f"{srv.url}/web/health", params={"db_server_status": "1"}, timeout=10)
        assert (down.status_code, down.json()) == (500, {"status": "fail", "db_server_status": False})
        assert httpx.get(f"{srv.url}/web/health", timeout=60).status_code == 200
    finally:
        proxy.stop()


def test_login_success_sets_session(server: Server, seeded: Seeded) -> None:
    params = {"db": seeded.db, "login": "admin", "password": ADMIN_PASSWORD}
    with httpx.Client(timeout=60) as client:
        body = rpc(client, server.url + AUTH, params, 42)
        assert set(body) == {"jsonrpc", "id", "result"} and body["id"] == 42
        result = body["result"]
        assert result["uid"] == 2 and result["username"] == "admin" and result["db"] == seeded.db
        assert result["name"] == "Mitchell Admin" and result["partner_id"] == 3 and result["company_id"] == 1
        assert result["is_admin"] is True
        assert result["server_version"] == "17.0"
        assert result["server_version_info"] == [17, 0, 0, "final", 0, ""]
        assert client.cookies.get("session_id")


def test_login_failures_answer_access_denied(server: Server, seeded: Seeded) -> None:
    with httpx.Client(timeout=60) as client:
        for login, password in (("admin", "wrong"), ("nobody", ADMIN_PASSWORD), ("__system__", "")):
            body = rpc(client, server.url + AUTH, {"db": seeded.db, "login": login, "password": password}, 7)
            assert body == {"jsonrpc": "2.0", "id": 7, "error": ACCESS_DENIED}
        assert "session_id" not in client.cookies
        params = {"db": "other", "login": "admin", "password": ADMIN_PASSWORD}
        wrong_db = rpc(client, server.url + AUTH, params)
        assert wrong_db["error"]["data"]["name"] == "odoo.exceptions.AccessError"


def test_archived_user_cannot_log_in(server: Server, seeded: Seeded) -> None:
    params = {"db": seeded.db, "login": "user1", "password": "known-pw"}
    with connect(seeded.db) as conn, httpx.Client(timeout=60) as client:
        original = conn.execute("SELECT password FROM res_users WHERE login = 'user1'").fetchone()
        try:
            # A plaintext password, as set with SQL, is accepted (and archived users refused) as in Odoo.
            conn.execute("UPDATE res_users SET password = 'known-pw', active = false WHERE login = 'user1'")
            assert rpc(client, server.url + AUTH, params)["error"] == ACCESS_DENIED
            conn.execute("UPDATE res_users SET active = true WHERE login = 'user1'")
            assert rpc(client, server.url + AUTH, params)["result"]["uid"] == 3
        finally:
            conn.execute("UPDATE res_users SET password = %s, active = true WHERE login = 'user1'", original)


def test_version_info(server: Server) -> None:
    with httpx.Client(timeout=60) as client:
        body = rpc(client, server.url + "/web/webclient/version_info", {}, 3)
    assert body == {"jsonrpc": "2.0", "id": 3, "result": {
        "server_version": "17.0", "server_version_info": [17, 0, 0, "final", 0, ""],
        "server_serie": "17.0", "protocol_version": 1}}


def test_server_version_option(make_server, seeded: Seeded) -> None:
    srv = make_server(None, DSN, "--server-version", "18.0")
    with httpx.Client(timeout=60) as client:
        version = rpc(client, srv.url + "/web/webclient/version_info", {})["result"]
        session = rpc(client, srv.url + AUTH, {"db": seeded.db, "login": "admin", "password": ADMIN_PASSWORD})
    assert version["server_serie"] == version["server_version"] == "18.0"
    assert version["server_version_info"] == [18, 0, 0, "final", 0, ""]
    assert session["result"]["server_version_info"] == [18, 0, 0, "final", 0, ""]


def _checksums(seeded: Seeded) -> dict[int, str]:
    with connect(seeded.db) as conn:
        return dict(conn.execute("SELECT id, checksum FROM ir_attachment").fetchall())


def test_content_public_and_private(server: Server, seeded: Seeded) -> None:
    checksums = _checksums(seeded)
    anonymous = httpx.get(f"{server.url}/web/content/1", timeout=60)
    assert anonymous.status_code == 200
    assert anonymous.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha1(anonymous.content).hexdigest() == checksums[1]
    assert httpx.get(f"{server.url}/web/content/2", timeout=60).status_code == 403
    assert httpx.get(f"{server.url}/web/content/2", cookies={"session_id": "forged"}, timeout=60).status_code == 403
    with httpx.Client(timeout=60) as client:
        rpc(client, server.url + AUTH, {"db": seeded.db, "login": "admin", "password": ADMIN_PASSWORD})
        private = client.get(f"{server.url}/web/content/2")
        assert private.status_code == 200
        assert hashlib.sha1(private.content).hexdigest() == checksums[2]
        assert client.get(f"{server.url}/web/content/9999").status_code == 404


def test_content_missing_from_filestore_is_404(server: Server, seeded: Seeded) -> None:
    with connect(seeded.db) as conn:
        row = conn.execute("SELECT store_fname, public FROM ir_attachment WHERE id = 11").fetchone()
    assert row is not None and row[1] is True
    assert httpx.get(f"{server.url}/web/content/11", timeout=60).status_code == 200
    path = seeded.filestore / row[0]
    path.rename(path.with_suffix(".away"))
    try:
        assert httpx.get(f"{server.url}/web/content/11", timeout=60).status_code == 404
    finally:
        path.with_suffix(".away").rename(path)


def test_login_page(server: Server) -> None:
    response = httpx.get(f"{server.url}/web/login", timeout=60)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert "oe_login_form" in response.text


def test_websocket_echo(server: Server) -> None:
    # Odoo refuses a handshake without an Origin (browsers always send one).
    with ws_connect(f"ws://127.0.0.1:{server.port}/websocket", open_timeout=5,
                    origin="http://127.0.0.1") as ws:  # type: ignore[arg-type]
        for text in ("hello", '{"event_name": "subscribe"}'):
            ws.send(text)
            assert ws.recv(timeout=5) == text


def test_keep_alive_reuses_one_connection(server: Server) -> None:
    with httpx.Client(timeout=60) as client:
        for _ in range(5):
            response = client.get(f"{server.url}/web/health")
            assert response.http_version == "HTTP/1.1"
            assert response.headers.get("connection", "keep-alive").lower() != "close"
