"""The run configuration a person fills in the launchpad: the seed's inputs, the caller, the window."""

from __future__ import annotations

from dagster import Config
from pydantic import Field

from promote_pipeline.promotion import guardrails


class PromotionConfig(Config):
    """Inputs of one promotion. The ids are required; every other field has the seed's default."""

    project_id: str = Field(description="ops.projects.project_id of the project to promote.")
    staging_env_id: str = Field(description="ops.environments.environment_id of the staging source.")
    prod_env_id: str = Field(description="ops.environments.environment_id of the production target.")
    user_id: str = Field(description="Who promotes; needs the 'promote' permission on the project.")
    rollback_window_hours: int = Field(
        default=24, description="Hours blue is kept for rollback before its deletion (1 to 168)."
    )
    skip_smoke_tests: bool = Field(
        default=False, description="Skip the five smoke tests on green. Refused for production targets."
    )
    auto_rollback_on_failure: bool = Field(
        default=guardrails.current().rollback_default,
        description="Switch traffic back to blue automatically when a step from restore on fails."
    )
    carry_over_settings: bool = Field(
        default=True,
        description="Copy production's live settings (mail servers, crons, payment providers, web.base.url and the"
        " database's identity) from blue onto green, and drop the neutralization flag. Off only for a target whose"
        " settings come with the artifact.",
    )
    stability_window_seconds: int = Field(
        default=300, description="How long green is watched after cutover (0 to 3600 seconds)."
    )
