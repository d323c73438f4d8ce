"""PromotionInputs is the one description of the eleven inputs: the launchpad's config, the CLI's flags, the rules'
ranges and defaults, the run config and tags, and a run's recovery all read it."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from annotated_types import Ge, Le
from dagster._config import validate_config
from pydantic import ValidationError

from promote_pipeline.cli import main as cli
from promote_pipeline.defs import jobs
from promote_pipeline.defs.config import PromotionConfig
from promote_pipeline.promotion import cleanup, guardrails, inputs
from promote_pipeline.promotion.inputs import PromotionInputs, run_config, run_tags, validate
from promote_pipeline.promotion.rollback_run import load_run
from resources.ops_db import DeploymentRecord, EnvironmentRecord, RunRecord

pytestmark = pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)

FIELDS = PromotionInputs.model_fields
GOOD = {"project_id": "proj_abc123", "staging_env_id": "env_staging_xyz", "prod_env_id": "env_prod_main",
        "user_id": "alice"}
# The flags people and scripts use today: generating them must not rename one.
FLAGS = {"project_id": "--project", "staging_env_id": "--staging", "prod_env_id": "--prod", "user_id": "--user",
         "rollback_window_hours": "--rollback-window-hours", "skip_smoke_tests": "--skip-smoke-tests",
         "auto_rollback_on_failure": "--no-auto-rollback", "carry_over_settings": "--no-carry-over",
         "stability_window_seconds": "--stability-seconds", "require_approval": "--require-approval",
         "approval_timeout_seconds": "--approval-timeout", "accept_drift": "--accept-drift",
         "freeze_blue": "--freeze-blue"}
DAGSTER_TYPES = {"StringSourceType": str, "Noneable.IntSourceType": int, "Noneable.BoolSourceType": bool}


def _launchpad_fields() -> dict[str, Any]:
    """The fields of create_ops_run's config as Dagster serves them to the launchpad."""
    snap = jobs.promote_staging_to_prod.get_job_snapshot().config_schema_snapshot
    ops = snap.get_config_snap(snap.get_config_snap(jobs.promote_staging_to_prod.run_config_schema.config_type.key)
                               .get_field("ops").type_key)
    op = snap.get_config_snap(ops.get_field("create_ops_run").type_key)
    config = snap.get_config_snap(op.get_field("config").type_key)
    return {str(f.name): f for f in config.fields or []}


# -- the launchpad -----------------------------------------------------------------------------------
def test_the_launchpad_config_has_the_models_fields_types_defaults_and_descriptions() -> None:
    fields = _launchpad_fields()
    assert list(FIELDS) == list(PromotionConfig.model_fields)
    assert set(fields) == set(FIELDS)
    for name, info in FIELDS.items():
        field = fields[name]
        assert DAGSTER_TYPES[field.type_key] is info.annotation, name
        assert field.description == info.description, name
        assert field.is_required == info.is_required(), name
        if not info.is_required():
            assert json.loads(field.default_value_as_json_str) == inputs.default(name), name


def test_the_config_has_no_constraints_so_a_refused_input_reaches_the_op_and_its_rejection_record() -> None:
    assert all(not f.metadata for f in PromotionConfig.model_fields.values())
    bad = {**GOOD, "project_id": "proj'; --", "rollback_window_hours": 0, "stability_window_seconds": 86400}
    assert validate_config(jobs.promote_staging_to_prod.run_config_schema.config_type, run_config(bad)).success
    assert PromotionConfig(**bad).model_dump() == {**inputs.defaults(), **bad}


def test_every_range_is_written_once_and_shown_in_the_description() -> None:
    for name in ("rollback_window_hours", "stability_window_seconds", "approval_timeout_seconds"):
        low, high = inputs.bounds(name)
        assert {type(m) for m in FIELDS[name].metadata} == {Ge, Le}
        assert f"({low} to {high}" in (FIELDS[name].description or "")
    assert (inputs.MIN_WINDOW_HOURS, inputs.MAX_WINDOW_HOURS) == (1, 168)
    assert inputs.bounds("stability_window_seconds") == (0, 3600)
    assert inputs.bounds("approval_timeout_seconds") == (1, 86400)
    assert inputs.default("approval_timeout_seconds") == 3600


# -- the command line ---------------------------------------------------------------------------------
def _subparser(command: str) -> argparse.ArgumentParser:
    actions = cli.build_parser()._subparsers._group_actions  # type: ignore[union-attr]
    return actions[0].choices[command]  # type: ignore[index]


