"""``execute_kw`` on the stand-in's models: ``search_read``, ``search``, ``search_count``, ``read``,
``create`` and ``write``, with Odoo's argument conventions and errors.

Behaviour copied from ``odoo/service/model.py`` (``execute_cr``: an unknown model is a
``UserError`` "Object x doesn't exist", a name starting with ``_`` an ``AccessError``) and
``odoo/models.py``: ``read`` silently skips ids that no longer exist while ``write`` raises
``MissingError`` for them; unknown fields are a ``ValueError``; ``create`` takes one dict (and
returns an id) or a list of dicts (and returns a list); writing ``password`` stores its
pbkdf2 hash; ``ir.attachment`` content given as ``datas`` goes to the filestore under its SHA-1,
and a search on attachments leaves out field attachments (``res_field`` set) unless the domain
names ``id`` or ``res_field``.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import mimetypes
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from odoo_standin import domain as domains
from odoo_standin import users
from odoo_standin.errors import AccessError, UserError, missing_record
from odoo_standin.models import MODELS, Model, many2one_names, read_datas

Conn = psycopg.Connection[Any]


@dataclass
class Env:
    """One call's cursor, user and database (and where that database's filestore is)."""

    conn: Conn
    uid: int
    db: str
    filestore: Path
    context: dict[str, Any] = field(default_factory=dict)


def call_kw(env: Env, model_name: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if method.startswith("_"):
        raise AccessError(f"Private methods (such as {method}) cannot be called remotely.")
    model = MODELS.get(model_name)
    if model is None:
        raise UserError(f"Object {model_name} doesn't exist")
    handler = _METHODS.get(method)
    if handler is None:
        raise AttributeError(f"The method '{method}' does not exist on the model '{model_name}' "
                             f"(odoo_standin implements {', '.join(sorted(_METHODS))})")
    kwargs = dict(kwargs)
    env.context = dict(kwargs.pop("context", None) or {})
    _check_access(env, model, "read" if method in _READS else "write")
    bound = inspect.signature(handler).bind(env, model, *args, **kwargs)
    return handler(*bound.args, **bound.kwargs)


def _check_access(env: Env, model: Model, operation: str) -> None:
    group = model.read_group if operation == "read" else model.write_group
    if env.uid != 1 and not users.has_group(env.conn, env.uid, group):
        raise AccessError(f"Access to {operation} '{model.description}' ({model.name}) records is not allowed "
                          f"for this user: it needs the group {group}.")


def _ids(value: Any) -> list[int]:
    return [value] if isinstance(value, int) else [int(i) for i in value]


def _fields(model: Model, names: list[str] | None) -> list[str]:
    names = list(names or [f.name for f in model.fields if f.name != "id"])
    for name in names:
        if model.field(name) is None:
            raise ValueError(f"Invalid field {name!r} on model {model.name!r}")
    return ["id", *(n for n in names if n != "id")]


def _search_ids(env: Env, model: Model, domain: list[Any] | None, offset: int = 0, limit: int | None = None,
                order: str | None = None) -> list[int]:
    domain = list(domain or [])
    if model.name == "ir.attachment" and not any(isinstance(t, list | tuple) and t and t[0] in ("id", "res_field")
                                                 for t in domain):
        domain.insert(0, ["res_field", "=", False])
    clause, params = domains.where(model, domain, env.context.get("active_test", True))
    query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
        sql.Identifier(model.table, "id"), sql.Identifier(model.table), clause, domains.order_by(model, order))
    if limit:
        query += sql.SQL(" LIMIT {}").format(sql.Literal(int(limit)))
    if offset:
        query += sql.SQL(" OFFSET {}").format(sql.Literal(int(offset)))
    return [row[0] for row in env.conn.execute(query, params).fetchall()]


def search(env: Env, model: Model, domain: list[Any], offset: int = 0, limit: int | None = None,
           order: str | None = None) -> list[int]:
    return _search_ids(env, model, domain, offset, limit, order)


def search_count(env: Env, model: Model, domain: list[Any], limit: int | None = None) -> int:
    return len(_search_ids(env, model, domain, limit=limit))


def search_read(env: Env, model: Model, domain: list[Any] | None = None, fields: list[str] | None = None,
                offset: int = 0, limit: int | None = None, order: str | None = None) -> list[dict[str, Any]]:
    names = _fields(model, fields)
    return _read_rows(env, model, _search_ids(env, model, domain, offset, limit, order), names)


def read(env: Env, model: Model, ids: Any, fields: list[str] | None = None) -> list[dict[str, Any]]:
    return _read_rows(env, model, _ids(ids), _fields(model, fields))


def _read_rows(env: Env, model: Model, ids: list[int], names: list[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    fields = {n: f for n in names if (f := model.field(n)) is not None}  # names were checked by _fields
    stored = [n for n, f in fields.items() if f.stored]
    extra = ["store_fname", "db_datas"] if "datas" in names else []
    columns = [fields[n].sql(model.table) for n in stored]
    columns += [sql.Identifier(model.table, c) for c in extra]
    query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s)").format(
        sql.SQL(", ").join(columns), sql.Identifier(model.table), sql.Identifier(model.table, "id"))
    rows = {row[0]: dict(zip(stored + extra, row, strict=True))
            for row in env.conn.execute(query, (ids,)).fetchall()}
    names_by_field = _many2one_names(env, model, stored, rows.values())
    out = []
    for rid in ids:  # the order asked for; ids that are gone are left out, as Odoo's read does
        if rid not in rows:
            continue
        raw = rows[rid]
        record: dict[str, Any] = {}
        for name in names:
            fld = model.field(name)
            assert fld is not None
            if fld.kind == "datas":
                record[name] = read_datas(env.filestore, raw["store_fname"], raw["db_datas"])
            elif fld.kind == "many2one" and raw[name] is not None:
                record[name] = [raw[name], names_by_field[name].get(raw[name], "")]
            else:
                record[name] = fld.to_read(raw[name])
        out.append(record)
    return out


def _many2one_names(env: Env, model: Model, names: list[str], rows: Any) -> dict[str, dict[int, str]]:
    rows = list(rows)
    out = {}
    for name in names:
        fld = model.field(name)
        if fld is not None and fld.kind == "many2one" and fld.comodel_table:
            out[name] = many2one_names(env.conn, fld.comodel_table, {r[name] for r in rows if r[name]})
    return out


def create(env: Env, model: Model, vals_list: Any) -> int | list[int]:
    single = isinstance(vals_list, dict)
    created = [_create_one(env, model, dict(vals)) for vals in ([vals_list] if single else vals_list)]
    return created[0] if single else created


def _create_one(env: Env, model: Model, vals: dict[str, Any]) -> int:
    if model.name == "res.users":
        vals = _new_user_defaults(env, vals)
    columns = _columns(env, model, vals)
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(model.table), sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    row = env.conn.execute(query, list(columns.values())).fetchone()
    assert row is not None
    if model.name == "res.users":
        env.conn.execute("INSERT INTO res_groups_users_rel (gid, uid) SELECT res_id, %s FROM ir_model_data"
                         " WHERE module = 'base' AND name = 'group_user' AND model = 'res.groups'", (row[0],))
    return int(row[0])


def _new_user_defaults(env: Env, vals: dict[str, Any]) -> dict[str, Any]:
    """A new user gets a partner of its name (``_inherits``) and the calling user's company."""
    if "partner_id" not in vals:
        name = vals.get("name") or vals.get("login")
        row = env.conn.execute("INSERT INTO res_partner (name, email, company_id) VALUES (%s, %s, 1) RETURNING id",
                               (name, vals.get("email"))).fetchone()
        assert row is not None
        vals["partner_id"] = row[0]
    vals.pop("name", None)
    vals.pop("email", None)
    vals.setdefault("company_id", 1)
    return vals


