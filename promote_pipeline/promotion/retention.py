"""Artifact retention: which artifacts the store keeps, for how long, and the pass that deletes the rest.

Every artifact goes by one rule (``settings.retention``), checked in this order; the first that applies decides:

1. kept while the run that took it is still running (it restores from its artifacts);
2. kept while a deployment restored from it is not deleted (production runs on one of them);
3. a blue backup whose deletion is pending (a successful run's, at the end of its rollback window) is kept until
   that task deletes it with blue's deployment;
4. the blue backup of a run whose green an environment runs on now (a failed run left serving, with
   ``--no-auto-rollback``) is kept while that lasts: a rollback is still ahead;
5. a row whose folder is gone is marked deleted (nothing to free), unless the store holds no objects at all (then
   ``artifact_root`` is more likely wrong than every folder gone, and the row is kept);
6. any other blue backup (of a failed or rolled-back run; of a success whose deletion task failed) is kept
   ``blue_keep_days`` after its run ended (a success: its rollback window);
7. a green snapshot is kept while it is among the ``green_keep_last`` newest of its staging environment, and at
   least ``green_keep_days`` after it was taken;
8. a folder with no ops row (a crash mid-backup) is swept ``orphan_grace_hours`` after its last change, never
   while a run that started before that change still runs; a folder whose row says deleted (a deletion cut
   short) as long after its row was marked. A folder whose name the store would never give (``lost+found`` of
   a mount) is not the store's, and is left alone.

``prune`` deletes what the rule lets go: each row is first *claimed* (marked deleted, with the rule, in one
statement that checks 1–4 again, so two workers never both take one and one needed since is left alone), then its
folder removed, then the store collects garbage once: every filestore object that no remaining artifact's index
names. The clean-up job runs it after the due tasks; ``promote artifacts prune [--dry-run]`` runs it by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from promote_pipeline.promotion.evidence import Evidence
from promote_pipeline.promotion.models import ArtifactVerdict, PromotionOutcome, PruneReport
from promote_pipeline.promotion.services import Services
from promote_pipeline.promotion.settings import Retention
from resources.ops_db import ArtifactState
from resources.redaction import redact_text


def _when(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


def _rule_for_row(a: ArtifactState, rank: int, present: bool, now: datetime, policy: Retention,
                  store_ok: bool = True) -> tuple[bool, datetime | None, str]:
    """(keep, retained until, why) of a live row; ``rank``: its place among its environment's greens, newest 0."""
    if a.run_status == "running":
        return True, None, f"its run {a.created_by_run} is still running"
    if a.restored_into:
        return True, None, f"deployment {', '.join(a.restored_into)} was restored from it"
    if a.role == "blue" and a.blue_deletion_at is not None:
        return True, a.blue_deletion_at, (f"rollback window of {a.created_by_run}: deleted with blue's deployment"
                                          f" at {_when(a.blue_deletion_at)}")
    if a.role == "blue" and a.run_serves:
        return True, None, f"production runs on the green of its run {a.created_by_run}: a rollback may need it"
    if not present and not store_ok:  # a wrong artifact_root must not cost every row its record
        return True, None, "its folder is not in the store, which holds no objects at all: is artifact_root right?"
    if not present:
        return False, None, "its folder is missing from the store: the row is marked deleted"
    ended = a.run_completed_at or a.created_at
    if a.role == "blue":
        if a.run_status == "success" and a.run_window_hours is not None:
            until = ended + timedelta(hours=a.run_window_hours)
            rule = f"blue of a successful run: its rollback window ({a.run_window_hours} h)"
        else:
            until = ended + timedelta(days=policy.blue_keep_days)
            rule = f"blue of a {a.run_status or 'recorded'} run: kept {policy.blue_keep_days} days after it ended"
        return (True, until, rule) if now < until else (False, None, f"{rule}, over since {_when(until)}")
    until = a.created_at + timedelta(days=policy.green_keep_days)
    if rank < policy.green_keep_last:  # until newer ones push it out, and at least ``until``
        return True, until if now < until else None, \
            f"one of the newest {policy.green_keep_last} green snapshots of {a.environment_id}"
    if now < until:
        return True, until, f"green snapshot younger than {policy.green_keep_days} days"
    return False, None, (f"green snapshot older than {policy.green_keep_days} days and not among the newest"
                         f" {policy.green_keep_last} of {a.environment_id}")


