"""Where things live, for a process that runs promotions.

Defaults describe the project's own folder (``docs/evidence/`` for evidence, ``.sandbox/`` for the
sandbox's routers, processes and artifacts). ``promote sandbox up`` writes the settings it chose
to ``.sandbox/settings.json``; a real installation writes its own file and points
``PROMOTE_SETTINGS`` at it. Environment variables named below override single values.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

from promote_pipeline.odoo.carry_over import DEFAULT_PARAMETERS

PROJECT_DIR = Path(__file__).resolve().parents[2]
# The ops DSN's reference when the settings name none; unset, it means the machine's local PostgreSQL.
DEFAULT_OPS_DSN_REF = "PROMOTE_OPS_DSN"


class Settings(BaseModel):
    ops_database: str = Field(default="promote_ops", description="Database of the ops schema.")
    ops_dsn_ref: str = Field(default=DEFAULT_OPS_DSN_REF, description="Secret reference of the ops server DSN.")
    db_prefix: str = Field(default="odoo", description="Prefix of the databases the sandbox creates.")
    evidence_root: str = Field(default=str(PROJECT_DIR / "docs" / "evidence"),
                               description="Where each run writes its evidence folder (<date>/promote/<run_id>/).")
    artifact_root: str = Field(default=str(PROJECT_DIR / ".sandbox" / "artifacts"),
                               description="Root of the artifact store (dumps, filestore indexes, .objects/).")
    run_dir: str = Field(default=str(PROJECT_DIR / ".sandbox" / "run"),
                         description="Where started Odoo servers keep their pid and log files.")
    router_kind: str = Field(default="haproxy", description="'haproxy' or 'nginx'.")
    router_dir: str = Field(default=str(PROJECT_DIR / ".sandbox" / "router"),
                            description="Where the router keeps its configuration, socket, pid and log.")
    odoo_command: str = Field(
        default="{python} -m odoo_standin serve --db {db} --data-dir {data_dir} --port {http_port}"
                " --allow-superuser-role-for-tests",
        description="Command template that starts one Odoo server.",
    )
    secrets_file: str | None = Field(default=None, description="JSON file of secret values (mode 0600).")
    min_free_space_factor: float = Field(default=3.0, description="Free space needed, as a multiple of prod size.")
    carry_over_parameters: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PARAMETERS),
        description="ir_config_parameter keys copied from blue onto green (see live_settings.DEFAULT_PARAMETERS).")


_selected: Path | None = None


def select(path: Path | None) -> None:
    """Use this settings file in this process from now on (a sandbox activating itself); None: back to
    ``PROMOTE_SETTINGS`` or the default."""
    global _selected
    _selected = path


def settings_path() -> Path:
    if _selected is not None:
        return _selected
    return Path(os.environ.get("PROMOTE_SETTINGS", PROJECT_DIR / ".sandbox" / "settings.json"))


def load(path: Path | None = None) -> Settings:
    """The settings file (``path``, or the one this process uses), with the single values that environment
    variables override. Reads the environment, never writes it: the resources built from these settings carry
    them to the ops."""
    path = path or settings_path()
    data = json.loads(path.read_text()) if path.exists() else {}
    settings = Settings.model_validate(data)
    if os.environ.get("PROMOTE_EVIDENCE_ROOT"):
        settings.evidence_root = os.environ["PROMOTE_EVIDENCE_ROOT"]
    if os.environ.get("PROMOTE_OPS_DATABASE"):
        settings.ops_database = os.environ["PROMOTE_OPS_DATABASE"]
    if os.environ.get("PROMOTE_MIN_FREE_SPACE_FACTOR"):
        settings.min_free_space_factor = float(os.environ["PROMOTE_MIN_FREE_SPACE_FACTOR"])
    return settings


def default_server_dsn() -> str:
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    return f"host={host} port={port} user={user}"
