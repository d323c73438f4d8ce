"""What each ``promote`` command does; ``cli/main.py`` parses the command line and calls one of these.

Every command returns its exit code, from the one table of ``cli/exits.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from promote_pipeline.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_RUNNING, EXIT_UNAVAILABLE
from promote_pipeline.cli.printer import Printer
from promote_pipeline.cli.runner import run_promotion, run_rollback
from promote_pipeline.promotion import inputs, settings
from resources import http_clients
from resources.netns_hosts import NetnsError


def _sandbox(args: argparse.Namespace, environments: int = 1) -> Any:
    from promote_pipeline.cli.sandbox import Sandbox
    from promote_pipeline.cli.sandbox_hosts import HOSTS_FILE, HostsSandbox

    root = Path(args.dir)
    # A hosts sandbox is one whose folder says so (status, down), or the one `up --topology hosts` makes.
    kind = HostsSandbox if getattr(args, "topology", "local") == "hosts" or (root / HOSTS_FILE).exists() else Sandbox
    return kind(root=root, router_kind=getattr(args, "router", "haproxy"),
                private_postgres=getattr(args, "private_postgres", False), environments=environments)


def _environments(raw: str) -> int | None:
    """``--environments``'s value, or None (said on stderr) when it is not a whole number from 1 to the maximum."""
    from promote_pipeline.cli.sandbox import MAX_ENVIRONMENTS

    text = str(raw).strip()
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_ENVIRONMENTS:
        return int(text)
    print(f"sandbox refused: --environments: must be a whole number from 1 to {MAX_ENVIRONMENTS}"
          f" (got {inputs.shown(str(raw))})", file=sys.stderr)
    return None


def cmd_sandbox(args: argparse.Namespace) -> int:
    if args.action == "up":
        # Every flag is checked before anything is made.
        environments = _environments(getattr(args, "environments", "1"))
        if environments is None:
            return EXIT_REJECTED
        webhook = getattr(args, "webhook", None)
        if webhook is not None and not webhook.startswith(("http://", "https://")):
            print(f"sandbox refused: --webhook: must be an http:// or https:// URL (got {inputs.shown(webhook)})",
                  file=sys.stderr)
            return EXIT_REJECTED
        if getattr(args, "topology", "local") == "hosts":
            from promote_pipeline.cli.sandbox_hosts import unavailable_reason

            why = unavailable_reason() or (
                "one staging/production pair only (--environments 1)" if environments != 1 else None) or (
                "the router is an adopted HAProxy (--router haproxy)" if args.router != "haproxy" else None)
            if why:
                print(f"sandbox refused: --topology hosts: {why}", file=sys.stderr)
                return EXIT_REJECTED
        box = _sandbox(args, environments)
        try:
            info = box.up()
        except NetnsError as exc:  # a host that could not be built or a service there that would not start
            print(f"sandbox up failed: --topology hosts: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        print(f"sandbox up: router {info['router']} at {info['router_url']}, serving"
              f" {info['serving']['deployment']} ({info['serving']['colour']})")
        for env in info["environments"][1:]:
            print(f"  {env['production']} (staging {env['staging']}): router at {env['router_url']}, serving"
                  f" {env['serving']['deployment']} ({env['serving']['colour']})")
        if webhook is not None:
            from promote_pipeline.cli.sandbox import WEBHOOK_KEY_REF

            box.announce_to(webhook)
            names = ", ".join(env["production"] for env in info["environments"])
            print(f"notifications: every promotion event of {names} POSTed to {webhook}, signed"
                  f" (X-Promote-Signature, HMAC-SHA256) with the key {WEBHOOK_KEY_REF} of {box.secrets_file}")
        return EXIT_OK
    box = _sandbox(args)
    if args.action == "down":
        box.down()
        print("sandbox down")
        return EXIT_OK
    if args.action in ("remember", "verify"):
        return _demo_check(box, args.action)
    if not box.settings_file.exists():
        print(f"no sandbox in {box.root}: `promote sandbox up` makes one", file=sys.stderr)
        return EXIT_REJECTED
    info = box.status()
    several = len(info["environments"]) > 1
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for env in info["environments"]:
            print(f"{env['production'] + ': ' if several else ''}router {info['router']} at {env['router_url']}"
                  f" serves {env['serving']['deployment']} ({env['serving']['colour']}, database"
                  f" {env['serving']['database']})")
        for host in info.get("hosts", []):  # a sandbox on hosts (--topology hosts)
            print(f"  host {host['name']}: {host['address']} (namespace {host['namespace']}):"
                  f" {'; '.join(host['runs'])}")
    # What is live is the router's answer; a routes.json that says otherwise is a switch the router never made.
    code = EXIT_OK
    for env in info["environments"]:
        if env["serving"]["deployment"] is None or env["serving"]["deployment"] != env["recorded"]["deployment"]:
            print(f"router disagrees with routes.json{' on ' + env['production'] if several else ''}: the router"
                  f" ({env['serving']['asked']}) serves {env['serving']['deployment']}, routes.json records"
                  f" {env['recorded']['deployment']}", file=sys.stderr)
            code = EXIT_FAILED
    return code


