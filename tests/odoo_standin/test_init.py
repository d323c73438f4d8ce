"""``odoo_standin init``: tables, demo rows, password hashes and filestore -- in PostgreSQL and on disk."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import psycopg
import pytest
from passlib.hash import pbkdf2_sha512

from .conftest import (
    ADMIN_PASSWORD,
    DSN,
    FAST_ROUNDS,
    PASSWORD_ENV,
    SHARED_SIZE,
    Seeded,
    cli,
    connect,
    drop_db,
    init_db,
    unique_db,
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A database as ``init`` left it: no server ever served it (logging in writes to a database)."""
    db = init_db(tmp_path_factory.mktemp("pristine"), *SHARED_SIZE)
    yield db
    drop_db(db.db)


UUID_SQL = "SELECT value FROM ir_config_parameter WHERE key = 'database.uuid'"
AUDIT = ["create_date", "write_date"]
EXPECTED_COLUMNS = {
    # base
    "res_company": ["id", "name", "partner_id", *AUDIT],
    "res_partner": ["id", "name", "email", "company_id", "active", *AUDIT],
    "res_users": ["id", "login", "password", "active", "partner_id", "company_id", *AUDIT,
                  "oauth_provider_id", "oauth_uid", "oauth_access_token",
                  "microsoft_calendar_rtoken", "microsoft_calendar_token", "microsoft_calendar_token_validity"],
    "res_groups": ["id", "name", "share", *AUDIT],
    "res_groups_users_rel": ["gid", "uid"],
    "res_users_log": ["id", "create_uid", "write_uid", *AUDIT],  # one row per login (_update_last_login)
    "res_users_settings": ["id", "user_id", *AUDIT, "google_calendar_rtoken", "google_calendar_token",
                           "google_calendar_token_validity", "google_calendar_sync_token", "google_calendar_cal_id",
                           "google_synchronization_stopped", "microsoft_calendar_sync_token",
                           "microsoft_synchronization_stopped", "microsoft_last_sync_date"],
    "ir_module_module": ["id", "name", "state", "latest_version", "license", "shortdesc", *AUDIT],
    "ir_model_data": ["id", "module", "name", "model", "res_id", "noupdate", *AUDIT],
    "ir_attachment": ["id", "name", "res_model", "res_field", "res_id", "type", "url", "store_fname",
                      "db_datas", "file_size", "checksum", "mimetype", "public", "access_token", *AUDIT],
    "ir_config_parameter": ["id", "key", "value", *AUDIT],
    "ir_act_server": ["id", "name", "type", "model_name", "state", "code", "webhook_url", "usage", *AUDIT],
    "ir_cron": ["id", "ir_actions_server_id", "cron_name", "user_id", "active", "interval_number", "interval_type",
                "nextcall", "lastcall", "priority", *AUDIT],
    "ir_mail_server": ["id", "name", "smtp_host", "smtp_port", "smtp_user", "smtp_pass", "smtp_encryption",
                       "smtp_authentication", "sequence", "active", *AUDIT],
    "ir_ui_view": ["id", "name", "key", "type", "mode", "inherit_id", "priority", "arch_db", "active", *AUDIT],
    # mail
    "fetchmail_server": ["id", "name", "server", "port", "server_type", "user", "password", "state", "active",
                         *AUDIT],
    "mail_template": ["id", "name", "model", "subject", "mail_server_id", *AUDIT],
    "mail_push_device": ["id", "partner_id", "endpoint", "keys", *AUDIT],
    "mail_push": ["id", "mail_push_device_id", "payload", *AUDIT],
    # iap, payment (+ payment_stripe), delivery, website, auth_oauth
    "iap_service": ["id", "name", "technical_name", "unit_name", *AUDIT],
    "iap_account": ["id", "name", "service_id", "account_token", "state", *AUDIT],
    "payment_provider": ["id", "name", "code", "state", *AUDIT, "stripe_publishable_key", "stripe_secret_key",
                         "stripe_webhook_secret"],
    "delivery_carrier": ["id", "name", "delivery_type", "prod_environment", "sequence", "active", *AUDIT],
    "website": ["id", "name", "domain", "sequence", "cdn_activated", "cdn_url", "robots_txt", *AUDIT],
    "auth_oauth_provider": ["id", "name", "client_id", "enabled", "auth_endpoint", "validation_endpoint", "scope",
                            "body", *AUDIT],
}


