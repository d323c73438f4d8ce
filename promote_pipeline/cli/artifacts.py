"""``promote artifacts list`` and ``promote artifacts prune [--dry-run]``: the store's artifacts and their retention.

``list`` prints one line per artifact (a row of ``ops.artifacts`` or a folder of the store with none): what it is,
its size, and why it is kept and until when, or why the next prune deletes it. ``prune`` deletes what the retention
rule lets go (the clean-up job does the same when its sensor finds work) and says what it freed; ``--dry-run`` says
what would go and how many bytes that frees, changing nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from promote_pipeline.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_UNAVAILABLE
from promote_pipeline.promotion.inputs import IDENTIFIER, IDENTIFIER_RULE
from promote_pipeline.promotion.models import ArtifactVerdict, PruneReport, human_size

RULE = """\
The rule (settings.json, "retention"): green snapshots kept while among the newest green_keep_last (default 3) of
their staging environment and at least green_keep_days (14); blue backups of failed and rolled-back runs kept
blue_keep_days (7) after the run ended; folders with no ops row swept orphan_grace_hours (24) after their last
change. Never deleted, whatever the rule: an artifact of a run still running, one a live deployment was restored
from, a blue backup within its rollback window. The clean-up job prunes too (its sensor launches it when a task is
due or an artifact may go). Exit 1 from prune: a deletion failed (a line each, on stderr); the others were done,
and the next prune tries again.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``promote artifacts list|prune`` on the command's sub-parsers."""
    raw = argparse.RawDescriptionHelpFormatter
    art = sub.add_parser("artifacts", help="the artifact store: list artifacts and their retention, prune them",
                         description="The artifacts in the store, why each is kept and until when; delete those the"
                         " retention rule lets go.\n\n" + RULE, formatter_class=raw)
    actions = art.add_subparsers(dest="action", required=True, metavar="{list,prune}")
    ls = actions.add_parser("list", help="one line per artifact: size, why kept and until when (changes nothing)",
                            formatter_class=raw)
    ls.add_argument("--environment", default=None, metavar="ENV",
                    help="only this environment's artifacts (default: every environment's, and orphan folders)")
    ls.add_argument("--json", action="store_true", help="one JSON object instead of the table (default: the table)")
    pr = actions.add_parser("prune", help="delete what the retention rule lets go, and the filestore objects no"
                            " remaining artifact names", description=RULE, formatter_class=raw)
    pr.add_argument("--dry-run", action="store_true",
                    help="say what would go and how many bytes it frees, deleting nothing (default: off)")
    pr.add_argument("--json", action="store_true", help="one JSON object instead of the lines (default: the lines)")
    # Every action reads the ops database (checked once before it starts) and may find it away: exit 3.
    codes = (EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_UNAVAILABLE)
    for parser in (art, ls, pr):
        parser.set_defaults(func=cmd_artifacts, ops_db=True, exit_codes=codes)


def _kept(v: ArtifactVerdict) -> str:
    if not v.keep:
        return f"GOES at the next prune: {v.why}"
    if v.retained_until is None:
        return f"kept for as long as this holds: {v.why}"
    return f"kept until {v.retained_until.isoformat(timespec='seconds')}: {v.why}"


def _table(verdicts: list[ArtifactVerdict]) -> list[str]:
    head = ("ID", "ENVIRONMENT", "ROLE", "RUN", "STATUS", "SIZE", "CREATED", "RETAINED UNTIL / WHY")
    rows = [(v.artifact_id, v.environment_id or "?", v.role or "?", v.run_id or "-",
             v.run_status if v.state == "stored" and v.run_status else v.state, human_size(v.size_bytes),
             v.created_at.isoformat(timespec="seconds") if v.created_at else "?", _kept(v)) for v in verdicts]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in [head, *rows]]


def print_pruned(report: PruneReport) -> None:
    """What a prune deleted (or would delete), a line each, and the total."""
    verb = "would delete" if report.dry_run else "deleted"
    for v in report.going:
        size = human_size(v.size_bytes)
        print(f"{verb} {v.artifact_id} ({v.role or '?'} of {v.environment_id or '?'}, {size}): {v.why}")
    for line in report.skipped:
        print(f"left alone {line}")
    for line in report.failures:
        print(f"FAILED {line}", file=sys.stderr)
    if not report.going:
        print(f"artifacts: nothing to delete ({report.kept} kept)")
        return
    frees = "would free" if report.dry_run else "freed"
    print(f"artifacts: {verb} {len(report.going)}, kept {report.kept}; {frees} {report.freed_bytes} bytes"
          f" ({human_size(report.freed_bytes)}: {report.folder_bytes} in artifact folders, {report.object_bytes} in"
          f" {report.objects} filestore object(s) no remaining artifact names)")


def cmd_artifacts(args: argparse.Namespace) -> int:
    from promote_pipeline.cli.commands import _services
    from promote_pipeline.promotion import retention  # the store and the ops database: only when asked

    env = getattr(args, "environment", None)
    if env is not None and not re.fullmatch(IDENTIFIER, env):
        print(f"refused: --environment {IDENTIFIER_RULE} (got {env[:40]!r})", file=sys.stderr)
        return EXIT_REJECTED
    svc = _services()
    if args.action == "list":
        if env is not None and svc.ops_db.environment(env) is None:
            print(f"refused: --environment: no environment {env!r} in the ops database", file=sys.stderr)
            return EXIT_REJECTED
        verdicts = [v for v in retention.evaluate(svc) if env is None or v.environment_id == env]
        if args.json:
            print(json.dumps({"artifacts": [v.model_dump(mode="json") for v in verdicts]}))
        elif not verdicts:
            print("no artifacts" + (f" of {env}" if env else ""))
        else:
            print("\n".join(_table(verdicts)))
        return EXIT_OK
    report = retention.prune(svc, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({**report.model_dump(mode="json"), "freed_bytes": report.freed_bytes}))
    else:
        print_pruned(report)
    return EXIT_FAILED if report.failures else EXIT_OK
