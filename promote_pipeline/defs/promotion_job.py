"""The eight ops of ``promote_staging_to_prod``, one per step of the seed, in the seed's order.

Each op takes the previous op's typed output and returns its own, so the graph is a line. Ops
stay thin: the work lives in the modules named after it (preflight, backup, restore, smoke,
stability, rollback). From the green restore on, any failure an op detects goes through
``rollback.handle_failure`` in the same process, and only then does the op fail the run.
"""


import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import DagsterInstance, Failure, OpExecutionContext, op

from promote_pipeline.defs import event_log, run_view
from promote_pipeline.defs.config import PromotionConfig
from promote_pipeline.promotion import abort, approval, guardrails, inputs, notify, odoo_aware, progress, steps
from promote_pipeline.promotion import evidence as evidence_mod
from promote_pipeline.promotion.backup import back_up
from promote_pipeline.promotion.evidence import Evidence, evidence_dir_for
from promote_pipeline.promotion.failure import handle_failure
from promote_pipeline.promotion.models import (
    BlueBackedUp,
    CutOver,
    GreenRestored,
    GreenSmokeTested,
    PromotionOutcome,
    RunStarted,
    StabilityMetrics,
    StabilityWatched,
    StagingSnapshotTaken,
)
from promote_pipeline.promotion.preflight import Preflight
from promote_pipeline.promotion.restore import restore_next_to_blue
from promote_pipeline.promotion.services import Services, switch_confirmed
from promote_pipeline.promotion.smoke import SmokeSuite
from promote_pipeline.promotion.stability import watch
from promote_pipeline.promotion.steps import Step
from promote_pipeline.promotion.summary import LiveAfter, write_final
from resources.ops_db import EnvironmentLock, FinalRunStatus, TaskRequest
from resources.redaction import redact, redact_text

# Every progress line of the steps also goes into Dagster's event log (the run view, `promote launch`).
event_log.install()

# Advisory locks held for the whole run, by ops run id (the executor runs every op in this process).
_LOCKS: dict[str, EnvironmentLock] = {}


class PromotionRejected(Failure):
    """Input validation or a precondition refused the run; only the rejection record exists."""


class StepFailed(RuntimeError):
    pass


def _holds(lock: EnvironmentLock) -> bool:
    """True if this process holds the lock (taking it back if its session was lost); never raises."""
    try:
        return lock.ensure()
    except Exception:
        return False


def _release(run_id: str) -> None:
    lock = _LOCKS.pop(run_id, None)
    if lock:
        lock.release()


# The run's tags that say how a promotion ended, for the UI's run list and its filters: `promote/outcome` is
# success, rolled_back, failed or rejected; `promote/description` one line saying what happened (Dagster runs have
# no description of their own, and a rolled-back run is a red "Failure" in Dagster's terms).
OUTCOME_TAG = "promote/outcome"
DESCRIPTION_TAG = "promote/description"
_OUTCOME_WORDS = {"success": "promotion succeeded", "rolled_back": "promotion ROLLED BACK",
                  "failed": "promotion FAILED", "rejected": "promotion rejected"}


def one_line(text: str) -> str:
    """``text`` on one line: a failure's message is read in the UI's run list and in a terminal, where a line break
    (a subprocess's stderr, say) would make it look like several messages."""
    return " ".join(text.split())


def tag_outcome(context: OpExecutionContext, outcome: str, detail: str) -> None:
    """Tag this op's Dagster run with how the promotion ended."""
    tag_run(context.instance, context.run_id, outcome, detail)


def tag_run(instance: DagsterInstance, dagster_run_id: str, outcome: str, detail: str) -> None:
    """Tag a Dagster run of this instance with how its promotion ended (a later rollback re-tags it). Never raises:
    a tag is for people, and a storage that refuses it must not turn a finished rollback into an error."""
    try:
        if not instance.has_run(dagster_run_id):  # a run executed on another (ephemeral) instance
            return
        instance.add_run_tags(dagster_run_id, {
            OUTCOME_TAG: outcome, DESCRIPTION_TAG: one_line(f"{_OUTCOME_WORDS[outcome]}: {detail}")[:500]})
    except Exception as exc:
        progress.say(f"could not tag the Dagster run with its outcome: {type(exc).__name__}")