def _parse_folder_name(name: str) -> tuple[str | None, Literal["green", "blue"] | None]:
    """(environment, role) from ``art_<role>_<environment>_<stamp>_<hex>`` (what ``new_artifact_id`` makes)."""
    parts = name.split("_")
    if len(parts) >= 5 and parts[0] == "art":
        for role in ("green", "blue"):
            if parts[1] == role:
                return "_".join(parts[2:-2]), role
    return None, None


def _index_bytes(svc: Services, artifact_id: str) -> int:
    try:
        return sum(size for _sha1, size, _rel in svc.store.iter_index(artifact_id))
    except (OSError, ValueError):  # no index yet (a crash before it was written), or a torn one
        return 0


def evaluate(svc: Services, now: datetime | None = None) -> list[ArtifactVerdict]:
    """The rule's verdict on every artifact: each live row of ``ops.artifacts`` and each folder of the store."""
    now = now or datetime.now(UTC)
    policy = svc.settings.retention
    folders = set(svc.store.artifact_ids())
    store_ok = svc.store.has_objects()
    rows = svc.ops_db.live_artifacts()
    ranks: dict[str, int] = {}
    seen: dict[str, int] = {}
    for a in sorted(rows, key=lambda r: (r.created_at, r.artifact_id), reverse=True):
        if a.role == "green" and a.artifact_id in folders:
            ranks[a.artifact_id] = seen.get(a.environment_id, 0)
            seen[a.environment_id] = ranks[a.artifact_id] + 1
    verdicts = []
    for a in rows:
        present = a.artifact_id in folders
        keep, until, why = _rule_for_row(a, ranks.get(a.artifact_id, 0), present, now, policy, store_ok)
        size = svc.store.folder_usage(a.artifact_id)[0] if present else 0
        size += int((a.contract.get("filestore") or {}).get("size_bytes") or 0) if present else 0
        verdicts.append(ArtifactVerdict(
            artifact_id=a.artifact_id, environment_id=a.environment_id, role=a.role, run_id=a.created_by_run,
            run_status=a.run_status, state="stored" if present else "missing", size_bytes=size,
            created_at=a.created_at, keep=keep, retained_until=until, why=why))
    known = {a.artifact_id for a in rows}
    deleted = svc.ops_db.artifacts_marked_deleted()
    running_since = svc.ops_db.oldest_running_run_start()
    grace = timedelta(hours=policy.orphan_grace_hours)
    for name in sorted(folders - known):
        env, role = _parse_folder_name(name)
        if role is None and name not in deleted:  # not a name the store gives (lost+found on a mount): not ours
            continue
        size, newest = svc.store.folder_usage(name)
        changed = datetime.fromtimestamp(newest, UTC)
        keep, until = False, None
        if name in deleted:
            # Right after its claim a deletion in progress looks the same: only one older than the grace is left.
            state = "leftover"
            if now < deleted[name] + grace:
                keep, until = True, deleted[name] + grace
                why = f"its row says deleted {_when(deleted[name])}: a deletion in progress, or one cut short"
            else:
                why = f"its row says deleted {_when(deleted[name])}: what a deletion cut short left"
        else:
            state = "orphan"
            if now < changed + grace:
                keep, until = True, changed + grace
                why = (f"no ops row, changed {_when(changed)}: a backup in progress or a crash; swept"
                       f" {policy.orphan_grace_hours} h after its last change")
            elif running_since is not None and running_since <= changed:
                keep, why = True, "no ops row, and a run that started before its last change still runs"
            else:
                why = f"no ops row and unchanged for {policy.orphan_grace_hours} h: left by a crash"
        verdicts.append(ArtifactVerdict(
            artifact_id=name, environment_id=env, role=role, run_id=None, run_status=None,
            state=state, size_bytes=size + _index_bytes(svc, name), created_at=changed, keep=keep,
            retained_until=until, why=why))
    return verdicts


