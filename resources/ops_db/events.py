"""``ops.run_events`` and ``ops.rejections``: what happened during a run, and promotions refused before one."""

from __future__ import annotations

from typing import Any, Literal

from psycopg.types.json import Jsonb

from resources.ops_db.connection import OpsConnection


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
