"""Running the code location's jobs in this process, for the CLI, drills and tests.

``promote run`` and ``promote rollback`` execute the job right here (no webserver needed) against
the instance of ``DAGSTER_HOME``, else the one `make ui` made beside the settings (its runs then listed in the UI),
or an ephemeral one. The result is reduced to what a caller
acts on: an exit code, the seed's outputs object, and one message.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from promote_pipeline.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_UNAVAILABLE
from promote_pipeline.cli.printer import Printer
from promote_pipeline.promotion import abort, progress, settings, steps
from promote_pipeline.promotion.models import PromotionOutcome
from resources.ops_db import OpsDatabaseUnreachable

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_REJECTED", "EXIT_UNAVAILABLE", "end_of_start_up", "run_promotion",
           "run_rollback"]


def end_of_start_up() -> None:
    """Turn the cyclic garbage collector back on if the command line turned it off for start-up.

    Start-up (importing Dagster, building the definitions, the instance and its storage) creates about
    a million objects that live as long as the process; with the collector on, each full collection
    walks them all again for nothing (0.3-0.5 s of a run). ``promote`` starts with collection off and,
    here, once the job is ready, moves everything alive into the collector's permanent generation
    (``gc.freeze``) and turns collection on for what the run itself allocates. A caller that never
    turned it off (tests, the code server) is left as it is."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


_NOTICE_WAIT_SECONDS = 15.0


def _execute(job_name: str, run_config: dict[str, Any], tags: dict[str, str], quiet: bool, instance: Any,
             resource_overrides: dict[str, Any] | None) -> Any:
    """Execute one of the code location's jobs in this process, printing its progress unless ``quiet``."""
    from promote_pipeline.defs.in_process import execute

    listeners: list[Printer] = []

    def when_ready() -> None:
        end_of_start_up()
        if not quiet:  # a live status line in a terminal, plain lines otherwise
            listeners.append(Printer())
            progress.subscribe(listeners[0])

    try:
        return execute(job_name, run_config, tags, settings.load(), instance, resource_overrides, when_ready)
    finally:
        if listeners:
            from promote_pipeline.promotion import notify

            # The job has returned, its safety actions done: give the last notifications a few seconds so their
            # "delivered"/"NOT delivered" lines reach the operator before the result line (the process still
            # waits for slower ones when it exits).
            notify.wait_for_deliveries(_NOTICE_WAIT_SECONDS)
        for listener in listeners:
            progress.unsubscribe(listener)
            listener.close()


@contextmanager
def _signals_abort() -> Iterator[None]:
    """SIGINT and SIGTERM ask the promotion to stop and roll back instead of killing this process mid-step
    (which left green live and the run ``running``); a second signal only says it is under way."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; a caller off it has its own way to stop
        return

    def on_signal(signo: int, _frame: Any) -> None:
        name = signal.Signals(signo).name
        if abort.request_here(f"{name} received"):
            print(f"promote: {name} received: aborting the promotion (it rolls back, then exits 1)",
                  file=sys.stderr, flush=True)
        else:
            print(f"promote: {name} received: the abort is under way", file=sys.stderr, flush=True)

    previous = {signo: signal.getsignal(signo) for signo in (signal.SIGINT, signal.SIGTERM)}
    abort.clear_here()
    for signo in previous:
        signal.signal(signo, on_signal)
    try:
        yield
    finally:
        for signo, handler in previous.items():
            signal.signal(signo, handler)
        abort.clear_here()


def _off_main_thread(work: Callable[[], Any]) -> Any:
    """``work()`` in a thread of its own while this (main) thread takes the signals: Dagster replaces SIGINT's
    handler on the main thread while it executes a job (raising inside whatever step runs), and leaves it alone
    elsewhere, so the job then stops only where ``abort.check`` lets it, with its failure handling intact."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # handed to the caller's thread, raised there
            box["error"] = exc

    worker = threading.Thread(target=target, name="promotion")
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.2)  # a bounded wait, so that a signal's handler runs at once
    if "error" in box:
        raise box["error"]
    return box["result"]


