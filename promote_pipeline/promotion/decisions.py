"""What to do after a failure, and what the rollback job does with a run: pure decisions, one place each.

The code that acts (``failure.handle_failure`` in the job's process, ``rollback_run.roll_back_run`` out of
it) asks here first and then does what the answer names, so the choices can be read, and tested, as two
small tables rather than followed through the side effects.
"""

from __future__ import annotations

from enum import Enum

from promote_pipeline.promotion import steps
from promote_pipeline.promotion.steps import Step


class OnFailure(Enum):
    """What the job does when a step fails."""

    NOTHING_TO_UNDO = "nothing_to_undo"  # green never existed, or finalize failed after green held: mark failed
    ROLL_BACK = "roll_back"  # traffic back to blue, green stopped (kept if it served), mark rolled_back
    LEAVE_AS_IT_STANDS = "leave_as_it_stands"  # auto_rollback_on_failure=false: mark failed, report what is live


def on_failure(step: Step, auto_rollback: bool, force_rollback: bool = False) -> OnFailure:
    """``force_rollback``: the safety net or a person asked for a rollback, whatever the step and inputs say."""
    if force_rollback:
        return OnFailure.ROLL_BACK
    if not step.rolls_back:
        return OnFailure.NOTHING_TO_UNDO
    return OnFailure.ROLL_BACK if auto_rollback else OnFailure.LEAVE_AS_IT_STANDS


class ForRun(Enum):
    """What the rollback job does with one promotion run, read back from the ops database."""

    VERIFY = "verify"  # it ended safe already (rolled back, or failed without a rollback): check and record
    REFUSE_BLUE_DELETED = "refuse_blue_deleted"  # the window ended: only a restore could bring blue back
    REFUSE_REPLACED = "refuse_replaced"  # a later promotion serves production now: roll that one back
    COMPLETE_DEAD_RUN = "complete_dead_run"  # its worker died mid-way: do what its failure handling would have
    ROLL_BACK = "roll_back"  # a person asks: traffic back to blue within the window


def for_run(status: str, manual: bool, blue_deleted: bool, still_serves_its_green: bool) -> ForRun:
    """``status``: the run's status in ops.runs; ``manual``: a person asked (not the safety net);
    ``still_serves_its_green``: production's live deployment is the one this run made."""
    if status == "rolled_back":
        return ForRun.VERIFY
    if blue_deleted:
        return ForRun.REFUSE_BLUE_DELETED
    if status == "success" and not still_serves_its_green:
        return ForRun.REFUSE_REPLACED
    if status == "running":
        return ForRun.COMPLETE_DEAD_RUN
    if status == "failed" and not manual:
        return ForRun.VERIFY
    return ForRun.ROLL_BACK


def dead_run_rolls_back(reached: Step, manual: bool) -> bool:
    """A dead run is rolled back whatever its inputs say when a person asked, or when it died in finalize
    (green held through its window; a run that cannot be finalized is not left half-promoted)."""
    return manual or reached == steps.FINALIZE
