"""``ops.runs``: promotions, the restores they make, and the deploys and copies recorded after the fact.

The run's state machine (``status``); these methods are the only code that moves it:

    (create_run)            ──► running
    running                 ──► success       mark_run_succeeded: guarded in SQL (only a running run), and it
                                              says whether it did; the success and blue's scheduled deletion
                                              are one transaction
    running                 ──► failed        fail_running_restores (guarded: only running restores of a parent)
    running                 ──► success | failed | rolled_back
                                              mark_run_finished: whoever saw the step end records it (a restore
                                              run's op, the failure path). Not guarded in SQL, as it never was:
                                              the failure path must leave no run ``running``
    success | failed        ──► rolled_back   mark_run_rolled_back: a person's (or the safety net's) rollback,
                                              decided under the environment's lock from the status it read
    (record_completed_run)  ──► success       history written after the fact (a seed deploy, a copy)
    (begin_adoption)        ──► running       an adoption (operation_type 'adopt') with its deployment, in one
                                              transaction (deployments.py); ended by mark_run_finished

A promotion's ``success`` or ``failed`` may still end in ``rolled_back``; nothing here moves a run out of
``rolled_back`` except ``mark_run_finished``, which takes the caller's word for it. (So a worker whose finalize
was refused, because the safety net rolled its run back meanwhile, records ``failed`` over ``rolled_back`` in
its failure path: kept as it was, for its caller to decide.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from resources.ops_db.connection import Connection, OpsConnection
from resources.ops_db.records import CompletedRun, FinalRunStatus, RunRecord, TaskRequest
from resources.ops_db.tasks import insert_task

_INSERT_COMPLETED = ("INSERT INTO ops.runs (run_id, project_id, environment_id, operation_type, status, created_by,"
                     " metadata, completed_at) VALUES (ops.gen_run_id(), %s, %s, %s, 'success', %s, %s, now())"
                     " RETURNING run_id")


_INSERT_RUNNING = ("INSERT INTO ops.runs (run_id, project_id, environment_id, operation_type, status, created_by,"
                   " metadata, dagster_run_id) VALUES (ops.gen_run_id(), %s, %s, %s, 'running', %s, %s, %s)"
                   " RETURNING run_id")


def insert_running_run(conn: Connection, project_id: str, environment_id: str, operation_type: str, user_id: str,
                       metadata: dict[str, Any], dagster_run_id: str | None = None) -> str:
    """A new run, ``running``, inside the caller's transaction; returns its id."""
    row = conn.execute(_INSERT_RUNNING, (project_id, environment_id, operation_type, user_id, Jsonb(metadata),
                                         dagster_run_id)).fetchone()
    assert row is not None
    return str(row["run_id"])


def insert_completed_run(conn: Connection, project_id: str, run: CompletedRun) -> str:
    """Record ``run`` as a success inside the caller's transaction (a project's seed is one transaction)."""
    row = conn.execute(_INSERT_COMPLETED, (project_id, run.environment_id, run.operation_type, run.created_by,
                                           Jsonb(run.metadata))).fetchone()
    assert row is not None
    return str(row["run_id"])


def _run_or_none(row: dict[str, Any] | None) -> RunRecord | None:
    return RunRecord.from_row(row) if row else None


