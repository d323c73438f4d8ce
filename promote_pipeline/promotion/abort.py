"""Stopping a running promotion on request: a signal to ``promote run`` in this process, or ``promote abort``
from anywhere (recorded in the ops database).

Neither interrupts a step mid-way (a half-restored database or a half-switched router is worse than a second's
wait): the job asks ``check`` at each step boundary and on every sample of the stability window, and an abort
raises ``PromotionAborted`` there, which the step's failure handling turns into a rollback like any failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from promote_pipeline.promotion.inputs import shown
from promote_pipeline.promotion.services import Services


class PromotionAborted(RuntimeError):
    """Someone asked the run to stop: the step fails with this, and the run is rolled back."""


_here: list[str] = []  # the reason given to this process (a signal), first one wins
_guard = threading.Lock()


def request_here(reason: str) -> bool:
    """Ask every promotion running in this process to stop (from a signal handler); False if already asked."""
    with _guard:
        if _here:
            return False
        _here.append(reason)
        return True


def clear_here() -> None:
    """Forget this process's request (a command that runs a promotion starts with none)."""
    with _guard:
        _here.clear()


def check(svc: Services, run_id: str) -> None:
    """Raise ``PromotionAborted`` when this process was asked to stop, or an abort of ``run_id`` is recorded."""
    if _here:
        raise PromotionAborted(f"aborted: {_here[0]}")
    request = svc.ops_db.abort_request(run_id)
    if request is not None:
        raise PromotionAborted(f"aborted by {request.requested_by}: {request.reason}")


def checker(svc: Services, run_id: str, every_seconds: float = 1.0) -> Callable[[], None]:
    """``check`` for a loop that samples four times a second (the stability window): this process's own signal
    at every call, the ops database's abort requests at most once every ``every_seconds`` (an abort is asked
    for in seconds; the query need not run at every sample)."""
    last = [float("-inf")]

    def stop_check() -> None:
        if _here:
            raise PromotionAborted(f"aborted: {_here[0]}")
        if time.monotonic() - last[0] >= every_seconds:
            last[0] = time.monotonic()
            check(svc, run_id)

    return stop_check


class AbortRefused(ValueError):
    """``promote abort`` cannot ask: ``check`` names the rule, the message says why."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


def request(svc: Services, run_id: str, user_id: str, reason: str) -> None:
    """Record an abort of a running promotion, for whoever holds 'promote' on its project (checked, and the
    request recorded, in the ops database: the job may run in another process or on another host)."""
    row = svc.ops_db.run(run_id)
    if row is None or row.operation_type != "promote":
        raise AbortRefused("run_exists", f"no promotion run {shown(run_id)}")
    if not svc.ops_db.has_permission(user_id, row.project_id, "promote"):
        raise AbortRefused("permission", f"user {user_id} lacks 'promote' on project {row.project_id}")
    if row.status != "running":
        raise AbortRefused("run_running", f"run {run_id} is {row.status}, not running")
    svc.ops_db.request_abort(run_id, user_id, reason)


def wait_ended(svc: Services, run_id: str, timeout: float, poll: float = 0.25) -> str:
    """The run's status once it is no longer ``running``, or ``running`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        row = svc.ops_db.run(run_id)
        status = row.status if row else "running"
        if status != "running" or time.monotonic() >= deadline:
            return status
        time.sleep(poll)
