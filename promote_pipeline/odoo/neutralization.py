"""What each Odoo module's ``data/neutralize.sql`` writes, and how the promotion undoes it from blue's values.

A staging database made the way Odoo.sh makes them (``odoo-bin neutralize``, ``odoo/modules/neutralize.py``)
runs, for every installed module that has one, its ``data/neutralize.sql``: mail servers off and a dummy one
inserted, crons off, webhooks pointed nowhere, payment providers and carriers in test mode with their
credentials blanked, tokens disabled, the "neutralized" banner on. Promoted as it is, production would run
on all of that. So after the restore, before green's Odoo starts, each trace is undone with blue's values
(blue is production as it runs now), and a check proves that none remains; a trace that remains fails the
restore step.

``TRACES`` is the table (one entry per statement family of Odoo 18's 47 files; the README lists it): only
tables and columns that exist on both sides are touched, so a database without a module is left alone.
Rows are matched by ``id`` and by identity columns where a table has them (a provider's ``code``, a
carrier's ``name``): a row staging created itself, with no counterpart in blue, keeps staging's (safe,
neutralized) values and is reported. Crons and outgoing mail servers are not restored here: the fence
(``carry_over.plan_fence``) keeps them off on green until cutover and then gives them blue's flags; the
check verifies the fence's plan instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from resources.redaction import register_secret

Conn = psycopg.Connection[Any]
NEUTRALIZED_FLAG = "database.is_neutralized"
DUMMY_MAIL_SERVER = "neutralization - disable emails"


@dataclass(frozen=True)
class Columns:
    """``UPDATE table SET columns = ...``: blue's values put back on the rows both sides have."""

    module: str
    table: str
    columns: tuple[str, ...]
    identity: tuple[str, ...] = ()  # must be equal on both sides for a row to be matched (besides its key)
    key: str = "id"
    where: str = ""  # restrict to the rows neutralize touches (SQL on the table's own columns)
    secret: bool = False  # the values are credentials: registered for redaction, never reported


@dataclass(frozen=True)
class Parameters:
    """``DELETE FROM ir_config_parameter WHERE key IN (...)``: blue's keys put back."""

    module: str
    keys: tuple[str, ...]
    secret: bool = False


@dataclass(frozen=True)
class Truncated:
    """``TRUNCATE table``: blue's rows copied back when green has none."""

    module: str
    table: str


@dataclass(frozen=True)
class Fenced:
    """Handled by the fence: off on green until cutover, then blue's flags (checked through the fence plan)."""

    module: str
    table: str
    what: str


Trace = Columns | Parameters | Truncated | Fenced
BASE = "odoo/addons/base/data/neutralize.sql"


def source(module: str) -> str:
    """The file in Odoo's source that writes the trace."""
    return BASE if module == "base" else f"addons/{module}/data/neutralize.sql"


