"""A production database's *live* settings: what ``odoo-bin neutralize`` switches off on a copy.

``init`` seeds them as a live production has them, for each installed module that has them: an
active outgoing mail server with credentials (templates sending through it), active crons and a
webhook server action, incoming mail, web-push keys and a registered device, IAP accounts with
tokens (a current one and a legacy one), payment providers enabled with Stripe keys, a carrier
in production mode, a website with its domain and CDN, an enabled OAuth provider, calendar
synchronisation tokens and cloud storage credentials. A promotion that starts from a
neutralized staging copy can then be checked for what it brings back and what it does not.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

Cursor = psycopg.Cursor[Any]
XmlId = tuple[str, str, str, int]

# (module, xml name, cron_name, interval_number, interval_type): a few of Odoo's real crons.
CRONS = (
    ("base", "autovacuum_job", "Base: Auto-vacuum internal data", 1, "days"),
    ("base", "ir_cron_res_users_deletion", "Base: Portal Users Deletion", 1, "days"),
    ("mail", "ir_cron_mail_scheduler_action", "Mail: Email Queue Manager", 1, "hours"),
    ("mail", "ir_cron_module_update_notification", "Publisher: Update Notification", 1, "weeks"),
    ("sale", "send_invoice_cron", "automatic invoicing: send ready invoice", 1, "days"),
)
ADMIN_UID = 2


def _one(cur: Cursor, query: str, params: tuple[Any, ...] = ()) -> int:
    row = cur.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def _param(cur: Cursor, key: str, value: str) -> None:
    cur.execute("INSERT INTO ir_config_parameter (key, value) VALUES (%s, %s)", (key, value))


def seed(cur: Cursor, modules: Collection[str], now: datetime) -> list[XmlId]:
    """Insert every installed module's live settings; return the external ids to record."""
    xmlids: list[XmlId] = []
    steps: list[tuple[str, Callable[[Cursor, datetime, list[XmlId]], None]]] = [
        ("base", _base), ("web", _web), ("mail", _mail), ("iap", _iap), ("payment", _payment),
        ("delivery", _delivery), ("website", _website), ("auth_oauth", _oauth),
        ("google_calendar", _google_calendar), ("microsoft_calendar", _microsoft_calendar),
        ("cloud_storage", _cloud_storage),
    ]
    for module, step in steps:
        if module in modules:
            step(cur, now, xmlids)
    _crons(cur, modules, now, xmlids)
    if "payment_stripe" in modules:
        cur.execute("UPDATE payment_provider SET stripe_publishable_key = %s, stripe_secret_key = %s,"
                    " stripe_webhook_secret = %s WHERE code = 'stripe'",
                    (f"pk_live_{secrets.token_hex(12)}", f"sk_live_{secrets.token_hex(12)}",
                     f"whsec_{secrets.token_hex(12)}"))
    if "cloud_storage_google" in modules:
        _param(cur, "cloud_storage_google_bucket_name", "example-odoo-attachments")
        account = json.dumps({"type": "service_account", "private_key_id": secrets.token_hex(10)})
        _param(cur, "cloud_storage_google_account_info", account)
    return xmlids


