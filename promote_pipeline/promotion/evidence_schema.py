"""The evidence files as a reader may rely on them: one strict model per file, and ``validate_folder``.

What the writers (the steps, ``failure``, ``rollback_run``, ``cleanup``) put in each file, typed for whoever reads
it back (an auditor's script, the tests): verdicts are booleans, never a string such as ``"[REDACTED]"``; counts
are integers ≥ 0; ids have their shapes (run ids, artifact ids); checksums are sha256 hex; timestamps are ISO-8601
with a timezone. Validation is strict (no coercion: ``"true"`` is not ``true``) and read from the JSON text, as a
reader would. Extra keys are allowed (a file may say more), but every string anywhere in a file that was blanked
by redaction must sit under a key that names a secret: redaction that hides a verdict, an id or a message fails
here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt, StringConstraints, model_validator

from promote_pipeline.promotion import steps
from promote_pipeline.promotion.preflight import CHECKS
from resources.notifiers import NotificationEvent
from resources.redaction import REDACTED, SECRET_KEYS

RunId = Annotated[str, StringConstraints(pattern=r"^run_\d{8}T\d{6}_[0-9a-f]{8}$")]
ArtifactId = Annotated[str, StringConstraints(pattern=r"^art_(green|blue)_[A-Za-z0-9_]+_\d{8}T\d{6}_[0-9a-f]{8}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
GitSha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
DAGSTER_RUN_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"  # a UUID, as Dagster makes them
Name = Annotated[str, StringConstraints(min_length=1)]
Count = NonNegativeInt
SMOKE_TESTS = ("health_check", "database_connectivity", "module_integrity", "filestore_accessibility",
               "user_authentication")


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class EvidenceFile(Strict):
    schema_version: Literal[1]


class NotReached(EvidenceFile):
    """What a step that was not reached writes in its file."""

    model_config = ConfigDict(strict=True, extra="forbid")
    reached: Literal[False]
    reason: Name


# -- step 1 -----------------------------------------------------------------------------------------------------
class PreflightCheck(Strict):
    check: Name
    passed: bool
    message: str


class InputsEvidence(EvidenceFile):
    project_id: Name
    staging_env_id: Name
    prod_env_id: Name
    user_id: Name
    rollback_window_hours: Annotated[int, Field(ge=1, le=168)]
    skip_smoke_tests: bool
    auto_rollback_on_failure: bool
    carry_over_settings: bool
    stability_window_seconds: Count
    # Runs of older code wrote neither: no gate then.
    require_approval: bool = False
    approval_timeout_seconds: Annotated[int, Field(ge=1, le=86400)] = 3600
    accept_drift: bool
    freeze_blue: bool
    preflight: list[PreflightCheck]

    @model_validator(mode="after")
    def _every_precondition(self) -> InputsEvidence:
        names = [c.check for c in self.preflight]
        if names != list(CHECKS):
            raise ValueError(f"preflight must list every precondition in order {list(CHECKS)}, got {names}")
        return self


# -- steps 2 and 3: the artifact contract --------------------------------------------------------------------------
class DumpFile(Strict):
    name: Name
    sha256: Sha256
    size_bytes: Count


class DbDump(Strict):
    path: Name
    format: Literal["directory"]
    sha256: Sha256
    size_bytes: Count
    pg_dump_version: Name
    compression: Count
    files: Annotated[list[DumpFile], Field(min_length=1)]


class FilestoreArchive(Strict):
    path: Name
    format: Literal["cas-sha1"]
    sha256: Sha256
    size_bytes: Count
    file_count: Count
    index_bytes: Count
    store: str
    new_objects: Count
    new_bytes: Count


class Manifest(Strict):
    odoo_version: Name
    addons_hash: Sha256
    modules_installed: dict[str, str]
    module_licenses: dict[str, str]
    db_major_version: Count
    git_commit_sha: GitSha | None
    neutralized: bool
    attachment_count: Count


class SourceEnv(Strict):
    environment_id: Name
    kind: Name
    db: Name
    db_dsn_ref: Name | None = None


class Artifact(Strict):
    contract_version: Literal["v1"]
    artifact_id: ArtifactId
    created_at: AwareDatetime
    source_env: SourceEnv
    db_dump: DbDump
    filestore: FilestoreArchive
    manifest: Manifest


class DumpVerification(Strict):
    sha256: Sha256
    size_bytes: Count
    files: Count
    hashed: bool
    ok: bool


class Verification(Strict):
    mode: Literal["sizes", "full", "deep"]
    db_dump: DumpVerification
    filestore: dict[str, Any]


class ArtifactEvidence(EvidenceFile):
    """blue_backup.json, and the first part of staging_snapshot.json."""

    artifact_id: ArtifactId
    artifact: Artifact
    verification: Verification
    total_seconds: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _one_artifact(self) -> ArtifactEvidence:
        if self.artifact_id != self.artifact.artifact_id:
            raise ValueError(f"artifact_id {self.artifact_id} is not the artifact's ({self.artifact.artifact_id})")
        if self.verification.db_dump.sha256 != self.artifact.db_dump.sha256 or not self.verification.db_dump.ok:
            raise ValueError("the verification does not confirm the dump's checksum")
        return self


class ModuleDiff(Strict):
    added: list[str]
    removed: list[str]
    version_changed: dict[str, dict[str, str]]


class DriftTable(Strict):
    rows: Annotated[int, Field(gt=0)]
    ids: Name
    last_write: Name


class Drift(Strict):
    """Production's writes since staging's data left it (promotion/drift.py)."""

    known: bool
    checked_at: Name
    since: Name | None
    staging_copied_at: Name | None
    copy_run_id: Name | None
    live_cutover_at: Name | None
    live_run_id: Name | None
    tables: dict[str, DriftTable]
    total: Count
    reason: Name | None

    @model_validator(mode="after")
    def _counted_or_why(self) -> Drift:
        if self.known != (self.since is not None) or (not self.known and not self.reason):
            raise ValueError("a known drift has a baseline; an unknown one says why")
        if self.total != sum(t.rows for t in self.tables.values()):
            raise ValueError("total is the sum of the tables' rows")
        return self


class LostWrites(Drift):
    in_words: Name


class BlueFreeze(Strict):
    frozen: bool
    frozen_at: Name | None = None
    sessions_ended: Count | None = None
    relations_revoked: Count | None = None  # tables and sequences whose write privileges blue's role lost
    read_only_seconds: Annotated[float, Field(ge=0)] | None = None
    thawed_at: Name | None = None


class StagingSnapshotEvidence(ArtifactEvidence):
    enterprise_modules: list[str]
    module_diff: ModuleDiff
    production_drift: Drift


# -- step 4 -------------------------------------------------------------------------------------------------------
class Deployment(Strict):
    deployment_id: Name
    environment_id: Name
    db_name: Name
    http_port: Annotated[int, Field(gt=0, lt=65536)]
    pid: Annotated[int, Field(gt=0)] | None
    state: Literal["active", "standby", "retired", "deleted"]


class GreenRestoreEvidence(EvidenceFile):
    restore_run_id: RunId
    status: Literal["success", "failed"]
    green: Deployment | None = None
    error: str | None = None
    checks: dict[str, bool] | None = None

    @model_validator(mode="after")
    def _says_how(self) -> GreenRestoreEvidence:
        if self.status == "success" and (self.green is None or not self.checks or not all(self.checks.values())):
            raise ValueError("a successful restore names green and passed every post-restore check")
        if self.status == "failed" and not self.error:
            raise ValueError("a failed restore says why")
        return self


# -- step 5 -------------------------------------------------------------------------------------------------------
class SmokeResult(Strict):
    name: Literal["health_check", "database_connectivity", "module_integrity", "filestore_accessibility",
                  "user_authentication"]
    passed: bool
    detail: str
    duration_ms: Count


class CarriedOverCheck(Strict):
    unchanged: bool
    changed: dict[str, Any]
    watched: Count


class ApprovalEvidence(Strict):
    """The approval gate after the smoke tests (promotion/approval.py), when the run had one."""

    required_by: Literal["flag", "environment"]
    state: Literal["waiting", "approved", "timed_out", "aborted"]
    preview_url: str
    timeout_seconds: Annotated[int, Field(ge=1, le=86400)]
    since: str
    deadline: str
    decided_at: str | None = None
    approved_by: str | None = None
    waited_seconds: Annotated[float, Field(ge=0)] | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _approved_names_who(self) -> ApprovalEvidence:
        if (self.state == "approved") != (self.approved_by is not None):
            raise ValueError("approved_by is given exactly when the state is approved")
        return self


class SmokeTestsEvidence(EvidenceFile):
    skipped: bool
    passed: bool | None = None
    target: str | None = None
    results: list[SmokeResult]
    carried_over_settings: CarriedOverCheck | None = None
    approval: ApprovalEvidence | None = None

    @model_validator(mode="after")
    def _verdict_from_results(self) -> SmokeTestsEvidence:
        if self.skipped:
            return self
        if [r.name for r in self.results] != list(SMOKE_TESTS) or self.carried_over_settings is None:
            raise ValueError(f"the five smoke tests in order {list(SMOKE_TESTS)} and the settings check")
        if self.passed != (all(r.passed for r in self.results) and self.carried_over_settings.unchanged):
            raise ValueError("passed must be true exactly when every smoke test passed and no setting changed")
        return self


# -- step 6 -------------------------------------------------------------------------------------------------------
class Upstream(Strict):
    name: Name
    colour: Literal["blue", "green"]
    host: Name
    http_port: Annotated[int, Field(gt=0, lt=65536)]
    websocket_port: Annotated[int, Field(gt=0, lt=65536)]


class Routing(Strict):
    environment_id: Name
    router: Literal["haproxy", "nginx"]
    active: Upstream | None
    preview: Upstream | None
    active_url: Name
    preview_url: Name


class Flips(Strict):
    crons_on: Count
    crons_off: Count
    mail_servers_on: Count
    mail_servers_off: Count


class ActiveCounts(Strict):
    active_crons: Count
    active_mail_servers: Count


class CutoverFence(Strict):
    blue_turned_off: Flips
    green_turned_on: Flips
    active_after: dict[Literal["blue", "green"], ActiveCounts]


class CutoverEvidence(EvidenceFile):
    cutover_timestamp: AwareDatetime
    router: Literal["haproxy", "nginx"]
    switch_ms: Count
    fence: CutoverFence
    watermarks_tables: Count
    blue_freeze: BlueFreeze
    last_drift_check: Drift
    production_writes_not_on_green: LostWrites
    routing_before: Routing
    routing_after: Routing


# -- step 7 -------------------------------------------------------------------------------------------------------
class StabilityError(Strict):
    """One error of the window: a failed request (path and status), a probe's failure, a crash."""

    at: AwareDatetime
    source: Literal["http", "green_db", "db_probe", "process", "traffic", "router"]
    detail: Name
    counted: bool
    path: Annotated[str, StringConstraints(pattern=r"^/")] | None = None
    status: Annotated[int, Field(ge=100, le=599)] | None = None

    @model_validator(mode="after")
    def _a_failed_request_says_where(self) -> StabilityError:
        if self.source == "traffic" and (self.path is None or self.status is None):
            raise ValueError("a failed request the router logged names its path and status")
        return self