TRACES: tuple[Trace, ...] = (
    Fenced("base", "ir_mail_server", "all outgoing mail servers off; a dummy server inserted (removed here)"),
    Fenced("base", "ir_cron", "every cron off but the autovacuum"),
    Parameters("base", (NEUTRALIZED_FLAG,)),
    Columns("base", "ir_act_server", ("webhook_url",), identity=("state",), where="state = 'webhook'", secret=True),
    Columns("web", "ir_ui_view", ("active",), key="key", where="key = 'web.neutralize_banner'"),
    Columns("iap", "iap_account", ("account_token",), secret=True),
    Columns("mail", "mail_template", ("mail_server_id",)),
    Columns("mail", "fetchmail_server", ("active",), identity=("name",)),
    Parameters("mail", ("mail.web_push_vapid_private_key", "mail.web_push_vapid_public_key", "mail.sfu_server_key"),
               secret=True),
    Truncated("mail", "mail_push_device"),
    Columns("website", "website", ("domain", "cdn_activated", "robots_txt")),
    Columns("website", "ir_ui_view", ("active",), key="key", where="key = 'website.neutralize_ribbon'"),
    Columns("website_sale_autocomplete", "website", ("google_places_api_key",), secret=True),
    Parameters("website_event_jitsi", ("website_jitsi.jitsi_server_domain",)),
    Columns("auth_oauth", "auth_oauth_provider", ("enabled",), identity=("name",)),
    Columns("certificate", "certificate_certificate", ("pkcs12_password",), secret=True),
    Columns("certificate", "certificate_key", ("password",), secret=True),
    Parameters("cloud_storage", ("cloud_storage_provider",)),
    Parameters("cloud_storage_azure", ("cloud_storage_azure_account_name", "cloud_storage_azure_container_name",
                                       "cloud_storage_azure_tenant_id", "cloud_storage_azure_client_id",
                                       "cloud_storage_azure_client_secret"), secret=True),
    Parameters("cloud_storage_google", ("cloud_storage_google_bucket_name", "cloud_storage_google_account_info"),
               secret=True),
    Columns("google_calendar", "res_users_settings",
            ("google_calendar_rtoken", "google_calendar_token", "google_synchronization_stopped"), secret=True),
    Columns("microsoft_calendar", "res_users", ("microsoft_calendar_token", "microsoft_calendar_rtoken"),
            secret=True),
    Columns("microsoft_calendar", "res_users_settings",
            ("microsoft_calendar_sync_token", "microsoft_synchronization_stopped", "microsoft_last_sync_date"),
            secret=True),
    Columns("account_edi_proxy_client", "account_edi_proxy_client_user", ("edi_mode",), identity=("proxy_type",)),
    Columns("l10n_my_edi", "account_edi_proxy_client_user", ("active",), identity=("proxy_type",),
            where="proxy_type = 'l10n_my_edi'"),
    Columns("delivery", "delivery_carrier", ("prod_environment", "active"), identity=("name",)),
    Columns("delivery_mondialrelay", "delivery_carrier", ("mondialrelay_brand",), identity=("name",)),
    Columns("payment", "payment_provider", ("state",), identity=("code",)),
    *(Columns(module, "payment_provider", columns, identity=("code",), secret=True) for module, columns in (
        ("payment_adyen", ("adyen_merchant_account", "adyen_api_key", "adyen_hmac_key")),
        ("payment_aps", ("aps_merchant_identifier", "aps_access_code", "aps_sha_request", "aps_sha_response")),
        ("payment_asiapay", ("asiapay_merchant_id", "asiapay_secure_hash_secret", "asiapay_secure_hash_function")),
        ("payment_authorize", ("authorize_login", "authorize_transaction_key", "authorize_signature_key",
                               "authorize_client_key")),
        ("payment_buckaroo", ("buckaroo_website_key", "buckaroo_secret_key")),
        ("payment_flutterwave", ("flutterwave_public_key", "flutterwave_secret_key", "flutterwave_webhook_secret")),
        ("payment_mercado_pago", ("mercado_pago_access_token",)),
        ("payment_mollie", ("mollie_api_key",)),
        ("payment_paypal", ("paypal_email_account", "paypal_client_id", "paypal_client_secret")),
        ("payment_razorpay", ("razorpay_key_id", "razorpay_key_secret", "razorpay_webhook_secret")),
        ("payment_stripe", ("stripe_secret_key", "stripe_publishable_key", "stripe_webhook_secret")),
        ("payment_worldline", ("worldline_pspid", "worldline_api_key", "worldline_api_secret",
                               "worldline_webhook_key", "worldline_webhook_secret")),
        ("payment_xendit", ("xendit_secret_key", "xendit_webhook_token")),
    )),
    Columns("pos_adyen", "pos_payment_method", ("adyen_test_mode",), identity=("name",)),
    Columns("pos_mercado_pago", "pos_payment_method", ("mp_bearer_token", "mp_webhook_secret_key"),
            identity=("name",), secret=True),
    Columns("pos_paytm", "pos_payment_method", ("paytm_test_mode", "paytm_merchant_key"), identity=("name",),
            secret=True),
    Columns("pos_razorpay", "pos_payment_method", ("razorpay_test_mode", "razorpay_api_key"), identity=("name",),
            secret=True),
    Columns("pos_viva_wallet", "pos_payment_method", ("viva_wallet_test_mode",), identity=("name",)),
    *(Columns(module, "res_company", columns, secret=True) for module, columns in (
        ("l10n_eg_edi_eta", ("l10n_eg_production_env", "l10n_eg_client_secret")),
        ("l10n_es_edi_sii", ("l10n_es_sii_test_env",)),
        ("l10n_es_edi_tbai", ("l10n_es_tbai_test_env",)),
        ("l10n_hu_edi", ("l10n_hu_edi_server_mode", "l10n_hu_edi_username", "l10n_hu_edi_password",
                         "l10n_hu_edi_signature_key", "l10n_hu_edi_replacement_key")),
        ("l10n_in_edi", ("l10n_in_edi_production_env", "l10n_in_edi_username", "l10n_in_edi_password",
                         "l10n_in_edi_token", "l10n_in_edi_token_validity")),
        ("l10n_in_edi_ewaybill", ("l10n_in_edi_ewaybill_username", "l10n_in_edi_ewaybill_password",
                                  "l10n_in_edi_ewaybill_auth_validity")),
        ("l10n_ke_edi_tremol", ("l10n_ke_cu_proxy_address",)),
        ("l10n_ro_edi", ("l10n_ro_edi_test_env", "l10n_ro_edi_client_id", "l10n_ro_edi_client_secret",
                         "l10n_ro_edi_access_token", "l10n_ro_edi_refresh_token")),
        ("l10n_sa_edi", ("l10n_sa_api_mode",)),
        ("l10n_vn_edi_viettel", ("l10n_vn_edi_username", "l10n_vn_edi_password")),
    )),
)