@contextmanager
def guarded(context: OpExecutionContext, svc: Services, run: RunStarted, current: Step,
            **ids: Any) -> Iterator[None]:
    """Run a step; on failure hand over to rollback.handle_failure, tag the run with its outcome, then fail the op
    with one line (without the cause chain, which could carry unredacted text into Dagster's event log)."""
    failure: Failure | None = None
    lock = _LOCKS.get(run.run_id)
    if lock is not None and not _holds(lock):
        # Our session was lost (a PostgreSQL restart) and another took the environment: the safety net
        # owns this run now. Stop here rather than act on a green it may already have removed.
        _LOCKS.pop(run.run_id, None)
        raise Failure(description=f"{current.name}: run {run.run_id} lost its environment lock; not continuing",
                      allow_retries=False)
    with progress.step(current):
        try:
            abort.check(svc, run.run_id)  # a step boundary: where an abort request takes effect
            yield
        except Exception as exc:
            detected = time.monotonic()
            if lock is not None and not _holds(lock):
                progress.say(f"run {run.run_id}: lost the environment lock; the safety net owns the rollback")
            # An abort rolls back whatever auto_rollback says: a person asked for it, and green may serve.
            forced = isinstance(exc, abort.PromotionAborted) and current.after_green
            try:
                outcome = handle_failure(svc, run, current, exc, detected, force_rollback=forced, **ids)
            finally:
                _release(run.run_id)
            why = one_line(f"{current.name} failed: {redact_text(str(exc))}")
            tag_outcome(context, outcome.status, f"{why}; run {run.run_id}")
            failure = Failure(
                description=f"{why}; the run is {outcome.status}",
                metadata={"status": outcome.status, "evidence_dir": outcome.evidence_dir, "run_id": run.run_id},
                allow_retries=False,
            )
        if failure is not None:
            progress.say(f"run {run.run_id}: {failure.description}")
            raise failure


# The resources every step uses; the ops take them through one Services bundle (typed there).
STEP_RESOURCES = {"ops_db", "odoo_host", "artifact_store", "router", "settings"}


def step_op(step: Step, description: str) -> Any:
    """The op of one step of the steps table: named after it, its number in its description."""
    return op(name=step.name, description=f"Step {step.number}: {description}",
              required_resource_keys=STEP_RESOURCES)


def _services(context: OpExecutionContext) -> Services:
    res = context.resources
    return Services(ops_db=res.ops_db, host=res.odoo_host, store=res.artifact_store, router=res.router,
                    settings=res.settings)


@step_op(steps.CREATE_OPS_RUN, "validate inputs and the seven preconditions, create the ops run, lock production,"
                " write inputs.json and run_id.txt.")
