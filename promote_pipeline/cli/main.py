"""The ``promote`` command: run promotions, check preconditions, manage the sandbox.

``promote run`` executes the Dagster job in this process against the instance of
``DAGSTER_HOME`` (an ephemeral one when unset) and prints a line per step. Exit codes: 0 success,
1 failed or rolled back, 2 rejected by input validation or a precondition.

``promote inventory check|apply FILE`` onboards an installation (cli/inventory.py: exit 0 fine or applied, 1 a
change failed, 2 problems, one line each, and nothing changed).

``promote launch`` (the same flags) submits the promotion to a running webserver through GraphQL
and follows it there; ``promote status RUN_ID`` reads a launched run back. Both add 3: the
webserver could not take or report the run; ``status`` adds 4: not finished yet.
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
from promote_pipeline.cli.inventory import cmd_inventory
from promote_pipeline.cli.runner import end_of_start_up
from promote_pipeline.promotion import inputs, settings

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
        kwargs: dict[str, Any] = {"dest": _dest(flag), "help": inputs.flag_help(name)}
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promote", description="Gated blue-green promotion of Odoo staging to"
                                                                 " production.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a promotion in this process")
    add_input_flags(run)
    run.add_argument("--json", action="store_true", help="print the outputs object as the last line")
    run.set_defaults(func=cmd.cmd_run)

    # The same flags as `run` (copied from it, so the two never drift apart), plus where and whether to wait.
    lau = sub.add_parser("launch", parents=[run], add_help=False, conflict_handler="resolve",
                         help="submit a promotion to a running Dagster webserver (GraphQL) and follow it to its end")
    lau.add_argument("--url", default=None, help="the webserver (default http://127.0.0.1:$DAGSTER_PORT, port 3000)")
    lau.add_argument("--no-wait", action="store_true", help="print the Dagster run id and return at once")
    lau.set_defaults(func=cmd.cmd_launch)

    st = sub.add_parser("status", help="a launched promotion's status and outputs (from the webserver)")
    st.add_argument("run_id", help="the Dagster run id `promote launch` printed")
    st.add_argument("--url", default=None, help="the webserver (default http://127.0.0.1:$DAGSTER_PORT, port 3000)")
    st.add_argument("--json", action="store_true", help="print the outputs object as JSON")
    st.set_defaults(func=cmd.cmd_status)

    pre = sub.add_parser("preflight", help="the seven preconditions, one line each")
    pre.add_argument("project")
    pre.add_argument("--staging")
    pre.add_argument("--prod")
    pre.add_argument("--user", default=os.environ.get("PROMOTE_USER") or getpass.getuser())
    pre.set_defaults(func=cmd.cmd_preflight)

    ver = sub.add_parser("verify-staging", help="is the latest deploy/restore on staging successful?")
    ver.add_argument("env")
    ver.set_defaults(func=cmd.cmd_verify_staging)

    val = sub.add_parser("validate", help="post-promotion validation of an environment")
    val.add_argument("env")
    val.set_defaults(func=cmd.cmd_validate)

    db = sub.add_parser("db", help="ops database")
    db.add_argument("action", choices=["upgrade"])
    db.set_defaults(func=cmd.cmd_db)

    rb = sub.add_parser("rollback", help="roll back a promotion (traffic to blue), or verify one that rolled back")
    rb.add_argument("run_id")
    rb.add_argument("--reason", default="requested by hand")
    rb.add_argument("--user", default=os.environ.get("PROMOTE_USER") or getpass.getuser())
    rb.set_defaults(func=cmd.cmd_rollback)

    ab = sub.add_parser("abort", help="stop a running promotion (in any process) and roll it back")
    ab.add_argument("run_id", help="the promotion's run id (ops.runs)")
    ab.add_argument("--user", default=os.environ.get("PROMOTE_USER") or getpass.getuser())
    ab.add_argument("--reason", default="aborted by hand")
    ab.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the run to end (default 120)")
    ab.set_defaults(func=cmd.cmd_abort)

    rec = sub.add_parser("recover", help="export as CSV what was written on a rolled-back green since cutover")
    rec.add_argument("run_id")
    rec.add_argument("--out", help="folder (default: <evidence_dir>/recovered)")
    rec.set_defaults(func=cmd.cmd_recover)

    cl = sub.add_parser("cleanup", help="execute due scheduled tasks (blue deletion after the rollback window)")
    cl.set_defaults(func=cmd.cmd_cleanup)

    win = sub.add_parser("window", help="extend or shorten a promotion's rollback window")
    win.add_argument("run_id")
    win.add_argument("--hours", type=int, required=True)
    win.set_defaults(func=cmd.cmd_window)

    dr = sub.add_parser("drill", help="a sandbox promotion with one fault injected; exit 0 only if it ends safe")
    dr.add_argument("fault", choices=FAULTS)
    dr.add_argument("--stability-seconds", type=int, default=8)
    dr.add_argument("--json", action="store_true")
    dr.add_argument("--dir", default=str(settings.PROJECT_DIR / ".sandbox"))
    dr.set_defaults(func=cmd.cmd_drill)

    inv = sub.add_parser("inventory", help="onboard an installation from an inventory file (examples/inventory.yaml)")
    inv.add_argument("action", choices=["check", "apply"], help="check: validate, changing nothing (exit 2 with a line"
                     " per problem); apply: make the ops database, the settings file and the router match it")
    inv.add_argument("file", help="the inventory (YAML)")
    inv.add_argument("--user", default=os.environ.get("PROMOTE_USER") or getpass.getuser(),
                     help="who apply records as the adopter of live deployments")
    inv.set_defaults(func=cmd_inventory)

    artifacts_cli.add_parser(sub)

    box = sub.add_parser("sandbox", help="the local playground (.sandbox/); remember/verify: what `make demo` shows"
                                         " users and integrations keep across a promotion")
    box.add_argument("action", choices=["up", "status", "down", "remember", "verify"])
    box.add_argument("--router", choices=["haproxy", "nginx"], default="haproxy")
    box.add_argument("--json", action="store_true")
    box.add_argument("--dir", default=str(settings.PROJECT_DIR / ".sandbox"))
    box.set_defaults(func=cmd.cmd_sandbox)
    return parser


def main(argv: list[str] | None = None) -> int:
    gc.disable()  # until the job is ready to run: see runner.end_of_start_up
    try:
        args = build_parser().parse_args(argv)
        if args.command not in ("run", "rollback"):  # the commands that execute a job turn it on themselves
            end_of_start_up()
        return int(args.func(args))
    except settings.SettingsError as exc:  # no settings file where this process looks: one line, what to write
        print(f"promote: {exc}", file=sys.stderr)
        return cmd.EXIT_REJECTED
    except KeyboardInterrupt:
        return 130
    finally:
        gc.enable()


if __name__ == "__main__":
    sys.exit(main())
