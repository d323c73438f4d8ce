"""Every successful login adds a ``res_users_log`` row, as Odoo's ``res.users._login`` does.

``odoo/addons/base/models/res_users.py``: ``_login`` calls ``user._update_last_login()`` (a
``res.users.log`` ``sudo().create({})``) inside its cursor, for the web login and the external API's
``common.login``/``common.authenticate`` alike; a wrong password writes nothing, and an insert that fails
fails the login.
"""

from __future__ import annotations

import uuid
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg import sql

from .conftest import ADMIN_PASSWORD, SERVER, Seeded, Server, connect, drop_db, init_db, rpc

AUTH = "/web/session/authenticate"


def log_rows(db: str, uid: int) -> list[tuple[Any, ...]]:
    with connect(db) as conn:
        return conn.execute("SELECT id, create_uid, write_uid, create_date, write_date FROM res_users_log"
                            " WHERE create_uid = %s ORDER BY id", (uid,)).fetchall()


def web_login(srv: Server, db: str, password: str = ADMIN_PASSWORD) -> dict[str, Any]:
    with httpx.Client(timeout=60) as client:
        return rpc(client, srv.url + AUTH, {"db": db, "login": "admin", "password": password})


def test_a_web_login_adds_one_row_for_its_user(server: Server, seeded: Seeded) -> None:
    before = log_rows(seeded.db, 2)
    assert web_login(server, seeded.db)["result"]["uid"] == 2
    after = log_rows(seeded.db, 2)
    assert len(after) == len(before) + 1
    new = after[-1]
    assert new[1:3] == (2, 2)  # the ORM stamps the logged-in user (sudo keeps the uid)
    assert new[3] is not None and new[4] is not None


@pytest.mark.parametrize("call", ["login", "authenticate"])
def test_an_xmlrpc_login_adds_one_row_for_its_user(server: Server, seeded: Seeded, call: str) -> None:
    common = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc/2/common")
    before = log_rows(seeded.db, 2)
    args: tuple[Any, ...] = (seeded.db, "admin", ADMIN_PASSWORD) + (({},) if call == "authenticate" else ())
    assert getattr(common, call)(*args) == 2
    after = log_rows(seeded.db, 2)
    assert len(after) == len(before) + 1
    assert after[-1][1:3] == (2, 2)


def test_a_failed_login_adds_no_row(server: Server, seeded: Seeded) -> None:
    common = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc/2/common")
    with connect(seeded.db) as conn:
        before = conn.execute("SELECT count(*) FROM res_users_log").fetchone()
    assert common.login(seeded.db, "admin", "wrong password") is False
    assert web_login(server, seeded.db, "wrong password")["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"
    with connect(seeded.db) as conn:
        assert conn.execute("SELECT count(*) FROM res_users_log").fetchone() == before


@pytest.fixture
def no_log_insert_role(tmp_path: Path) -> Iterator[tuple[Seeded, str]]:
    """A database of its own and a role that may do everything on it but insert into ``res_users_log``
    (what a revoked, frozen production looks like to Odoo's login)."""
    seeded = init_db(tmp_path, "--users", "1", "--partners", "1", "--attachments", "0")
    role = f"standin_nolog_{uuid.uuid4().hex[:8]}"
    with connect("postgres") as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    with connect(seeded.db) as conn:
        conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE INSERT ON res_users_log FROM {}").format(sql.Identifier(role)))
    try:
        yield seeded, role
    finally:
        drop_db(seeded.db)
        with connect("postgres") as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_login_whose_log_row_cannot_be_written_fails(no_log_insert_role: tuple[Seeded, str]) -> None:
    seeded, role = no_log_insert_role
    srv = Server(seeded, None, f"{SERVER} user={role}").start()
    try:
        common = xmlrpc.client.ServerProxy(f"{srv.url}/xmlrpc/2/common")
        with pytest.raises(xmlrpc.client.Fault) as caught:
            common.login(seeded.db, "admin", ADMIN_PASSWORD)
        assert "permission denied" in caught.value.faultString
        error = web_login(srv, seeded.db)["error"]
        assert "permission denied" in error["data"]["message"]
        # Neither login kept anything: the whole login transaction was rolled back.
        with connect(seeded.db) as conn:
            assert conn.execute("SELECT count(*) FROM res_users_log").fetchone() == (0,)
    finally:
        srv.stop()
