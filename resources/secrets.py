"""Resolving secret references.

The ops database and every configuration file store only *references* to secrets (the name of
an environment variable). The value is looked up at the moment of use: first in the process
environment, then in the JSON secrets file named by ``PROMOTE_SECRETS_FILE`` (a mode-0600 file,
which is how the sandbox hands its generated credentials to the CLI and to Dagster's daemon).
Values are never copied into models, evidence or logs; callers keep them in local variables.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from resources.private_files import write_private


class SecretsFileUnsafe(RuntimeError):
    """The secrets file is readable by group or others: refused, not read."""


class SecretNotFound(KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; say it plainly instead
        return str(self.args[0])


_configured_file: Path | None = None
_defaults: dict[str, str] = {}


def configure(secrets_file: str | None = None, defaults: dict[str, str] | None = None) -> None:
    """Set, for this process, the secrets file that the settings name (it wins over ``PROMOTE_SECRETS_FILE``)
    and the values of references that nothing else sets (the local PostgreSQL for the default ops DSN).
    Called when the resources are built from the settings; configuration never travels through
    ``os.environ``."""
    global _configured_file
    _configured_file = Path(secrets_file) if secrets_file else None
    _defaults.clear()
    _defaults.update(defaults or {})


def secrets_file() -> Path | None:
    if _configured_file is not None:
        return _configured_file
    name = os.environ.get("PROMOTE_SECRETS_FILE")
    return Path(name) if name else None


_parsed: dict[tuple[str, int, int, int], dict[str, str]] = {}


def _file_values() -> dict[str, str]:
    """The secrets file's values, parsed again only when the file changes: redaction asks for them hundreds
    of times per run (every evidence file, event and message)."""
    path = secrets_file()
    if path is None:
        return {}
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    if st.st_mode & 0o077:
        raise SecretsFileUnsafe(f"secrets file {path} has mode {st.st_mode & 0o777:04o}: readable by group or others;"
                                " chmod 600 it")
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    values = _parsed.get(key)
    if values is None:
        values = {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
        _parsed.clear()
        _parsed[key] = values
    return dict(values)


def resolve(ref: str) -> str:
    """The value behind ``ref``; raises SecretNotFound naming the reference (never a value)."""
    if ref in os.environ:
        return os.environ[ref]
    values = _file_values()
    if ref in values:
        return values[ref]
    if ref in _defaults:
        return _defaults[ref]
    raise SecretNotFound(f"secret reference {ref!r} is not set (environment or PROMOTE_SECRETS_FILE)")


def known_values() -> list[str]:
    """Every secret value this process can resolve through the secrets file, for redaction."""
    return [v for v in _file_values().values() if v]


def write_secrets_file(path: Path, values: dict[str, str]) -> None:
    """Write (or merge into) a secrets file created with mode 0600 from the start."""
    current: dict[str, str] = {}
    if path.exists():
        current = json.loads(path.read_text())
    current.update(values)
    write_private(path, json.dumps(current, indent=2, sort_keys=True).encode())
