"""``promote inventory check FILE`` and ``promote inventory apply FILE``: onboarding an installation.

Both read the inventory, its settings and the machine the same way (``promotion/inventory/``); a problem is a
line naming the path in the file and the rule, all of them at once, and nothing is changed (exit 2). ``check``
then says in a few lines what the inventory holds and how much apply would change (exit 0), having written
nothing and started nothing. ``apply`` makes the changes in order and prints each, a line each (exit 0; a second
apply says there is nothing to change); a change that fails stops it with what failed (exit 1): what was done
before stays, and applying again picks up from there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from promote_pipeline.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_REJECTED
from promote_pipeline.promotion.inventory import apply as inventory_apply
from promote_pipeline.promotion.inventory import probes, rules
from promote_pipeline.promotion.inventory.apply import Change
from promote_pipeline.promotion.inventory.model import Inventory
from promote_pipeline.promotion.inventory.rules import Problem
from promote_pipeline.promotion.services import Services


def cmd_inventory(args: argparse.Namespace) -> int:
    from promote_pipeline.defs.resources import build_resources

    path = Path(args.file)
    try:
        inv = rules.parse(path)
        cfg = rules.settings_of(inv)
    except rules.InventoryProblems as exc:
        return _refuse(exc.problems)
    svc = Services.from_resources(build_resources(cfg))
    problems, recorded = probes.probe(inv, cfg, svc)
    if problems or recorded is None:
        return _refuse(problems)
    changes = inventory_apply.plan(inv, svc, recorded, args.user)
    if args.action == "check":
        _summary(path, inv, changes)
        return EXIT_OK
    return _apply(path, changes)


def _refuse(problems: list[Problem]) -> int:
    for problem in problems:
        print(problem)
    return EXIT_REJECTED


def _summary(path: Path, inv: Inventory, changes: list[Change]) -> None:
    fronts = ", ".join(inv.router.fronts) or "nothing"
    print(f"inventory {path}: fine ({len(inv.projects)} project(s), {len(inv.environments)} environment(s),"
          f" {len(inv.users)} user(s); router {inv.router.kind} fronting {fronts})")
    if not changes:
        print("apply would change nothing: the settings file, the ops database and the router match it")
        return
    adopting = [c.adoption for c in changes if c.adoption]
    also = f", adopting the live deployments of {', '.join(adopting)} (each Odoo restarted once)" if adopting else ""
    print(f"apply would make {len(changes)} change(s){also}: `promote inventory apply {path}`")


def _apply(path: Path, changes: list[Change]) -> int:
    if not changes:
        print(f"nothing to change: the settings file, the ops database and the router match {path}")
        return EXIT_OK
    for done, change in enumerate(changes):
        try:
            said = change.make()
        except Exception as exc:  # one line, whatever broke: what was done stays, and applying again resumes
            print(f"FAILED {change.line}: {' '.join(str(exc).split())[:400]}")
            print(f"{done} change(s) made before it; fix the cause and apply again")
            return EXIT_FAILED
        print(change.line)
        for line in said:
            print(f"  {line}")
    print(f"{len(changes)} change(s) made from {path}")
    return EXIT_OK