def _demo_check(box: Any, action: str) -> int:
    from promote_pipeline.cli import demo_check

    if not box.settings_file.exists():
        print("no sandbox: run `promote sandbox up` first", file=sys.stderr)
        return EXIT_REJECTED
    if action == "remember":
        kept = demo_check.remember(box)
        print(f"before the promotion: logged in through the router to database {kept['database']!r} as uid"
              f" {kept['uid']}; production's web.base.url {kept['web_base_url']!r} (kept in the sandbox)")
        return EXIT_OK
    try:
        checks = demo_check.verify(box)
    except FileNotFoundError:
        print("nothing remembered: run `promote sandbox remember` before the promotion", file=sys.stderr)
        return EXIT_REJECTED
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    return EXIT_OK if all(ok for _, ok, _ in checks) else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from promote_pipeline.cli.main import promotion_inputs

    raw = promotion_inputs(args)
    code, outcome, message = run_promotion(raw)
    if code == EXIT_REJECTED:  # the message says "promotion rejected: <check>: <why>" itself
        print(message, file=sys.stderr)
    elif outcome is not None:
        print(f"{outcome.status}: run {outcome.run_id}; evidence in {outcome.evidence_dir}")
    if args.json:
        print(json.dumps(outcome.model_dump(mode="json") if outcome else {"status": "rejected", "error": message}))
    return code


def cmd_preflight(args: argparse.Namespace) -> int:
    from promote_pipeline.defs.resources import build_resources
    from promote_pipeline.promotion import services
    from promote_pipeline.promotion.preflight import CheckResult, Preflight, no_such_project

    cfg = settings.load()
    res = build_resources(cfg)
    res["ops_db"].upgrade()
    staging, prod = args.staging, args.prod
    if (not staging or not prod) and not res["ops_db"].project_exists(args.project):
        # No environments to look up: check 1 fails, and every other check needs them.
        return _preflight_lines([CheckResult("project_exists", False, no_such_project(args.project))], False)
    if not staging or not prod:
        envs = res["ops_db"].environments_of(args.project)
        staging = staging or next((e.environment_id for e in envs if e.kind == "staging"), "")
        prod = prod or next((e.environment_id for e in envs if e.kind == "production"), "")
    try:
        promo = inputs.validate({"project_id": args.project, "staging_env_id": staging, "prod_env_id": prod,
                                 "user_id": args.user})
    except inputs.InputRejected as exc:
        print(f"FAIL input {exc}")
        return EXIT_REJECTED
    check = Preflight(res["ops_db"], res["odoo_host"], res["artifact_store"], promo, cfg.min_free_space_factor,
                      carried_parameters=tuple(cfg.carry_over_parameters), hosts=services.Services.from_resources(res))
    try:
        results = check.run(stop_on_failure=False)
    except inputs.InputRejected as exc:
        print(f"FAIL input {exc}")
        return EXIT_REJECTED
    finally:
        check.release()
    return _preflight_lines(results, check.passed)