@pytest.mark.parametrize("command", ["run", "launch"])
def test_the_cli_flags_are_the_models(command: str) -> None:
    parser = _subparser(command)
    by_flag = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    assert {name: inputs.flag(name) for name in FIELDS} == FLAGS
    for name, flag in FLAGS.items():
        action = by_flag[flag]
        assert action.required == FIELDS[name].is_required(), flag
        assert action.help == inputs.flag_help(name), flag
        if FIELDS[name].annotation is int:
            assert action.type is int and action.default == inputs.default(name), flag
    assert by_flag["--no-carry-over"].help == ("do not copy production's live settings onto green (the summary says"
                                               " so loudly)")


@pytest.mark.parametrize("command", ["run", "launch"])
def test_left_out_flags_give_the_models_defaults(command: str) -> None:
    args = cli.build_parser().parse_args([command, "--project", "p", "--staging", "s", "--prod", "e", "--user", "u"])
    assert cli.promotion_inputs(args) == {"project_id": "p", "staging_env_id": "s", "prod_env_id": "e",
                                          "user_id": "u", **inputs.defaults()}
    assert inputs.defaults() == {"rollback_window_hours": 24, "skip_smoke_tests": False,
                                 "auto_rollback_on_failure": True, "carry_over_settings": True,
                                 "stability_window_seconds": 300, "require_approval": False,
                                 "approval_timeout_seconds": 3600, "accept_drift": False, "freeze_blue": False}


def test_every_flag_sets_its_input() -> None:
    args = cli.build_parser().parse_args([
        "run", "--project", "p", "--staging", "s", "--prod", "e", "--user", "u", "--rollback-window-hours", "0",
        "--skip-smoke-tests", "--no-auto-rollback", "--no-carry-over", "--stability-seconds", "7",
        "--require-approval", "--approval-timeout", "5", "--accept-drift", "--freeze-blue"])
    assert cli.promotion_inputs(args) == {"project_id": "p", "staging_env_id": "s", "prod_env_id": "e",
                                          "user_id": "u", "rollback_window_hours": 0, "skip_smoke_tests": True,
                                          "auto_rollback_on_failure": False, "carry_over_settings": False,
                                          "stability_window_seconds": 7, "require_approval": True,
                                          "approval_timeout_seconds": 5, "accept_drift": True, "freeze_blue": True}


def test_the_rollback_default_follows_the_registry_everywhere_it_is_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guardrails, "current", lambda: SimpleNamespace(rollback_default=False))
    args = cli.build_parser().parse_args(["run", "--project", "p", "--staging", "s", "--prod", "e", "--user", "u"])
    assert cli.promotion_inputs(args)["auto_rollback_on_failure"] is False
    assert validate(dict(GOOD)).auto_rollback_on_failure is False
    assert PromotionInputs(**GOOD).auto_rollback_on_failure is False


# -- the rules ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["rollback_window_hours", "stability_window_seconds", "approval_timeout_seconds"])
def test_a_range_rule_names_the_field_and_the_models_range(name: str) -> None:
    low, high = inputs.bounds(name)
    for value in (low - 1, high + 1):
        with pytest.raises(inputs.InputRejected) as err:
            validate({**GOOD, name: value})
        assert str(err.value) == f"{name}: must be >= {low} and <= {high} (got {value})"


def test_the_rules_read_the_range_from_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # Narrow the model's range and nothing else: the rule and its message follow.
    monkeypatch.setattr(FIELDS["rollback_window_hours"], "metadata", [Ge(2), Le(48)])
    with pytest.raises(inputs.InputRejected, match=r"^rollback_window_hours: must be >= 2 and <= 48 \(got 49\)$"):
        validate({**GOOD, "rollback_window_hours": 49})
    assert validate({**GOOD, "rollback_window_hours": 48}).rollback_window_hours == 48


@pytest.mark.parametrize("name", inputs.ID_FIELDS)
def test_an_identifier_rule_names_the_field_and_the_alphabet(name: str) -> None:
    assert inputs.ID_FIELDS == ("project_id", "staging_env_id", "prod_env_id", "user_id")
    with pytest.raises(inputs.InputRejected) as err:
        validate({**GOOD, name: "a b"})
    assert str(err.value) == (f"{name}: must be 1-64 ASCII letters, digits, '_', '.' or '-', starting with a letter"
                              " or digit (got 'a b')")


def test_the_model_itself_refuses_what_the_rules_refuse() -> None:
    for bad in ({"rollback_window_hours": 169}, {"stability_window_seconds": -1}, {"user_id": "../x"},
                {"project_id": "a" * 65}, {"prod_env_id": "env\n"}):
        with pytest.raises(ValidationError):
            PromotionInputs(**{**GOOD, **bad})


def test_promote_window_takes_the_inputs_range() -> None:
    svc: Any = SimpleNamespace()  # refused before the database is asked
    for hours in (inputs.MIN_WINDOW_HOURS - 1, inputs.MAX_WINDOW_HOURS + 1):
        with pytest.raises(ValueError, match=rf"^hours: must be an integer >= 1 and <= 168 \(got {hours}\)$"):
            cleanup.set_window(svc, "run_x", hours)


