"""Typed values that flow between the eight steps of a promotion.

Each step's output extends the previous step's (class inheritance), so the dependency graph
of the job *is* the step order and every op sees, with types, all that came before it.
None of these models holds a secret: they carry secret *references* only, which is what makes
them safe to put in Dagster's event log and in evidence.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from promote_pipeline.promotion.inputs import PromotionInputs
from promote_pipeline.promotion.settings import StabilityThresholds
from resources.ops_db import DeploymentRecord, EnvironmentRecord

CONTRACT_VERSION = "v1"


# -- the artifact contract (v1): a backup's output is exactly a restore's input -------------------
class SourceEnv(BaseModel):
    environment_id: str
    kind: str
    db: str
    # Staging's and production's databases may live on different servers: the artifact says which one it was
    # dumped from (the reference's name, never the DSN). None on artifacts made before it was recorded.
    db_dsn_ref: str | None = Field(default=None, description="Secret reference of the server the dump was taken"
                                                             " from (its name, not the DSN).")


class DumpFile(BaseModel):
    """One file of a directory-format dump, hashed while pg_dump wrote it."""

    name: str
    sha256: str
    size_bytes: int


class DbDump(BaseModel):
    """``pg_dump -Fd`` (parallel, fast compression): ``path`` is the dump's directory.

    ``sha256`` digests the sorted ``"<sha256>  <size>  <name>"`` lines of ``files``, so one value stands
    for the whole directory while each file keeps its own checksum (a mismatch names the file).
    """

    path: str
    format: Literal["directory"] = "directory"
    sha256: str
    size_bytes: int
    pg_dump_version: str
    compression: int = 1
    files: list[DumpFile] = Field(default_factory=list)


class FilestoreArchive(BaseModel):
    """The filestore as a content-addressed index: ``path`` is ``filestore.index``, one line per file
    (``<sha1> <size> <relative path>``), and the bytes live once in the store's object folder ``store``
    (``<store>/<sha1[:2]>/<sha1>``), shared by every artifact that holds the same content.

    ``sha256``/``index_bytes`` are the index file's; ``size_bytes``/``file_count`` the filestore's content.
    ``new_objects``/``new_bytes`` say what this backup had to add to the store.
    """

    path: str
    format: Literal["cas-sha1"] = "cas-sha1"
    sha256: str
    size_bytes: int
    file_count: int
    index_bytes: int = 0
    store: str = ""
    new_objects: int = 0
    new_bytes: int = 0


class Manifest(BaseModel):
    odoo_version: str
    addons_hash: str
    modules_installed: dict[str, str]
    module_licenses: dict[str, str] = Field(default_factory=dict)
    db_major_version: int
    git_commit_sha: str | None
    neutralized: bool
    attachment_count: int = 0


class Artifact(BaseModel):
    contract_version: str = CONTRACT_VERSION
    artifact_id: str
    created_at: datetime
    source_env: SourceEnv
    db_dump: DbDump
    filestore: FilestoreArchive
    manifest: Manifest




# -- step outputs ----------------------------------------------------------------------------------
class RunStarted(BaseModel):
    """Step 1: the ops run exists, the environment is locked, inputs.json and run_id.txt written."""

    run_id: str
    inputs: PromotionInputs
    evidence_dir: str
    started_at: datetime
    staging: EnvironmentRecord
    prod: EnvironmentRecord
    blue: DeploymentRecord


class StagingSnapshotTaken(RunStarted):
    """Step 2: the green artifact (staging snapshot), verified and registered."""

    green_artifact: Artifact


class BlueBackedUp(StagingSnapshotTaken):
    """Step 3: the blue artifact (production backup, the rollback target), verified and registered."""

    blue_artifact: Artifact


class GreenRestored(BlueBackedUp):
    """Step 4: green runs next to blue, on its own database and filestore."""

    green: DeploymentRecord
    restore_checks: dict[str, Any]


class SmokeResult(BaseModel):
    name: str
    passed: bool
    detail: str
    duration_ms: int


class GreenSmokeTested(GreenRestored):
    """Step 5: the five smoke tests passed on green (or were skipped, which the evidence says)."""

    smoke_skipped: bool
    smoke_results: list[SmokeResult]


class CutOver(GreenSmokeTested):
    """Step 6: the public entry point serves green."""

    cutover_timestamp: datetime
    routing_before: dict[str, Any]
    routing_after: dict[str, Any]


StabilitySource = Literal["http", "green_db", "db_probe", "process", "traffic", "router"]


class StabilityEvent(BaseModel):
    """One error the stability window saw, when and from where.

    ``source``: ``http`` (the request through the router: a 5xx from green, or the monitor's own client failing
    to get any answer), ``green_db`` (green's own answer says its database is unreachable), ``db_probe`` (the
    monitor's own ``SELECT 1`` on green's database), ``process`` (green's process is gone), ``traffic`` (a request
    green failed, users' or the probe's, as the router logged it), ``router`` (the router's counters could not be
    read). ``counted`` is false for a failure of the monitor's own probe that an immediate retry did not confirm,
    and for an unread router: it is recorded, not held against green. ``path`` and ``status`` are those of the
    failed request, where there was one.
    """

    at: datetime
    source: StabilitySource
    detail: str
    counted: bool
    path: str | None = None
    status: int | None = None


class RouterTraffic(BaseModel):
    """The router's own figures for green over the window (``RouterResource.traffic_since``)."""

    router: str
    source: str = Field(description="How the router was read.")
    requests: int = Field(description="Every request the router sent green, users' and the probe's.")
    responses_1xx: int
    responses_2xx: int
    responses_3xx: int
    responses_4xx: int
    responses_5xx: int
    connection_errors: int = Field(description="Requests green never answered (the client got the router's error).")
    timed_requests: int = Field(description="Requests the response times are over.")
    p95_ms: float | None
    max_ms: float | None


