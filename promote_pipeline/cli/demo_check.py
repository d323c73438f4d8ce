"""What ``make demo`` shows around its promotion: what users and integrations keep across a cutover.

Before the promotion (``promote sandbox remember``): a user logs in through the router, as a browser
would, and the session cookie, production's database name and production's ``web.base.url`` are kept in
an owner-only file of the sandbox (a session cookie is a credential). After it (``promote sandbox
verify``), each check is one line, PASS or FAIL:

- an integration: Python's standard ``xmlrpc.client``, logging in through the router with production's
  database name *as it was before the promotion*, reads and writes, and the partner it wrote is in the
  physical database the router now serves (not in blue's);
- the router itself (its runtime API, or a request through its public port) serves the deployment the ops
  database records as active;
- the session cookie taken before the cutover is still logged in;
- green's ``web.base.url`` equals blue's;
- no trace of staging's neutralization remains on green;
- the run's ``smoke_tests.json`` says ``"passed": true``.
"""

from __future__ import annotations

import json
import os
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import httpx

from promote_pipeline.cli.sandbox import PROD
from promote_pipeline.odoo import carry_over, neutralization
from promote_pipeline.odoo import database as odoo_db
from promote_pipeline.promotion import steps
from resources import secrets

Check = tuple[str, bool, str]


def _state_file(box: Any) -> Path:
    return Path(box.root) / "demo_before.json"


def remember(box: Any) -> dict[str, Any]:
    """Log in through the router as the smoke user, keep the cookie and what production looks like now."""
    res = box.resources()
    ops_db, host = res["ops_db"], res["odoo_host"]
    env = ops_db.environment(PROD)
    blue = ops_db.active_deployment(PROD)
    assert env is not None and blue is not None
    url = res["router"].state(PROD).active_url
    password = secrets.resolve(env.smoke_password_ref)
    with httpx.Client(base_url=url, timeout=10) as client:
        resp = client.post("/web/session/authenticate", json={"jsonrpc": "2.0", "method": "call", "id": 1, "params": {
            "db": blue.served_db, "login": env.smoke_login, "password": password}})
        uid = resp.json()["result"]["uid"]
        cookie = client.cookies.get("session_id")
    with host.connect(env.db_dsn_ref, blue.db_name) as conn:
        base_url = odoo_db.config_parameter(conn, "web.base.url")
    state = {"database": blue.served_db, "blue_deployment": blue.deployment_id, "uid": uid, "session_id": cookie,
             "web_base_url": base_url, "at": time.time()}
    path = _state_file(box)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    return {k: v for k, v in state.items() if k != "session_id"}


def verify(box: Any) -> list[Check]:
    """The checks, after the promotion."""
    before = json.loads(_state_file(box).read_text())
    res = box.resources()
    ops_db, host = res["ops_db"], res["odoo_host"]
    env = ops_db.environment(PROD)
    recorded = ops_db.active_deployment(PROD)
    blue = ops_db.deployment(before["blue_deployment"])
    assert env is not None and recorded is not None and blue is not None
    url = res["router"].state(PROD).active_url
    # What is live is what the running router serves (box.status() asks it), not what any file records.
    serving = box.status()["serving"]
    live = ops_db.deployment(serving["deployment"]) if serving["deployment"] else None
    checks: list[Check] = [("router serves the active deployment",
                            live is not None and live.deployment_id == recorded.deployment_id,
                            f"the router ({serving['asked']}) serves {serving['deployment']}; the ops database"
                            f" records {recorded.deployment_id} as production's active deployment")]
    if live is None:
        return checks
    checks.append(_integration(url, before["database"], env, host, live))
    checks.append(_session(url, before))
    with host.connect(env.db_dsn_ref, live.db_name) as green, host.connect(env.db_dsn_ref, blue.db_name) as old:
        now = odoo_db.config_parameter(green, "web.base.url")
        checks.append(("web.base.url kept", now == before["web_base_url"],
                       f"{now!r} on {live.db_name}, {before['web_base_url']!r} on blue before"))
        blue_crons = {k: v[1] for k, v in carry_over.crons(old).items()}
        blue_mail = carry_over.mail_servers(old)
        green_crons = {k: v[1] for k, v in carry_over.crons(green).items()}
        traces = neutralization.remaining(old, green, green_crons, carry_over.mail_servers(green), blue_crons,
                                          blue_mail)
    checks.append(("no neutralization trace", not traces, "; ".join(traces) or "none on green"))
    checks.append(_smoke(ops_db, live))
    return checks


def _integration(url: str, database: str, env: Any, host: Any, live: Any) -> Check:
    password = secrets.resolve(env.smoke_password_ref)
    try:
        common = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/common", allow_none=True)
        uid = common.authenticate(database, env.smoke_login, password, {})
        models = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/object", allow_none=True)
        count = int(models.execute_kw(database, uid, password, "res.partner", "search_count", [[]]))  # type: ignore[arg-type]
        name = f"Demo integration {int(time.time())}"
        partner_id = int(models.execute_kw(database, uid, password, "res.partner", "create",  # type: ignore[arg-type]
                                           [{"name": name}]))
    except (OSError, xmlrpc.client.Error) as exc:
        return ("integration (xmlrpc.client)", False, f"{type(exc).__name__}: {exc}")
    with host.connect(env.db_dsn_ref, live.db_name) as conn:
        landed = conn.execute("SELECT 1 FROM res_partner WHERE id = %s AND name = %s", (partner_id, name)).fetchone()
        # The probe's own row goes once seen: left on production, it would be a write since staging's copy, and
        # the next promotion's drift gate would ask to accept losing it.
        conn.execute("DELETE FROM res_partner WHERE id = %s AND name = %s", (partner_id, name))
    return ("integration (xmlrpc.client)", landed is not None,
            f"logged in to {database!r} through the router, read {count} partners, wrote partner {partner_id}:"
            f" {'in' if landed else 'NOT in'} {live.db_name}, the database the router serves")


def _session(url: str, before: dict[str, Any]) -> Check:
    with httpx.Client(base_url=url, timeout=10, cookies={"session_id": before["session_id"]}) as client:
        resp = client.post("/web/session/get_session_info", json={"jsonrpc": "2.0", "method": "call", "id": 1,
                                                                   "params": {}})
    try:
        uid = resp.json().get("result", {}).get("uid")
    except ValueError:
        uid = None
    return ("session kept", uid == before["uid"], f"the cookie taken before the cutover is logged in as uid {uid}")


def _smoke(ops_db: Any, live: Any) -> Check:
    made = ops_db.deployment_on_server(live.deployment_id)
    run = ops_db.run(made.created_by_run) if made and made.created_by_run else None
    folder = Path(run.evidence_dir) if run and run.evidence_dir else None
    if folder is None or not (folder / steps.SMOKE_TESTS_JSON).exists():
        return ("smoke tests passed", False, "no smoke_tests.json for the live deployment's run")
    passed = json.loads((folder / steps.SMOKE_TESTS_JSON).read_text()).get("passed")
    return ("smoke tests passed", passed is True, f'{steps.SMOKE_TESTS_JSON}: "passed": {json.dumps(passed)}')
