"""DDL for the subset of Odoo's schema that deployment tooling touches.

Table and column names are Odoo's own (17 and 18 agree on these), so that SQL written and
tested against the stand-in (neutralising crons and mail servers, counting attachments,
reading ``database.uuid``...) runs unchanged against a real Odoo database. Only the columns
that tooling or ``odoo-bin neutralize`` plausibly read or write are present; everything else
Odoo has is left out. As in Odoo, a table exists only if the module that defines it is
installed, and a module that extends another's model adds its columns to that table
(``payment_stripe`` its keys to ``payment_provider``, for instance).

Two details follow Odoo rather than intuition:

- ``create_date``/``write_date`` are ``timestamp without time zone`` holding UTC, as the
  ORM writes them.
- ``ir_module_module.shortdesc`` is ``jsonb`` (``{"en_US": ...}``) because it is a
  translated field, and ``ir_cron``'s name column is ``cron_name`` (the stored related
  field of its server action), both as in Odoo 16+.

Foreign keys and secondary indexes are created by :func:`add_constraints` *after* the
bulk load, the way ``pg_restore`` does it, so a million-partner COPY is not slowed down
by per-row trigger checks.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

MODULE_STATES = ("uninstallable", "uninstalled", "installed", "to upgrade", "to remove", "to install")
"""Values Odoo's ``ir.module.module.state`` selection allows."""

_AUDIT = """
    create_date timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    write_date timestamp DEFAULT (now() AT TIME ZONE 'UTC')
"""

_STATES_SQL = ", ".join(f"'{state}'" for state in MODULE_STATES)

