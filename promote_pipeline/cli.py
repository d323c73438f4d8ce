"""The ``promote`` command: run promotions, check preconditions, manage the sandbox.

``promote run`` executes the Dagster job in this process against the instance of
``DAGSTER_HOME`` (an ephemeral one when unset) and prints a line per step. Exit codes: 0 success,
1 failed or rolled back, 2 rejected by input validation or a precondition.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from promote_pipeline import progress, settings
from promote_pipeline.models import PromotionOutcome

EXIT_OK, EXIT_FAILED, EXIT_REJECTED = 0, 1, 2


def _sandbox(args: argparse.Namespace) -> Any:
    from promote_pipeline.sandbox import Sandbox

    return Sandbox(root=Path(args.dir), router_kind=getattr(args, "router", "haproxy"))


def cmd_sandbox(args: argparse.Namespace) -> int:
    box = _sandbox(args)
    if args.action == "up":
        info = box.up()
        print(f"sandbox up: router {info['router']} at {info['router_url']}, serving"
              f" {info['serving']['deployment']} ({info['serving']['colour']})")
        return EXIT_OK
    if args.action == "down":
        box.down()
        print("sandbox down")
        return EXIT_OK
    info = box.status()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"router {info['router']} at {info['router_url']} serves {info['serving']['deployment']}"
              f" ({info['serving']['colour']}, database {info['serving']['database']})")
    return EXIT_OK


def run_promotion(raw: dict[str, Any], quiet: bool = False, instance: Any = None,
                  resource_overrides: dict[str, Any] | None = None) -> tuple[int, PromotionOutcome | None, str | None]:
    """Execute the job in process; return (exit code, outcome, rejection or failure message).

    ``resource_overrides`` replaces resources by key (drills use it to inject a fault into a real resource).
    """
    from dagster import DagsterInstance, Definitions

    from promote_pipeline.definitions import build_resources
    from promote_pipeline.jobs import promote_staging_to_prod
    from resources.ops_db import OpsDatabase

    cfg = settings.load()
    defs = Definitions(jobs=[promote_staging_to_prod],
                       resources={**build_resources(cfg), **(resource_overrides or {})})
    job = defs.get_job_def("promote_staging_to_prod")
    if instance is None:
        instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    listener = None if quiet else (lambda line: print(line, flush=True))
    if listener:
        progress.subscribe(listener)
    try:
        result = job.execute_in_process(
            run_config={"ops": {"create_ops_run": {"config": raw}},
                        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            instance=instance, raise_on_error=False,
            tags={"promote/project": str(raw.get("project_id")), "promote/prod_env": str(raw.get("prod_env_id")),
                  "promote/user": str(raw.get("user_id"))},
        )
    finally:
        if listener:
            progress.unsubscribe(listener)
    if result.success:
        outcome = result.output_for_node("finalize")
        return EXIT_OK, outcome, None
    first = result.get_step_failure_events()[0] if result.get_step_failure_events() else None
    message = None
    if first is not None and first.step_failure_data.error is not None:
        message = first.step_failure_data.error.message.strip().splitlines()[-1]
        message = message.split(": ", 1)[1] if message.startswith("promote_pipeline.") else message
        if first.step_key == "create_ops_run" and "PromotionRejected" in (first.step_failure_data.error.cls_name or ""):
            return EXIT_REJECTED, None, message
    row = OpsDatabase(dsn_ref=cfg.ops_dsn_ref, database=cfg.ops_database).fetch_one(
        "SELECT * FROM ops.runs WHERE dagster_run_id = %s AND operation_type = 'promote'", (result.run_id,))
    if row is None:
        return EXIT_FAILED, None, message
    meta = row["metadata"] or {}
    outcome = PromotionOutcome(run_id=row["run_id"], status=row["status"] if row["status"] != "running" else "failed",
                               evidence_dir=row["evidence_dir"] or "", blue_backup_id=meta.get("blue_backup_id"),
                               green_artifact_id=meta.get("green_artifact_id"),
                               cutover_timestamp=meta.get("cutover_timestamp"))
    return EXIT_FAILED, outcome, message


def cmd_run(args: argparse.Namespace) -> int:
    raw = {"project_id": args.project, "staging_env_id": args.staging, "prod_env_id": args.prod,
           "user_id": args.user, "rollback_window_hours": args.rollback_window_hours,
           "skip_smoke_tests": args.skip_smoke_tests, "auto_rollback_on_failure": not args.no_auto_rollback,
           "stability_window_seconds": args.stability_seconds}
    code, outcome, message = run_promotion(raw)
    if code == EXIT_REJECTED:
        print(f"rejected: {message}", file=sys.stderr)
    elif outcome is not None:
        print(f"{outcome.status}: run {outcome.run_id}; evidence in {outcome.evidence_dir}")
    if args.json:
        print(json.dumps(outcome.model_dump(mode="json") if outcome else {"status": "rejected", "error": message}))
    return code


def cmd_preflight(args: argparse.Namespace) -> int:
    from promote_pipeline import inputs
    from promote_pipeline.definitions import build_resources
    from promote_pipeline.preflight import CHECKS, Preflight

    cfg = settings.load()
    res = build_resources(cfg)
    res["ops_db"].upgrade()
    staging, prod = args.staging, args.prod
    if not staging or not prod:
        rows = res["ops_db"].fetch_all("SELECT environment_id, kind FROM ops.environments WHERE project_id = %s"
                                       " ORDER BY environment_id", (args.project,))
        staging = staging or next((r["environment_id"] for r in rows if r["kind"] == "staging"), "")
        prod = prod or next((r["environment_id"] for r in rows if r["kind"] == "production"), "")
    try:
        promo = inputs.validate({"project_id": args.project, "staging_env_id": staging, "prod_env_id": prod,
                                 "user_id": args.user})
    except inputs.InputRejected as exc:
        print(f"FAIL input {exc}")
        return EXIT_REJECTED
    check = Preflight(res["ops_db"], res["odoo_host"], res["artifact_store"], promo, cfg.min_free_space_factor)
    try:
        results = check.run(stop_on_failure=False)
    except inputs.InputRejected as exc:
        print(f"FAIL input {exc}")
        return EXIT_REJECTED
    finally:
        check.release()
    for n, r in enumerate(results, 1):
        print(f"{'PASS' if r.passed else 'FAIL'} {n}. {r.name}: {r.message}")
    for n, name in enumerate(CHECKS[len(results):], len(results) + 1):
        print(f"SKIP {n}. {name}: not reached")
    return EXIT_OK if check.passed else EXIT_REJECTED


def cmd_verify_staging(args: argparse.Namespace) -> int:
    from promote_pipeline.definitions import build_resources

    ops_db = build_resources()["ops_db"]
    row = ops_db.fetch_one("SELECT run_id, operation_type, status FROM ops.runs WHERE environment_id = %s AND"
                           " operation_type IN ('deploy', 'restore') ORDER BY created_at DESC LIMIT 1", (args.env,))
    if not row:
        print(f"FAIL {args.env}: no deploy or restore run")
        return EXIT_FAILED
    ok = row["status"] == "success"
    print(f"{'PASS' if ok else 'FAIL'} {args.env}: latest {row['operation_type']} {row['run_id']} is {row['status']}")
    return EXIT_OK if ok else EXIT_FAILED


def cmd_validate(args: argparse.Namespace) -> int:
    """Post-promotion validation: the live deployment answers through the router and its database works."""
    from promote_pipeline.definitions import build_resources
    from promote_pipeline.models import EnvironmentRecord

    res = build_resources()
    env_row = res["ops_db"].environment(args.env)
    dep = res["ops_db"].active_deployment(args.env)
    if not env_row or not dep:
        print(f"FAIL {args.env}: unknown environment or no active deployment")
        return EXIT_FAILED
    env = EnvironmentRecord.from_row(env_row)
    state = res["router"].state(args.env)
    checks: list[tuple[str, bool, str]] = []
    served = state.active.name if state.active else None
    checks.append(("router serves the active deployment", served == dep["deployment_id"], f"router -> {served}"))
    try:
        resp = httpx.get(f"{state.active_url}/web/health", params={"db_server_status": "1"}, timeout=5)
        checks.append(("health through the router", resp.status_code == 200, f"HTTP {resp.status_code}"))
    except httpx.HTTPError as exc:
        checks.append(("health through the router", False, type(exc).__name__))
    try:
        with res["odoo_host"].connect(env.db_dsn_ref, dep["db_name"]) as conn:
            conn.execute("SELECT 1")
        checks.append(("database", True, dep["db_name"]))
    except Exception as exc:  # report any failure as a failed check
        checks.append(("database", False, type(exc).__name__))
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    return EXIT_OK if all(ok for _, ok, _ in checks) else EXIT_FAILED


def cmd_db(args: argparse.Namespace) -> int:
    from promote_pipeline.definitions import build_resources

    applied = build_resources()["ops_db"].upgrade()
    print(f"ops schema up to date ({len(applied)} migration(s) applied now)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promote", description="Gated blue-green promotion of Odoo staging to"
                                                                 " production.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a promotion in this process")
    run.add_argument("--project", required=True)
    run.add_argument("--staging", required=True)
    run.add_argument("--prod", required=True)
    run.add_argument("--user", required=True)
    run.add_argument("--rollback-window-hours", type=int, default=24)
    run.add_argument("--skip-smoke-tests", action="store_true")
    run.add_argument("--no-auto-rollback", action="store_true")
    run.add_argument("--stability-seconds", type=int, default=300)
    run.add_argument("--json", action="store_true", help="print the outputs object as the last line")
    run.set_defaults(func=cmd_run)

    pre = sub.add_parser("preflight", help="the seven preconditions, one line each")
    pre.add_argument("project")
    pre.add_argument("--staging")
    pre.add_argument("--prod")
    pre.add_argument("--user", default=os.environ.get("PROMOTE_USER") or getpass.getuser())
    pre.set_defaults(func=cmd_preflight)

    ver = sub.add_parser("verify-staging", help="is the latest deploy/restore on staging successful?")
    ver.add_argument("env")
    ver.set_defaults(func=cmd_verify_staging)

    val = sub.add_parser("validate", help="post-promotion validation of an environment")
    val.add_argument("env")
    val.set_defaults(func=cmd_validate)

    db = sub.add_parser("db", help="ops database")
    db.add_argument("action", choices=["upgrade"])
    db.set_defaults(func=cmd_db)

    box = sub.add_parser("sandbox", help="the local playground (.sandbox/)")
    box.add_argument("action", choices=["up", "status", "down"])
    box.add_argument("--router", choices=["haproxy", "nginx"], default="haproxy")
    box.add_argument("--json", action="store_true")
    box.add_argument("--dir", default=str(settings.PROJECT_DIR / ".sandbox"))
    box.set_defaults(func=cmd_sandbox)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
