"""What the promotion reads from an Odoo database, with Odoo's own table and column names.

Kept to queries that hold on every Odoo from 16 to 19 (see ODOO_FACTS in the design notes):
``ir_module_module`` for modules, versions and licenses, ``ir_config_parameter`` for the
neutralization flag, ``ir_attachment`` for filestore samples.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg

PENDING_MODULE_STATES = ("to install", "to upgrade", "to remove")


def installed_modules(conn: psycopg.Connection[Any]) -> tuple[dict[str, str], dict[str, str]]:
    """({name: latest_version}, {name: license}) of installed modules."""
    rows = conn.execute(
        "SELECT name, coalesce(latest_version, ''), coalesce(license, '') FROM ir_module_module"
        " WHERE state = 'installed' ORDER BY name"
    ).fetchall()
    return {r[0]: r[1] for r in rows}, {r[0]: r[2] for r in rows}


def pending_modules(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT name, state FROM ir_module_module WHERE state = ANY(%s) ORDER BY name", (list(PENDING_MODULE_STATES),)
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def odoo_series(modules: dict[str, str]) -> str:
    """'17.0' from base's latest_version '17.0.1.3' (Odoo prefixes module versions with the series)."""
    parts = modules.get("base", "").split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else "unknown"


def addons_hash(modules: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(modules, sort_keys=True).encode()).hexdigest()


def config_parameter(conn: psycopg.Connection[Any], key: str) -> str | None:
    row = conn.execute("SELECT value FROM ir_config_parameter WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


BASE_URL_FREEZE = "web.base.url.freeze"


def freeze_base_url(conn: psycopg.Connection[Any]) -> bool:
    """Set ``web.base.url.freeze`` unless it is set; True if this call set it (and must lift it again).

    Odoo rewrites ``web.base.url`` to the URL a system user logs in through, unless it is frozen.
    """
    row = conn.execute("INSERT INTO ir_config_parameter (key, value) VALUES (%s, 'True')"
                       " ON CONFLICT (key) DO NOTHING RETURNING id", (BASE_URL_FREEZE,)).fetchone()
    return row is not None


def unfreeze_base_url(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DELETE FROM ir_config_parameter WHERE key = %s", (BASE_URL_FREEZE,))


def attachment_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM ir_attachment WHERE type = 'binary' AND store_fname IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


def sample_attachment(conn: psycopg.Connection[Any]) -> tuple[int, str] | None:
    """(id, sha1 checksum) of one stored binary attachment, or None if there is none."""
    row = conn.execute(
        "SELECT id, checksum FROM ir_attachment WHERE type = 'binary' AND store_fname IS NOT NULL"
        " AND checksum IS NOT NULL ORDER BY id LIMIT 1"
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None
