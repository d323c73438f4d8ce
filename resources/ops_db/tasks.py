"""``ops.scheduled_tasks``: deferred work, claimed by one worker at a time.

The task's state machine (``status``); only the methods named here move it:

    (schedule_task)  ──► pending
    pending          ──► running     claim_due_task: due (execute_at <= now), FOR UPDATE SKIP LOCKED
    running          ──► running     claim_due_task: a claim older than its lease (its worker died) is taken again
    running          ──► done        mark_task_done
    running          ──► cancelled   cancel_task (the task must not run as planned)
    running          ──► pending     record_task_failure: retried later
    running          ──► failed      record_task_failure with give_up: no more attempts
    pending          ──► cancelled   cancel_pending_tasks (a rollback brought blue back)

A pending task's due time may move (``reschedule_pending_task``, ``make_pending_tasks_due``): that is
not a change of state.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg.types.json import Jsonb

from resources.ops_db.connection import Connection, OpsConnection
from resources.ops_db.records import ScheduledTaskRecord, TaskRequest

# The delay goes in as seconds, so that it lands in the interval's time part as the hours it always was: a
# '1 day' interval would follow the server's daylight-saving changes.
_INSERT_TASK = ("INSERT INTO ops.scheduled_tasks (task_type, execute_at, metadata, run_id)"
                " VALUES (%s, now() + make_interval(secs => %s), %s, %s) RETURNING task_id")


def insert_task(conn: Connection, task: TaskRequest) -> int:
    """Schedule ``task`` inside the caller's transaction (finalize marks the run and schedules in one)."""
    params = (task.task_type, task.delay.total_seconds(), Jsonb(task.metadata), task.run_id)
    row = conn.execute(_INSERT_TASK, params).fetchone()
    assert row is not None
    return int(row["task_id"])


class ScheduledTasksTable(OpsConnection):
    """Scheduling, claiming and settling deferred tasks."""

    def schedule_task(self, task: TaskRequest) -> int:
        """A new pending task; returns its id."""
        return self.transaction(lambda conn: insert_task(conn, task))

    def task(self, task_id: int) -> ScheduledTaskRecord | None:
        row = self._one("SELECT * FROM ops.scheduled_tasks WHERE task_id = %s", (task_id,))
        return ScheduledTaskRecord.from_row(row) if row else None

    def tasks_for_run(self, run_id: str, task_type: str | None = None) -> list[ScheduledTaskRecord]:
        """The tasks a run scheduled (of one type, when given), oldest first."""
        rows = self._all("SELECT * FROM ops.scheduled_tasks WHERE run_id = %s AND task_type = coalesce(%s, task_type)"
                         " ORDER BY task_id", (run_id, task_type))
        return [ScheduledTaskRecord.from_row(r) for r in rows]

    def tasks_of_runs(self, run_ids: list[str], task_type: str) -> dict[str, ScheduledTaskRecord]:
        """The latest task of ``task_type`` each of ``run_ids`` scheduled (a run without one is left out)."""
        rows = self._all("SELECT DISTINCT ON (run_id) * FROM ops.scheduled_tasks WHERE run_id = ANY(%s)"
                         " AND task_type = %s ORDER BY run_id, task_id DESC", (run_ids, task_type))
        return {str(r["run_id"]): ScheduledTaskRecord.from_row(r) for r in rows}

    def due_tasks(self, lease: timedelta) -> list[ScheduledTaskRecord]:
        """The tasks ``claim_due_task`` with the same ``lease`` could take now, in the order it takes them; read
        without claiming (the clean-up sensor asks before it requests a run, so a run starts only with work)."""
        rows = self._all("SELECT * FROM ops.scheduled_tasks WHERE execute_at <= now() AND (status = 'pending'"
                         " OR (status = 'running' AND claimed_at < now() - %s::interval)) ORDER BY execute_at, task_id",
                         (lease,))
        return [ScheduledTaskRecord.from_row(r) for r in rows]

    def claim_due_task(self, worker: str, lease: timedelta) -> ScheduledTaskRecord | None:
        """Claim the next due task for ``worker`` (pending, or running under a claim older than ``lease``).

        One short transaction with ``FOR UPDATE SKIP LOCKED``: two workers never take the same row.
        """
        row = self._one(
            "UPDATE ops.scheduled_tasks SET status = 'running', attempts = attempts + 1, claimed_at = now(),"
            " claimed_by = %s, updated_at = now() WHERE task_id = ("
            "  SELECT task_id FROM ops.scheduled_tasks WHERE execute_at <= now() AND (status = 'pending'"
            "   OR (status = 'running' AND claimed_at < now() - %s::interval))"
            "  ORDER BY execute_at, task_id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *",
            (worker, lease),
        )
        return ScheduledTaskRecord.from_row(row) if row else None

    def mark_task_done(self, task_id: int) -> None:
        self._run("UPDATE ops.scheduled_tasks SET status = 'done', done_at = now(), updated_at = now(),"
                  " last_error = NULL WHERE task_id = %s", (task_id,))

    def cancel_task(self, task_id: int, reason: str) -> None:
        self._run("UPDATE ops.scheduled_tasks SET status = 'cancelled', last_error = %s, updated_at = now()"
                  " WHERE task_id = %s", (reason, task_id))

    def record_task_failure(self, task_id: int, error: str, retry_in_minutes: int, give_up: bool) -> None:
        """A failed attempt: pending again in ``retry_in_minutes``, or failed for good when ``give_up``."""
        self._run("UPDATE ops.scheduled_tasks SET status = %s, last_error = %s, updated_at = now(),"
                  " execute_at = now() + make_interval(mins => %s) WHERE task_id = %s",
                  ("failed" if give_up else "pending", error, retry_in_minutes, task_id))

    def cancel_pending_tasks(self, run_id: str, task_type: str, reason: str) -> int:
        """Cancel a run's pending tasks of one type; returns how many."""
        return self._run("UPDATE ops.scheduled_tasks SET status = 'cancelled', updated_at = now(),"
                         " last_error = %s WHERE run_id = %s AND task_type = %s AND status = 'pending'",
                         (reason, run_id, task_type))

    def reschedule_pending_task(self, run_id: str, task_type: str, base: datetime,
                                hours: int) -> ScheduledTaskRecord | None:
        """Move a run's pending task of ``task_type`` to ``base + hours``; None when it has none pending."""
        row = self._one(
            "UPDATE ops.scheduled_tasks SET execute_at = %s::timestamptz + make_interval(hours => %s),"
            " updated_at = now() WHERE run_id = %s AND task_type = %s AND status = 'pending' RETURNING *",
            (base, hours, run_id, task_type))
        return ScheduledTaskRecord.from_row(row) if row else None

    def make_pending_tasks_due(self) -> int:
        """Every pending task due now (what waiting out the rollback window would do); returns how many."""
        return self._run("UPDATE ops.scheduled_tasks SET execute_at = now() WHERE status = 'pending'")
