"""Step progress for people watching a run: a line as each step starts and ends.

Dagster's own event log keeps the full record; this is the short form. The job reports here
(``step`` around each of the eight steps, ``say`` for notes such as the stability figures) and
every line goes two ways:

- to the listeners of this process (``promote run`` subscribes a ``Printer``), and
- into Dagster's event log as an INFO message of the step that said it, redacted, so that the UI's
  run view shows it and ``promote launch``, which follows a run on a webserver through GraphQL,
  reads the very same lines and prints them with the same ``Printer``.

``Printer`` renders the lines for a terminal (finished steps as lines, the running step as a
status line redrawn every quarter second with its elapsed time and, in the stability window, the
live error rate and time left) or, when the output is not a terminal, as plain lines.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

Listener = Callable[[str], None]
_listeners: list[Listener] = []
# When each step of this process started and ended, by (thread, step name): the run view reports durations.
_timings: dict[tuple[int, str], list[float | None]] = {}
STEPS = 8


def subscribe(listener: Listener) -> None:
    _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def say(line: str) -> None:
    for listener in list(_listeners):
        listener(line)
    _to_event_log(line)


def _to_event_log(line: str) -> None:
    """The line as an INFO message of the running op, if this thread runs one."""
    from dagster import OpExecutionContext

    try:
        context = OpExecutionContext.get()
    except Exception:  # no op runs in this thread (a CLI command, a thread pool worker)
        return
    from promote_pipeline.promotion.redaction import redact_text

    context.log.info(redact_text(line.strip()))


@contextmanager
def step(number: int, name: str) -> Iterator[None]:
    start = time.monotonic()
    key = (threading.get_ident(), name)
    _timings[key] = [start, None]
    say(f"[{number}/{STEPS}] {name} ...")
    try:
        yield
    except BaseException:
        _timings[key][1] = time.monotonic()
        say(f"[{number}/{STEPS}] {name} FAILED after {time.monotonic() - start:.1f}s")
        raise
    _timings[key][1] = time.monotonic()
    say(f"[{number}/{STEPS}] {name} done in {time.monotonic() - start:.1f}s")


def elapsed(name: str) -> float | None:
    """Seconds the named step took in this thread (so far, if it still runs); None if it did not run here."""
    timing = _timings.get((threading.get_ident(), name))
    if timing is None or timing[0] is None:
        return None
    return round((timing[1] or time.monotonic()) - timing[0], 3)


# -- reading the lines back -------------------------------------------------------------------------
_STEP = re.compile(r"^\[(\d+)/(\d+)\] (\S+) (?:(\.\.\.)|done in ([\d.]+)s|FAILED after ([\d.]+)s)$")
_STABILITY = re.compile(r"stability: (\d+) requests, error rate ([\d.]+)%, (\d+)s left")


@dataclass
class Event:
    """One progress line, understood: a step started/done/failed, stability figures, or a note."""

    kind: str  # "start" | "done" | "failed" | "stability" | "note"
    text: str
    number: int = 0
    total: int = STEPS
    name: str = ""
    seconds: float = 0.0
    requests: int = 0
    error_rate: float = 0.0  # percent
    left: float = 0.0


def parse(line: str) -> Event:
    text = line.strip()
    m = _STEP.match(text)
    if m:
        kind = "start" if m.group(4) else ("done" if m.group(5) else "failed")
        return Event(kind=kind, text=text, number=int(m.group(1)), total=int(m.group(2)), name=m.group(3),
                     seconds=float(m.group(5) or m.group(6) or 0))
    m = _STABILITY.search(text)
    if m:
        return Event(kind="stability", text=text, requests=int(m.group(1)), error_rate=float(m.group(2)),
                     left=float(m.group(3)))
    return Event(kind="note", text=text)


# -- printing them ----------------------------------------------------------------------------------
class Printer:
    """A listener that prints progress lines for a person.

    In a terminal (``live``): each finished step stays as a line (``✓ [3/8] backup_production  2.1s``);
    the running step is one status line redrawn four times a second with its elapsed time and,
    during the stability window, the requests, the live error rate and the time left (counted down
    between the figures the run reports). Otherwise: the lines as they come, each prefixed with the
    time since the printer started (``+12.3s``), which is what a log file or CI wants.
    """

    def __init__(self, stream: IO[str] | None = None, live: bool | None = None, tick: float = 0.25) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.tick = tick
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._current: Event | None = None
        self._current_since = 0.0
        self._stability: Event | None = None
        self._stability_at = 0.0
        self._status_shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.live:
            self._thread = threading.Thread(target=self._ticker, name="progress-printer", daemon=True)
            self._thread.start()

    # listener protocol
    def __call__(self, line: str) -> None:
        self.feed(parse(line))

    def note(self, text: str) -> None:
        """A line of the caller's own (launched, queued, ...), printed like the run's notes."""
        self.feed(Event(kind="note", text=text))

    def feed(self, event: Event) -> None:
        with self._lock:
            now = time.monotonic()
            if event.kind == "start":
                self._current, self._current_since, self._stability = event, now, None
                if not self.live:
                    self._plain(event.text)
            elif event.kind in ("done", "failed"):
                self._current, self._stability = None, None
                if self.live:
                    mark = "✓" if event.kind == "done" else "✗"
                    verdict = "" if event.kind == "done" else "  FAILED"
                    self._line(f"{mark} [{event.number}/{event.total}] {event.name:<20} {event.seconds:6.1f}s{verdict}")
                else:
                    self._plain(event.text)
            elif event.kind == "stability":
                self._stability, self._stability_at = event, now
                if not self.live:
                    self._plain(event.text)
            else:
                if self.live:
                    self._line(event.text)
                else:
                    self._plain(event.text)
            if self.live:
                self._draw_status()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        with self._lock:
            self._clear_status()
            self.stream.flush()

    # rendering (callers hold the lock)
    def _plain(self, text: str) -> None:
        self.stream.write(f"+{time.monotonic() - self.started:6.1f}s {text}\n")
        self.stream.flush()

    def _line(self, text: str) -> None:
        self._clear_status()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _clear_status(self) -> None:
        if self._status_shown:
            self.stream.write("\r\x1b[K")
            self._status_shown = False

    def status_text(self) -> str | None:
        """What the status line says now (None when no step runs)."""
        if self._current is None:
            return None
        now = time.monotonic()
        ev = self._current
        text = f"… [{ev.number}/{ev.total}] {ev.name:<20} {now - self._current_since:6.1f}s"
        if self._stability is not None:
            s = self._stability
            left = max(0.0, s.left - (now - self._stability_at))
            text += f"  {s.requests} requests, error rate {s.error_rate:.2f}%, {left:.0f}s left"
        return text

    def _draw_status(self) -> None:
        text = self.status_text()
        self.stream.write("\r\x1b[K" + (text or ""))
        self.stream.flush()
        self._status_shown = text is not None

    def _ticker(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                if self._current is not None:
                    self._draw_status()


@contextmanager
def printing(stream: IO[str] | None = None, live: bool | None = None) -> Iterator[Printer]:
    """Subscribe a Printer for the duration of the block."""
    printer = Printer(stream, live)
    subscribe(printer)
    try:
        yield printer
    finally:
        unsubscribe(printer)
        printer.close()
