"""`promote run` records its run on the Dagster instance `make ui` made beside the settings (so the UI lists it),
found without DAGSTER_HOME: a real PostgreSQL-backed instance (the repository's dagster.yaml) in a temporary folder
and database, and a real sandbox promotion."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance
from psycopg import sql

from promote_pipeline.cli import sandbox as sandbox_mod
from promote_pipeline.cli.runner import run_promotion
from promote_pipeline.cli.sandbox import PROD, STAGING, Sandbox
from promote_pipeline.defs import in_process
from promote_pipeline.defs.promotion_job import OUTCOME_TAG
from promote_pipeline.promotion import settings as settings_mod
from promote_pipeline.promotion.settings import default_server_dsn

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ui_home(haproxy_box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The sandbox's settings in a folder of their own, beside a `dagster_home` as scripts/ui.sh leaves it."""
    database = f"dagster_t_{secrets.token_hex(4)}"
    params = psycopg.conninfo.conninfo_to_dict(default_server_dsn())
    with psycopg.connect(default_server_dsn(), dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    auth = f"{params.get('user', 'postgres')}" + (f":{params['password']}" if params.get("password") else "")
    url = f"postgresql+psycopg2://{auth}@{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/{database}"
    settings_file = tmp_path / "settings.json"
    shutil.copy(haproxy_box.settings_file, settings_file)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(REPO / "dagster.yaml")
    (home / in_process.UI_PG_URL_FILE).write_text(url + "\n")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("DAGSTER_PG_URL", url)  # restored after the test (open_instance only sets it when unset)
    settings_mod.select(settings_file)
    try:
        yield home
    finally:
        haproxy_box.activate()
        with psycopg.connect(default_server_dsn(), dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def test_promote_run_records_its_run_on_the_uis_instance(haproxy_box: Sandbox, ui_home: Path) -> None:
    assert in_process.persistent_home() == ui_home
    inputs = {"project_id": sandbox_mod.PROJECT, "staging_env_id": STAGING, "prod_env_id": PROD,
              "user_id": sandbox_mod.USER, "stability_window_seconds": 1}
    code, outcome, message = run_promotion(inputs, quiet=True)
    assert code == 0 and outcome is not None, message
    dagster_run_id = haproxy_box.resources()["ops_db"].run(outcome.run_id).dagster_run_id
    with DagsterInstance.from_config(str(ui_home)) as instance:
        run = instance.get_run_by_id(dagster_run_id)
        assert run is not None and run.job_name == "promote_staging_to_prod"
        assert run.tags[OUTCOME_TAG] == "success" and run.tags["promote/prod_env"] == PROD


def test_without_the_uis_instance_a_run_stays_ephemeral(haproxy_box: Sandbox, ui_home: Path) -> None:
    (ui_home / in_process.UI_PG_URL_FILE).unlink()  # `make ui` never ran here
    assert in_process.persistent_home() is None
    with in_process.instance_for(None) as instance:
        assert instance.is_ephemeral
