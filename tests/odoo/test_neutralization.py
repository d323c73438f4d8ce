"""Staging's neutralization undone from blue's values, and the check that none remains, on real PostgreSQL.

Two databases of their own per test: blue, a production with live settings in the tables Odoo's
``neutralize.sql`` files touch (the columns as Odoo 18 names them), and green, a copy of it on which the
statements of those files are run as ``odoo-bin neutralize`` runs them. ``undo`` must put blue's values
back and ``remaining`` must then find nothing; before ``undo`` it must name each trace.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from promote_pipeline.odoo import neutralization
from promote_pipeline.promotion import settings

SCHEMA = """
CREATE TABLE ir_config_parameter (id serial PRIMARY KEY, key varchar UNIQUE NOT NULL, value text NOT NULL);
CREATE TABLE ir_mail_server (id serial PRIMARY KEY, name varchar NOT NULL, smtp_host varchar, active boolean);
CREATE TABLE ir_act_server (id serial PRIMARY KEY, name varchar, state varchar, webhook_url varchar);
CREATE TABLE ir_ui_view (id serial PRIMARY KEY, key varchar, active boolean);
CREATE TABLE iap_account (id serial PRIMARY KEY, account_token varchar);
CREATE TABLE payment_provider (id serial PRIMARY KEY, code varchar, state varchar, stripe_secret_key varchar,
                               stripe_publishable_key varchar, stripe_webhook_secret varchar);
CREATE TABLE delivery_carrier (id serial PRIMARY KEY, name varchar, delivery_type varchar,
                               prod_environment boolean, active boolean);
CREATE TABLE mail_push_device (id serial PRIMARY KEY, endpoint varchar);
"""
PRODUCTION = """
INSERT INTO ir_config_parameter (key, value) VALUES ('mail.web_push_vapid_private_key', 'vapid-private-xyz'),
    ('web.base.url', 'https://erp.example.com');
INSERT INTO ir_mail_server (name, smtp_host, active) VALUES ('Production SMTP', 'smtp.example.com', true);
INSERT INTO ir_act_server (name, state, webhook_url) VALUES ('Notify shop', 'webhook', 'https://hooks.example.com/x'),
    ('Plain code', 'code', NULL);
INSERT INTO ir_ui_view (key, active) VALUES ('web.neutralize_banner', false), ('web.layout', true);
INSERT INTO iap_account (account_token) VALUES ('0123456789abcdef0123456789abcdef');
INSERT INTO payment_provider (code, state, stripe_secret_key, stripe_publishable_key, stripe_webhook_secret)
    VALUES ('stripe', 'enabled', 'sk_live_abc', 'pk_live_abc', 'whsec_abc'), ('wire_transfer', 'enabled', NULL,
    NULL, NULL);
INSERT INTO delivery_carrier (name, delivery_type, prod_environment, active)
    VALUES ('Standard', 'fixed', true, true), ('DHL', 'dhl', true, true);
INSERT INTO mail_push_device (endpoint) VALUES ('https://push.example.com/device-1');
"""
# The statements of Odoo 18's base, web, iap, mail, payment, payment_stripe and delivery neutralize.sql files,
# as odoo/modules/neutralize.py runs them (only the tables created above).
NEUTRALIZE = """
UPDATE ir_mail_server SET active = false;
INSERT INTO ir_mail_server (name, smtp_host, active) VALUES ('neutralization - disable emails', 'invalid', true);
INSERT INTO ir_config_parameter (key, value) VALUES ('database.is_neutralized', true)
    ON CONFLICT (key) DO UPDATE SET value = true;
UPDATE ir_act_server SET webhook_url = 'neutralization - disable webhook' WHERE state = 'webhook';
UPDATE ir_ui_view SET active = true WHERE key = 'web.neutralize_banner';
UPDATE iap_account SET account_token = REGEXP_REPLACE(account_token, '(\\+.*)?$', '+disabled')
    WHERE LENGTH(account_token) <= 33;
DELETE FROM ir_config_parameter WHERE key IN ('mail.web_push_vapid_private_key', 'mail.web_push_vapid_public_key',
    'mail.sfu_server_key');