class RunsTable(OpsConnection):
    """Creating runs, reading them back, and every change of their status."""

    # -- reads ---------------------------------------------------------------------------------------
    def run(self, run_id: str) -> RunRecord | None:
        return _run_or_none(self._one("SELECT * FROM ops.runs WHERE run_id = %s", (run_id,)))

    def promote_run_for_dagster_run(self, dagster_run_id: str) -> RunRecord | None:
        """The promotion run a Dagster run created (None if it was rejected or died before step 1 ended)."""
        return _run_or_none(self._one("SELECT * FROM ops.runs WHERE dagster_run_id = %s AND operation_type = 'promote'",
                                      (dagster_run_id,)))

    def run_by_either_id(self, some_id: str) -> RunRecord | None:
        """The run named by its own id (``run_…``) or by the Dagster run that executed it (a promotion's): the two
        id spaces an operator meets, one in the CLI's lines and evidence, the other in the UI."""
        return _run_or_none(self._one(
            "SELECT * FROM ops.runs WHERE run_id = %s OR (dagster_run_id = %s AND operation_type = 'promote')"
            " ORDER BY (run_id = %s) DESC LIMIT 1", (some_id, some_id, some_id)))

    def promotions(self, environment_id: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Promotions, newest first, of one production environment when given, at most ``limit``."""
        return [RunRecord.from_row(r) for r in self._all(
            "SELECT * FROM ops.runs WHERE operation_type = 'promote' AND environment_id = coalesce(%s, environment_id)"
            " ORDER BY created_at DESC, run_id DESC LIMIT %s", (environment_id, limit))]

    def rollbacks_to(self, environment_id: str, deployment_id: str) -> list[RunRecord]:
        """The environment's rolled-back promotions whose rollback put ``deployment_id`` (their blue) back live,
        latest rollback first: those that had cut over (before a cutover blue never stopped serving)."""
        return [RunRecord.from_row(r) for r in self._all(
            "SELECT * FROM ops.runs WHERE operation_type = 'promote' AND environment_id = %s"
            " AND status = 'rolled_back' AND metadata->>'blue_deployment_id' = %s AND rolled_back_at IS NOT NULL"
            " AND metadata ? 'cutover_timestamp'"
            " ORDER BY rolled_back_at DESC", (environment_id, deployment_id))]

    def running_promotions(self) -> list[RunRecord]:
        """Every promotion marked running, in any environment."""
        rows = self._all("SELECT * FROM ops.runs WHERE status = 'running' AND operation_type = 'promote'")
        return [RunRecord.from_row(r) for r in rows]

    def running_promotion(self, environment_id: str) -> RunRecord | None:
        """The latest promotion marked running on an environment."""
        return _run_or_none(self._one(
            "SELECT * FROM ops.runs WHERE environment_id = %s AND status = 'running'"
            " AND operation_type = 'promote' ORDER BY created_at DESC LIMIT 1", (environment_id,)))

    def running_promotion_after_cutover(self) -> RunRecord | None:
        """A promotion marked running that has cut over (drills and tests act at that moment)."""
        return _run_or_none(self._one(
            "SELECT * FROM ops.runs WHERE status = 'running' AND operation_type = 'promote'"
            " AND metadata ? 'cutover_timestamp'"))

    def latest_run(self, environment_id: str, operation_types: Sequence[str]) -> RunRecord | None:
        """The environment's latest run of one of ``operation_types`` (by start, then id), whatever its status."""
        return _run_or_none(self._one(
            "SELECT * FROM ops.runs WHERE environment_id = %s AND operation_type = ANY(%s)"
            " ORDER BY created_at DESC, run_id DESC LIMIT 1", (environment_id, list(operation_types))))

    def latest_copy(self, environment_id: str, source_environment_id: str) -> RunRecord | None:
        """The latest successful restore of ``source_environment_id``'s data into ``environment_id``."""
        return _run_or_none(self._one(
            "SELECT * FROM ops.runs WHERE environment_id = %s AND operation_type = 'restore'"
            " AND status = 'success' AND metadata->>'source_environment_id' = %s ORDER BY completed_at DESC LIMIT 1",
            (environment_id, source_environment_id)))

    # -- new runs ------------------------------------------------------------------------------------
    def create_run(self, project_id: str, environment_id: str, user_id: str, metadata: dict[str, Any],
                   dagster_run_id: str | None, operation_type: str = "promote") -> str:
        """A new run, ``running``; returns its id."""
        with self.connect() as conn:  # not repeated after a cut: a repeat could make a second run
            return insert_running_run(conn, project_id, environment_id, operation_type, user_id, metadata,
                                      dagster_run_id)

    def record_completed_run(self, project_id: str, run: CompletedRun) -> str:
        """A run that happened elsewhere, recorded as a success; returns its id."""
        return self.transaction(lambda conn: insert_completed_run(conn, project_id, run))

    # -- what a run carries --------------------------------------------------------------------------
    def merge_run_metadata(self, run_id: str, values: dict[str, Any]) -> None:
        self._run("UPDATE ops.runs SET metadata = metadata || %s WHERE run_id = %s", (Jsonb(values), run_id))

    def set_run_evidence_dir(self, run_id: str, evidence_dir: str) -> None:
        self._run("UPDATE ops.runs SET evidence_dir = %s WHERE run_id = %s", (evidence_dir, run_id))

    # -- the state machine (see the module's docstring) ----------------------------------------------
    def mark_run_succeeded(self, run_id: str, evidence_dir: str, then: TaskRequest) -> bool:
        """running → success, and ``then`` scheduled, in one transaction; False (and nothing done) when the run
        is no longer running (the safety net took it over while its worker was finishing)."""
        with self.connect() as conn:  # not repeated after a cut: a repeat would find the run success, not running
            marked = conn.execute("UPDATE ops.runs SET status = 'success', completed_at = now(), evidence_dir = %s"
                                  " WHERE run_id = %s AND status = 'running'", (evidence_dir, run_id))
            if marked.rowcount != 1:
                return False
            insert_task(conn, then)
        return True

    def mark_run_finished(self, run_id: str, status: FinalRunStatus, evidence_dir: str | None = None,
                          metadata: dict[str, Any] | None = None) -> None:
        """→ ``status``, completed now (rolled back now too, when it is ``rolled_back``); ``evidence_dir`` set when
        given, ``metadata`` merged. Unguarded: see the module's docstring."""
        self._run(
            "UPDATE ops.runs SET status = %s, completed_at = now(), evidence_dir = coalesce(%s, evidence_dir),"
            " rolled_back_at = CASE WHEN %s = 'rolled_back' THEN now() END, metadata = metadata || %s"
            " WHERE run_id = %s",
            (status, evidence_dir, status, Jsonb(metadata or {}), run_id),
        )

    def fail_running_restores(self, parent_run_id: str) -> int:
        """running → failed for the restore runs a promotion started and left running (its worker died)."""
        return self._run("UPDATE ops.runs SET status = 'failed', completed_at = now() WHERE status = 'running'"
                         " AND operation_type = 'restore' AND metadata->>'parent_run_id' = %s", (parent_run_id,))

    def mark_run_rolled_back(self, run_id: str, metadata: dict[str, Any]) -> None:
        """success | failed → rolled_back, ``metadata`` (who, why) merged; ``completed_at`` is kept: it is when
        the promotion itself ended."""
        self._run("UPDATE ops.runs SET status = 'rolled_back', rolled_back_at = now(), metadata = metadata || %s"
                  " WHERE run_id = %s", (Jsonb(metadata), run_id))
