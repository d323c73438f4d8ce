"""Users: logging in, checking RPC credentials, session tokens and the ``web.base.url`` guess.

Copied from ``odoo/addons/base/models/res_users.py``:

- ``_login``/``_check_credentials``: the user is looked up by login, must be active, and the
  password is verified with passlib (``pbkdf2_sha512``; a plaintext password set straight in
  SQL is accepted and, being deprecated, replaced by its hash on that login); a successful login
  then adds a ``res_users_log`` row (``_update_last_login``), web and XML-RPC logins alike;
- ``check`` (the object service's per-call check): empty password refused, an unknown uid is a
  ``MissingError``, an archived user or a wrong password ``AccessDenied``;
- ``_compute_session_token``: HMAC-SHA256 of the session id, keyed by the text of the row
  ``(database.secret, active, id, login, password)`` of the user, plus the columns modules add
  (auth_oauth's ``oauth_access_token``, auth_totp's ``totp_secret``) -- so changing the password,
  archiving the user or a different ``database.secret`` invalidates every session of that user;
- ``authenticate``: after a successful login carrying a ``base_location`` (the web login routes
  pass the request's URL root; XML-RPC only what the caller passes), a user of
  ``base.group_system`` sets ``web.base.url`` to it, unless ``web.base.url.freeze`` is set.

Group membership is read from ``res_groups_users_rel`` through the groups' external ids, as
``has_group`` does (Odoo stores implied groups there too).
"""

from __future__ import annotations

import hmac
import logging
import threading
from hashlib import sha256
from typing import Any

import psycopg
from passlib.context import CryptContext
from psycopg import sql

from odoo_standin.errors import AccessDenied, missing_record

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
MIN_ROUNDS = 600_000
_TOKEN_FIELDS = ("active", "id", "login", "password")
# Modules that add a column to the token: auth_oauth (the OAuth access token), auth_totp (the TOTP secret).
_MODULE_TOKEN_FIELDS = ("oauth_access_token", "totp_secret")
_TOKEN_COLUMNS_SQL = """
    SELECT attname FROM pg_attribute
     WHERE attrelid = 'res_users'::regclass AND attname = ANY(%s) AND attnum > 0 AND NOT attisdropped
"""
_GROUP_SQL = """
    SELECT EXISTS (SELECT 1 FROM res_groups_users_rel r
                     JOIN ir_model_data d ON d.model = 'res.groups' AND d.res_id = r.gid
                    WHERE r.uid = %s AND d.module = %s AND d.name = %s)
"""


def crypt_context(conn: Conn) -> CryptContext:
    """Odoo's password context: pbkdf2_sha512 at ``password.hashing.rounds`` (never under 600,000)."""
    configured = get_param(conn, "password.hashing.rounds") or "0"
    rounds = max(MIN_ROUNDS, int(configured) if configured.isdigit() else 0)
    return CryptContext(["pbkdf2_sha512", "plaintext"], deprecated=["auto"], pbkdf2_sha512__rounds=rounds)


