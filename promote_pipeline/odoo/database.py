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
from psycopg import sql

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



def parameters(conn: psycopg.Connection[Any], keys: list[str]) -> dict[str, str]:
    rows = conn.execute("SELECT key, value FROM ir_config_parameter WHERE key = ANY(%s)", (keys,)).fetchall()
    return {r[0]: r[1] for r in rows}


# Odoo's processes cache ir.config_parameter values (ormcache, the 'default' cache) and clear the cache when one
# of these sequences moves (odoo/modules/registry.py, check_signaling): Odoo 17+ names it per cache, 16 has one.
_CACHE_SIGNALING = ("base_cache_signaling_default", "base_cache_signaling")


def signal_cache_change(conn: psycopg.Connection[Any]) -> None:
    """Tell a running Odoo's workers that cached values changed, as Odoo itself does after a write: a value set
    by SQL while Odoo runs is otherwise not seen until each worker's cache is cleared for another reason."""
    rows = conn.execute("SELECT sequence_name FROM information_schema.sequences WHERE sequence_name = ANY(%s)",
                        (list(_CACHE_SIGNALING),)).fetchall()
    for (name,) in rows:
        conn.execute("SELECT nextval(%s)", (name,))


def set_parameter(conn: psycopg.Connection[Any], key: str, value: str | None) -> None:
    """Set ``key`` (None: remove it), as ``ir.config_parameter.set_param`` does."""
    if value is None:
        conn.execute("DELETE FROM ir_config_parameter WHERE key = %s", (key,))
        return
    updated = conn.execute("UPDATE ir_config_parameter SET value = %s WHERE key = %s", (value, key))
    if updated.rowcount == 0:
        conn.execute("INSERT INTO ir_config_parameter (key, value) VALUES (%s, %s)", (key, value))


def attachment_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM ir_attachment WHERE type = 'binary' AND store_fname IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


_STORED = "type = 'binary' AND store_fname IS NOT NULL AND checksum IS NOT NULL"
# A user's file: attached to a record (res_model), not a binary field's content (res_field: images, icons),
# not the framework's own data (ir.* models: menus, views, modules). The newest first: what users last uploaded.
_USERS = _STORED + " AND res_model IS NOT NULL AND res_field IS NULL AND res_model NOT LIKE 'ir.%%'"


def sample_attachment(conn: psycopg.Connection[Any]) -> tuple[int, str, str] | None:
    """(id, sha1 checksum, "user's" or "stored") of one stored binary attachment: a user's file when there is
    one (base data such as flag images proves less), else any; None if there is none."""
    for kind, where, order in (("user's", _USERS, "id DESC"), ("stored", _STORED, "id")):
        row = conn.execute(f"SELECT id, checksum FROM ir_attachment WHERE {where} ORDER BY {order} LIMIT 1").fetchone()
        if row:
            return int(row[0]), str(row[1]), kind
    return None


# -- freezing production (``--freeze-blue``) ---------------------------------------------------------------
# PostgreSQL's own read-only mode, per database: every new session starts read-only, so any INSERT, UPDATE or
# DELETE fails with ReadOnlySqlTransaction, which Odoo (and the stand-in) return to the user as an error. Existing
# sessions keep the setting they started with, so they are ended: Odoo's pool (and PgBouncer) open new ones.
# The promoter's own session on the database is kept (``pg_backend_pid``), and its later writes (blue's crons
# turned off at cutover) say READ WRITE for themselves.
_OTHER_SESSIONS = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                   " WHERE datname = current_database() AND pid <> pg_backend_pid()")


def freeze(conn: psycopg.Connection[Any]) -> int:
    """Make the connected database read-only for every new session and end the others; returns how many ended.
    ``conn`` must be in autocommit mode (ALTER DATABASE and the terminations take effect at once)."""
    db = conn.execute("SELECT current_database()").fetchone()
    assert db is not None
    conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
        sql.Identifier(db[0])))
    conn.execute("SET default_transaction_read_only = off")  # this session stays writable: it fences blue
    row = conn.execute(_OTHER_SESSIONS).fetchone()
    return int(row[0]) if row else 0


def thaw(conn: psycopg.Connection[Any]) -> int:
    """Undo ``freeze``: new sessions writable again, and the read-only sessions opened meanwhile ended (they would
    stay read-only for their life); returns how many ended. Harmless on a database that was never frozen."""
    conn.execute("SET default_transaction_read_only = off")  # a session opened while frozen starts read-only
    db = conn.execute("SELECT current_database()").fetchone()
    assert db is not None
    conn.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(
        sql.Identifier(db[0])))
    row = conn.execute(_OTHER_SESSIONS).fetchone()
    return int(row[0]) if row else 0


def frozen(conn: psycopg.Connection[Any]) -> bool:
    """True while the connected database makes new sessions read-only (``freeze`` in effect)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
        " WHERE d.datname = current_database() AND s.setrole = 0"
        " AND 'default_transaction_read_only=on' = ANY(s.setconfig))").fetchone()
    return bool(row and row[0])
