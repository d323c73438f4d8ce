"""The approval gate's records on a real ops database (a fresh one per test): an approval is recorded only while the
gate waits, the gate closes as approved exactly when one was recorded, an abort wins over an approval, and nothing
is recorded for a refused approval."""

from __future__ import annotations

import threading

import pytest

from promote_pipeline.promotion.approval import in_words, reminder
from resources.ops_db import EnvironmentRecord, OpsDatabase


def _running(ops_db: OpsDatabase) -> str:
    env = EnvironmentRecord(environment_id="env_p", project_id="p", kind="production", git_commit_sha="c" * 40,
                            db_dsn_ref="DSN", db_name_prefix="x", filestore_root="/tmp", require_approval=True)
    ops_db.add_project("p", "P", [env])
    return ops_db.create_run("p", "env_p", "u", {}, None)


def test_an_approval_is_taken_only_while_the_gate_waits(private_ops_db: OpsDatabase) -> None:
    run_id = _running(private_ops_db)
    assert private_ops_db.environment("env_p").require_approval is True  # type: ignore[union-attr]
    assert private_ops_db.request_approval(run_id, "bob") == "none"  # no gate open yet: refused, nothing recorded
    assert private_ops_db.approval(run_id) is None
    private_ops_db.open_approval_gate(run_id, {"timeout_seconds": 60})
    assert private_ops_db.approval_gate(run_id) == {"timeout_seconds": 60, "state": "waiting"}
    assert private_ops_db.request_approval(run_id, "bob") is None
    state, approval = private_ops_db.close_approval_gate(run_id, "timed_out", facts={"waited_seconds": 1.5})
    assert state == "approved" and approval is not None and approval.approved_by == "bob"
    assert private_ops_db.approval_gate(run_id) == {"timeout_seconds": 60, "state": "approved", "waited_seconds": 1.5}
    assert private_ops_db.request_approval(run_id, "carol") == "approved"  # closed: the second one is refused
    assert [e["message"] for e in _events(private_ops_db, run_id)] == ["approved by bob"]
    private_ops_db.mark_run_finished(run_id, "failed")
    assert private_ops_db.request_approval(run_id, "bob") == "failed"


def test_a_timed_out_gate_refuses_a_late_approval_and_an_abort_wins(private_ops_db: OpsDatabase) -> None:
    run_id = _running(private_ops_db)
    private_ops_db.open_approval_gate(run_id, {})
    assert private_ops_db.close_approval_gate(run_id, "timed_out") == ("timed_out", None)
    assert private_ops_db.request_approval(run_id, "bob") == "timed_out" and _events(private_ops_db, run_id) == []

    private_ops_db.open_approval_gate(run_id, {})
    assert private_ops_db.request_approval(run_id, "bob") is None
    state, _ = private_ops_db.close_approval_gate(run_id, "aborted", approval_wins=False)
    assert state == "aborted" and private_ops_db.approval_gate(run_id)["state"] == "aborted"  # type: ignore[index]


def test_an_approval_racing_the_close_is_either_taken_or_refused(private_ops_db: OpsDatabase) -> None:
    """Many approvals against one close: whichever wins the row lock, the gate's word and the records agree."""
    run_id = _running(private_ops_db)
    private_ops_db.open_approval_gate(run_id, {})
    answers: list[str | None] = []
    barrier = threading.Barrier(9)

    def approve(user: str) -> None:
        barrier.wait()
        answers.append(private_ops_db.request_approval(run_id, user))

    threads = [threading.Thread(target=approve, args=(f"user{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    barrier.wait()
    state, approval = private_ops_db.close_approval_gate(run_id, "timed_out")
    for t in threads:
        t.join(timeout=60)
    recorded = _events(private_ops_db, run_id)
    assert (state == "approved") == bool(recorded) == (approval is not None)
    assert answers.count(None) == len(recorded)  # every approval recorded was answered as recorded, and only those
    assert private_ops_db.approval_gate(run_id)["state"] == state  # type: ignore[index]


def _events(ops_db: OpsDatabase, run_id: str) -> list[dict[str, object]]:
    with ops_db.connect() as conn:
        return conn.execute("SELECT message FROM ops.run_events WHERE run_id = %s AND step = 'approve'"
                            " ORDER BY event_id", (run_id,)).fetchall()


@pytest.mark.parametrize(("seconds", "said"), [(3, "3s"), (119, "119s"), (120, "2m"), (3539.7, "59m"),
                                               (3600, "1h 0m"), (3661, "1h 2m")])
def test_the_time_left_is_said_in_whole_minutes_rounded_up(seconds: float, said: str) -> None:
    assert in_words(seconds) == said
    assert reminder("run_x", seconds).strip() == f"awaiting approval: promote approve run_x --user USER (times out in" \
                                                 f" {said})"
