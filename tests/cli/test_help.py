"""Every command's --help: each option explained with its default, and the exit codes it can return, from the one
table of cli/exits.py. The walk covers whatever the parser holds, so a command added later is held to it too."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from promote_pipeline.cli import exits
from promote_pipeline.cli.main import build_parser

PROMOTE = Path(sys.executable).with_name("promote")


def _subcommands(parser: argparse.ArgumentParser,
                 prefix: str = "promote") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every subcommand's parser, recursively, with its full name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subcommands(sub, f"{prefix} {name}")


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            yield action


def test_the_walk_finds_every_command() -> None:
    names = {name for name, _ in _subcommands(build_parser())}
    assert {"promote run", "promote launch", "promote rollback", "promote window", "promote abort"} <= names
    assert len(names) >= 15, names


def test_every_option_of_every_command_has_help() -> None:
    missing = [f"{name} {action.option_strings or action.dest}" for name, sub in _subcommands(build_parser())
               for action in _options(sub) if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []


def test_every_default_is_shown() -> None:
    """An option with a default shows it; one without (None) says in its help what leaving it out means, unless it
    is required; a switch is off unless given."""
    unshown = []
    for name, sub in _subcommands(build_parser()):
        formatter = sub._get_formatter()
        for action in _options(sub):
            if not action.option_strings or action.required or isinstance(action.default, bool):
                continue
            shown = formatter._expand_help(action)  # the option's help as --help prints it, before wrapping
            if "default" not in shown or (action.default is not None and str(action.default) not in shown):
                unshown.append(f"{name} {action.option_strings[0]}: {shown!r}")
    assert unshown == []


def test_every_command_ends_its_help_with_its_exit_codes() -> None:
    for name, sub in _subcommands(build_parser()):
        codes = sub.get_default("exit_codes")
        assert codes, f"{name} declares no exit codes (set_defaults(exit_codes=...))"
        assert sub.epilog == exits.epilog(tuple(codes)), name
        assert sub.format_help().rstrip().endswith(exits.epilog(tuple(codes)).rstrip()), name
        for code in (*codes, exits.EXIT_INTERRUPTED):
            assert f"\n  {code:<4} {exits.MEANINGS[code][:30]}" in sub.epilog, (name, code)


def test_commands_agree_on_what_a_refusal_returns() -> None:
    """A refused request is 2 whichever command refuses it (rollback used to say 1 where window and recover said
    2), and the table says so once."""
    parser = build_parser()
    subs = dict(_subcommands(parser))
    for name in ("promote run", "promote rollback", "promote window", "promote recover", "promote abort",
                 "promote preflight"):
        assert exits.EXIT_REJECTED in subs[name].get_default("exit_codes"), name
    assert exits.MEANINGS[exits.EXIT_REJECTED].startswith("refused")


def test_the_real_entry_point_prints_the_epilog() -> None:
    shown = subprocess.run([str(PROMOTE), "rollback", "--help"], capture_output=True, text=True, timeout=60,
                           check=False)
    assert shown.returncode == 0, shown.stderr
    assert "exit codes:\n  0    done" in shown.stdout and "  2    refused: bad input" in shown.stdout
    assert "(default: requested by hand)" in " ".join(shown.stdout.split())
