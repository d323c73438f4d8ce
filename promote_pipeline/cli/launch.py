"""Launching a promotion on a running Dagster webserver through its GraphQL API.

This is how programs (``promote launch``, ``examples/launch_via_graphql.py``, the worker-kill
drill) hand a promotion to the daemon-backed instance rather than running it in their own
process: the run goes through the queued run coordinator (one promotion per production
environment at a time) and a run worker the daemon launches.

- ``submit(inputs, url)`` submits one promotion with ``dagster_graphql.DagsterGraphQLClient`` and
  returns the Dagster run id;
- ``follow(run_id, url, on_line)`` waits for the run's end, handing each progress line the run
  writes to its event log (``[3/8] backup_production done in 2.1s``, the stability figures) to
  ``on_line``, and returns a ``RunReport``: the Dagster status and the promotion's outputs object;
- ``report(run_id, url)`` is the same for a run's current state, without waiting.

Every failure of the server or of the request (nothing listening, a server that accepts and never
answers within ``PROMOTE_GRAPHQL_TIMEOUT`` seconds (default 60), an answer that is not GraphQL, GraphQL
errors, HTTP >= 400, the job or the code location missing, a run config the job refuses, an unknown
run) is one ``LaunchError`` with one message.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from promote_pipeline.promotion.inputs import run_config, run_tags, shown
from resources import http_clients

if TYPE_CHECKING:  # imported where used: `promote run` and the code location never load gql and requests
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

JOB = "promote_staging_to_prod"
LOCATION = "promote_pipeline"
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
# The outputs object of a promotion (the seed's), as `promote run --json` prints it.
OUTPUT_KEYS = ("run_id", "status", "evidence_dir", "blue_backup_id", "green_artifact_id", "cutover_timestamp")
TIMEOUT_VARIABLE = "PROMOTE_GRAPHQL_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 60


class LaunchError(RuntimeError):
    """The webserver could not take, find or report a run. ``kind`` says which; the text says what to do."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # unreachable | job_not_found | invalid_config | run_not_found | server | timeout


def default_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('DAGSTER_PORT', '3000')}"


def base_url(url: str | None) -> str:
    """``http://host:port[/prefix]`` without a trailing slash or ``/graphql``."""
    url = (url or default_url()).strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url.removesuffix("/graphql")


def client(url: str | None = None) -> DagsterGraphQLClient:
    """A client for ``url`` (http[s]://host[:port][/prefix]), default 127.0.0.1 and DAGSTER_PORT (3000)."""
    from dagster_graphql import DagsterGraphQLClient

    parts = urlsplit(base_url(url))
    https = parts.scheme == "https"
    return DagsterGraphQLClient(parts.hostname or "127.0.0.1", port_number=parts.port or (443 if https else 80),
                                use_https=https, path_prefix=parts.path.rstrip("/"), timeout=request_timeout())


def request_timeout() -> int:
    """Seconds one request to the webserver may take (``PROMOTE_GRAPHQL_TIMEOUT``, default 60): a server that
    accepts the connection and never answers is given up on, never waited for without end."""
    raw = os.environ.get(TIMEOUT_VARIABLE, "")
    try:
        return max(1, int(raw)) if raw else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise LaunchError("invalid_config", f"{TIMEOUT_VARIABLE}: must be a whole number of seconds (got {raw!r})")\
            from None


def submit(inputs: dict[str, Any], url: str | None = None, source: str = "graphql",
           extra_tags: dict[str, str] | None = None) -> str:
    """Submit a promotion; return its Dagster run id. Raises LaunchError."""
    from dagster_graphql import DagsterGraphQLClientError

    try:
        return client(url).submit_job_execution(
            JOB, run_config=run_config(inputs), tags={**run_tags(inputs, source), **(extra_tags or {})})
    except DagsterGraphQLClientError as exc:
        raise _client_error(exc, base_url(url)) from None


# -- errors -------------------------------------------------------------------------------------------
def _redacted(text: str) -> str:
    from resources.redaction import redact_text

    return redact_text(" ".join(text.split()))


def _unreachable(url: str, detail: str) -> LaunchError:
    return LaunchError("unreachable", f"cannot reach the Dagster webserver at {url} ({detail}): is it running?"
                                      " (`make ui` starts one; --url or DAGSTER_PORT name another)")


def _no_answer(url: str) -> LaunchError:
    return LaunchError("timeout", f"the webserver at {url} accepted the connection but did not answer within"
                                  f" {request_timeout()}s (it may still take the run: look at its runs before"
                                  f" launching again; {TIMEOUT_VARIABLE} allows a slower one)")


