"""A rollback when the router's folder cannot be written (a read-only remount, a full disk): it completes what it
can and says what it could not.

The folder is made immutable (``chattr +i``: not even root may create a file in it) by the sandbox's real HAProxy
router right after it routes an entry point to green, the moment such a failure would bite a real promotion.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from promote_pipeline.cli.sandbox import PROD, Sandbox
from promote_pipeline.promotion.services import upstream
from resources.haproxy_router import HAProxyRouter
from resources.router import RoutingState, Upstream

pytestmark = pytest.mark.slow

FREEZE_ON: list[str] = []  # the entry point whose switch to green freezes the folder ("before:" + it: just before)
FROZEN: list[Path] = []


def _immutable(folder: Path, on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", str(folder)], check=True, capture_output=True)


class FreezingHAProxy(HAProxyRouter):
    def set_preview(self, environment_id: str, target: Upstream) -> RoutingState:
        return self._then_freeze("preview", target, super().set_preview(environment_id, target))

    def switch_active(self, environment_id: str, target: Upstream) -> RoutingState:
        if target.colour == "green" and "before:active" in FREEZE_ON and not FROZEN:
            self._freeze()
        return self._then_freeze("active", target, super().switch_active(environment_id, target))

    def _freeze(self) -> None:
        folder = Path(self.work_dir).resolve()
        _immutable(folder, True)
        FROZEN.append(folder)

    def _then_freeze(self, entry: str, target: Upstream, state: RoutingState) -> RoutingState:
        if target.colour == "green" and entry in FREEZE_ON and not FROZEN:
            self._freeze()
        return state


@contextlib.contextmanager
def _freezing(box: Sandbox, entry: str) -> Iterator[HAProxyRouter]:
    cfg = box.settings()
    FREEZE_ON[:] = [entry]
    FROZEN.clear()
    try:
        yield FreezingHAProxy(work_dir=cfg.router_dir)
    finally:
        for folder in FROZEN:
            _immutable(folder, False)
        FROZEN.clear()
        # What the rollback could not save, saved now, so the shared sandbox's files say what its router serves.
        res = box.resources()
        blue = res["ops_db"].active_deployment(PROD)
        res["router"].switch_active(PROD, upstream(blue, "blue"))
        res["router"].set_preview(PROD, upstream(blue, "blue"))


def _rollback(outcome: Any) -> dict[str, Any]:
    return dict(json.loads((Path(outcome.evidence_dir) / "rollback.json").read_text()))


def test_a_green_that_never_served_is_removed_without_any_router_write(haproxy_box: Sandbox, h: Any) -> None:
    box = haproxy_box
    blue = box.resources()["ops_db"].active_deployment(PROD)
    h.write_fault(box, refuse_login=True)  # the smoke test fails: green never takes traffic
    try:
        with _freezing(box, "preview") as router:
            code, outcome, message = h.promote(resource_overrides={"router": router})
            assert FROZEN, "the folder was never frozen"
    finally:
        h.clear_faults(box)
    assert code == 1 and outcome is not None and outcome.status == "rolled_back", message
    rollback = _rollback(outcome)
    assert rollback["router_switched_back"] is False and rollback["green_database_kept"] is False
    assert any(n.startswith("preview entry point") and "could not" in n for n in rollback["notes"]), rollback["notes"]
    [green] = box.resources()["ops_db"].deployments_created_by(outcome.run_id)
    assert green.state == "deleted"
    assert not box.resources()["odoo_host"].database_exists("PROMOTE_SANDBOX_PG_DSN", green.db_name)
    assert box.resources()["ops_db"].active_deployment(PROD).deployment_id == blue.deployment_id
    summary = (Path(outcome.evidence_dir) / "promotion_summary.md").read_text()
    assert "What the rollback could not do" in summary and "- preview entry point" in summary


def test_a_green_that_served_is_rolled_back_live_and_the_unsaved_switch_is_said(haproxy_box: Sandbox,
                                                                                h: Any) -> None:
    box = haproxy_box
    url = box.status()["router_url"]
    fault = box.root / "faults" / f"{PROD}.json"
    not_before = time.time()  # green only: blue, started before, keeps answering
    watcher = h.after_cutover(box, lambda: fault.write_text(json.dumps({"not_before": not_before, "error_rate": 0.5})))
    try:
        with _freezing(box, "active") as router:
            code, outcome, message = h.promote(stability_window_seconds=8, resource_overrides={"router": router})
            assert FROZEN, "the folder was never frozen"
            # Still frozen: what the router serves now is blue, live, though its files could not say so.
            statuses = [httpx.get(f"{url}/web/health", timeout=5).status_code for _ in range(20)]
    finally:
        try:
            watcher.finish(required=False)  # whether it fired is what the assertions below are about
        finally:
            h.clear_faults(box)  # never left behind: every later promotion in this sandbox would fail
    assert code == 1 and outcome is not None and outcome.status == "rolled_back", message
    assert statuses == [200] * 20
    rollback = _rollback(outcome)
    assert rollback["router_switched_back"] is True and rollback["router_saved"] is False
    assert rollback["routing_after"]["active"]["colour"] == "blue"
    assert any("traffic is back on blue, but the router could not save it" in n for n in rollback["notes"])
    [green] = box.resources()["ops_db"].deployments_created_by(outcome.run_id)
    assert green.state == "retired" and rollback["green_database_kept"] is True


def test_a_cutover_live_but_unsaved_is_switched_back_whatever_the_files_say(haproxy_box: Sandbox, h: Any) -> None:
    """HAProxy switched to green through its runtime API, then could not save it: its files still say blue, and
    the rollback must not believe them."""
    box = haproxy_box
    url = box.status()["router_url"]
    with _freezing(box, "before:active") as router:
        code, outcome, message = h.promote(resource_overrides={"router": router})
        assert FROZEN, "the folder was never frozen"
        statuses = [httpx.get(f"{url}/web/health", timeout=5).status_code for _ in range(20)]
    assert code == 1 and outcome is not None and outcome.status == "rolled_back", message
    assert statuses == [200] * 20  # blue answers; a stopped green behind the router would be 503s
    rollback = _rollback(outcome)
    assert rollback["failed_step"] == "cutover" and rollback["router_switched_back"] is True
    assert rollback["router_saved"] is False and rollback["green_database_kept"] is True  # it served, briefly
