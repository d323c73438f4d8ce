"""The promotion's eleven inputs, described once, and the rules they obey before anything is created.

``PromotionInputs`` is the one place an input is defined: its type, default, description, constraints
and the flag of ``promote run``/``promote launch``. Everything else derives from it: the launchpad's
run config (``defs/config.py``), the CLI flags (``cli/main.py``), the ops run's metadata and its
rollback job, the range ``promote window`` accepts.

Every rule failure is one ``InputRejected`` naming the field and the rule. The rules are checked
here, by hand, rather than by pydantic's validation of the model: their one-line messages are what
a person reads (and what ops.rejections records). Identifiers are restricted to a plain ASCII
alphabet: they end up in SQL parameters, file paths (evidence folders), database names and log
lines, so quotes, semicolons, path separators, NUL bytes and unicode lookalikes are refused at the
door rather than escaped everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from promote_pipeline.promotion import guardrails
from resources.ops_db import EnvironmentRecord

# Anchored for pydantic (which searches); the rule below uses re.fullmatch, for which the anchors change nothing.
# The inventory (promote inventory) holds its ids to the same rule, so that whatever it records can be promoted.
IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
IDENTIFIER_RULE = "must be 1-64 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit"


def _bounded(default: int, ge: int, le: int, description: str, flag: str) -> Any:
    """An integer input whose range, written once here, is also what its description shows ({ge}, {le})."""
    return Field(default=default, ge=ge, le=le, description=description.format(ge=ge, le=le),
                 json_schema_extra={"flag": flag})


def _rollback_default() -> bool:
    # Read each time an input is built, not at import: the registry is where operations set it.
    return guardrails.current().rollback_default


class PromotionInputs(BaseModel):
    """The seed's six inputs plus the caller, the stability window, the settings carry-over and the approval gate.

    ``json_schema_extra["flag"]`` is the input's flag on ``promote run``; a flag starting ``--no-`` turns a
    boolean off, any other boolean flag turns it on. ``json_schema_extra["help"]`` is the flag's help, if any.
    """

    project_id: str = Field(pattern=IDENTIFIER, description="ops.projects.project_id of the project to promote.",
                            json_schema_extra={"flag": "--project"})
    staging_env_id: str = Field(pattern=IDENTIFIER,
                                description="ops.environments.environment_id of the staging source.",
                                json_schema_extra={"flag": "--staging"})
    prod_env_id: str = Field(pattern=IDENTIFIER,
                             description="ops.environments.environment_id of the production target.",
                             json_schema_extra={"flag": "--prod"})
    user_id: str = Field(pattern=IDENTIFIER,
                         description="Who promotes; needs the 'promote' permission on the project.",
                         json_schema_extra={"flag": "--user"})
    rollback_window_hours: int = _bounded(24, 1, 168, "Hours blue is kept for rollback before its deletion"
                                                      " ({ge} to {le}).", "--rollback-window-hours")
    skip_smoke_tests: bool = Field(
        default=False, description="Skip the five smoke tests on green. Refused for production targets.",
        json_schema_extra={"flag": "--skip-smoke-tests"})
    auto_rollback_on_failure: bool = Field(
        default_factory=_rollback_default,
        description="Switch traffic back to blue automatically when a step from restore on fails.",
        json_schema_extra={"flag": "--no-auto-rollback",
                           "help": "on a failure from restore on, do not switch traffic back to blue: the run is marked"
                                   " failed and its evidence says what is live (left out: the guardrails'"
                                   " rollback_default)"})
    carry_over_settings: bool = Field(
        default=True,
        description="Copy production's live settings (mail servers, crons, payment providers, web.base.url and the"
        " database's identity) from blue onto green, and drop the neutralization flag. Off only for a target whose"
        " settings come with the artifact.",
        json_schema_extra={"flag": "--no-carry-over",
                           "help": "do not copy production's live settings onto green (the summary says so loudly)"})
    accept_drift: bool = Field(
        default=False,
        description="Promote even though production was written after staging was copied (or nobody can tell when"
        " it was): those writes will not be on green. Without it, such a promotion is refused before any work"
        " (precondition no_production_drift), and a write seen at the last check before the cutover fails the run.",
        json_schema_extra={"flag": "--accept-drift",
                           "help": "promote even though production changed since staging was copied: those writes"
                                   " are lost (the summary and cutover.json list them)"})
    freeze_blue: bool = Field(
        default=False,
        description="From the last drift check to the cutover, make production's (blue's) database read-only and end"
        " its sessions, so that a write attempted there fails with an error instead of being silently lost; undone"
        " when traffic returns to blue.",
        json_schema_extra={"flag": "--freeze-blue"})
    stability_window_seconds: int = _bounded(300, 0, 3600, "How long green is watched after cutover ({ge} to {le}"
                                                           " seconds).", "--stability-seconds")
    require_approval: bool = Field(
        default=False,
        description="After the smoke tests, wait (green on the router's preview entry point, traffic on blue) until a"
        " person with 'promote' on the project approves (`promote approve`, or the approve_promotion job) before the"
        " cutover; an abort or the approval timeout rolls back. A production environment whose inventory says"
        " require_approval always waits, whatever this says.",
        json_schema_extra={"flag": "--require-approval"})
    approval_timeout_seconds: int = _bounded(3600, 1, 86400, "How long a run awaiting approval waits before it aborts"
                                                             " and rolls back ({ge} to {le} seconds).",
                                             "--approval-timeout")


# -- what the other layers read from the model --------------------------------------------------------
def default(name: str) -> Any:
    """The default of an input, as it is now (the rollback default is the registry's)."""
    return PromotionInputs.model_fields[name].get_default(call_default_factory=True)


def defaults() -> dict[str, Any]:
    """Every optional input with its default."""
    return {name: default(name) for name, f in PromotionInputs.model_fields.items() if not f.is_required()}


def _extra(name: str, key: str) -> str | None:
    extra = PromotionInputs.model_fields[name].json_schema_extra
    value = extra.get(key) if isinstance(extra, dict) else None
    return value if isinstance(value, str) else None


def flag(name: str) -> str:
    """The input's flag on ``promote run`` (and ``promote launch``)."""
    value = _extra(name, "flag")
    if value is None:
        raise KeyError(f"input {name} has no flag")
    return value


def flag_help(name: str) -> str:
    """The flag's help: its own text if it has one (a flag that turns an input off says so), else the input's
    description."""
    return _extra(name, "help") or PromotionInputs.model_fields[name].description or name


def _constraint(name: str, kind: str) -> Any:
    """A constraint (``ge``, ``le``, ``pattern``) of an input, where pydantic keeps it: the field's metadata."""
    for item in PromotionInputs.model_fields[name].metadata:
        value = getattr(item, kind, None)
        if value is not None:
            return value
    raise KeyError(f"input {name} has no {kind} constraint")


def bounds(name: str) -> tuple[int, int]:
    """The inclusive range of an integer input."""
    return _constraint(name, "ge"), _constraint(name, "le")


ID_FIELDS = tuple(name for name, f in PromotionInputs.model_fields.items() if f.annotation is str)
# `promote window` moves a promotion's rollback window within the same range as the input.
MIN_WINDOW_HOURS, MAX_WINDOW_HOURS = bounds("rollback_window_hours")


# -- echoing what an operator typed --------------------------------------------------------------------
SHOWN_CHARS = 80
_PLAIN = re.compile(r"[^\s'\"\\]+")


def shown(value: Any, limit: int = SHOWN_CHARS, quote: bool = False) -> str:
    """``value`` as an error line may echo it: as it is when it is a plain word (printable, no space, quote or
    backslash, at most ``limit`` characters) unless ``quote``, else quoted with every control character, bidi
    override and invisible character escaped (``repr``'s ``\\n``, ``\\x1b``, ``\\u202e``), and past ``limit``
    characters cut, saying how many there were. A typed id could otherwise split the line, reorder it on the
    reader's terminal (an RTL override), or bury the message under five thousand characters."""
    if not isinstance(value, str):  # a number, None, a list: as Python writes it, which escapes its strings
        text = repr(value)
        return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"
    if not quote and len(value) <= limit and value.isprintable() and _PLAIN.fullmatch(value):
        return value
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}…({len(value)} chars)"


