"""Secret redaction, applied before anything reaches disk, a log line or Dagster's event log.

Two nets: by *key* (a field named like a secret is blanked whatever its value) and by *content*
(a DSN with a password, an Authorization header, a bearer token, or any value this process has
resolved as a secret). Every secret the run resolves is registered here, so a secret that
appears somewhere unexpected (an error message quoting a DSN, say) is still caught.
"""

from __future__ import annotations

import re
from typing import Any

from resources import secrets

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|apikey|authorization|credential|private[_-]?key|admin_passwd)",
    re.IGNORECASE,
)
# Keys that name a secret *reference*, not a secret: their values are variable names.
_REFERENCE_KEY = re.compile(r"_ref$|^ref$", re.IGNORECASE)

_CONTENT_PATTERNS = [
    # PostgreSQL's constraint errors quote the whole row, whatever secret it holds
    (re.compile(r"(Failing row contains )\(.*\)", re.IGNORECASE), r"\1(" + REDACTED + ")"),
    # URL-style DSN: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]+:)([^@\s]+)(@)", re.IGNORECASE), r"\1" + REDACTED + r"\3"),
    # key=value DSN or config: password=..., passwd: ...
    (re.compile(r"((?:password|passwd|pwd|secret|token|api[_-]?key)\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s,;&]+)",
                re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"(authorization\s*[:=]\s*)(\w+\s+)?[^\s,;]+", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"(\bbearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1" + REDACTED),
]

_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value this process has resolved, so that it is redacted wherever it shows."""
    if value and len(value) >= 4:
        _registered.add(value)


def resolve_secret(ref: str) -> str:
    """Resolve a secret reference and register its value for redaction."""
    value = secrets.resolve(ref)
    register_secret(value)
    return value


def _known_values() -> list[str]:
    values = set(_registered)
    values.update(v for v in secrets.known_values() if len(v) >= 4)
    return sorted(values, key=len, reverse=True)


def redact_text(text: str) -> str:
    for value in _known_values():
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, repl in _CONTENT_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def is_secret_key(key: str) -> bool:
    """A field or column named like a secret (and not a reference to one)."""
    return bool(_SECRET_KEY.search(key)) and not _REFERENCE_KEY.search(key)


def redact(value: Any, key: str | None = None) -> Any:
    """A redacted deep copy of a JSON-like value."""
    if key is not None and is_secret_key(key):
        return REDACTED if value not in (None, "", False) else value
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
