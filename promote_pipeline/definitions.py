"""The Dagster code location (``workspace.yaml``, ``[tool.dagster]``): what ``defs/location.py`` builds from
this installation's settings."""

from promote_pipeline.defs.location import build_definitions

defs = build_definitions()
