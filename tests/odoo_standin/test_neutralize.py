"""``odoo_standin neutralize`` does to a copy what ``odoo-bin neutralize`` does: each installed module's script."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from .conftest import DSN, Seeded, Server, cli, connect, init_db

DUMMY_SERVER = "neutralization - disable emails"


def _neutralize(seeded: Seeded, *extra: str) -> None:
    result = cli("neutralize", "--dsn", DSN, "--db", seeded.db, *extra)
    assert result.returncode == 0, result.stderr


def _rows(db: str, query: str) -> list[tuple[Any, ...]]:
    with connect(db) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def test_neutralize_turns_off_crons_mail_and_payments_and_sets_the_flag(tmp_path: Path,
                                                                        scratch_dbs: list[str]) -> None:
    seeded = init_db(tmp_path)
    scratch_dbs.append(seeded.db)
    _neutralize(seeded, "--base-url", "http://staging.example")
    with connect(seeded.db) as conn:
        active_crons = conn.execute(
            "SELECT d.name FROM ir_cron c JOIN ir_model_data d ON d.model = 'ir.cron' AND d.res_id = c.id"
            " WHERE c.active").fetchall()
        assert active_crons == [("autovacuum_job",)]
        # Production's servers are off; the one active server is Odoo's dummy, which sends nowhere.
        assert conn.execute("SELECT name, smtp_host, smtp_port FROM ir_mail_server WHERE active").fetchall() == [
            (DUMMY_SERVER, "invalid", 1025)]
        assert conn.execute("SELECT count(*) FROM ir_mail_server WHERE NOT active").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM fetchmail_server WHERE active").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM payment_provider WHERE state = 'enabled'").fetchone() == (0,)
        params = dict(conn.execute("SELECT key, value FROM ir_config_parameter").fetchall())
    assert params["database.is_neutralized"] == "true"
    assert params["web.base.url"] == "http://staging.example"


def test_production_is_live_until_neutralized(tmp_path: Path, scratch_dbs: list[str]) -> None:
    """What the seed makes live, and what each installed module's script then switches off."""
    seeded = init_db(tmp_path, "--users", "1", "--partners", "0", "--attachments", "0")
    scratch_dbs.append(seeded.db)
    db = seeded.db
    live = {
        "webhook": "SELECT webhook_url FROM ir_act_server WHERE state = 'webhook'",
        "banner": "SELECT key, active FROM ir_ui_view ORDER BY key",
        "iap": "SELECT name, account_token FROM iap_account ORDER BY id",
        "template_server": "SELECT count(*) FROM mail_template WHERE mail_server_id IS NOT NULL",
        "push": "SELECT (SELECT count(*) FROM mail_push), (SELECT count(*) FROM mail_push_device)",
        "providers": "SELECT code, state, stripe_secret_key IS NOT NULL FROM payment_provider ORDER BY id",
        "carriers": "SELECT delivery_type, prod_environment, active FROM delivery_carrier ORDER BY id",
        "website": "SELECT domain, cdn_activated, robots_txt FROM website",
        "oauth": "SELECT enabled FROM auth_oauth_provider",
        "calendar": "SELECT google_calendar_token IS NOT NULL, google_synchronization_stopped,"
                    " microsoft_calendar_sync_token IS NOT NULL FROM res_users_settings",
        "ms_token": "SELECT count(*) FROM res_users WHERE microsoft_calendar_token IS NOT NULL",
        "keys": "SELECT key FROM ir_config_parameter WHERE key LIKE 'mail.%' OR key LIKE 'cloud_storage%' ORDER BY key",
    }
    before = {name: _rows(db, query) for name, query in live.items()}
    assert before["webhook"] == [("https://hooks.example.com/odoo/contacts",)]
    assert before["banner"] == [("web.neutralize_banner", False), ("website.neutralize_ribbon", False)]
    assert [len(token) for _, token in before["iap"]] == [32, 36]
    assert before["template_server"] == [(1,)] and before["push"] == [(1, 1)]
    assert before["providers"] == [("stripe", "enabled", True), ("wire_transfer", "enabled", False),
                                   ("demo", "disabled", False)]
    assert before["carriers"] == [("fixed", False, True), ("dhl", True, True)]
    assert before["website"] == [("https://www.example.com", True, "User-agent: *\nAllow: /")]
    assert before["oauth"] == [(True,)] and before["calendar"] == [(True, False, True)] and before["ms_token"] == [(1,)]
    assert len(before["keys"]) == 6

    _neutralize(seeded)
    after = {name: _rows(db, query) for name, query in live.items()}
    assert after["webhook"] == [("neutralization - disable webhook",)]
    assert after["banner"] == [("web.neutralize_banner", True), ("website.neutralize_ribbon", True)]
    current, legacy = before["iap"][0][1], before["iap"][1][1]
    assert after["iap"] == [("SMS", f"{current}+disabled"), ("Partner Autocomplete", "dummy_value+disabled")]
    assert legacy not in str(after["iap"])
    assert after["template_server"] == [(0,)] and after["push"] == [(0, 0)]
    assert after["providers"] == [("stripe", "disabled", False), ("wire_transfer", "disabled", False),
                                  ("demo", "disabled", False)]
    assert after["carriers"] == [("fixed", False, True), ("dhl", False, False)]
    assert after["website"] == [(None, False, "User-agent: *\nDisallow: /")]
    assert after["oauth"] == [(False,)] and after["calendar"] == [(False, True, False)] and after["ms_token"] == [(0,)]
    assert after["keys"] == []

    _neutralize(seeded)  # a second run changes nothing more (Odoo's scripts are idempotent but for the dummy)
    assert _rows(db, live["iap"]) == after["iap"]


