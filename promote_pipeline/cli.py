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


def _execute(job_name: str, run_config: dict[str, Any], tags: dict[str, str], quiet: bool, instance: Any,
             resource_overrides: dict[str, Any] | None) -> Any:
    """Execute one of the code location's jobs in this process."""
    from dagster import DagsterInstance, Definitions

    from promote_pipeline.definitions import build_definitions, build_resources

    cfg = settings.load()
    defs = build_definitions(cfg)
    if resource_overrides:
        from promote_pipeline import jobs

        defs = Definitions(jobs=[jobs.promote_staging_to_prod, jobs.rollback_promotion, jobs.cleanup_due_tasks],
                           resources={**build_resources(cfg), **resource_overrides})
    job = defs.get_job_def(job_name)
    if instance is None:
        instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    listener = None if quiet else (lambda line: print(line, flush=True))
    if listener:
        progress.subscribe(listener)
    try:
        return job.execute_in_process(
            run_config={**run_config, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            instance=instance, raise_on_error=False, tags=tags)
    finally:
        if listener:
            progress.unsubscribe(listener)


def _failure_message(result: Any) -> tuple[str | None, str | None, str | None]:
    """(step key, exception class name, message) of the first failed step of an in-process result."""
    events = result.get_step_failure_events()
    if not events or events[0].step_failure_data.error is None:
        return None, None, None
    error = events[0].step_failure_data.error
    message: str = " ".join(error.message.split())
    message = message.split(": ", 1)[1] if message.startswith(("promote_pipeline.", "dagster.")) else message
    return events[0].step_key, error.cls_name, message


def run_promotion(raw: dict[str, Any], quiet: bool = False, instance: Any = None,
                  resource_overrides: dict[str, Any] | None = None) -> tuple[int, PromotionOutcome | None, str | None]:
    """Execute the job in process; return (exit code, outcome, rejection or failure message).

    Inputs are checked first with the same rules the job applies, so that input Dagster's config
    types would refuse (a window that is not an integer) is also refused here with one message
    naming the field and a rejection record. ``resource_overrides`` replaces resources by key
    (drills use it to inject a fault into a real resource).
    """
    from promote_pipeline import inputs as input_rules
    from promote_pipeline.launch import run_tags
    from resources.ops_db import OpsDatabase

    cfg = settings.load()
    ops_db = OpsDatabase(dsn_ref=cfg.ops_dsn_ref, database=cfg.ops_database)
    try:
        input_rules.validate(raw)
    except input_rules.InputRejected as exc:
        from promote_pipeline.ops import printable_inputs
        from promote_pipeline.redaction import redact, redact_text

        rejection = redact_text(f"{exc.check}: {exc.message}")
        ops_db.upgrade()
        ops_db.record_rejection(exc.check, rejection, redact(printable_inputs(raw)))
        return EXIT_REJECTED, None, f"promotion rejected: {rejection}"
    result = _execute("promote_staging_to_prod", {"ops": {"create_ops_run": {"config": raw}}}, run_tags(raw),
                      quiet, instance, resource_overrides)
    if result.success:
        return EXIT_OK, result.output_for_node("finalize"), None
    step, cls_name, message = _failure_message(result)
    if step == "create_ops_run" and "PromotionRejected" in (cls_name or ""):
        return EXIT_REJECTED, None, message
    row = ops_db.fetch_one(
        "SELECT * FROM ops.runs WHERE dagster_run_id = %s AND operation_type = 'promote'", (result.run_id,))
    if row is None:
        return EXIT_FAILED, None, message
    meta = row["metadata"] or {}
    outcome = PromotionOutcome(run_id=row["run_id"], status=row["status"] if row["status"] != "running" else "failed",
                               evidence_dir=row["evidence_dir"] or "", blue_backup_id=meta.get("blue_backup_id"),
                               green_artifact_id=meta.get("green_artifact_id"),
                               cutover_timestamp=meta.get("cutover_timestamp"))
    return EXIT_FAILED, outcome, message


def run_rollback(run_id: str, reason: str, requested_by: str, quiet: bool = False,
                 instance: Any = None) -> tuple[int, dict[str, Any] | None, str | None]:
    """Execute rollback_promotion in process for one promotion; (exit code, result, refusal message)."""
    config = {"run_id": run_id, "reason": reason, "requested_by": requested_by, "manual": True}
    result = _execute("rollback_promotion", {"ops": {"roll_back_promotion": {"config": config}}},
                      {"promote/rollback_of": run_id}, quiet, instance, None)
    if result.success:
        return EXIT_OK, result.output_for_node("roll_back_promotion"), None
    return EXIT_FAILED, None, _failure_message(result)[2]


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


def cmd_rollback(args: argparse.Namespace) -> int:
    code, result, message = run_rollback(args.run_id, args.reason, args.user)
    if result is None:
        print(f"rollback refused: {message}", file=sys.stderr)
        return code
    if result.get("action") == "verified":
        print(f"nothing to do: run {args.run_id} had already {result['already'].replace('_', ' ')};"
              f" safe state {'verified' if result['safe'] else 'NOT verified: ' + json.dumps(result['checks'])}")
        return EXIT_OK if result["safe"] else EXIT_FAILED
    print(f"run {args.run_id}: {result['action'].replace('_', ' ')}"
          + (f"; traffic on blue {result['detection_to_blue_ms']} ms after the request"
             if "detection_to_blue_ms" in result else ""))
    return EXIT_OK


def _services() -> Any:
    from promote_pipeline.definitions import build_resources
    from promote_pipeline.services import Services

    res = build_resources()
    res["ops_db"].upgrade()
    return Services(ops_db=res["ops_db"], host=res["odoo_host"], store=res["artifact_store"], router=res["router"])


def cmd_cleanup(args: argparse.Namespace) -> int:
    from promote_pipeline import cleanup

    records = cleanup.run_due_tasks(_services(), settings.load().evidence_root)
    for r in records:
        print(f"task {r['task_id']} {r['task_type']}: {r['status']}"
              + (f" ({r['error']})" if r.get("error") else f" ({'; '.join(r.get('done', []))})"))
    print(f"{len(records)} due task(s) executed")
    return EXIT_FAILED if any(r["status"] in ("failed", "retry") for r in records) else EXIT_OK


def cmd_window(args: argparse.Namespace) -> int:
    from promote_pipeline import cleanup

    try:
        info = cleanup.set_window(_services(), args.run_id, args.hours)
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    print(f"run {info['run_id']}: blue will be deleted at {info['execute_at']}")
    return EXIT_OK


def cmd_drill(args: argparse.Namespace) -> int:
    from promote_pipeline.drills import Drill, DrillError
    from promote_pipeline.sandbox import Sandbox

    box = Sandbox(root=Path(args.dir))
    if not box.settings_file.exists():
        print("no sandbox: run `promote sandbox up` first", file=sys.stderr)
        return EXIT_REJECTED
    try:
        report = Drill(box, args.fault, stability_seconds=args.stability_seconds).run()
    except DrillError as exc:
        print(f"drill error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(report, indent=2, default=str) if args.json else
          f"drill {args.fault}: {'SAFE' if report['safe'] else 'NOT SAFE'} {report['checks']}")
    return EXIT_OK if report["safe"] else EXIT_FAILED


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

    rb = sub.add_parser("rollback", help="roll back a promotion (traffic to blue), or verify one that rolled back")
    rb.add_argument("run_id")
    rb.add_argument("--reason", default="requested by hand")
    rb.add_argument("--user", default=os.environ.get("PROMOTE_USER") or getpass.getuser())
    rb.set_defaults(func=cmd_rollback)

    cl = sub.add_parser("cleanup", help="execute due scheduled tasks (blue deletion after the rollback window)")
    cl.set_defaults(func=cmd_cleanup)

    win = sub.add_parser("window", help="extend or shorten a promotion's rollback window")
    win.add_argument("run_id")
    win.add_argument("--hours", type=int, required=True)
    win.set_defaults(func=cmd_window)

    from promote_pipeline.drills import FAULTS

    dr = sub.add_parser("drill", help="a sandbox promotion with one fault injected; exit 0 only if it ends safe")
    dr.add_argument("fault", choices=FAULTS)
    dr.add_argument("--stability-seconds", type=int, default=8)
    dr.add_argument("--json", action="store_true")
    dr.add_argument("--dir", default=str(settings.PROJECT_DIR / ".sandbox"))
    dr.set_defaults(func=cmd_drill)

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
