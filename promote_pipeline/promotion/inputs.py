"""The seed's input rules, checked before anything is created.

Every rule failure is one ``InputRejected`` naming the field and the rule. Identifiers are
restricted to a plain ASCII alphabet: they end up in SQL parameters, file paths (evidence
folders), database names and log lines, so quotes, semicolons, path separators, NUL bytes and
unicode lookalikes are refused at the door rather than escaped everywhere.
"""

from __future__ import annotations

import re
from typing import Any

from promote_pipeline.promotion import guardrails
from promote_pipeline.promotion.models import PromotionInputs
from resources.ops_db import EnvironmentRecord

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ID_FIELDS = ("project_id", "staging_env_id", "prod_env_id", "user_id")
MIN_WINDOW_HOURS, MAX_WINDOW_HOURS = 1, 168
MAX_STABILITY_SECONDS = 3600


class InputRejected(ValueError):
    """A promotion refused before it started; ``check`` names the field or precondition."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message


def _identifier(field: str, value: Any) -> str:
    if value is None or value == "":
        raise InputRejected(field, "is required")
    if not isinstance(value, str):
        raise InputRejected(field, f"must be a string, got {type(value).__name__}")
    if not ID_PATTERN.fullmatch(value):
        raise InputRejected(
            field,
            "must be 1-64 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit"
            f" (got {value[:40]!r}{'…' if len(value) > 40 else ''})",
        )
    return value


def _integer(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,6}", value.strip()):
            value = int(value)
        else:
            raise InputRejected(field, f"must be an integer, got {value!r:.40}")
    if not low <= value <= high:
        raise InputRejected(field, f"must be >= {low} and <= {high} (got {value})")
    return int(value)


def _boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputRejected(field, f"must be true or false, got {value!r:.40}")
    return value


def validate(raw: dict[str, Any]) -> PromotionInputs:
    """Apply the rules that need no database; raise on the first broken one."""
    known = set(PromotionInputs.model_fields)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputRejected(unknown[0], "is not a known input")
    ids = {field: _identifier(field, raw.get(field)) for field in ID_FIELDS}
    if ids["staging_env_id"] == ids["prod_env_id"]:
        raise InputRejected("prod_env_id", "must differ from staging_env_id")
    return PromotionInputs(
        **ids,
        rollback_window_hours=_integer(
            "rollback_window_hours", raw.get("rollback_window_hours", 24), MIN_WINDOW_HOURS, MAX_WINDOW_HOURS
        ),
        skip_smoke_tests=_boolean("skip_smoke_tests", raw.get("skip_smoke_tests", False)),
        auto_rollback_on_failure=_boolean(
            "auto_rollback_on_failure", raw.get("auto_rollback_on_failure", guardrails.current().rollback_default)
        ),
        carry_over_settings=_boolean("carry_over_settings", raw.get("carry_over_settings", True)),
        stability_window_seconds=_integer(
            "stability_window_seconds", raw.get("stability_window_seconds", 300), 0, MAX_STABILITY_SECONDS
        ),
    )


def validate_against_ops(inputs: PromotionInputs, staging: EnvironmentRecord | None,
                         prod: EnvironmentRecord | None) -> None:
    """The rules that need the environments' records (same project, kinds, smoke tests on prod)."""
    for field, row in (("staging_env_id", staging), ("prod_env_id", prod)):
        if row is None:
            raise InputRejected(field, f"environment {getattr(inputs, field)!r} does not exist")
        if row.project_id != inputs.project_id:
            raise InputRejected(field, f"environment {getattr(inputs, field)!r} does not belong to project"
                                       f" {inputs.project_id!r}")
    assert staging is not None and prod is not None
    if staging.kind == "production":
        raise InputRejected("staging_env_id", f"environment {inputs.staging_env_id!r} is a production environment")
    if prod.kind == "production" and inputs.skip_smoke_tests:
        raise InputRejected("skip_smoke_tests", "must be false for production promotions")
