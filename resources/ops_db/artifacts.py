"""``ops.artifacts``: the verified snapshots (green) and backups (blue) a promotion took, and their deletion."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from psycopg.types.json import Jsonb

from resources.ops_db.connection import OpsConnection
from resources.ops_db.records import ArtifactRecord, ArtifactState

# What still needs an artifact, whatever the retention rule says: a run still running (it restores from its
# artifacts), a deployment restored from it that is not deleted (the artifact production may run on), a blue
# backup's pending deletion (the rollback window is that task's to end), and the blue backup of a run whose
# green an environment runs on now (a failed run left serving: a rollback is still ahead). The retention rule
# decides from the same facts (``_LIVE``); the deletion claim checks them again, in the statement that takes it.
_NEEDED = {
    "running": "EXISTS (SELECT 1 FROM ops.runs r WHERE r.run_id = a.created_by_run AND r.status = 'running')",
    "restored": "EXISTS (SELECT 1 FROM ops.deployments d WHERE d.artifact_id = a.artifact_id AND d.state <> 'deleted')",
    "blue_pending": "EXISTS (SELECT 1 FROM ops.scheduled_tasks t WHERE t.task_type = 'delete_backup'"
                    " AND t.status IN ('pending', 'running') AND t.metadata->>'artifact_id' = a.artifact_id)",
    "serving": "(a.role = 'blue' AND EXISTS (SELECT 1 FROM ops.deployments d WHERE d.created_by_run = a.created_by_run"
               " AND d.state = 'active'))",
}

_LIVE = (
    "SELECT a.*, r.status AS run_status, coalesce(r.rolled_back_at, r.completed_at) AS run_completed_at,"
    " (r.metadata->>'rollback_window_hours')::int AS run_window_hours,"
    " (SELECT min(t.execute_at) FROM ops.scheduled_tasks t WHERE t.task_type = 'delete_backup'"
    "   AND t.status IN ('pending', 'running') AND t.metadata->>'artifact_id' = a.artifact_id) AS blue_deletion_at,"
    " ARRAY(SELECT d.deployment_id || ' (' || d.state || ')' FROM ops.deployments d"
    "   WHERE d.artifact_id = a.artifact_id AND d.state <> 'deleted' ORDER BY d.deployment_id) AS restored_into,"
    " EXISTS (SELECT 1 FROM ops.deployments d WHERE d.created_by_run = a.created_by_run AND d.state = 'active')"
    "   AS run_serves"
    " FROM ops.artifacts a LEFT JOIN ops.runs r ON r.run_id = a.created_by_run"
    " WHERE a.deleted_at IS NULL ORDER BY a.created_at, a.artifact_id"
)


class ArtifactsTable(OpsConnection):
    """Registering artifacts, reading them back, recording their deletion."""

    def register_artifact(self, artifact_id: str, environment_id: str, role: str, run_id: str,
                          contract: dict[str, Any]) -> None:
        """A verified artifact of ``run_id``; its contract stored as JSON (dates as text)."""
        self._run(
            "INSERT INTO ops.artifacts (artifact_id, environment_id, role, created_by_run, contract, verified_at)"
            " VALUES (%s, %s, %s, %s, %s, now())",
            (artifact_id, environment_id, role, run_id, Jsonb(json.loads(json.dumps(contract, default=str)))),
        )

    def artifact(self, artifact_id: str) -> ArtifactRecord | None:
        row = self._one("SELECT * FROM ops.artifacts WHERE artifact_id = %s", (artifact_id,))
        return ArtifactRecord.from_row(row) if row else None

    def running_run_artifact(self, role: Literal["green", "blue"]) -> ArtifactRecord | None:
        """An artifact of ``role`` taken by a run still running (drills strike at that moment)."""
        row = self._one("SELECT a.* FROM ops.artifacts a JOIN ops.runs r ON r.run_id = a.created_by_run"
                        " WHERE r.status = 'running' AND a.role = %s", (role,))
        return ArtifactRecord.from_row(row) if row else None

    def mark_artifact_deleted(self, artifact_id: str, reason: str = "blue deleted after the rollback window") -> None:
        """The store deleted it (after its rollback window)."""
        self._run("UPDATE ops.artifacts SET deleted_at = now(), deleted_reason = %s WHERE artifact_id = %s",
                  (reason, artifact_id))

    # -- retention -----------------------------------------------------------------------------------
    def live_artifacts(self) -> list[ArtifactState]:
        """Every artifact not marked deleted, oldest first, with what the retention rule decides from."""
        return [ArtifactState.from_row(r) for r in self._all(_LIVE)]

    def artifacts_marked_deleted(self) -> dict[str, datetime]:
        """When each artifact whose row says deleted was marked (a folder of one of them, long after, is what a
        deletion left half-done)."""
        rows = self._all("SELECT artifact_id, deleted_at FROM ops.artifacts WHERE deleted_at IS NOT NULL")
        return {r["artifact_id"]: r["deleted_at"] for r in rows}

    def oldest_running_run_start(self) -> datetime | None:
        """When the oldest run still running started (a folder it may be writing is never an orphan)."""
        row = self._one("SELECT min(created_at) AS started FROM ops.runs WHERE status = 'running'")
        return row["started"] if row else None

    def claim_artifact_deletion(self, artifact_id: str, reason: str) -> bool:
        """Mark it deleted, for ``reason``, unless something still needs it (see ``_NEEDED``) or it is marked
        already; True when this caller took it (and now removes its files). One statement: two workers never both
        take it, and an artifact that became needed since the rule was read is left alone."""
        guards = " AND NOT ".join(_NEEDED.values())
        return self._run(f"UPDATE ops.artifacts a SET deleted_at = now(), deleted_reason = %s"  # noqa: S608 - constants
                         f" WHERE a.artifact_id = %s AND a.deleted_at IS NULL AND NOT {guards}",
                         (reason, artifact_id)) == 1
