"""The ``promote`` command: run promotions, check preconditions, manage the sandbox.

``promote run`` executes the Dagster job in this process against the instance of
``DAGSTER_HOME`` (an ephemeral one when unset) and prints a line per step.

``promote inventory check|apply FILE`` onboards an installation (cli/inventory.py).

``promote launch`` (the same flags) submits the promotion to a running webserver through GraphQL
and follows it there; ``promote status RUN_ID`` reads a launched run back.

Every command's exit codes come from the one table of ``cli/exits.py`` (each command's --help ends with
those it can return). Nothing leaves as a traceback that an operator can cause: no settings (2), an
unreachable ops database (3, checked before a command that needs it starts) are one line each.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

from promote_pipeline.cli import artifacts as artifacts_cli
from promote_pipeline.cli import commands as cmd
from promote_pipeline.cli import exits
from promote_pipeline.cli import history as history_cli
from promote_pipeline.cli.exits import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_RUNNING,
    EXIT_UNAVAILABLE,
)
from promote_pipeline.cli.inventory import cmd_inventory
from promote_pipeline.cli.runner import end_of_start_up
from promote_pipeline.promotion import inputs, settings
from resources import secrets
from resources.ops_db import OpsDatabaseUnreachable

# The faults `promote drill` can inject (cli/drills.py acts on each).
FAULTS = ("smoke-fail", "stability-5xx", "green-crash", "router-fail", "worker-kill", "db-restart",
          "corrupt-artifact", "disk-full")


# How a flag's text becomes an input's value, by the input's type; a new type has to be given one here.
_ARG_TYPES: dict[Any, Callable[[str], Any]] = {str: str, int: int}


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")  # what argparse would name it: the namespace stays as it was


def add_input_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per promotion input, from the model: ids required, integers with the model's default, and each
    boolean a switch (``--no-…`` turns it off, any other turns it on; left out, the input takes its default)."""
    for name, field in inputs.PromotionInputs.model_fields.items():
        flag = inputs.flag(name)
        # argparse %-formats help text: a literal '%' in a description must not be read as a placeholder.
        text = inputs.flag_help(name).replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": _dest(flag), "help": text}
        if field.annotation is bool:
            parser.add_argument(flag, action="store_true", **kwargs)
        elif field.is_required():
            parser.add_argument(flag, type=_ARG_TYPES[field.annotation], required=True, **kwargs)
        else:
            parser.add_argument(flag, type=_ARG_TYPES[field.annotation], default=inputs.default(name), **kwargs)


def promotion_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The promotion's inputs from the flags of `promote run` (and `promote launch`, which has the same flags)."""
    raw: dict[str, Any] = {}
    for name, field in inputs.PromotionInputs.model_fields.items():
        flag = inputs.flag(name)
        value = getattr(args, _dest(flag))
        if field.annotation is bool:
            value = not flag.startswith("--no-") if value else inputs.default(name)
        raw[name] = value
    return raw


def _user_flag(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--user", default=os.environ.get("PROMOTE_USER") or getpass.getuser(),
                        help=f"{help} (default: $PROMOTE_USER, else the login name: %(default)s)")