def _client_error(exc: DagsterGraphQLClientError, url: str) -> LaunchError:
    kind = str(exc.args[0]) if exc.args else ""
    detail: Any = exc.args[1] if len(exc.args) > 1 else exc.body
    chain = _causes(exc)
    names = [type(c).__name__ for c in chain]
    # What the server answered comes first: requests' HTTPError is an OSError too, but the server was reached.
    status = next((getattr(getattr(c, "response", None), "status_code", None) or getattr(c, "code", None)
                   for c in chain if type(c).__name__ in ("TransportServerError", "HTTPError")), None)
    if status:
        return _http_error(url, int(status))
    if "TransportQueryError" in names:  # a GraphQL answer with errors: the server's own words
        query_error = chain[names.index("TransportQueryError")]
        errors = getattr(query_error, "errors", None) or [query_error.args[0] if query_error.args else ""]
        message = "; ".join(_redacted(str(e.get("message", e) if isinstance(e, dict) else e)) for e in errors)
        return LaunchError("server", f"the webserver at {url} refused the query: {message[:500]}")
    if "TransportProtocolError" in names:  # an answer that is not GraphQL (no JSON, or JSON of something else)
        return LaunchError("server", f"the webserver at {url} answered without a GraphQL result: is it a Dagster"
                                     " webserver?")
    if any("Timeout" in name for name in names):
        connect = any(name in ("ConnectTimeout", "ConnectTimeoutError") for name in names)
        return _unreachable(url, "connection timed out") if connect else _no_answer(url)
    if kind.startswith("Error when connecting") or any(
            name in ("TransportConnectionFailed", "ConnectionError") or isinstance(c, OSError)
            for name, c in zip(names, chain, strict=True)):
        root = chain[-1] if chain else None
        detail = "connection refused" if isinstance(root, ConnectionRefusedError) else type(root).__name__
        return _unreachable(url, detail)
    if kind in ("JobNotFoundError", "PipelineNotFoundError"):
        return LaunchError("job_not_found", f"job {JOB} not found on the webserver at {url}"
                                            f"{_location_problem(url)}")
    if kind in ("RunConfigValidationInvalid", "PipelineConfigValidationInvalid"):
        errors = detail if isinstance(detail, list) else [{"message": str(detail)}]
        # Dagster's own words, without the schema it appends after an unexpected entry.
        messages = "; ".join(_redacted(str(e.get("message", e))).split(' Expected: "')[0] for e in errors)
        return LaunchError("invalid_config", f"invalid run config for {JOB}: {messages}")
    if kind.startswith("Server error") or kind.startswith("Exception occured"):
        return LaunchError("server", f"the webserver at {url} answered with an error: is it a Dagster webserver?")
    text = _redacted(str(detail)) if detail else ""
    return LaunchError("server", f"the webserver at {url} refused the run: {kind}{': ' + text if text else ''}")


def _http_error(url: str, status: int) -> LaunchError:
    hint = ("it refuses this client: does it sit behind a proxy that wants credentials?" if status in (401, 403)
            else "is it a Dagster webserver, at this address and prefix?" if status in (404, 405)
            else "its log says why")
    return LaunchError("server", f"the webserver at {url} answered HTTP {status}: {hint}")


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current = exc.__cause__ or exc.__context__
    while current is not None and current not in chain and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _location_problem(url: str) -> str:
    """Why the job is missing, as far as the workspace says: the code location absent or failing to load."""
    try:
        data = graphql(url, "{ workspaceOrError { __typename ... on Workspace { locationEntries { name"
                            " locationOrLoadError { __typename ... on PythonError { message cause { message"
                            " cause { message cause { message } } } } } } } } }")
    except LaunchError:
        return ""
    entries = (data.get("workspaceOrError") or {}).get("locationEntries") or []
    for entry in entries:
        if entry["name"] == LOCATION:
            error = entry.get("locationOrLoadError") or {}
            if error.get("__typename") == "PythonError":
                while error.get("cause"):  # the innermost cause says what is wrong (Dagster wraps it)
                    error = error["cause"]
                first = _redacted(error.get("message", "")).split(" Stack Trace:")[0]
                first = re.sub(r"^[\w.]+(Error|Exception): ", "", first)
                return f": the code location {LOCATION} failed to load: {first[:500]}"
            return f" (the code location {LOCATION} is loaded but has no such job)"
    names = ", ".join(e["name"] for e in entries) or "none"
    return f": the webserver serves no code location {LOCATION} (it serves: {names})"


