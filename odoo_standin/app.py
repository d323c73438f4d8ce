"""The ASGI app: Odoo's HTTP contract on the handful of routes deployment tooling touches.

Response shapes are copied from Odoo 17 (``/web/health``, ``/web/session/authenticate``,
``/web/webclient/version_info``, ``/web/content``), so a smoke test written against the
stand-in passes unchanged against a real Odoo 17-19, and vice versa. Every other route is a
plain 404.

Blocking work -- SQL through a small psycopg pool, and pbkdf2 password checks that cost
~0.5 s at Odoo's 600,000 rounds -- runs in Starlette's threadpool so one slow login never
stalls health checks. Sessions are an in-memory ``token -> uid`` map: a restarted stand-in
forgets its sessions, as an Odoo whose session store was wiped would.

Access to a non-public attachment without a valid session answers **403** (Odoo raises
``AccessError``, whose HTTP status is 403); an unknown id or a file missing from the
filestore answers 404.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from passlib.context import CryptContext
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket, WebSocketDisconnect

from odoo_standin.faults import FaultMiddleware, FaultSwitch

# Odoo's own context: pbkdf2_sha512 hashes, with plaintext passwords (set straight in SQL)
# still accepted, so a test that writes a password with UPDATE can log in as with Odoo.
PASSWORDS = CryptContext(schemes=["pbkdf2_sha512", "plaintext"], deprecated=["plaintext"])
SESSION_MAX_AGE = 7 * 24 * 3600
_USER_SQL = """
    SELECT u.id, u.password, u.active, u.partner_id, u.company_id, p.name,
           EXISTS (SELECT 1 FROM ir_model_data d
                    WHERE d.module = 'base' AND d.name IN ('user_root', 'user_admin')
                      AND d.model = 'res.users' AND d.res_id = u.id)
      FROM res_users u JOIN res_partner p ON p.id = u.partner_id
     WHERE u.login = %s
"""
_LOGIN_PAGE = """<!DOCTYPE html>
<html><head><title>Odoo</title></head><body>
<form class="oe_login_form" role="form" method="post" action="/web/login">
<input type="text" name="login" id="login" placeholder="Email"/>
<input type="password" name="password" id="password"/>
<button type="submit">Log in</button>
</form></body></html>
"""


def version_info(server_version: str) -> list[Any]:
    """``"17.0"`` -> ``[17, 0, 0, "final", 0, ""]``, Odoo's ``version_info`` as JSON renders it."""
    major, _, minor = server_version.partition(".")
    return [int(major), int(minor or 0), 0, "final", 0, ""]