class StabilityTraffic(Strict):
    """The router's own figures for green."""

    router: Literal["haproxy", "nginx"]
    source: Name
    requests: Count
    responses_1xx: Count
    responses_2xx: Count
    responses_3xx: Count
    responses_4xx: Count
    responses_5xx: Count
    connection_errors: Count
    timed_requests: Count
    p95_ms: Annotated[float, Field(ge=0)] | None
    max_ms: Annotated[float, Field(ge=0)] | None


class StabilityThresholdsEvidence(Strict):
    max_error_rate: Annotated[float, Field(gt=0, le=1)]
    max_5xx_responses: Count
    max_p95_ms: Annotated[int, Field(ge=1)]
    min_timed_requests: Annotated[int, Field(ge=1)]


class StabilityEvidence(EvidenceFile):
    window_seconds: Count
    samples: Count
    requests: Count
    http_errors: Count
    http_error_rate: Annotated[float, Field(ge=0, le=1)]
    db_connection_errors: Count
    process_crashes: Count
    passed: bool
    reason: str | None
    target: Name
    errors: list[StabilityError] = Field(default_factory=list)
    errors_not_listed: Count = 0
    # how green was judged (absent in files written before it was judged on real traffic)
    judged_on: Literal["router", "probe"] = "probe"
    http_5xx: Count = 0
    p95_ms: Annotated[float, Field(ge=0)] | None = None
    probe_requests: Count = 0
    probe_unanswered: Count = 0
    traffic: StabilityTraffic | None = None
    thresholds: StabilityThresholdsEvidence | None = None

    @model_validator(mode="after")
    def _reason_when_failed(self) -> StabilityEvidence:
        if self.http_errors > self.requests or (not self.passed and not self.reason):
            raise ValueError("errors within requests, and a failed window says why")
        if self.judged_on == "router" and self.traffic is None:
            raise ValueError("a window judged on the router's counts carries them")
        if self.traffic is not None and self.http_5xx > self.traffic.requests:
            raise ValueError("5xx answers within the requests the router counted")
        return self


