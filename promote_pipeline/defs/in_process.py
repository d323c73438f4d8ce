"""Executing one of the code location's jobs in this process (``promote run``, ``promote rollback``, drills).

The CLI decides what to run and how to show it; this module is the part that speaks Dagster: the job as the
code location defines it for these settings, on the instance of ``DAGSTER_HOME`` (an ephemeral one when
unset), with Dagster's own console logging quiet (progress lines are the CLI's business).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult

from promote_pipeline.defs.location import build_definitions
from promote_pipeline.promotion.settings import Settings


@contextmanager
def instance_for(instance: DagsterInstance | None) -> Iterator[DagsterInstance]:
    """``instance``, else that of ``DAGSTER_HOME``, else an ephemeral one, disposed on exit: in the thread that made
    it, since its SQLite connections refuse to be closed from another (at garbage collection, with a traceback)."""
    if instance is not None:
        yield instance
        return
    with (DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()) as made:
        yield made


def execute(job_name: str, run_config: dict[str, Any], tags: dict[str, str], settings: Settings,
            instance: DagsterInstance | None = None, resource_overrides: dict[str, Any] | None = None,
            when_ready: Callable[[], None] = lambda: None) -> ExecuteInProcessResult:
    """Run the job to its end and return Dagster's result; ``when_ready`` is called once the job and the instance
    are built, right before the first step."""
    job = build_definitions(settings, resource_overrides).get_job_def(job_name)
    if instance is None:
        instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
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