# -- reading both sides ---------------------------------------------------------------------------------
def _columns(conn: Conn, table: str) -> set[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                        " AND table_name = %s", (table,)).fetchall()
    return {r[0] for r in rows}


@dataclass
class _Pair:
    """The rows of one Columns trace on both sides, matched."""

    columns: list[str]
    matched: dict[Any, tuple[tuple[Any, ...], tuple[Any, ...]]] = field(default_factory=dict)  # key: (blue, green)
    green_only: int = 0


def _pair(blue: Conn, green: Conn, trace: Columns) -> _Pair | None:
    """None when the table or the columns are not on both sides (the module is not installed)."""
    shared = _columns(blue, trace.table) & _columns(green, trace.table)
    columns = [c for c in trace.columns if c in shared]
    if not columns or trace.key not in shared:
        return None
    identity = [c for c in trace.identity if c in shared]
    listed = sql.SQL(", ").join(sql.Identifier(c) for c in [trace.key, *identity, *columns])
    query = sql.SQL("SELECT {} FROM {}").format(listed, sql.Identifier(trace.table))
    if trace.where:
        query = query + sql.SQL(" WHERE ") + sql.SQL(trace.where)  # type: ignore[arg-type]  # literal in TRACES
    cut = 1 + len(identity)
    blue_rows = {_hashable(r[:cut]): r[cut:] for r in blue.execute(query).fetchall()}
    pair = _Pair(columns)
    for row in green.execute(query).fetchall():
        ident, values = _hashable(row[:cut]), row[cut:]
        if ident in blue_rows:
            pair.matched[ident[0]] = (blue_rows[ident], values)
        else:
            pair.green_only += 1
    return pair


