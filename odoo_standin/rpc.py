"""The external API: ``/jsonrpc`` and ``/xmlrpc/2/<service>``, services ``common``, ``object`` and ``db``.

Copied from ``odoo/addons/base/controllers/rpc.py`` (transport and fault codes),
``odoo/service/common.py`` (``version``, ``login``, ``authenticate``), ``odoo/service/model.py``
(``execute_kw``/``execute``: credentials checked on every call, then the method run in one
transaction) and ``odoo/service/db.py`` (``list``, ``server_version``). Every call opens the
database *it names* -- no db filter applies, as with ``Registry(db)`` -- so a server started for
one database answers RPC on any database its DSN can open, and fails with PostgreSQL's error
(``psycopg2.OperationalError``) for one that does not exist.

``common.login`` passes no user-agent environment; ``common.authenticate`` passes the caller's,
so only a caller that sends ``base_location`` lets a system user's login rewrite
``web.base.url``. A failed login returns ``False``; so does any login while the
``refuse_login`` fault switch is on.
"""

from __future__ import annotations

import json
import xmlrpc.client
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import psycopg
from starlette.responses import PlainTextResponse, Response

from odoo_standin import errors, orm, users
from odoo_standin.config import ServeConfig
from odoo_standin.databases import Databases
from odoo_standin.errors import AccessDenied
from odoo_standin.faults import Faults

# XML 1.0 cannot carry control characters other than tab, newline and carriage return.
_CONTROL = dict.fromkeys(set(range(32)) - {9, 10, 13})


class RpcServices:
    """The services for one request (``faults`` is the fault switches' snapshot taken when it arrived)."""

    def __init__(self, config: ServeConfig, databases: Databases, faults: Faults) -> None:
        self.config = config
        self.databases = databases
        self.faults = faults
        self._services: dict[str, dict[str, Callable[..., Any]]] = {
            "common": {"version": self.version, "login": self.login, "authenticate": self.authenticate},
            "object": {"execute_kw": self.execute_kw, "execute": self.execute},
            "db": {"list": self.list, "server_version": self.server_version},
        }

    def dispatch(self, service: str, method: str, params: list[Any]) -> Any:
        methods = self._services[service]  # an unknown service is a KeyError, as in Odoo
        if method not in methods:
            raise Exception(f"Method not found: {method}")
        return methods[method](*params)

    # -- common ----------------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        return {"server_version": self.config.server_version, "server_version_info": self.config.version_info,
                "server_serie": self.config.server_version, "protocol_version": 1}

    def login(self, db: str, login: str, password: str) -> int | bool:
        return self.authenticate(db, login, password, None)

    def authenticate(self, db: str, login: str, password: str, user_agent_env: dict[str, Any] | None) -> int | bool:
        with self.databases.cursor(db) as conn:
            if self.faults.refuse_login:
                return False
            try:
                return users.authenticate(conn, db, login, password, {**(user_agent_env or {}), "interactive": False})
            except AccessDenied:
                return False

    # -- object ----------------------------------------------------------------------------------
    def execute_kw(self, db: str, uid: Any, password: str, model: str, method: str, args: list[Any],
                   kw: dict[str, Any] | None = None) -> Any:
        return self._execute(db, int(uid), password, model, method, list(args), kw or {})

    def execute(self, db: str, uid: Any, password: str, model: str, method: str, *args: Any) -> Any:
        return self._execute(db, int(uid), password, model, method, list(args), {})

    def _execute(self, db: str, uid: int, password: str, model: str, method: str, args: list[Any],
                 kwargs: dict[str, Any]) -> Any:
        with self.databases.cursor(db) as conn:
            users.check(conn, uid, password)
            env = orm.Env(conn, uid, db, self.config.filestore(db))
            try:
                with conn.transaction():
                    return orm.call_kw(env, model, method, args, kwargs)
            except psycopg.IntegrityError as exc:
                raise errors.ValidationError(
                    f"The operation could not be completed: {exc.diag.message_primary}") from exc

    # -- db --------------------------------------------------------------------------------------
    def list(self, document: bool = False) -> list[str]:
        if not self.config.selection.list_db:
            raise AccessDenied()
        return self.config.selection.list_dbs(self.databases)

    def server_version(self) -> str:
        return self.config.server_version

    # -- transports ------------------------------------------------------------------------------
    def jsonrpc(self, body: bytes, content_type: str) -> Response:
        """``/jsonrpc`` (``type='json'``): the result, or Odoo's error envelope with HTTP 200."""
        if content_type.split(";")[0].strip() not in ("application/json", "application/json-rpc"):
            return PlainTextResponse("Request inferred type is compatible with ['http'] but '/jsonrpc' is "
                                     "type='json'.", status_code=400)
        try:
            request = json.loads(body)
            params = request["params"]
            rpc_id = request.get("id")
        except (ValueError, KeyError, TypeError, AttributeError):
            return PlainTextResponse("Invalid JSON data", status_code=400)
        try:
            result = self.dispatch(params["service"], params["method"], list(params.get("args") or []))
        except Exception as exc:  # noqa: BLE001 - every error becomes the JSON-RPC error envelope
            return json_error(rpc_id, exc)
        return json_result(rpc_id, result)

    def xmlrpc(self, service: str, body: bytes) -> Response:
        """``/xmlrpc/2/<service>``: a methodResponse, or a fault with Odoo's integer codes."""
        try:
            params, method = xmlrpc.client.loads(body, use_datetime=True)
            result = self.dispatch(service, str(method), list(params))
            payload = _marshal((_xml_safe(result),))
        except Exception as exc:  # noqa: BLE001 - every error becomes a fault
            text = errors.formatted_traceback(exc) if errors.fault_code(exc) == 1 else errors.message(exc)
            payload = _marshal(xmlrpc.client.Fault(errors.fault_code(exc), text))
        return Response(f'<?xml version="1.0"?>\n<methodResponse>\n{payload}</methodResponse>\n',
                        media_type="text/xml")


def json_result(rpc_id: Any, result: Any) -> Response:
    return _json({"jsonrpc": "2.0", "id": rpc_id, "result": result})


def json_error(rpc_id: Any, exc: BaseException, code: int = 200, message: str = "Odoo Server Error") -> Response:
    """Odoo's envelope for an exception raised in a ``type='json'`` route (HTTP 200)."""
    return _json({"jsonrpc": "2.0", "id": rpc_id,
                  "error": {"code": code, "message": message, "data": errors.serialize(exc)}})


def _json(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON rendered as Odoo's ``json.dumps`` renders it (with spaces), not in Starlette's compact form."""
    return Response(json.dumps(payload), status_code, headers, media_type="application/json")


def _marshal(value: Any) -> str:
    return xmlrpc.client.Marshaller(allow_none=False).dumps(value)


def _xml_safe(value: Any) -> Any:
    """What Odoo's marshaller does: bytes and dates as strings, control characters dropped."""
    if isinstance(value, str):
        return value.translate(_CONTROL)
    if isinstance(value, bytes):
        return value.decode().translate(_CONTROL)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, dict):
        return {str(k): _xml_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_xml_safe(v) for v in value]
    return value