# -- step 8 (or the failure handling) -----------------------------------------------------------------------------
class RollbackNotTriggered(EvidenceFile):
    triggered: Literal[False]
    reason: Name
    failed_step: Name | None = None
    blue_untouched: bool | None = None
    live_routing: Routing | None = None
    blue_freeze: BlueFreeze | None = None


class Problem(Strict):
    part: Literal["preview_reset", "unfence", "thaw", "green_stop", "green_cleanup"]
    error: Name
    deployment: Name | None = None


class SafeStateVerification(Strict):
    safe: bool
    checks: dict[str, bool]
    router_active: str | None
    at: AwareDatetime
    requested_by: Name


class RollbackCompleted(EvidenceFile):
    triggered: Literal[True]
    completed: Literal[True]
    reason: Name
    router_switched_back: bool
    traffic_on_blue_at: AwareDatetime
    detection_to_blue_ms: Count
    routing_before: Routing
    routing_after: Routing
    blue_deployment: Name
    green_deployment: Name | None
    green_stopped: bool
    green_database_kept: bool
    green_kept_until: AwareDatetime | None
    fence: dict[str, Any]
    writes_on_green: dict[str, dict[str, Count]]
    writes_on_green_total: Count
    problems: list[Problem]
    notes: list[str]
    blue_freeze: BlueFreeze | None = None
    failed_step: Name | None = None
    event_log_error: Name | None = None
    requested_by: Name | None = None
    manual: bool | None = None
    verifications: list[SafeStateVerification] = Field(default_factory=list)

    @model_validator(mode="after")
    def _on_blue(self) -> RollbackCompleted:
        active = self.routing_after.active
        if active is None or active.name != self.blue_deployment:
            raise ValueError("a completed rollback's routing_after must name blue as the active upstream")
        if self.green_database_kept != (self.green_kept_until is not None):
            raise ValueError("a kept green says until when, and only then")
        return self