# -- raw GraphQL ---------------------------------------------------------------------------------------
def graphql(url: str | None, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST one GraphQL query to the webserver; its ``data``. Raises LaunchError."""
    base = base_url(url)
    try:
        with http_clients.client(timeout=request_timeout()) as client:
            response = client.post(f"{base}/graphql", json={"query": query, "variables": variables or {}})
    except httpx.ConnectError as exc:
        refused = isinstance(exc.__cause__ or exc.__context__, ConnectionRefusedError) or "refused" in str(exc)
        raise _unreachable(base, "connection refused" if refused else type(exc).__name__) from None
    except httpx.ConnectTimeout:
        raise _unreachable(base, "connection timed out") from None
    except httpx.TimeoutException:
        raise _no_answer(base) from None
    except httpx.HTTPError as exc:
        raise _unreachable(base, type(exc).__name__) from None
    try:
        body = response.json()
    except ValueError:
        if response.status_code >= 400:
            raise _http_error(base, response.status_code) from None
        raise LaunchError("server", f"the webserver at {base} answered without a GraphQL result: is it a Dagster"
                                    " webserver?") from None
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        message = "; ".join(_redacted(str(e.get("message", e) if isinstance(e, dict) else e)) for e in errors)
        raise LaunchError("server", f"the webserver at {base} refused the query: {message[:500]}")
    if response.status_code >= 400:
        raise _http_error(base, response.status_code)
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise LaunchError("server", f"the webserver at {base} answered without a GraphQL result: is it a Dagster"
                                    " webserver?")
    data: dict[str, Any] = body["data"]
    return data


_METADATA = """fragment M on MetadataEntry { __typename label
  ... on TextMetadataEntry { text } ... on PathMetadataEntry { path } ... on IntMetadataEntry { intRepr }
  ... on FloatMetadataEntry { floatValue } ... on BoolMetadataEntry { boolValue }
  ... on JsonMetadataEntry { jsonString } ... on MarkdownMetadataEntry { mdStr } ... on UrlMetadataEntry { url } }"""

_RUN = """query Run($runId: ID!) { runOrError(runId: $runId) { __typename
  ... on Run { runId jobName status startTime endTime tags { key value } }
  ... on RunNotFoundError { message } ... on PythonError { message } } }"""

_EVENTS = _METADATA + """
query Events($runId: ID!, $cursor: String) { logsForRun(runId: $runId, afterCursor: $cursor) { __typename
  ... on EventConnection { cursor hasMore events { __typename
    ... on MessageEvent { message level stepKey timestamp }
    ... on ExecutionStepOutputEvent { metadataEntries { ...M } }
    ... on ExecutionStepFailureEvent { error { message className cause { message className } }
                                       failureMetadata { metadataEntries { ...M } } } } }
  ... on RunNotFoundError { message } ... on PythonError { message } } }"""


def _value(entry: dict[str, Any]) -> Any:
    for key in ("text", "path", "floatValue", "boolValue", "mdStr", "url"):
        if key in entry:
            return entry[key]
    if "intRepr" in entry:
        return int(entry["intRepr"])
    if "jsonString" in entry:
        return json.loads(entry["jsonString"])
    return None


def run_info(run_id: str, url: str | None = None) -> dict[str, Any]:
    """runId, jobName, status, startTime, endTime and tags (a dict) of a Dagster run."""
    run = graphql(url, _RUN, {"runId": run_id})["runOrError"]
    if run["__typename"] == "RunNotFoundError":
        raise LaunchError("run_not_found", f"no run {shown(run_id)} on the webserver at {base_url(url)}")
    if run["__typename"] != "Run":
        raise LaunchError("server", f"the webserver at {base_url(url)} could not read run {shown(run_id)}:"
                                    f" {_redacted(run.get('message', run['__typename']))}")
    return {**run, "tags": {t["key"]: t["value"] for t in run["tags"]}}


def events(run_id: str, url: str | None = None, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """The run's events after ``cursor`` (all of them, page after page) and the new cursor."""
    collected: list[dict[str, Any]] = []
    while True:
        logs = graphql(url, _EVENTS, {"runId": run_id, "cursor": cursor})["logsForRun"]
        if logs["__typename"] != "EventConnection":
            raise LaunchError("run_not_found" if logs["__typename"] == "RunNotFoundError" else "server",
                              f"cannot read the events of run {shown(run_id)}: {_redacted(logs.get('message', ''))}")
        collected += logs["events"]
        cursor = logs["cursor"]
        if not logs["hasMore"]:
            return collected, cursor


# -- what a run says ----------------------------------------------------------------------------------
@dataclass
class RunReport:
    """A promotion run as the webserver knows it: Dagster's status and the promotion's outputs object."""

    dagster_run_id: str
    dagster_status: str
    tags: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the failed step's message (redacted)
    failed_step: str | None = None
    rejected: bool = False  # refused by an input rule or a precondition (only a rejection record exists)
    seconds: float | None = None

    @property
    def finished(self) -> bool:
        return self.dagster_status in FINISHED

    @property
    def status(self) -> str:
        """success | failed | rolled_back | rejected | cancelled, or Dagster's status while it runs."""
        if self.rejected:
            return "rejected"
        if self.outputs.get("status"):
            return str(self.outputs["status"])
        return {"SUCCESS": "success", "FAILURE": "failed", "CANCELED": "cancelled"}.get(
            self.dagster_status, self.dagster_status.lower())

    def outputs_object(self) -> dict[str, Any]:
        """The seed's outputs object (None where unknown), plus the Dagster run id."""
        out: dict[str, Any] = {key: self.outputs.get(key) or None for key in OUTPUT_KEYS}
        out["status"] = self.status
        out["dagster_run_id"] = self.dagster_run_id
        if self.error:
            out["error"] = self.error
        return out


def _apply(report: RunReport, batch: list[dict[str, Any]]) -> None:
    for event in batch:
        if event["__typename"] == "ExecutionStepOutputEvent":
            for entry in event.get("metadataEntries", []):
                if entry["label"] in OUTPUT_KEYS:
                    report.outputs[entry["label"]] = _value(entry)
        elif event["__typename"] == "ExecutionStepFailureEvent":
            report.failed_step = event.get("stepKey")
            error = event.get("error") or {}
            # An exception an op raised (not a Failure) comes wrapped in Dagster's 'Error occurred while executing
            # op "x":', which says nothing; the exception itself is its cause.
            while error.get("cause") and (error.get("className") or "").startswith("Dagster"):
                error = error["cause"]
            message = " ".join(_redacted(error.get("message", "")).split(" Stack Trace:")[0].split())
            # "module.path.ClassName: what happened" -> "what happened"
            cls_name = error.get("className") or ""
            report.error = (re.sub(rf"^[\w.]*\b{re.escape(cls_name)}: ", "", message, count=1) if cls_name
                            else message) or None
            report.rejected = "PromotionRejected" in cls_name
            for entry in (event.get("failureMetadata") or {}).get("metadataEntries", []):
                if entry["label"] in OUTPUT_KEYS:
                    report.outputs[entry["label"]] = _value(entry)


def report(run_id: str, url: str | None = None) -> RunReport:
    """The run's current status and outputs (from its event log)."""
    info = run_info(run_id, url)
    result = RunReport(dagster_run_id=run_id, dagster_status=info["status"], tags=info["tags"])
    batch, _ = events(run_id, url)
    _apply(result, batch)
    if info.get("startTime") and info.get("endTime"):
        result.seconds = round(info["endTime"] - info["startTime"], 1)
    return result


def follow(run_id: str, url: str | None = None, on_line: Callable[[str], None] | None = None,
           poll_seconds: float = 0.5, timeout: float | None = None) -> RunReport:
    """Wait for the run's end; hand each progress line of its event log and each status change to ``on_line``."""
    say = on_line or (lambda _line: None)
    deadline = None if timeout is None else time.monotonic() + timeout
    result = RunReport(dagster_run_id=run_id, dagster_status="")
    cursor: str | None = None
    while True:
        info = run_info(run_id, url)
        if info["status"] != result.dagster_status:
            result.dagster_status = info["status"]
            if not result.finished:
                say(f"Dagster run {run_id}: {info['status']}")
        result.tags = info["tags"]
        batch, cursor = events(run_id, url, cursor)
        for event in batch:
            if event["__typename"] == "LogMessageEvent" and event.get("stepKey"):
                say(event["message"])
        _apply(result, batch)
        if result.finished:
            if info.get("startTime") and info.get("endTime"):
                result.seconds = round(info["endTime"] - info["startTime"], 1)
            return result
        if deadline is not None and time.monotonic() > deadline:
            raise LaunchError("timeout", f"run {run_id} has not finished after {timeout:.0f}s (it goes on;"
                                         f" `promote status {run_id}` tells how it ends)")
        time.sleep(poll_seconds)


def launch(inputs: dict[str, Any], url: str | None = None, on_line: Callable[[str], None] | None = None,
           source: str = "graphql", timeout: float | None = None) -> RunReport:
    """Submit a promotion and wait for its end."""
    run_id = submit(inputs, url, source=source)
    if on_line:
        on_line(f"submitted: Dagster run {run_id} on {base_url(url)} ({base_url(url)}/runs/{run_id})")
    return follow(run_id, url, on_line, timeout=timeout)