TRUNCATE mail_push_device;
UPDATE payment_provider SET state = 'disabled' WHERE state NOT IN ('test', 'disabled');
UPDATE payment_provider SET stripe_secret_key = NULL, stripe_publishable_key = NULL, stripe_webhook_secret = NULL;
UPDATE delivery_carrier SET prod_environment = false;
UPDATE delivery_carrier SET active = false WHERE delivery_type NOT IN ('fixed', 'base_on_rule');
"""


def _admin() -> str:
    return psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname="postgres")


@pytest.fixture
def pair() -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
    tag = secrets.token_hex(4)
    names = [f"neutralize_test_blue_{tag}", f"neutralize_test_green_{tag}"]
    with psycopg.connect(_admin(), autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conns = [psycopg.connect(psycopg.conninfo.make_conninfo(settings.default_server_dsn(), dbname=name),
                             autocommit=True) for name in names]
    try:
        for conn in conns:
            conn.execute(SCHEMA)
            conn.execute(PRODUCTION)
        conns[1].execute(NEUTRALIZE)
        yield conns[0], conns[1]
    finally:
        for conn in conns:
            conn.close()
        with psycopg.connect(_admin(), autocommit=True) as admin:
            for name in names:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _remaining(blue: psycopg.Connection[Any], green: psycopg.Connection[Any]) -> list[str]:
    flags = {"Production SMTP": True}
    return neutralization.remaining(blue, green, fence_crons={}, fence_mail=flags, blue_crons={}, blue_mail=flags)


def test_every_trace_is_named_before_it_is_undone(pair: tuple[Any, Any]) -> None:
    blue, green = pair
    found = "\n".join(_remaining(blue, green))
    for trace in ("ir_act_server.webhook_url", "ir_ui_view.active", "iap_account.account_token",
                  "mail.web_push_vapid_private_key", "mail_push_device emptied", "payment_provider.state",
                  "payment_provider.stripe_secret_key", "delivery_carrier.prod_environment/active",
                  "'neutralization - disable emails' present"):
        assert trace in found, f"{trace} not reported in:\n{found}"
    assert "addons/payment_stripe/data/neutralize.sql" in found  # each line names the file that wrote it


def test_undo_puts_blues_values_back_and_none_remains(pair: tuple[Any, Any]) -> None:
    blue, green = pair
    done = neutralization.undo(blue, green)
    assert _remaining(blue, green) == []
    for table in ("ir_act_server", "ir_ui_view", "iap_account", "payment_provider", "delivery_carrier",
                  "mail_push_device"):
        query = sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(table))
        assert green.execute(query).fetchall() == blue.execute(query).fetchall(), table
    assert green.execute("SELECT count(*) FROM ir_mail_server WHERE name LIKE 'neutralization%'").fetchone() == (0,)
    assert green.execute("SELECT value FROM ir_config_parameter WHERE key = 'mail.web_push_vapid_private_key'"
                         ).fetchone() == ("vapid-private-xyz",)
    # The report names what was restored, never a value: many are credentials.
    assert "sk_live_abc" not in repr(done) and "vapid-private-xyz" not in repr(done)
    assert {"module": "base", "table": "ir_mail_server", "dummy_server_removed": 1} in done


def test_a_row_staging_created_keeps_its_values_and_is_reported(pair: tuple[Any, Any]) -> None:
    blue, green = pair
    green.execute("INSERT INTO payment_provider (code, state) VALUES ('adyen', 'disabled')")
    done = neutralization.undo(blue, green)
    [provider] = [d for d in done if d["table"] == "payment_provider" and d["columns"] == ["state"]]
    assert provider["rows_only_on_green"] == 1
    assert green.execute("SELECT state FROM payment_provider WHERE code = 'adyen'").fetchone() == ("disabled",)


def test_the_fence_must_give_green_blues_crons_and_mail_servers(pair: tuple[Any, Any]) -> None:
    blue, green = pair
    neutralization.undo(blue, green)
    found = neutralization.remaining(blue, green, fence_crons={"base.ir_cron_mail": False},
                                     fence_mail={"Production SMTP": False}, blue_crons={"base.ir_cron_mail": True},
                                     blue_mail={"Production SMTP": True})
    assert any(line.startswith("ir_cron 1 cron(s) active on blue") for line in found)
    assert any(line.startswith("ir_mail_server ['Production SMTP'] active on blue") for line in found)


def test_a_database_without_the_modules_is_left_alone(pair: tuple[Any, Any]) -> None:
    blue, green = pair
    for conn in (blue, green):
        conn.execute("DROP TABLE delivery_carrier, iap_account")
    assert not any("delivery_carrier" in line or "iap_account" in line for line in _remaining(blue, green))
    assert not any(d["table"] in ("delivery_carrier", "iap_account") for d in neutralization.undo(blue, green))


@pytest.mark.unit
def test_the_readme_table_names_every_module_the_code_undoes() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("## Nothing of staging's neutralization reaches production"):]
    table = table[:table.index("\n\n", table.index("| module(s) |"))]
    for trace in neutralization.TRACES:
        # the payment providers are listed as "payment_adyen, _aps, _asiapay, ..."
        short = trace.module.removeprefix("payment") if trace.module.startswith("payment_") else trace.module
        assert trace.module in table or short in table, f"{trace.module} missing from the README's table"
