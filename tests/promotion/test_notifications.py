"""Notifications from real promotions to real receivers on loopback: a signed JSON webhook (an HTTP server that
checks the HMAC-SHA256 signature) and e-mail through apprise to a real SMTP server (aiosmtpd, with a login).

Every event a promotion has: started, success, blue deleted (the clean-up task run now), rolled back (a smoke test
failing by fault injection) and failed (the same, with auto-rollback off). A receiver that is down is tried again and
recorded; one that hangs holds up no rollback. No secret value shows in the run's events, its evidence, the progress
lines or the messages themselves.
"""

from __future__ import annotations

import email
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from promote_pipeline.cli.sandbox import PROD, STAGING, USER, Sandbox
from promote_pipeline.promotion import cleanup, deployment, evidence_schema, notify, progress
from promote_pipeline.promotion.services import Services
from resources.notifiers import SIGNATURE_HEADER, NotificationsConfig, sign

pytestmark = pytest.mark.slow

KEY_REF = "PROMOTE_TEST_WEBHOOK_KEY"
MAIL_REF = "PROMOTE_TEST_MAIL_URL"
DEADLINE = 180.0  # generous: the machine is loaded, and a notification is sent after the run returns


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Webhook:
    """A JSON webhook receiver: checks the signature of each body, answers 401 to a wrong one; ``hang`` makes it
    hold every request until ``release`` is set."""

    key: str
    hang: bool = False
    bodies: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    held: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Webhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.hang:
                    hook.held += 1
                    hook.release.wait(600)
                    hook.held -= 1
                if not hmac.compare_digest(sign(hook.key, raw), self.headers.get(SIGNATURE_HEADER, "")):
                    hook.bad_signatures += 1
                    self.send_response(401)
                else:
                    hook.bodies.append(json.loads(raw))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def events(self, run_id: str) -> list[str]:
        return [b["event"] for b in self.bodies if b["run_id"] == run_id]


@dataclass
class Mailbox:
    """A real SMTP server on loopback that wants a login (apprise's mailto:// gives it, from the secret URL)."""

    password: str
    port: int = field(default_factory=_free_port)
    messages: list[email.message.Message] = field(default_factory=list)
    controller: Controller | None = None

    def start(self) -> Mailbox:
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's
                box.messages.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            return AuthResult(success=data.password == self.password.encode())

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, authenticator=authenticate,
                                     auth_require_tls=False)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()

    @property
    def url(self) -> str:
        return (f"mailto://promote:{self.password}@127.0.0.1:{self.port}?from=promote@example.com"
                "&to=ops@example.com&mode=insecure")

    def subjects(self, run_id: str) -> list[str]:
        return [str(m["Subject"]) for m in self.messages if run_id in str(m["Subject"])]

    def text(self) -> str:
        return "\n".join(str(m) for m in self.messages)


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Webhook, Mailbox]]:
    hook, mail = Webhook(key=secrets.token_hex(16)).start(), Mailbox(password=secrets.token_hex(12)).start()
    monkeypatch.setenv(KEY_REF, hook.key)
    monkeypatch.setenv(MAIL_REF, mail.url)
    yield hook, mail
    notify.wait_for_deliveries(60)
    hook.stop()
    mail.stop()


@pytest.fixture
def configure(haproxy_box: Sandbox) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Set production's notifications in ops.environments (as `promote inventory apply` does); unset afterwards."""
    ops_db = haproxy_box.resources()["ops_db"]

    def set_to(config: dict[str, Any] | None) -> None:
        env = ops_db.environment(PROD)
        value = NotificationsConfig.model_validate(config) if config is not None else None
        ops_db.update_environment(env.model_copy(update={"notifications": value}))
        assert ops_db.environment(PROD).notifications == value

    yield set_to
    notify.wait_for_deliveries(60)
    set_to(None)


@pytest.fixture
def said() -> Iterator[list[str]]:
    """Every progress line of this process while the test runs (what a terminal and Dagster's log get)."""
    lines: list[str] = []
    progress.subscribe(lines.append)
    yield lines
    progress.unsubscribe(lines.append)


