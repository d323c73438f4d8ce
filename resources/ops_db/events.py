"""``ops.run_events`` and ``ops.rejections``: what happened during a run, and promotions refused before one."""

from __future__ import annotations

from typing import Any, Literal

from psycopg.types.json import Jsonb

from resources.ops_db.connection import OpsConnection
from resources.ops_db.records import AbortRequest

# The step name under which an abort request is recorded in ops.run_events (the running job looks for it).
ABORT_STEP = "abort"


class EventsTable(OpsConnection):
    """Appending run events and rejection records (both are only ever added)."""

    def add_event(self, run_id: str, step: str, level: Literal["info", "warning", "error"], message: str,
                  details: dict[str, Any] | None = None) -> None:
        self._run(
            "INSERT INTO ops.run_events (run_id, step, level, message, details) VALUES (%s, %s, %s, %s, %s)",
            (run_id, step, level, message, Jsonb(details or {})),
        )

    def record_rejection(self, check_name: str, message: str, inputs: dict[str, Any]) -> None:
        """A promotion refused by an input rule or a precondition: this record is all it leaves."""
        self._run(
            "INSERT INTO ops.rejections (check_name, message, inputs) VALUES (%s, %s, %s)",
            (check_name, message, Jsonb(inputs)),
        )

    def request_abort(self, run_id: str, requested_by: str, reason: str) -> None:
        """Ask a running promotion to stop and roll back: an event the job reads at each step boundary and
        during the stability window (the job may run in another process, or on another host)."""
        self.add_event(run_id, ABORT_STEP, "warning", f"abort requested by {requested_by}: {reason}",
                       {"requested_by": requested_by, "reason": reason})

    def abort_request(self, run_id: str) -> AbortRequest | None:
        """The first abort request recorded for a run, if any."""
        row = self._one("SELECT details, at FROM ops.run_events WHERE run_id = %s AND step = %s"
                        " ORDER BY event_id LIMIT 1", (run_id, ABORT_STEP))
        if row is None:
            return None
        return AbortRequest(requested_by=row["details"].get("requested_by", "?"),
                            reason=row["details"].get("reason", ""), at=row["at"])