def _failure_message(result: Any) -> tuple[str | None, str | None, str | None]:
    from promote_pipeline.defs.in_process import first_failure

    return first_failure(result)


def run_promotion(raw: dict[str, Any], quiet: bool = False, instance: Any = None,
                  resource_overrides: dict[str, Any] | None = None) -> tuple[int, PromotionOutcome | None, str | None]:
    """Execute the job in process; return (exit code, outcome, rejection or failure message).

    Inputs are checked first with the same rules the job applies, so that input Dagster's config
    types would refuse (a window that is not an integer) is also refused here with one message
    naming the field and a rejection record. ``resource_overrides`` replaces resources by key
    (drills use it to inject a fault into a real resource).
    """
    from promote_pipeline.defs.resources import build_resources
    from promote_pipeline.promotion import inputs as input_rules

    ops_db = build_resources(settings.load())["ops_db"]
    try:
        input_rules.validate(raw)
    except input_rules.InputRejected as exc:
        from resources.redaction import redact, redact_text

        rejection = redact_text(f"{exc.check}: {exc.message}")
        ops_db.upgrade()
        ops_db.record_rejection(exc.check, rejection, redact(input_rules.printable(raw)))
        return EXIT_REJECTED, None, f"{input_rules.REJECTED}{rejection}"
    def work() -> tuple[str, PromotionOutcome | None, tuple[str | None, str | None, str | None]]:
        # The result is read in the job's thread, before its instance is disposed there.
        from promote_pipeline.defs.in_process import instance_for

        with instance_for(instance) as inst:
            result = _execute("promote_staging_to_prod", input_rules.run_config(raw), input_rules.run_tags(raw),
                              quiet, inst, resource_overrides)
            if result.success:
                return result.run_id, result.output_for_node(steps.FINALIZE.name), (None, None, None)
            return result.run_id, None, _failure_message(result)

    with _signals_abort():
        dagster_run_id, succeeded, (step, cls_name, message) = _off_main_thread(work)
    if succeeded is not None:
        return EXIT_OK, succeeded, None
    if step == steps.CREATE_OPS_RUN.name and "PromotionRejected" in (cls_name or ""):
        return EXIT_REJECTED, None, message
    if step == steps.CREATE_OPS_RUN.name and cls_name == OpsDatabaseUnreachable.__name__:
        # Before the run had a row: there is nothing to report but where it failed.
        raise OpsDatabaseUnreachable(message or "ops database unreachable")
    row = ops_db.promote_run_for_dagster_run(dagster_run_id)
    if row is None:
        return EXIT_FAILED, None, message
    meta = row.metadata
    outcome = PromotionOutcome(run_id=row.run_id, status=row.status if row.status != "running" else "failed",
                               evidence_dir=row.evidence_dir or "", blue_backup_id=meta.get("blue_backup_id"),
                               green_artifact_id=meta.get("green_artifact_id"),
                               cutover_timestamp=meta.get("cutover_timestamp"))
    return EXIT_FAILED, outcome, message


def run_rollback(run_id: str, reason: str, requested_by: str, quiet: bool = False,
                 instance: Any = None) -> tuple[int, dict[str, Any] | None, str | None]:
    """Execute rollback_promotion in process for one promotion; (exit code, result, message): 2 and ``rollback
    refused: why`` when it was refused (nothing changed), 1 and what failed otherwise. Raises
    OpsDatabaseUnreachable when the ops database could not be reached."""
    config = {"run_id": run_id, "reason": reason, "requested_by": requested_by, "manual": True}
    result = _execute("rollback_promotion", {"ops": {"roll_back_promotion": {"config": config}}},
                      {"promote/rollback_of": run_id}, quiet, instance, None)
    if result.success:
        return EXIT_OK, result.output_for_node("roll_back_promotion"), None
    _, cls_name, message = _failure_message(result)
    if cls_name == OpsDatabaseUnreachable.__name__:
        raise OpsDatabaseUnreachable(message or "ops database unreachable")
    return (EXIT_REJECTED if cls_name == "RollbackRefusal" else EXIT_FAILED), None, message
