"""``odoo_standin neutralize``: what ``odoo-bin neutralize -d DB`` does to a copy of production.

Modelled on ``odoo/modules/neutralize.py``: the modules whose state is ``installed``,
``to upgrade`` or ``to remove`` in ``ir_module_module`` are looked up, and for each of them
that has a neutralization script (Odoo: ``<module>/data/neutralize.sql``) its statements run,
all in one transaction. The statements below do what Odoo 18's scripts do, for the modules
whose tables the stand-in's schema has:

- base: every outgoing mail server off, plus an active dummy server ("neutralization - disable
  emails", host ``invalid``) so the command line's fallback SMTP is never used; every cron off but
  ``base.autovacuum_job``; ``database.is_neutralized`` set; webhook server actions pointed nowhere;
- web: the "database neutralized" banner view switched on;
- mail: templates no longer tied to a mail server, incoming servers off, the web-push and SFU
  keys deleted, queued pushes and registered devices deleted;
- iap: account tokens suffixed ``+disabled`` (a legacy token longer than 33 characters replaced);
- payment: providers not in test mode disabled; payment_stripe: its keys removed;
- delivery: carriers out of production mode, external carriers archived;
- website: domains removed, the neutralize ribbon on, CDN off, robots.txt disallowing all;
- auth_oauth: providers disabled; google/microsoft calendar: tokens removed, sync stopped;
- cloud_storage(_google/_azure), website_event_jitsi: their credentials' parameters deleted.

``--base-url`` (not an Odoo option) then sets ``web.base.url``, as Odoo.sh does for a staging
copy. ``--stdout`` prints the SQL (``BEGIN; ... COMMIT;``) instead of running it, as Odoo's.
"""

from __future__ import annotations

from typing import Any

import psycopg

_CLOUD_AZURE_KEYS = ("cloud_storage_azure_account_name", "cloud_storage_azure_container_name",
                     "cloud_storage_azure_tenant_id", "cloud_storage_azure_client_id",
                     "cloud_storage_azure_client_secret")


def _delete_params(*keys: str) -> str:
    listed = ", ".join(f"'{key}'" for key in keys)
    return f"DELETE FROM ir_config_parameter WHERE key IN ({listed})"


SCRIPTS: dict[str, tuple[str, ...]] = {
    "base": (
        "UPDATE ir_mail_server SET active = false",
        "INSERT INTO ir_mail_server (name, smtp_host, smtp_port, smtp_encryption, smtp_authentication, active)"
        " VALUES ('neutralization - disable emails', 'invalid', 1025, 'none', 'login', true)",
        "UPDATE ir_cron SET active = false WHERE id NOT IN (SELECT res_id FROM ir_model_data"
        " WHERE model = 'ir.cron' AND module = 'base' AND name = 'autovacuum_job')",
        "INSERT INTO ir_config_parameter (key, value) VALUES ('database.is_neutralized', 'true')"
        " ON CONFLICT (key) DO UPDATE SET value = 'true'",
        "UPDATE ir_act_server SET webhook_url = 'neutralization - disable webhook' WHERE state = 'webhook'",
    ),
    "web": ("UPDATE ir_ui_view SET active = true WHERE key = 'web.neutralize_banner'",),
    "mail": (
        "UPDATE mail_template SET mail_server_id = NULL",
        "UPDATE fetchmail_server SET active = false",
        _delete_params("mail.web_push_vapid_private_key", "mail.web_push_vapid_public_key", "mail.sfu_server_key"),
        "TRUNCATE mail_push",
        "TRUNCATE mail_push_device CASCADE",
    ),
    "iap": (
        r"UPDATE iap_account SET account_token = regexp_replace(account_token, '(\+.*)?$', '+disabled')"
        " WHERE length(account_token) <= 33",
        "UPDATE iap_account SET account_token = 'dummy_value+disabled'"
        " WHERE length(account_token) > 33 AND account_token NOT LIKE '%+disabled'",
    ),
    "payment": ("UPDATE payment_provider SET state = 'disabled' WHERE state NOT IN ('test', 'disabled')",),
    "payment_stripe": ("UPDATE payment_provider SET stripe_secret_key = NULL, stripe_publishable_key = NULL,"
                       " stripe_webhook_secret = NULL",),
    "delivery": (
        "UPDATE delivery_carrier SET prod_environment = false",
        "UPDATE delivery_carrier SET active = false WHERE delivery_type NOT IN ('fixed', 'base_on_rule')",
    ),
    "website": (
        "UPDATE website SET domain = NULL",
        "UPDATE ir_ui_view SET active = true WHERE key = 'website.neutralize_ribbon'",
        "UPDATE website SET cdn_activated = false",
        "UPDATE website SET robots_txt = E'User-agent: *\\nDisallow: /'",
    ),
    "auth_oauth": ("UPDATE auth_oauth_provider SET enabled = false",),
    "google_calendar": ("UPDATE res_users_settings SET google_calendar_rtoken = NULL, google_calendar_token = NULL,"
                        " google_synchronization_stopped = true",),
    "microsoft_calendar": (
        "UPDATE res_users SET microsoft_calendar_token = NULL, microsoft_calendar_rtoken = NULL",
        "UPDATE res_users_settings SET microsoft_calendar_sync_token = NULL,"
        " microsoft_synchronization_stopped = true, microsoft_last_sync_date = NULL",
    ),
    "cloud_storage": (_delete_params("cloud_storage_provider"),),
    "cloud_storage_azure": (_delete_params(*_CLOUD_AZURE_KEYS),),
    "cloud_storage_google": (_delete_params("cloud_storage_google_bucket_name", "cloud_storage_google_account_info"),),
    "website_event_jitsi": (_delete_params("website_jitsi.jitsi_server_domain"),),
}
"""Per module, the statements of its neutralization script."""


def installed_modules(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute("SELECT name FROM ir_module_module WHERE state IN ('installed', 'to upgrade', 'to remove')"
                        " ORDER BY id").fetchall()
    return [row[0] for row in rows]


def statements(modules: list[str]) -> list[str]:
    """The statements that neutralize a database with ``modules`` installed, module by module."""
    return [statement for module in modules for statement in SCRIPTS.get(module, ())]


def neutralize(conninfo: str, base_url: str | None = None) -> list[str]:
    """Neutralize the database in one transaction; return the modules whose scripts ran."""
    with psycopg.connect(conninfo) as conn:
        modules = installed_modules(conn)
        for statement in statements(modules):
            conn.execute(statement)  # type: ignore[arg-type]
        if base_url:
            conn.execute("UPDATE ir_config_parameter SET value = %s WHERE key = 'web.base.url'", (base_url,))
    return [module for module in modules if module in SCRIPTS]


def script(conninfo: str) -> str:
    """The SQL ``neutralize --stdout`` prints: the scripts of the installed modules, in one transaction."""
    with psycopg.connect(conninfo) as conn:
        modules = installed_modules(conn)
    return "\n".join(["BEGIN;", *(s + ";" for s in statements(modules)), "COMMIT;"])
