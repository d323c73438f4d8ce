"""What the promotion reads from an Odoo database, with Odoo's own table and column names.

Kept to queries that hold on every Odoo from 16 to 19 (see ODOO_FACTS in the design notes):
``ir_module_module`` for modules, versions and licenses, ``ir_config_parameter`` for the
neutralization flag, ``ir_attachment`` for filestore samples.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
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
# Two locks, because one is not enough for Odoo 18. PostgreSQL's read-only default for the database
# (``default_transaction_read_only``) refuses writes of a session that begins plain transactions (as the
# stand-in used to), but Odoo 18 opens its cursors with ``set_session(readonly=False)`` and psycopg2
# then begins every transaction READ WRITE, which overrides the default. So the freeze also revokes the
# deployment role's write privileges (INSERT, UPDATE, DELETE, TRUNCATE on its tables, UPDATE on its sequences):
# a privilege is checked on every statement whatever the transaction says, and the role owns the tables, which
# PostgreSQL lets lose its own privileges (an owner could grant them back; Odoo never does). A write is refused
# with ``permission denied for table ...``, which Odoo returns to the user or the RPC client as an error.
# Sessions open at the freeze are ended (a transaction under way would otherwise still commit what it already
# wrote): Odoo's pool (and PgBouncer) open new ones. The promoter's own session (the server's role, which the
# revocation does not touch) is kept and stays writable: it turns blue's crons off at the cutover.
_OTHER_SESSIONS = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                   " WHERE datname = current_database() AND pid <> pg_backend_pid()")
# Privileges whose loss stops a role writing rows: per relation kind ('r' tables and the like, 's' sequences).
_WRITE_PRIVILEGES = {"r": ("INSERT", "UPDATE", "DELETE", "TRUNCATE"), "s": ("UPDATE",)}
_HELD = """
SELECT CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END AS kind, c.relname AS name,
       string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) AS privileges
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                            c.relowner))) a
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
  AND a.privilege_type = ANY(CASE WHEN c.relkind = 'S' THEN %s::text[] ELSE %s::text[] END)
GROUP BY 1, 2
"""


def write_privileges(conn: psycopg.Connection[Any], role: str) -> list[list[Any]]:
    """The write privileges ``role`` holds on the connected database's public relations, grouped:
    ``[[kind, "DELETE, INSERT, TRUNCATE, UPDATE", [names...]], ...]`` (kind ``r`` a table or view, ``s``
    a sequence). What ``freeze`` revokes and ``thaw`` grants back, exactly, so it is recorded before the freeze."""
    groups: dict[tuple[str, str], list[str]] = {}
    for kind, name, privileges in conn.execute(_HELD, (role, list(_WRITE_PRIVILEGES["s"]),
                                                       list(_WRITE_PRIVILEGES["r"]))).fetchall():
        groups.setdefault((str(kind), str(privileges)), []).append(str(name))
    return [[kind, privileges, sorted(names)] for (kind, privileges), names in sorted(groups.items())]


def _each(conn: psycopg.Connection[Any],
          privileges: list[list[Any]]) -> Iterator[tuple[sql.Composable, sql.Composable, sql.Composable]]:
    """(privileges, ON-clause, relations) of each recorded group still in the database, for GRANT or REVOKE."""
    for kind, names, recorded in privileges:
        relations = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relname = ANY(%s) ORDER BY 1", (list(recorded),)).fetchall()]
        allowed = _WRITE_PRIVILEGES[kind]
        words = [w for w in str(names).split(", ") if w in allowed]  # recorded text, checked before it is SQL
        for start in range(0, len(relations), 500):
            yield (sql.SQL(", ").join(sql.SQL(w) for w in words),
                   sql.SQL("SEQUENCE" if kind == "s" else "TABLE"),
                   sql.SQL(", ").join(sql.Identifier("public", n) for n in relations[start:start + 500]))


def freeze(conn: psycopg.Connection[Any], role: str | None, privileges: list[list[Any]]) -> int:
    """Refuse every write on the connected database: ``role``'s write ``privileges`` (from ``write_privileges``)
    revoked, new sessions read-only, and the other sessions ended; returns how many ended. ``role`` None (a
    deployment recorded before roles existed, whose Odoo logs in as the server's role) gets the read-only
    default only. ``conn`` must be in autocommit mode: the locks take effect together, before the terminations."""
    db = conn.execute("SELECT current_database()").fetchone()
    assert db is not None
    with conn.transaction():
        if role:
            for words, on, relations in _each(conn, privileges):
                conn.execute(sql.SQL("REVOKE {} ON {} {} FROM {}").format(words, on, relations, sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
            sql.Identifier(db[0])))
    conn.execute("SET default_transaction_read_only = off")  # this session stays writable: it fences blue
    row = conn.execute(_OTHER_SESSIONS).fetchone()
    return int(row[0]) if row else 0


def thaw(conn: psycopg.Connection[Any], role: str | None, privileges: list[list[Any]]) -> int:
    """Undo ``freeze``: ``role``'s recorded privileges granted back, new sessions writable again, and the
    read-only sessions opened meanwhile ended (they would stay read-only for their life); returns how many ended.
    Harmless on a database that was never frozen, or thawed already (granting a privilege held changes nothing)."""
    conn.execute("SET default_transaction_read_only = off")  # a session opened while frozen starts read-only
    db = conn.execute("SELECT current_database()").fetchone()
    assert db is not None
    with conn.transaction():
        if role:
            for words, on, relations in _each(conn, privileges):
                conn.execute(sql.SQL("GRANT {} ON {} {} TO {}").format(words, on, relations, sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(
            sql.Identifier(db[0])))
    row = conn.execute(_OTHER_SESSIONS).fetchone()
    return int(row[0]) if row else 0