class RollbackFailed(EvidenceFile):
    triggered: Literal[True]
    completed: Literal[False]
    error: Name
    reason: Name
    failed_step: Name
    event_log_error: Name | None = None


class NotificationTry(Strict):
    attempt: Annotated[int, Field(ge=1)]
    at: AwareDatetime
    delivered: bool
    error: Name | None


class NotificationOutcome(Strict):
    """One event announced to one target (promotion/notify.py): every try, and whether one got through."""

    delivery_id: Name
    event: NotificationEvent
    kind: Literal["webhook", "apprise"]
    target: Name
    delivered: bool
    tries: list[NotificationTry]

    @model_validator(mode="after")
    def _delivered_by_a_try(self) -> NotificationOutcome:
        if not self.tries or self.delivered != self.tries[-1].delivered:
            raise ValueError("an outcome has its tries, the last of which says whether it got through")
        return self


class FinalStatusEvidence(EvidenceFile):
    run_id: RunId
    status: Literal["success", "failed", "rolled_back"]
    evidence_dir: Name
    blue_backup_id: ArtifactId | None
    green_artifact_id: ArtifactId | None
    cutover_timestamp: AwareDatetime | None
    started_at: AwareDatetime
    completed_at: AwareDatetime
    duration_seconds: Annotated[float, Field(ge=0)]
    failed_step: Name | None
    reason: str | None
    notifications: list[NotificationOutcome] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> FinalStatusEvidence:
        if self.completed_at < self.started_at:
            raise ValueError("completed_at before started_at")
        if self.status == "success" and (self.failed_step or self.cutover_timestamp is None):
            raise ValueError("a success has no failed step and a cutover")
        return self


# -- outside a run's folder ----------------------------------------------------------------------------------------
class CleanupTaskEvidence(EvidenceFile):
    """``<root>/<YYYYMMDD-HHMM>/cleanup/task_<id>.json``: one executed scheduled task."""

    task_id: Annotated[int, Field(gt=0)]
    task_type: Name
    run_id: RunId | None
    attempt: Count
    metadata: dict[str, Any]
    worker: Name
    started_at: AwareDatetime
    finished_at: AwareDatetime
    status: Literal["done", "cancelled", "retry", "failed"]
    done: list[Name] | None = None
    error: Name | None = None

    @model_validator(mode="after")
    def _says_what(self) -> CleanupTaskEvidence:
        if (self.status == "done") != (self.done is not None) or (self.status != "done" and not self.error):
            raise ValueError("a done task lists what it did; any other says why")
        return self


