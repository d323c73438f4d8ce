"""The external API through real clients: ``xmlrpc.client`` on ``/xmlrpc/2``, httpx on ``/jsonrpc``.

Shapes and fault codes are the ones a real Odoo 18 gives for the same calls.
"""

from __future__ import annotations

import base64
import hashlib
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg import sql

from .conftest import ADMIN_PASSWORD, DSN, PgProxy, Seeded, Server, connect, init_db, rpc, unique_db


@pytest.fixture
def common(server: Server) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc/2/common")


@pytest.fixture
def models(server: Server) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc/2/object")


@pytest.fixture
def other_db(seeded: Seeded) -> Iterator[Seeded]:
    """A second database in the same data_dir, which no server was started for."""
    from .conftest import drop_db

    db = init_db(seeded.data_dir, "--users", "1", "--partners", "2", "--attachments", "1", "--attachment-size", "10")
    yield db
    drop_db(db.db)


def fault(call: Any) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as caught:
        call()
    return caught.value


def test_common_version_login_authenticate(common: xmlrpc.client.ServerProxy, seeded: Seeded) -> None:
    assert common.version() == {"server_version": "17.0", "server_version_info": [17, 0, 0, "final", 0, ""],
                                "server_serie": "17.0", "protocol_version": 1}
    assert common.login(seeded.db, "admin", ADMIN_PASSWORD) == 2
    assert common.authenticate(seeded.db, "admin", ADMIN_PASSWORD, {}) == 2
    assert common.login(seeded.db, "admin", "wrong") is False
    assert common.login(seeded.db, "nobody", ADMIN_PASSWORD) is False


def test_execute_kw_reads_as_odoo_renders(models: xmlrpc.client.ServerProxy, seeded: Seeded) -> None:
    def call(model: str, method: str, *args: Any, **kw: Any) -> Any:
        return models.execute_kw(seeded.db, 2, ADMIN_PASSWORD, model, method, list(args), kw)

    admin = call("res.users", "search_read", [["login", "=", "admin"]],
                 fields=["login", "password", "partner_id", "company_id", "active", "name"])
    assert admin == [{"id": 2, "login": "admin", "password": "", "partner_id": [3, "Mitchell Admin"],
                      "company_id": [1, "YourCompany"], "active": True, "name": "Mitchell Admin"}]
    assert call("res.partner", "search_count", []) == 3 + 2 + 20
    assert call("res.partner", "search_count", [["name", "ilike", "demo partner"]]) == 20
    assert call("res.partner", "search_count", ["|", ["id", "=", 1], ["id", "in", [2, 3]]]) == 3
    first = call("res.partner", "search_read", [["name", "=like", "Demo Partner 1%"]], fields=["name"],
                 order="id", limit=2)
    assert [p["name"] for p in first] == ["Demo Partner 1", "Demo Partner 10"]
    assert call("res.partner", "read", [3], ["name"]) == [{"id": 3, "name": "Mitchell Admin"}]
    assert call("res.partner", "read", [99999], ["name"]) == []  # read skips what is gone, as Odoo's does
    stamp = call("res.partner", "read", [1], ["create_date", "email", "company_id"])[0]
    assert len(stamp["create_date"]) == 19 and stamp["company_id"] == [1, "YourCompany"]
    url = call("ir.config_parameter", "search_read", [["key", "=", "database.uuid"]], fields=["key", "value"])
    assert len(url) == 1 and set(url[0]) == {"id", "key", "value"}


def test_execute_kw_writes(models: xmlrpc.client.ServerProxy, seeded: Seeded) -> None:
    def call(model: str, method: str, *args: Any, **kw: Any) -> Any:
        return models.execute_kw(seeded.db, 2, ADMIN_PASSWORD, model, method, list(args), kw)

    one = call("res.partner", "create", {"name": "RPC partner", "email": "rpc@example.com"})
    many = call("res.partner", "create", [{"name": "RPC partner 2"}])
    assert isinstance(one, int) and isinstance(many, list) and len(many) == 1
    assert call("res.partner", "write", [one], {"email": "changed@example.com", "company_id": 1}) is True
    assert call("res.partner", "read", [one], ["email", "company_id"]) == [
        {"id": one, "email": "changed@example.com", "company_id": [1, "YourCompany"]}]
    assert call("res.partner", "write", [one, *many], {"active": False}) is True
    assert call("res.partner", "search_count", [["name", "like", "RPC partner"]]) == 0  # archived: hidden
    hidden = call("res.partner", "search_count", [["name", "like", "RPC partner"]], context={"active_test": False})
    assert hidden == 2