def create_ops_run(context: OpExecutionContext, config: PromotionConfig) -> RunStarted:
    svc = _services(context)
    with progress.step(steps.CREATE_OPS_RUN):
        svc.ops_db.upgrade()
        raw = config.model_dump()
        check = None
        try:
            promotion = inputs.validate(raw)
            preflight = Preflight(svc.ops_db, svc.host, svc.store, promotion, svc.settings.min_free_space_factor,
                                  carried_parameters=tuple(svc.settings.carry_over_parameters), hosts=svc)
            preflight.run(stop_on_failure=True)
            failed = [r for r in preflight.results if not r.passed]
            if failed:
                check = (failed[0].name, failed[0].message)
                preflight.release()  # a later check failed after check 5 took the lock
        except inputs.InputRejected as exc:
            check = (exc.check, exc.message)
        started = datetime.now(UTC)
        if check is None:
            # Before the run's row: a run that could not write its evidence would stay `running` and block
            # every later promotion.
            try:
                evidence_mod.probe(evidence_mod.evidence_parent_for(svc.settings.evidence_root, started))
            except evidence_mod.EvidenceError as exc:
                check = ("evidence_dir", str(exc))
                preflight.release()
        if check is not None:
            message = redact_text(f"{check[0]}: {check[1]}")
            svc.ops_db.record_rejection(check[0], message, redact(inputs.printable(raw)))
            tag_outcome(context, "rejected", message)
            raise PromotionRejected(description=one_line(f"{inputs.REJECTED}{message}"), metadata={"check": check[0]},
                                    allow_retries=False)
        assert preflight.staging and preflight.prod and preflight.blue and preflight.lock
        if preflight.prod.require_approval:  # the environment requires it whatever the flag said: stored so
            promotion = promotion.model_copy(update={"require_approval": True})
        run_id = svc.ops_db.create_run(promotion.project_id, promotion.prod_env_id, promotion.user_id, {
            **promotion.model_dump(),  # every input, flat, as rollback_run.load_run reads them back
            "blue_deployment_id": preflight.blue.deployment_id,
            "worker_pid": os.getpid(),
        }, context.run_id)
        _LOCKS[run_id] = preflight.lock
        folder = evidence_dir_for(svc.settings.evidence_root, started, run_id)
        try:
            evidence = Evidence(folder)
            evidence.create()
            evidence.write_json(steps.INPUTS_JSON, {**promotion.model_dump(), "preflight": [
                {"check": r.name, "passed": r.passed, "message": r.message} for r in preflight.results]})
            evidence.write_text(steps.RUN_ID_TXT, run_id + "\n")
        except (OSError, evidence_mod.EvidenceError) as exc:
            # The probe passed but the folder went away (disk full, a remount): fail the run now, never leave it
            # `running`; nothing was touched yet, so there is nothing to roll back.
            message = f"evidence folder {folder} could not be written: {getattr(exc, 'strerror', None) or exc}"
            _release(run_id)
            svc.ops_db.mark_run_finished(run_id, "failed", metadata={"failure": message})
            tag_outcome(context, "failed", message)
            raise Failure(description=f"{steps.CREATE_OPS_RUN.name} failed: {message}; the run is failed",
                          metadata={"run_id": run_id}, allow_retries=False) from None
        svc.ops_db.set_run_evidence_dir(run_id, str(folder))
        svc.ops_db.add_event(run_id, steps.CREATE_OPS_RUN.name, "info", "preconditions passed; production locked")
        notify.send(svc, run_id, promotion.prod_env_id, "started")
        context.add_output_metadata(run_view.run_started(context, run_id, folder, preflight.blue.deployment_id,
                                                         promotion, preflight.results))
        return RunStarted(run_id=run_id, inputs=promotion, evidence_dir=str(folder), started_at=started,
                          staging=preflight.staging, prod=preflight.prod, blue=preflight.blue)


@step_op(steps.SNAPSHOT_STAGING, "snapshot staging into the green artifact (verified, registered); refuse Enterprise"
                " modules.")
def snapshot_staging(context: OpExecutionContext, run: RunStarted) -> StagingSnapshotTaken:
    svc = _services(context)
    with guarded(context, svc, run, steps.SNAPSHOT_STAGING):
        live = svc.ops_db.active_deployment(run.staging.environment_id)
        if live is None:
            raise StepFailed(f"staging {run.staging.environment_id} has no active deployment")
        artifact, facts = back_up(svc.host, svc.store, svc.ops_db, run.staging, live, "green", run.run_id,
                                  svc.remote_host(live))
        rails = guardrails.current()
        enterprise = guardrails.enterprise_modules(artifact.manifest.module_licenses, rails)
        Evidence(run.evidence_dir).write_json(steps.STAGING_SNAPSHOT_JSON, {
            "artifact_id": artifact.artifact_id, "artifact": artifact.model_dump(mode="json"), **facts,
            "enterprise_modules": enterprise, **odoo_aware.snapshot_report(svc, run, artifact)})
        svc.ops_db.merge_run_metadata(run.run_id, {"green_artifact_id": artifact.artifact_id})
        if enterprise and rails.forbid_enterprise_modules:
            raise StepFailed(f"forbid_enterprise_modules: the green artifact contains Enterprise modules"
                             f" {', '.join(enterprise)} (license {', '.join(rails.enterprise_licenses)})")
        context.add_output_metadata(run_view.artifact_taken("green", artifact, facts, run.evidence_dir, enterprise))
    return StagingSnapshotTaken(**dict(run), green_artifact=artifact)


@step_op(steps.BACKUP_PRODUCTION, "back up production (blue) into the rollback artifact, verified and registered.")
def backup_production(context: OpExecutionContext, snap: StagingSnapshotTaken) -> BlueBackedUp:
    svc = _services(context)
    with guarded(context, svc, snap, steps.BACKUP_PRODUCTION, green_artifact_id=snap.green_artifact.artifact_id):
        artifact, facts = back_up(svc.host, svc.store, svc.ops_db, snap.prod, snap.blue, "blue", snap.run_id,
                                  svc.remote_host(snap.blue))
        Evidence(snap.evidence_dir).write_json(steps.BLUE_BACKUP_JSON, {
            "artifact_id": artifact.artifact_id, "artifact": artifact.model_dump(mode="json"), **facts})
        svc.ops_db.merge_run_metadata(snap.run_id, {"blue_backup_id": artifact.artifact_id})
        context.add_output_metadata(run_view.artifact_taken("blue", artifact, facts, snap.evidence_dir))
    return BlueBackedUp(**dict(snap), blue_artifact=artifact)


