"""``odoo_standin neutralize``: what ``odoo-bin neutralize -d DB`` does to a copy of production.

Odoo runs each installed module's ``data/neutralize.sql`` (``odoo/modules/neutralize.py``):
base deactivates every cron but the autovacuum job and every outgoing mail server and sets
``database.is_neutralized``; mail deactivates incoming servers; payment providers leave
production mode. Odoo.sh makes every staging database this way, which is why a promotion must
carry production's live settings back over (the promotion pipeline does; this only prepares the
situation it has to handle).
"""

from __future__ import annotations

import psycopg

STATEMENTS = (
    "UPDATE ir_cron SET active = false WHERE id NOT IN (SELECT res_id FROM ir_model_data"
    " WHERE model = 'ir.cron' AND module = 'base' AND name = 'autovacuum_job')",
    "UPDATE ir_mail_server SET active = false",
    "UPDATE fetchmail_server SET active = false",
    "UPDATE payment_provider SET state = 'test' WHERE state = 'enabled'",
    "INSERT INTO ir_config_parameter (key, value) VALUES ('database.is_neutralized', 'true')"
    " ON CONFLICT (key) DO UPDATE SET value = 'true'",
)


def neutralize(conninfo: str, base_url: str | None = None) -> None:
    with psycopg.connect(conninfo) as conn:
        for statement in STATEMENTS:
            conn.execute(statement)  # type: ignore[arg-type]
        if base_url:
            conn.execute("UPDATE ir_config_parameter SET value = %s WHERE key = 'web.base.url'", (base_url,))