def test_tables_have_odoo_names_and_columns(pristine: Seeded) -> None:
    with connect(pristine.db) as conn:
        rows = conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position").fetchall()
    found: dict[str, list[str]] = {}
    for table, column in rows:
        found.setdefault(table, []).append(column)
    assert found == EXPECTED_COLUMNS


def test_summary_line_and_no_secret_in_output(tmp_path, scratch_dbs) -> None:
    name = unique_db()
    scratch_dbs.append(name)
    result = cli("init", "--dsn", DSN, "--db", name, "--data-dir", str(tmp_path), "--admin-password-env",
                 PASSWORD_ENV, "--pbkdf2-rounds", FAST_ROUNDS, "--users", "2", "--partners", "3",
                 "--attachments", "4", "--attachment-size", "100")
    assert result.returncode == 0, result.stderr
    assert ADMIN_PASSWORD not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "db": name, "data_dir": str(tmp_path), "filestore": str(tmp_path / "filestore" / name),
        "users": 2, "partners": 3, "attachments": 4, "bytes": 400,
    }


def test_demo_rows(pristine: Seeded) -> None:
    with connect(pristine.db) as conn:
        users = conn.execute("SELECT id, login, active, partner_id, company_id FROM res_users "
                             "ORDER BY id").fetchall()
        partners = conn.execute("SELECT count(*) FROM res_partner").fetchone()
        company = conn.execute("SELECT id, partner_id FROM res_company").fetchall()
        modules = conn.execute("SELECT name, state, license, latest_version FROM ir_module_module "
                               "ORDER BY id").fetchall()
        params = dict(conn.execute("SELECT key, value FROM ir_config_parameter").fetchall())
        crons = conn.execute("SELECT d.module || '.' || d.name FROM ir_cron c JOIN ir_model_data d "
                             "ON d.model = 'ir.cron' AND d.res_id = c.id").fetchall()
        admin_xmlid = conn.execute("SELECT res_id FROM ir_model_data WHERE module = 'base' "
                                   "AND name = 'user_admin'").fetchone()
    # Odoo's conventions: __system__ is uid 1 (archived), admin uid 2; + 2 demo users.
    assert [(u[0], u[1], u[2]) for u in users] == [(1, "__system__", False), (2, "admin", True),
                                                   (3, "user1", True), (4, "user2", True)]
    assert {u[4] for u in users} == {1} and company == [(1, 1)]
    assert admin_xmlid == (2,)
    assert partners == (3 + 2 + 20,)  # company, OdooBot, admin; demo users; demo contacts
    assert [m[0] for m in modules] == ["base", "web", "mail", "contacts", "sale", "iap", "payment", "payment_stripe",
                                       "delivery", "delivery_dhl", "website", "auth_oauth", "google_calendar",
                                       "microsoft_calendar", "cloud_storage", "cloud_storage_google"]
    assert {(m[1], m[2]) for m in modules} == {("installed", "LGPL-3")}
    assert dict((m[0], m[3]) for m in modules)["base"] == "17.0.1.3"
    assert set(params) == {"database.uuid", "database.secret", "database.create_date", "web.base.url",
                           "mail.web_push_vapid_private_key", "mail.web_push_vapid_public_key", "mail.sfu_server_key",
                           "cloud_storage_provider", "cloud_storage_google_bucket_name",
                           "cloud_storage_google_account_info"}
    assert params["web.base.url"] == "http://localhost"
    assert ("base.autovacuum_job",) in crons and ("mail.ir_cron_mail_scheduler_action",) in crons


