"""The seed's input rules, as pure logic: each rule refused on its own, naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from promote_pipeline.promotion.inputs import InputRejected, validate, validate_against_ops
from resources.ops_db import EnvironmentRecord

pytestmark = pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)

GOOD = {"project_id": "proj_abc123", "staging_env_id": "env_staging_xyz", "prod_env_id": "env_prod_main",
        "user_id": "alice"}


def test_good_inputs_get_the_seed_defaults() -> None:
    got = validate(dict(GOOD))
    assert (got.rollback_window_hours, got.skip_smoke_tests, got.auto_rollback_on_failure) == (24, False, True)
    assert got.stability_window_seconds == 300


@pytest.mark.parametrize("field,value,rule", [
    ("rollback_window_hours", 0, ">= 1 and <= 168"),
    ("rollback_window_hours", 169, ">= 1 and <= 168"),
    ("rollback_window_hours", -5, ">= 1 and <= 168"),
    ("rollback_window_hours", 2.5, "integer"),
    ("rollback_window_hours", "soon", "integer"),
    ("rollback_window_hours", True, "integer"),
    ("skip_smoke_tests", "yes", "true or false"),
    ("auto_rollback_on_failure", 1, "true or false"),
    ("stability_window_seconds", 3601, ">= 0 and <= 3600"),
    ("project_id", "", "required"),
    ("project_id", None, "required"),
    ("project_id", 42, "string"),
    ("staging_env_id", "env'; DROP TABLE ops.runs; --", "ASCII"),
    ("prod_env_id", "../../etc/passwd", "ASCII"),
    ("user_id", "ali\x00ce", "ASCII"),
    ("project_id", "p" * 65, "ASCII"),
    ("project_id", "prоj_abc123", "ASCII"),  # Cyrillic 'о'
    ("prod_env_id", "env prod", "ASCII"),
    ("staging_env_id", "-env", "ASCII"),
    ("unknown_field", "x", "not a known input"),
])
def test_each_rule_refuses_naming_the_field(field: str, value: Any, rule: str) -> None:
    with pytest.raises(InputRejected) as err:
        validate({**GOOD, field: value})
    assert err.value.check == field
    assert rule in err.value.message


def test_same_environment_twice_is_refused() -> None:
    with pytest.raises(InputRejected, match="prod_env_id: must differ"):
        validate({**GOOD, "prod_env_id": GOOD["staging_env_id"]})


def _env(project: str, kind: str) -> EnvironmentRecord:
    return EnvironmentRecord(environment_id=f"env_{kind}", project_id=project, kind=kind, git_commit_sha=None,
                             db_dsn_ref="DSN", db_name_prefix="x", filestore_root="/tmp")


def test_environments_must_belong_to_the_project() -> None:
    inputs = validate(dict(GOOD))
    with pytest.raises(InputRejected, match="staging_env_id: .*does not belong"):
        validate_against_ops(inputs, _env("other", "staging"), _env("proj_abc123", "production"))
    with pytest.raises(InputRejected, match="prod_env_id: .*does not exist"):
        validate_against_ops(inputs, _env("proj_abc123", "staging"), None)


def test_skip_smoke_tests_is_refused_for_production_only() -> None:
    inputs = validate({**GOOD, "skip_smoke_tests": True})
    with pytest.raises(InputRejected, match="skip_smoke_tests: must be false for production"):
        validate_against_ops(inputs, _env("proj_abc123", "staging"), _env("proj_abc123", "production"))
    validate_against_ops(inputs, _env("proj_abc123", "staging"), _env("proj_abc123", "dev"))