class StabilityMetrics(BaseModel):
    """``requests`` and ``watched_seconds`` are those of the window actually watched: an early verdict or an abort
    ends it before ``window_seconds``, and ``ended_early`` says so."""

    window_seconds: int
    samples: int
    requests: int
    http_errors: int
    http_error_rate: float
    db_connection_errors: int
    process_crashes: int
    passed: bool
    reason: str | None = None
    started_at: datetime | None = None
    watched_seconds: float = 0.0
    ended_early: bool = False
    unconfirmed_probe_failures: int = 0
    errors: list[StabilityEvent] = Field(default_factory=list)
    errors_not_listed: int = 0
    judged_on: Literal["router", "probe"] = Field(
        default="probe", description="router: requests and errors are the router's counts for green (users' and the"
        " probe's requests); probe: the router could not be read, only the probe's requests are counted.")
    http_5xx: int = Field(default=0, description="5xx answers green gave in the window.")
    p95_ms: float | None = Field(default=None, description="95th percentile of green's request times (ms).")
    probe_requests: int = Field(default=0, description="The monitor's own requests (one per sample).")
    probe_unanswered: int = Field(default=0, description="Probe requests that got no answer from the router, twice:"
                                  " counted as errors on top of the router's figures, which never saw them.")
    traffic: RouterTraffic | None = None
    thresholds: StabilityThresholds = Field(default_factory=StabilityThresholds)


class StabilityWatched(CutOver):
    """Step 7: green held steady for the stability window."""

    stability: StabilityMetrics


class PromotionOutcome(BaseModel):
    """The seed's outputs object."""

    run_id: str
    status: Literal["success", "failed", "rolled_back"]
    evidence_dir: str
    blue_backup_id: str | None
    green_artifact_id: str | None
    cutover_timestamp: str | None


# -- artifact retention ----------------------------------------------------------------------------------
class ArtifactVerdict(BaseModel):
    """What the retention rule says of one artifact (a row of ``ops.artifacts``, or a folder with none)."""

    artifact_id: str
    environment_id: str | None = Field(description="Where it was taken (None: a folder with no ops row).")
    role: Literal["green", "blue"] | None
    run_id: str | None = Field(description="The run that took it.")
    run_status: str | None
    state: Literal["stored", "missing", "orphan", "leftover"] = Field(
        description="stored: row and folder; missing: a row whose folder is gone; orphan: a folder with no row (a"
        " crash mid-backup); leftover: a folder whose row says deleted (a deletion cut short).")
    size_bytes: int = Field(description="Its folder on disk plus the filestore content its index names (shared"
                            " objects counted in every artifact naming them).")
    created_at: datetime | None
    keep: bool
    retained_until: datetime | None = Field(description="When the rule lets it go (None: kept for as long as the"
                                            " reason holds, or going now).")
    why: str = Field(description="The rule that keeps it, or the one that lets it go.")


class PruneReport(BaseModel):
    """What ``retention.prune`` deleted (or, in a dry run, would delete) and the space that frees."""

    dry_run: bool
    going: list[ArtifactVerdict]
    kept: int = Field(description="Artifacts kept.")
    folder_bytes: int = Field(description="Bytes of the going artifacts' own folders (dumps, indexes).")
    object_bytes: int = Field(description="Bytes of the filestore objects no remaining artifact names.")
    objects: int = Field(description="How many such objects.")
    failures: list[str] = Field(default_factory=list, description="Deletions that failed, one line each.")
    skipped: list[str] = Field(default_factory=list, description="Artifacts the rule let go but that became needed"
                               " (or were deleted by another worker) before this pass took them.")

    @property
    def freed_bytes(self) -> int:
        return self.folder_bytes + self.object_bytes


def human_size(size: int) -> str:
    """A byte count as an operator reads it (run view, `promote artifacts`)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover
