"""The promoter against a real Odoo (opt-in: see conftest.py), through each router.

One story per router, told once (``story``): the sandbox up, a user logged in on production, a promotion, a
second one (whose blue, the first one's green, has a physical database name of its own), and a rollback of the
second. One test per promise:

(a) the first promotion succeeds; an integration (Python's standard ``xmlrpc.client``) logs in through the
    router with production's database name as it was before the promotion, reads and writes, and what it wrote
    is in the physical database the router serves after the cutover, not in blue's;
(b) a session cookie taken before the first cutover is logged in after each cutover and after the rollback;
(c) green's ``web.base.url`` is blue's (the smoke login did not rewrite it);
(d) no trace of staging's neutralization is left on green (and the banner staging shows is not served);
(e) each ``smoke_tests.json`` says ``"passed": true``, a JSON boolean;
(f) green's Odoo cannot open blue's database: XML-RPC naming blue's physical name through the router fails,
    and blue gains no partner;
(g) once green is stopped (by the rollback), no process of its group is left;
(h) a websocket upgrade on ``/websocket`` through the active entry point answers 101;
(i) the second promotion freezes blue (``--freeze-blue``): an integration's write on blue over XML-RPC while
    it is frozen is refused with an error and writes nothing (Odoo 18 begins its transactions READ WRITE, so a
    read-only database default alone would not refuse it), and once the rollback put traffic back on blue the
    same write succeeds.

The drift gate on a real Odoo: before the first promotion production saw only the test's web login, whose
``res_users_log`` row is Odoo's bookkeeping (not counted), so the gate lets it through without ``accept_drift``.
Before the second, the integration wrote a partner on production, which green (made from staging) does not
contain: the gate refuses it (exit 2, naming ``res_partner``), and the promotion goes ahead with ``accept_drift``.
"""

from __future__ import annotations

import json
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance

from promote_pipeline.cli import sandbox as sbx
from promote_pipeline.cli.real_odoo import NOT_NAMED, RealOdoo, RealOdooSandbox
from promote_pipeline.cli.runner import run_promotion, run_rollback
from promote_pipeline.odoo import carry_over, neutralization
from promote_pipeline.odoo import database as odoo_db
from promote_pipeline.promotion import steps
from promote_pipeline.promotion.smoke import websocket_upgrade
from resources import secrets

pytestmark = [pytest.mark.slow, pytest.mark.skipif(RealOdoo.from_env() is None, reason=NOT_NAMED)]
BANNER = "oe_neutralize_banner"  # the element of web.neutralize_banner, rendered on every page of web.layout
FENCE_PROBE = "fence probe"
FROZEN_PROBE = "written on frozen blue"
STORY_SECONDS = 600


@dataclass
class Story:
    """What was seen, phase by phase; ``error`` is the first failure, which ends the story."""

    box: RealOdooSandbox
    facts: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    requests: int = 0  # sent by this test to Odoo (through the router but for staging's page)
    error: str | None = None

    def need(self, *keys: str) -> list[Any]:
        missing = [k for k in keys if k not in self.facts]
        if missing:
            pytest.fail(f"not observed: {missing}; the story stopped at: {self.error}")
        return [self.facts[k] for k in keys]


# -- talking to Odoo as its clients do -----------------------------------------------------------------------
def _jsonrpc(story: Story, url: str, path: str, params: dict[str, Any],
             cookie: str | None = None) -> tuple[dict[str, Any], str | None]:
    """The result, and the session cookie the response set (else the one sent)."""
    story.requests += 1
    headers = {"Cookie": f"session_id={cookie}"} if cookie else None
    resp = httpx.post(f"{url}{path}", json={"jsonrpc": "2.0", "method": "call", "id": 1, "params": params},
                      headers=headers, timeout=15)
    resp.raise_for_status()
    body = resp.json()
    if "error" in body:
        raise AssertionError(f"{path}: {body['error'].get('data', {}).get('message') or body['error']}")
    return body, resp.cookies.get("session_id") or cookie


def _session_uid(story: Story, url: str, cookie: str) -> Any:
    body, _ = _jsonrpc(story, url, "/web/session/get_session_info", {}, cookie)
    return (body.get("result") or {}).get("uid")


