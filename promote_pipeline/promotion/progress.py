"""Step progress for people watching a run: a line as each step starts and ends.

Dagster's own event log keeps the full record; this is the short form. The job reports here
(``step`` around each of the eight steps, ``say`` for notes such as the stability figures) and
every line goes to the listeners of this process: ``promote run`` subscribes a terminal printer
(``cli.printer``), and the code location subscribes a bridge that writes each line, redacted, into
Dagster's event log as an INFO message of the step that said it (``defs.event_log``), so that the
UI's run view shows it and ``promote launch`` reads the very same lines back through GraphQL.
This module knows neither: the rules report, the layers above decide where it goes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from promote_pipeline.promotion.steps import Step

Listener = Callable[[str], None]
_listeners: list[Listener] = []
# When each step of this process started and ended, by (thread, step name): the run view reports durations.
_timings: dict[tuple[int, str], list[float | None]] = {}


def subscribe(listener: Listener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def say(line: str) -> None:
    for listener in list(_listeners):
        listener(line)


@contextmanager
def step(current: Step) -> Iterator[None]:
    start = time.monotonic()
    key = (threading.get_ident(), current.name)
    _timings[key] = [start, None]
    say(f"{current.label} ...")
    try:
        yield
    except BaseException:
        _timings[key][1] = time.monotonic()
        say(f"{current.label} FAILED after {time.monotonic() - start:.1f}s")
        raise
    _timings[key][1] = time.monotonic()
    say(f"{current.label} done in {time.monotonic() - start:.1f}s")


def elapsed(name: str) -> float | None:
    """Seconds the named step took in this thread (so far, if it still runs); None if it did not run here."""
    timing = _timings.get((threading.get_ident(), name))
    if timing is None or timing[0] is None:
        return None
    return round((timing[1] or time.monotonic()) - timing[0], 3)