def _base(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    cur.execute("INSERT INTO ir_mail_server (name, smtp_host, smtp_port, smtp_user, smtp_pass, smtp_encryption,"
                " sequence) VALUES ('localhost', 'localhost', 25, 'mailer', %s, 'starttls', 10)",
                (secrets.token_urlsafe(12),))
    action = _one(cur, "INSERT INTO ir_act_server (name, model_name, state, webhook_url) VALUES (%s,"
                       " 'res.partner', 'webhook', 'https://hooks.example.com/odoo/contacts') RETURNING id",
                  (Jsonb({"en_US": "Send new contacts to the CRM"}),))
    xmlids.append(("__custom__", "webhook_new_contacts", "ir.actions.server", action))


def _crons(cur: Cursor, modules: Collection[str], now: datetime, xmlids: list[XmlId]) -> None:
    """Active crons, each running its own server action, due in an hour."""
    for module, xml_name, cron_name, number, unit in CRONS:
        if module not in modules:
            continue
        action = _one(cur, "INSERT INTO ir_act_server (name, model_name, state, code, usage) VALUES (%s,"
                           " 'ir.cron', 'code', 'model._run()', 'ir_cron') RETURNING id",
                      (Jsonb({"en_US": cron_name}),))
        cron = _one(cur, "INSERT INTO ir_cron (ir_actions_server_id, cron_name, user_id, interval_number,"
                         " interval_type, nextcall) VALUES (%s, %s, 1, %s, %s, %s) RETURNING id",
                    (action, cron_name, number, unit, now + timedelta(hours=1)))
        xmlids += [(module, xml_name, "ir.cron", cron), (module, f"{xml_name}_ir_actions_server",
                                                         "ir.actions.server", action)]


def _view(cur: Cursor, xmlids: list[XmlId], module: str, name: str, title: str, arch: str) -> None:
    view = _one(cur, "INSERT INTO ir_ui_view (name, key, type, mode, arch_db, active) VALUES (%s, %s, 'qweb',"
                     " 'extension', %s, false) RETURNING id", (title, f"{module}.{name}", Jsonb({"en_US": arch})))
    xmlids.append((module, name, "ir.ui.view", view))


def _web(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    _view(cur, xmlids, "web", "neutralize_banner", "Neutralize Banner",
          '<data><xpath expr="//body" position="inside"><div id="oe_neutralize_banner"/></xpath></data>')


def _mail(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    cur.execute("INSERT INTO fetchmail_server (name, server, port, \"user\", password, state) "
                "VALUES ('Catchall', 'imap.localhost', 993, 'catchall', %s, 'done')", (secrets.token_urlsafe(12),))
    cur.execute("INSERT INTO mail_template (name, model, subject, mail_server_id) VALUES (%s, 'res.partner', %s,"
                " (SELECT min(id) FROM ir_mail_server))",
                (Jsonb({"en_US": "Welcome"}), Jsonb({"en_US": "Welcome to YourCompany"})))
    device = _one(cur, "INSERT INTO mail_push_device (partner_id, endpoint, keys) VALUES (3, %s, %s) RETURNING id",
                  (f"https://push.example.com/send/{secrets.token_hex(8)}", '{"p256dh": "x", "auth": "y"}'))
    cur.execute("INSERT INTO mail_push (mail_push_device_id, payload) VALUES (%s, '{\"title\": \"New message\"}')",
                (device,))
    _param(cur, "mail.web_push_vapid_private_key", secrets.token_urlsafe(32))
    _param(cur, "mail.web_push_vapid_public_key", secrets.token_urlsafe(64))
    _param(cur, "mail.sfu_server_key", secrets.token_hex(16))


def _iap(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    """A current token (32 characters) and a legacy one from before Odoo 17 (a 36-character UUID)."""
    for technical, name, token in (("sms", "SMS", secrets.token_hex(16)),
                                   ("partner_autocomplete", "Partner Autocomplete", _uuid())):
        service = _one(cur, "INSERT INTO iap_service (name, technical_name, unit_name) VALUES (%s, %s, 'Credits')"
                            " RETURNING id", (name, technical))
        cur.execute("INSERT INTO iap_account (name, service_id, account_token, state) VALUES (%s, %s, %s,"
                    " 'registered')", (name, service, token))


def _uuid() -> str:
    return str(uuid.uuid4())


def _payment(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    for code, state in (("stripe", "enabled"), ("wire_transfer", "enabled"), ("demo", "disabled")):
        pid = _one(cur, "INSERT INTO payment_provider (name, code, state) VALUES (%s, %s, %s) RETURNING id",
                   (Jsonb({"en_US": code.replace("_", " ").title()}), code, state))
        xmlids.append(("payment", f"payment_provider_{code}", "payment.provider", pid))


def _delivery(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    for name, kind, production in (("Standard delivery", "fixed", False), ("DHL Express", "dhl", True)):
        cur.execute("INSERT INTO delivery_carrier (name, delivery_type, prod_environment) VALUES (%s, %s, %s)",
                    (Jsonb({"en_US": name}), kind, production))


def _website(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    cur.execute("INSERT INTO website (name, domain, cdn_activated, cdn_url, robots_txt) VALUES ('My Website',"
                " 'https://www.example.com', true, 'https://cdn.example.com', %s)", ("User-agent: *\nAllow: /",))
    _view(cur, xmlids, "website", "neutralize_ribbon", "Neutralize Ribbon",
          '<data><xpath expr="//body" position="inside"><div id="website_neutralize_ribbon"/></xpath></data>')


def _oauth(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    cur.execute("INSERT INTO auth_oauth_provider (name, client_id, enabled, auth_endpoint, validation_endpoint,"
                " scope, body) VALUES ('Google OAuth2', %s, true, 'https://accounts.google.com/o/oauth2/auth',"
                " 'https://www.googleapis.com/oauth2/v3/tokeninfo', 'openid profile email', 'Log in with Google')",
                (f"{secrets.token_hex(6)}.apps.googleusercontent.com",))


def _settings_row(cur: Cursor) -> None:
    cur.execute("INSERT INTO res_users_settings (user_id) VALUES (%s) ON CONFLICT (user_id) DO NOTHING",
                (ADMIN_UID,))


def _google_calendar(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    _settings_row(cur)
    cur.execute("UPDATE res_users_settings SET google_calendar_rtoken = %s, google_calendar_token = %s,"
                " google_calendar_token_validity = %s, google_synchronization_stopped = false WHERE user_id = %s",
                (secrets.token_urlsafe(24), secrets.token_urlsafe(24), now + timedelta(hours=1), ADMIN_UID))


def _microsoft_calendar(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    _settings_row(cur)
    cur.execute("UPDATE res_users SET microsoft_calendar_rtoken = %s, microsoft_calendar_token = %s,"
                " microsoft_calendar_token_validity = %s WHERE id = %s",
                (secrets.token_urlsafe(24), secrets.token_urlsafe(24), now + timedelta(hours=1), ADMIN_UID))
    cur.execute("UPDATE res_users_settings SET microsoft_calendar_sync_token = %s,"
                " microsoft_synchronization_stopped = false, microsoft_last_sync_date = %s WHERE user_id = %s",
                (secrets.token_urlsafe(16), now, ADMIN_UID))


def _cloud_storage(cur: Cursor, now: datetime, xmlids: list[XmlId]) -> None:
    _param(cur, "cloud_storage_provider", "google")