@step_op(steps.RESTORE_GREEN, "restore the green artifact into a new database and filestore next to blue and start"
                " green's Odoo; blue is never touched.")
def restore_green(context: OpExecutionContext, backed: BlueBackedUp) -> GreenRestored:
    svc = _services(context)
    ids = {"green_artifact_id": backed.green_artifact.artifact_id, "blue_backup_id": backed.blue_artifact.artifact_id}
    evidence = Evidence(backed.evidence_dir)
    restore_run_id = svc.ops_db.create_run(backed.inputs.project_id, backed.prod.environment_id, backed.inputs.user_id,
                                       {"parent_run_id": backed.run_id, "artifact_id": ids["green_artifact_id"],
                                        "verify_post_restore": True, "rollback_on_failure": False}, context.run_id,
                                       operation_type="restore")
    try:
        with guarded(context, svc, backed, steps.RESTORE_GREEN, **ids):
            try:
                green, facts = restore_next_to_blue(svc, backed.prod, backed.green_artifact, backed.run_id,
                                                before_start=lambda g: odoo_aware.prepare_green(svc, backed, g))
            except Exception as exc:
                evidence.write_json(steps.GREEN_RESTORE_JSON, {"restore_run_id": restore_run_id, "status": "failed",
                                                           "error": f"{type(exc).__name__}: {exc}"})
                raise
            evidence.write_json(steps.GREEN_RESTORE_JSON, {"restore_run_id": restore_run_id, "status": "success",
                                                       "green": green.model_dump(), **facts})
    finally:
        status: FinalRunStatus = "success" if evidence.exists(steps.GREEN_RESTORE_JSON) and \
            evidence.read_json(steps.GREEN_RESTORE_JSON).get("status") == "success" else "failed"
        svc.ops_db.mark_run_finished(restore_run_id, status)
    context.add_output_metadata(run_view.green_restored(green, facts, backed.evidence_dir))
    return GreenRestored(**dict(backed), green=green, restore_checks=facts)


@step_op(steps.SMOKE_TEST_GREEN, "the five smoke tests on green, through the router's preview entry point.")
def smoke_test_green(context: OpExecutionContext, restored: GreenRestored) -> GreenSmokeTested:
    svc = _services(context)
    ids = {"green_artifact_id": restored.green_artifact.artifact_id,
           "blue_backup_id": restored.blue_artifact.artifact_id}
    evidence = Evidence(restored.evidence_dir)
    results = []
    gate: dict[str, Any] | None = None
    with guarded(context, svc, restored, steps.SMOKE_TEST_GREEN, **ids):
        state = None
        if restored.inputs.skip_smoke_tests:
            evidence.write_json(steps.SMOKE_TESTS_JSON, {"skipped": True, "results": [],
                                                     "reason": "skip_smoke_tests=true (not a production target)"})
        else:
            state = svc.router.set_preview(restored.prod.environment_id, svc.upstream(restored.green, "green"))
            suite = SmokeSuite(svc.host, restored.prod, restored.green, restored.green_artifact, state.preview_url,
                               blue_db=restored.blue.db_name, watched_parameters=svc.settings.carry_over_parameters,
                               via=svc.remote_host(restored.green))
            results = suite.run()
            settings_check = suite.unchanged()  # the smoke tests changed nothing that was carried over
            passed = all(r.passed for r in results) and settings_check["unchanged"]
            evidence.write_json(steps.SMOKE_TESTS_JSON, {"skipped": False, "passed": passed,
                                                         "target": state.preview_url,
                                                         "results": [r.model_dump() for r in results],
                                                         "carried_over_settings": settings_check})
            if not passed:
                failed = [f"{r.name} ({r.detail})" for r in results if not r.passed]
                if not settings_check["unchanged"]:
                    changed = sorted(settings_check["changed"])
                    failed.append(f"carried-over settings changed by the smoke tests: {changed}")
                raise StepFailed(f"smoke tests failed: {'; '.join(failed)}")
        if approval.required_by(restored) is not None:
            if state is None:  # no smoke tests put green there: the approver still gets to look at it
                state = svc.router.set_preview(restored.prod.environment_id, svc.upstream(restored.green, "green"))
            gate = _await_approval(context, svc, restored, state.preview_url, evidence)
    context.add_output_metadata({**run_view.smoke_tested(results, restored.inputs.skip_smoke_tests,
                                                         restored.evidence_dir), **run_view.approval(gate)})
    return GreenSmokeTested(**dict(restored), smoke_skipped=restored.inputs.skip_smoke_tests, smoke_results=results)


