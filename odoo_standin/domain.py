"""Search domains and ``order`` strings, turned into SQL as ``odoo/osv/expression.py`` does.

A domain is Odoo's prefix notation: a list of ``[field, operator, value]`` leaves, with ``'&'``,
``'|'`` and ``'!'`` in front of their operands and an implicit ``'&'`` between consecutive terms.
Operators: ``= != <> < > <= >= in not in like not like ilike not ilike =like =ilike``. As in
Odoo, ``= False`` matches NULL (and ``''`` for text, ``false`` for booleans), ``!=`` and the
negative operators also match NULL, ``like``/``ilike`` wrap the value in ``%``, and a text
compared with a many2one matches on the target's name. Models with an ``active`` field only
return active records unless the domain names ``active`` or the context says
``active_test: False``.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import sql

from odoo_standin.models import Field, Model

_COMPARE = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
_LIKE = {"like": "LIKE", "ilike": "ILIKE", "=like": "LIKE", "=ilike": "ILIKE",
         "not like": "NOT LIKE", "not ilike": "NOT ILIKE"}
_TRUE, _FALSE = sql.SQL("TRUE"), sql.SQL("FALSE")
_ORDER_TERM = re.compile(r"^\s*(\w+)(?:\s+(asc|desc))?(?:\s+nulls\s+(?:first|last))?\s*$", re.IGNORECASE)

Clause = tuple[sql.Composable, list[Any]]


def where(model: Model, domain: list[Any], active_test: bool = True) -> Clause:
    """The WHERE clause (without the keyword) for ``domain`` on ``model``."""
    if not isinstance(domain, list | tuple):
        raise ValueError(f"Invalid domain: {domain!r}")
    terms: list[Clause] = []
    position = 0
    while position < len(domain):
        clause, position = _term(model, list(domain), position)
        terms.append(clause)
    if active_test and model.has_active and not _mentions(domain, "active"):
        terms.append((sql.SQL("{} = TRUE").format(sql.Identifier(model.table, "active")), []))
    return _join(terms, "AND") if terms else (_TRUE, [])


def _mentions(domain: list[Any], name: str) -> bool:
    return any(isinstance(t, list | tuple) and len(t) == 3 and t[0] == name for t in domain)


def _join(clauses: list[Clause], op: str) -> Clause:
    text = sql.SQL(f" {op} ").join(sql.SQL("({})").format(c[0]) for c in clauses)
    return text, [p for c in clauses for p in c[1]]


def _term(model: Model, domain: list[Any], position: int) -> tuple[Clause, int]:
    if position >= len(domain):
        raise ValueError(f"Invalid domain: {domain!r} (an operator lacks its operands)")
    item = domain[position]
    if item in ("&", "|"):
        left, position = _term(model, domain, position + 1)
        right, position = _term(model, domain, position)
        return _join([left, right], "AND" if item == "&" else "OR"), position
    if item == "!":
        inner, position = _term(model, domain, position + 1)
        return (sql.SQL("NOT ({})").format(inner[0]), inner[1]), position
    return _leaf(model, item), position + 1


def _leaf(model: Model, leaf: Any) -> Clause:
    if not isinstance(leaf, list | tuple) or len(leaf) != 3:
        raise ValueError(f"Invalid leaf {leaf!r}")
    name, operator, value = leaf
    if name in (0, 1) and operator == "=" and value == 1:  # Odoo's TRUE_LEAF and FALSE_LEAF
        return (_TRUE if name == 1 else _FALSE), []
    field = model.field(name) if isinstance(name, str) else None
    if field is None:
        raise ValueError(f"Invalid field {model.name}.{name} in leaf {tuple(leaf)!r}")
    if not field.stored:
        raise ValueError(f"Non-stored field {model.name}.{name} cannot be searched.")
    column = field.sql(model.table)
    if field.kind == "many2one" and isinstance(value, str) and field.comodel_table:
        return _by_name(column, field.comodel_table, operator, value)
    if operator in _COMPARE:
        return _compare(field, column, _COMPARE[operator], value)
    if operator in ("in", "not in"):
        return _membership(column, operator == "in", value)
    if operator in _LIKE:
        pattern = value if operator.startswith("=") else f"%{value}%"
        clause = sql.SQL("{}::text {} %s").format(column, sql.SQL(_LIKE[operator]))
        if operator.startswith("not"):
            clause = sql.SQL("({} OR {} IS NULL)").format(clause, column)
        return clause, [pattern]
    raise ValueError(f"Invalid leaf {tuple(leaf)!r}")


def _compare(field: Field, column: sql.Composable, op: str, value: Any) -> Clause:
    if value is False or value is None:
        empty = {"boolean": " OR {c} = FALSE", "char": " OR {c} = ''", "text": " OR {c} = ''"}.get(field.kind, "")
        if op == "=":
            return sql.SQL("({c} IS NULL" + empty + ")").format(c=column), []
        if op == "!=":
            return sql.SQL("NOT ({c} IS NULL" + empty + ")").format(c=column), []
    if field.kind == "boolean" and op == "=" and value is True:
        return sql.SQL("{} = TRUE").format(column), []
    if op == "!=":
        return sql.SQL("({c} != %s OR {c} IS NULL)").format(c=column), [value]
    return sql.SQL("{} " + op + " %s").format(column), [value]


def _membership(column: sql.Composable, positive: bool, value: Any) -> Clause:
    values = list(value) if isinstance(value, list | tuple) else [value]
    wanted = [v for v in values if v is not False and v is not None]
    with_null = len(wanted) != len(values)
    if positive:
        text = "({c} = ANY(%s)" + (" OR {c} IS NULL" if with_null else "") + ")"
    else:
        text = "(NOT ({c} = ANY(%s))" + (" AND {c} IS NOT NULL" if with_null else " OR {c} IS NULL") + ")"
    return sql.SQL(text).format(c=column), [wanted]


def _by_name(column: sql.Composable, table: str, operator: str, value: str) -> Clause:
    """``('company_id', 'ilike', 'Your')``: the records whose target's name matches."""
    op = _LIKE.get(operator) or {"=": "=", "!=": "!="}.get(operator)
    if op is None:
        raise ValueError(f"Invalid operator {operator!r} for a name")
    pattern = f"%{value}%" if operator in ("like", "ilike", "not like", "not ilike") else value
    positive = op.replace("NOT ", "").replace("!=", "=")
    subquery = sql.SQL("{} IN (SELECT id FROM {} WHERE name::text {} %s)").format(
        column, sql.Identifier(table), sql.SQL(positive))
    if op.startswith("NOT") or op == "!=":
        return sql.SQL("NOT ({} AND {} IS NOT NULL)").format(subquery, column), [pattern]
    return subquery, [pattern]


def order_by(model: Model, order: str | None) -> sql.Composable:
    """``"name desc, id"`` checked against the model's fields; the default is the model's ``_order``."""
    terms = []
    for part in (order or model.order).split(","):
        match = _ORDER_TERM.match(part)
        field = model.field(match.group(1)) if match else None
        if match is None or field is None or not field.stored:
            name = match.group(1) if match else part.strip()
            raise ValueError(f"Invalid field {name!r} on model {model.name!r}")
        direction = "DESC" if (match.group(2) or "").lower() == "desc" else "ASC"
        terms.append(sql.SQL("{} " + direction).format(field.sql(model.table)))
    terms.append(sql.SQL("{} ASC").format(sql.Identifier(model.table, "id")))  # ties broken by id, so pages are stable
    return sql.SQL(", ").join(terms)