def prune(svc: Services, dry_run: bool = False, now: datetime | None = None,
          evidence_root: str | None = None) -> PruneReport:
    """Delete what the rule lets go (or, ``dry_run``, only say what and how many bytes that frees)."""
    verdicts = evaluate(svc, now)
    going = [v for v in verdicts if not v.keep]
    report = PruneReport(dry_run=dry_run, going=going, kept=len(verdicts) - len(going), folder_bytes=0,
                         object_bytes=0, objects=0)
    if not going:
        return report
    stored = frozenset(v.artifact_id for v in going if v.state != "missing")
    if dry_run:
        report.folder_bytes = sum(svc.store.folder_usage(a)[0] for a in stored)
        report.objects, report.object_bytes = svc.store.objects_freed_by(stored)
        return report
    taken = []
    for v in going:
        try:
            if v.state in ("stored", "missing") and not svc.ops_db.claim_artifact_deletion(v.artifact_id, v.why):
                report.skipped.append(f"{v.artifact_id}: needed again, or deleted by another worker, since the rule"
                                      " was read")
                continue
            if v.state != "missing":
                size = svc.store.folder_usage(v.artifact_id)[0]
                if not svc.store.remove_folder(v.artifact_id) and v.state != "stored":
                    report.skipped.append(f"{v.artifact_id}: removed by another worker meanwhile")
                    continue
                report.folder_bytes += size
            taken.append(v)
        except Exception as exc:  # one artifact's failure stops no other; the row, if taken, says deleted
            report.failures.append(redact_text(f"{v.artifact_id}: {type(exc).__name__}: {exc}")[:500])
    report.going = taken
    if taken:
        gc = svc.store.collect_garbage()
        report.objects, report.object_bytes = gc["removed_objects"], gc["removed_bytes"]
    if taken or report.failures:
        folder = Path(evidence_root or svc.settings.evidence_root) / datetime.now(UTC).strftime("%Y%m%d-%H%M")
        Evidence(folder / "cleanup").write_json(f"prune_{datetime.now(UTC).strftime('%H%M%S%f')}.json",
                                                {**report.model_dump(mode="json"), "freed_bytes": report.freed_bytes})
    return report


def summary_lines(policy: Retention, outcome: PromotionOutcome, started: datetime, completed: datetime,
                  inputs: dict[str, Any]) -> dict[str, str]:
    """When this run's artifacts go, by artifact id (the run summary prints them, final_status.json keeps them)."""
    lines: dict[str, str] = {}
    if outcome.green_artifact_id:
        not_before = started + timedelta(days=policy.green_keep_days)
        lines[outcome.green_artifact_id] = (
            f"green: kept while a deployment restored from it exists (production, after a success), while it is"
            f" among the newest {policy.green_keep_last} green snapshots of `{inputs.get('staging_env_id')}`, and"
            f" not deleted before {_when(not_before)}")
    if outcome.blue_backup_id:
        if outcome.status == "success":
            window = int(inputs.get("rollback_window_hours") or 0)
            at = completed + timedelta(hours=window)
            text = (f"blue: deleted with blue's deployment at {_when(at)}, the end of the {window} h rollback window"
                    f" (`promote window {outcome.run_id} --hours N` moves it)")
        else:
            at = completed + timedelta(days=policy.blue_keep_days)
            text = f"blue: kept until {_when(at)} ({policy.blue_keep_days} days after a {outcome.status} run ended)"
            if outcome.status == "failed" and outcome.cutover_timestamp:
                text += ", and for as long as production runs on this run's green"
        lines[outcome.blue_backup_id] = text
    return lines
