"""Preflight decisions as pure logic, with a stand-in host that reports PostgreSQL versions."""

from __future__ import annotations

from typing import Any

import pytest

from promote_pipeline.promotion.inputs import PromotionInputs
from promote_pipeline.promotion.preflight import PreconditionFailed, Preflight
from resources.ops_db import EnvironmentRecord


class _Host:
    def __init__(self, versions: dict[str, int]) -> None:
        self.versions = versions

    def server_major_version(self, dsn_ref: str) -> int:
        return self.versions[dsn_ref]


def _env(env_id: str, kind: str) -> EnvironmentRecord:
    return EnvironmentRecord(environment_id=env_id, project_id="p", kind=kind, git_commit_sha="a" * 40,
                             db_dsn_ref=f"DSN_{kind}", db_name_prefix="x", filestore_root="/tmp")


def _preflight(versions: dict[str, int]) -> Preflight:
    inputs = PromotionInputs(project_id="p", staging_env_id="s", prod_env_id="e", user_id="u")
    check = Preflight(ops_db=Any, host=_Host(versions), store=Any, inputs=inputs)  # type: ignore[arg-type]
    check.staging, check.prod = _env("s", "staging"), _env("e", "production")
    return check


def test_target_postgres_may_be_newer_or_equal() -> None:
    assert _preflight({"DSN_staging": 15, "DSN_production": 16}).postgres_compatible() == "PostgreSQL 15 -> 16"


def test_target_postgres_older_than_the_dump_is_refused() -> None:
    with pytest.raises(PreconditionFailed, match="production's PostgreSQL 14 is older than staging's 15"):
        _preflight({"DSN_staging": 15, "DSN_production": 14}).postgres_compatible()
