"""The split deployment's files (``deploy/``) agree with the instance of ``make ui`` and with the code location.

The end-to-end proof, with real processes, is tests/e2e/test_distributed_deployment.py; these are the checks that
need none: the files parse as Dagster reads them, and what must be equal is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.workspace.config_schema import ensure_workspace_config

from promote_pipeline.cli import launch
from promote_pipeline.promotion.inputs import run_tags
from promote_pipeline.promotion.settings import PROJECT_DIR

pytestmark = pytest.mark.unit  # reads files only: `make unit`

DEPLOY = PROJECT_DIR / "deploy"


def test_the_deployment_instance_is_the_make_ui_instance_itself() -> None:
    # One file, linked: the run queue, its tag limit and run monitoring cannot drift apart between the two.
    assert (DEPLOY / "dagster.yaml").is_symlink()
    assert (DEPLOY / "dagster.yaml").resolve() == PROJECT_DIR / "dagster.yaml"


def test_the_instance_queues_runs_one_promotion_per_production_and_launches_them_through_the_code_server() -> None:
    config, _ = dagster_instance_config(str(DEPLOY))
    assert config["run_launcher"] == {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    [limit] = coordinator["config"]["tag_concurrency_limits"]
    assert limit == {"key": "promote/prod_env", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    # The key of the limit is the tag every launch puts on a promotion.
    assert limit["key"] in run_tags({"prod_env_id": "e"}, "cli")
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}


def test_the_workspace_reaches_the_code_server_named_as_launches_select_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTE_CODE_SERVER_HOST", "worker-1.internal")
    monkeypatch.setenv("PROMOTE_CODE_SERVER_PORT", "4266")
    path = DEPLOY / "workspace.yaml"
    processed = ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))
    entries: list[dict[str, object]] = processed["load_from"]  # type: ignore[assignment]
    [entry] = entries
    assert entry == {"grpc_server": {"host": "worker-1.internal", "port": 4266, "location_name": launch.LOCATION}}


def test_the_root_workspace_still_loads_the_code_location_in_process() -> None:
    # `make ui` is unchanged: its webserver and daemon start their own code servers from the module.
    root = yaml.safe_load(Path(PROJECT_DIR / "workspace.yaml").read_text())
    assert root["load_from"] == [{"python_module": {"module_name": "promote_pipeline.definitions",
                                                    "location_name": launch.LOCATION}}]
