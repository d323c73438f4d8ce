"""One HTTP request's life, as ``odoo/http.py`` (``Application.__call__``, ``Request``) runs it.

1. *Session and database* (``_get_session_and_dbname``): the ``session_id`` cookie's file is
   loaded (a malformed id gets a new session); the session's database is kept if the db
   filter accepts it, else the request uses the one database the filter lets through (monodb),
   or none. A session whose database the filter rejects is logged out -- warning logged,
   everything cleared, and on save the old file deleted and a new id issued.
2. *Serving with a database* (``_serve_db``): the database is opened; if it cannot be, the
   request is served without one, the session logged out ("Database or registry unusable").
   A session with a user has its ``session_token`` checked; a mismatch logs it out (keeping the
   database). ``auth='user'`` routes then need a user (``SessionExpired`` otherwise: a JSON-RPC
   error 100, or for HTTP routes a redirect to ``/web/login``).
3. *Saving* (``_save_session``, routes with ``save_session``): rotated if asked (old file
   deleted, new id and token), else written if changed; the cookie is set when the session
   changed or its id differs from the cookie's: ``Max-Age`` is ``sessions.max_inactivity_seconds``
   (7 days by default), ``Expires`` a year ahead, ``HttpOnly``.

Routes that need no database at all (``auth='none'``) also run without one; the others answer
404 without one, as Odoo's database-less routing map does not have them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from odoo_standin import rpc, users
from odoo_standin.config import ServeConfig
from odoo_standin.databases import Databases
from odoo_standin.errors import AccessDenied, AccessError, SessionExpired, UserError
from odoo_standin.faults import Faults
from odoo_standin.sessions import SESSION_LIFETIME, Session, SessionStore

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Incoming:
    """What the request carried, read on the event loop so the rest can run in a worker thread."""

    method: str
    path: str
    query_string: str
    query: dict[str, str]
    cookies: dict[str, str]
    client_ip: str | None
    body: bytes
    scheme: str
    host: str
    content_type: str
    path_params: dict[str, Any]

    @property
    def full_path(self) -> str:
        """werkzeug's ``full_path``: the path, then ``?`` even without a query string."""
        return f"{self.path}?{self.query_string}"

    @property
    def url_root(self) -> str:
        return f"{self.scheme}://{self.host}"


async def read_request(request: Request, proxy_mode: bool) -> Incoming:
    """The request's parts; with ``--proxy-mode`` and ``X-Forwarded-Host``, the forwarded host,
    scheme and client address (Odoo's ProxyFix, one proxy trusted)."""
    headers = request.headers
    host = headers.get("host", "")
    scheme = request.url.scheme
    client_ip = request.client.host if request.client else None
    if proxy_mode and headers.get("x-forwarded-host"):
        host = headers["x-forwarded-host"].split(",")[-1].strip()
        scheme = headers.get("x-forwarded-proto", scheme).split(",")[-1].strip()
        client_ip = headers.get("x-forwarded-for", client_ip or "").split(",")[-1].strip() or client_ip
    return Incoming(request.method, request.url.path, request.url.query, dict(request.query_params),
                    dict(request.cookies), client_ip, await request.body(), scheme, host,
                    headers.get("content-type", ""), dict(request.path_params))


@dataclass
class Ctx:
    """One request being served: its session, database (and open connection, if any) and parameters."""

    incoming: Incoming
    session: Session
    db: str | None
    faults: Faults
    conn: Conn | None = None
    params: dict[str, Any] = field(default_factory=dict)
    rpc_id: Any = None
    max_inactivity: int = SESSION_LIFETIME
    failed: bool = False
    """An error answered the request: Odoo then saves no session and sets no cookie."""


Endpoint = Callable[[Ctx], Response]


@dataclass(frozen=True)
class RouteSpec:
    endpoint: Endpoint
    type: str = "http"  # http | json
    auth: str = "none"  # none | public | user
    save_session: bool = True

    @property
    def nodb(self) -> bool:
        return self.auth == "none"


