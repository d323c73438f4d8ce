"""Which Odoo columns and config parameters are credentials (an exact list, no substring), and the recover export
blanking them."""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from promote_pipeline.odoo import watermarks
from promote_pipeline.odoo.credentials import is_credential
from resources.redaction import REDACTED

DSN = os.environ.get("STANDIN_DSN", "host=127.0.0.1 port=5432 user=postgres")


@pytest.mark.parametrize("name", [
    "password", "smtp_pass", "account_token", "access_token", "signup_token", "session_token", "client_secret",
    "totp_secret", "stripe_secret_key", "stripe_webhook_secret", "adyen_api_key", "adyen_hmac_key",
    "recaptcha_private_key", "api_key", "database.secret", "google_gmail_client_secret", "web_unsplash.access_key",
    "fetchmail_password",
])
def test_credentials(name: str) -> None:
    assert is_credential(name)


@pytest.mark.parametrize("name", [
    "login", "smtp_user", "user", "key", "stripe_publishable_key", "passed", "token_count", "smoke_password_ref",
    "db_dsn_ref", "secret_ref", "database.uuid", "web.base.url", "smtp_host", "state", "name", "bypass",
])
def test_not_credentials(name: str) -> None:
    assert not is_credential(name)


def test_the_recover_export_blanks_credentials_but_not_flags_counts_or_unset_ones(tmp_path: Path) -> None:
    table = f"credentials_export_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DSN, dbname="postgres") as conn, conn.transaction(force_rollback=True):  # leaves nothing
        conn.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, write_date timestamp, login varchar,"
                             " password varchar, smtp_pass varchar, signup_token varchar, is_secret boolean,"
                             " passed boolean, token_count integer)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("INSERT INTO {} (write_date, login, password, smtp_pass, signup_token, is_secret, passed,"
                             " token_count) VALUES (now(), 'admin', 'hunter22', '', NULL, true, true, 3)"
                             ).format(sql.Identifier(table)))
        assert watermarks.export(conn, {table: {"max_id": 0, "max_write_date": None}}, tmp_path) == {table: 1}
    with (tmp_path / f"{table}.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert row == {"id": "1", "write_date": row["write_date"], "login": "admin", "password": REDACTED,
                   "smtp_pass": "", "signup_token": "", "is_secret": "True", "passed": "True", "token_count": "3"}
