"""Production's live settings, carried onto green; crons and outgoing mail fenced to one side.

A staging database made the way Odoo.sh makes them is neutralized: crons off, mail servers off,
payment providers in test mode, ``database.is_neutralized`` set, ``web.base.url`` pointing at
staging. Promoted as it is, production would stop mailing and running its scheduled actions.
So, after the restore and before green's Odoo starts, blue's live settings are copied onto
green (config parameters, outgoing and incoming mail servers, payment provider states, which
crons are active, matched by external id), and the neutralization flag is removed.

During a blue-green cutover two Odoo servers run; if both ran crons, customers would get every
reminder twice. So green's crons and outgoing mail servers stay off (the *fence*) until cutover,
where they go on in green and off in blue in the same step as the router switch; a rollback
reverses both. The plan (which flags go where) is kept in the run's metadata, so a rollback
launched from another process can reverse it too.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel, Field

from promote_pipeline.odoo.credentials import is_credential
from resources.redaction import REDACTED, register_secret

DEFAULT_PARAMETERS = (
    "web.base.url", "web.base.url.freeze", "report.url", "mail.catchall.domain", "mail.catchall.alias",
    "mail.bounce.alias", "mail.default.from", "database.uuid", "database.secret", "database.create_date",
    "database.enterprise_code",
)
NEUTRALIZED_FLAG = "database.is_neutralized"


class FencePlan(BaseModel):
    """Active flags for green at cutover, and blue's flags before it (restored on rollback)."""

    green_crons: dict[str, bool] = Field(default_factory=dict)
    green_mail_servers: dict[str, bool] = Field(default_factory=dict)
    blue_crons: dict[str, bool] = Field(default_factory=dict)
    blue_mail_servers: dict[str, bool] = Field(default_factory=dict)


Conn = psycopg.Connection[Any]


def _has_table(conn: Conn, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",)).fetchone()
    return bool(row and row[0])


def crons(conn: Conn) -> dict[str, tuple[int, bool]]:
    """{external id (or 'name:<cron_name>' without one): (id, active)}."""
    rows = conn.execute(
        "SELECT coalesce(d.module || '.' || d.name, 'name:' || c.cron_name), c.id, c.active FROM ir_cron c"
        " LEFT JOIN ir_model_data d ON d.model = 'ir.cron' AND d.res_id = c.id ORDER BY c.id").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def mail_servers(conn: Conn) -> dict[str, bool]:
    return {r[0]: r[1] for r in conn.execute("SELECT name, active FROM ir_mail_server ORDER BY id").fetchall()}


def _parameters(conn: Conn, keys: list[str]) -> dict[str, str]:
    rows = conn.execute("SELECT key, value FROM ir_config_parameter WHERE key = ANY(%s)", (keys,)).fetchall()
    return {r[0]: r[1] for r in rows}


def _shown_parameter(key: str, value: str | None) -> str | None:
    """A config parameter's value as the evidence shows it: ``database.secret`` and the like blanked (and
    registered, in case it shows elsewhere); an unset one is kept, it says so."""
    if value and is_credential(key):
        register_secret(value)
        return REDACTED
    return value


def _copy_rows(blue: Conn, green: Conn, table: str, key: str, columns: list[str]) -> list[dict[str, Any]]:
    """Make green's rows of ``table`` match blue's, matched on ``key``; insert what green lacks."""
    changes: list[dict[str, Any]] = []
    if not (_has_table(blue, table) and _has_table(green, table)):
        return [{"what": table, "skipped": "table not present on both sides"}]
    select = sql.SQL("SELECT {}, {} FROM {}").format(sql.Identifier(key), _listed(columns), sql.Identifier(table))
    blue_rows = {r[0]: r for r in blue.execute(select).fetchall()}
    green_rows = {r[0]: r for r in green.execute(select).fetchall()}
    for name, row in blue_rows.items():
        for column, value in zip(columns, row[1:], strict=True):
            if is_credential(column) and isinstance(value, str):
                register_secret(value)  # redacted wherever it might show, an error message included
        before = green_rows.get(name)
        if before is not None and tuple(before[1:]) == tuple(row[1:]):
            continue
        if before is None:
            _insert_whole_row(blue, green, table, key, name)
        else:
            sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns)
            green.execute(sql.SQL("UPDATE {} SET {} WHERE {} = %s").format(sql.Identifier(table), sets,
                                                                          sql.Identifier(key)), (*row[1:], name))
        changes.append({"what": table, "key": name, "before": _shown(columns, before[1:]) if before else None,
                        "after": _shown(columns, row[1:])})
    return changes


