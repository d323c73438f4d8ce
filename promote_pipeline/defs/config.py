"""The run configuration a person fills in the launchpad: the promotion's inputs, derived from PromotionInputs.

Each field has the model's type, default and description, and deliberately *not* its constraints: an
out-of-range window or a malformed id must reach ``create_ops_run``, which records the rejection in
ops.rejections with the input rules' one-line message. Dagster's own config check would refuse it
before any op ran, leaving no record and a message that names a config path rather than the rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagster import Config
from pydantic import Field, create_model

from promote_pipeline.promotion import inputs
from promote_pipeline.promotion.inputs import PromotionInputs


def _config_field(name: str) -> tuple[Any, Any]:
    info = PromotionInputs.model_fields[name]
    if info.is_required():
        return info.annotation, Field(description=info.description)
    # A value, read once as the code location loads: the launchpad shows and scaffolds defaults, not factories
    # (the rollback default is the registry's at that moment).
    return info.annotation, Field(default=inputs.default(name), description=info.description)


def _derive() -> type[Config]:
    fields: dict[str, Any] = {name: _config_field(name) for name in PromotionInputs.model_fields}
    return create_model("PromotionConfig", __base__=Config, __module__=__name__,
                        __doc__="Inputs of one promotion. The ids are required; every other field has the seed's"
                                " default.", **fields)


if TYPE_CHECKING:
    PromotionConfig = Config  # mypy cannot see into a class create_model builds: type-check as the Config it is
else:
    PromotionConfig = _derive()
