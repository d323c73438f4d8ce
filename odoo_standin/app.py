"""The ASGI app: Odoo's HTTP routes, its RPC endpoints and ``/websocket``, behind the fault layer.

Routes and what they copy are described in :mod:`odoo_standin.routes` (web controllers),
:mod:`odoo_standin.rpc` (``/jsonrpc``, ``/xmlrpc/2``) and :mod:`odoo_standin.dispatch` (sessions,
db filter, authentication). Two routes stand apart, as in Odoo:

- ``/web/health`` (``addons/web/controllers/home.py``) answers ``{"status": "pass"}`` without
  touching any database; with a non-empty ``db_server_status`` it opens and closes a cursor on
  the ``postgres`` database through the server's DSN and answers
  ``500 {"status": "fail", "db_server_status": false}`` if that fails;
- ``/websocket`` (``addons/bus``) is served only by an *evented* server -- the threaded mode's
  single process, or prefork mode's websocket process on its own port. A prefork HTTP worker
  answers a proper websocket handshake with a 500 (Odoo: "Couldn't bind the websocket. Is the
  connection opened on the evented port?"), and an incomplete handshake with a 400. Accepted
  websockets echo what they receive: enough for router tests to prove upgrades get through.

Blocking work -- SQL, and pbkdf2 password checks that cost ~0.5 s at Odoo's 600,000 rounds --
runs in Starlette's threadpool, so one slow login never stalls health checks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket, WebSocketDisconnect

from odoo_standin.config import ServeConfig, version_info
from odoo_standin.databases import Databases
from odoo_standin.dispatch import Dispatcher, RouteSpec, read_request
from odoo_standin.faults import FaultMiddleware, FaultSwitch
from odoo_standin.routes import WebControllers
from odoo_standin.rpc import RpcServices
from odoo_standin.sessions import SessionStore

__all__ = ["create_app", "version_info"]

log = logging.getLogger(__name__)
_HANDSHAKE_HEADERS = ("connection", "host", "sec-websocket-key", "sec-websocket-version", "upgrade", "origin")


class Standin:
    """One server process's state: its databases, session store and fault switches."""

    def __init__(self, config: ServeConfig, faults: FaultSwitch) -> None:
        self.config = config
        self.faults = faults
        self.databases = Databases(config.dsn)
        self.dispatcher = Dispatcher(config, self.databases, SessionStore(config.sessions_dir))
        self.web = WebControllers(self.dispatcher)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        watcher = asyncio.create_task(self.faults.watch())
        try:
            yield
        finally:
            watcher.cancel()
            await run_in_threadpool(self.databases.close)

    def routes(self) -> list[Route | WebSocketRoute]:
        web = self.web
        specs = [
            ("/web/session/authenticate", ["POST"], RouteSpec(web.authenticate, "json")),
            ("/web/session/get_session_info", ["POST"], RouteSpec(web.get_session_info, "json", "user")),
            ("/web/session/logout", ["GET"], RouteSpec(web.logout)),
            ("/web/webclient/version_info", ["POST"], RouteSpec(web.version_info, "json")),
            ("/web/content/{id:int}", ["GET"], RouteSpec(web.content, auth="public")),
            ("/web/content/{id:int}/{filename}", ["GET"], RouteSpec(web.content, auth="public")),
            ("/web/login", ["GET"], RouteSpec(web.login_page)),
            ("/odoo", ["GET"], RouteSpec(web.web_client)),
            ("/web", ["GET"], RouteSpec(web.web_client)),
        ]
        routes: list[Route | WebSocketRoute] = [
            Route(path, self._odoo_endpoint(spec), methods=methods) for path, methods, spec in specs]
        routes += [
            Route("/web/health", self.health, methods=["GET"]),
            Route("/websocket/health", self.websocket_health, methods=["GET"]),
            Route("/jsonrpc", self.jsonrpc, methods=["POST"]),
            Route("/xmlrpc/2/{service}", self.xmlrpc, methods=["POST"]),
            Route("/websocket", self.websocket_over_http, methods=["GET"]),
        ]
        if self.config.evented:
            routes.append(WebSocketRoute("/websocket", self.websocket))
        return routes

    def _odoo_endpoint(self, spec: RouteSpec) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            incoming = await read_request(request, self.config.proxy_mode)
            return await run_in_threadpool(self.dispatcher.serve, spec, incoming, self.faults.current())

        return endpoint

    # -- routes outside the session machinery ----------------------------------------------------
    async def health(self, request: Request) -> Response:
        payload: dict[str, object] = {"status": "pass"}
        status = 200
        if request.query_params.get("db_server_status"):
            up = not self.faults.current().db_down and await run_in_threadpool(self.databases.postgres_reachable)
            payload["db_server_status"] = up
            if not up:
                payload["status"] = "fail"
                status = 500
        return Response(json.dumps(payload), status, {"Cache-Control": "no-store"}, media_type="application/json")

    async def websocket_health(self, request: Request) -> Response:
        return Response(json.dumps({"status": "pass"}), headers={"Cache-Control": "no-store"},
                        media_type="application/json")

    async def jsonrpc(self, request: Request) -> Response:
        services = RpcServices(self.config, self.databases, self.faults.current())
        body = await request.body()
        return await run_in_threadpool(services.jsonrpc, body, request.headers.get("content-type", ""))

    async def xmlrpc(self, request: Request) -> Response:
        services = RpcServices(self.config, self.databases, self.faults.current())
        body = await request.body()
        return await run_in_threadpool(services.xmlrpc, request.path_params["service"], body)

    # -- /websocket --------------------------------------------------------------------------------
    async def websocket_over_http(self, request: Request) -> Response:
        """A websocket request that reached the HTTP handler: never upgraded here."""
        missing = [h for h in _HANDSHAKE_HEADERS if h not in request.headers]
        if missing or request.headers.get("upgrade", "").lower() != "websocket":
            return PlainTextResponse(f"Bad Request: Empty or missing header(s): {', '.join(missing) or 'upgrade'}",
                                     status_code=400)
        log.error("Couldn't bind the websocket. Is the connection opened on the evented port (%s)?",
                  self.config.websocket_port)
        return PlainTextResponse("Internal Server Error", status_code=500)

    async def websocket(self, websocket: WebSocket) -> None:
        missing = [h for h in _HANDSHAKE_HEADERS if h not in websocket.headers]
        if missing:  # Odoo checks the handshake's headers itself; browsers always send an Origin
            await websocket.send_denial_response(PlainTextResponse(
                f"Bad Request: Empty or missing header(s): {', '.join(missing)}", status_code=400))
            return
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


def create_app(config: ServeConfig, faults: FaultSwitch | None = None) -> ASGIApp:
    """The stand-in for ``config``, wrapped in the fault layer."""
    switch = faults if faults is not None else FaultSwitch(None, started_at=time.time())
    standin = Standin(config, switch)
    app = Starlette(routes=standin.routes(), lifespan=standin.lifespan)
    app.state.standin = standin
    return FaultMiddleware(app, switch)