def _shown(columns: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    """A row as the evidence shows it: credentials blanked here, where the columns are known to be Odoo's
    (``smtp_pass`` is no generic secret name); an empty or unset credential is kept, it says it is not set."""
    return {c: REDACTED if is_credential(c) and isinstance(v, str) and v else v
            for c, v in zip(columns, values, strict=True)}


def _insert_whole_row(blue: Conn, green: Conn, table: str, key: str, name: Any) -> None:
    """Copy a row green lacks with every column both sides have (a real Odoo has NOT NULL columns this
    module does not name), letting green's sequence give the id."""
    shared = [r[0] for r in green.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s"
        " AND column_name <> 'id' AND column_name IN (SELECT column_name FROM information_schema.columns"
        "  WHERE table_schema = 'public' AND table_name = %s)", (table, table)).fetchall()]
    blue_cols = {r[0] for r in blue.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
        (table,)).fetchall()}
    cols = [c for c in shared if c in blue_cols]
    row = blue.execute(sql.SQL("SELECT {} FROM {} WHERE {} = %s LIMIT 1").format(
        _listed(cols), sql.Identifier(table), sql.Identifier(key)), (name,)).fetchone()
    green.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table), _listed(cols), sql.SQL(", ").join(sql.Placeholder() * len(cols))), row)


def _listed(columns: list[str]) -> sql.Composed:
    """Column names read from information_schema are data, not SQL: quoted as identifiers, never pasted in (a
    column a module names with a quote in it must neither break the statement nor change its meaning)."""
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def carry_over(blue: Conn, green: Conn, parameters: list[str]) -> list[dict[str, Any]]:
    """Blue's live settings onto green (not the cron and mail-server active flags: see ``plan_fence``)."""
    changes: list[dict[str, Any]] = []
    b, g = _parameters(blue, parameters), _parameters(green, parameters)
    for key in parameters:
        if b.get(key) == g.get(key):
            continue
        if key in b:
            green.execute("INSERT INTO ir_config_parameter (key, value) VALUES (%s, %s)"
                          " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (key, b[key]))
        else:
            green.execute("DELETE FROM ir_config_parameter WHERE key = %s", (key,))
        changes.append({"what": "ir_config_parameter", "key": key, "before": _shown_parameter(key, g.get(key)),
                        "after": _shown_parameter(key, b.get(key))})
    flag = _parameters(green, [NEUTRALIZED_FLAG])
    if flag:
        green.execute("DELETE FROM ir_config_parameter WHERE key = %s", (NEUTRALIZED_FLAG,))
        changes.append({"what": "ir_config_parameter", "key": NEUTRALIZED_FLAG, "before": flag[NEUTRALIZED_FLAG],
                        "after": None})
    changes += _copy_rows(blue, green, "ir_mail_server", "name", ["smtp_host", "smtp_port", "smtp_user", "smtp_pass"])
    changes += _copy_rows(blue, green, "fetchmail_server", "name",
                          ["server", "port", "server_type", "user", "password", "state", "active"])
    changes += _copy_rows(blue, green, "payment_provider", "code", ["state"])
    changes += users_credentials(blue, green)
    return changes


# What makes a user's login and sessions production's: the password hash (Odoo re-hashes it on a login, and
# users change it), the second factor and OAuth tokens, and whether the account is archived. A session's token
# is an HMAC over (database.secret, id, login, password hash, active, and these), so green must have blue's
# values for the sessions taken on blue to stay logged in, and a user who changed their password on production
# since staging's copy, or was archived there, must not get the old state back.
USER_CREDENTIALS = ("password", "active", "totp_secret", "oauth_access_token", "oauth_uid", "oauth_provider_id")


def _column_names(conn: Conn, table: str) -> set[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                        " AND table_name = %s", (table,)).fetchall()
    return {r[0] for r in rows}


def users_credentials(blue: Conn, green: Conn) -> list[dict[str, Any]]:
    """Blue's credentials onto green's users (matched by id and login); green's API keys made blue's (keys created
    or revoked on production since the copy). Counts only: the values are credentials."""
    columns = [c for c in USER_CREDENTIALS if c in _column_names(blue, "res_users") & _column_names(green, "res_users")]
    if not columns:
        return []
    listed = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    query = sql.SQL("SELECT id, login, {} FROM res_users").format(listed)
    blue_rows = {(r[0], r[1]): r[2:] for r in blue.execute(query).fetchall()}
    update = sql.SQL("UPDATE res_users SET {} WHERE id = %s").format(
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns))
    changed = 0
    green_rows = green.execute(query).fetchall()
    for row in green_rows:
        theirs = blue_rows.get((row[0], row[1]))
        if theirs is not None and tuple(theirs) != tuple(row[2:]):
            green.execute(update, (*theirs, row[0]))
            changed += 1
    changes: list[dict[str, Any]] = [{"what": "res_users", "key": "credentials", "before": None,
                                      "after": f"{changed} user(s) given production's {', '.join(columns)}"}]
    shared = sorted(_column_names(blue, "res_users_apikeys") & _column_names(green, "res_users_apikeys"))
    if shared:
        keys = sql.SQL(", ").join(sql.Identifier(c) for c in shared)
        rows = blue.execute(sql.SQL("SELECT {} FROM res_users_apikeys WHERE user_id = ANY(%s)").format(keys),
                            ([row[0] for row in green_rows],)).fetchall()  # users green has (foreign key)
        green.execute("DELETE FROM res_users_apikeys")
        insert = sql.SQL("INSERT INTO res_users_apikeys ({}) VALUES ({})").format(
            keys, sql.SQL(", ").join(sql.Placeholder() * len(shared)))
        with green.cursor() as cur:
            cur.executemany(insert, rows)
        changes.append({"what": "res_users_apikeys", "key": "api keys", "before": None,
                        "after": f"{len(rows)} key(s): production's"})
    return changes


