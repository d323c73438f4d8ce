"""The web controllers deployment tooling touches, with the responses Odoo gives.

Copied from ``addons/web/controllers/session.py`` (``/web/session/authenticate``,
``get_session_info``, ``logout``), ``addons/web/controllers/home.py`` (``/web/login``,
``/odoo`` and ``/web``), ``addons/web/controllers/webclient.py`` (``version_info``) and
``addons/web/controllers/binary.py`` (``/web/content``):

- ``/web/session/authenticate`` refuses a database the db filter rejects
  (``AccessError: Database not found.``), logs in, and stores the user in the session, which is
  saved under a new id with its token; the login passes the request's URL root as
  ``base_location``, so a system user's login rewrites ``web.base.url`` (``users.authenticate``);
- ``/odoo`` and ``/web`` send a visitor without a database to the database selector and one
  without a user to ``/web/login?redirect=...`` (303);
- a non-public attachment needs a logged-in session (else 403, Odoo's ``AccessError``);
  an unknown id or a file missing from the filestore is a 404.

HTML pages are minimal; while the ``web.neutralize_banner`` view is active (``odoo-bin
neutralize`` activates it) they carry the neutralized-database banner and a ``noindex`` robots
tag, as Odoo's layout does.
"""

from __future__ import annotations

import html
import os
from typing import Any

import psycopg
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response

from odoo_standin import rpc, users
from odoo_standin.dispatch import Ctx, Dispatcher, quote_path
from odoo_standin.errors import AccessDenied, AccessError

_BANNER = ('<div><span id="oe_neutralize_banner" style="display:block;text-align:center;color:#fff;'
           'background-color:#d0442c">This database is a neutralized copy: e-mails, crons and payments are '
           'switched off.</span></div>')


def _page(ctx: Ctx, title: str, body: str) -> HTMLResponse:
    neutralized = ctx.conn is not None and _view_active(ctx.conn, "web.neutralize_banner")
    head = '<meta name="robots" content="noindex, nofollow"/>' if neutralized else ""
    banner = _BANNER if neutralized else ""
    return HTMLResponse(f"<!DOCTYPE html>\n<html><head><title>{html.escape(title)}</title>{head}</head>"
                        f"<body>{body}{banner}</body></html>\n")


def _view_active(conn: psycopg.Connection[Any], key: str) -> bool:
    row = conn.execute("SELECT to_regclass('ir_ui_view') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return False
    row = conn.execute("SELECT bool_or(active) FROM ir_ui_view WHERE key = %s", (key,)).fetchone()
    return bool(row and row[0])


class WebControllers:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.config = dispatcher.config
        self.databases = dispatcher.databases
        self.store = dispatcher.store

    # -- sessions --------------------------------------------------------------------------------
    def authenticate(self, ctx: Ctx) -> Response:
        db, login, password = (ctx.params.get(k) for k in ("db", "login", "password"))
        if not isinstance(db, str) or not self.config.selection.filter([db], ctx.incoming.host):
            raise AccessError("Database not found.")
        if ctx.faults.refuse_login or not isinstance(login, str) or not isinstance(password, str):
            raise AccessDenied()
        user_agent_env = {"interactive": True, "base_location": ctx.incoming.url_root,
                          "HTTP_HOST": ctx.incoming.host, "REMOTE_ADDR": ctx.incoming.client_ip}
        with self.databases.cursor(db) as conn:
            uid = users.authenticate(conn, db, login, password, user_agent_env)
            session = ctx.session
            session.finalize(db, uid, login, users.user_context(uid), users.session_token(conn, uid, session.sid))
            # Saved now under a new id, its token computed for that id (Odoo rotates here too when the
            # request came without a database; otherwise its end-of-request save does the same).
            self.store.rotate(session, lambda sid: users.session_token(conn, uid, sid))
            info = users.session_info(conn, db, uid, self.config.server_version, self.config.version_info)
        return rpc.json_result(ctx.rpc_id, info)

    def get_session_info(self, ctx: Ctx) -> Response:
        assert ctx.conn is not None and ctx.db is not None and ctx.session.uid is not None
        ctx.session.is_dirty = True  # Odoo touches the session here, refreshing its file and cookie
        info = users.session_info(ctx.conn, ctx.db, ctx.session.uid, self.config.server_version,
                                  self.config.version_info)
        return rpc.json_result(ctx.rpc_id, info)

    def logout(self, ctx: Ctx) -> Response:
        ctx.session.logout(keep_db=True)
        return RedirectResponse(ctx.incoming.query.get("redirect") or "/odoo", status_code=303)

    def version_info(self, ctx: Ctx) -> Response:
        return rpc.json_result(ctx.rpc_id, {
            "server_version": self.config.server_version, "server_version_info": self.config.version_info,
            "server_serie": self.config.server_version, "protocol_version": 1})

    # -- pages -----------------------------------------------------------------------------------
    def login_page(self, ctx: Ctx) -> Response:
        form = ('<form class="oe_login_form" role="form" method="post" action="/web/login">'
                '<input type="text" name="login" id="login" placeholder="Email"/>'
                '<input type="password" name="password" id="password"/>'
                '<button type="submit">Log in</button></form>')
        return _page(ctx, "Odoo", form)

    def web_client(self, ctx: Ctx) -> Response:
        if not ctx.db:
            return RedirectResponse("/web/database/selector", status_code=303)
        if ctx.session.uid is None:
            target = ctx.incoming.full_path
            return RedirectResponse(f"/web/login?redirect={quote_path(target)}", status_code=303)
        ctx.session.is_dirty = True  # the web client touches the session to keep it alive
        response = _page(ctx, "Odoo", f'<div class="o_web_client" data-uid="{ctx.session.uid}"></div>')
        response.headers["X-Frame-Options"] = "DENY"
        return response

    # -- /web/content ----------------------------------------------------------------------------
    def content(self, ctx: Ctx) -> Response:
        assert ctx.conn is not None and ctx.db is not None
        row = ctx.conn.execute("SELECT name, store_fname, db_datas, mimetype, public FROM ir_attachment "
                               "WHERE id = %s AND type = 'binary'", (ctx.incoming.path_params["id"],)).fetchone()
        if row is None:
            return PlainTextResponse("Not Found", status_code=404)
        name, store_fname, db_datas, mimetype, public = row
        if not public and ctx.session.uid is None:
            return PlainTextResponse("Forbidden", status_code=403)
        if ctx.faults.missing_attachment:
            return PlainTextResponse("Not Found", status_code=404)
        media_type = mimetype or "application/octet-stream"
        if db_datas is not None:
            return Response(bytes(db_datas), media_type=media_type)
        filestore = self.config.filestore(ctx.db)
        path = (filestore / (store_fname or "")).resolve()
        if not path.is_relative_to(filestore) or path == filestore:
            return PlainTextResponse("Not Found", status_code=404)
        try:
            stat = os.stat(path)
        except OSError:
            return PlainTextResponse("Not Found", status_code=404)
        return FileResponse(path, media_type=media_type, filename=name, stat_result=stat,
                            content_disposition_type="inline")

