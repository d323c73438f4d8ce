"""Command line: ``odoo_standin init`` builds a deployment's data, ``odoo_standin serve`` serves it.

The two are separate so that tooling can treat the stand-in like Odoo: data is prepared
(or restored, or copied) first, then a server process -- one per deployment, as with
``odoo-bin`` -- is started on it, health-checked, and stopped with SIGTERM.

The admin password is read from an environment variable named on the command line, never
from argv itself, so it does not show up in ``ps`` or shell history; nothing secret is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from odoo_standin import DEFAULT_DSN, DEFAULT_MODULES, DSN_ENV
from odoo_standin import serve as serve_command

ADMIN_PASSWORD_ENV = "STANDIN_ADMIN_PASSWORD"


def _default_dsn() -> str:
    return os.environ.get(DSN_ENV) or DEFAULT_DSN


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers no smaller than ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="odoo_standin", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="create an Odoo-shaped database, demo data and filestore")
    init.add_argument("--dsn", default=_default_dsn(),
                      help=f"maintenance DSN (db 'postgres' unless it names one); default ${DSN_ENV} "
                      f"or {DEFAULT_DSN!r}")
    init.add_argument("--db", required=True, help="name of the database to create")
    init.add_argument("--data-dir", required=True, type=Path,
                      help="Odoo data_dir; files go to filestore/<db>/")
    init.add_argument("--users", type=_count(1), default=5, help="users including admin (default 5)")
    init.add_argument("--partners", type=_count(0), default=50, help="demo contacts (default 50)")
    init.add_argument("--attachments", type=_count(0), default=20, help="filestore attachments (default 20)")
    init.add_argument("--attachment-size", type=_count(1), default=2048, help="bytes each (default 2048)")
    init.add_argument("--modules", default=",".join(DEFAULT_MODULES),
                      help="comma-separated installed modules (base is always installed)")
    init.add_argument("--enterprise", action="store_true", help="also install web_enterprise (OEEL-1)")
    init.add_argument("--admin-login", default="admin")
    init.add_argument("--admin-password-env", default=ADMIN_PASSWORD_ENV, metavar="VAR",
                      help=f"environment variable holding the admin password (default {ADMIN_PASSWORD_ENV})")
    init.add_argument("--pbkdf2-rounds", type=_count(1000), default=600_000,
                      help="pbkdf2_sha512 rounds for password hashes (Odoo: 600000; tests: 1000)")
    init.add_argument("--server-version", default="17.0",
                      help="Odoo series for module versions (default 17.0)")
    init.add_argument("--replace", action="store_true", help="drop an existing database and filestore first")
    init.set_defaults(func=_init)

    neutral = commands.add_parser("neutralize", help="what odoo-bin neutralize does to a copy of production")
    neutral.add_argument("--db", required=True)
    neutral.add_argument("--dsn", default=_default_dsn())
    neutral.add_argument("--base-url", help="new web.base.url (e.g. the staging URL); not an odoo-bin option")
    neutral.add_argument("--stdout", action="store_true", help="print the SQL instead of running it")
    neutral.set_defaults(func=_neutralize)

    serve = commands.add_parser("serve", help="serve Odoo's HTTP and RPC routes like an odoo-bin server")
    serve_command.add_arguments(serve, _default_dsn(), f"default ${DSN_ENV} or {DEFAULT_DSN!r}")
    serve.set_defaults(func=serve_command.serve)
    return parser


def _init(args: argparse.Namespace) -> int:
    import psycopg

    from odoo_standin.seed import SeedError, SeedOptions, init_database

    password = os.environ.get(args.admin_password_env)
    if not password:
        print(f"odoo_standin init: environment variable {args.admin_password_env} is not set or empty; "
              "it must hold the admin password", file=sys.stderr)
        return 2
    options = SeedOptions(
        db=args.db, data_dir=args.data_dir.resolve(), admin_password=password, users=args.users,
        partners=args.partners, attachments=args.attachments, attachment_size=args.attachment_size,
        modules=tuple(m.strip() for m in args.modules.split(",") if m.strip()), enterprise=args.enterprise,
        admin_login=args.admin_login, pbkdf2_rounds=args.pbkdf2_rounds, server_version=args.server_version,
        replace=args.replace,
    )
    try:
        summary = init_database(args.dsn, options)
    except (SeedError, psycopg.Error, OSError) as exc:
        print(f"odoo_standin init: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


def _neutralize(args: argparse.Namespace) -> int:
    import psycopg
    from psycopg.conninfo import make_conninfo

    from odoo_standin.neutralize import neutralize, script

    conninfo = make_conninfo(args.dsn, dbname=args.db)
    try:
        if args.stdout:
            print(script(conninfo))
        else:
            neutralize(conninfo, args.base_url)
    except psycopg.Error as exc:
        print(f"odoo_standin neutralize: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
