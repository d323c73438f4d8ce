"""``ops.artifacts``: the verified snapshots (green) and backups (blue) a promotion took."""

from __future__ import annotations

import json
from typing import Any, Literal

from psycopg.types.json import Jsonb

from resources.ops_db.connection import OpsConnection
from resources.ops_db.records import ArtifactRecord


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

    def mark_artifact_deleted(self, artifact_id: str) -> None:
        """The store deleted it (after its rollback window)."""
        self._run("UPDATE ops.artifacts SET deleted_at = now() WHERE artifact_id = %s", (artifact_id,))