# Which exit codes each command can return (cli/exits.py has their meanings; its --help lists them).
_ACTION_CODES = (EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_UNAVAILABLE)
_REFUSABLE_CODES = (EXIT_OK, EXIT_REJECTED, EXIT_UNAVAILABLE)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. A subcommand added here gets, from ``exits.finish_parser``, its defaults shown in its
    --help and the epilog of the exit codes it declares with ``set_defaults(exit_codes=...)`` (all when it declares
    none); every option needs help text (tests/cli/test_help.py walks the parser)."""
    parser = argparse.ArgumentParser(prog="promote", description="Gated blue-green promotion of Odoo staging to"
                                                                 " production.", epilog=exits.epilog())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a promotion in this process")
    add_input_flags(run)
    run.add_argument("--json", action="store_true", help="print the outputs object as the last line")
    run.set_defaults(func=cmd.cmd_run, ops_db=True, exit_codes=_ACTION_CODES)

    # The same flags as `run` (copied from it, so the two never drift apart), plus where and whether to wait.
    lau = sub.add_parser("launch", parents=[run], add_help=False, conflict_handler="resolve",
                         help="submit a promotion to a running Dagster webserver (GraphQL) and follow it to its end")
    lau.add_argument("--url", default=None, help="the webserver (default http://127.0.0.1:$DAGSTER_PORT, port 3000)")
    lau.add_argument("--no-wait", action="store_true", help="print the Dagster run id and return at once")
    lau.set_defaults(func=cmd.cmd_launch, ops_db=False, exit_codes=(*_ACTION_CODES, EXIT_RUNNING))

    st = sub.add_parser("status", help="a launched promotion's status and outputs (from the webserver)")
    st.add_argument("run_id", help="the Dagster run id `promote launch` printed, or the promotion's run id (run_…)")
    st.add_argument("--url", default=None, help="the webserver (default http://127.0.0.1:$DAGSTER_PORT, port 3000)")
    st.add_argument("--json", action="store_true", help="print the outputs object as JSON")
    st.set_defaults(func=cmd.cmd_status, exit_codes=(EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_UNAVAILABLE,
                                                     EXIT_RUNNING))

    pre = sub.add_parser("preflight", help="the seven preconditions, one line each")
    pre.add_argument("project", help="the project (ops.projects.project_id)")
    pre.add_argument("--staging", help="the staging environment (default: the project's staging environment)")
    pre.add_argument("--prod", help="the production environment (default: the project's production environment)")
    _user_flag(pre, "who would promote (precondition 4: the 'promote' permission)")
    pre.set_defaults(func=cmd.cmd_preflight, ops_db=True, exit_codes=_REFUSABLE_CODES)

    ver = sub.add_parser("verify-staging", help="is the latest deploy/restore on staging successful?")
    ver.add_argument("env", help="the staging environment (ops.environments.environment_id)")
    ver.set_defaults(func=cmd.cmd_verify_staging, ops_db=True, exit_codes=_ACTION_CODES)

    val = sub.add_parser("validate", help="post-promotion validation of an environment")
    val.add_argument("env", help="the production environment (ops.environments.environment_id)")
    val.set_defaults(func=cmd.cmd_validate, ops_db=True, exit_codes=_ACTION_CODES)

    db = sub.add_parser("db", help="ops database")
    db.add_argument("action", choices=["upgrade"], help="upgrade: apply the ops schema's pending migrations")
    db.set_defaults(func=cmd.cmd_db, ops_db=True, exit_codes=(EXIT_OK, EXIT_REJECTED, EXIT_UNAVAILABLE))

    rb = sub.add_parser("rollback", help="roll back a promotion (traffic to blue), or verify one that rolled back")
    rb.add_argument("run_id", help="the promotion's run id (ops.runs)")
    rb.add_argument("--reason", default="requested by hand", help="why (recorded in ops.run_events and evidence)")
    _user_flag(rb, "who asks (recorded with the rollback)")
    rb.set_defaults(func=cmd.cmd_rollback, ops_db=True, exit_codes=_ACTION_CODES)

    ab = sub.add_parser("abort", help="stop a running promotion (in any process) and roll it back")
    ab.add_argument("run_id", help="the promotion's run id (ops.runs)")
    _user_flag(ab, "who asks; needs 'promote' on the run's project")
    ab.add_argument("--reason", default="aborted by hand", help="why (recorded in ops.run_events)")
    ab.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the run to end")
    ab.set_defaults(func=cmd.cmd_abort, ops_db=True, exit_codes=_ACTION_CODES)

    ap = sub.add_parser("approve", help="approve a promotion awaiting approval (--require-approval): it cuts over")
    ap.add_argument("run_id", help="the promotion's run id (ops.runs: run_...), or the Dagster run id executing it")
    _user_flag(ap, "who approves; needs 'promote' on the run's project")
    ap.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the run to take the approval")
    ap.set_defaults(func=cmd.cmd_approve, ops_db=True, exit_codes=_ACTION_CODES)

    rec = sub.add_parser("recover", help="export as CSV what was written on a rolled-back green since cutover")
    rec.add_argument("run_id", help="the rolled-back promotion's run id (ops.runs)")
    rec.add_argument("--out", help="folder (default: <evidence_dir>/recovered)")
    rec.set_defaults(func=cmd.cmd_recover, ops_db=True, exit_codes=_REFUSABLE_CODES)

    cl = sub.add_parser("cleanup", help="execute due scheduled tasks (blue deletion after the rollback window)")
    cl.set_defaults(func=cmd.cmd_cleanup, ops_db=True, exit_codes=_ACTION_CODES)

    win = sub.add_parser("window", help="extend or shorten a promotion's rollback window")
    win.add_argument("run_id", help="the promotion's run id (ops.runs)")
    win.add_argument("--hours", type=int, required=True,
                     help=f"blue is deleted this many hours after the promotion completed"
                          f" ({inputs.MIN_WINDOW_HOURS} to {inputs.MAX_WINDOW_HOURS})")
    win.set_defaults(func=cmd.cmd_window, ops_db=True, exit_codes=_REFUSABLE_CODES)

    dr = sub.add_parser("drill", help="a sandbox promotion with one fault injected; exit 0 only if it ends safe")
    dr.add_argument("fault", choices=FAULTS, help="the fault to inject")
    dr.add_argument("--stability-seconds", type=int, default=8, help="the promotion's stability window")
    dr.add_argument("--json", action="store_true", help="print the drill's report as JSON")
    dr.add_argument("--dir", default=str(settings.PROJECT_DIR / ".sandbox"), help="the sandbox's folder")
    dr.set_defaults(func=cmd.cmd_drill, exit_codes=(EXIT_OK, EXIT_FAILED, EXIT_REJECTED))

    inv = sub.add_parser("inventory", help="onboard an installation from an inventory file (examples/inventory.yaml)")
    inv.add_argument("action", choices=["check", "apply"], help="check: validate, changing nothing (exit 2 with a line"
                     " per problem); apply: make the ops database, the settings file and the router match it")
    inv.add_argument("file", help="the inventory (YAML)")
    _user_flag(inv, "who apply records as the adopter of live deployments")
    inv.set_defaults(func=cmd_inventory, exit_codes=(EXIT_OK, EXIT_FAILED, EXIT_REJECTED))

    artifacts_cli.add_parser(sub)
    history_cli.add_parser(sub)

    box = sub.add_parser("sandbox", help="the local playground (.sandbox/); remember/verify: what `make demo` shows"
                                         " users and integrations keep across a promotion")
    box.add_argument("action", choices=["up", "status", "down", "remember", "verify"],
                     help="up: make and start it; status: what the router serves; down: stop and drop everything;"
                          " remember/verify: before and after a promotion, what users and integrations keep")
    box.add_argument("--router", choices=["haproxy", "nginx"], default="haproxy", help="the router `up` starts")
    box.add_argument("--private-postgres", action="store_true",
                     help="up: its databases on a PostgreSQL cluster of its own (needed by `promote drill db-restart`)")
    box.add_argument("--webhook", default=None, metavar="URL",
                     help="up: announce production's promotions to this signed JSON webhook (its key is made and"
                          " kept in the sandbox's secrets file; default: none, its promotions are announced nowhere)")
    # Read as text and checked by the command, so a bad value is one line naming the rule (argparse's own error
    # adds a usage block).
    box.add_argument("--environments", default="1", metavar="N",
                     help="up: how many production environments, each with its staging, behind the one router"
                          " (1 to 16; the first keeps the ids env_demo_prod/env_demo_staging, the others end in"
                          " _2, _3, ...; status lists every one, down removes them all)")
    box.add_argument("--topology", choices=["local", "hosts"], default="local",
                     help="up: local (everything on this machine) or hosts (db, staging, production, router and"
                          " worker as network namespaces with their own sshd, Odoo reached over SSH; needs root;"
                          " README: Hosts). status and down find a hosts sandbox by itself")
    box.add_argument("--json", action="store_true", help="status as JSON")
    box.add_argument("--dir", default=str(settings.PROJECT_DIR / ".sandbox"), help="the sandbox's folder")
    box.set_defaults(func=cmd.cmd_sandbox, exit_codes=(EXIT_OK, EXIT_FAILED, EXIT_REJECTED))
    exits.finish_parser(parser)
    return parser


def _reach_ops_db() -> None:
    """Make sure the ops database answers before a command that needs it starts: one attempt, so that a
    command started while it is away says so at once (raises OpsDatabaseUnreachable), rather than after the
    patience a running promotion has for a PostgreSQL restart."""
    from promote_pipeline.defs.resources import build_resources

    try:
        build_resources(settings.load())["ops_db"].reach()
    except (secrets.SecretNotFound, secrets.SecretsFileUnsafe) as exc:  # the settings name a DSN nothing gives
        raise settings.SettingsError(f"ops database: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    gc.disable()  # until the job is ready to run: see runner.end_of_start_up
    try:
        args = build_parser().parse_args(argv)
        if args.command not in ("run", "rollback"):  # the commands that execute a job turn it on themselves
            end_of_start_up()
        if getattr(args, "ops_db", False):  # set_defaults(ops_db=True): the command reads the ops database
            _reach_ops_db()
        return int(args.func(args))
    except settings.SettingsError as exc:  # no settings file where this process looks: one line, what to write
        print(f"promote: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except OpsDatabaseUnreachable as exc:  # before the command or during it: one line naming it, no traceback
        print(f"promote: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        gc.enable()


if __name__ == "__main__":
    sys.exit(main())
