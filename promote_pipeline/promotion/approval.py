"""The approval gate: after the smoke tests, a promotion that requires approval waits for a person before the cutover.

It waits at the end of ``smoke_test_green`` (not at the start of ``cutover``): green has just passed its tests on the
router's preview entry point and stays there, traffic has never left blue, and a timeout or an abort fails the smoke
step, whose rollback has nothing to switch back (green is stopped and removed, blue untouched). Anything the cutover
does before its switch (a freeze of blue, a last drift count) then starts only once a person said yes, so a wait of up
to an hour never holds production read-only.

The gate ends when the first of these happens:
- ``promote approve RUN --user U`` (or the ``approve_promotion`` job): U's ``promote`` permission on the project is
  checked, the approval is recorded in ``ops.run_events`` (step ``approve``: who, when); the run cuts over;
- ``promote abort RUN --user U``: the abort request the job reads at every step boundary, read here every second;
  the run rolls back;
- the timeout (``approval_timeout_seconds``): the run rolls back, reason ``approval timed out after N s``.

The gate's state lives in the run's metadata (``ops.runs.metadata.approval``), so any process can tell whether a run
is waiting; an approval is recorded only while it is (resources/ops_db/approvals.py explains the race it closes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from promote_pipeline.promotion import abort, notify, progress
from promote_pipeline.promotion.inputs import shown
from promote_pipeline.promotion.models import RunStarted
from promote_pipeline.promotion.services import Services
from resources.ops_db import RunRecord
from resources.ops_db.approvals import AWAITING_STEP

# The run tag shown in the UI's run list while a run waits ("true"), and after ("false"; Dagster cannot remove a tag).
TAG = "promote/awaiting_approval"
# What the run says after, in a tag of its own: approved by U, timed out, aborted.
DECISION_TAG = "promote/approval"
POLL_SECONDS = 1.0  # how often the gate reads the ops database for an approval or an abort
# How often the gate checks it still holds the environment lock (taking it back after a PostgreSQL restart): well
# within the dead-run detector's grace, so a waiting run is never seen without its lock for long.
KEEP_LOCK_SECONDS = 4.0
SAY_EVERY_SECONDS = 60.0  # a reminder line in the terminal and the run's log, not more often


class ApprovalTimedOut(abort.PromotionAborted):
    """Nobody approved within the timeout: the step fails with this and the run rolls back like an abort (green stopped
    whatever auto_rollback_on_failure says: nobody wanted it)."""


class ApprovalRefused(ValueError):
    """``promote approve`` cannot approve: ``check`` names the rule, the message says why; nothing was recorded."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


def required_by(run: RunStarted) -> str | None:
    """Why the run waits: ``environment`` (the inventory says so for production), ``flag`` (--require-approval or the
    config), or None (it does not)."""
    if run.prod.require_approval:
        return "environment"
    return "flag" if run.inputs.require_approval else None


def in_words(seconds: float) -> str:
    """A duration as the reminder line says it, whole minutes rounded up (a deadline is not met early): 1h 0m, 59m,
    45s."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60}h {minutes % 60}m" if minutes >= 60 else f"{minutes}m"


def reminder(run_id: str, left: float) -> str:
    return f"      awaiting approval: promote approve {run_id} --user USER (times out in {in_words(left)})"


def on_awaiting_approval(svc: Services, run: RunStarted, gate: dict[str, Any]) -> None:
    svc.ops_db.add_event(run.run_id, AWAITING_STEP, "info",
                         f"awaiting approval until {gate['deadline']}: promote approve {run.run_id} --user USER,"
                         f" or promote abort {run.run_id} --user USER", gate)
    # The people who approve are not watching this terminal: tell them (in the background, as every notification).
    notify.send(svc, run.run_id, run.prod.environment_id, "awaiting_approval", {
        "preview_url": gate["preview_url"], "deadline": gate["deadline"],
        "approve": f"promote approve {run.run_id} --user USER", "refuse": f"promote abort {run.run_id} --user USER"})


def await_approval(svc: Services, run: RunStarted, preview_url: str, keep_lock: Callable[[], None],
                   on_end: Callable[[dict[str, Any]], None], poll: float = POLL_SECONDS,
                   say_every: float = SAY_EVERY_SECONDS) -> dict[str, Any]:
    """Wait for the gate to end; the gate's record (``approval`` of smoke_tests.json) when it was approved. Raises
    ``PromotionAborted`` on an abort and ``ApprovalTimedOut`` on the timeout (``abort.check`` and ``keep_lock`` may
    raise too: the gate is then closed as aborted). ``on_end`` gets the gate's record however it ended."""
    timeout = run.inputs.approval_timeout_seconds
    since = datetime.now(UTC)
    gate: dict[str, Any] = {"required_by": required_by(run) or "flag", "preview_url": preview_url,
                            "timeout_seconds": timeout, "since": since.isoformat(),
                            "deadline": (since + timedelta(seconds=timeout)).isoformat(), "state": "waiting"}
    start = time.monotonic()

    def ended(state: str, approved_by: str | None = None, reason: str | None = None) -> dict[str, Any]:
        gate.update(state=state, decided_at=datetime.now(UTC).isoformat(), approved_by=approved_by,
                    waited_seconds=round(time.monotonic() - start, 3), reason=reason)
        return gate

    try:
        svc.ops_db.open_approval_gate(run.run_id, gate)
        on_awaiting_approval(svc, run, gate)
        progress.say(f"{reminder(run.run_id, timeout)}; green on {preview_url};"
                     f" to refuse: promote abort {run.run_id} --user USER")
        state, approval = _wait(svc, run, keep_lock, start, poll, say_every, ended)
        if state == "approved" and approval is not None:
            ended("approved", approved_by=approval.approved_by)
            said = f"approved by {approval.approved_by} after {in_words(gate['waited_seconds'])}"
            svc.ops_db.add_event(run.run_id, AWAITING_STEP, "info", said, gate)
            progress.say(f"      {said}: cutting over")
            return gate
        reason = f"approval timed out after {timeout} s"
        ended("timed_out", reason=reason)
        svc.ops_db.add_event(run.run_id, AWAITING_STEP, "warning", reason, gate)
        raise ApprovalTimedOut(reason)
    finally:
        on_end(gate)


