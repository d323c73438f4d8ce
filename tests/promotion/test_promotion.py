"""End-to-end promotions through real routers, PostgreSQL and odoo_standin processes.

Every rollback path ends with the run ``rolled_back``, traffic on the blue that was live before,
green stopped, and all eleven evidence files.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from promote_pipeline.cli.sandbox import PROD, Sandbox
from promote_pipeline.promotion import deployment
from promote_pipeline.promotion import evidence as evidence_mod
from promote_pipeline.promotion.services import Services
from resources.haproxy_router import HAProxyRouter
from resources.nginx_router import NginxRouter

pytestmark = pytest.mark.slow


def _live(box: Sandbox) -> dict[str, Any]:
    return box.status()["serving"]


def _served_by_router(box: Sandbox) -> str:
    """The deployment that answers through the public entry point, in the router's own words: the
    ``X-Promote-Upstream`` header of a real request through its public port, which must agree with what the
    running router says of itself (``served_upstream``: HAProxy's runtime API, nginx's loaded config)."""
    url = box.status()["router_url"]
    resp = httpx.post(f"{url}/web/webclient/version_info",
                      json={"jsonrpc": "2.0", "method": "call", "params": {}, "id": 1}, timeout=30)
    assert resp.status_code == 200
    header = resp.headers.get("X-Promote-Upstream")
    assert header and box.resources()["router"].served_upstream(PROD).name == header
    return header


def _assert_evidence_complete(folder: Any) -> None:
    missing = [n for n in evidence_mod.required_files() if not (folder / n).exists()]
    assert missing == []


def _assert_rolled_back(box: Sandbox, h: Any, code: int, outcome: Any, blue_before: dict[str, Any],
                        step: str) -> dict[str, Any]:
    assert code == 1
    assert outcome is not None and outcome.status == "rolled_back"
    folder = h.evidence(outcome)
    _assert_evidence_complete(folder)
    rollback = json.loads((folder / "rollback.json").read_text())
    final = json.loads((folder / "final_status.json").read_text())
    assert rollback["triggered"] is True and rollback["failed_step"] == step
    assert final["status"] == "rolled_back" and final["failed_step"] == step
    assert _served_by_router(box) == blue_before["deployment"] == _live(box)["deployment"]
    ops_db = box.resources()["ops_db"]
    greens = ops_db.deployments_created_by(outcome.run_id)
    host = box.resources()["odoo_host"]
    assert greens and all(not host.is_alive(g.pid) for g in greens)
    assert ops_db.run(outcome.run_id).status == "rolled_back"
    return rollback


def test_happy_path_then_again(box: Sandbox, h: Any) -> None:
    blue_before = _live(box)
    code, outcome, message = h.promote(stability_window_seconds=2)
    assert code == 0, message
    assert outcome is not None and outcome.status == "success"
    folder = h.evidence(outcome)
    _assert_evidence_complete(folder)
    live = _live(box)
    assert live["deployment"] != blue_before["deployment"] and live["colour"] == "green"
    assert live["deployment"] == _served_by_router(box)
    ops_db = box.resources()["ops_db"]
    blue_artifact = ops_db.artifact(outcome.blue_backup_id)
    assert blue_artifact and blue_artifact.role == "blue"
    [task] = ops_db.tasks_for_run(outcome.run_id, "delete_backup")
    assert task.metadata["artifact_id"] == outcome.blue_backup_id
    assert abs((task.execute_at - task.created_at).total_seconds() - 24 * 3600) < 60
    smoke = json.loads((folder / "smoke_tests.json").read_text())
    assert [r["name"] for r in smoke["results"]] == ["health_check", "database_connectivity", "module_integrity",
                                                     "filestore_accessibility", "user_authentication"]
    assert all(r["passed"] for r in smoke["results"])
    assert json.loads((folder / "rollback.json").read_text())["triggered"] is False
    stab = json.loads((folder / "stability_metrics.json").read_text())  # judged on the router's counts for green
    assert stab["passed"] and stab["judged_on"] == "router" and stab["traffic"]["router"] == box.settings().router_kind
    # The green of the first run is the blue of the second.
    code2, outcome2, message2 = h.promote(stability_window_seconds=1)
    assert code2 == 0, message2
    assert json.loads((h.evidence(outcome2) / "cutover.json").read_text())["routing_before"]["active"]["name"] \
        == live["deployment"]


def test_smoke_failure_rolls_back(box: Sandbox, h: Any) -> None:
    blue_before = _live(box)
    h.write_fault(box, refuse_login=True)
    try:
        code, outcome, _ = h.promote()
    finally:
        h.clear_faults(box)
    rollback = _assert_rolled_back(box, h, code, outcome, blue_before, "smoke_test_green")
    assert rollback["router_switched_back"] is False and rollback["green_database_kept"] is False
    smoke = json.loads((h.evidence(outcome) / "smoke_tests.json").read_text())
    assert {r["name"]: r["passed"] for r in smoke["results"]}["user_authentication"] is False
    [green_db] = box.resources()["ops_db"].deployments_created_by(outcome.run_id)
    assert green_db.state == "deleted"
    assert not box.resources()["odoo_host"].database_exists("PROMOTE_SANDBOX_PG_DSN", green_db.db_name)


@pytest.mark.parametrize("fault,step_reason,source", [
    ({"error_rate": 0.5}, "error rate", "http"),
    ({"crash_after_seconds": 0}, "crash", "process"),
    ({"db_down": True}, "database connection error", "green_db"),
])
def test_stability_failure_rolls_back_and_keeps_green(box: Sandbox, h: Any, fault: dict[str, Any],
                                                      step_reason: str, source: str) -> None:
    blue_before = _live(box)
    fault_path = box.root / "faults" / f"{PROD}.json"
    not_before = time.time()
    try:
        with h.after_cutover(box, lambda: fault_path.write_text(json.dumps({"not_before": not_before, **fault}))):
            code, outcome, _ = h.promote(stability_window_seconds=8)
    finally:
        h.clear_faults(box)
    rollback = _assert_rolled_back(box, h, code, outcome, blue_before, "monitor_stability")
    assert rollback["router_switched_back"] is True
    # recorded, not bounded here: how fast is a measurement (README, bench/), not a behaviour to race against
    assert isinstance(rollback["detection_to_blue_ms"], int) and rollback["detection_to_blue_ms"] >= 0
    assert rollback["green_database_kept"] is True
    metrics = json.loads((h.evidence(outcome) / "stability_metrics.json").read_text())
    assert metrics["passed"] is False and step_reason in metrics["reason"]
    # What green reported counts at once, and the evidence says when, from where and what.
    counted = [e for e in metrics["errors"] if e["counted"] and e["source"] == source]
    assert counted and counted[0]["at"] >= json.loads((h.evidence(outcome) / "cutover.json").read_text())[
        "cutover_timestamp"] and counted[0]["detail"]
    # Judged on the router's counts of green's requests (only the probe's here); the probe's last request may end
    # an instant after the window's last read of them.
    assert metrics["judged_on"] == "router" and metrics["probe_requests"] == metrics["samples"]
    assert metrics["requests"] >= metrics["samples"] - 1 and metrics["ended_early"] is True
    summary = (h.evidence(outcome) / "promotion_summary.md").read_text()
    assert f"{metrics['requests']} requests over" in summary and f"| {source} | yes |" in summary
    [green] = box.resources()["ops_db"].deployments_created_by(outcome.run_id)
    assert green.state == "retired"
    assert box.resources()["odoo_host"].database_exists("PROMOTE_SANDBOX_PG_DSN", green.db_name)


def test_router_refusing_the_switch_rolls_back(box: Sandbox, h: Any) -> None:
    blue_before = _live(box)
    cfg = box.settings()
    router_cls = HAProxyRouter if cfg.router_kind == "haproxy" else NginxRouter
    refusing = router_cls(work_dir=cfg.router_dir, drill_refuse_switch=True)
    code, outcome, _ = h.promote(resource_overrides={"router": refusing})
    rollback = _assert_rolled_back(box, h, code, outcome, blue_before, "cutover")
    assert rollback["green_database_kept"] is False
    assert json.loads((h.evidence(outcome) / "cutover.json").read_text())["reached"] is False


def test_no_auto_rollback_leaves_state_and_says_so(haproxy_box: Sandbox, h: Any) -> None:
    """The smoke test fails before any cutover: with auto-rollback off, nothing is undone, blue still serves
    (the router says so, and the evidence says so), and green is left standing for an operator."""
    box = haproxy_box
    blue_before = _live(box)
    h.write_fault(box, refuse_login=True)
    try:
        code, outcome, _ = h.promote(auto_rollback_on_failure=False)
    finally:
        h.clear_faults(box)
    assert code == 1 and outcome is not None and outcome.status == "failed"
    rollback = json.loads((h.evidence(outcome) / "rollback.json").read_text())
    assert rollback["triggered"] is False and rollback["failed_step"] == "smoke_test_green"
    assert rollback["live_served"]["name"] == blue_before["deployment"] == _served_by_router(box)
    assert rollback["live_routing"]["active"]["name"] == blue_before["deployment"]
    greens = box.resources()["ops_db"].deployments_created_by(outcome.run_id)
    assert greens and all(box.resources()["odoo_host"].is_alive(g.pid) for g in greens)  # left as it stands
    assert box.resources()["router"].served_upstream(PROD, "preview").name == greens[0].deployment_id
    # Clean up the green this run left standing, as an operator would.
    res = box.resources()
    for g in res["ops_db"].deployments_created_by(outcome.run_id):
        deployment.stop(Services.from_resources(res), g)  # its Odoo and its PgBouncer
        res["ops_db"].retire_deployment(g.deployment_id)
    res["router"].set_preview(PROD, res["router"].state(PROD).active)
