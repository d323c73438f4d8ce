"""The bridge from the promotion's progress lines to Dagster's event log.

Each line becomes an INFO message of the op that said it, redacted, so that the UI's run view shows
the same lines as the terminal, and ``promote launch`` can read them back through GraphQL and print
them with the same printer as ``promote run``.
"""

from __future__ import annotations

from dagster import OpExecutionContext

from promote_pipeline.promotion import progress
from resources.redaction import redact_text


def forward(line: str) -> None:
    """The line as an INFO message of the running op, if this thread runs one."""
    try:
        context = OpExecutionContext.get()
    except Exception:  # no op runs in this thread (a CLI command, a thread pool worker)
        return
    context.log.info(redact_text(line.strip()))


def install() -> None:
    """Subscribe the bridge in this process (idempotent): every process that runs the job's ops loads the
    code location, which calls this."""
    progress.subscribe(forward)
