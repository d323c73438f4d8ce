"""HAProxyRouter and NginxRouter against a real private haproxy / nginx and real upstreams on loopback.

Both routers keep one contract (resources.router), so one set of tests runs against each; ``Kind`` holds
what differs: where the routed address is written, how each refuses a bad change, and what a switch under
load may cost (HAProxy switches through its runtime API and closes nothing; nginx reloads, and its old
worker closes idle keep-alive connections).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resources._router_common import safe_name, wait_for
from resources.haproxy_router import HAProxyRouter
from resources.nginx_router import NginxRouter
from resources.router import RouterError


def _haproxy_config(router: Any, state: Any) -> Path:
    return Path(state.config_path)


def _nginx_config(router: Any, state: Any) -> Path:
    return next((Path(router.work_dir) / "routes").glob("*.conf"))


@dataclass(frozen=True)
class Kind:
    name: str
    make: Callable[..., Any]
    routed_config: Callable[[Any, Any], Path]  # the file that names the active upstream's address
    drill_refusal: str  # the router's own words when the drill's switch is refused
    bad_host: str  # an upstream host the router itself refuses
    bad_host_refusal: str
    switches_drop_nothing: bool  # under load: no failed request, every client keeps its one connection


KINDS = {
    "haproxy": Kind("haproxy", HAProxyRouter, _haproxy_config, "No such backend", "not-an-ip.invalid", "refused",
                    switches_drop_nothing=True),
    "nginx": Kind("nginx", NginxRouter, _nginx_config, "unknown directive", "bad host", "config test failed",
                  switches_drop_nothing=False),
}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> Kind:
    if shutil.which(request.param) is None:
        pytest.skip(f"{request.param} not installed")
    return KINDS[request.param]


@pytest.fixture
def router(kind: Kind, tmp_path: Path) -> Iterator[Any]:
    r = kind.make(work_dir=str(tmp_path / kind.name))
    r.start()
    try:
        yield r
    finally:
        r.stop()


def test_routing_lifecycle(kind: Kind, router: Any, deployments, net) -> None:
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    router.start()  # idempotent while running
    assert router.is_running()

    st = router.register_environment("prod-main", blue)
    assert st.router == kind.name and st.active == blue and st.preview == blue
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
    config = kind.routed_config(router, st)
    assert f"127.0.0.1:{green.http_port}" in config.read_text()

    router.stop()
    assert not router.is_running()
    router.start()  # the switch survives a restart
    assert net.get(st.active_url) == "green" and net.get(st.preview_url) == "green"

    st = router.switch_active("prod-main", blue)  # rollback is the same call
    assert net.get(st.active_url) == "blue"

    drill = router.model_copy(update={"drill_refuse_switch": True})
    before = config.read_text()
    with pytest.raises(RouterError, match=kind.drill_refusal):
        drill.switch_active("prod-main", green)
    assert config.read_text() == before  # a refused change leaves the persisted routing as it was
    assert router.state("prod-main").active == blue
    assert net.get(st.active_url) == "blue" and net.get(st.active_url, "/websocket") == "ws-blue"
    assert net.served_by(st.active_url) == "prod-blue"
    drill.set_preview("prod-main", blue)  # the drill only affects switch_active
    assert net.get(st.preview_url) == "blue"

    router.stop()
    router.stop()  # idempotent
    assert not router.is_running()


class _HAProxyLosingSwitches(HAProxyRouter):
    """An adapter bug in miniature: the runtime-API calls never reach HAProxy, yet routes.json is written."""

    def _apply_route(self, *args: Any, **kwargs: Any) -> None:
        pass


class _NginxLosingReloads(NginxRouter):
    """The include file is rewritten and passes ``nginx -t``, routes.json is written, but the reload is lost."""

    def _reload(self, *args: Any, **kwargs: Any) -> None:
        pass


LOSING = {"haproxy": _HAProxyLosingSwitches, "nginx": _NginxLosingReloads}


def test_served_upstream_asks_the_router_not_routes_json(kind: Kind, router: Any, deployments, net) -> None:
    """A switch the router never carried out: routes.json says green, the router (and every user) is on blue.
    ``served_upstream``/``serves`` must say blue; a verdict that read routes.json would say green."""
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    st = router.register_environment("prod-lost", blue)
    served = router.served_upstream("prod-lost")
    assert (served.name, served.host, served.http_port, served.websocket_port) == (
        "prod-blue", "127.0.0.1", blue.http_port, blue.websocket_port)
    assert router.serves("prod-lost", blue) and not router.serves("prod-lost", green)

    LOSING[kind.name](work_dir=router.work_dir).switch_active("prod-lost", green)
    assert router.state("prod-lost").active == green  # what was asked for, recorded
    assert net.get(st.active_url) == "blue"  # what users get
    served = router.served_upstream("prod-lost")
    assert served.name == "prod-blue" and served.http_port == blue.http_port, served
    assert router.serves("prod-lost", blue) and not router.serves("prod-lost", green)

    router.switch_active("prod-lost", green)  # a real switch: now the router itself says green
    assert router.serves("prod-lost", green) and not router.serves("prod-lost", blue)
    assert router.served_upstream("prod-lost", "preview").name == "prod-blue"
    assert net.served_by(st.active_url) == "prod-green"
    with pytest.raises(RouterError, match="not registered"):
        router.served_upstream("nope")


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_haproxy_server_in_maintenance_serves_nothing(tmp_path: Path, deployments) -> None:
    """A server HAProxy holds in maintenance serves no one, whatever its address and routes.json say."""
    router = HAProxyRouter(work_dir=str(tmp_path / "hp"))
    router.start()
    try:
        blue = deployments["blue"].upstream
        router.register_environment("prod-maint", blue)
        assert router.serves("prod-maint", blue)
        router._command(f"disable server {safe_name('prod-maint')}_active_http/app")
        served = router.served_upstream("prod-maint")
        assert served.name is None and not router.serves("prod-maint", blue)
        assert router.state("prod-maint").active == blue
    finally:
        router.stop()


def test_refusals(kind: Kind, router: Any, deployments) -> None:
    blue = deployments["blue"].upstream
    with pytest.raises(RouterError, match="not registered"):
        router.switch_active("nope", blue)
    router.register_environment("prod-x", blue)
    bad = blue.model_copy(update={"host": kind.bad_host})
    with pytest.raises(RouterError, match=kind.bad_host_refusal):
        router.switch_active("prod-x", bad)
    assert router.state("prod-x").active == blue
    router.stop()
    with pytest.raises(RouterError, match="not running"):
        router.switch_active("prod-x", blue)


def _switches(router: Any, env_id: str, blue: Any, green: Any) -> list[Callable[[], str]]:
    def to(upstream: Any, body: str) -> Callable[[], str]:
        return lambda: (router.switch_active(env_id, upstream), body)[1]

    return [to(green, "green"), to(blue, "blue"), to(green, "green"), to(blue, "blue")]


def test_switches_under_load(kind: Kind, router: Any, deployments, net) -> None:
    """4 keep-alive clients hammer the entry point while it is switched 4 times; an open websocket tunnel
    stays up on the upstream it was opened to. HAProxy: zero failures, each client keeps its one
    connection, every request after a switch reaches the new upstream. nginx: each switch is a reload
    whose old worker closes its idle keep-alive connections, so failures are measured and printed, and
    only bounded (see test_nginx_without_keepalive_drops_nothing)."""
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    st = router.register_environment("prod-load", blue)
    tunnel = net.tunnel(st.active_url)
    assert net.echo(tunnel) == "ws-blue:ping"

    result = net.load(st.active_url, _switches(router, "prod-load", blue, green))
    print(f"\n{kind.name}: {result.requests} requests, {result.failures} failed, {result.stale} stale,"
          f" {result.connections} connections; errors: {sorted(set(result.errors))}")
    assert result.requests >= 5 * 200  # every window carried its load (net.load counts, it does not pause)
    if kind.switches_drop_nothing:
        assert result.failures == 0, result.errors[:5]
        assert result.connections == 4
        assert result.stale == 0
    else:
        assert result.failures < result.requests / 10
    assert net.echo(tunnel, b"still") == "ws-blue:still"  # tunnel untouched by the switches
    tunnel.close()
    router.switch_active("prod-load", green)
    fresh = net.tunnel(st.active_url)
    assert net.echo(fresh) == "ws-green:ping"
    fresh.close()


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")
def test_nginx_without_keepalive_drops_nothing(tmp_path: Path, deployments, net) -> None:
    """With keepalive_timeout=0 nothing is idle when an old worker exits: zero failures."""
    router = NginxRouter(work_dir=str(tmp_path / "ng"), keepalive_timeout=0)
    router.start()
    try:
        blue, green = deployments["blue"].upstream, deployments["green"].upstream
        st = router.register_environment("prod-load", blue)
        result = net.load(st.active_url, _switches(router, "prod-load", blue, green))
        print(f"\nnginx keepalive_timeout=0: {result.requests} requests, {result.failures} failed, "
              f"{result.stale} stale")
        assert result.requests >= 5 * 200  # every window carried its load (net.load counts, it does not pause)
        assert result.failures == 0, result.errors[:5]
        assert result.stale == 0
    finally:
        router.stop()


def test_traffic_since_counts_what_the_router_sent_to_one_upstream(kind: Kind, router: Any, deployments,
                                                                    net) -> None:
    """The router's own counters and log for green: its requests since the mark, on either entry point, with the
    path and status of each failed one; blue's requests, and green's before the mark, are not in them."""
    blue, green = deployments["blue"].upstream, deployments["green"].upstream
    st = router.register_environment("prod-main", blue)
    router.set_preview("prod-main", green)
    router_wait = 60
    earlier = router.traffic_mark("prod-main", green)
    for _ in range(3):  # before the mark: not counted
        assert net.get(st.preview_url) == "green"
    # the router counts a request once it has ended, which may be just after the client has its answer
    assert wait_for(lambda: router.traffic_since(earlier, green).requests == 3, router_wait)
    mark = router.traffic_mark("prod-main", green)
    for _ in range(5):
        assert net.get(st.preview_url, "/web/login") == "green"
    for _ in range(2):
        assert net.get(st.preview_url, "/boom/page?access_token=s3cret") == "green"
    for path in ("/", "/boom/blue", "/web/login", "/boom/blue"):  # blue's, through the public entry point
        assert net.get(st.active_url, path) == "blue"
    def all_seen() -> bool:  # HAProxy: the counter may move an instant before the request's log line is written
        seen = router.traffic_since(mark, green)
        return seen.requests >= 7 and seen.timed_requests >= 7

    assert wait_for(all_seen, router_wait)
    traffic = router.traffic_since(mark, green)
    assert (traffic.requests, traffic.responses_2xx, traffic.responses_5xx, traffic.failed) == (7, 5, 2, 2)
    assert traffic.upstream == "prod-green" and traffic.router == kind.name
    assert [(e.path, e.status, e.entry) for e in traffic.errors] == [("/boom/page", 500, "preview")] * 2
    assert all(e.at >= mark.at for e in traffic.errors) and "s3cret" not in traffic.model_dump_json()
    assert traffic.timed_requests == 7 and traffic.p95_ms is not None and traffic.p95_ms >= 0
    blue_mark = router.traffic_mark("prod-main", blue).model_copy(update={"at": mark.at, "baseline": {}})
    # Blue's requests were answered before green's were counted, but their log lines may come an instant later.
    assert wait_for(lambda: router.traffic_since(blue_mark, blue).responses_5xx >= 2, router_wait)
    blue_traffic = router.traffic_since(blue_mark, blue)
    assert all(e.path == "/boom/blue" for e in blue_traffic.errors)
