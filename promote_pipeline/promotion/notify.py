"""Telling people what a promotion did: started, awaiting approval, success, rolled back, failed, blue deleted.

Each environment says where in the inventory (``environments.<id>.notifications``, kept in ``ops.environments``):
signed JSON webhooks and apprise targets (Slack, e-mail, ...). ``send`` is called *after* the safety action it
announces (the run recorded a success, traffic back on blue, the run's status written) and only starts a thread,
which starts one per target: a receiver that is down or hangs costs that thread its bounded tries (``attempts``
of at most ``timeout_seconds`` each, ``backoff_seconds`` doubled between them), never a step, a rollback or a
lock. ``send``
returns at once and never raises: even reading the targets happens in the thread, and a notification that cannot
be prepared is a progress line, not a failed promotion.

Every try is an ``ops.run_events`` row (step ``notify``), and each target's outcome goes into the run's
``final_status.json`` (``notifications``): written with it when the delivery ended first, added to it afterwards
otherwise (both under one lock, so neither write loses the other's). At exit the process waits a bounded time for
deliveries still under way, so that a CLI run's last messages are not cut off.

The body holds the event, the run, its environments, its user, its status, the time (UTC), its evidence folder and,
for a rollback or a failure, the reason; all of it redacted, and no secret is in it to begin with: the HMAC key and
the apprise URLs are resolved inside the sending thread and only ever used there.
"""

from __future__ import annotations

import atexit
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from promote_pipeline.promotion import progress, steps
from promote_pipeline.promotion.evidence import Evidence
from promote_pipeline.promotion.services import Services
from resources import notifiers
from resources.notifiers import NOTIFICATION_EVENTS, NotificationEvent, NotificationsConfig
from resources.ops_db import OpsDatabase
from resources.redaction import redact, redact_text, resolve_secret

Event = NotificationEvent
EVENTS = NOTIFICATION_EVENTS
NOTIFY_STEP = "notify"  # the step name of every delivery try in ops.run_events
# How long a process about to exit waits, in all, for deliveries still under way (they are daemon threads).
EXIT_WAIT_SECONDS = 120.0

_lock = threading.Lock()
_pending: set[threading.Thread] = set()
# Targets' outcomes by evidence folder, for a final_status.json written after they ended.
_finished: dict[str, list[dict[str, Any]]] = defaultdict(list)


@dataclass(frozen=True)
class _Target:
    kind: str  # "webhook" or "apprise"
    label: str  # what events and evidence call it (a URL without secrets, or a reference's name)
    ref: str  # the secret reference: the HMAC key, or the apprise URL
    url: str | None = None  # the webhook's URL


def _targets(config: NotificationsConfig, event: Event) -> list[_Target]:
    found = [_Target("webhook", w.url, w.secret_ref, w.url) for w in config.webhooks
             if w.events is None or event in w.events]
    found += [_Target("apprise", a.label or f"apprise:{a.url_ref}", a.url_ref) for a in config.apprise
              if a.events is None or event in a.events]
    return found


