"""The four guardrails, read from ``agents/registry/odoo_skills.yaml``.

The registry is the single place where an operations team can see (and audit) which guardrails
are on; the code that enforces each one asks this module rather than hard-coding a constant.
The package carries the registry as package data (``odoo_skills.yaml`` beside this module, a link
to the registry in the repository, copied into a built wheel), so an installed package finds it
outside the checkout.
"""

from __future__ import annotations

import importlib.resources
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel

REGISTRY_PATH = Path(str(importlib.resources.files("promote_pipeline.promotion") / "odoo_skills.yaml"))
SKILL = "promote-staging-to-prod"


class Guardrails(BaseModel):
    prod_requires_staging_success: bool
    forbid_enterprise_modules: bool
    rollback_default: bool
    evidence_required: bool
    enterprise_licenses: list[str]
    evidence_files: list[str]


def load(path: Path = REGISTRY_PATH) -> Guardrails:
    data = yaml.safe_load(path.read_text())
    skill = data["skills"][SKILL]
    return Guardrails(
        **skill["guardrails"],
        enterprise_licenses=skill["enterprise_licenses"],
        evidence_files=skill["evidence_files"],
    )


@lru_cache(maxsize=1)
def current() -> Guardrails:
    return load()


def enterprise_modules(module_licenses: dict[str, str], rails: Guardrails | None = None) -> list[str]:
    """Installed modules whose license marks them as Odoo Enterprise."""
    rails = rails or current()
    return sorted(name for name, lic in module_licenses.items() if lic in rails.enterprise_licenses)