def plan_fence(blue: Conn, green: Conn, follow_blue: bool) -> FencePlan:
    """What green's crons and mail servers should be at cutover: blue's flags (``follow_blue``), or green's own."""
    blue_crons = {k: v[1] for k, v in crons(blue).items()}
    green_crons = {k: v[1] for k, v in crons(green).items()}
    blue_mail, green_mail = mail_servers(blue), mail_servers(green)
    if follow_blue:
        green_crons = {k: blue_crons.get(k, active) for k, active in green_crons.items()}
        green_mail = {k: blue_mail.get(k, False) for k in green_mail}
    return FencePlan(green_crons=green_crons, green_mail_servers=green_mail, blue_crons=blue_crons,
                     blue_mail_servers=blue_mail)


def _apply(conn: Conn, cron_flags: dict[str, bool], mail_flags: dict[str, bool]) -> dict[str, int]:
    ids = crons(conn)
    flipped = {"crons_on": 0, "crons_off": 0, "mail_servers_on": 0, "mail_servers_off": 0}
    for key, active in cron_flags.items():
        if key in ids and ids[key][1] != active:
            conn.execute("UPDATE ir_cron SET active = %s WHERE id = %s", (active, ids[key][0]))
            flipped["crons_on" if active else "crons_off"] += 1
    current = mail_servers(conn)
    for name, active in mail_flags.items():
        if name in current and current[name] != active:
            conn.execute("UPDATE ir_mail_server SET active = %s WHERE name = %s", (active, name))
            flipped["mail_servers_on" if active else "mail_servers_off"] += 1
    return flipped


def fence_off(conn: Conn) -> dict[str, int]:
    """Every cron and outgoing mail server of this database off."""
    return _apply(conn, {k: False for k in crons(conn)}, {k: False for k in mail_servers(conn)})


def at_cutover_blue(blue: Conn) -> dict[str, int]:
    return fence_off(blue)


def at_cutover_green(green: Conn, plan: FencePlan) -> dict[str, int]:
    return _apply(green, plan.green_crons, plan.green_mail_servers)


def at_rollback_blue(blue: Conn, plan: FencePlan) -> dict[str, int]:
    return _apply(blue, plan.blue_crons, plan.blue_mail_servers)


def active_counts(conn: Conn) -> dict[str, int]:
    row = conn.execute("SELECT (SELECT count(*) FROM ir_cron WHERE active),"
                       " (SELECT count(*) FROM ir_mail_server WHERE active)").fetchone()
    return {"active_crons": int(row[0]), "active_mail_servers": int(row[1])} if row else {}