def _await_approval(context: OpExecutionContext, svc: Services, run: GreenRestored, preview_url: str,
                    evidence: Evidence) -> dict[str, Any]:
    """The approval gate (promotion/approval.py), shown in the UI by a run tag while it waits: the run list can be
    filtered on it, and the run's page shows it in its header. The gate's reminder lines reach the step's log (and
    `promote launch`) through the progress bridge; how it ended is in the step's output metadata and in
    smoke_tests.json. (An AssetObservation would need an asset key: it would put a phantom asset in the catalog of a
    code location that has none.)"""
    lock = _LOCKS.get(run.run_id)

    def keep_lock() -> None:
        if lock is not None and not _holds(lock):
            raise StepFailed(f"run {run.run_id} lost its environment lock while awaiting approval")

    def on_end(gate: dict[str, Any]) -> None:
        if gate["state"] == "approved":
            decision = f"approved by {gate['approved_by']}"
        else:
            decision = str(gate["state"]).replace("_", " ")
        _tag(context, {approval.TAG: "false", approval.DECISION_TAG: decision})
        evidence.write_json(steps.SMOKE_TESTS_JSON, {**evidence.read_json(steps.SMOKE_TESTS_JSON),
                                                     "approval": gate})

    _tag(context, {approval.TAG: "true"})
    return approval.await_approval(svc, run, preview_url, keep_lock, on_end)


def _tag(context: OpExecutionContext, tags: dict[str, str]) -> None:
    """Tags on the run (shown in the UI); a run storage that refuses them costs the tag, never the promotion."""
    try:
        context.instance.add_run_tags(context.run_id, tags)
    except Exception as exc:
        progress.say(f"      run tags {sorted(tags)} not set: {type(exc).__name__}: {redact_text(str(exc))}")


@step_op(steps.CUTOVER, "switch production's public entry point to green (cutover) and record it.")
def cutover(context: OpExecutionContext, tested: GreenSmokeTested) -> CutOver:
    svc = _services(context)
    ids = {"green_artifact_id": tested.green_artifact.artifact_id, "blue_backup_id": tested.blue_artifact.artifact_id}
    env_id = tested.prod.environment_id
    with guarded(context, svc, tested, steps.CUTOVER, **ids):
        before = svc.router.state(env_id)
        start = time.monotonic()
        after, fencing = odoo_aware.cutover_fenced(
            svc, tested, tested.green,
            lambda: switch_confirmed(svc.router, env_id, svc.upstream(tested.green, "green")))
        switch_ms = int((time.monotonic() - start) * 1000)
        timestamp = datetime.now(UTC)
        svc.ops_db.record_cutover(tested.blue.deployment_id, tested.green.deployment_id, tested.run_id, timestamp)
        Evidence(tested.evidence_dir).write_json(steps.CUTOVER_JSON, {
            "cutover_timestamp": timestamp.isoformat(), "router": svc.router.kind, "switch_ms": switch_ms, **fencing,
            "routing_before": before.model_dump(mode="json"), "routing_after": after.model_dump(mode="json")})
    context.add_output_metadata(run_view.cut_over(before, after, switch_ms, timestamp, tested.evidence_dir, fencing))
    return CutOver(**dict(tested), cutover_timestamp=timestamp, routing_before=before.model_dump(mode="json"),
                   routing_after=after.model_dump(mode="json"))


@step_op(steps.MONITOR_STABILITY, "watch green for the stability window, on every request it serves (the router's"
                " counts): HTTP error rate < 1%, 5xx and p95 within their settings, no database error, no crash.")
