"""Launching a promotion on a running Dagster webserver through its GraphQL API.

This is how programs (and the worker-kill drill) hand a promotion to the daemon-backed instance
rather than running it in their own process: the run goes through the queued run coordinator
(one promotion per production environment at a time) and a run worker the daemon launches.
"""

from __future__ import annotations

import os
from typing import Any

from dagster_graphql import DagsterGraphQLClient

JOB = "promote_staging_to_prod"


def client(url: str | None = None) -> DagsterGraphQLClient:
    """A client for ``url`` (http://host:port), default 127.0.0.1 and DAGSTER_PORT (3000)."""
    if url:
        hostport = url.split("://", 1)[-1].rstrip("/")
        host, _, port = hostport.partition(":")
        return DagsterGraphQLClient(host, port_number=int(port) if port else 80)
    return DagsterGraphQLClient("127.0.0.1", port_number=int(os.environ.get("DAGSTER_PORT", "3000")))


def run_tags(inputs: dict[str, Any]) -> dict[str, str]:
    return {"promote/project": str(inputs.get("project_id")), "promote/prod_env": str(inputs.get("prod_env_id")),
            "promote/staging_env": str(inputs.get("staging_env_id")), "promote/user": str(inputs.get("user_id"))}


def submit(inputs: dict[str, Any], url: str | None = None) -> str:
    """Submit a promotion; return its Dagster run id."""
    return client(url).submit_job_execution(
        JOB, run_config={"ops": {"create_ops_run": {"config": inputs}}}, tags=run_tags(inputs))
