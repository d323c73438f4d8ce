"""HAProxyRouter against a real private haproxy and real upstreams on loopback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.haproxy_router import HAProxyRouter
from resources.router import RouterError

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")


@pytest.fixture
def router(tmp_path: Path) -> Iterator[HAProxyRouter]:
    r = HAProxyRouter(work_dir=str(tmp_path / "hx"))
    r.start()
    try:
        yield r
    finally:
        r.stop()


def test_routing_lifecycle(router: HAProxyRouter, deployments, net) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    router.start()  # idempotent while running
    assert router.is_running()

    st = router.register_environment("prod-main", blue)
    assert st.router == "haproxy" and st.active == blue and st.preview == blue
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
    assert f"127.0.0.1:{green.http_port}" in Path(st.config_path).read_text()

    router.stop()
    assert not router.is_running()
    router.start()  # the switch survives a restart
    assert net.get(st.active_url) == "green" and net.get(st.preview_url) == "green"

    st = router.switch_active("prod-main", blue)  # rollback is the same call
    assert net.get(st.active_url) == "blue"

    drill = router.model_copy(update={"drill_refuse_switch": True})
    with pytest.raises(RouterError, match="No such backend"):
        drill.switch_active("prod-main", green)
    assert router.state("prod-main").active == blue
    assert net.get(st.active_url) == "blue" and net.get(st.active_url, "/websocket") == "ws-blue"
    assert net.served_by(st.active_url) == "prod-blue"
    drill.set_preview("prod-main", blue)  # the drill only affects switch_active
    assert net.get(st.preview_url) == "blue"

    router.stop()
    router.stop()  # idempotent
    assert not router.is_running()


def test_refusals(router: HAProxyRouter, deployments) -> None:
    blue = deployments["blue"].upstream
    with pytest.raises(RouterError, match="not registered"):
        router.switch_active("nope", blue)
    router.register_environment("prod-x", blue)
    hostname = blue.model_copy(update={"host": "not-an-ip.invalid"})
    with pytest.raises(RouterError, match="refused"):
        router.switch_active("prod-x", hostname)
    assert router.state("prod-x").active == blue
    router.stop()
    with pytest.raises(RouterError, match="not running"):
        router.switch_active("prod-x", blue)


def test_switches_close_no_connection(router: HAProxyRouter, deployments, net) -> None:
    """4 keep-alive clients hammer the entry point while it is switched 4 times: zero failures,
    each client keeps its one connection, every request after a switch reaches the new upstream,
    and an open websocket tunnel stays up on the upstream it was opened to."""
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    st = router.register_environment("prod-load", blue)
    tunnel = net.tunnel(st.active_url)
    assert net.echo(tunnel) == "ws-blue:ping"

    def to(upstream, body):
        return lambda: (router.switch_active("prod-load", upstream), body)[1]

    result = net.load(st.active_url, [to(green, "green"), to(blue, "blue"), to(green, "green"),
                                      to(blue, "blue")])
    print(f"\nhaproxy: {result.requests} requests, {result.failures} failed, "
          f"{result.stale} stale, {result.connections} connections")
    assert result.requests > 100
    assert result.failures == 0, result.errors[:5]
    assert result.connections == 4
    assert result.stale == 0
    assert net.echo(tunnel, b"still") == "ws-blue:still"  # tunnel untouched by the switches
    tunnel.close()
    router.switch_active("prod-load", green)
    fresh = net.tunnel(st.active_url)
    assert net.echo(fresh) == "ws-green:ping"
    fresh.close()