def _json(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON rendered as Odoo's ``json.dumps`` renders it (with spaces), not in Starlette's compact form."""
    return Response(json.dumps(payload), status_code, headers, media_type="application/json")


def _rpc_result(rpc_id: Any, result: Any) -> Response:
    return _json({"jsonrpc": "2.0", "id": rpc_id, "result": result})


def _rpc_error(rpc_id: Any, name: str, message: str) -> Response:
    """Odoo's envelope for an exception raised in a ``type='json'`` route: HTTP 200, code 200."""
    data = {"name": name, "debug": "", "message": message, "arguments": [message], "context": {}}
    return _json({"jsonrpc": "2.0", "id": rpc_id,
                  "error": {"code": 200, "message": "Odoo Server Error", "data": data}})


class Standin:
    """One served Odoo database: its pool, filestore, sessions and fault switches."""

    def __init__(self, conninfo: str, db: str, data_dir: Path, server_version: str,
                 faults: FaultSwitch) -> None:
        self.conninfo = conninfo
        self.db = db
        self.filestore = (data_dir / "filestore" / db).resolve()
        self.server_version = server_version
        self.version_info = version_info(server_version)
        self.faults = faults
        self.sessions: dict[str, int] = {}
        self.pool = ConnectionPool(conninfo, min_size=1, max_size=4, open=False, timeout=10,
                                   kwargs={"autocommit": True}, check=ConnectionPool.check_connection,
                                   name=f"standin-{db}")

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the pool without waiting (Odoo too starts while PostgreSQL is away) and watch faults."""
        self.pool.open(wait=False)
        watcher = asyncio.create_task(self.faults.watch())
        try:
            yield
        finally:
            watcher.cancel()
            await run_in_threadpool(self.pool.close)

    def routes(self) -> list[Route | WebSocketRoute]:
        return [
            Route("/web/health", self.health, methods=["GET"]),
            Route("/web/session/authenticate", self.authenticate, methods=["POST"]),
            Route("/web/webclient/version_info", self.version, methods=["POST"]),
            Route("/web/content/{id:int}", self.content, methods=["GET"]),
            Route("/web/content/{id:int}/{filename}", self.content, methods=["GET"]),
            Route("/web/login", self.login_page, methods=["GET"]),
            WebSocketRoute("/websocket", self.websocket),
        ]

    # -- /web/health -------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """Odoo's liveness probe; touches PostgreSQL only when ``db_server_status`` is non-empty."""
        payload: dict[str, Any] = {"status": "pass"}
        status = 200
        if request.query_params.get("db_server_status"):
            up = not self.faults.current().db_down and await run_in_threadpool(self._db_reachable)
            payload["db_server_status"] = up
            if not up:
                payload["status"] = "fail"
                status = 500
        return _json(payload, status, {"Cache-Control": "no-store"})

    def _db_reachable(self) -> bool:
        """Open and close a fresh connection and cursor, as Odoo does, rather than trust a pooled one."""
        try:
            with psycopg.connect(self.conninfo, connect_timeout=5) as conn:
                conn.cursor().close()
        except psycopg.Error:
            return False
        return True

    # -- JSON-RPC routes -----------------------------------------------------------------------

    async def authenticate(self, request: Request) -> Response:
        try:
            body = await request.json()
            params = body.get("params") or {}
            rpc_id = body.get("id")
        except (ValueError, AttributeError):
            return PlainTextResponse("Bad Request: invalid JSON-RPC body", status_code=400)
        db, login, password = params.get("db"), params.get("login"), params.get("password")
        if db != self.db:
            return _rpc_error(rpc_id, "odoo.exceptions.AccessError", "Database not found.")
        if self.faults.current().refuse_login or not isinstance(login, str) or not isinstance(password, str):
            return _rpc_error(rpc_id, "odoo.exceptions.AccessDenied", "Access Denied")
        try:
            user = await run_in_threadpool(self._check_credentials, login, password)
        except (psycopg.Error, PoolTimeout) as exc:
            return _rpc_error(rpc_id, f"psycopg2.{type(exc).__name__}", str(exc))
        if user is None:
            return _rpc_error(rpc_id, "odoo.exceptions.AccessDenied", "Access Denied")
        uid, partner_id, company_id, name, is_admin = user
        token = secrets.token_urlsafe(48)
        self.sessions[token] = uid
        response = _rpc_result(rpc_id, {
            "uid": uid, "is_system": uid == 1 or is_admin, "is_admin": is_admin,
            "user_context": {"lang": "en_US", "tz": "UTC", "uid": uid},
            "db": self.db, "server_version": self.server_version,
            "server_version_info": self.version_info, "name": name, "username": login,
            "partner_id": partner_id, "company_id": company_id,
        })
        response.set_cookie("session_id", token, max_age=SESSION_MAX_AGE, httponly=True, samesite="lax")
        return response

    def _check_credentials(self, login: str, password: str) -> tuple[int, int, int, str, bool] | None:
        """``(uid, partner_id, company_id, name, is_admin)`` if login and password match an active user."""
        with self.pool.connection() as conn:
            row = conn.execute(_USER_SQL, (login,)).fetchone()
        if row is None:
            return None
        uid, hashed, active, partner_id, company_id, name, is_admin = row
        if not active or not hashed or not PASSWORDS.verify(password, hashed):
            return None
        return uid, partner_id, company_id, name, bool(is_admin)

    async def version(self, request: Request) -> Response:
        try:
            body = await request.json()
            rpc_id = body.get("id")
        except (ValueError, AttributeError):
            return PlainTextResponse("Bad Request: invalid JSON-RPC body", status_code=400)
        return _rpc_result(rpc_id, {
            "server_version": self.server_version, "server_version_info": self.version_info,
            "server_serie": self.server_version, "protocol_version": 1,
        })

    # -- /web/content ----------------------------------------------------------------------------

    async def content(self, request: Request) -> Response:
        try:
            row = await run_in_threadpool(self._attachment, request.path_params["id"])
        except (psycopg.Error, PoolTimeout):
            return PlainTextResponse("Internal Server Error", status_code=500)
        if row is None:
            return PlainTextResponse("Not Found", status_code=404)
        name, store_fname, db_datas, mimetype, public = row
        if not public and request.cookies.get("session_id", "") not in self.sessions:
            return PlainTextResponse("Forbidden", status_code=403)
        if self.faults.current().missing_attachment:
            return PlainTextResponse("Not Found", status_code=404)
        media_type = mimetype or "application/octet-stream"
        if db_datas is not None:
            return Response(bytes(db_datas), media_type=media_type)
        path = (self.filestore / (store_fname or "")).resolve()
        if not path.is_relative_to(self.filestore) or path == self.filestore:
            return PlainTextResponse("Not Found", status_code=404)
        try:
            stat = await run_in_threadpool(os.stat, path)
        except OSError:
            return PlainTextResponse("Not Found", status_code=404)
        return FileResponse(path, media_type=media_type, filename=name, stat_result=stat,
                            content_disposition_type="inline")

    def _attachment(self, att_id: int) -> tuple[str, str | None, bytes | None, str | None, bool] | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT name, store_fname, db_datas, mimetype, public FROM ir_attachment "
                               "WHERE id = %s AND type = 'binary'", (att_id,)).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3], bool(row[4]))

    # -- monitors and routers --------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return HTMLResponse(_LOGIN_PAGE)

    async def websocket(self, websocket: WebSocket) -> None:
        """Echo every message back: enough for a router test to prove upgrades get through."""
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await websocket.send_text(message["text"])
                elif message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"])
        except WebSocketDisconnect:
            return


def create_app(conninfo: str, db: str, data_dir: Path, server_version: str = "17.0",
               faults: FaultSwitch | None = None) -> ASGIApp:
    """The stand-in for database ``db`` (``conninfo`` must already name it), wrapped in the fault layer."""
    switch = faults if faults is not None else FaultSwitch(None, started_at=time.time())
    standin = Standin(conninfo, db, data_dir, server_version, switch)
    app = Starlette(routes=standin.routes(), lifespan=standin.lifespan)
    app.state.standin = standin
    return FaultMiddleware(app, switch)