def write(env: Env, model: Model, ids: Any, vals: dict[str, Any]) -> bool:
    ids = _ids(ids)
    query = sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(sql.Identifier(model.table))
    found = {row[0] for row in env.conn.execute(query, (ids,)).fetchall()}
    missing = [i for i in ids if i not in found]
    if missing:
        raise missing_record(model.name, missing, env.uid)
    vals = dict(vals)
    if model.name == "res.users" and "name" in vals:
        env.conn.execute("UPDATE res_partner SET name = %s, write_date = now() AT TIME ZONE 'UTC' WHERE id IN"
                         " (SELECT partner_id FROM res_users WHERE id = ANY(%s))", (vals.pop("name"), ids))
    columns = _columns(env, model, vals)
    assignments: list[sql.Composable] = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns]
    assignments.append(sql.SQL("write_date = now() AT TIME ZONE 'UTC'"))
    update = sql.SQL("UPDATE {} SET {} WHERE id = ANY(%s)").format(
        sql.Identifier(model.table), sql.SQL(", ").join(assignments))
    env.conn.execute(update, [*columns.values(), ids])
    return True


def _columns(env: Env, model: Model, vals: dict[str, Any]) -> dict[str, Any]:
    """Column values for ``vals``: fields checked, passwords hashed, ``datas`` stored in the filestore."""
    columns: dict[str, Any] = {}
    for name, value in vals.items():
        fld = model.field(name)
        if fld is None or fld.expression is not None or name in ("id", "create_date", "write_date"):
            raise ValueError(f"Invalid field {name!r} on model {model.name!r}")
        if fld.kind == "password":
            columns[name] = users.crypt_context(env.conn).hash(value) if value else None
        elif fld.kind == "datas":
            columns.update(_store(env.filestore, value, vals.get("name"), vals.get("mimetype")))
        elif fld.kind == "many2one" and isinstance(value, list | tuple):
            columns[name] = value[0] if value else None
        else:
            columns[name] = None if value is False and fld.kind not in ("boolean", "integer") else value
    return columns


def _store(filestore: Path, datas: Any, name: str | None, mimetype: str | None) -> dict[str, Any]:
    """Odoo's ``_file_write``: the content at ``<sha1[:2]>/<sha1>``, written once, renamed into place."""
    raw = base64.b64decode(datas) if datas else b""
    digest = hashlib.sha1(raw).hexdigest()
    fname = f"{digest[:2]}/{digest}"
    path = filestore / fname
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, path)
    guessed = mimetypes.guess_type(name or "")[0] if name else None
    return {"store_fname": fname, "checksum": digest, "file_size": len(raw), "db_datas": None,
            "mimetype": mimetype or guessed or "application/octet-stream"}


_READS = {"search_read", "search", "search_count", "read"}
_METHODS: dict[str, Callable[..., Any]] = {
    "search_read": search_read, "search": search, "search_count": search_count, "read": read,
    "create": create, "write": write,
}
