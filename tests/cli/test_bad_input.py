"""Malformed inputs, table-driven, through the same entry point the CLI uses: each is refused with one
message naming the field, and nothing is created but the rejection record."""

from __future__ import annotations

import json
from typing import Any

import pytest

from promote_pipeline.cli.sandbox import PROD, STAGING, Sandbox
from promote_pipeline.promotion.inputs import PromotionInputs
from resources.ops_db import EnvironmentRecord

pytestmark = pytest.mark.slow

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown project", {"project_id": "proj_nope"}, "project_exists"),
    ("unknown staging", {"staging_env_id": "env_nope"}, "staging_env_id"),
    ("unknown prod", {"prod_env_id": "env_nope"}, "prod_env_id"),
    ("cross-project staging", {"staging_env_id": "env_other_staging"}, "staging_env_id"),
    ("cross-project prod", {"prod_env_id": "env_other_prod"}, "prod_env_id"),
    ("production as staging", {"staging_env_id": PROD, "prod_env_id": STAGING}, "staging_env_id"),
    ("same env twice", {"prod_env_id": STAGING}, "prod_env_id"),
    ("window 0", {"rollback_window_hours": 0}, "rollback_window_hours"),
    ("window 169", {"rollback_window_hours": 169}, "rollback_window_hours"),
    ("window negative", {"rollback_window_hours": -1}, "rollback_window_hours"),
    ("window not an integer", {"rollback_window_hours": "twelve"}, "rollback_window_hours"),
    ("window a float", {"rollback_window_hours": 1.5}, "rollback_window_hours"),
    ("window a boolean", {"rollback_window_hours": True}, "rollback_window_hours"),
    ("skip smoke on production", {"skip_smoke_tests": True}, "skip_smoke_tests"),
    ("skip smoke not a boolean", {"skip_smoke_tests": "false"}, "skip_smoke_tests"),
    ("auto rollback not a boolean", {"auto_rollback_on_failure": "no"}, "auto_rollback_on_failure"),
    ("quote in project", {"project_id": "proj'demo"}, "project_id"),
    ("semicolon in staging", {"staging_env_id": "env;DROP TABLE ops.runs"}, "staging_env_id"),
    ("path traversal in prod", {"prod_env_id": "../../etc/passwd"}, "prod_env_id"),
    ("NUL byte in user", {"user_id": "demo\x00admin"}, "user_id"),
    ("very long project", {"project_id": "p" * 10_000}, "project_id"),
    ("unicode lookalike in project", {"project_id": "proj_dеmo"}, "project_id"),  # Cyrillic 'е'
    ("fullwidth digit in prod", {"prod_env_id": "env_demo_prod１"}, "prod_env_id"),
    ("empty user", {"user_id": ""}, "user_id"),
    ("missing user", {"user_id": None}, "user_id"),
    ("leading dot in staging", {"staging_env_id": ".env"}, "staging_env_id"),
    ("space in user", {"user_id": "demo admin"}, "user_id"),
    ("stability window too long", {"stability_window_seconds": 86400}, "stability_window_seconds"),
    ("carry-over not a boolean", {"carry_over_settings": "yes"}, "carry_over_settings"),
    ("approval not a boolean", {"require_approval": "please"}, "require_approval"),
    ("approval timeout 0", {"approval_timeout_seconds": 0}, "approval_timeout_seconds"),
    ("approval timeout over a day", {"approval_timeout_seconds": 86401}, "approval_timeout_seconds"),
    ("accept-drift not a boolean", {"accept_drift": "yes"}, "accept_drift"),
    ("freeze-blue not a boolean", {"freeze_blue": 1}, "freeze_blue"),
    ("an input that does not exist", {"skip_backups": True}, "skip_backups"),
]


@pytest.fixture(scope="module")
def other_project(sandbox_factory: Any) -> None:
    box = sandbox_factory("haproxy")
    ops_db = box.resources()["ops_db"]
    if not ops_db.environment("env_other_prod"):
        ops_db.add_project("proj_other", "Other", [
            EnvironmentRecord(environment_id=env_id, project_id="proj_other", kind=kind, git_commit_sha=None,
                              db_dsn_ref="X", db_name_prefix="x", filestore_root="/tmp")
            for env_id, kind in (("env_other_staging", "staging"), ("env_other_prod", "production"))])


def _counts(box: Sandbox, h: Any) -> dict[str, int]:
    ops_db = box.resources()["ops_db"]
    return {t: h.ops_sql(ops_db, f"SELECT count(*) AS n FROM ops.{t}")[0]["n"]  # noqa: S608 - fixed names
            for t in ("runs", "deployments", "artifacts", "rejections", "scheduled_tasks", "run_events")}


@pytest.mark.unit
def test_the_cases_cover_every_input_and_rule() -> None:
    """The table grows with the inputs: every field of PromotionInputs is named by at least one refused case (a
    field added without one fails here), as are the rules that are not about one field's type (the project
    must exist, unknown inputs are refused); and the 25+ cases are distinct inputs, not repeats."""
    named = {field for _, _, field in CASES}
    assert set(PromotionInputs.model_fields) - named == set()
    assert "project_exists" in named and any(f not in {*PromotionInputs.model_fields, "project_exists"}
                                             for f in named)
    distinct = {json.dumps(inputs, sort_keys=True) for _, inputs, _ in CASES}
    assert len(distinct) == len(CASES) >= 25


@pytest.mark.parametrize("name,inputs,field", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_is_refused_naming_the_field(haproxy_box: Sandbox, h: Any, other_project: None, name: str,
                                                     inputs: dict[str, Any], field: str) -> None:
    before = _counts(haproxy_box, h)
    code, outcome, message = h.promote(**inputs)
    assert code == 2 and outcome is None, (name, message)
    assert message is not None and message.startswith(f"promotion rejected: {field}:"), message
    assert len(message) < 400 and "\x00" not in message
    assert _counts(haproxy_box, h) == {**before, "rejections": before["rejections"] + 1}
    [row] = h.ops_sql(haproxy_box.resources()["ops_db"],
                      "SELECT check_name FROM ops.rejections ORDER BY rejection_id DESC LIMIT 1")
    assert row["check_name"] == field
