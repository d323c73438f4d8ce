"""YAML read strictly: a key given twice in one mapping is an error, not a silent "the last one wins".

PyYAML's ``safe_load`` keeps the last of duplicate keys, so a file edited by hand (a second ``cron:`` added
below the first, an ``inputs`` block pasted twice) would run with whichever came last and say nothing.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let the base class report it as PyYAML does
                break
            if duplicate:
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (raising ``yaml.YAMLError`` with the key's line)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def describe(exc: yaml.YAMLError) -> str:
    """One line for an error of :func:`load`: the line it is on, and the problem."""
    mark = getattr(exc, "problem_mark", None)
    line = f"line {mark.line + 1}: " if mark else ""
    return line + " ".join(str(getattr(exc, "problem", None) or exc).split())
