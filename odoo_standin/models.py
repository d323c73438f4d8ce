"""The models the RPC services know, with the fields the stand-in's tables have.

Field values travel as Odoo's ``read()`` renders them (``odoo/fields.py`` ``convert_to_read``):
an empty char/text/selection/datetime is ``False``, an empty integer ``0``, a many2one is
``[id, display_name]`` or ``False``, a datetime is ``"YYYY-MM-DD HH:MM:SS"`` (UTC), a
``res.users`` password always reads as ``""``, and ``ir.attachment.datas`` is the base64 of the
stored file (``""`` when the file is missing). Default orders are the models' ``_order``.

Access is by group, a simplification of ``ir.model.access``: system parameters need
``base.group_system`` (as in Odoo); the other models are open to internal users
(``base.group_user``), writing users needs ``base.group_erp_manager``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg import sql

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = "char"  # char | text | integer | boolean | datetime | many2one | password | datas
    comodel_table: str | None = None  # a many2one's target table (its rows have a ``name``)
    expression: str | None = None  # SQL for a field that is not a column of the table
    readonly: bool = False

    @property
    def stored(self) -> bool:
        return self.kind != "datas"

    def sql(self, table: str) -> sql.Composable:
        if self.expression is not None:
            return sql.SQL(self.expression)
        return sql.Identifier(table, self.name)

    def to_read(self, value: Any) -> Any:
        if self.kind == "password":
            return ""
        if self.kind == "integer":
            return value or 0
        if self.kind == "boolean":
            return bool(value)
        if value is None:
            return False
        if self.kind == "datetime" and isinstance(value, datetime):
            return value.strftime(DATETIME_FORMAT)
        return value


@dataclass(frozen=True)
class Model:
    name: str
    table: str
    description: str
    fields: tuple[Field, ...]
    order: str
    read_group: str = "base.group_user"
    write_group: str = "base.group_user"

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def has_active(self) -> bool:
        return self.field("active") is not None


_AUDIT = (Field("create_date", "datetime", readonly=True), Field("write_date", "datetime", readonly=True))

MODELS: dict[str, Model] = {m.name: m for m in (
    Model("res.partner", "res_partner", "Contact", (
        Field("id", "integer", readonly=True), Field("name"), Field("email"),
        Field("company_id", "many2one", "res_company"), Field("active", "boolean"), *_AUDIT,
    ), order="name ASC, id DESC"),
    Model("res.users", "res_users", "User", (
        Field("id", "integer", readonly=True), Field("login"), Field("password", "password"),
        Field("active", "boolean"), Field("partner_id", "many2one", "res_partner"),
        Field("company_id", "many2one", "res_company"),
        Field("name", expression="(SELECT p.name FROM res_partner p WHERE p.id = res_users.partner_id)"),
        *_AUDIT,
    ), order="name, login", write_group="base.group_erp_manager"),
    Model("ir.config_parameter", "ir_config_parameter", "System Parameter", (
        Field("id", "integer", readonly=True), Field("key"), Field("value", "text"), *_AUDIT,
    ), order="key", read_group="base.group_system", write_group="base.group_system"),
    Model("ir.attachment", "ir_attachment", "Attachment", (
        Field("id", "integer", readonly=True), Field("name"), Field("res_model"), Field("res_field"),
        Field("res_id", "integer"), Field("type"), Field("url"), Field("store_fname", readonly=True),
        Field("file_size", "integer", readonly=True), Field("checksum", readonly=True), Field("mimetype"),
        Field("public", "boolean"), Field("access_token"), Field("datas", "datas"), *_AUDIT,
    ), order="id DESC"),
)}


def many2one_names(conn: Any, table: str, ids: set[int]) -> dict[int, str]:
    """``display_name`` of the targets of a many2one (the stand-in's comodels all have a ``name``)."""
    if not ids:
        return {}
    query = sql.SQL("SELECT id, name FROM {} WHERE id = ANY(%s)").format(sql.Identifier(table))
    return {row[0]: row[1] for row in conn.execute(query, (sorted(ids),)).fetchall()}


def read_datas(filestore: Path, store_fname: str | None, db_datas: bytes | None) -> str:
    """``ir.attachment.datas``: base64 of the content, from the database or the filestore."""
    if db_datas is not None:
        return base64.b64encode(bytes(db_datas)).decode()
    if not store_fname:
        return ""
    path = (filestore / store_fname).resolve()
    if not path.is_relative_to(filestore.resolve()):
        return ""
    try:
        return base64.b64encode(path.read_bytes()).decode()
    except OSError:  # Odoo logs the missing file and reads it as empty
        return ""