def _get(story: Story, url: str) -> str:
    story.requests += 1
    return httpx.get(url, timeout=15).text


def _integration(story: Story, url: str, db: str, login: str, password: str, name: str) -> dict[str, Any]:
    """An integration configured once with production's name: log in, read, write, read back."""
    common = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/common", allow_none=True)
    models = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/object", allow_none=True)
    uid = common.authenticate(db, login, password, {})
    count = models.execute_kw(db, uid, password, "res.partner", "search_count", [[]])
    partner_id = models.execute_kw(db, uid, password, "res.partner", "create", [{"name": name}])
    read: Any = models.execute_kw(db, uid, password, "res.partner", "read", [[partner_id]], {"fields": ["name"]})
    story.requests += 4
    return {"uid": uid, "count": count, "partner_id": partner_id, "read_back": read[0]["name"]}


def _refusals(story: Story, url: str, db: str, login: str, password: str, uid: int) -> dict[str, str]:
    """Each XML-RPC call naming ``db``: its failure, or what it returned if it did not fail."""
    common = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/common", allow_none=True)
    models = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/object", allow_none=True)
    calls = {"common.authenticate": lambda: common.authenticate(db, login, password, {}),
             "object.execute_kw create": lambda: models.execute_kw(db, uid, password, "res.partner", "create",
                                                                   [{"name": FENCE_PROBE}])}
    out = {}
    for what, call in calls.items():
        story.requests += 1
        try:
            out[what] = f"RETURNED {call()!r}"
        except (xmlrpc.client.Error, OSError) as exc:
            out[what] = str(exc)[-300:]  # Odoo's traceback ends with the reason
    return out