def _wait(svc: Services, run: RunStarted, keep_lock: Callable[[], None], start: float, poll: float,
          say_every: float, ended: Callable[..., dict[str, Any]]) -> tuple[str, Any]:
    """Poll until an approval, an abort or the timeout; close the gate in the ops database accordingly."""
    timeout = run.inputs.approval_timeout_seconds
    last_kept = last_said = start
    try:
        while True:
            abort.check(svc, run.run_id)
            waited = time.monotonic() - start
            if waited >= timeout or svc.ops_db.approval(run.run_id) is not None:
                return svc.ops_db.close_approval_gate(run.run_id, "timed_out", facts=ended("closing"))
            now = time.monotonic()
            if now - last_kept >= KEEP_LOCK_SECONDS:
                keep_lock()
                last_kept = now
            if now - last_said >= say_every:
                progress.say(reminder(run.run_id, timeout - waited))
                last_said = now
            time.sleep(min(poll, max(0.05, timeout - waited)))
    except BaseException as exc:
        reason = str(exc) or type(exc).__name__
        try:  # the abort wins over an approval recorded in the same second: a person asked to stop
            svc.ops_db.close_approval_gate(run.run_id, "aborted", approval_wins=False,
                                           facts=ended("aborted", reason=reason))
        except Exception:  # the ops database is away: the step's failure handling says what matters
            ended("aborted", reason=reason)
        raise


# -- the other side: a person approving, from any process ------------------------------------------------------
def find_run(svc: Services, run_id: str) -> RunRecord | None:
    """The promotion named by its ops run id (run_...) or by the Dagster run id that executes it."""
    row = svc.ops_db.run(run_id) if run_id.startswith("run_") else svc.ops_db.promote_run_for_dagster_run(run_id)
    return row if row is not None and row.operation_type == "promote" else None


_NOT_WAITING = {"none": "it has no approval gate open", "approved": "it was approved already",
                "timed_out": "its approval timed out", "aborted": "it was aborted while awaiting approval",
                "closing": "its approval gate is closing"}


def request(svc: Services, run_id: str, user_id: str) -> RunRecord:
    """Record ``user_id``'s approval of a promotion awaiting it; the run it approved. Refused (ApprovalRefused, nothing
    recorded) for an unknown run, a user without 'promote' on its project, a run not running or not waiting."""
    row = find_run(svc, run_id)
    if row is None:
        raise ApprovalRefused("run_exists", f"no promotion run {shown(run_id)}")
    if not svc.ops_db.has_permission(user_id, row.project_id, "promote"):
        raise ApprovalRefused("permission", f"user {shown(user_id)} lacks 'promote' on project {row.project_id}")
    refused = svc.ops_db.request_approval(row.run_id, user_id)
    if refused in ("success", "failed", "rolled_back"):
        raise ApprovalRefused("run_running", f"run {row.run_id} is {refused}, not running")
    if refused is not None:
        why = _NOT_WAITING.get(refused, f"its approval gate is {refused}")
        raise ApprovalRefused("awaiting_approval", f"run {row.run_id} is not awaiting approval ({why})")
    return row


def wait_taken(svc: Services, run_id: str, timeout: float, poll: float = 0.25) -> str:
    """The gate's state once it is no longer waiting (approved: the run took the approval), or ``waiting`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        gate = svc.ops_db.approval_gate(run_id) or {}
        state = str(gate.get("state", "none"))
        if state not in ("waiting", "closing") or time.monotonic() >= deadline:
            return state
        time.sleep(poll)