def _hashable(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Identity columns as a dict key: Odoo keeps translatable names (a carrier's, a provider's) as jsonb."""
    return tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for v in values)


def _parameters(conn: Conn, keys: tuple[str, ...]) -> dict[str, str]:
    rows = conn.execute("SELECT key, value FROM ir_config_parameter WHERE key = ANY(%s)", (list(keys),)).fetchall()
    return {r[0]: r[1] for r in rows}


def _count(conn: Conn, table: str) -> int | None:
    if not _columns(conn, table):
        return None
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


# -- undoing --------------------------------------------------------------------------------------------
def undo(blue: Conn, green: Conn) -> list[dict[str, Any]]:
    """Put blue's values back wherever green still carries what neutralize.sql wrote; one summary per trace
    that applied (module, table, rows restored; never the values: many are credentials)."""
    done: list[dict[str, Any]] = []
    for trace in TRACES:
        if isinstance(trace, Columns):
            restored = _undo_columns(blue, green, trace)
            if restored is not None:
                done.append({"module": trace.module, "table": trace.table, "columns": list(trace.columns),
                             **restored})
        elif isinstance(trace, Parameters):
            changed = _undo_parameters(blue, green, trace)
            if changed:
                done.append({"module": trace.module, "table": "ir_config_parameter", "keys": changed})
        elif isinstance(trace, Truncated):
            copied = _undo_truncate(blue, green, trace.table)
            if copied:
                done.append({"module": trace.module, "table": trace.table, "rows_copied": copied})
    removed = green.execute("DELETE FROM ir_mail_server WHERE name = %s AND NOT %s", (
        DUMMY_MAIL_SERVER, DUMMY_MAIL_SERVER in _mail_server_names(blue))).rowcount
    if removed:
        done.append({"module": "base", "table": "ir_mail_server", "dummy_server_removed": removed})
    return done


def _mail_server_names(conn: Conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM ir_mail_server").fetchall()}


def _undo_columns(blue: Conn, green: Conn, trace: Columns) -> dict[str, int] | None:
    pair = _pair(blue, green, trace)
    if pair is None:
        return None
    restored = 0
    sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in pair.columns)
    update = sql.SQL("UPDATE {} SET {} WHERE {} = %s").format(sql.Identifier(trace.table), sets,
                                                             sql.Identifier(trace.key))
    for key, (blue_values, green_values) in pair.matched.items():
        if trace.secret:
            for value in blue_values:
                if isinstance(value, str):
                    register_secret(value)
        if blue_values != green_values:
            green.execute(update, (*blue_values, key))
            restored += 1
    return {"rows_restored": restored, "rows_only_on_green": pair.green_only}


def _undo_parameters(blue: Conn, green: Conn, trace: Parameters) -> list[str]:
    b, g = _parameters(blue, trace.keys), _parameters(green, trace.keys)
    changed = []
    for key in trace.keys:
        if b.get(key) == g.get(key):
            continue
        if key in b:
            if trace.secret:
                register_secret(b[key])
            green.execute("INSERT INTO ir_config_parameter (key, value) VALUES (%s, %s)"
                          " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (key, b[key]))
        else:
            green.execute("DELETE FROM ir_config_parameter WHERE key = %s", (key,))
        changed.append(key)
    return changed


def _undo_truncate(blue: Conn, green: Conn, table: str) -> int:
    if _count(green, table) != 0 or not _count(blue, table):
        return 0
    columns = sorted(_columns(blue, table) & _columns(green, table))
    listed = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    rows = blue.execute(sql.SQL("SELECT {} FROM {}").format(listed, sql.Identifier(table))).fetchall()
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table), listed, sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    with green.cursor() as cur:
        cur.executemany(insert, rows)
    return len(rows)


# -- proving none remains -------------------------------------------------------------------------------
def remaining(blue: Conn, green: Conn, fence_crons: dict[str, bool], fence_mail: dict[str, bool],
              blue_crons: dict[str, bool], blue_mail: dict[str, bool]) -> list[str]:
    """Every trace of neutralization still on green, one line each (empty: none). ``fence_*`` is what green
    gets at cutover, ``blue_*`` blue's flags now: the fence must give green blue's flags."""
    found: list[str] = []
    for trace in TRACES:
        where = source(trace.module)
        if isinstance(trace, Columns):
            pair = _pair(blue, green, trace)
            if pair is None:
                continue
            differ = [k for k, (b, g) in pair.matched.items() if b != g]
            if differ:
                found.append(f"{trace.table}.{'/'.join(pair.columns)} differs from blue on {len(differ)} row(s)"
                             f" ({where})")
        elif isinstance(trace, Parameters):
            b, g = _parameters(blue, trace.keys), _parameters(green, trace.keys)
            differ = sorted(k for k in trace.keys if b.get(k) != g.get(k))
            if differ:
                found.append(f"ir_config_parameter {', '.join(differ)} differ(s) from blue ({where})")
        elif isinstance(trace, Truncated):
            if _count(green, trace.table) == 0 and _count(blue, trace.table):
                found.append(f"{trace.table} emptied ({where})")
    if DUMMY_MAIL_SERVER in _mail_server_names(green) - _mail_server_names(blue):
        found.append(f"ir_mail_server {DUMMY_MAIL_SERVER!r} present ({BASE})")
    off_crons = sorted(k for k, active in blue_crons.items() if active and fence_crons.get(k) is False)
    if off_crons:
        found.append(f"ir_cron {len(off_crons)} cron(s) active on blue would stay off on green: {off_crons[:5]}"
                     f" ({BASE})")
    off_mail = sorted(k for k, active in blue_mail.items() if active and fence_mail.get(k) is False)
    if off_mail:
        found.append(f"ir_mail_server {off_mail} active on blue would stay off on green ({BASE})")
    return found
