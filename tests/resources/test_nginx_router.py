"""NginxRouter against a real private nginx and real upstreams on loopback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.nginx_router import NginxRouter
from resources.router import RouterError

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")


@pytest.fixture
def router(tmp_path: Path) -> Iterator[NginxRouter]:
    r = NginxRouter(work_dir=str(tmp_path / "ng"))
    r.start()
    try:
        yield r
    finally:
        r.stop()


def test_routing_lifecycle(router: NginxRouter, deployments, net) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    router.start()  # idempotent while running
    assert router.is_running()

    st = router.register_environment("prod-main", blue)
    assert st.router == "nginx" and st.active == blue and st.preview == blue
    assert router.register_environment("prod-main", green) == st  # existing: unchanged
    assert net.get(st.active_url) == "blue" and net.get(st.preview_url) == "blue"
    assert net.get(st.active_url, "/websocket") == "ws-blue"
    assert net.get(st.active_url, "/websocket?x=1") == "ws-blue"

    st = router.set_preview("prod-main", green)
    assert net.get(st.preview_url) == "green" and net.get(st.active_url) == "blue"
    assert net.get(st.preview_url, "/websocket") == "ws-green"

    st = router.switch_active("prod-main", green)
    assert st.active == green and router.state("prod-main") == st
    assert net.get(st.active_url) == "green" and net.get(st.active_url, "/websocket") == "ws-green"
    assert net.served_by(st.active_url) == net.served_by(st.active_url, "/websocket") == "prod-green"
    routes = json.loads((Path(router.work_dir) / "routes.json").read_text())
    assert routes["environments"]["prod-main"]["active"]["http_port"] == green.http_port
    include = next((Path(router.work_dir) / "routes").glob("*.conf"))
    assert f"127.0.0.1:{green.http_port}" in include.read_text()

    router.stop()
    assert not router.is_running()
    router.start()  # the switch survives a restart
    assert net.get(st.active_url) == "green" and net.get(st.preview_url) == "green"

    st = router.switch_active("prod-main", blue)  # rollback is the same call
    assert net.get(st.active_url) == "blue"

    drill = router.model_copy(update={"drill_refuse_switch": True})
    before = include.read_text()
    with pytest.raises(RouterError, match="unknown directive"):
        drill.switch_active("prod-main", green)
    assert include.read_text() == before  # the refused file was replaced by the previous one
    assert router.state("prod-main").active == blue
    assert net.get(st.active_url) == "blue" and net.get(st.active_url, "/websocket") == "ws-blue"
    assert net.served_by(st.active_url) == "prod-blue"
    drill.set_preview("prod-main", blue)  # the drill only affects switch_active
    assert net.get(st.preview_url) == "blue"

    router.stop()
    router.stop()  # idempotent
    assert not router.is_running()


def test_refusals(router: NginxRouter, deployments) -> None:
    blue = deployments["blue"].upstream
    with pytest.raises(RouterError, match="not registered"):
        router.switch_active("nope", blue)
    router.register_environment("prod-x", blue)
    bad = blue.model_copy(update={"host": "bad host"})  # nginx -t: invalid server address
    with pytest.raises(RouterError, match="config test failed"):
        router.switch_active("prod-x", bad)
    assert router.state("prod-x").active == blue
    router.stop()
    with pytest.raises(RouterError, match="not running"):
        router.switch_active("prod-x", blue)


def test_switches_under_load(router: NginxRouter, deployments, net) -> None:
    """4 keep-alive clients hammer the entry point while it is switched 4 times. Each switch is
    a reload whose old worker closes its idle keep-alive connections, so failures are measured
    and printed, not asserted; an open websocket tunnel must survive on its upstream."""
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    st = router.register_environment("prod-load", blue)
    tunnel = net.tunnel(st.active_url)
    assert net.echo(tunnel) == "ws-blue:ping"

    def to(upstream, body):
        return lambda: (router.switch_active("prod-load", upstream), body)[1]

    result = net.load(st.active_url, [to(green, "green"), to(blue, "blue"), to(green, "green"),
                                      to(blue, "blue")])
    print(f"\nnginx: {result.requests} requests, {result.failures} failed, "
          f"{result.stale} stale, {result.connections} connections; errors: {sorted(set(result.errors))}")
    assert result.requests > 100
    assert result.failures < result.requests / 10
    assert net.echo(tunnel, b"still") == "ws-blue:still"  # tunnel untouched by the switches
    tunnel.close()
    router.switch_active("prod-load", green)
    fresh = net.tunnel(st.active_url)
    assert net.echo(fresh) == "ws-green:ping"
    fresh.close()


def test_no_keepalive_means_no_failed_request(tmp_path: Path, deployments, net) -> None:
    """With keepalive_timeout=0 nothing is idle when an old worker exits: zero failures."""
    router = NginxRouter(work_dir=str(tmp_path / "ng"), keepalive_timeout=0)
    router.start()
    try:
        blue, green = deployments["blue"].upstream, deployments["green"].upstream
        st = router.register_environment("prod-load", blue)

        def to(upstream, body):
            return lambda: (router.switch_active("prod-load", upstream), body)[1]

        result = net.load(st.active_url, [to(green, "green"), to(blue, "blue"), to(green, "green"),
                                          to(blue, "blue")], pause=0.4)
        print(f"\nnginx keepalive_timeout=0: {result.requests} requests, {result.failures} failed, "
              f"{result.stale} stale")
        assert result.requests > 100
        assert result.failures == 0, result.errors[:5]
        assert result.stale == 0
    finally:
        router.stop()