def test_only_installed_modules_scripts_run(tmp_path: Path, scratch_dbs: list[str]) -> None:
    small = init_db(tmp_path / "small", "--modules", "base,web", "--users", "1", "--partners", "0",
                    "--attachments", "0")
    scratch_dbs.append(small.db)
    _neutralize(small)  # no mail, payment... tables: their scripts must not run
    assert _rows(small.db, "SELECT value FROM ir_config_parameter WHERE key = 'database.is_neutralized'") == [
        ("true",)]

    full = init_db(tmp_path / "full", "--users", "1", "--partners", "0", "--attachments", "0")
    scratch_dbs.append(full.db)
    with connect(full.db) as conn:  # Odoo runs the scripts of 'installed', 'to upgrade' and 'to remove' modules
        conn.execute("UPDATE ir_module_module SET state = 'uninstalled' WHERE name = 'payment'")
        conn.execute("UPDATE ir_module_module SET state = 'to upgrade' WHERE name = 'auth_oauth'")
        conn.execute("UPDATE ir_module_module SET state = 'to install' WHERE name = 'delivery'")
    _neutralize(full)
    assert _rows(full.db, "SELECT code, state FROM payment_provider WHERE state = 'enabled' ORDER BY id") == [
        ("stripe", "enabled"), ("wire_transfer", "enabled")]
    assert _rows(full.db, "SELECT enabled FROM auth_oauth_provider") == [(False,)]
    assert _rows(full.db, "SELECT count(*) FROM delivery_carrier WHERE prod_environment") == [(1,)]


def test_stdout_prints_the_script_and_changes_nothing(tmp_path: Path, scratch_dbs: list[str]) -> None:
    seeded = init_db(tmp_path, "--modules", "base,web,mail", "--users", "1", "--partners", "0",
                     "--attachments", "0")
    scratch_dbs.append(seeded.db)
    result = cli("neutralize", "--dsn", DSN, "--db", seeded.db, "--stdout")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "BEGIN;" and lines[-1] == "COMMIT;"
    assert any(DUMMY_SERVER in line for line in lines) and any("fetchmail_server" in line for line in lines)
    assert not any("payment_provider" in line for line in lines)
    assert _rows(seeded.db, "SELECT count(*) FROM ir_config_parameter WHERE key = 'database.is_neutralized'") == [
        (0,)]


def test_the_banner_shows_on_a_neutralized_database(tmp_path: Path, scratch_dbs: list[str]) -> None:
    seeded = init_db(tmp_path, "--modules", "base,web", "--users", "1", "--partners", "0", "--attachments", "0")
    scratch_dbs.append(seeded.db)
    server = Server(seeded).start()
    try:
        live = httpx.get(f"{server.url}/web/login", timeout=60)
        _neutralize(seeded)
        neutralized = httpx.get(f"{server.url}/web/login", timeout=60)
    finally:
        server.stop()
    assert live.status_code == neutralized.status_code == 200
    assert "oe_neutralize_banner" not in live.text and "noindex" not in live.text
    assert 'id="oe_neutralize_banner"' in neutralized.text
    assert '<meta name="robots" content="noindex, nofollow"/>' in neutralized.text
