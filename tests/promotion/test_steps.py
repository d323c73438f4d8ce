"""The steps table is the one source of step numbers, names, evidence files and failure meaning."""

from __future__ import annotations

import pytest

from promote_pipeline.promotion import guardrails, steps

pytestmark = pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)


def test_the_eight_steps_are_numbered_in_the_seeds_order() -> None:
    assert [s.name for s in steps.STEPS] == ["create_ops_run", "snapshot_staging", "backup_production",
                                             "restore_green", "smoke_test_green", "cutover", "monitor_stability",
                                             "finalize"]
    assert [s.number for s in steps.STEPS] == list(range(1, 9)) and steps.TOTAL == 8
    assert steps.RESTORE_GREEN.label == "[4/8] restore_green"


def test_the_eleven_evidence_files_are_the_registrys_and_each_is_written_by_one_step() -> None:
    files = steps.evidence_files()
    assert len(files) == len(set(files)) == 11
    assert set(files) == set(guardrails.current().evidence_files)


def test_a_failure_rolls_back_only_where_green_can_have_taken_traffic_or_be_about_to() -> None:
    assert [s.name for s in steps.STEPS if not s.after_green] == ["create_ops_run", "snapshot_staging",
                                                                  "backup_production"]
    assert [s.name for s in steps.STEPS if s.rolls_back] == ["restore_green", "smoke_test_green", "cutover",
                                                             "monitor_stability"]
    assert all(s.after_green for s in steps.STEPS if s.rolls_back)


@pytest.mark.parametrize(("written", "reached"), [
    ([], "snapshot_staging"),
    (["inputs.json", "run_id.txt"], "snapshot_staging"),
    (["staging_snapshot.json"], "backup_production"),
    (["staging_snapshot.json", "blue_backup.json"], "restore_green"),
    (["staging_snapshot.json", "blue_backup.json", "green_restore.json"], "smoke_test_green"),
    (["staging_snapshot.json", "blue_backup.json", "green_restore.json", "smoke_tests.json"], "cutover"),
    (["staging_snapshot.json", "blue_backup.json", "green_restore.json", "smoke_tests.json", "cutover.json"],
     "monitor_stability"),
    (["staging_snapshot.json", "blue_backup.json", "green_restore.json", "smoke_tests.json", "cutover.json",
      "stability_metrics.json"], "finalize"),
    # Only the last file counts: a run is judged by how far it got, not by a gap earlier on.
    (["cutover.json"], "monitor_stability"),
])
def test_the_step_a_dead_run_had_reached_is_the_one_after_its_last_file(written: list[str], reached: str) -> None:
    assert steps.reached(lambda name: name in written).name == reached
