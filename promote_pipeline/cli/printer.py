"""Progress lines, read back and printed for a person at a terminal or in a log.

``promote run`` subscribes a ``Printer`` to the promotion's progress lines in this process;
``promote launch`` feeds it the same lines read back from the run's Dagster event log. In a
terminal, finished steps stay as lines and the running step is one status line redrawn every
quarter second with its elapsed time and, in the stability window, the live error rate and time
left; when the output is not a terminal, it prints the lines as they come.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

from promote_pipeline.promotion.steps import TOTAL

# -- reading the lines back -------------------------------------------------------------------------
_STEP = re.compile(r"^\[(\d+)/(\d+)\] (\S+) (?:(\.\.\.)|done in ([\d.]+)s|FAILED after ([\d.]+)s)$")
_STABILITY = re.compile(r"stability: (\d+) requests, error rate ([\d.]+)%, (\d+)s left")


@dataclass
class Event:
    """One progress line, understood: a step started/done/failed, stability figures, or a note."""

    kind: str  # "start" | "done" | "failed" | "stability" | "note"
    text: str
    number: int = 0
    total: int = TOTAL
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