def _preflight_lines(results: list[Any], passed: bool) -> int:
    """A line per check: PASS or FAIL for those that ran, SKIP for the rest; 0 when all passed, else 2."""
    from promote_pipeline.promotion.preflight import CHECKS

    for n, r in enumerate(results, 1):
        print(f"{'PASS' if r.passed else 'FAIL'} {n}. {r.name}: {r.message}")
    for n, name in enumerate(CHECKS[len(results):], len(results) + 1):
        print(f"SKIP {n}. {name}: not reached")
    return EXIT_OK if passed else EXIT_REJECTED


def cmd_verify_staging(args: argparse.Namespace) -> int:
    """Precondition 2 on its own, by the same rule (an adoption counts while nothing was deployed since)."""
    from promote_pipeline.defs.resources import build_resources
    from promote_pipeline.promotion.preflight import PreconditionFailed, staging_known_good

    env = inputs.shown(args.env)
    try:
        print(f"PASS {env}: {staging_known_good(build_resources()['ops_db'], args.env)}")
    except PreconditionFailed as exc:
        print(f"FAIL {env}: {exc}")
        return EXIT_FAILED
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """Post-promotion validation: the live deployment answers through the router and its database works."""
    from promote_pipeline.defs.resources import build_resources

    res = build_resources()
    env = res["ops_db"].environment(args.env)
    dep = res["ops_db"].active_deployment(args.env)
    if not env or not dep:
        print(f"FAIL {inputs.shown(args.env)}: unknown environment or no active deployment")
        return EXIT_FAILED
    state = res["router"].state(args.env)
    checks: list[tuple[str, bool, str]] = []
    served = state.active.name if state.active else None
    checks.append(("router serves the active deployment", served == dep.deployment_id, f"router -> {served}"))
    try:
        resp = http_clients.get(f"{state.active_url}/web/health", params={"db_server_status": "1"}, timeout=5)
        checks.append(("health through the router", resp.status_code == 200, f"HTTP {resp.status_code}"))
    except httpx.HTTPError as exc:
        checks.append(("health through the router", False, type(exc).__name__))
    try:
        with res["odoo_host"].connect(env.db_dsn_ref, dep.db_name) as conn:
            conn.execute("SELECT 1")
        checks.append(("database", True, dep.db_name))
    except Exception as exc:  # report any failure as a failed check
        checks.append(("database", False, type(exc).__name__))
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    return EXIT_OK if all(ok for _, ok, _ in checks) else EXIT_FAILED


def cmd_rollback(args: argparse.Namespace) -> int:
    code, result, message = run_rollback(args.run_id, args.reason, args.user)
    if result is None:  # a refusal says "rollback refused: <why>" itself
        print(message if code == EXIT_REJECTED else f"rollback failed: {message}", file=sys.stderr)
        return code
    if result.get("action") == "verified":
        print(f"nothing to do: run {args.run_id} had already {result['already'].replace('_', ' ')};"
              f" safe state {'verified' if result['safe'] else 'NOT verified: ' + json.dumps(result['checks'])}")
        return EXIT_OK if result["safe"] else EXIT_FAILED
    print(f"run {args.run_id}: {result['action'].replace('_', ' ')}"
          + (f"; traffic on blue {result['detection_to_blue_ms']} ms after the request"
             if "detection_to_blue_ms" in result else ""))
    return EXIT_OK


def _outcome_line(report: Any) -> str:
    out = report.outputs_object()
    if out["run_id"]:
        return (f"{report.status}: run {out['run_id']}; evidence in {out['evidence_dir']}"
                f" (Dagster run {report.dagster_run_id})")
    return f"{report.status}: Dagster run {report.dagster_run_id}" + (f": {report.error}" if report.error else "")


