"""The exit codes of every ``promote`` command: one table, which the README and each command's ``--help`` show.

A command declares which of these it can return (``set_defaults(exit_codes=...)`` on its parser; all of them when
it declares none) and ``finish_parser`` writes them, with their meanings from this table, as the epilog of its
``--help``: a script reads the same numbers whichever command it calls, and a command added later gets its epilog
without anyone copying it.
"""

from __future__ import annotations

import argparse
import textwrap

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REJECTED = 2
EXIT_UNAVAILABLE = 3
EXIT_RUNNING = 4
EXIT_INTERRUPTED = 130

MEANINGS: dict[int, str] = {
    EXIT_OK: "done: the promotion or the action succeeded, or every check passed",
    EXIT_FAILED: "failed: the promotion or the action failed or was rolled back, a check failed, or the run was"
                 " still going when the wait ended",
    EXIT_REJECTED: "refused: bad input, a precondition or a refused request (one line naming the field or check"
                   " and the rule; nothing was changed), or settings missing (no settings file, or no value for"
                   " the ops database's DSN reference)",
    EXIT_UNAVAILABLE: "unavailable: a service the command needs did not answer (the ops database, the Dagster"
                      " webserver); one line naming it",
    EXIT_RUNNING: "not finished yet (the run is still going)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C) before the command could finish",
}


def epilog(codes: tuple[int, ...] | None = None) -> str:
    """The exit codes of a command's ``--help``: ``codes`` in the table's order (all of them when None), and 130,
    which any command returns when Ctrl-C stops it."""
    chosen = [c for c in MEANINGS if codes is None or c in codes or c == EXIT_INTERRUPTED]
    lines = [textwrap.fill(MEANINGS[code], width=79, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
             for code in chosen]
    return "exit codes:\n" + "\n".join(lines)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help (``(default: 120.0)``), and the epilog's lines kept as written (they
    are a table). Not for a switch (off unless given) nor an option without a default (required, or whose help
    says in words what leaving it out means)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def finish_parser(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand under it (recursively) the formatter showing defaults and the
    exit-code epilog, for the codes each declared with ``set_defaults(exit_codes=...)``."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:  # argparse offers no public walk of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                codes = sub.get_default("exit_codes")
                sub.epilog = epilog(tuple(codes) if codes else None)
                finish_parser(sub)