def message(ops_db: OpsDatabase, run_id: str, environment_id: str, event: Event,
            details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body every target gets (the webhook as JSON, apprise as text): what a person needs to act on it."""
    run = ops_db.run(run_id)
    meta = run.metadata if run else {}
    details = dict(details or {})
    body = {
        "event": event,
        "run_id": run_id,
        "dagster_run_id": run.dagster_run_id if run else None,
        "project_id": run.project_id if run else None,
        "environments": {"staging": meta.get("staging_env_id"), "production": environment_id},
        "user": run.created_by if run else None,
        "status": run.status if run else None,
        "time": datetime.now(UTC).isoformat(),
        "evidence_dir": run.evidence_dir if run else None,
        "reason": details.pop("reason", None),
        "details": details,
    }
    return dict(redact(body))


def _text(body: dict[str, Any]) -> tuple[str, str]:
    """Apprise's title and body, for people (a chat line, an e-mail)."""
    envs = body["environments"]
    title = f"promote {body['event'].replace('_', ' ')}: {body['run_id']} ({envs['staging']} -> {envs['production']})"
    lines = [f"event: {body['event']}", f"run: {body['run_id']}", f"staging: {envs['staging']}",
             f"production: {envs['production']}", f"user: {body['user']}", f"status: {body['status']}",
             f"time (UTC): {body['time']}", f"evidence: {body['evidence_dir']}"]
    if body.get("reason"):
        lines.append(f"reason: {body['reason']}")
    lines += [f"{k}: {v}" for k, v in body["details"].items()]
    return title, "\n".join(lines)


def send(svc: Services, run_id: str, environment_id: str, event: Event,
         details: dict[str, Any] | None = None) -> threading.Thread:
    """Announce ``event`` of run ``run_id`` to ``environment_id``'s targets. Returns at once, having started a
    thread that reads the targets and the run (the ops database may be the very thing that failed) and starts one
    thread per target; never raises. ``details``: extra facts for the body (``reason`` becomes its top-level
    reason), redacted like all of it. Tests join the returned thread, then ``wait_for_deliveries``."""
    thread = threading.Thread(target=_dispatch, args=(svc.ops_db, run_id, environment_id, event, dict(details or {})),
                              daemon=True, name=f"notify-{event}-{run_id}")
    _start(thread)
    return thread


def _start(thread: threading.Thread) -> None:
    with _lock:
        _pending.add(thread)
    thread.start()


def _dispatch(ops_db: OpsDatabase, run_id: str, environment_id: str, event: Event, details: dict[str, Any]) -> None:
    try:
        if event not in EVENTS:
            raise ValueError(f"unknown notification event {event!r}")
        env = ops_db.environment(environment_id)
        config = env.notifications if env is not None else None
        targets = _targets(config, event) if config is not None else []
        if config is None or not targets:
            return
        body = message(ops_db, run_id, environment_id, event, details)
        _say(f"run {run_id}: {event} notification to {len(targets)} target(s), in the background")
        for target in targets:
            _start(threading.Thread(target=_deliver, args=(ops_db, config, target, body), daemon=True,
                                    name=f"notify-{event}-{run_id}-{target.kind}"))
    except Exception as exc:  # a notification never fails the promotion it announces
        _say(f"run {run_id}: {event} notification not sent: {redact_text(f'{type(exc).__name__}: {exc}')}")
    finally:
        with _lock:
            _pending.discard(threading.current_thread())


def _try_once(target: _Target, body: dict[str, Any], delivery_id: str, timeout: float) -> None:
    if target.kind == "webhook":
        assert target.url is not None
        key = resolve_secret(target.ref)  # registered for redaction the moment it is read
        raw = json.dumps({**body, "delivery_id": delivery_id}, sort_keys=True).encode()
        notifiers.post_signed(target.url, raw, key, body["event"], delivery_id, timeout)
    else:
        title, text = _text(body)
        notifiers.send_apprise(resolve_secret(target.ref), title, text, timeout)


def _deliver(ops_db: OpsDatabase, config: NotificationsConfig, target: _Target, body: dict[str, Any]) -> None:
    """The tries for one target, each recorded; then the outcome, in the evidence."""
    try:
        delivery_id = uuid.uuid4().hex
        run_id, event = body["run_id"], body["event"]
        tries: list[dict[str, Any]] = []
        delivered = False
        for attempt in range(1, config.attempts + 1):
            if attempt > 1:
                time.sleep(config.backoff_seconds * 2 ** (attempt - 2))
            at = datetime.now(UTC)
            error: str | None = None
            try:
                _try_once(target, body, delivery_id, config.timeout_seconds)
                delivered = True
            except Exception as exc:  # NotDelivered, a missing secret reference, anything: recorded, tried again
                error = redact_text(str(exc) if isinstance(exc, notifiers.NotDelivered | KeyError)
                                    else f"{type(exc).__name__}")
            tries.append({"attempt": attempt, "at": at.isoformat(), "delivered": delivered, "error": error})
            said = "delivered" if delivered else f"not delivered ({error})"
            _record_event(ops_db, run_id, "info" if delivered else "warning",
                          f"{event} notification to {target.kind} {target.label}: {said}, try {attempt} of"
                          f" {config.attempts}",
                          {"event": event, "target": target.label, "kind": target.kind, "delivery_id": delivery_id,
                           "attempt": attempt, "attempts": config.attempts, "delivered": delivered, "error": error})
            if delivered:
                break
        _record_outcome(body.get("evidence_dir"), {
            "delivery_id": delivery_id, "event": event, "kind": target.kind, "target": target.label,
            "delivered": delivered, "tries": tries})
        _say(f"run {run_id}: {event} notification to {target.kind} {target.label}:"
             f" {'delivered' if delivered else 'NOT delivered'} after {len(tries)} try(s)"
             + ("" if delivered else f" ({tries[-1]['error']})"))
    except Exception as exc:  # a background thread has no caller to tell; a line is all there is
        _say(f"notification thread failed: {redact_text(f'{type(exc).__name__}: {exc}')}")
    finally:
        with _lock:
            _pending.discard(threading.current_thread())


def _say(line: str) -> None:
    """A progress line from a delivery thread: a listener that fails (a closed terminal) stops nothing."""
    try:
        progress.say(line)
    except Exception:  # noqa: S110 - the run's events and evidence hold the outcome anyway
        pass


def _record_event(ops_db: OpsDatabase, run_id: str, level: Any, text: str, details: dict[str, Any]) -> None:
    try:
        ops_db.add_event(run_id, NOTIFY_STEP, level, redact_text(text), redact(details))
    except Exception as exc:  # the ops database down: the evidence still gets the outcome
        _say(f"run {run_id}: notification try not recorded in ops.run_events: {type(exc).__name__}")


# -- the evidence ---------------------------------------------------------------------------------------------------
@contextmanager
def final_status_lock() -> Iterator[None]:
    """Held while final_status.json is written, by the run or by a delivery adding itself to it."""
    with _lock:
        yield


def _merged(existing: list[dict[str, Any]], more: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = {r.get("delivery_id") for r in existing}
    return [*existing, *(r for r in more if r.get("delivery_id") not in seen)]


def write_final_status(evidence: Evidence, data: dict[str, Any]) -> None:
    """Write final_status.json with every delivery outcome known: those of this process, and those a previous
    final_status.json of the run already held (a manual rollback rewrites a success's)."""
    key = str(evidence.folder)
    with _lock:
        earlier = evidence.read_json(steps.FINAL_STATUS_JSON).get("notifications", []) \
            if evidence.exists(steps.FINAL_STATUS_JSON) else []
        evidence.write_json(steps.FINAL_STATUS_JSON,
                            {**data, "notifications": _merged(_merged(earlier, data.get("notifications", [])),
                                                              _finished.get(key, []))})


def _record_outcome(evidence_dir: str | None, record: dict[str, Any]) -> None:
    if not evidence_dir or not Path(evidence_dir).is_absolute():
        return
    evidence = Evidence(evidence_dir)
    with _lock:
        _finished[str(evidence.folder)].append(record)
        if not evidence.exists(steps.FINAL_STATUS_JSON):
            return  # written with final_status.json, when the run writes it
        try:
            data = evidence.read_json(steps.FINAL_STATUS_JSON)
            data["notifications"] = _merged(data.get("notifications", []), [record])
            evidence.write_json(steps.FINAL_STATUS_JSON, data)
        except (OSError, ValueError) as exc:
            _say(f"notification outcome not added to {evidence.folder}: {type(exc).__name__}")


def wait_for_deliveries(seconds: float = EXIT_WAIT_SECONDS) -> bool:
    """Wait up to ``seconds`` for this process's deliveries still under way; True if none is left."""
    deadline = time.monotonic() + seconds
    while True:
        with _lock:
            left = [t for t in _pending if t.is_alive()]
        if not left:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        left[0].join(min(remaining, 1.0))


atexit.register(wait_for_deliveries)
