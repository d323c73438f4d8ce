"""What would be lost: writes made on green after cutover, and on blue after staging was copied.

At cutover the highest ``id`` and latest ``write_date`` of every Odoo table are recorded on
green. After a rollback, rows above those marks are what users created or changed on green while
it served: they are counted per table in the evidence, and ``promote recover RUN_ID`` exports
them (CSV per table, credential columns blanked) from green's database, which is kept until
the rollback window ends. Before promoting, the same idea run on blue against the time staging
was copied from production tells what production wrote since, which green will not contain.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from promote_pipeline.odoo.credentials import is_credential
from resources.redaction import REDACTED

Conn = psycopg.Connection[Any]


# Odoo's own bookkeeping, written on a production nobody changes and garbage-collected by Odoo itself (each model's
# @api.autovacuum): a web login adds a res_users_log row (odoo/addons/base/models/res_users.py, _update_last_login),
# every bus notification a bus_bus row (addons/bus/models/bus.py), every cron run ir_cron_progress rows and cron
# triggers ir_cron_trigger rows (odoo/addons/base/models/ir_cron.py). Losing them loses no one's work; counting
# them would make every production "drifted" after its first login and the drift gate a formality.
BOOKKEEPING_TABLES = frozenset({"res_users_log", "bus_bus", "ir_cron_progress", "ir_cron_trigger"})


def odoo_tables(conn: Conn) -> list[str]:
    """Tables having both ``id`` and ``write_date``: every Odoo model's table."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public'"
        " AND column_name IN ('id', 'write_date') GROUP BY table_name HAVING count(*) = 2 ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows]


def take(conn: Conn) -> dict[str, dict[str, Any]]:
    """Per table: the highest id (read from the primary key's index) and the server's clock now.

    The clock, not ``max(write_date)``: that would scan every table while the cutover waits (seconds
    on a large database), and a write after this moment carries a later ``write_date`` anyway.
    """
    row = conn.execute("SELECT now() AT TIME ZONE 'UTC'").fetchone()
    assert row is not None
    stamp = row[0].isoformat()
    marks: dict[str, dict[str, Any]] = {}
    for table in odoo_tables(conn):
        if table in BOOKKEEPING_TABLES:  # a login on green during its window is no one's work to recover
            continue
        top = conn.execute(sql.SQL("SELECT max(id) FROM {}").format(sql.Identifier(table))).fetchone()
        marks[table] = {"max_id": (top[0] if top else None) or 0, "max_write_date": stamp}
    return marks


def _since(table: str, mark: dict[str, Any]) -> tuple[sql.Composed, tuple[Any, ...]]:
    where = sql.SQL("id > %s OR (write_date IS NOT NULL AND write_date > %s)")
    return sql.SQL("FROM {} WHERE ").format(sql.Identifier(table)) + where, (
        mark["max_id"], mark["max_write_date"] or "-infinity")


def changes_since(conn: Conn, marks: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{table: {created, changed}} for rows written after the marks (tables with none are left out)."""
    out: dict[str, dict[str, int]] = {}
    for table, mark in marks.items():
        query = sql.SQL("SELECT count(*) FILTER (WHERE id > %s), count(*) FILTER (WHERE id <= %s AND write_date > %s)"
                        " FROM {}").format(sql.Identifier(table))
        try:
            row = conn.execute(query, (mark["max_id"], mark["max_id"], mark["max_write_date"] or "-infinity")
                               ).fetchone()
        except psycopg.errors.UndefinedTable:
            conn.rollback()
            continue
        if row and (row[0] or row[1]):
            out[table] = {"created": int(row[0]), "changed": int(row[1])}
    return out


# A credential is text; a boolean or a number in a credential-named column says nothing secret.
_NOT_TEXT = frozenset({"boolean", "smallint", "integer", "bigint", "numeric", "real", "double precision"})


def _exported(column: str, data_type: str) -> sql.Composable:
    """The column as the export shows it: a credential blanked, unless empty or NULL (that says it is not set)."""
    if not is_credential(column) or data_type in _NOT_TEXT:
        return sql.Identifier(column)
    return sql.SQL("CASE WHEN coalesce({c}::text, '') = '' THEN {c}::text ELSE {r} END AS {c}").format(
        c=sql.Identifier(column), r=sql.Literal(REDACTED))


def export(conn: Conn, marks: dict[str, dict[str, Any]], folder: Path) -> dict[str, int]:
    """CSV per table of the rows written after the marks; credential columns (``credentials``) are blanked."""
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for table in changes_since(conn, marks):
        typed = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'"
            " AND table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
        columns = [r[0] for r in typed]
        select = sql.SQL(", ").join(_exported(name, data_type) for name, data_type in typed)
        tail, params = _since(table, marks[table])
        rows = conn.execute(sql.SQL("SELECT {} ").format(select) + tail + sql.SQL(" ORDER BY id"), params).fetchall()
        with (folder / f"{table}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows(rows)
        counts[table] = len(rows)
    return counts


# How many ids of a table the drift report lists (as ranges); past that it gives the count and the id span.
DRIFT_IDS_LISTED = 200


def id_ranges(ids: list[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"``: what an operator reads, and short even for thousands of rows."""
    parts: list[str] = []
    start = prev = None
    for i in sorted(ids):
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


def _naive_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)



def drift(conn: Conn, since: datetime, carried_keys: tuple[str, ...] = (),
          carried_at: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per table, the rows written on this database after ``since`` (UTC): ``{rows, ids, last_write}``, tables with
    none left out. ``ids`` are ranges (``id_ranges``) of at most ``DRIFT_IDS_LISTED`` ids, then ``… (N more, up to
    id M)``; ``last_write`` the latest ``write_date``. Rows deleted since are not seen: Odoo keeps no tombstone.

    ``carried_keys``: ``ir_config_parameter`` keys the carry-over copies from blue onto green (``web.base.url``,
    which an administrator's login rewrites, ...): not lost, so not counted, if written before ``carried_at``
    (the carry-over's time; None: it has yet to run, so every such write will be carried). Odoo's bookkeeping
    (``BOOKKEEPING_TABLES``) is not counted."""
    naive_utc = _naive_utc(since)
    out: dict[str, dict[str, Any]] = {}
    for table in odoo_tables(conn):
        if table in BOOKKEEPING_TABLES:
            continue
        where: sql.Composable = sql.SQL("write_date > %s")
        params: tuple[Any, ...] = (naive_utc,)
        if table == "ir_config_parameter" and carried_keys:
            where += sql.SQL(" AND NOT (key = ANY(%s) AND write_date <= %s)")
            params += (list(carried_keys), _naive_utc(carried_at) if carried_at else datetime.max)
        row = conn.execute(sql.SQL("SELECT count(*), max(write_date), max(id) FROM {} WHERE ").format(
            sql.Identifier(table)) + where, params).fetchone()
        if not row or not row[0]:
            continue
        ids = [r[0] for r in conn.execute(
            sql.SQL("SELECT id FROM {} WHERE ").format(sql.Identifier(table)) + where
            + sql.SQL(" ORDER BY id LIMIT %s"), (*params, DRIFT_IDS_LISTED)).fetchall()]
        listed = id_ranges(ids)
        if row[0] > len(ids):
            listed += f" … ({row[0] - len(ids)} more, up to id {row[2]})"
        out[table] = {"rows": int(row[0]), "ids": listed, "last_write": row[1].replace(tzinfo=UTC).isoformat()}
    return out
