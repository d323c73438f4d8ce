"""The two decisions of the failure path, as tables: what the job does when a step fails, and what the
rollback job does with a run it reads back from the ops database."""

from __future__ import annotations

import pytest

from promote_pipeline.promotion import steps
from promote_pipeline.promotion.decisions import ForRun, OnFailure, dead_run_rolls_back, for_run, on_failure

pytestmark = pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)

NOTHING, ROLL_BACK, LEAVE = OnFailure.NOTHING_TO_UNDO, OnFailure.ROLL_BACK, OnFailure.LEAVE_AS_IT_STANDS


@pytest.mark.parametrize(("step", "auto", "expected"), [
    (steps.CREATE_OPS_RUN, True, NOTHING), (steps.SNAPSHOT_STAGING, True, NOTHING),
    (steps.BACKUP_PRODUCTION, True, NOTHING), (steps.BACKUP_PRODUCTION, False, NOTHING),
    (steps.RESTORE_GREEN, True, ROLL_BACK), (steps.SMOKE_TEST_GREEN, True, ROLL_BACK),
    (steps.CUTOVER, True, ROLL_BACK), (steps.MONITOR_STABILITY, True, ROLL_BACK),
    (steps.RESTORE_GREEN, False, LEAVE), (steps.CUTOVER, False, LEAVE), (steps.MONITOR_STABILITY, False, LEAVE),
    # finalize: green held through its window; failing to write that down does not take production from it
    (steps.FINALIZE, True, NOTHING), (steps.FINALIZE, False, NOTHING),
])
def test_what_the_job_does_when_a_step_fails(step: steps.Step, auto: bool, expected: OnFailure) -> None:
    assert on_failure(step, auto_rollback=auto) is expected


@pytest.mark.parametrize("step", steps.STEPS)
@pytest.mark.parametrize("auto", [True, False])
def test_a_forced_rollback_rolls_back_whatever_the_step_and_the_inputs(step: steps.Step, auto: bool) -> None:
    assert on_failure(step, auto_rollback=auto, force_rollback=True) is ROLL_BACK


@pytest.mark.parametrize(("status", "manual", "blue_deleted", "serves", "expected"), [
    # a run that rolled back is verified, by the safety net or a person, even after blue's deletion
    ("rolled_back", False, False, True, ForRun.VERIFY), ("rolled_back", True, True, True, ForRun.VERIFY),
    # once blue is deleted nothing but a restore could bring it back
    ("success", True, True, True, ForRun.REFUSE_BLUE_DELETED), ("running", False, True, True,
                                                                ForRun.REFUSE_BLUE_DELETED),
    ("failed", True, True, True, ForRun.REFUSE_BLUE_DELETED),
    # a success that a later promotion replaced is not this run's to undo
    ("success", True, False, False, ForRun.REFUSE_REPLACED),
    ("success", True, False, True, ForRun.ROLL_BACK),
    # a run still marked running whose lock was free has lost its worker
    ("running", False, False, True, ForRun.COMPLETE_DEAD_RUN), ("running", True, False, True,
                                                                ForRun.COMPLETE_DEAD_RUN),
    # a failed run: the safety net verifies what its own handling left, a person rolls it back
    ("failed", False, False, True, ForRun.VERIFY), ("failed", True, False, True, ForRun.ROLL_BACK),
])
def test_what_the_rollback_job_does_with_a_run(status: str, manual: bool, blue_deleted: bool, serves: bool,
                                               expected: ForRun) -> None:
    assert for_run(status, manual, blue_deleted=blue_deleted, still_serves_its_green=serves) is expected


@pytest.mark.parametrize(("step", "manual", "expected"), [
    (steps.RESTORE_GREEN, False, False), (steps.MONITOR_STABILITY, False, False),
    (steps.FINALIZE, False, True), (steps.RESTORE_GREEN, True, True), (steps.SNAPSHOT_STAGING, True, True),
])
def test_a_dead_run_is_rolled_back_regardless_of_its_inputs_when_asked_or_dead_in_finalize(
        step: steps.Step, manual: bool, expected: bool) -> None:
    assert dead_run_rolls_back(step, manual) is expected