TABLES: dict[str, tuple[str, str]] = {
    # -- base ------------------------------------------------------------------------------------
    "res_company": ("base", """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        partner_id integer
    """),
    "res_partner": ("base", """
        id serial PRIMARY KEY,
        name varchar,
        email varchar,
        company_id integer,
        active boolean DEFAULT true
    """),
    "res_users": ("base", """
        id serial PRIMARY KEY,
        login varchar NOT NULL UNIQUE,
        password varchar,
        active boolean DEFAULT true,
        partner_id integer NOT NULL,
        company_id integer NOT NULL
    """),
    "res_groups": ("base", """
        id serial PRIMARY KEY,
        name jsonb NOT NULL,
        share boolean DEFAULT false
    """),
    # The users of each group, implied groups included, as Odoo stores them (no id: a relation table).
    "res_groups_users_rel": ("base", """
        gid integer NOT NULL,
        uid integer NOT NULL,
        PRIMARY KEY (gid, uid)
    """),
    # One row per successful login (``res.users.log``, written by ``_update_last_login``); Odoo's ORM fills
    # the four audit columns, nothing else. ``login_date`` is computed from these rows, not stored.
    "res_users_log": ("base", """
        id serial PRIMARY KEY,
        create_uid integer,
        write_uid integer
    """),
    "res_users_settings": ("base", """
        id serial PRIMARY KEY,
        user_id integer NOT NULL UNIQUE
    """),
    "ir_module_module": ("base", f"""
        id serial PRIMARY KEY,
        name varchar NOT NULL UNIQUE,
        state varchar CHECK (state IN ({_STATES_SQL})),
        latest_version varchar,
        license varchar,
        shortdesc jsonb
    """),
    "ir_model_data": ("base", """
        id serial PRIMARY KEY,
        module varchar NOT NULL,
        name varchar NOT NULL,
        model varchar NOT NULL,
        res_id integer,
        noupdate boolean DEFAULT false,
        UNIQUE (module, name)
    """),
    "ir_attachment": ("base", """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        res_model varchar,
        res_field varchar,
        res_id integer,
        type varchar NOT NULL DEFAULT 'binary',
        url varchar(1024),
        store_fname varchar,
        db_datas bytea,
        file_size integer,
        checksum varchar(40),
        mimetype varchar,
        public boolean DEFAULT false,
        access_token varchar
    """),
    "ir_config_parameter": ("base", """
        id serial PRIMARY KEY,
        key varchar NOT NULL UNIQUE,
        value text NOT NULL
    """),
    # Server actions: what a cron runs (state 'code'), or a webhook that POSTs records to a URL.
    "ir_act_server": ("base", """
        id serial PRIMARY KEY,
        name jsonb NOT NULL,
        type varchar NOT NULL DEFAULT 'ir.actions.server',
        model_name varchar,
        state varchar NOT NULL DEFAULT 'code',
        code text,
        webhook_url varchar,
        usage varchar DEFAULT 'ir_actions_server'
    """),
    "ir_cron": ("base", """
        id serial PRIMARY KEY,
        ir_actions_server_id integer,
        cron_name varchar,
        user_id integer,
        active boolean DEFAULT true,
        interval_number integer DEFAULT 1,
        interval_type varchar DEFAULT 'months',
        nextcall timestamp NOT NULL,
        lastcall timestamp,
        priority integer DEFAULT 5
    """),
    "ir_mail_server": ("base", """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        smtp_host varchar,
        smtp_port integer DEFAULT 25,
        smtp_user varchar,
        smtp_pass varchar,
        smtp_encryption varchar DEFAULT 'none',
        smtp_authentication varchar DEFAULT 'login',
        sequence integer DEFAULT 10,
        active boolean DEFAULT true
    """),
    # Views (QWeb templates); neutralization switches two inactive ones on: web's banner, website's ribbon.
    "ir_ui_view": ("base", """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        key varchar,
        type varchar,
        mode varchar DEFAULT 'primary',
        inherit_id integer,
        priority integer DEFAULT 16,
        arch_db jsonb,
        active boolean DEFAULT true
    """),
    # -- mail: incoming mail servers (formerly fetchmail), templates, web push -------------------
    "fetchmail_server": ("mail", """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        server varchar,
        port integer,
        server_type varchar DEFAULT 'imap',
        "user" varchar,
        password varchar,
        state varchar DEFAULT 'draft',
        active boolean DEFAULT true
    """),
    "mail_template": ("mail", """
        id serial PRIMARY KEY,
        name jsonb,
        model varchar,
        subject jsonb,
        mail_server_id integer
    """),
    "mail_push_device": ("mail", """
        id serial PRIMARY KEY,
        partner_id integer NOT NULL,
        endpoint varchar NOT NULL UNIQUE,
        keys varchar NOT NULL
    """),
    "mail_push": ("mail", """
        id serial PRIMARY KEY,
        mail_push_device_id integer NOT NULL REFERENCES mail_push_device(id) ON DELETE CASCADE,
        payload text
    """),
    # -- iap: in-app purchase accounts, one per service ------------------------------------------
    "iap_service": ("iap", """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        technical_name varchar NOT NULL UNIQUE,
        unit_name varchar
    """),
    "iap_account": ("iap", """
        id serial PRIMARY KEY,
        name varchar,
        service_id integer,
        account_token varchar,
        state varchar
    """),
    # -- payment (a dependency of sale): state is disabled | enabled | test ----------------------
    "payment_provider": ("payment", """
        id serial PRIMARY KEY,
        name jsonb NOT NULL,
        code varchar NOT NULL,
        state varchar NOT NULL DEFAULT 'disabled' CHECK (state IN ('disabled', 'enabled', 'test'))
    """),
    # -- delivery: shipping methods, external carriers have a production/test switch -------------
    "delivery_carrier": ("delivery", """
        id serial PRIMARY KEY,
        name jsonb NOT NULL,
        delivery_type varchar NOT NULL DEFAULT 'fixed',
        prod_environment boolean DEFAULT false,
        sequence integer DEFAULT 10,
        active boolean DEFAULT true
    """),
    "website": ("website", """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        domain varchar,
        sequence integer DEFAULT 10,
        cdn_activated boolean DEFAULT false,
        cdn_url varchar,
        robots_txt text
    """),
    "auth_oauth_provider": ("auth_oauth", """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        client_id varchar,
        enabled boolean DEFAULT false,
        auth_endpoint varchar NOT NULL,
        validation_endpoint varchar NOT NULL,
        scope varchar,
        body varchar NOT NULL
    """),
}
"""``table: (module that creates it, column definitions)``; every table with an ``id`` also gets
``create_date``/``write_date``. A table exists only when its module is installed, as in Odoo."""

