"""Executing one of the code location's jobs in this process (``promote run``, ``promote rollback``, drills).

The CLI decides what to run and how to show it; this module is the part that speaks Dagster: the job as the
code location defines it for these settings, on the instance of ``DAGSTER_HOME``, else the one `make ui` made
beside the settings file (so the UI lists the run), else an ephemeral one, with Dagster's own console logging
quiet (progress lines are the CLI's business).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult

from promote_pipeline.defs.location import build_definitions
from promote_pipeline.promotion.settings import Settings, settings_path

# What `make ui` (scripts/ui.sh) leaves in the instance folder it made: the URL of the PostgreSQL database holding
# that instance's runs and events (no password: the UI's instance connects as the local server's trusted user),
# which its dagster.yaml reads from DAGSTER_PG_URL.
UI_PG_URL_FILE = "dagster_pg_url"


def persistent_home() -> Path | None:
    """The Dagster instance a run executed here is recorded on, so that the UI lists it: ``DAGSTER_HOME`` when set;
    else the instance `make ui` made beside the settings file (``<its folder>/dagster_home``, the sandbox's
    ``.sandbox/dagster_home``), once it has; else None (an ephemeral instance, gone with the process)."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    path = settings_path()
    if path is None:
        return None
    home = path.parent / "dagster_home"
    return home if (home / "dagster.yaml").is_file() and (home / UI_PG_URL_FILE).is_file() else None


def open_instance() -> DagsterInstance:
    """The instance of ``persistent_home()``, or an ephemeral one. One the UI made but that does not open now (its
    database server away) is said in one line, and the run goes on, on an ephemeral instance: recording a run for
    the UI is not a reason to refuse a promotion."""
    home = persistent_home()
    if home is None:
        return DagsterInstance.ephemeral()
    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    url_file = home / UI_PG_URL_FILE
    os.environ.setdefault("DAGSTER_PG_URL", url_file.read_text().strip())
    try:
        made = DagsterInstance.from_config(str(home))
        made.get_runs(limit=1)  # reaches its storage now, not halfway through the run
        return made
    except Exception as exc:
        print(f"promote: the Dagster instance in {home} did not open ({type(exc).__name__}): this run is recorded"
              " on an ephemeral instance, which the UI does not list", file=sys.stderr, flush=True)
        return DagsterInstance.ephemeral()


@contextmanager
def instance_for(instance: DagsterInstance | None) -> Iterator[DagsterInstance]:
    """``instance``, else ``open_instance()``, disposed on exit: in the thread that made it, since its SQLite
    connections refuse to be closed from another (at garbage collection, with a traceback)."""
    if instance is not None:
        yield instance
        return
    with open_instance() as made:
        yield made


def execute(job_name: str, run_config: dict[str, Any], tags: dict[str, str], settings: Settings,
            instance: DagsterInstance | None = None, resource_overrides: dict[str, Any] | None = None,
            when_ready: Callable[[], None] = lambda: None) -> ExecuteInProcessResult:
    """Run the job to its end and return Dagster's result; ``when_ready`` is called once the job and the instance
    are built, right before the first step."""
    job = build_definitions(settings, resource_overrides).get_job_def(job_name)
    if instance is None:
        instance = open_instance()
    when_ready()
    return job.execute_in_process(
        run_config={**run_config, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        instance=instance, raise_on_error=False, tags=tags)


def first_failure(result: ExecuteInProcessResult) -> tuple[str | None, str | None, str | None]:
    """(step key, exception class name, message) of the first failed step of a result."""
    events = result.get_step_failure_events()
    if not events or events[0].step_failure_data.error is None:
        return None, None, None
    error = events[0].step_failure_data.error
    # An exception an op raised (not a Failure) comes wrapped in Dagster's 'Error occurred while executing op "x":',
    # which says nothing; the exception itself is its cause.
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    message: str = " ".join(error.message.split())
    # "module.path.ClassName: what happened" -> "what happened"
    message = re.sub(rf"^[\w.]*\b{re.escape(error.cls_name)}: ", "", message, count=1) if error.cls_name else message
    return events[0].step_key, error.cls_name, message
