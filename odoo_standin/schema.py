"""DDL for the subset of Odoo's schema that deployment tooling touches.

Table and column names are Odoo 17's own, so that SQL written and tested against the
stand-in (neutralising crons and mail servers, counting attachments, reading
``database.uuid``...) runs unchanged against a real Odoo database. Only the columns that
tooling plausibly reads or writes are present; everything else Odoo has is left out.

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

import psycopg

MODULE_STATES = ("uninstallable", "uninstalled", "installed", "to upgrade", "to remove", "to install")
"""Values Odoo's ``ir.module.module.state`` selection allows."""

_AUDIT = """
    create_date timestamp DEFAULT (now() AT TIME ZONE 'UTC'),
    write_date timestamp DEFAULT (now() AT TIME ZONE 'UTC')
"""

_STATES_SQL = ", ".join(f"'{state}'" for state in MODULE_STATES)

TABLES: dict[str, str] = {
    "res_company": """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        partner_id integer
    """,
    "res_partner": """
        id serial PRIMARY KEY,
        name varchar,
        email varchar,
        company_id integer,
        active boolean DEFAULT true
    """,
    "res_users": """
        id serial PRIMARY KEY,
        login varchar NOT NULL UNIQUE,
        password varchar,
        active boolean DEFAULT true,
        partner_id integer NOT NULL,
        company_id integer NOT NULL
    """,
    "ir_module_module": f"""
        id serial PRIMARY KEY,
        name varchar NOT NULL UNIQUE,
        state varchar CHECK (state IN ({_STATES_SQL})),
        latest_version varchar,
        license varchar,
        shortdesc jsonb
    """,
    "ir_model_data": """
        id serial PRIMARY KEY,
        module varchar NOT NULL,
        name varchar NOT NULL,
        model varchar NOT NULL,
        res_id integer,
        noupdate boolean DEFAULT false,
        UNIQUE (module, name)
    """,
    "ir_attachment": """
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
    """,
    "ir_config_parameter": """
        id serial PRIMARY KEY,
        key varchar NOT NULL UNIQUE,
        value text NOT NULL
    """,
    "ir_cron": """
        id serial PRIMARY KEY,
        cron_name varchar,
        active boolean DEFAULT true,
        interval_number integer DEFAULT 1,
        interval_type varchar DEFAULT 'months',
        nextcall timestamp NOT NULL
    """,
    "ir_mail_server": """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        smtp_host varchar,
        smtp_port integer DEFAULT 25,
        smtp_user varchar,
        smtp_pass varchar,
        active boolean DEFAULT true
    """,
    # Incoming mail servers (module mail, formerly fetchmail); fetching itself runs from an ir_cron.
    "fetchmail_server": """
        id serial PRIMARY KEY,
        name varchar NOT NULL,
        server varchar,
        port integer,
        server_type varchar DEFAULT 'imap',
        "user" varchar,
        password varchar,
        state varchar DEFAULT 'draft',
        active boolean DEFAULT true
    """,
    # Payment providers (module payment, a dependency of sale): state is disabled | enabled | test.
    "payment_provider": """
        id serial PRIMARY KEY,
        name jsonb NOT NULL,
        code varchar NOT NULL,
        state varchar NOT NULL DEFAULT 'disabled' CHECK (state IN ('disabled', 'enabled', 'test'))
    """,
}
"""Column definitions per table; every table also gets ``create_date``/``write_date``."""

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


def create_tables(conn: psycopg.Connection) -> None:
    """Create every table of :data:`TABLES` (without foreign keys; see :func:`add_constraints`)."""
    with conn.cursor() as cur:
        for table, columns in TABLES.items():
            cur.execute(f"CREATE TABLE {table} ({columns.rstrip()},{_AUDIT})")


def add_constraints(conn: psycopg.Connection) -> None:
    """Add foreign keys and indexes once the data is in, then bring sequences past the explicit ids."""
    with conn.cursor() as cur:
        for statement in _CONSTRAINTS:
            cur.execute(statement)
        for table in TABLES:
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
