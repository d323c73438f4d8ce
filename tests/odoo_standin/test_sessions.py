"""HTTP sessions as Odoo keeps them: files any server on the same data_dir reads, tokens, the db filter."""

from __future__ import annotations

import hmac
import json
import os
import re
import stat
from hashlib import sha256
from pathlib import Path
from typing import Any

import httpx

from .conftest import ADMIN_PASSWORD, DSN, Seeded, Server, connect, init_db, rpc

AUTH = "/web/session/authenticate"
INFO = "/web/session/get_session_info"
SID = re.compile(r"^[A-Za-z0-9_-]{84}$")


def login(client: httpx.Client, srv: Server, db: str, login: str = "admin", password: str = ADMIN_PASSWORD,
          ) -> dict[str, Any]:
    return rpc(client, srv.url + AUTH, {"db": db, "login": login, "password": password})


def session_file(seeded: Seeded, sid: str) -> Path:
    return seeded.data_dir / "sessions" / sid[:2] / sid


def expected_token(db: str, uid: int, sid: str) -> str:
    """Odoo's ``_compute_session_token``, computed here independently: auth_oauth (installed by default)
    adds its access token to base's fields."""
    with connect(db) as conn:
        row = conn.execute("SELECT (SELECT value FROM ir_config_parameter WHERE key = 'database.secret'),"
                           " active, id, login, oauth_access_token, password FROM res_users WHERE id = %s",
                           (uid,)).fetchone()
    return hmac.new(str(row).encode(), sid.encode(), sha256).hexdigest()


def test_login_writes_an_odoo_session_file(server: Server, seeded: Seeded) -> None:
    with httpx.Client(timeout=60) as client:
        assert login(client, server, seeded.db)["result"]["uid"] == 2
        sid = client.cookies["session_id"]
    assert SID.match(sid)
    path = session_file(seeded, sid)
    data = json.loads(path.read_text())
    assert list(data) == ["context", "db", "debug", "login", "uid", "session_token", "_trace"]
    assert data == {"context": {"lang": "en_US", "tz": False, "uid": 2}, "db": seeded.db, "debug": "",
                    "login": "admin", "uid": 2, "session_token": expected_token(seeded.db, 2, sid), "_trace": []}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert not list(path.parent.parent.glob("*.__wz_sess"))  # written to a temporary file, renamed into place


def test_cookie_attributes(server: Server, seeded: Seeded) -> None:
    with httpx.Client(timeout=60) as client:
        response = client.post(server.url + AUTH, json={"jsonrpc": "2.0", "method": "call", "params": {
            "db": seeded.db, "login": "admin", "password": ADMIN_PASSWORD}})
    cookie = response.headers["set-cookie"]
    assert "Max-Age=604800" in cookie and "HttpOnly" in cookie and "Path=/" in cookie and "expires=" in cookie.lower()
    assert "samesite" not in cookie.lower()


def test_servers_sharing_a_data_dir_share_sessions_and_a_restart_keeps_them(make_server, seeded: Seeded) -> None:
    first, second = make_server(), make_server()
    with httpx.Client(timeout=60) as client:
        login(client, first, seeded.db)
        info = rpc(client, second.url + INFO, {})
        assert info["result"]["uid"] == 2 and info["result"]["db"] == seeded.db
        first.stop()
        second.stop()
        restarted = make_server()
        assert rpc(client, restarted.url + INFO, {})["result"]["username"] == "admin"
        assert client.get(f"{restarted.url}/web/content/2").status_code == 200  # a private attachment


def test_every_authenticated_request_checks_the_token(server: Server, seeded: Seeded) -> None:
    with httpx.Client(timeout=60) as client, connect(seeded.db) as conn:
        login(client, server, seeded.db)
        old_sid = client.cookies["session_id"]
        assert rpc(client, server.url + INFO, {})["result"]["uid"] == 2
        data = json.loads(session_file(seeded, old_sid).read_text())
        assert [t["ip_address"] for t in data["_trace"]] == ["127.0.0.1"]  # a device seen on a checked request
        secret = conn.execute("SELECT value FROM ir_config_parameter WHERE key = 'database.secret'").fetchone()
        conn.execute("UPDATE ir_config_parameter SET value = 'another secret' WHERE key = 'database.secret'")
        try:
            expired = rpc(client, server.url + INFO, {})
            assert (expired["error"]["code"], expired["error"]["message"]) == (100, "Odoo Session Expired")
            assert expired["error"]["data"]["name"] == "odoo.http.SessionExpiredException"
            page = client.get(f"{server.url}/odoo", follow_redirects=False)
            assert (page.status_code, page.headers["location"]) == (303, "/web/login?redirect=%2Fodoo%3F")
            assert client.cookies["session_id"] != old_sid and not session_file(seeded, old_sid).exists()
            assert client.get(f"{server.url}/web/content/2").status_code == 403
        finally:
            conn.execute("UPDATE ir_config_parameter SET value = %s WHERE key = 'database.secret'", secret)


