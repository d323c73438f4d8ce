"""The approval gate's records: its state in the run's metadata (``ops.runs.metadata.approval``) and the
``approve`` events in ``ops.run_events``.

Both change together under the run's row lock: an approval is recorded only while the gate is ``waiting``, and the
gate leaves ``waiting`` (approved, timed out, aborted) in a transaction that takes the same lock and then reads the
approvals. So an approval that arrives in the very second the gate times out is either taken (the gate says
approved) or refused (it says timed_out), never recorded and then ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from psycopg.types.json import Jsonb

from resources.ops_db.connection import OpsConnection
from resources.ops_db.records import ApprovalRecord

# The step names under which the gate's events are recorded in ops.run_events.
APPROVE_STEP = "approve"
AWAITING_STEP = "awaiting_approval"

GateState = Literal["waiting", "approved", "timed_out", "aborted"]
GateEnd = Literal["timed_out", "aborted"]

_FIRST_APPROVAL = ("SELECT details, at FROM ops.run_events WHERE run_id = %s AND step = %s"
                   " ORDER BY event_id LIMIT 1")


def _approval(row: dict[str, Any] | None) -> ApprovalRecord | None:
    if row is None:
        return None
    return ApprovalRecord(approved_by=row["details"].get("approved_by", "?"), at=row["at"])


class ApprovalsTable(OpsConnection):
    """Opening, answering and closing a run's approval gate."""

    def open_approval_gate(self, run_id: str, facts: dict[str, Any]) -> None:
        """The run waits from now: ``facts`` (since, deadline, timeout, who is asked) with state ``waiting``."""
        self._run("UPDATE ops.runs SET metadata = metadata || jsonb_build_object('approval', %s::jsonb)"
                  " WHERE run_id = %s", (Jsonb({**facts, "state": "waiting"}), run_id))

    def approval_gate(self, run_id: str) -> dict[str, Any] | None:
        """The gate's record (its ``state`` and facts), or None for a run that never waited."""
        row = self._one("SELECT metadata->'approval' AS gate FROM ops.runs WHERE run_id = %s", (run_id,))
        gate = row["gate"] if row else None
        return gate if isinstance(gate, dict) else None

    def approval(self, run_id: str) -> ApprovalRecord | None:
        """The first approval recorded for a run, if any."""
        return _approval(self._one(_FIRST_APPROVAL, (run_id, APPROVE_STEP)))

    def request_approval(self, run_id: str, approved_by: str) -> str | None:
        """Record ``approved_by``'s approval if the run is running and its gate waiting; else (nothing recorded) the
        state that refused it: the run's status, or the gate's state (``none`` when it never waited)."""
        with self.connect() as conn:  # not repeated after a cut: a repeat would record a second approval
            row = conn.execute("SELECT status, metadata->'approval'->>'state' AS gate FROM ops.runs"
                               " WHERE run_id = %s FOR UPDATE", (run_id,)).fetchone()
            if row is None:
                return "none"
            if row["status"] != "running":
                return str(row["status"])
            if row["gate"] != "waiting":
                return str(row["gate"] or "none")
            conn.execute("INSERT INTO ops.run_events (run_id, step, level, message, details)"
                         " VALUES (%s, %s, 'info', %s, %s)",
                         (run_id, APPROVE_STEP, f"approved by {approved_by}", Jsonb({"approved_by": approved_by})))
        return None

    def close_approval_gate(self, run_id: str, otherwise: GateEnd, approval_wins: bool = True,
                            facts: dict[str, Any] | None = None) -> tuple[GateState, ApprovalRecord | None]:
        """Leave ``waiting``: approved if an approval is recorded (and ``approval_wins``), else ``otherwise``; the
        state and the approval. Under the run's row lock, so no approval can be recorded after the read."""
        with self.connect() as conn:
            conn.execute("SELECT 1 FROM ops.runs WHERE run_id = %s FOR UPDATE", (run_id,))
            approval = _approval(conn.execute(_FIRST_APPROVAL, (run_id, APPROVE_STEP)).fetchone())
            state: GateState = "approved" if approval is not None and approval_wins else otherwise
            conn.execute("UPDATE ops.runs SET metadata = jsonb_set(metadata, '{approval}',"
                         " coalesce(metadata->'approval', '{}'::jsonb) || %s::jsonb) WHERE run_id = %s",
                         (Jsonb({**(facts or {}), "state": state}), run_id))
        return state, approval