def test_attachments_come_from_and_go_to_the_filestore(models: xmlrpc.client.ServerProxy, seeded: Seeded) -> None:
    def call(model: str, method: str, *args: Any, **kw: Any) -> Any:
        return models.execute_kw(seeded.db, 2, ADMIN_PASSWORD, model, method, list(args), kw)

    [stored] = call("ir.attachment", "read", [2], ["datas", "checksum", "store_fname", "res_model"])
    assert hashlib.sha1(base64.b64decode(stored["datas"])).hexdigest() == stored["checksum"]
    content = b"attachment written over XML-RPC"
    new_id = call("ir.attachment", "create", {"name": "note.txt", "datas": base64.b64encode(content).decode()})
    [new] = call("ir.attachment", "read", [new_id], ["store_fname", "checksum", "file_size", "mimetype", "res_id"])
    digest = hashlib.sha1(content).hexdigest()
    assert new == {"id": new_id, "store_fname": f"{digest[:2]}/{digest}", "checksum": digest,
                   "file_size": len(content), "mimetype": "text/plain", "res_id": 0}
    assert (seeded.filestore / digest[:2] / digest).read_bytes() == content


def test_faults_carry_odoo_codes(server: Server, models: xmlrpc.client.ServerProxy, seeded: Seeded) -> None:
    db = seeded.db

    def call(uid: int, password: str, model: str, method: str, *args: Any, **kw: Any) -> Any:
        return models.execute_kw(db, uid, password, model, method, list(args), kw)

    denied = fault(lambda: call(2, "wrong", "res.partner", "search_count", []))
    assert (denied.faultCode, denied.faultString) == (3, "Access Denied")
    no_user = fault(lambda: call(999, "x", "res.partner", "search_count", []))
    assert no_user.faultCode == 2
    assert no_user.faultString == "Record does not exist or has been deleted.\n(Record: res.users(999,), User: 999)"
    unknown = fault(lambda: call(2, ADMIN_PASSWORD, "no.model", "search_count", []))
    assert (unknown.faultCode, unknown.faultString) == (2, "Object no.model doesn't exist")
    private = fault(lambda: call(2, ADMIN_PASSWORD, "res.partner", "_search", []))
    assert (private.faultCode, private.faultString) == (4, "Private methods (such as _search) cannot be called "
                                                           "remotely.")
    gone = fault(lambda: call(2, ADMIN_PASSWORD, "res.partner", "write", [99999], {"name": "x"}))
    assert gone.faultCode == 2 and "res.partner(99999,)" in gone.faultString
    bad_field = fault(lambda: call(2, ADMIN_PASSWORD, "res.partner", "search_read", [], fields=["nofield"]))
    assert bad_field.faultCode == 1
    assert bad_field.faultString.rstrip().endswith("ValueError: Invalid field 'nofield' on model 'res.partner'")
    method = fault(lambda: call(2, ADMIN_PASSWORD, "res.partner", "frobnicate", []))
    assert method.faultCode == 1 and "AttributeError: The method 'frobnicate'" in method.faultString
    service = fault(lambda: xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc/2/nope").list())
    assert service.faultCode == 1 and service.faultString.rstrip().endswith("KeyError: nope")


def test_system_parameters_need_the_settings_group(models: xmlrpc.client.ServerProxy, seeded: Seeded) -> None:
    with connect(seeded.db) as conn:
        original = conn.execute("SELECT password FROM res_users WHERE login = 'user1'").fetchone()
        conn.execute("UPDATE res_users SET password = 'user1-pw' WHERE login = 'user1'")
    try:
        partners = models.execute_kw(seeded.db, 3, "user1-pw", "res.partner", "search_count", [[]])
        assert partners > 0
        refused = fault(lambda: models.execute_kw(seeded.db, 3, "user1-pw", "ir.config_parameter", "search_read",
                                                  [[]], {"fields": ["key"]}))
        assert refused.faultCode == 4 and "ir.config_parameter" in refused.faultString
    finally:
        with connect(seeded.db) as conn:
            conn.execute("UPDATE res_users SET password = %s WHERE login = 'user1'", original)


def test_rpc_opens_any_database_through_the_servers_dsn(make_server, other_db: Seeded) -> None:
    """No db filter: a server started for one database answers for another, connecting as its DSN says."""
    proxy = PgProxy()
    try:
        srv = make_server(None, proxy.dsn())
        common = xmlrpc.client.ServerProxy(f"{srv.url}/xmlrpc/2/common")
        models = xmlrpc.client.ServerProxy(f"{srv.url}/xmlrpc/2/object")
        assert common.login(other_db.db, "admin", ADMIN_PASSWORD) == 2
        assert models.execute_kw(other_db.db, 2, ADMIN_PASSWORD, "res.partner", "search_count", [[]]) == 3 + 2
        assert other_db.db in proxy.databases  # through the proxy's host and port: the DSN's, dbname replaced
    finally:
        proxy.stop()


def test_a_database_that_cannot_be_opened_fails_as_in_odoo(server: Server) -> None:
    missing = unique_db()
    common = xmlrpc.client.ServerProxy(f"{server.url}/xmlrpc/2/common")
    failed = fault(lambda: common.login(missing, "admin", "x"))
    assert failed.faultCode == 1
    assert failed.faultString.startswith("Traceback (most recent call last):\n")
    last = failed.faultString.rstrip().splitlines()[-1]
    assert last.startswith("psycopg2.OperationalError: connection to server at")
    assert last.endswith(f'FATAL:  database "{missing}" does not exist')
    with httpx.Client(timeout=60) as client:
        body = rpc(client, f"{server.url}/jsonrpc", {"service": "common", "method": "login",
                                                     "args": [missing, "admin", "x"]}, 9)
    error = body["error"]
    assert (body["id"], error["code"], error["message"]) == (9, 200, "Odoo Server Error")
    assert error["data"]["name"] == "psycopg2.OperationalError"
    assert error["data"]["message"].endswith(f'database "{missing}" does not exist\n')
    not_odoo = fault(lambda: common.login("postgres", "admin", "x"))  # a database without Odoo's tables
    assert not_odoo.faultString.rstrip().endswith("KeyError: res.users")


def test_jsonrpc(server: Server, seeded: Seeded) -> None:
    url = f"{server.url}/jsonrpc"
    with httpx.Client(timeout=60) as client:
        version = rpc(client, url, {"service": "common", "method": "version", "args": []}, 4)
        assert version["result"]["protocol_version"] == 1 and version["id"] == 4
        uid = rpc(client, url, {"service": "common", "method": "login", "args": [seeded.db, "admin", ADMIN_PASSWORD]})
        assert uid["result"] == 2
        count = rpc(client, url, {"service": "object", "method": "execute_kw",
                                  "args": [seeded.db, 2, ADMIN_PASSWORD, "res.users", "search_count", [[]]]})
        assert count["result"] == 3  # __system__ is archived
        denied = rpc(client, url, {"service": "object", "method": "execute_kw",
                                   "args": [seeded.db, 2, "wrong", "res.partner", "search_count", [[]]]})
        assert denied["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"
        assert denied["error"]["data"]["arguments"] == ["Access Denied"]
        unknown = rpc(client, url, {"service": "nope", "method": "x", "args": []})
        assert unknown["error"]["data"]["name"] == "builtins.KeyError"
        assert "session_id" not in client.cookies  # save_session=False: the RPC routes set no cookie
        bad = client.post(url, content=b"not json", headers={"content-type": "application/json"})
        assert (bad.status_code, bad.text) == (400, "Invalid JSON data")


def test_db_service(make_server, seeded: Seeded, tmp_path: Path) -> None:
    listed = make_server(None, DSN)
    assert xmlrpc.client.ServerProxy(f"{listed.url}/xmlrpc/2/db").list() == [seeded.db]
    assert xmlrpc.client.ServerProxy(f"{listed.url}/xmlrpc/2/db").server_version() == "17.0"
    hidden = make_server(None, DSN, "--no-database-list")
    refused = fault(lambda: xmlrpc.client.ServerProxy(f"{hidden.url}/xmlrpc/2/db").list())
    assert refused.faultCode == 3


def test_transactions_begin_read_write_like_odoo_18(make_server: Any, seeded: Seeded) -> None:
    """Odoo 18 opens its cursors with ``set_session(readonly=False)``: every transaction begins READ WRITE, so a
    database whose default is read-only still takes its writes (what made ``--freeze-blue`` revoke privileges)."""
    with connect("postgres") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on")
                     .format(sql.Identifier(seeded.db)))
    try:
        srv = make_server()  # a new server, so each of its connections opens under the read-only default
        models = xmlrpc.client.ServerProxy(f"{srv.url}/xmlrpc/2/object")
        new_id = models.execute_kw(seeded.db, 2, ADMIN_PASSWORD, "res.partner", "create",
                                   [{"name": "written under a read-only default"}])
    finally:
        with connect("postgres") as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only")
                         .format(sql.Identifier(seeded.db)))
    with connect(seeded.db) as conn:
        row = conn.execute("SELECT name FROM res_partner WHERE id = %s", (new_id,)).fetchone()
        conn.execute("DELETE FROM res_partner WHERE id = %s", (new_id,))
    assert row == ("written under a read-only default",)