class Dispatcher:
    def __init__(self, config: ServeConfig, databases: Databases, store: SessionStore) -> None:
        self.config = config
        self.databases = databases
        self.store = store

    def serve(self, spec: RouteSpec, incoming: Incoming, faults: Faults) -> Response:
        session, db = self._session_and_db(incoming)
        session.can_save = spec.save_session
        ctx = Ctx(incoming, session, db, faults)
        problem = _parse_json(ctx) if spec.type == "json" else None
        if problem is not None:
            return problem
        response = self._serve_db(spec, ctx) if ctx.db else self._serve_nodb(spec, ctx)
        self._save_session(ctx, response)
        return response

    # -- 1. session and database ---------------------------------------------------------------
    def _session_and_db(self, incoming: Incoming) -> tuple[Session, str | None]:
        sid = incoming.cookies.get("session_id")
        if self.store.is_valid_key(sid):
            assert sid is not None
            session = self.store.get(sid)
            session.sid = sid  # a session never saved keeps the id its cookie carries
        else:
            session = self.store.new()
        session.fill_defaults()
        selection = self.config.selection
        dbname = None
        if session.db and selection.filter([session.db], incoming.host):
            dbname = session.db
        else:
            listed = selection.db_list(self.databases, incoming.host)
            if len(listed) == 1:
                dbname = listed[0]
        if session.db != dbname:
            if session.db:
                log.warning("Logged into database %r, but dbfilter rejects it; logging session out.", session.db)
                session.logout(keep_db=False)
            session.set("db", dbname)
        session.is_dirty = False
        return session, dbname

    # -- 2. serving ------------------------------------------------------------------------------
    def _serve_nodb(self, spec: RouteSpec, ctx: Ctx) -> Response:
        if not spec.nodb:
            ctx.failed = True
            return PlainTextResponse("Not Found", status_code=404)
        return self._call(spec, ctx)

    def _serve_db(self, spec: RouteSpec, ctx: Ctx) -> Response:
        assert ctx.db is not None
        try:
            conn = self.databases.borrow(ctx.db)
        except (psycopg.OperationalError, KeyError) as exc:
            log.warning("Database or registry unusable, trying without: %s", exc)
            ctx.db = None
            ctx.session.logout()
            return self._serve_nodb(spec, ctx)
        with self.databases.transaction(ctx.db, conn):
            ctx.conn = conn
            try:
                self._authenticate(ctx)
                return self._call(spec, ctx)
            finally:
                ctx.conn = None

    def _authenticate(self, ctx: Ctx) -> None:
        """``ir.http._authenticate_explicit``: a session whose token no longer matches is logged out."""
        assert ctx.conn is not None
        session = ctx.session
        raw = users.get_param(ctx.conn, "sessions.max_inactivity_seconds")
        ctx.max_inactivity = int(raw) if raw and raw.isdigit() else SESSION_LIFETIME
        if session.uid is None:
            return
        if users.token_matches(ctx.conn, session.uid, session.sid, session.get("session_token")):
            session.update_trace(ctx.incoming.client_ip)
        else:
            session.logout(keep_db=True)

    def _call(self, spec: RouteSpec, ctx: Ctx) -> Response:
        try:
            if spec.auth == "user" and ctx.session.uid is None:
                raise SessionExpired("Session expired")
            return spec.endpoint(ctx)
        except SessionExpired as exc:
            ctx.failed = True
            return self._expired(spec, ctx, exc)
        except Exception as exc:  # noqa: BLE001 - turned into the response Odoo gives for it
            ctx.failed = True
            if spec.type == "json":
                return rpc.json_error(ctx.rpc_id, exc)
            log.warning("%s on %s: %s", type(exc).__name__, ctx.incoming.path, exc)
            return PlainTextResponse(*_http_error(exc))

    def _expired(self, spec: RouteSpec, ctx: Ctx, exc: SessionExpired) -> Response:
        """A JSON route answers error 100; an HTTP route redirects to the login page, and a session that had
        a user is logged out and saved under a new id."""
        if spec.type == "json":
            return rpc.json_error(ctx.rpc_id, exc, code=100, message="Odoo Session Expired")
        session = ctx.session
        was_connected = session.uid is not None
        session.logout(keep_db=True)
        response = RedirectResponse(f"/web/login?redirect={quote_path(ctx.incoming.full_path)}", status_code=303)
        if was_connected:
            self.store.rotate(session, None)
            self._set_cookie(ctx, response)
        return response

    # -- 3. saving -------------------------------------------------------------------------------
    def _save_session(self, ctx: Ctx, response: Response) -> None:
        session = ctx.session
        if not session.can_save or ctx.failed:
            return
        if session.should_rotate:
            self.store.rotate(session, self._token_for(session))
        elif session.is_dirty:
            self.store.save(session)
        if session.is_dirty or ctx.incoming.cookies.get("session_id") != session.sid:
            self._set_cookie(ctx, response)

    @staticmethod
    def _set_cookie(ctx: Ctx, response: Response) -> None:
        expires = datetime.now(UTC) + timedelta(days=365)
        response.set_cookie("session_id", ctx.session.sid, max_age=ctx.max_inactivity, expires=expires,
                            httponly=True, samesite=None)

    def _token_for(self, session: Session) -> Callable[[str], str | bool] | None:
        db, uid = session.db, session.uid
        if not (db and uid):
            return None

        def token(sid: str) -> str | bool:
            with self.databases.cursor(db) as conn:
                return users.session_token(conn, uid, sid)

        return token


def _http_error(exc: BaseException) -> tuple[str, int]:
    """``HttpDispatcher.handle_error``: access problems are 403, user errors 400, anything else a bare 500."""
    if isinstance(exc, AccessDenied | AccessError):
        return "Forbidden", 403
    if isinstance(exc, UserError):
        return "Bad Request", 400
    return "Internal Server Error", 500


def _parse_json(ctx: Ctx) -> Response | None:
    """A ``type='json'`` route's body: JSON-RPC ``params`` (400 for a body that is not JSON-RPC)."""
    if ctx.incoming.content_type.split(";")[0].strip() not in ("application/json", "application/json-rpc"):
        return PlainTextResponse(f"Request inferred type is compatible with ['http'] but {ctx.incoming.path!r} is "
                                 "type='json'.", status_code=400)
    try:
        body = json.loads(ctx.incoming.body or b"{}")
        ctx.rpc_id = body.get("id")
        ctx.params = dict(body.get("params") or {})
    except (ValueError, AttributeError, TypeError):
        return PlainTextResponse("Invalid JSON data", status_code=400)
    return None


def quote_path(text: str) -> str:
    """A path as a query-string value (``/odoo?`` -> ``%2Fodoo%3F``, as werkzeug's ``url_encode``)."""
    return quote(text, safe="")
