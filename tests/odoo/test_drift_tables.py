"""Production drift counts the rows people and integrations wrote, not Odoo's own bookkeeping: a login's
res_users_log row, bus notifications, cron progress and triggers (each garbage-collected by Odoo itself)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from promote_pipeline.odoo import watermarks
from promote_pipeline.promotion.settings import default_server_dsn


@pytest.fixture
def database() -> Iterator[psycopg.Connection[Any]]:
    name = f"promote_drift_{secrets.token_hex(4)}"
    with psycopg.connect(default_server_dsn(), dbname="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn = psycopg.connect(default_server_dsn(), dbname=name, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()
        with psycopg.connect(default_server_dsn(), dbname="postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_login_and_a_cron_run_are_not_drift_but_a_new_contact_is(database: psycopg.Connection[Any]) -> None:
    tables = ["res_partner", *sorted(watermarks.BOOKKEEPING_TABLES)]
    for table in tables:  # each an Odoo model's table: id and write_date
        database.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, write_date timestamp)").format(
            sql.Identifier(table)))
    since = datetime.now(UTC) - timedelta(minutes=5)
    for table in tables:
        database.execute(sql.SQL("INSERT INTO {} (write_date) VALUES (now() AT TIME ZONE 'UTC')").format(
            sql.Identifier(table)))
    found = watermarks.drift(database, since)
    assert list(found) == ["res_partner"] and found["res_partner"]["rows"] == 1
