"""The skill registry declares the four guardrails, and the code that enforces them reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from promote_pipeline.promotion import guardrails
from promote_pipeline.promotion.evidence import Evidence

pytestmark = pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)

REQUIRED = {"prod_requires_staging_success", "forbid_enterprise_modules", "rollback_default", "evidence_required"}


def test_registry_declares_the_four_guardrails_on() -> None:
    data = yaml.safe_load(guardrails.REGISTRY_PATH.read_text())
    rails = data["skills"]["promote-staging-to-prod"]["guardrails"]
    assert set(rails) == REQUIRED and all(v is True for v in rails.values())
    assert len(data["skills"]["promote-staging-to-prod"]["evidence_files"]) == 11


def _registry(tmp_path: Path, **changes: object) -> guardrails.Guardrails:
    data = yaml.safe_load(guardrails.REGISTRY_PATH.read_text())
    skill = data["skills"]["promote-staging-to-prod"]
    for key, value in changes.items():
        if key in skill["guardrails"]:
            skill["guardrails"][key] = value
        else:
            skill[key] = value
    path = tmp_path / "odoo_skills.yaml"
    path.write_text(yaml.safe_dump(data))
    return guardrails.load(path)


def test_enterprise_licenses_come_from_the_registry(tmp_path: Path) -> None:
    modules = {"base": "LGPL-3", "web_enterprise": "OEEL-1", "paid_addon": "OPL-1"}
    assert guardrails.enterprise_modules(modules, guardrails.load()) == ["web_enterprise"]
    wider = _registry(tmp_path, enterprise_licenses=["OEEL-1", "OPL-1"])
    assert guardrails.enterprise_modules(modules, wider) == ["paid_addon", "web_enterprise"]


def test_evidence_files_come_from_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fewer = _registry(tmp_path, evidence_files=["inputs.json"])
    monkeypatch.setattr(guardrails, "current", lambda: fewer)
    assert Evidence(tmp_path / "ev").missing() == ["inputs.json"]


def test_rollback_default_comes_from_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from promote_pipeline.promotion import inputs

    off = _registry(tmp_path, rollback_default=False)
    monkeypatch.setattr(guardrails, "current", lambda: off)
    got = inputs.validate({"project_id": "p", "staging_env_id": "s", "prod_env_id": "e", "user_id": "u"})
    assert got.auto_rollback_on_failure is False