COLUMNS: dict[str, dict[str, str]] = {
    "auth_oauth": {"res_users": """
        oauth_provider_id integer,
        oauth_uid varchar,
        oauth_access_token varchar
    """},
    "auth_totp": {"res_users": """
        totp_secret varchar
    """},
    "payment_stripe": {"payment_provider": """
        stripe_publishable_key varchar,
        stripe_secret_key varchar,
        stripe_webhook_secret varchar
    """},
    "google_calendar": {"res_users_settings": """
        google_calendar_rtoken varchar,
        google_calendar_token varchar,
        google_calendar_token_validity timestamp,
        google_calendar_sync_token varchar,
        google_calendar_cal_id varchar,
        google_synchronization_stopped boolean
    """},
    # microsoft_account (a dependency of microsoft_calendar) keeps the OAuth tokens on res_users.
    "microsoft_calendar": {"res_users": """
        microsoft_calendar_rtoken varchar,
        microsoft_calendar_token varchar,
        microsoft_calendar_token_validity timestamp
    """, "res_users_settings": """
        microsoft_calendar_sync_token varchar,
        microsoft_synchronization_stopped boolean,
        microsoft_last_sync_date timestamp
    """},
}
"""Columns a module adds to another module's table (``_inherit``), added when it is installed."""

_CONSTRAINTS = (
    "ALTER TABLE res_company ADD FOREIGN KEY (partner_id) REFERENCES res_partner(id) ON DELETE RESTRICT",
    "ALTER TABLE res_partner ADD FOREIGN KEY (company_id) REFERENCES res_company(id) ON DELETE SET NULL",
    "ALTER TABLE res_users ADD FOREIGN KEY (partner_id) REFERENCES res_partner(id) ON DELETE RESTRICT",
    "ALTER TABLE res_users ADD FOREIGN KEY (company_id) REFERENCES res_company(id) ON DELETE RESTRICT",
    "CREATE INDEX ir_attachment_res_idx ON ir_attachment (res_model, res_id)",
    "CREATE INDEX ir_attachment_checksum_index ON ir_attachment (checksum)",
    "CREATE INDEX ir_model_data_model_res_id_index ON ir_model_data (model, res_id)",
    "CREATE INDEX res_partner_company_id_index ON res_partner (company_id)",
)


def installed_tables(modules: Iterable[str]) -> list[str]:
    """The tables a database with ``modules`` installed has, in creation order."""
    chosen = set(modules)
    return [table for table, (module, _) in TABLES.items() if module in chosen]


def create_tables(conn: psycopg.Connection, modules: Iterable[str]) -> None:
    """Create the tables of the installed ``modules`` (without foreign keys; see :func:`add_constraints`)."""
    chosen = set(modules)
    with conn.cursor() as cur:
        for table in installed_tables(chosen):
            columns = TABLES[table][1].rstrip()
            audit = f",{_AUDIT}" if "id serial" in columns else ""
            cur.execute(f"CREATE TABLE {table} ({columns}{audit})")
        for module, extensions in COLUMNS.items():
            if module not in chosen:
                continue
            for table, added in extensions.items():
                adds = ", ".join(f"ADD COLUMN {c.strip()}" for c in added.strip().split(",\n"))
                cur.execute(f"ALTER TABLE {table} {adds}")


def add_constraints(conn: psycopg.Connection, modules: Iterable[str]) -> None:
    """Add foreign keys and indexes once the data is in, then bring sequences past the explicit ids."""
    with conn.cursor() as cur:
        for statement in _CONSTRAINTS:
            cur.execute(statement)
        for table in installed_tables(modules):
            if "id serial" not in TABLES[table][1]:
                continue
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