def _exit_code(report: Any) -> int:
    if report.rejected:
        return EXIT_REJECTED
    if not report.finished:
        return EXIT_RUNNING
    return EXIT_OK if report.status == "success" else EXIT_FAILED


def cmd_launch(args: argparse.Namespace) -> int:
    """Submit through GraphQL, follow the run's progress lines, print how it ended (as `promote run` does)."""
    from promote_pipeline.cli import launch
    from promote_pipeline.cli.main import promotion_inputs
    from resources.redaction import redact_text

    raw = promotion_inputs(args)
    try:  # the input rules, here first: a refused input never becomes a run (the job applies them again)
        inputs.validate(raw)
    except inputs.InputRejected as exc:
        message = inputs.REJECTED + redact_text(f"{exc.check}: {exc.message}")
        print(message, file=sys.stderr)
        if args.json:
            print(json.dumps({"status": "rejected", "error": message}))
        return EXIT_REJECTED
    url = launch.base_url(args.url)
    try:
        run_id = launch.submit(raw, url, source="cli")
    except launch.LaunchError as exc:
        print(f"launch failed: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"status": "not launched", "error": str(exc)}))
        return EXIT_REJECTED if exc.kind == "invalid_config" else EXIT_UNAVAILABLE
    if args.no_wait:
        print(f"submitted: Dagster run {run_id} on {url}/runs/{run_id}")
        if args.json:
            print(json.dumps({"dagster_run_id": run_id, "status": "submitted"}))
        return EXIT_OK
    printer = Printer()
    printer.note(f"submitted: Dagster run {run_id} ({url}/runs/{run_id})")
    try:
        report = launch.follow(run_id, url, on_line=printer)
    except launch.LaunchError as exc:
        printer.close()
        print(f"lost the run: {exc}; `promote status {run_id}` asks again", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        printer.close()
        print(f"stopped following Dagster run {run_id}; it goes on: `promote status {run_id}`", file=sys.stderr)
        return 130
    printer.close()
    if report.rejected:  # the job's message says "promotion rejected: <check>: <why>" itself
        print(report.error, file=sys.stderr)
    else:
        print(_outcome_line(report))
    if args.json:
        print(json.dumps(report.outputs_object()))
    return _exit_code(report)


def cmd_status(args: argparse.Namespace) -> int:
    from promote_pipeline.cli import launch

    dagster_run_id = args.run_id
    if args.run_id.startswith("run_"):  # the promotion's own id: its Dagster run, from the ops database
        from promote_pipeline.cli.main import _reach_ops_db
        from promote_pipeline.promotion.history import find_run

        _reach_ops_db()
        row = find_run(_services().ops_db, args.run_id)
        if row is None or not row.dagster_run_id:
            why = (f"no run {inputs.shown(args.run_id)} in the ops database" if row is None
                   else f"run {row.run_id} records no Dagster run")
            print(f"status refused: run: {why} (give a run_… id or a Dagster run id)", file=sys.stderr)
            return EXIT_REJECTED
        dagster_run_id = row.dagster_run_id
    try:
        report = launch.report(dagster_run_id, args.url)
    except launch.LaunchError as exc:
        print(f"status unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    out = report.outputs_object()
    if args.json:
        print(json.dumps({**out, "dagster_status": report.dagster_status, "seconds": report.seconds}))
        return _exit_code(report)
    tags = report.tags
    took = f" in {report.seconds:.1f}s" if report.seconds is not None else ""
    print(f"Dagster run {report.dagster_run_id}: {report.dagster_status}{took}")
    if "promote/prod_env" in tags:
        print(f"  promotion of {tags.get('promote/staging_env')} to {tags.get('promote/prod_env')}"
              f" (project {tags.get('promote/project')}, by {tags.get('promote/user')})")
    print(f"  status: {report.status}")
    for key in launch.OUTPUT_KEYS:
        if key != "status" and out[key]:
            print(f"  {key}: {out[key]}")
    if report.error:
        # a rejection's message says "promotion rejected: ..." itself
        print(f"  {report.error}" if report.rejected else f"  failed at {report.failed_step}: {report.error}")
    return _exit_code(report)


def _services() -> Any:
    from promote_pipeline.defs.resources import build_resources
    from promote_pipeline.promotion.services import Services

    res = build_resources()
    res["ops_db"].upgrade()
    return Services.from_resources(res)


def cmd_abort(args: argparse.Namespace) -> int:
    """Ask a promotion running elsewhere to stop and roll back, and wait until it has."""
    from promote_pipeline.promotion import abort

    svc = _services()
    try:
        abort.request(svc, args.run_id, args.user, args.reason)
    except abort.AbortRefused as exc:
        print(f"abort refused: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    status = abort.wait_ended(svc, args.run_id, args.wait)
    if status == "running":
        print(f"abort requested: run {args.run_id} still running after {args.wait:g}s (its job takes the request"
              " at its next step boundary)", file=sys.stderr)
        return EXIT_FAILED
    print(f"{status}: run {args.run_id} aborted by {args.user}")
    return EXIT_OK if status in ("rolled_back", "failed") else EXIT_FAILED


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve a promotion awaiting approval (in any process), and wait until it has taken the approval."""
    from promote_pipeline.promotion import approval

    svc = _services()
    try:
        row = approval.request(svc, args.run_id, args.user)
    except approval.ApprovalRefused as exc:
        print(f"approval refused: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    state = approval.wait_taken(svc, row.run_id, args.wait)
    if state == "approved":
        print(f"approved: run {row.run_id} by {args.user}; it cuts over now (follow it where it runs)")
        return EXIT_OK
    if state in ("waiting", "closing"):
        print(f"approval recorded: run {row.run_id} has not taken it after {args.wait:g}s (it reads approvals every"
              f" {approval.POLL_SECONDS:g}s while its worker runs)", file=sys.stderr)
    else:
        print(f"approval not taken: run {row.run_id} {state.replace('_', ' ')} first", file=sys.stderr)
    return EXIT_FAILED


def cmd_recover(args: argparse.Namespace) -> int:
    from promote_pipeline.promotion.odoo_aware import export_green_writes

    try:
        info = export_green_writes(_services(), args.run_id, Path(args.out) if args.out else None)
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    for table, rows in info["rows"].items():
        print(f"{table}: {rows} row(s)")
    print(f"written on green {info['database']} after cutover, exported to {info['folder']}")
    return EXIT_OK


def cmd_cleanup(args: argparse.Namespace) -> int:
    from promote_pipeline.cli.artifacts import print_pruned
    from promote_pipeline.promotion import cleanup, retention

    svc = _services()
    records = cleanup.run_due_tasks(svc)
    for r in records:
        print(f"task {r['task_id']} {r['task_type']}: {r['status']}"
              + (f" ({r['error']})" if r.get("error") else f" ({'; '.join(r.get('done', []))})"))
    print(f"{len(records)} due task(s) executed")
    pruned = retention.prune(svc)  # what the clean-up job does after the tasks
    print_pruned(pruned)
    failed = any(r["status"] in ("failed", "retry") for r in records) or pruned.failures
    return EXIT_FAILED if failed else EXIT_OK


def cmd_window(args: argparse.Namespace) -> int:
    from promote_pipeline.promotion import cleanup

    try:
        info = cleanup.set_window(_services(), args.run_id, args.hours)
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    print(f"run {info['run_id']}: blue will be deleted at {info['execute_at']}")
    return EXIT_OK


def cmd_drill(args: argparse.Namespace) -> int:
    from promote_pipeline.cli.drills import Drill, DrillError
    from promote_pipeline.cli.sandbox import Sandbox

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
    from promote_pipeline.defs.resources import build_resources

    applied = build_resources()["ops_db"].upgrade()
    print(f"ops schema up to date ({len(applied)} migration(s) applied now)")
    return EXIT_OK
