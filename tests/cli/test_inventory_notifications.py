"""An environment's notifications in the inventory: a key reference that resolves to nothing is one line naming the
field at `promote inventory check` (exit 2, nothing written); a webhook URL holding a password is refused without
being printed back; what the inventory declares is what ops.environments holds after apply's environment change."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from promote_pipeline.promotion.inventory import rules, state

pytestmark = pytest.mark.slow


def _with_notifications(inst: Any, notifications: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(inst.data)
    data["environments"][inst.prod]["notifications"] = notifications
    return data


def test_a_key_reference_that_resolves_to_nothing_is_one_line_naming_the_field(installation: Any) -> None:
    inst = installation
    path = inst.write(_with_notifications(inst, {
        "webhooks": [{"url": "https://hooks.example.com/promote", "secret_ref": "PROMOTE_INV_TEST_NO_HOOK_KEY"}],
        "apprise": [{"url_ref": "PROMOTE_INV_TEST_NO_SLACK_URL"}]}), "notify.yaml")
    before = sorted(p.name for p in inst.root.rglob("*"))
    result = inst.promote("inventory", "check", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    where = f"the environment or the secrets file {inst.root / 'secrets.json'}"
    assert result.stdout.splitlines() == [
        f"environments.{inst.prod}.notifications.webhooks[0].secret_ref: secret reference"
        f" 'PROMOTE_INV_TEST_NO_HOOK_KEY' resolves to nothing: set it in {where}",
        f"environments.{inst.prod}.notifications.apprise[0].url_ref: secret reference"
        f" 'PROMOTE_INV_TEST_NO_SLACK_URL' resolves to nothing: set it in {where}"]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in inst.root.rglob("*")) == before


def test_a_webhook_url_with_a_password_is_refused_without_printing_it(installation: Any) -> None:
    inst = installation
    path = inst.write(_with_notifications(inst, {
        "webhooks": [{"url": "https://hook:VerySecretPass123@hooks.example.com/x", "secret_ref": "HOOK_KEY"}],
        "attempts": 0}), "bad.yaml")
    result = inst.promote("inventory", "check", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"environments.{inst.prod}.notifications.webhooks[0].url: must be an http:// or"
                               " https:// URL without credentials")
    assert lines[1] == f"environments.{inst.prod}.notifications.attempts: must be >= 1 (got 0)"
    assert "VerySecretPass123" not in result.stdout + result.stderr


def test_the_declared_notifications_are_what_the_environment_row_holds(installation: Any, private_ops_db: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    inst = installation
    monkeypatch.setenv("HOOK_KEY", "k" * 32)
    declared = {"webhooks": [{"url": "https://hooks.example.com/promote", "secret_ref": "HOOK_KEY",
                              "events": ["rolled_back", "failed"]}], "apprise": [{"url_ref": "HOOK_KEY"}],
                "timeout_seconds": 5}
    inv = rules.parse(inst.write(_with_notifications(inst, declared), "ok.yaml"))
    wanted = state.environment_record(inv, inst.prod)
    assert wanted.notifications is not None and wanted.notifications.timeout_seconds == 5
    private_ops_db.add_project(inst.project, "p", environments=[wanted])
    assert private_ops_db.environment(inst.prod) == wanted
    changed = wanted.model_copy(update={"notifications": None})
    private_ops_db.update_environment(changed)
    assert private_ops_db.environment(inst.prod).notifications is None
