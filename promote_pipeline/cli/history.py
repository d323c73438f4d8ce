"""``promote history``, ``promote show RUN`` and ``promote live``: what happened, and what is live now.

``history`` lists promotions from the ops database, newest first; ``show`` prints one run's summary, found by
either of its ids (``run_…`` or the Dagster run's); ``live`` asks the router itself what each production
environment serves and checks it against ``ops.deployments``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from promote_pipeline.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_UNAVAILABLE
from promote_pipeline.promotion.inputs import shown

MAX_LIMIT = 1000


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``promote history``, ``promote show`` and ``promote live`` on the command's sub-parsers."""
    hist = sub.add_parser("history", help="one line per promotion, newest first (from the ops database)")
    hist.add_argument("--env", default=None, metavar="ENV", help="only promotions to this production environment"
                      " (default: every environment's)")
    hist.add_argument("--limit", type=int, default=20, help=f"at most this many lines (1 to {MAX_LIMIT})")
    hist.add_argument("--json", action="store_true", help="a JSON list, one object per promotion")
    hist.set_defaults(func=cmd_history, ops_db=True, exit_codes=(EXIT_OK, EXIT_REJECTED, EXIT_UNAVAILABLE))

    show = sub.add_parser("show", help="a promotion's summary (promotion_summary.md), by either of its ids")
    show.add_argument("run", help="the run id (run_…) or the Dagster run id of the promotion")
    show.add_argument("--json", action="store_true", help="the run's record and its summary as JSON")
    show.set_defaults(func=cmd_show, ops_db=True, exit_codes=(EXIT_OK, EXIT_REJECTED, EXIT_UNAVAILABLE))

    lv = sub.add_parser("live", help="per production environment: what the router serves, since when, from which run,"
                                     " and blue's retention")
    lv.add_argument("--env", default=None, metavar="ENV", help="only this production environment (default: every"
                    " production environment; the exit code then speaks for all of them)")
    lv.add_argument("--json", action="store_true", help="a JSON list, one object per production environment")
    lv.set_defaults(func=cmd_live, ops_db=True, exit_codes=(EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_UNAVAILABLE))


def _ops_db() -> Any:
    from promote_pipeline.defs.resources import build_resources

    ops_db = build_resources()["ops_db"]
    ops_db.upgrade()
    return ops_db


def _t(value: datetime | str | None) -> str:
    """A time as the lines show it: UTC to the second, '-' for none."""
    if value is None:
        return "-"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cmd_history(args: argparse.Namespace) -> int:
    from promote_pipeline.promotion.history import history

    if not 1 <= args.limit <= MAX_LIMIT:
        print(f"history refused: --limit: must be 1 to {MAX_LIMIT} (got {args.limit})", file=sys.stderr)
        return EXIT_REJECTED
    ops_db = _ops_db()
    if args.env is not None and ops_db.environment(args.env) is None:
        print(f"history refused: --env: no environment {shown(args.env)} in the ops database", file=sys.stderr)
        return EXIT_REJECTED
    entries = history(ops_db, args.env, args.limit)
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in entries]))
        return EXIT_OK
    if not entries:
        print("no promotion recorded" + (f" for {args.env}" if args.env else ""))
        return EXIT_OK
    rows = [("STARTED", "RUN", "STAGING -> PROD", "USER", "STATUS", "DURATION", "CUTOVER", "ROLLED BACK",
             "BLUE DELETION")]
    for e in entries:
        deletion = f"{_t(e.blue_deletion_at)} ({e.blue_deletion_status})" if e.blue_deletion_status else "-"
        rows.append((_t(e.started_at), e.run_id, f"{e.staging_env_id} -> {e.prod_env_id}", e.user, e.status,
                     f"{e.duration_seconds:.1f}s" if e.duration_seconds is not None else "running",
                     _t(e.cutover_at), _t(e.rolled_back_at), deletion))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from promote_pipeline.promotion.history import find_run, run_summary

    ops_db = _ops_db()
    row = find_run(ops_db, args.run)
    if row is None:
        print(f"show refused: run: no run {shown(args.run)} in the ops database (give its run_… id or the id of the"
              " Dagster run that executed it)", file=sys.stderr)
        return EXIT_REJECTED
    summary = run_summary(ops_db, row)
    if args.json:
        print(json.dumps({"run": row.model_dump(mode="json"), "summary": summary}))
    else:
        print(summary, end="")
    return EXIT_OK


def cmd_live(args: argparse.Namespace) -> int:
    from promote_pipeline.cli.commands import _services
    from promote_pipeline.promotion.history import live

    svc = _services()
    if args.env is not None:
        env = svc.ops_db.environment(args.env)
        if env is None or env.kind != "production":
            print(f"live refused: --env: {shown(args.env)} is not a production environment in the ops database",
                  file=sys.stderr)
            return EXIT_REJECTED
    entries = [e for e in live(svc) if args.env is None or e.environment_id == args.env]
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in entries]))
    elif not entries:
        print("no production environment in the ops database")
    for e in entries if not args.json else []:
        how = {"cutover": f"the cutover of run {e.by_run}", "rollback": f"the rollback of run {e.by_run}",
               "adopted": "it was adopted or seeded", "unknown": "unknown"}[e.how]
        if e.agrees:
            print(f"{e.environment_id}: {e.router_serves} serves since {_t(e.since)} ({how}); the router"
                  f" ({e.router_asked}) and ops.deployments agree")
        else:
            router = e.router_serves if e.router_error is None else f"no answer ({e.router_error})"
            print(f"{e.environment_id}: THE ROUTER AND THE OPS DATABASE DISAGREE: the router"
                  f" ({e.router_asked or 'asked'}) serves {router}; ops.deployments records {e.recorded}"
                  f" (since {_t(e.since)}, {how})")
        if e.blue_deployment:
            print(f"  blue {e.blue_deployment}: deletion "
                  + (f"due {_t(e.blue_deletion_at)} ({e.blue_deletion_status})" if e.blue_deletion_status
                     else "not scheduled"))
        if e.rollback_command:
            print(f"  roll back: {e.rollback_command}")
    return EXIT_OK if all(e.agrees for e in entries) else EXIT_FAILED
