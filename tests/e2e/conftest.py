"""The launch surfaces end to end: a real dagster-webserver and dagster-daemon (scripts/ui.sh) on a
temporary instance with PostgreSQL storage, serving the test sandbox's code location, and headless
Chromium for the UI.

One webserver and daemon serve the whole module that asks for them (``dagster_ui`` is
module-scoped: starting both takes about 9 s); the sandbox is the session's HAProxy one.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from promote_pipeline.cli.sandbox import Sandbox
from promote_pipeline.promotion.settings import PROJECT_DIR, default_server_dsn

UI_SH = PROJECT_DIR / "scripts" / "ui.sh"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class DagsterUI:
    url: str
    env: dict[str, str]
    home: Path
    box: Sandbox

    def graphql(self, query: str, variables: dict[str, object] | None = None) -> dict[str, object]:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        data: dict[str, object] = body["data"]
        return data


@pytest.fixture(scope="module")
def dagster_ui(sandbox_factory: Callable[[str], Sandbox],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    box = sandbox_factory("haproxy")  # activates it: PROMOTE_SETTINGS, PROMOTE_SECRETS_FILE, PROMOTE_EVIDENCE_ROOT
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    database = f"dagster_test_{secrets.token_hex(4)}"
    home = tmp_path_factory.mktemp("dagster_ui") / "dagster_home"
    env = {**os.environ, "UI_DAGSTER_HOME": str(home), "DAGSTER_PORT": port, "DAGSTER_PG_DB": database,
           "PROMOTE_SETTINGS": str(box.settings_file), "UI_READY_TIMEOUT": "150"}
    up = subprocess.run(["bash", str(UI_SH), "up"], env=env, capture_output=True, text=True, timeout=330)
    ui = DagsterUI(url=f"http://127.0.0.1:{port}", env=env, home=home, box=box)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # Dagster shows a "join the community" dialog over the UI on loopback until told it was seen.
        ui.graphql("mutation { setNuxSeen }")
        yield ui
    finally:
        subprocess.run(["bash", str(UI_SH), "down"], env=env, capture_output=True, timeout=90)
        with psycopg.connect(default_server_dsn() + " dbname=postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


@dataclass
class Page:
    dom: str
    screenshot: Path

    @property
    def text(self) -> str:
        """The visible text of the DOM, whitespace collapsed."""
        body = re.sub(r"<script.*?</script>|<style.*?</style>", " ", self.dom, flags=re.S)
        return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())


@pytest.fixture
def chromium(tmp_path: Path) -> Callable[[str, str], Page]:
    """Open a URL in headless Chromium (Debian's, from scripts/install_system_deps.sh): its DOM after the JS app
    ran (virtual time), and a screenshot saved in the test's tmp dir."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("no chromium on PATH: `make deps` (scripts/install_system_deps.sh) installs Debian's")

    def open_page(url: str, name: str) -> Page:
        shot = tmp_path / f"{name}.png"
        profile = tmp_path / f"chromium-{name}"
        result = subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000",
             "--virtual-time-budget=15000", f"--screenshot={shot}", "--dump-dom", url],
            capture_output=True, text=True, timeout=300)  # virtual time is quick; a loaded machine is not
        assert result.returncode == 0, result.stderr[-2000:]
        return Page(dom=result.stdout, screenshot=shot)

    return open_page
