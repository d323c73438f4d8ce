"""The code location loads, and the job is the seed's eight steps in the seed's order."""

from __future__ import annotations

from dagster import Definitions

from promote_pipeline.definitions import defs
from promote_pipeline.defs.config import PromotionConfig
from promote_pipeline.promotion import steps

STEPS = ["create_ops_run", "snapshot_staging", "backup_production", "restore_green", "smoke_test_green",
         "cutover", "monitor_stability", "finalize"]
assert STEPS == [s.name for s in steps.STEPS]  # the job's ops are named from the steps table


def test_definitions_load() -> None:
    assert isinstance(defs, Definitions)
    Definitions.validate_loadable(defs)


def test_job_is_eight_ops_in_a_line_in_the_seeds_order() -> None:
    job = defs.get_job_def("promote_staging_to_prod")
    deps = job.graph.dependency_structure
    order = []
    node = "finalize"
    while True:
        order.append(node)
        upstream = [d.node_name for handles in deps.input_to_upstream_outputs_for_node(node).values()
                    for d in handles]
        if not upstream:
            break
        assert len(upstream) == 1
        node = upstream[0]
    assert list(reversed(order)) == STEPS
    assert job.executor_def.name == "in_process"


def test_every_config_field_has_a_description_and_the_seed_defaults() -> None:
    fields = PromotionConfig.model_fields
    assert set(fields) == {"project_id", "staging_env_id", "prod_env_id", "user_id", "rollback_window_hours",
                           "skip_smoke_tests", "auto_rollback_on_failure", "stability_window_seconds",
                           "carry_over_settings", "require_approval", "approval_timeout_seconds", "accept_drift",
                           "freeze_blue"}
    assert all(f.description for f in fields.values())
    defaults = {name: f.default for name, f in fields.items() if not f.is_required()}
    assert defaults == {"rollback_window_hours": 24, "skip_smoke_tests": False, "auto_rollback_on_failure": True,
                        "stability_window_seconds": 300, "carry_over_settings": True, "require_approval": False,
                        "approval_timeout_seconds": 3600, "accept_drift": False, "freeze_blue": False}
