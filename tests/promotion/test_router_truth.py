"""Verdicts about routing come from the running router, never from routes.json.

A router adapter that loses a switch (HAProxy's runtime-API calls go nowhere; nginx's include file is
rewritten but the reload never happens) still writes routes.json as if it had switched. These tests make
exactly that happen against the sandbox's real router and check that everything that says what is live
(``Sandbox.status()``, the drills' verdict, the rollback's decision to switch and its safe-state check)
reports what the router really does. Each would fail if that verdict read routes.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from promote_pipeline.cli.drills import Drill, fingerprint
from promote_pipeline.cli.sandbox import PROD, STAGING, Sandbox
from promote_pipeline.promotion.rollback_run import load_run, roll_back_run, verify_safe_state
from promote_pipeline.promotion.services import Services, upstream
from resources.haproxy_router import HAProxyRouter
from resources.nginx_router import NginxRouter
from resources.router import RouterError

pytestmark = pytest.mark.slow


class _HAProxyLosingSwitches(HAProxyRouter):
    def _apply_route(self, *args: Any, **kwargs: Any) -> None:
        pass  # the runtime-API calls never reach HAProxy; routes.json is still written


class _NginxLosingReloads(NginxRouter):
    def _reload(self, *args: Any, **kwargs: Any) -> None:
        pass  # the include file is rewritten and passes nginx -t; the reload is lost


def _losing(box: Sandbox) -> Any:
    cls = _HAProxyLosingSwitches if box.router_kind == "haproxy" else _NginxLosingReloads
    return cls(work_dir=box.settings().router_dir)


def _recorded(box: Sandbox) -> str | None:
    active = box.resources()["router"].state(PROD).active
    return active.name if active else None


def test_status_and_drill_verdict_follow_the_router_not_routes_json(box: Sandbox) -> None:
    """Production really routed to another deployment (staging's server stands in for it) while routes.json is
    made to say blue: status, the drill's verdict and ``serves`` all say "not on blue"."""
    res = box.resources()
    router, ops_db = res["router"], res["ops_db"]
    before = box.status()["serving"]
    blue = ops_db.deployment(before["deployment"])
    other = ops_db.active_deployment(STAGING)
    assert blue is not None and other is not None and box.status()["recorded"]["deployment"] == blue.deployment_id
    blue_up, other_up = upstream(blue, "blue"), upstream(other, "green")
    drill = Drill(box, "router-fail", say=lambda _: None)
    blue_print = fingerprint(box, before["database"])
    try:
        router.switch_active(PROD, other_up)  # real: the router now sends users to `other`
        _losing(box).switch_active(PROD, blue_up)  # lost: only routes.json goes back to blue
        assert _recorded(box) == blue.deployment_id
        assert router.serves(PROD, other_up) and not router.serves(PROD, blue_up)
        status = box.status()
        assert status["serving"]["deployment"] == other.deployment_id, status
        assert status["recorded"]["deployment"] == blue.deployment_id
        assert status["serving"]["colour"] is None  # the recorded colour belongs to another deployment
        verdict = drill._judge(2, None, before, blue_print)
        assert verdict["checks"]["router_on_blue"] is False and verdict["safe"] is False, verdict
        cli = _sandbox_status(box)
        assert cli.returncode == 1 and f"serves {other.deployment_id} (" in cli.stdout, cli
        assert f"routes.json records {blue.deployment_id}" in cli.stderr, cli
    finally:
        router.switch_active(PROD, blue_up)  # a real switch: the shared sandbox goes on serving blue
    assert router.serves(PROD, blue_up) and box.status()["serving"]["deployment"] == blue.deployment_id
    assert drill._judge(2, None, before, blue_print)["safe"] is True
    cli = _sandbox_status(box)
    assert cli.returncode == 0 and f"serves {blue.deployment_id} (blue" in cli.stdout, cli


def _sandbox_status(box: Sandbox) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "promote_pipeline", "sandbox", "status", "--dir", str(box.root)],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())


def test_a_rollback_the_router_did_not_make_is_never_claimed(box: Sandbox, h: Any) -> None:
    """After a promotion, a rollback through a router that loses its switch writes routes.json back to blue;
    the rollback must fail (the router still serves green), the safe-state check must say "not on blue", and a
    later real rollback must switch (its "already on blue?" question asked of the router, not the file)."""
    blue_before = box.status()["serving"]
    code, outcome, message = h.promote()
    assert code == 0 and outcome is not None, message
    green = box.status()["serving"]
    assert green["deployment"] != blue_before["deployment"] and green["colour"] == "green"
    res = box.resources()
    losing_svc = Services.from_resources({**res, "router": _losing(box)})
    with pytest.raises(RouterError, match="serves"):
        roll_back_run(losing_svc, outcome.run_id, "lost switch", "test", manual=True)
    assert _recorded(box) == blue_before["deployment"]  # the file says blue ...
    assert box.status()["serving"]["deployment"] == green["deployment"]  # ... the router serves green
    assert res["ops_db"].run(outcome.run_id).status == "success"  # nothing claimed a rollback
    svc = Services.from_resources(res)
    _, run = load_run(svc, outcome.run_id)
    assert verify_safe_state(svc, run)["checks"]["router_on_blue"] is False

    result = roll_back_run(svc, outcome.run_id, "real switch", "test", manual=True)
    assert result["action"] == "rolled_back", result
    assert box.status()["serving"]["deployment"] == blue_before["deployment"]
    assert verify_safe_state(svc, run)["checks"]["router_on_blue"] is True
    rollback = json.loads((h.evidence(outcome) / "rollback.json").read_text())
    assert rollback["router_switched_back"] is True
    assert rollback["router_serves_after"]["name"] == blue_before["deployment"]


def test_sandbox_verify_names_what_the_router_serves(haproxy_box: Sandbox, h: Any) -> None:
    """`promote sandbox verify` checks the router itself serves production's active deployment: it passes while
    routes.json wrongly says blue (users are on green) and fails once the router really serves blue."""
    from promote_pipeline.cli import demo_check

    box = haproxy_box
    demo_check.remember(box)
    code, outcome, message = h.promote()
    assert code == 0 and outcome is not None, message
    res = box.resources()
    router, ops_db = res["router"], res["ops_db"]
    green, blue = ops_db.active_deployment(PROD), ops_db.deployment(demo_check_blue(box))
    assert green is not None and blue is not None and green.deployment_id != blue.deployment_id

    def router_check() -> tuple[bool, str]:
        [(ok, detail)] = [(ok, detail) for name, ok, detail in demo_check.verify(box)
                          if name == "router serves the active deployment"]
        return ok, detail

    try:
        assert router_check()[0] is True
        _losing(box).switch_active(PROD, upstream(blue, "blue"))  # routes.json: blue; router: still green
        ok, detail = router_check()
        assert ok is True and f"serves {green.deployment_id}" in detail, detail
        router.switch_active(PROD, upstream(blue, "blue"))  # the router really on blue; the ops records green
        ok, detail = router_check()
        assert ok is False and f"serves {blue.deployment_id}" in detail, detail
    finally:
        router.switch_active(PROD, upstream(green, "green"))
    assert router_check()[0] is True


def demo_check_blue(box: Sandbox) -> str:
    return str(json.loads((box.root / "demo_before.json").read_text())["blue_deployment"])
