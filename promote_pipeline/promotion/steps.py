"""The eight steps of a promotion, in the seed's order: the one table that knows their numbers, names,
evidence files and what a failure in each of them means.

The job's ops are named from it, progress lines count with it, the in-job failure handling decides
from it whether there is a green to undo, and the out-of-process rollback reads from it which step a
run whose worker died had reached (the last step whose evidence file exists). Nothing else spells a
step number or an evidence file name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# The eleven evidence files, by the step that writes them. The skill registry lists the same eleven as
# required (a test keeps the two equal); these names are what the code writes and reads.
INPUTS_JSON = "inputs.json"
RUN_ID_TXT = "run_id.txt"
STAGING_SNAPSHOT_JSON = "staging_snapshot.json"
BLUE_BACKUP_JSON = "blue_backup.json"
GREEN_RESTORE_JSON = "green_restore.json"
SMOKE_TESTS_JSON = "smoke_tests.json"
CUTOVER_JSON = "cutover.json"
STABILITY_METRICS_JSON = "stability_metrics.json"
ROLLBACK_JSON = "rollback.json"
FINAL_STATUS_JSON = "final_status.json"
PROMOTION_SUMMARY_MD = "promotion_summary.md"


@dataclass(frozen=True)
class Step:
    """One step of the job.

    ``after_green``: green may exist once this step runs, so a failure here has something to undo.
    ``rolls_back``: a failure here switches traffic back to blue (when ``auto_rollback_on_failure``);
    finalize is after green but does not: green has passed its window, and a failure to write the
    success down is reported, not answered by taking production away from it.
    """

    number: int
    name: str
    evidence: tuple[str, ...]
    after_green: bool
    rolls_back: bool

    @property
    def label(self) -> str:
        """``[4/8] restore_green``: how progress lines and messages name the step."""
        return f"[{self.number}/{TOTAL}] {self.name}"


CREATE_OPS_RUN = Step(1, "create_ops_run", (INPUTS_JSON, RUN_ID_TXT), after_green=False, rolls_back=False)
SNAPSHOT_STAGING = Step(2, "snapshot_staging", (STAGING_SNAPSHOT_JSON,), after_green=False, rolls_back=False)
BACKUP_PRODUCTION = Step(3, "backup_production", (BLUE_BACKUP_JSON,), after_green=False, rolls_back=False)
RESTORE_GREEN = Step(4, "restore_green", (GREEN_RESTORE_JSON,), after_green=True, rolls_back=True)
SMOKE_TEST_GREEN = Step(5, "smoke_test_green", (SMOKE_TESTS_JSON,), after_green=True, rolls_back=True)
CUTOVER = Step(6, "cutover", (CUTOVER_JSON,), after_green=True, rolls_back=True)
MONITOR_STABILITY = Step(7, "monitor_stability", (STABILITY_METRICS_JSON,), after_green=True, rolls_back=True)
FINALIZE = Step(8, "finalize", (ROLLBACK_JSON, FINAL_STATUS_JSON, PROMOTION_SUMMARY_MD), after_green=True,
                rolls_back=False)

STEPS: tuple[Step, ...] = (CREATE_OPS_RUN, SNAPSHOT_STAGING, BACKUP_PRODUCTION, RESTORE_GREEN, SMOKE_TEST_GREEN,
                           CUTOVER, MONITOR_STABILITY, FINALIZE)
TOTAL = len(STEPS)
def evidence_files() -> list[str]:
    """The eleven files in the order the steps write them."""
    return [name for step in STEPS for name in step.evidence]


def reached(has_file: Callable[[str], bool]) -> Step:
    """The step a run was in when it stopped, judged by its evidence: the step after the last one (of
    steps 2 to 7) whose file was written; a run that wrote none of them was taking its snapshot.

    Steps 1 and 8 are not judged by their files: step 1's are written before the run can be seen at
    all, and a run that wrote step 8's files has finished.
    """
    for index in range(MONITOR_STABILITY.number - 1, SNAPSHOT_STAGING.number - 2, -1):
        if has_file(STEPS[index].evidence[0]):
            return STEPS[index + 1]
    return SNAPSHOT_STAGING
