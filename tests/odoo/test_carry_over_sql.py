"""Carry-over builds its statements from column names read out of information_schema: they are quoted as
identifiers, so a module's column with a quote in its name neither breaks the statement nor changes it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from promote_pipeline.odoo.carry_over import _copy_rows
from promote_pipeline.promotion.settings import default_server_dsn

ODD = 'note"; DROP TABLE ir_mail_server; --'


def _make(name: str) -> None:
    with psycopg.connect(default_server_dsn(), dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop(name: str) -> None:
    with psycopg.connect(default_server_dsn(), dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pair() -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
    names = [f"promote_co_{side}_{secrets.token_hex(4)}" for side in ("blue", "green")]
    for name in names:
        _make(name)
    conns = [psycopg.connect(default_server_dsn(), dbname=n, autocommit=True) for n in names]
    try:
        for conn in conns:
            conn.execute(sql.SQL("CREATE TABLE ir_mail_server (id serial PRIMARY KEY, name text, smtp_host text,"
                                 " {} text)").format(sql.Identifier(ODD)))
        yield conns[0], conns[1]
    finally:
        for conn in conns:
            conn.close()
        for name in names:
            _drop(name)


def test_columns_with_quotes_in_their_names_are_copied_as_data(pair: Any) -> None:
    blue, green = pair
    insert = sql.SQL("INSERT INTO ir_mail_server (name, smtp_host, {}) VALUES (%s, %s, %s)").format(sql.Identifier(ODD))
    blue.execute(insert, ("outgoing", "smtp.prod", "blue's note"))
    blue.execute(insert, ("only-on-blue", "smtp.other", "kept"))
    green.execute(insert, ("outgoing", "smtp.staging", "green's note"))
    changes = _copy_rows(blue, green, "ir_mail_server", "name", ["smtp_host", ODD])
    assert sorted(c["key"] for c in changes) == ["only-on-blue", "outgoing"]
    rows = green.execute(sql.SQL("SELECT name, smtp_host, {} FROM ir_mail_server ORDER BY name").format(
        sql.Identifier(ODD))).fetchall()
    assert rows == [("only-on-blue", "smtp.other", "kept"), ("outgoing", "smtp.prod", "blue's note")]