def _sql(story: Story, db: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    host = story.box.resources()["odoo_host"]
    with host.connect(sbx.DSN_REF, db) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


# -- the story -----------------------------------------------------------------------------------------------
def _state(story: Story) -> tuple[Any, Any, str]:
    res = story.box.resources()
    ops_db, router = res["ops_db"], res["router"]
    return ops_db, ops_db.active_deployment(sbx.PROD), router.state(sbx.PROD).active_url


def _before(story: Story) -> None:
    ops_db, blue, url = _state(story)
    env, staging = ops_db.environment(sbx.PROD), ops_db.active_deployment(sbx.STAGING)
    password = secrets.resolve(env.smoke_password_ref)
    story.facts.update(database=blue.served_db, blue_deployment=blue.deployment_id, blue_db=blue.db_name,
                       login=env.smoke_login, password=password)
    story.facts["staging_shows_banner"] = BANNER in _get(story, f"http://127.0.0.1:{staging.http_port}/web/login")
    body, cookie = _jsonrpc(story, url, "/web/session/authenticate",
                            {"db": blue.served_db, "login": env.smoke_login, "password": password})
    story.facts.update(uid_before=body["result"]["uid"], cookie=cookie, url=url)
    # An administrator's web login writes the address Odoo was reached at into web.base.url (res_users.py)
    story.facts["base_url_after_login"] = _sql(story, blue.db_name, "SELECT value FROM ir_config_parameter"
                                               " WHERE key = 'web.base.url'")
    story.facts["blue_partners_before"] = _sql(story, blue.db_name, "SELECT count(*) FROM res_partner")


def _promote(story: Story, key: str, **more: Any) -> None:
    inputs = {"project_id": sbx.PROJECT, "staging_env_id": sbx.STAGING, "prod_env_id": sbx.PROD,
              "user_id": sbx.USER, "stability_window_seconds": 3, **more}
    code, outcome, message = run_promotion(inputs, quiet=True, instance=DagsterInstance.ephemeral())
    story.facts[key] = {"code": code, "message": message, "run_id": outcome.run_id if outcome else None,
                        "evidence": outcome.evidence_dir if outcome else None}
    if code != 0:
        raise AssertionError(f"promotion failed: {message}")


def _refused_then_promoted(story: Story) -> None:
    """The integration's partner on production is drift: refused without a decision, promoted with one."""
    inputs = {"project_id": sbx.PROJECT, "staging_env_id": sbx.STAGING, "prod_env_id": sbx.PROD,
              "user_id": sbx.USER, "stability_window_seconds": 3}
    code, outcome, message = run_promotion(inputs, quiet=True, instance=DagsterInstance.ephemeral())
    story.facts["drift_refusal"] = {"code": code, "message": message}
    if code != 2 or outcome is not None or "no_production_drift" not in (message or "") \
            or "res_partner" not in (message or ""):
        raise AssertionError(f"the drift gate did not refuse the integration's write: {code} {message}")
    _promote(story, "second", freeze_blue=True, accept_drift=True)


def _after_cutover(story: Story) -> None:
    """Promotion 1, from the production adopted as it was (its physical database carries the served name)."""
    _, live, url = _state(story)
    db, blue_db, login, password = story.need("database", "blue_db", "login", "password")
    name = f"Real-Odoo integration {time.time_ns()}"
    story.facts.update(live_db=live.db_name, partner_name=name)
    story.facts["integration"] = _integration(story, url, db, login, password, name)
    story.facts["written_in_live"] = _count_named(story, live.db_name, name)
    story.facts["written_in_blue"] = _count_named(story, blue_db, name)
    story.facts["blue_partners_after"] = _sql(story, blue_db, "SELECT count(*) FROM res_partner")
    story.facts["session_uid_after_cutover"] = _session_uid(story, url, story.facts["cookie"])
    story.facts["websocket_active"] = websocket_upgrade(url)
    story.requests += 1
    story.facts["login_page_shows_banner"] = BANNER in _get(story, f"{url}/web/login")
    _neutralization_facts(story, live.db_name, blue_db)


def _after_second_cutover(story: Story) -> None:
    """Promotion 2: its blue (promotion 1's green) has a physical name of its own, which green must not open."""
    _, live, url = _state(story)
    ops_db = story.box.resources()["ops_db"]
    run = ops_db.run(story.facts["second"]["run_id"])
    blue = ops_db.deployment(run.metadata["blue_deployment_id"])
    login, password, uid = story.need("login", "password", "uid_before")
    story.facts.update(second_blue_db=blue.db_name, second_served=blue.served_db, green_pid=live.pid,
                       second_blue_partners_before=_sql(story, blue.db_name, "SELECT count(*) FROM res_partner"))
    story.facts["fence"] = _refusals(story, url, blue.db_name, login, password, uid)
    # Blue stands by frozen after the cutover: an integration still configured with its address is refused.
    story.facts["frozen_write"] = _write_outcome(story, f"http://127.0.0.1:{blue.http_port}", blue.served_db,
                                                 login, password, uid, FROZEN_PROBE)
    story.facts["frozen_probes_in_blue"] = _count_named(story, blue.db_name, FROZEN_PROBE)
    story.facts["second_blue_partners_after"] = _sql(story, blue.db_name, "SELECT count(*) FROM res_partner")
    story.facts["fence_probes_in_blue"] = _count_named(story, blue.db_name, FENCE_PROBE)
    story.facts["session_uid_after_second_cutover"] = _session_uid(story, url, story.facts["cookie"])
    story.facts["green_group"] = sorted(story.box.resources()["odoo_host"].processes_of(live.pid))


def _write_outcome(story: Story, url: str, db: str, login: str, password: str, uid: int, name: str) -> str:
    """An integration's create over XML-RPC: ``created <id>``, or the end of the fault it was refused with."""
    models = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/object", allow_none=True)
    story.requests += 1
    try:
        new_id: Any = models.execute_kw(db, uid, password, "res.partner", "create", [{"name": name}])
        return f"created {new_id!r}"
    except (xmlrpc.client.Error, OSError) as exc:
        return f"refused: {str(exc)[-300:]}"


def _count_named(story: Story, db: str, name: str) -> int:
    return int(_sql(story, db, "SELECT count(*) FROM res_partner WHERE name = %s", (name,)))


def _neutralization_facts(story: Story, green_db: str, blue_db: str) -> None:
    host = story.box.resources()["odoo_host"]
    with host.connect(sbx.DSN_REF, green_db) as green, host.connect(sbx.DSN_REF, blue_db) as blue:
        story.facts["web_base_url"] = (odoo_db.config_parameter(green, "web.base.url"),
                                       odoo_db.config_parameter(blue, "web.base.url"))
        blue_crons = {k: v[1] for k, v in carry_over.crons(blue).items()}
        green_crons = {k: v[1] for k, v in carry_over.crons(green).items()}
        story.facts["traces"] = neutralization.remaining(blue, green, green_crons, carry_over.mail_servers(green),
                                                         blue_crons, carry_over.mail_servers(blue))
        banner: Any = green.execute("SELECT bool_or(active) FROM ir_ui_view WHERE key = 'web.neutralize_banner'")
        dummies: Any = green.execute("SELECT count(*) FROM ir_mail_server WHERE name = %s",
                                     (neutralization.DUMMY_MAIL_SERVER,))
        story.facts.update(banner_view_active=banner.fetchone()[0], dummy_mail_servers=dummies.fetchone()[0],
                           neutralized_flag=odoo_db.config_parameter(green, neutralization.NEUTRALIZED_FLAG))


def _rollback(story: Story) -> None:
    green_pid = story.need("green_pid")[0]
    code, _, message = run_rollback(story.facts["second"]["run_id"], "real-Odoo check", "test", quiet=True,
                                    instance=DagsterInstance.ephemeral())
    story.facts.update(rollback_code=code, rollback_message=message)
    _, live, url = _state(story)
    story.facts["serving_after_rollback"] = live.db_name
    login, password, uid, db = story.need("login", "password", "uid_before", "database")
    story.facts["write_after_rollback"] = _write_outcome(story, url, db, login, password, uid, FROZEN_PROBE)
    story.facts["frozen_probes_after_rollback"] = _count_named(story, live.db_name, FROZEN_PROBE)
    story.facts["session_uid_after_rollback"] = _session_uid(story, url, story.facts["cookie"])
    story.facts["websocket_after_rollback"] = websocket_upgrade(url)
    story.requests += 1
    host = story.box.resources()["odoo_host"]
    story.facts["green_group_after_rollback"] = sorted(host.processes_of(green_pid))
    host.stop_odoo(green_pid, None)  # stopping it again changes nothing
    story.facts["green_group_after_stop"] = sorted(host.processes_of(green_pid))


def _tell(story: Story, deadline: Callable[[float, str], AbstractContextManager[None]]) -> None:
    phases: list[tuple[str, Callable[[], object]]] = [
        ("up", lambda: story.box.up()), ("before", lambda: _before(story)),
        ("promotion", lambda: _promote(story, "first")), ("after_cutover", lambda: _after_cutover(story)),
        ("second_promotion", lambda: _refused_then_promoted(story)),
        ("after_second_cutover", lambda: _after_second_cutover(story)), ("rollback", lambda: _rollback(story))]
    with deadline(STORY_SECONDS, "the real-Odoo story"):
        for name, phase in phases:
            start = time.monotonic()
            try:
                phase()
            except BaseException as exc:  # noqa: BLE001 - the tests say which promise it broke
                story.error = f"{name}: {type(exc).__name__}: {exc}"
                return
            finally:
                story.seconds[name] = time.monotonic() - start


@pytest.fixture(scope="module")
def story(real_box: RealOdooSandbox, deadline: Callable[[float, str], AbstractContextManager[None]]) -> Iterator[Story]:
    told = Story(real_box)
    start = time.monotonic()
    _tell(told, deadline)
    told.seconds["story"] = time.monotonic() - start
    evidence = told.facts.get("first", {}).get("evidence")
    metrics = json.loads((Path(evidence) / steps.STABILITY_METRICS_JSON).read_text()) if evidence else {}
    restore = json.loads((Path(evidence) / steps.GREEN_RESTORE_JSON).read_text()) if evidence else {}
    second = told.facts.get("second", {}).get("evidence")
    frozen = json.loads((Path(second) / steps.CUTOVER_JSON).read_text())["blue_freeze"] if second else {}
    print(f"\nreal Odoo through {real_box.router_kind}: "
          + ", ".join(f"{k} {v:.1f}s" for k, v in told.seconds.items())
          + f"; {told.requests} requests by the test; first stability window: {metrics.get('requests')} requests,"
          f" {metrics.get('http_errors')} errors; green restored and serving in {restore.get('ready_seconds')}s,"
          f" {len(told.facts.get('green_group', []))} processes in its group; second cutover's freeze: {frozen};"
          f" story stopped at: {told.error}")
    yield told


# -- the promises ---------------------------------------------------------------------------------------------
def test_a_integration_with_the_old_name_writes_where_the_router_serves(story: Story) -> None:
    first, integration, live_db, blue_db = story.need("first", "integration", "live_db", "blue_db")
    assert first["code"] == 0, first["message"]
    assert live_db != blue_db, "the promotion must serve a new physical database"
    assert isinstance(integration["uid"], int) and integration["count"] > 0
    assert integration["read_back"] == story.facts["partner_name"]
    assert story.facts["written_in_live"] == 1, f"partner not in {live_db}, the database the router serves"
    assert story.facts["written_in_blue"] == 0, f"partner landed in blue's {blue_db}"
    assert story.need("blue_partners_after")[0] == story.facts["blue_partners_before"]


def test_b_session_survives_cutovers_and_rollback(story: Story) -> None:
    uid, first, second = story.need("uid_before", "session_uid_after_cutover", "session_uid_after_second_cutover")
    assert isinstance(uid, int) and first == uid and second == uid
    assert story.need("rollback_code")[0] == 0, story.facts.get("rollback_message")
    assert story.need("serving_after_rollback")[0] == story.facts["live_db"], "back on the second promotion's blue"
    assert story.need("session_uid_after_rollback")[0] == uid


def test_c_web_base_url_is_blues(story: Story) -> None:
    green, blue = story.need("web_base_url")[0]
    assert green == blue and green
    # and it is the address users reach: the router hands Odoo the client's Host, port included
    assert story.need("base_url_after_login")[0] == story.facts["url"]


def test_d_no_neutralization_trace(story: Story) -> None:
    traces, banner, dummies, flag = story.need("traces", "banner_view_active", "dummy_mail_servers",
                                               "neutralized_flag")
    assert story.need("staging_shows_banner")[0], "staging should show the banner (else the check proves nothing)"
    assert traces == []
    assert banner is False
    assert dummies == 0
    assert flag is None
    assert story.need("login_page_shows_banner")[0] is False


def test_e_smoke_tests_passed_is_a_json_boolean(story: Story) -> None:
    for key in ("first", "second"):
        smoke = json.loads((Path(story.need(key)[0]["evidence"]) / steps.SMOKE_TESTS_JSON).read_text())
        assert smoke["passed"] is True
        assert all(r["passed"] is True for r in smoke["results"]), smoke["results"]


def test_f_green_cannot_open_blues_database(story: Story) -> None:
    fence, blue_db, served = story.need("fence", "second_blue_db", "second_served")
    assert blue_db != served, "blue must have a physical name of its own for this check"
    for call, outcome in fence.items():
        assert "no such database" in outcome, f"{call} naming blue's physical database {blue_db}: {outcome}"
    assert story.need("fence_probes_in_blue")[0] == 0
    assert story.facts["second_blue_partners_after"] == story.facts["second_blue_partners_before"]


def test_g_stopped_green_leaves_no_process(story: Story) -> None:
    group, after_rollback, after_stop = story.need("green_group", "green_group_after_rollback",
                                                   "green_group_after_stop")
    # master, two HTTP workers, the cron worker and the websocket server, while green served
    assert len(group) >= 5, group
    assert after_rollback == [] and after_stop == []


def test_h_websocket_upgrade_through_the_active_entry_point(story: Story) -> None:
    assert story.need("websocket_active")[0] == "upgrade 101"
    assert story.need("websocket_after_rollback")[0] == "upgrade 101"


def test_i_frozen_blue_refuses_an_integrations_write_and_is_writable_after_rollback(story: Story) -> None:
    frozen_write, probes = story.need("frozen_write", "frozen_probes_in_blue")
    second = story.need("second")[0]
    cut = json.loads((Path(second["evidence"]) / steps.CUTOVER_JSON).read_text())
    assert frozen_write.startswith("refused: ") and "permission denied" in frozen_write, frozen_write
    assert probes == 0, "a write refused on frozen blue must not be there"
    assert cut["blue_freeze"]["frozen"] is True and cut["blue_freeze"]["relations_revoked"] > 0, cut["blue_freeze"]
    assert story.need("rollback_code")[0] == 0, story.facts.get("rollback_message")
    after = story.need("write_after_rollback")[0]
    assert after.startswith("created "), after
    assert story.need("frozen_probes_after_rollback")[0] == 1