# -- run config, tags, ops metadata ----------------------------------------------------------------------
def test_run_config_and_tags_round_trip() -> None:
    promotion = validate({**GOOD, "rollback_window_hours": 12, "skip_smoke_tests": True})
    dumped = promotion.model_dump()
    config = run_config(dumped)
    assert config == {"ops": {"create_ops_run": {"config": dumped}}}
    checked = validate_config(jobs.promote_staging_to_prod.run_config_schema.config_type, config)
    assert checked.success and checked.value is not None
    got = checked.value["ops"]["create_ops_run"]["config"]
    assert validate(PromotionConfig(**got).model_dump()) == promotion
    tags = run_tags(dumped, "cli")
    assert tags == {"promote/project": "proj_abc123", "promote/staging_env": "env_staging_xyz",
                    "promote/prod_env": "env_prod_main", "promote/user": "alice", "promote/launched_by": "cli"}
    back = {"project_id": tags["promote/project"], "staging_env_id": tags["promote/staging_env"],
            "prod_env_id": tags["promote/prod_env"], "user_id": tags["promote/user"]}
    assert validate(back) == validate(dict(GOOD))
    assert "promote/launched_by" not in run_tags(dumped)


class _OpsDb:
    """The three reads load_run makes, answered with the records the ops database would return."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    def run(self, run_id: str) -> RunRecord:
        return RunRecord(run_id=run_id, operation_type="promote", project_id="proj_abc123", status="failed",
                         environment_id="env_prod_main", created_by="alice", metadata=self.metadata,
                         evidence_dir="/tmp/ev", created_at=datetime(2025, 1, 1, tzinfo=UTC))

    def environment(self, environment_id: str) -> EnvironmentRecord:
        kind = "production" if environment_id == "env_prod_main" else "staging"
        return EnvironmentRecord(environment_id=environment_id, project_id="proj_abc123", kind=kind,
                                 git_commit_sha=None, db_dsn_ref="X", db_name_prefix="x", filestore_root="/tmp")

    def deployment(self, deployment_id: str) -> DeploymentRecord:
        return DeploymentRecord(deployment_id=deployment_id, environment_id="env_prod_main", db_name="db",
                                data_dir="/tmp", http_port=8069, websocket_port=8072, pid=None, state="active")


def test_a_run_is_recovered_with_the_inputs_create_ops_run_stored() -> None:
    promotion = validate({**GOOD, "rollback_window_hours": 6, "carry_over_settings": False})
    metadata = {**promotion.model_dump(), "blue_deployment_id": "dep_blue", "worker_pid": 1, "fence": {}}
    _, run = load_run(SimpleNamespace(ops_db=_OpsDb(metadata)), "run_x")  # type: ignore[arg-type]
    assert run.inputs == promotion


def test_a_run_of_older_code_is_recovered_from_its_flat_metadata_and_columns() -> None:
    # Before the model: no ids in the metadata (they are the row's columns), the rest flat.
    metadata = {"staging_env_id": "env_staging_xyz", "rollback_window_hours": 6, "skip_smoke_tests": False,
                "auto_rollback_on_failure": False, "stability_window_seconds": 30, "carry_over_settings": True,
                "blue_deployment_id": "dep_blue", "worker_pid": 1}
    _, run = load_run(SimpleNamespace(ops_db=_OpsDb(metadata)), "run_x")  # type: ignore[arg-type]
    assert run.inputs == validate({**GOOD, "rollback_window_hours": 6, "auto_rollback_on_failure": False,
                                   "stability_window_seconds": 30})


# -- echoing what an operator typed -------------------------------------------------------------------
BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\u2028", "\u200b", "\udcff", *BIDI],
                         ids=repr)
def test_shown_escapes_what_would_change_the_line(char: str) -> None:
    text = inputs.shown(f"env{char}x")
    assert char not in text and text == repr(f"env{char}x") and text.isprintable()


def test_shown_leaves_a_plain_id_alone_and_cuts_a_long_one() -> None:
    assert inputs.shown("run_0a1b2c") == "run_0a1b2c"
    assert inputs.shown("run_0a1b2c", quote=True) == "'run_0a1b2c'"
    assert inputs.shown("demo admin") == "'demo admin'" and inputs.shown("") == "''"
    assert inputs.shown("x" * 5000) == "'" + "x" * inputs.SHOWN_CHARS + "'…(5000 chars)"
    assert inputs.shown("x" * inputs.SHOWN_CHARS) == "x" * inputs.SHOWN_CHARS
    assert inputs.shown(1.5) == "1.5" and inputs.shown(None) == "None"