def get_param(conn: Conn, key: str) -> str | None:
    row = conn.execute("SELECT value FROM ir_config_parameter WHERE key = %s", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_param(conn: Conn, key: str, value: str) -> None:
    # As ``ir.config_parameter.set_param``: a value already set is not written again (no new write_date).
    conn.execute("INSERT INTO ir_config_parameter (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE"
                 " SET value = EXCLUDED.value, write_date = now() AT TIME ZONE 'UTC'"
                 " WHERE ir_config_parameter.value IS DISTINCT FROM EXCLUDED.value", (key, value))


def has_group(conn: Conn, uid: int, xmlid: str) -> bool:
    module, _, name = xmlid.partition(".")
    row = conn.execute(_GROUP_SQL, (uid, module, name)).fetchone()
    return bool(row and row[0])


def _verify(conn: Conn, uid: int, password: str) -> None:
    """Odoo's ``_check_credentials`` for a password: verify, and upgrade a deprecated hash in place."""
    if not password:
        raise AccessDenied()
    row = conn.execute("SELECT COALESCE(password, '') FROM res_users WHERE id = %s", (uid,)).fetchone()
    hashed = row[0] if row else ""
    try:
        valid, replacement = crypt_context(conn).verify_and_update(password, hashed)
    except ValueError:  # not a hash passlib knows: nothing can match it
        valid, replacement = False, None
    if not valid:
        raise AccessDenied()
    if replacement is not None:
        conn.execute("UPDATE res_users SET password = %s WHERE id = %s", (replacement, uid))


def _update_last_login(conn: Conn, uid: int) -> None:
    """``_update_last_login``: ``res.users.log`` ``sudo().create({})``, the ORM stamping the logged-in user.

    Same transaction as the credential check, as Odoo's ``_login`` cursor: if this insert fails (a read-only
    or frozen database), the login fails with that error rather than succeeding without its row.
    """
    conn.execute("INSERT INTO res_users_log (create_uid, write_uid) VALUES (%s, %s)", (uid, uid))


def login(conn: Conn, db: str, login: str, password: str, ip: str = "n/a") -> int:
    """The uid for ``login``/``password``, or :class:`AccessDenied` (logged as Odoo logs it)."""
    row = conn.execute("SELECT id FROM res_users WHERE login = %s AND active ORDER BY id LIMIT 1",
                       (login,)).fetchone()
    try:
        if row is None:
            raise AccessDenied()
        _verify(conn, int(row[0]), password)
        _update_last_login(conn, int(row[0]))
    except AccessDenied:
        log.info("Login failed for db:%s login:%s from %s", db, login, ip)
        raise
    log.info("Login successful for db:%s login:%s from %s", db, login, ip)
    return int(row[0])


def authenticate(conn: Conn, db: str, login_name: str, password: str, user_agent_env: dict[str, Any]) -> int:
    """``res.users.authenticate``: log in, then let a system user's login guess ``web.base.url``."""
    uid = login(conn, db, login_name, password, str(user_agent_env.get("REMOTE_ADDR", "n/a")))
    base = user_agent_env.get("base_location")
    if base and has_group(conn, uid, "base.group_system") and not get_param(conn, "web.base.url.freeze"):
        set_param(conn, "web.base.url", str(base))
    return uid


def check(conn: Conn, uid: int, password: str) -> None:
    """The object service's credential check for ``(uid, password)``.

    Odoo caches a successful check per registry (``ormcache('uid', 'passwd')``), so only an RPC client's
    first call pays for pbkdf2; the stand-in caches it too, keyed also by the stored hash so that a password
    changed in any way is checked again.
    """
    if not password:
        raise AccessDenied()
    row = conn.execute("SELECT active, COALESCE(password, '') FROM res_users WHERE id = %s", (uid,)).fetchone()
    if row is None:
        raise missing_record("res.users", [uid], uid)
    if not row[0]:
        raise AccessDenied()
    key = (conn.info.dbname, uid, sha256(password.encode()).hexdigest(), row[1])
    with _checked_lock:
        if key in _checked:
            return
    _verify(conn, uid, password)
    with _checked_lock:
        if len(_checked) >= _CHECKED_MAX:
            _checked.clear()
        _checked.add(key)


_checked: set[tuple[str, int, str, str]] = set()
_checked_lock = threading.Lock()
_CHECKED_MAX = 1024


def session_token(conn: Conn, uid: int, sid: str) -> str | bool:
    """HMAC of ``sid`` keyed by the text of the user's token row; False if there is no such user.

    The row is ``database.secret`` then the token fields in name order; installed modules add theirs
    (their columns exist only then), so the same user and session give the same token as in Odoo.
    """
    extra = [r[0] for r in conn.execute(_TOKEN_COLUMNS_SQL, (list(_MODULE_TOKEN_FIELDS),)).fetchall()]
    columns = sql.SQL(", ").join(sql.Identifier("res_users", f) for f in sorted((*_TOKEN_FIELDS, *extra)))
    query = sql.SQL("SELECT (SELECT value FROM ir_config_parameter WHERE key = 'database.secret'), {}"
                    " FROM res_users WHERE id = %s").format(columns)
    row = conn.execute(query, (uid,)).fetchone()
    if row is None:
        return False
    key = str(tuple(row)).encode()
    return hmac.new(key, sid.encode(), sha256).hexdigest()


def token_matches(conn: Conn, uid: int, sid: str, token: Any) -> bool:
    expected = session_token(conn, uid, sid)
    return bool(expected) and isinstance(token, str) and hmac.compare_digest(str(expected), token)


def user_context(uid: int) -> dict[str, Any]:
    """``context_get()``: the stand-in's users have no language or timezone of their own."""
    return {"lang": "en_US", "tz": False, "uid": uid}


def session_info(conn: Conn, db: str, uid: int, server_version: str, version_info: list[Any]) -> dict[str, Any]:
    """The part of ``ir.http.session_info()`` clients read after a login."""
    row = conn.execute("SELECT u.login, u.partner_id, u.company_id, p.name FROM res_users u"
                       " JOIN res_partner p ON p.id = u.partner_id WHERE u.id = %s", (uid,)).fetchone()
    assert row is not None
    user_login, partner_id, company_id, name = row
    return {
        "uid": uid, "is_system": has_group(conn, uid, "base.group_system"),
        "is_admin": uid == 1 or has_group(conn, uid, "base.group_erp_manager"),
        "user_context": user_context(uid), "db": db, "server_version": server_version,
        "server_version_info": version_info, "name": name, "username": user_login,
        "partner_id": partner_id, "company_id": company_id,
    }