def test_module_state_is_constrained(pristine: Seeded) -> None:
    with connect(pristine.db) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE ir_module_module SET state = 'broken' WHERE name = 'base'")


def test_passwords_are_pbkdf2_sha512(pristine: Seeded) -> None:
    with connect(pristine.db) as conn:
        hashes = dict(conn.execute("SELECT login, password FROM res_users WHERE active").fetchall())
    assert hashes["admin"].startswith(f"$pbkdf2-sha512${FAST_ROUNDS}$")
    assert pbkdf2_sha512.verify(ADMIN_PASSWORD, hashes["admin"])
    for login in ("user1", "user2"):
        assert hashes[login].startswith("$pbkdf2-sha512$")
        assert not pbkdf2_sha512.verify(ADMIN_PASSWORD, hashes[login])
    assert hashes["user1"] != hashes["user2"]


def test_filestore_layout_and_checksums(pristine: Seeded) -> None:
    with connect(pristine.db) as conn:
        rows = conn.execute("SELECT id, store_fname, checksum, file_size, type, res_model, public, db_datas "
                            "FROM ir_attachment ORDER BY id").fetchall()
    assert len(rows) == 12
    assert [r[0] for r in rows if r[6]] == [1, 11]
    total = 0
    for _, store_fname, checksum, size, kind, res_model, _, db_datas in rows:
        assert (kind, res_model, db_datas) == ("binary", "res.partner", None)
        assert store_fname == f"{checksum[:2]}/{checksum}"
        data = (pristine.filestore / store_fname).read_bytes()
        assert hashlib.sha1(data).hexdigest() == checksum
        assert len(data) == size == 4096
        total += size
    on_disk = [p for p in pristine.filestore.rglob("*") if p.is_file()]
    assert len(on_disk) == 12 and len({r[2] for r in rows}) == 12
    assert pristine.summary["bytes"] == total


def test_enterprise_adds_web_enterprise(tmp_path, scratch_dbs) -> None:
    db = init_db(tmp_path, "--enterprise", "--modules", "base,web", "--users", "1", "--partners", "0",
                 "--attachments", "0")
    scratch_dbs.append(db.db)
    with connect(db.db) as conn:
        modules = conn.execute("SELECT name, license FROM ir_module_module ORDER BY id").fetchall()
    assert modules == [("base", "LGPL-3"), ("web", "LGPL-3"), ("web_enterprise", "OEEL-1")]


def test_refuses_existing_database_unless_replace(tmp_path, scratch_dbs) -> None:
    db = init_db(tmp_path, "--users", "1", "--partners", "1", "--attachments", "2", "--attachment-size", "10")
    scratch_dbs.append(db.db)
    old_files = {p for p in db.filestore.rglob("*") if p.is_file()}
    args = ["init", "--dsn", DSN, "--db", db.db, "--data-dir", str(tmp_path), "--admin-password-env",
            PASSWORD_ENV, "--pbkdf2-rounds", FAST_ROUNDS, "--users", "1", "--partners", "1",
            "--attachments", "2", "--attachment-size", "10"]
    refused = cli(*args)
    assert refused.returncode == 1 and "--replace" in refused.stderr
    with connect(db.db) as conn:
        uuid_before = conn.execute(UUID_SQL).fetchone()
        # An open session must not block --replace (other connections are terminated).
        replaced = cli(*args, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    with connect(db.db) as conn:
        uuid_after = conn.execute(UUID_SQL).fetchone()
    assert uuid_after != uuid_before
    new_files = {p for p in db.filestore.rglob("*") if p.is_file()}
    assert len(new_files) == 2 and not old_files & new_files


def test_missing_password_variable_is_an_error(tmp_path) -> None:
    name = unique_db()
    result = cli("init", "--dsn", DSN, "--db", name, "--data-dir", str(tmp_path),
                 "--admin-password-env", PASSWORD_ENV, password=None)
    assert result.returncode == 2
    assert PASSWORD_ENV in result.stderr
    with psycopg.connect(DSN, dbname="postgres") as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
