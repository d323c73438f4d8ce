"""``odoo_standin serve``: one Odoo-like server process (or process group), as ``odoo-bin`` starts one.

Options follow ``odoo-bin``'s where the stand-in has the behaviour: ``--db`` (Odoo's ``-d``, a
comma-separated list), ``--db-filter``, ``--workers`` (0: threaded, one process, websockets on
the HTTP port; N: prefork, see :mod:`odoo_standin.prefork`), ``--gevent-port``,
``--limit-time-real``, ``--proxy-mode``, ``--no-database-list``.

Like ``odoo-bin`` (``odoo/cli/server.py`` ``check_postgres_user``), ``serve`` refuses to run
when the database user -- the DSN's ``user``, else ``$PGUSER`` -- is literally ``postgres``:
it prints Odoo's message and exits with status 1. ``--allow-superuser-role-for-tests`` is
*not* an Odoo option: it lets the project's sandbox and test-suite, which still connect as
``postgres``, run the stand-in until every deployment has a role of its own.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg.conninfo import conninfo_to_dict

if TYPE_CHECKING:  # the server's modules are imported only when serving, so the refusal comes first and fast
    from starlette.types import ASGIApp

    from odoo_standin.config import ServeConfig

POSTGRES_USER_REFUSAL = "Using the database user 'postgres' is a security risk, aborting."
ALLOW_SUPERUSER_FLAG = "--allow-superuser-role-for-tests"


def add_arguments(serve: argparse.ArgumentParser, default_dsn: str, dsn_help: str) -> None:
    serve.add_argument("--db", required=True,
                       help="database(s) HTTP requests may use, comma-separated (Odoo's -d); RPC opens any")
    serve.add_argument("--db-filter", metavar="REGEX",
                       help="databases HTTP requests may use: those the role owns matching REGEX (%%h host, %%d its "
                            "first label); replaces the --db list for that purpose, as in Odoo")
    serve.add_argument("--data-dir", required=True, type=Path,
                       help="Odoo data_dir: filestore/<db>/ and sessions/")
    serve.add_argument("--port", "--http-port", dest="port", required=True, type=int)
    serve.add_argument("--host", "--http-interface", dest="host", default="127.0.0.1")
    serve.add_argument("--dsn", default=default_dsn, help=f"DSN without dbname; {dsn_help}")
    serve.add_argument("--fault-file", type=Path, help="JSON fault switches, re-read when it changes")
    serve.add_argument("--server-version", default="17.0", help="series reported to clients (default 17.0)")
    serve.add_argument("--workers", type=int, default=0,
                       help="0 (default): threaded, one process; N: a master and N HTTP worker processes")
    serve.add_argument("--gevent-port", "--websocket-port", dest="gevent_port", type=int, default=8072,
                       help="with --workers N: port of the process serving /websocket (default 8072, as Odoo)")
    serve.add_argument("--limit-time-real", type=float, default=120.0,
                       help="with --workers N: how long a graceful stop waits for workers (default 120 s)")
    serve.add_argument("--proxy-mode", action="store_true",
                       help="trust X-Forwarded-Host/-Proto/-For for the request's URL root and client address")
    serve.add_argument("--no-database-list", dest="list_db", action="store_false",
                       help="refuse the db service's list method, as Odoo's --no-database-list")
    serve.add_argument(ALLOW_SUPERUSER_FLAG, dest="allow_superuser", action="store_true",
                       help="NOT an Odoo option: run even though the database user is 'postgres' (for the "
                            "project's sandbox and tests only)")


def database_user(dsn: str) -> str | None:
    """The role libpq will log in as, as far as ``check_postgres_user`` looks: the DSN's, else ``$PGUSER``."""
    user = conninfo_to_dict(dsn).get("user") or os.environ.get("PGUSER")
    return None if user is None else str(user)


def serve(args: argparse.Namespace) -> int:
    started_at = time.time()  # before anything slow, so not_before compares against the real start
    if database_user(args.dsn) == "postgres" and not args.allow_superuser:
        sys.stderr.write(POSTGRES_USER_REFUSAL)
        return 1
    from odoo_standin.config import version_info

    try:
        version_info(args.server_version)
    except ValueError:
        print(f"odoo_standin serve: bad --server-version {args.server_version!r} (want e.g. 17.0)",
              file=sys.stderr)
        return 2
    if args.workers < 0:
        print("odoo_standin serve: --workers must be 0 or more", file=sys.stderr)
        return 2
    return _prefork(args, started_at) if args.workers else _threaded(args, started_at)


def _config(args: argparse.Namespace, evented: bool) -> ServeConfig:
    from odoo_standin.config import ServeConfig
    from odoo_standin.databases import DbSelection

    names = tuple(name.strip() for name in args.db.split(",") if name.strip())
    return ServeConfig(dsn=args.dsn, data_dir=args.data_dir.resolve(),
                       selection=DbSelection(names, args.db_filter, args.list_db),
                       server_version=args.server_version, proxy_mode=args.proxy_mode, evented=evented,
                       websocket_port=args.gevent_port if args.workers else args.port)


def _app(args: argparse.Namespace, started_at: float, evented: bool) -> ASGIApp:
    from odoo_standin.app import create_app
    from odoo_standin.faults import FaultSwitch

    return create_app(_config(args, evented), FaultSwitch(args.fault_file, started_at=started_at))


def _threaded(args: argparse.Namespace, started_at: float) -> int:
    import uvicorn

    # proxy_headers off: X-Forwarded-* count only with --proxy-mode, as in Odoo (see dispatch.read_request).
    config = uvicorn.Config(_app(args, started_at, evented=True), host=args.host, port=args.port,
                            log_level="warning", access_log=False, proxy_headers=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler
    # that was installed before it; make that handler a clean exit rather than death by signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    server.run()
    return 0 if server.started else 1


def _prefork(args: argparse.Namespace, started_at: float) -> int:
    from odoo_standin.prefork import PreforkOptions, PreforkServer

    options = PreforkOptions(args.host, args.port, args.gevent_port, args.workers, args.limit_time_real)
    server = PreforkServer(options, http_app=lambda: _app(args, started_at, evented=False),
                           websocket_app=lambda: _app(args, started_at, evented=True))
    return server.run()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