MODELS: dict[str, type[EvidenceFile]] = {
    steps.INPUTS_JSON: InputsEvidence,
    steps.STAGING_SNAPSHOT_JSON: StagingSnapshotEvidence,
    steps.BLUE_BACKUP_JSON: ArtifactEvidence,
    steps.GREEN_RESTORE_JSON: GreenRestoreEvidence,
    steps.SMOKE_TESTS_JSON: SmokeTestsEvidence,
    steps.CUTOVER_JSON: CutoverEvidence,
    steps.STABILITY_METRICS_JSON: StabilityEvidence,
    steps.FINAL_STATUS_JSON: FinalStatusEvidence,
}
# Files a step writes "not reached" in when the run stopped before it (never step 1's, nor final_status.json).
MAY_BE_NOT_REACHED = frozenset({steps.STAGING_SNAPSHOT_JSON, steps.BLUE_BACKUP_JSON, steps.GREEN_RESTORE_JSON,
                                steps.SMOKE_TESTS_JSON, steps.CUTOVER_JSON, steps.STABILITY_METRICS_JSON})
SUMMARY_WORDS = {"success": "SUCCESS", "failed": "FAILED", "rolled_back": "ROLLED BACK"}


def redacted_outside_secrets(data: Any, key: str = "") -> list[str]:
    """Where a value was blanked under a key that does not name a secret (the path of each)."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in redacted_outside_secrets(v, f"{key}.{k}" if key else str(k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in redacted_outside_secrets(v, f"{key}[{i}]")]
    leaf = key.rsplit(".", 1)[-1].split("[", 1)[0].lower().replace("-", "_")
    if isinstance(data, str) and data == REDACTED and leaf not in SECRET_KEYS:
        return [key]
    return []


def validate_json(model: type[EvidenceFile], text: str) -> EvidenceFile:
    """One file's text against its model, strictly; also refuses a value blanked outside a secret's key."""
    blanked = redacted_outside_secrets(json.loads(text))
    if blanked:
        raise ValueError(f"redacted outside a secret's key: {blanked}")
    return model.model_validate_json(text)


def rollback_model(text: str) -> type[EvidenceFile]:
    data = json.loads(text)
    if data.get("triggered") is False:
        return RollbackNotTriggered
    return RollbackCompleted if data.get("completed") is True else RollbackFailed


def validate_folder(folder: Path, run_id: str, status: Literal["success", "failed", "rolled_back"],
                    dead_run: bool = False) -> list[str]:
    """Every evidence file of one run against its model, and against each other (the run, how it ended); raises
    ValueError (pydantic's ValidationError is one) naming the file. Returns the names checked.

    ``dead_run``: the run was completed by the rollback job after its worker died, possibly inside step 1, before
    it wrote inputs.json (which then says "not reached"); a run that ended in its own process always wrote it."""
    may_be_not_reached = MAY_BE_NOT_REACHED | ({steps.INPUTS_JSON} if dead_run else set())
    checked = []
    models: dict[str, EvidenceFile] = {}
    for name in steps.evidence_files():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{name}: missing")
        text = path.read_text()
        try:
            if name == steps.RUN_ID_TXT:
                if text != f"{run_id}\n":
                    raise ValueError(f"holds {text!r}, not the run id {run_id} and a newline")
            elif name == steps.PROMOTION_SUMMARY_MD:
                if not text.startswith(f"# Promotion {run_id}: {SUMMARY_WORDS[status]}\n"):
                    raise ValueError(f"does not start with the run's title ({text.splitlines()[0]!r})")
            elif name in may_be_not_reached and json.loads(text).get("reached") is False:
                if status == "success":
                    raise ValueError("a successful run reached every step")
                validate_json(NotReached, text)
            else:
                model = rollback_model(text) if name == steps.ROLLBACK_JSON else MODELS[name]
                models[name] = validate_json(model, text)
        except ValueError as exc:
            raise ValueError(f"{folder.name}/{name}: {exc}") from exc
        checked.append(name)
    final = models[steps.FINAL_STATUS_JSON]
    assert isinstance(final, FinalStatusEvidence)
    rollback = models[steps.ROLLBACK_JSON]
    if final.run_id != run_id or final.status != status:
        raise ValueError(f"final_status.json: run {final.run_id} {final.status}, expected {run_id} {status}")
    expected: dict[str, tuple[type[EvidenceFile], ...]] = {
        "success": (RollbackNotTriggered,), "rolled_back": (RollbackCompleted,),
        "failed": (RollbackNotTriggered, RollbackFailed)}
    if not isinstance(rollback, expected[status]):
        raise ValueError(f"rollback.json: a {type(rollback).__name__} for a run that ended {status}")
    return checked