def _wait(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {DEADLINE:.0f}s: {what}")


def _notify_events(h: Any, box: Sandbox, run_id: str) -> list[dict[str, Any]]:
    return h.ops_sql(box.resources()["ops_db"], "SELECT message, details::text AS details, level FROM ops.run_events"
                     " WHERE run_id = %s AND step = 'notify' ORDER BY event_id", (run_id,))


def _outcomes(folder: Path) -> list[dict[str, Any]]:
    data = json.loads((folder / "final_status.json").read_text())
    return list(data.get("notifications", []))


def _outcome_of(folder: Path, event: str, target: str) -> dict[str, Any]:
    found = [o for o in _outcomes(folder) if o["event"] == event and o["target"] == target]
    return found[0] if len(found) == 1 else {}


def _no_secret_in(texts: list[str], *values: str) -> None:
    for value in values:
        leaked = [t[:120] for t in texts if value in t]
        assert leaked == [], f"a secret value shows in {leaked}"


def _all_text(h: Any, box: Sandbox, run_ids: list[str], folders: list[Path]) -> list[str]:
    texts = [p.read_text() for f in folders for p in f.rglob("*") if p.is_file()]
    for run_id in run_ids:
        texts += [r["message"] + r["details"] for r in h.ops_sql(
            box.resources()["ops_db"], "SELECT message, details::text AS details FROM ops.run_events WHERE run_id = %s",
            (run_id,))]
    return texts


def _config(hook: Webhook, **more: Any) -> dict[str, Any]:
    return {"webhooks": [{"url": hook.url, "secret_ref": KEY_REF}], "apprise": [{"url_ref": MAIL_REF, "label": "mail"}],
            "attempts": 3, "timeout_seconds": 20, "backoff_seconds": 0.5, **more}


def test_every_event_reaches_the_signed_webhook_and_the_mailbox(haproxy_box: Sandbox, h: Any, receivers: Any,
                                                                 configure: Any, said: list[str],
                                                                 tmp_path: Path) -> None:
    box = haproxy_box
    hook, mail = receivers
    configure(_config(hook))
    svc = Services.from_resources(box.resources())

    # started and success, then blue deleted when its clean-up task runs
    code, ok, _ = h.promote()
    assert code == 0 and ok is not None and ok.status == "success"
    _wait(lambda: {"started", "success"} <= set(hook.events(ok.run_id)), "started and success at the webhook")
    h.ops_sql(svc.ops_db, "UPDATE ops.scheduled_tasks SET execute_at = now() - interval '1 second'"
              " WHERE run_id = %s AND task_type = 'delete_backup' AND status = 'pending'", (ok.run_id,))
    done = [r for r in cleanup.run_due_tasks(svc, str(tmp_path)) if r["run_id"] == ok.run_id]
    assert [r["status"] for r in done] == ["done"]
    _wait(lambda: "blue_deleted" in hook.events(ok.run_id), "blue_deleted at the webhook")

    # rolled back: a smoke test fails on green (fault injection), and the run rolls back
    h.write_fault(box, refuse_login=True)
    try:
        code, back, _ = h.promote()
    finally:
        h.clear_faults(box)
    assert code == 1 and back is not None and back.status == "rolled_back"

    # failed: the same failure with auto-rollback off (green is left standing, then cleaned up below)
    h.write_fault(box, refuse_login=True)
    try:
        code, failed, _ = h.promote(auto_rollback_on_failure=False)
    finally:
        h.clear_faults(box)
    assert code == 1 and failed is not None and failed.status == "failed"
    for g in svc.ops_db.deployments_created_by(failed.run_id):
        deployment.stop(svc, g)
        svc.ops_db.retire_deployment(g.deployment_id)
    svc.router.set_preview(PROD, svc.router.state(PROD).active)

    expected = {ok.run_id: ["started", "success", "blue_deleted"], back.run_id: ["started", "rolled_back"],
                failed.run_id: ["started", "failed"]}
    for run_id, events in expected.items():
        _wait(lambda r=run_id, e=events: sorted(hook.events(r)) == sorted(e), f"{events} at the webhook for {run_id}")
        _wait(lambda r=run_id, e=events: len(mail.subjects(r)) == len(e), f"{events} in the mailbox for {run_id}")
        for event in events:
            assert any(s.startswith(f"promote {event.replace('_', ' ')}: {run_id}") for s in mail.subjects(run_id))
    assert hook.bad_signatures == 0

    # the body: event, run, environments, user, status, time (UTC), evidence folder, and the reason of a rollback
    rolled = next(b for b in hook.bodies if b["run_id"] == back.run_id and b["event"] == "rolled_back")
    assert rolled["environments"] == {"staging": STAGING, "production": PROD} and rolled["user"] == USER
    assert rolled["status"] == "rolled_back" and rolled["evidence_dir"] == back.evidence_dir
    assert rolled["time"].endswith("+00:00") and "smoke tests failed" in rolled["reason"]
    assert rolled["details"]["failed_step"] == "smoke_test_green"
    success = next(b for b in hook.bodies if b["run_id"] == ok.run_id and b["event"] == "success")
    assert success["status"] == "success" and success["reason"] is None

    # every try in ops.run_events, every outcome in final_status.json, which still validates
    for outcome, status in ((ok, "success"), (back, "rolled_back"), (failed, "failed")):
        folder = h.evidence(outcome)
        for event in expected[outcome.run_id]:
            for target in (hook.url, "mail"):
                _wait(lambda f=folder, e=event, t=target: _outcome_of(f, e, t).get("delivered"),
                      f"{event} to {target} in {outcome.run_id}'s final_status.json")
        evidence_schema.validate_folder(folder, outcome.run_id, status)
        rows = _notify_events(h, box, outcome.run_id)
        assert len(rows) == 2 * len(expected[outcome.run_id]) and all(r["level"] == "info" for r in rows)
        assert all("delivered, try 1 of 3" in r["message"] for r in rows)

    texts = _all_text(h, box, list(expected), [h.evidence(o) for o in (ok, back, failed)])
    texts += said + [json.dumps(b) for b in hook.bodies] + [mail.text()]
    _no_secret_in(texts, hook.key, mail.password, mail.url)


def test_a_receiver_down_is_retried_and_one_that_hangs_holds_up_no_rollback(haproxy_box: Sandbox, h: Any,
                                                                           receivers: Any, configure: Any,
                                                                           said: list[str],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """One webhook on a port nobody listens on, one that accepts and never answers (until the test lets it): the
    promotion rolls back and returns while the hanging receiver still holds its requests (each try may wait 300 s,
    so a send in the promotion's path would have held it); the tries are recorded, and the outcomes too."""
    box = haproxy_box
    _, mail = receivers
    hanging = Webhook(key=secrets.token_hex(16), hang=True).start()
    down = f"http://127.0.0.1:{_free_port()}/hook"
    try:
        configure({"webhooks": [{"url": down, "secret_ref": KEY_REF, "events": ["started", "rolled_back"]},
                                {"url": hanging.url, "secret_ref": "PROMOTE_TEST_HANGING_KEY"}],
                   "attempts": 3, "timeout_seconds": 300, "backoff_seconds": 0.2})
        monkeypatch.setenv("PROMOTE_TEST_HANGING_KEY", hanging.key)
        h.write_fault(box, refuse_login=True)
        try:
            code, back, _ = h.promote()
        finally:
            h.clear_faults(box)
        assert code == 1 and back is not None and back.status == "rolled_back"
        assert hanging.held >= 1  # the started message is still held: the run did not wait for it
        rollback = json.loads((h.evidence(back) / "rollback.json").read_text())
        assert rollback["triggered"] is True and rollback["completed"] is True
        assert box.resources()["ops_db"].run(back.run_id).status == "rolled_back"
        assert _outcome_of(h.evidence(back), "rolled_back", hanging.url) == {}  # still under way

        # the receiver that is down: three tries for each of its events, each recorded, then not delivered
        for event in ("started", "rolled_back"):
            outcome = _wait(lambda e=event: _outcome_of(h.evidence(back), e, down), f"{event} to {down} recorded")
            assert outcome["delivered"] is False and [t["attempt"] for t in outcome["tries"]] == [1, 2, 3]
            assert all(t["error"] and "Connection refused" in t["error"] for t in outcome["tries"])
        rows = [r for r in _notify_events(h, box, back.run_id) if down in r["message"]]
        assert len(rows) == 6 and all(r["level"] == "warning" and "not delivered" in r["message"] for r in rows)

        hanging.release.set()
        _wait(lambda: sorted(hanging.events(back.run_id)) == ["rolled_back", "started"], "the held messages answered")
        _wait(lambda: _outcome_of(h.evidence(back), "rolled_back", hanging.url).get("delivered"),
              "the held rolled_back recorded delivered")
        evidence_schema.validate_folder(h.evidence(back), back.run_id, "rolled_back")
        texts = _all_text(h, box, [back.run_id], [h.evidence(back)]) + said
        _no_secret_in(texts, hanging.key, mail.password)
    finally:
        hanging.stop()


def test_a_missing_key_reference_is_a_recorded_try_not_a_failed_promotion(haproxy_box: Sandbox, h: Any,
                                                                          receivers: Any, configure: Any) -> None:
    hook, mail = receivers
    configure({"webhooks": [{"url": hook.url, "secret_ref": "PROMOTE_TEST_NOT_SET_KEY"}], "attempts": 1})
    code, ok, _ = h.promote()
    assert code == 0 and ok is not None and ok.status == "success"
    outcome = _wait(lambda: _outcome_of(h.evidence(ok), "success", hook.url), "the success outcome")
    assert outcome["delivered"] is False and "PROMOTE_TEST_NOT_SET_KEY" in outcome["tries"][0]["error"]
    assert hook.bodies == []

    # awaiting_approval, as the approval gate sends it: the same call, the same receivers
    configure(_config(hook))
    svc = Services.from_resources(haproxy_box.resources())
    notify.send(svc, ok.run_id, PROD, "awaiting_approval", {"preview_url": "http://127.0.0.1:1/"}).join(60)
    _wait(lambda: hook.events(ok.run_id) == ["awaiting_approval"], "awaiting_approval at the webhook")
    _wait(lambda: mail.subjects(ok.run_id), "awaiting_approval in the mailbox")
    assert hook.bodies[-1]["details"] == {"preview_url": "http://127.0.0.1:1/"}
    notify.send(svc, ok.run_id, PROD, "deployed", {}).join(60)  # type: ignore[arg-type]
    assert notify.wait_for_deliveries(60) and hook.events(ok.run_id) == ["awaiting_approval"]


def test_a_manual_rollback_is_announced_and_keeps_the_earlier_outcomes(haproxy_box: Sandbox, h: Any,
                                                                      receivers: Any, configure: Any) -> None:
    """`promote rollback` after a success (another process, in production): rolled_back is sent with who asked and
    why, and final_status.json, rewritten by the rollback, keeps the started and success outcomes."""
    from promote_pipeline.cli.runner import run_rollback

    hook, mail = receivers
    configure(_config(hook))
    code, ok, _ = h.promote()
    assert code == 0 and ok is not None
    folder = h.evidence(ok)
    _wait(lambda: all(_outcome_of(folder, e, t).get("delivered") for e in ("started", "success")
                      for t in (hook.url, "mail")), "started and success recorded")
    code, result, message = run_rollback(ok.run_id, "customer reports", "ops-oncall", quiet=True)
    assert code == 0 and result and result["action"] == "rolled_back", message
    _wait(lambda: _outcome_of(folder, "rolled_back", hook.url).get("delivered"), "rolled_back recorded")
    rolled = next(b for b in hook.bodies if b["run_id"] == ok.run_id and b["event"] == "rolled_back")
    assert rolled["status"] == "rolled_back" and "customer reports" in rolled["reason"]
    assert rolled["details"] == {"requested_by": "ops-oncall", "manual": True}
    _wait(lambda: len(mail.subjects(ok.run_id)) == 3, "three e-mails")
    assert {o["event"] for o in _outcomes(folder)} == {"started", "success", "rolled_back"}
    evidence_schema.validate_folder(folder, ok.run_id, "rolled_back")


def test_the_sandbox_announces_to_a_webhook_signed_with_a_key_of_its_secrets_file(
        haproxy_box: Sandbox, h: Any, configure: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # `promote sandbox up --webhook URL`: a URL that is not http(s) is refused before anything is made
    from promote_pipeline.cli import main as cli
    from promote_pipeline.cli.sandbox import WEBHOOK_KEY_REF

    assert cli.main(["sandbox", "up", "--dir", str(haproxy_box.root), "--webhook", "ftp://x/hook"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "sandbox refused: --webhook: must be an http:// or https:// URL (got ftp://x/hook)"
    hook = Webhook(key="").start()
    try:
        haproxy_box.announce_to(hook.url)
        kept = json.loads(haproxy_box.secrets_file.read_text())
        hook.key = kept[WEBHOOK_KEY_REF]  # the receiver checks with the key the sandbox made and keeps, owner-only
        assert len(hook.key) >= 32 and haproxy_box.secrets_file.stat().st_mode & 0o077 == 0
        haproxy_box.announce_to(hook.url)  # again: the same key, one target
        assert json.loads(haproxy_box.secrets_file.read_text())[WEBHOOK_KEY_REF] == hook.key
        code, ok, _ = h.promote()
        assert code == 0 and ok is not None
        _wait(lambda: sorted(hook.events(ok.run_id)) == ["started", "success"], "started and success, signed")
        assert hook.bad_signatures == 0
        assert hook.key not in json.dumps(_outcomes(Path(ok.evidence_dir)))
    finally:
        notify.wait_for_deliveries(60)
        hook.stop()
