"""Launch a promotion on a running Dagster webserver through its GraphQL API, wait for its end, print the outcome.

    make ui                                            # webserver + daemon for the sandbox
    .venv/bin/python examples/launch_via_graphql.py    # promotes the sandbox (10 s stability window)
    .venv/bin/python examples/launch_via_graphql.py --url http://ops-host:3000 --project P --staging S \\
        --prod E --user U --stability-seconds 300

Self-contained on purpose (only ``dagster-graphql`` and ``requests``, which it brings): copy it into your
own program. The run goes through the instance's queue (one promotion per production environment at
a time) and a run worker the daemon starts, exactly as a launch from the UI does.

Exit codes: 0 the promotion succeeded, 1 it failed or rolled back, 2 it was rejected (an input rule or a
precondition; nothing was touched), 3 the server could not take it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from urllib.parse import urlsplit

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

JOB = "promote_staging_to_prod"

# The promotion's outputs object is in the run's event log, as metadata of the steps' outputs (finalize
# carries all of it) or of the failed step (status, run_id, evidence_dir after a rollback).
EVENTS_QUERY = """
query Events($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepOutputEvent { metadataEntries { label ...Value } }
        ... on ExecutionStepFailureEvent {
          stepKey
          error { message }
          failureMetadata { metadataEntries { label ...Value } }
        }
      }
    }
  }
}
fragment Value on MetadataEntry {
  ... on TextMetadataEntry { text }
  ... on PathMetadataEntry { path }
}
"""
OUTPUT_KEYS = ("run_id", "status", "evidence_dir", "blue_backup_id", "green_artifact_id", "cutover_timestamp")


def describe(exc: DagsterGraphQLClientError) -> str:
    """One line for what went wrong (DagsterGraphQLClientError carries a kind and details, or a long text)."""
    kind = str(exc.args[0]) if exc.args else type(exc).__name__
    detail = exc.args[1] if len(exc.args) > 1 else None
    if kind in ("RunConfigValidationInvalid", "PipelineConfigValidationInvalid") and isinstance(detail, list):
        return "invalid run config: " + "; ".join(error["message"] for error in detail)
    if kind in ("JobNotFoundError", "PipelineNotFoundError"):
        return f"the webserver has no job {JOB}: is the promote_pipeline code location loaded?"
    if kind.startswith(("Error when connecting", "Exception occured")):
        return "cannot reach the webserver: is it running (`make ui`), at the --url given?"
    return f"{kind}: {detail}" if detail else kind


def outputs(url: str, run_id: str) -> tuple[dict[str, str], str | None]:
    """The outputs object and the failed step's message, read from the run's events."""
    response = requests.post(f"{url}/graphql", json={"query": EVENTS_QUERY, "variables": {"runId": run_id}},
                             timeout=30)
    response.raise_for_status()
    found: dict[str, str] = {}
    error = None
    for event in response.json()["data"]["logsForRun"]["events"]:
        entries = event.get("metadataEntries") or (event.get("failureMetadata") or {}).get("metadataEntries") or []
        for entry in entries:
            if entry["label"] in OUTPUT_KEYS:
                found[entry["label"]] = entry.get("text") or entry.get("path") or ""
        if event["__typename"] == "ExecutionStepFailureEvent":
            error = f"{event['stepKey']}: {event['error']['message'].splitlines()[0]}"
    return found, error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="the Dagster webserver")
    parser.add_argument("--project", default="proj_demo")
    parser.add_argument("--staging", default="env_demo_staging")
    parser.add_argument("--prod", default="env_demo_prod")
    parser.add_argument("--user", default="demo_admin")
    parser.add_argument("--stability-seconds", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the end")
    args = parser.parse_args()

    inputs = {"project_id": args.project, "staging_env_id": args.staging, "prod_env_id": args.prod,
              "user_id": args.user, "stability_window_seconds": args.stability_seconds}
    url = args.url.rstrip("/")
    parts = urlsplit(url)
    client = DagsterGraphQLClient(parts.hostname or "127.0.0.1", port_number=parts.port,
                                  use_https=parts.scheme == "https")
    try:
        run_id = client.submit_job_execution(
            JOB,
            run_config={"ops": {"create_ops_run": {"config": inputs}}},
            # The tags name the promotion; promote/prod_env is also the key of the queue's one-per-environment limit.
            tags={"promote/project": args.project, "promote/staging_env": args.staging,
                  "promote/prod_env": args.prod, "promote/user": args.user, "promote/launched_by": "example"},
        )
    except DagsterGraphQLClientError as exc:
        print(f"not launched: {describe(exc)}", file=sys.stderr)
        return 3
    print(f"launched Dagster run {run_id}: {url}/runs/{run_id}", flush=True)

    deadline = time.monotonic() + args.timeout
    status = None
    while True:
        try:
            current = client.get_run_status(run_id).value
        except DagsterGraphQLClientError as exc:
            print(f"lost the run: {describe(exc)}", file=sys.stderr)
            return 3
        if current != status:
            status = current
            print(f"  {status}", flush=True)
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        if time.monotonic() > deadline:
            print(f"still {status} after {args.timeout:.0f}s; it goes on: {url}/runs/{run_id}", file=sys.stderr)
            return 3
        time.sleep(2)

    found, error = outputs(url, run_id)
    if error and "PromotionRejected" in error:  # an input rule or a precondition refused it: nothing was touched
        print(f"rejected: {error.split('promotion rejected: ', 1)[-1]}")
        return 2
    print(f"{found.get('status') or status.lower()}: run {found.get('run_id', '-')};"
          f" evidence in {found.get('evidence_dir', '-')}")
    if error:
        print(f"  failed at {error}")
    print(json.dumps({key: found.get(key) for key in OUTPUT_KEYS} | {"dagster_run_id": run_id}))
    return 0 if status == "SUCCESS" else 1


if __name__ == "__main__":
    sys.exit(main())