def test_a_password_change_logs_the_users_sessions_out(server: Server, seeded: Seeded) -> None:
    with connect(seeded.db) as conn:
        original = conn.execute("SELECT password FROM res_users WHERE login = 'user2'").fetchone()
        conn.execute("UPDATE res_users SET password = 'first-pw' WHERE login = 'user2'")
    try:
        with httpx.Client(timeout=60) as client:
            assert login(client, server, seeded.db, "user2", "first-pw")["result"]["uid"] == 4
            assert rpc(client, server.url + INFO, {})["result"]["uid"] == 4
            with connect(seeded.db) as conn:
                conn.execute("UPDATE res_users SET password = 'second-pw' WHERE login = 'user2'")
            assert rpc(client, server.url + INFO, {})["error"]["code"] == 100
    finally:
        with connect(seeded.db) as conn:
            conn.execute("UPDATE res_users SET password = %s WHERE login = 'user2'", original)


def test_db_filter_logs_out_a_session_of_another_database(seeded: Seeded, scratch_dbs: list[str]) -> None:
    """As verified on Odoo 18: warning logged, old file deleted, new id, a fresh session on the filter's db."""
    other = init_db(seeded.data_dir, "--users", "1", "--partners", "0", "--attachments", "0")
    scratch_dbs.append(other.db)
    served = Server(seeded).start()
    filtered = Server(other, None, DSN, "--db-filter", f"^{other.db}$").start()
    try:
        with httpx.Client(timeout=60) as client:
            login(client, served, seeded.db)
            old_sid = client.cookies["session_id"]
            response = client.get(f"{filtered.url}/odoo", follow_redirects=False)
            new_sid = client.cookies["session_id"]
    finally:
        served.stop()
        filtered.stop()
    assert (response.status_code, response.headers["location"]) == (303, "/web/login?redirect=%2Fodoo%3F")
    assert (f"Logged into database {seeded.db!r}, but dbfilter rejects it; logging session out."
            in filtered.output())
    assert new_sid != old_sid and not session_file(seeded, old_sid).exists()
    assert json.loads(session_file(seeded, new_sid).read_text()) == {
        "context": {"lang": "en_US"}, "db": other.db, "debug": "", "login": None, "uid": None,
        "session_token": None, "_trace": []}


def test_db_filter_substitutes_the_host(seeded: Seeded) -> None:
    """``%d`` is the request host's first label: one server, a database per host name."""
    prefix = seeded.db.split("_")[0]  # "standin"
    srv = Server(seeded, None, DSN, "--db-filter", f"^%d_test_{seeded.db.split('_')[-1]}$").start()
    try:
        with httpx.Client(timeout=60) as client:
            served = client.get(f"{srv.url}/web/content/1", headers={"Host": f"{prefix}.example.com"})
            other = client.get(f"{srv.url}/web/content/1", headers={"Host": "elsewhere.example.com"})
            refused = rpc(client, srv.url + AUTH, {"db": seeded.db, "login": "admin", "password": ADMIN_PASSWORD})
    finally:
        srv.stop()
    assert served.status_code == 200 and other.status_code == 404  # no database for that host: no such route
    assert refused["error"]["data"]["message"] == "Database not found."  # Host 127.0.0.1 matches nothing


def test_several_databases_and_no_monodb(seeded: Seeded, scratch_dbs: list[str]) -> None:
    other = init_db(seeded.data_dir, "--users", "1", "--partners", "0", "--attachments", "1",
                    "--attachment-size", "10")
    scratch_dbs.append(other.db)
    srv = Server(seeded, None, DSN, "--db", f"{seeded.db},{other.db}").start()
    try:
        with httpx.Client(timeout=60) as client:
            assert client.get(f"{srv.url}/web/content/1").status_code == 404  # two databases: none chosen
            assert login(client, srv, other.db)["result"]["db"] == other.db
            assert client.get(f"{srv.url}/web/content/1").status_code == 200  # the session's database
            with connect(other.db) as conn:
                size = conn.execute("SELECT file_size FROM ir_attachment WHERE id = 1").fetchone()
            assert size == (10,)
    finally:
        srv.stop()


def test_sessions_folder_is_under_the_data_dir(server: Server, seeded: Seeded) -> None:
    with httpx.Client(timeout=60) as client:
        login(client, server, seeded.db)
    folders = [p for p in (seeded.data_dir / "sessions").iterdir() if p.is_dir()]
    assert folders and all(len(p.name) == 2 for p in folders)
    assert all(SID.match(f.name) for p in folders for f in p.iterdir())
    assert os.access(seeded.data_dir / "sessions", os.W_OK)