def monitor_stability(context: OpExecutionContext, cut: CutOver) -> StabilityWatched:
    svc = _services(context)
    ids = {"green_artifact_id": cut.green_artifact.artifact_id, "blue_backup_id": cut.blue_artifact.artifact_id,
           "cutover_timestamp": cut.cutover_timestamp.isoformat()}
    last_said = [0.0]

    def report(m: Any, left: float) -> None:
        if time.monotonic() - last_said[0] >= 5:
            last_said[0] = time.monotonic()
            progress.say(f"      stability: {m.requests} requests, error rate {m.http_error_rate:.2%},"
                         f" {left:.0f}s left")

    with guarded(context, svc, cut, steps.MONITOR_STABILITY, **ids):
        url = svc.router.state(cut.prod.environment_id).active_url

        def record(m: StabilityMetrics) -> None:  # also when an abort ends the window: what was seen until then
            Evidence(cut.evidence_dir).write_json(steps.STABILITY_METRICS_JSON,
                                                  {**m.model_dump(mode="json"), "target": url})

        # judged on the router's own counts of every request green serves, users' and the probe's
        metrics = watch(svc.host, cut.prod, cut.green, url, cut.inputs.stability_window_seconds, report,
                        stop_check=abort.checker(svc, cut.run_id), on_end=record, router=svc.router,
                        green_upstream=svc.upstream(cut.green, "green"), thresholds=svc.settings.stability,
                        green_host=svc.process_host(cut.green))
        if not metrics.passed:
            raise StepFailed(f"stability: {metrics.reason}")
    context.add_output_metadata(run_view.stability_watched(metrics, url, cut.evidence_dir))
    return StabilityWatched(**dict(cut), stability=metrics)


@step_op(steps.FINALIZE, "mark the run successful, schedule blue's deletion after the rollback window, write the"
                " final status and the summary.")
def finalize(context: OpExecutionContext, watched: StabilityWatched) -> PromotionOutcome:
    svc = _services(context)
    ids = {"green_artifact_id": watched.green_artifact.artifact_id, "blue_backup_id": watched.blue_artifact.artifact_id,
           "cutover_timestamp": watched.cutover_timestamp.isoformat()}
    evidence = Evidence(watched.evidence_dir)
    with guarded(context, svc, watched, steps.FINALIZE, **ids):
        evidence.write_json(steps.ROLLBACK_JSON, {"triggered": False, "reason": "no failure detected"})
        outcome = PromotionOutcome(run_id=watched.run_id, status="success", evidence_dir=watched.evidence_dir,
                                   blue_backup_id=ids["blue_backup_id"], green_artifact_id=ids["green_artifact_id"],
                                   cutover_timestamp=ids["cutover_timestamp"])
        hours = watched.inputs.rollback_window_hours
        summary = write_final(evidence, outcome, watched.started_at, watched.inputs.model_dump(), extra={
            "blue_deletion_scheduled_in_hours": hours, "serving": watched.green.deployment_id},
            retention=svc.settings.retention, live=LiveAfter(blue_deployment=watched.blue.deployment_id,
                                                             green_deployment=watched.green.deployment_id,
                                                             window_hours=hours))
        missing = evidence.missing()
        if missing and guardrails.current().evidence_required:
            raise StepFailed(f"evidence_required: missing {', '.join(missing)}")
        blue_deletion = TaskRequest(task_type="delete_backup", delay=timedelta(hours=hours), run_id=watched.run_id,
                                    metadata={"artifact_id": ids["blue_backup_id"],
                                              "deployment_id": watched.blue.deployment_id,
                                              "db_name": watched.blue.db_name})
        if not svc.ops_db.mark_run_succeeded(watched.run_id, watched.evidence_dir, then=blue_deletion):
            raise StepFailed(f"run {watched.run_id} is no longer running (the safety net took it over)")
        svc.ops_db.add_event(watched.run_id, steps.FINALIZE.name, "info",
                             f"promotion succeeded; blue deletion in {hours} h")
    _release(watched.run_id)
    tag_outcome(context, "success", f"{watched.green.deployment_id} live since {ids['cutover_timestamp']};"
                                     f" run {watched.run_id}")
    # After the run is recorded a success and its lock released: the message waits on nothing the run needs.
    notify.send(svc, watched.run_id, watched.prod.environment_id, "success",
                {"serving": watched.green.deployment_id, "blue_deletion_in_hours": hours})
    context.add_output_metadata(run_view.finalized(summary, outcome, evidence.paths()))
    return outcome
