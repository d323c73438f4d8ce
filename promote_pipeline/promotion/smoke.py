"""The seed's five smoke tests, run against green through the router's preview entry point.

Only what Odoo itself serves is used (see ODOO_FACTS), so the same tests run unchanged against a
real Odoo 17, 18 or 19:

- ``/web/health?db_server_status=1`` (Odoo's ``addons/web/controllers/home.py``: without the parameter it
  never touches a database) and a websocket upgrade on ``/websocket`` through the same entry point (the bus:
  a router or a worker mode that sends it to a dead port fails here, not in front of users);
- ``SELECT 1`` through green's own database endpoint, as its role, under the environment's database name,
  and the fence: blue's database is not reachable that way;
- module states read from ``ir_module_module`` plus ``/web/webclient/version_info``;
- a JSON-RPC login on ``/web/session/authenticate`` naming the environment's database name (what sessions
  and integrations use), as the smoke user;
- a user's attachment (not base data) fetched through ``/web/content/<id>`` and compared with its SHA-1.

They change nothing in production: Odoo rewrites ``web.base.url`` on an administrator's login through the
web (``res_users.authenticate``), here the preview's address, unless ``web.base.url.freeze`` is set. So the
suite freezes it for its own duration (restoring the flag as it was), and checks afterwards that every
carried-over parameter is what the carry-over left.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from promote_pipeline.odoo import database as odoo_db
from promote_pipeline.promotion.models import Artifact, SmokeResult
from resources import http_clients, secrets
from resources.db_endpoint import Endpoint
from resources.odoo_host import LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentRecord
from resources.redaction import register_public, resolve_secret
from resources.ssh_odoo_host import SshOdooHost

FREEZE = "web.base.url.freeze"
SMOKE_TESTS = ("health_check", "database_connectivity", "module_integrity", "filestore_accessibility",
               "user_authentication")


class SmokeFailure(RuntimeError):
    pass


def _jsonrpc(client: httpx.Client, path: str, params: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(path, json={"jsonrpc": "2.0", "method": "call", "params": params, "id": 1})
    resp.raise_for_status()
    body = resp.json()
    if "error" in body:
        data = body["error"].get("data", {})
        raise SmokeFailure(f"{data.get('name', 'error')}: {data.get('message', body['error'].get('message'))}")
    result = body.get("result")
    assert isinstance(result, dict)
    return result


class SmokeSuite:
    def __init__(self, host: LocalOdooHost, env: EnvironmentRecord, green: DeploymentRecord, artifact: Artifact,
                 base_url: str, timeout: float = 10.0, blue_db: str | None = None,
                 watched_parameters: Sequence[str] = (), via: SshOdooHost | None = None) -> None:
        """``via``: the process host green runs on when it is another machine; its endpoint (PgBouncer on that
        host's loopback) is then tried from there, as green's Odoo reaches it."""
        self.host, self.env, self.green, self.artifact, self.via = host, env, green, artifact, via
        self.base_url, self.blue_db, self.watched = base_url, blue_db, list(watched_parameters)
        self.client = http_clients.client(base_url=base_url, timeout=timeout)
        self.parameters: dict[str, Any] = {}

    def health_check(self) -> str:
        resp = self.client.get("/web/health", params={"db_server_status": "1"})
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code != 200 or body.get("status") != "pass" or body.get("db_server_status") is not True:
            raise SmokeFailure(f"/web/health?db_server_status=1 answered HTTP {resp.status_code}: {resp.text[:200]}")
        websocket = websocket_upgrade(self.base_url)
        return f"HTTP 200, status pass, database server reachable; /websocket {websocket}"

    def database_connectivity(self) -> str:
        endpoint = self.host.endpoint(self.green)
        row: tuple[Any, ...] | None
        if endpoint is None:  # a deployment without its own endpoint: the server's DSN, its physical name
            with self.host.connect(self.env.db_dsn_ref, self.green.db_name, retry=False) as conn:
                row = conn.execute("SELECT 1").fetchone()
            if not row or row[0] != 1:
                raise SmokeFailure(f"SELECT 1 on {self.green.db_name} returned {row!r}")
            return f"SELECT 1 on {self.green.db_name} ok"
        if self.via is not None:
            answer = self.via.endpoint_query(endpoint, "SELECT 1, current_user")
            if answer is None:
                raise SmokeFailure(f"green's endpoint on {self.via.name} refused the connection")
            row = (int(answer.split("|")[0]), answer.split("|")[1]) if "|" in answer else None
        else:
            with psycopg.connect(endpoint.dsn(), connect_timeout=5) as conn:
                row = conn.execute("SELECT 1, current_user").fetchone()
        if not row or row[0] != 1:
            raise SmokeFailure(f"SELECT 1 on {endpoint.dbname} through green's endpoint returned {row!r}")
        fence = f"; {self._fence(endpoint)}" if self.blue_db else ""
        return f"SELECT 1 on {endpoint.dbname} through green's endpoint as {row[1]} ok{fence}"

    def _fence(self, endpoint: Endpoint) -> str:
        """Green cannot open blue's database: not through its endpoint (which knows one name, green's), and
        not on the server as its role (no CONNECT on blue's database)."""
        assert self.blue_db is not None
        row: tuple[Any, ...] | None
        if self.via is not None:
            answer = self.via.endpoint_query(replace(endpoint, dbname=self.blue_db), "SELECT current_database()")
            row = (answer.strip(),) if answer else None
        else:
            try:
                with psycopg.connect(replace(endpoint, dbname=self.blue_db).dsn(), connect_timeout=5) as conn:
                    row = conn.execute("SELECT current_database()").fetchone()
            except psycopg.OperationalError:
                row = None
        if row is not None and row[0] != self.green.db_name:
            raise SmokeFailure(f"fence broken: green's endpoint opened {row[0]} for the name {self.blue_db}")
        # Production's server exactly as its DSN reaches it (hostaddr, sslmode, certificates...), only the user
        # changed: a connection that fails for want of those proves nothing about the fence.
        server = {k: v for k, v in psycopg.conninfo.conninfo_to_dict(secrets.resolve(self.env.db_dsn_ref)).items()
                  if v is not None and k not in ("user", "password", "dbname")}
        server.setdefault("connect_timeout", 5)  # the DSN's own, when it has one
        direct = psycopg.conninfo.make_conninfo("", **server, user=endpoint.user, password=endpoint.password,
                                                dbname=self.blue_db)
        try:
            with psycopg.connect(direct):
                raise SmokeFailure(f"fence broken: green's role {endpoint.user} connects to {self.blue_db}")
        except psycopg.OperationalError:
            pass
        return f"blue's {self.blue_db} not reachable through it, nor as its role on the server"

    def module_integrity(self) -> str:
        with self.host.connect(self.env.db_dsn_ref, self.green.db_name) as conn:
            modules, _ = odoo_db.installed_modules(conn)
            pending = odoo_db.pending_modules(conn)
        expected = self.artifact.manifest.modules_installed
        missing = sorted(set(expected) - set(modules))
        changed = sorted(m for m in expected if m in modules and modules[m] != expected[m])
        if missing or changed or pending:
            raise SmokeFailure(f"modules missing {missing}, version changed {changed}, pending {pending}")
        info = _jsonrpc(self.client, "/web/webclient/version_info", {})
        series = str(info.get("server_serie") or info.get("server_version", ""))
        if not series.startswith(self.artifact.manifest.odoo_version.split(".")[0]):
            raise SmokeFailure(f"server serves {series!r}, artifact is Odoo {self.artifact.manifest.odoo_version}")
        return f"{len(expected)} modules installed, server {series}"

    def user_authentication(self) -> str:
        if not self.env.smoke_login or not self.env.smoke_password_ref:
            raise SmokeFailure(f"environment {self.env.environment_id} has no smoke login configured")
        register_public(self.env.smoke_login)  # a login is no secret, even when its password equals it
        password = resolve_secret(self.env.smoke_password_ref)
        result = _jsonrpc(self.client, "/web/session/authenticate",
                          {"db": self.green.served_db, "login": self.env.smoke_login, "password": password})
        if not isinstance(result.get("uid"), int):
            raise SmokeFailure(f"login {self.env.smoke_login!r} returned no uid (two-factor pending?)")
        return f"login {self.env.smoke_login!r} on database {self.green.served_db!r} ok, uid {result['uid']}"

    def filestore_accessibility(self) -> str:
        with self.host.connect(self.env.db_dsn_ref, self.green.db_name) as conn:
            sample = odoo_db.sample_attachment(conn)
        if sample is None:
            return "no stored attachment to sample"
        att_id, checksum, kind = sample
        resp = self.client.get(f"/web/content/{att_id}")  # the session cookie from the login
        if resp.status_code != 200:
            raise SmokeFailure(f"/web/content/{att_id} answered HTTP {resp.status_code}")
        got = hashlib.sha1(resp.content).hexdigest()
        if got != checksum:
            raise SmokeFailure(f"attachment {att_id}: sha1 {got[:12]}… differs from checksum {checksum[:12]}…")
        return f"{kind} attachment {att_id} ({len(resp.content)} bytes) matches its checksum"

    def run(self) -> list[SmokeResult]:
        """All five, in the seed's order of report; login runs before the attachment fetch that needs it."""
        order: list[str] = ["health_check", "database_connectivity", "module_integrity", "user_authentication",
                            "filestore_accessibility"]
        results: dict[str, SmokeResult] = {}
        frozen = self._freeze_base_url()
        try:
            for name in order:
                test: Callable[[], str] = getattr(self, name)
                start = time.monotonic()
                try:
                    detail, passed = test(), True
                except (SmokeFailure, httpx.HTTPError, OSError, ValueError) as exc:
                    detail, passed = f"{type(exc).__name__}: {exc}", False
                except Exception as exc:  # a smoke test must report, not crash the step
                    detail, passed = f"{type(exc).__name__}: {exc}", False
                results[name] = SmokeResult(name=name, passed=passed, detail=detail,
                                            duration_ms=int((time.monotonic() - start) * 1000))
        finally:
            self.client.close()
            self._thaw_base_url(frozen)
        return [results[name] for name in SMOKE_TESTS]

    # -- changing nothing ------------------------------------------------------------------------------
    def _freeze_base_url(self) -> str | None:
        """Freeze web.base.url for the suite's duration; the flag's previous value (None: it was absent)."""
        with self.host.connect(self.env.db_dsn_ref, self.green.db_name) as conn:
            self.parameters = odoo_db.parameters(conn, self.watched)
            before = odoo_db.config_parameter(conn, FREEZE)
            if not before:
                odoo_db.set_parameter(conn, FREEZE, "True")
                odoo_db.signal_cache_change(conn)  # green runs: its workers must read the flag afresh
        return before

    def _thaw_base_url(self, before: str | None) -> None:
        with self.host.connect(self.env.db_dsn_ref, self.green.db_name) as conn:
            odoo_db.set_parameter(conn, FREEZE, before)
            odoo_db.signal_cache_change(conn)  # no worker may keep the suite's freeze in its cache

    def unchanged(self) -> dict[str, Any]:
        """Every watched parameter as the carry-over left it? (``changed``: key -> [before, after])."""
        with self.host.connect(self.env.db_dsn_ref, self.green.db_name) as conn:
            after = odoo_db.parameters(conn, self.watched)
        changed = {k: [self.parameters.get(k), after.get(k)] for k in set(self.parameters) | set(after)
                   if self.parameters.get(k) != after.get(k)}
        return {"unchanged": not changed, "changed": changed, "watched": len(self.watched)}


def websocket_upgrade(base_url: str, timeout: float = 5.0) -> str:
    """Open a websocket on ``/websocket`` (the bus) and close it; a refused or failed upgrade raises."""
    parts = urlsplit(base_url)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /websocket HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {base_url}\r\n\r\n")
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " not in f"{status} ":
        raise SmokeFailure(f"/websocket upgrade answered {status or 'nothing'}")
    return "upgrade 101"
