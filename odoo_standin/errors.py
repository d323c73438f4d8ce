"""Odoo's exceptions as a client sees them: their dotted names, messages and XML-RPC fault codes.

A client of Odoo tells errors apart by the ``data.name`` of a JSON-RPC error
(``odoo.exceptions.AccessDenied``, ``psycopg2.OperationalError``...) or by the integer
``faultCode`` of an ``/xmlrpc/2`` fault (``odoo/addons/base/controllers/rpc.py``: 1 application
error, 2 warning/user error, 3 access denied, 4 access error). The stand-in raises these classes
and renders them the same way; database errors keep the name psycopg2 gives them in Odoo.
"""

from __future__ import annotations

import traceback

import psycopg

FAULT_APPLICATION_ERROR = 1
FAULT_WARNING = 2
FAULT_ACCESS_DENIED = 3
FAULT_ACCESS_ERROR = 4


class OdooError(Exception):
    """Base of the ``odoo.exceptions`` the stand-in raises."""

    odoo_name = "odoo.exceptions.UserError"
    fault_code = FAULT_WARNING


class UserError(OdooError):
    pass


class MissingError(UserError):
    odoo_name = "odoo.exceptions.MissingError"


class ValidationError(UserError):
    odoo_name = "odoo.exceptions.ValidationError"


class AccessError(OdooError):
    odoo_name = "odoo.exceptions.AccessError"
    fault_code = FAULT_ACCESS_ERROR


class AccessDenied(OdooError):
    odoo_name = "odoo.exceptions.AccessDenied"
    fault_code = FAULT_ACCESS_DENIED

    def __init__(self, message: str = "Access Denied") -> None:
        super().__init__(message)


class SessionExpired(Exception):
    """Odoo's ``http.SessionExpiredException``: an ``auth='user'`` route without a valid session."""

    odoo_name = "odoo.http.SessionExpiredException"


def missing_record(model: str, ids: list[int], uid: int) -> MissingError:
    """The error Odoo raises for ids that are not (or no longer) in the table."""
    listed = ", ".join(str(i) for i in ids) + ("," if len(ids) == 1 else "")
    return MissingError(f"Record does not exist or has been deleted.\n(Record: {model}({listed}), User: {uid})")


def dotted_name(exc: BaseException) -> str:
    """``module.Class`` as Odoo's ``serialize_exception`` prints it; psycopg's errors keep psycopg2's names."""
    if isinstance(exc, OdooError | SessionExpired):
        return exc.odoo_name
    module = type(exc).__module__
    if module.split(".")[0] == "psycopg":
        module = "psycopg2" + module[len("psycopg"):]
    return f"{module}.{type(exc).__name__}"


def message(exc: BaseException) -> str:
    """The exception's text; a connection failure reads as libpq (and so psycopg2) words it."""
    if isinstance(exc, psycopg.OperationalError):
        text = str(exc).removeprefix("connection failed: ")
        return text if text.endswith("\n") else text + "\n"
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def fault_code(exc: BaseException) -> int:
    return exc.fault_code if isinstance(exc, OdooError) else FAULT_APPLICATION_ERROR


def formatted_traceback(exc: BaseException) -> str:
    """What Odoo puts in an application fault's string and a JSON-RPC error's ``debug``: the traceback,
    ending with the error's Odoo-side name and message."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{dotted_name(exc)}: {message(exc)}\n"


def serialize(exc: BaseException) -> dict[str, object]:
    """The ``data`` of a JSON-RPC error (Odoo's ``serialize_exception``).

    Odoo puts the server's traceback in ``debug``; the stand-in leaves it empty rather than show its own
    internals (XML-RPC faults, whose text *is* the traceback in Odoo, get one that ends like Odoo's).
    """
    text = message(exc)
    arguments = [text] if isinstance(exc, psycopg.Error) else list(exc.args)
    return {"name": dotted_name(exc), "debug": "", "message": text,
            "arguments": arguments, "context": getattr(exc, "context", {})}
