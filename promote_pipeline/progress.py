"""Step progress for people watching a run: a line as each step starts and ends.

Dagster's own event log keeps the full record; this is the short form the CLI prints. The job
reports here and whoever launched the run in this process may subscribe (``promote run``
does); with no subscriber it costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def say(line: str) -> None:
    for listener in list(_listeners):
        listener(line)


@contextmanager
def step(number: int, name: str) -> Iterator[None]:
    start = time.monotonic()
    say(f"[{number}/8] {name} ...")
    try:
        yield
    except BaseException:
        say(f"[{number}/8] {name} FAILED after {time.monotonic() - start:.1f}s")
        raise
    say(f"[{number}/8] {name} done in {time.monotonic() - start:.1f}s")
