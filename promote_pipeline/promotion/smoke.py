"""The seed's five smoke tests, run against green through the router's preview entry point.

Only what Odoo itself serves is used (see ODOO_FACTS), so the same tests run unchanged against a
real Odoo 17, 18 or 19: ``/web/health`` (which never touches a database, so it proves only that
the server answers), a ``SELECT 1`` on green's database, module states read from
``ir_module_module`` plus ``/web/webclient/version_info`` (the server loaded its registry), an
attachment fetched through ``/web/content/<id>`` and compared with its SHA-1 ``checksum``, and a
JSON-RPC login that names green's database (with ``web.base.url`` frozen meanwhile, since an
admin's login would otherwise point it at the preview URL).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import httpx

from promote_pipeline.odoo import database as odoo_db
from promote_pipeline.promotion.models import Artifact, SmokeResult
from resources import http_clients
from resources.odoo_host import LocalOdooHost
from resources.ops_db import DeploymentRecord, EnvironmentRecord
from resources.redaction import resolve_secret

SMOKE_TESTS = ("health_check", "database_connectivity", "module_integrity", "filestore_accessibility",
               "user_authentication")


class SmokeFailure(RuntimeError):
    pass


def _jsonrpc(client: httpx.Client, path: str, params: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(path, json={"jsonrpc": "2.0", "method": "call", "params": params, "id": 1})
    resp.raise_for_status()
    body = resp.json()
    if "error" in body:
        data = body["error"].get("data", {})
        raise SmokeFailure(f"{data.get('name', 'error')}: {data.get('message', body['error'].get('message'))}")
    result = body.get("result")
    assert isinstance(result, dict)
    return result


class SmokeSuite:
    def __init__(self, host: LocalOdooHost, env: EnvironmentRecord, green: DeploymentRecord, artifact: Artifact,
                 base_url: str, timeout: float = 10.0) -> None:
        self.host, self.env, self.green, self.artifact = host, env, green, artifact
        self.client = http_clients.client(base_url=base_url, timeout=timeout)

    def health_check(self) -> str:
        resp = self.client.get("/web/health")
        if resp.status_code != 200 or resp.json().get("status") != "pass":
            raise SmokeFailure(f"/web/health answered HTTP {resp.status_code}: {resp.text[:200]}")
        return "HTTP 200, status pass"

    def database_connectivity(self) -> str:
        with self.host.connect(self.env.db_dsn_ref, self.green.db_name, retry=False) as conn:
            row = conn.execute("SELECT 1").fetchone()
        if not row or row[0] != 1:
            raise SmokeFailure(f"SELECT 1 on {self.green.db_name} returned {row!r}")
        return f"SELECT 1 on {self.green.db_name} ok"

    def module_integrity(self) -> str:
        with self.host.connect(self.env.db_dsn_ref, self.green.db_name) as conn:
            modules, _ = odoo_db.installed_modules(conn)
            pending = odoo_db.pending_modules(conn)
        expected = self.artifact.manifest.modules_installed
        missing = sorted(set(expected) - set(modules))
        changed = sorted(m for m in expected if m in modules and modules[m] != expected[m])
        if missing or changed or pending:
            raise SmokeFailure(f"modules missing {missing}, version changed {changed}, pending {pending}")
        info = _jsonrpc(self.client, "/web/webclient/version_info", {})
        series = str(info.get("server_serie") or info.get("server_version", ""))
        if not series.startswith(self.artifact.manifest.odoo_version.split(".")[0]):
            raise SmokeFailure(f"server serves {series!r}, artifact is Odoo {self.artifact.manifest.odoo_version}")
        return f"{len(expected)} modules installed, server {series}"

    def user_authentication(self) -> str:
        if not self.env.smoke_login or not self.env.smoke_password_ref:
            raise SmokeFailure(f"environment {self.env.environment_id} has no smoke login configured")
        password = resolve_secret(self.env.smoke_password_ref)
        # An admin's web login makes Odoo set web.base.url to the URL it came through -- here the router's
        # preview entry point, which would then stay production's. Frozen for the login, unless it already was.
        with self.host.connect(self.env.db_dsn_ref, self.green.db_name, autocommit=True) as conn:
            frozen_here = odoo_db.freeze_base_url(conn)
        try:
            result = _jsonrpc(self.client, "/web/session/authenticate",
                              {"db": self.green.db_name, "login": self.env.smoke_login, "password": password})
        finally:
            if frozen_here:
                with self.host.connect(self.env.db_dsn_ref, self.green.db_name, autocommit=True) as conn:
                    odoo_db.unfreeze_base_url(conn)
        if not isinstance(result.get("uid"), int):
            raise SmokeFailure(f"login {self.env.smoke_login!r} returned no uid (two-factor pending?)")
        return f"login {self.env.smoke_login!r} ok, uid {result['uid']}"

    def filestore_accessibility(self) -> str:
        with self.host.connect(self.env.db_dsn_ref, self.green.db_name) as conn:
            sample = odoo_db.sample_attachment(conn)
        if sample is None:
            return "no stored attachment to sample"
        att_id, checksum = sample
        resp = self.client.get(f"/web/content/{att_id}")  # the session cookie from the login
        if resp.status_code != 200:
            raise SmokeFailure(f"/web/content/{att_id} answered HTTP {resp.status_code}")
        got = hashlib.sha1(resp.content).hexdigest()
        if got != checksum:
            raise SmokeFailure(f"attachment {att_id}: sha1 {got[:12]}… differs from checksum {checksum[:12]}…")
        return f"attachment {att_id} ({len(resp.content)} bytes) matches its checksum"

    def run(self) -> list[SmokeResult]:
        """All five, in the seed's order of report; login runs before the attachment fetch that needs it."""
        order: list[str] = ["health_check", "database_connectivity", "module_integrity", "user_authentication",
                            "filestore_accessibility"]
        results: dict[str, SmokeResult] = {}
        try:
            for name in order:
                test: Callable[[], str] = getattr(self, name)
                start = time.monotonic()
                try:
                    detail, passed = test(), True
                except (SmokeFailure, httpx.HTTPError, OSError, ValueError) as exc:
                    detail, passed = f"{type(exc).__name__}: {exc}", False
                except Exception as exc:  # a smoke test must report, not crash the step
                    detail, passed = f"{type(exc).__name__}: {exc}", False
                results[name] = SmokeResult(name=name, passed=passed, detail=detail,
                                            duration_ms=int((time.monotonic() - start) * 1000))
        finally:
            self.client.close()
        return [results[name] for name in SMOKE_TESTS]