# -- the rules ---------------------------------------------------------------------------------------
# How a refused promotion's message starts wherever it is shown (the job's failure in the UI, `promote run`,
# `promote launch`): "promotion rejected: <check>: <why>". Only the message carries it; no printer adds it again.
REJECTED = "promotion rejected: "


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
    if not re.fullmatch(_constraint(field, "pattern"), value):
        raise InputRejected(field, f"{IDENTIFIER_RULE} (got {shown(value, 40, quote=True)})")
    return value


def _integer(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,6}", value.strip()):
            value = int(value)
        else:
            raise InputRejected(field, f"must be an integer, got {shown(value, 40, quote=True)}")
    low, high = bounds(field)
    if not low <= value <= high:
        raise InputRejected(field, f"must be >= {low} and <= {high} (got {value})")
    return int(value)


def _boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputRejected(field, f"must be true or false, got {shown(value, 40, quote=True)}")
    return value


_RULE_OF_TYPE: dict[Any, Callable[[str, Any], Any]] = {str: _identifier, int: _integer, bool: _boolean}


def _check(name: str, raw: dict[str, Any]) -> Any:
    """One input through the rule of its type; an optional input left out takes its default."""
    field = PromotionInputs.model_fields[name]
    value = raw.get(name) if field.is_required() else raw.get(name, default(name))
    return _RULE_OF_TYPE[field.annotation](name, value)


def validate(raw: dict[str, Any]) -> PromotionInputs:
    """Apply the rules that need no database; raise on the first broken one (in the model's field order)."""
    unknown = sorted(set(raw) - set(PromotionInputs.model_fields))
    if unknown:
        raise InputRejected(unknown[0], "is not a known input")
    ids = {name: _check(name, raw) for name in ID_FIELDS}
    if ids["staging_env_id"] == ids["prod_env_id"]:
        raise InputRejected("prod_env_id", "must differ from staging_env_id")
    rest = {name: _check(name, raw) for name in PromotionInputs.model_fields if name not in ids}
    return PromotionInputs.model_validate({**ids, **rest})


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


# -- how a promotion is handed to the job -------------------------------------------------------------
def run_config(inputs: dict[str, Any]) -> dict[str, Any]:
    """The job's run config for a promotion's inputs (the config of its first op)."""
    return {"ops": {"create_ops_run": {"config": inputs}}}


def run_tags(inputs: dict[str, Any], source: str | None = None) -> dict[str, str]:
    """Tags naming the project, both environments and the user; ``promote/prod_env`` is also the key of the
    run queue's one-promotion-per-production-environment limit (dagster.yaml)."""
    tags = {"promote/project": str(inputs.get("project_id")), "promote/prod_env": str(inputs.get("prod_env_id")),
            "promote/staging_env": str(inputs.get("staging_env_id")), "promote/user": str(inputs.get("user_id"))}
    if source:
        tags["promote/launched_by"] = source
    return tags


def printable(raw: dict[str, Any]) -> dict[str, Any]:
    """Inputs as they can be stored in a rejection record (NUL bytes cannot go into jsonb)."""
    return {k: (v.replace("\x00", "\\x00")[:200] if isinstance(v, str) else v) for k, v in raw.items()}
