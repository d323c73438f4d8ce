"""The evidence folder of a run: eleven files, the same structure for every run, secrets redacted.

``docs/evidence/<YYYYMMDD-HHMM>/promote/<run_id>/`` as the seed says. Every JSON file is a
redacted dump with a schema version; a step that was not reached still gets its file, saying so,
so a reader (or a script) never has to guess whether a file is missing or a step was skipped.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from promote_pipeline.promotion import guardrails, steps
from resources.private_files import make_private_dirs, write_private
from resources.redaction import redact, redact_text

SCHEMA_VERSION = 1


class EvidenceError(RuntimeError):
    """An evidence folder that must not or cannot be written; the message names the folder."""


def evidence_dir_for(root: str, started_at: datetime, run_id: str) -> Path:
    # Absolute from the start: the ops database stores it, and a rollback run elsewhere writes into it.
    return evidence_parent_for(root, started_at) / run_id


def evidence_parent_for(root: str, started_at: datetime) -> Path:
    return Path(root).absolute() / started_at.strftime("%Y%m%d-%H%M") / "promote"


def probe(folder: Path) -> None:
    """Create ``folder`` and write and remove a file in it, before anything is recorded that would need it;
    raises EvidenceError naming the folder and the OS error."""
    try:
        make_private_dirs(folder)
        fd, name = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise EvidenceError(f"evidence folder {folder} is not writable: {exc.strerror or exc}") from exc


def required_files() -> list[str]:
    return list(guardrails.current().evidence_files)


class Evidence:
    """Writer for one run's evidence folder, owner-only. Writes are atomic (temp file, then rename)."""

    def __init__(self, folder: str | Path) -> None:
        # An empty folder would be Path("") = the current directory: evidence goes only where it was chosen.
        if not str(folder) or not Path(folder).is_absolute():
            raise EvidenceError(f"evidence: refusing folder {str(folder)!r}: not an absolute path chosen for the run")
        self.folder = Path(folder)

    def create(self) -> None:
        make_private_dirs(self.folder)

    def _write(self, name: str, text: str) -> Path:
        # Owner-only: evidence names the installation's hosts, users and databases.
        make_private_dirs(self.folder)
        path = self.folder / name
        write_private(path, text.encode())
        return path

    def write_json(self, name: str, payload: BaseModel | dict[str, Any]) -> Path:
        data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        body = {"schema_version": SCHEMA_VERSION, **redact(json.loads(json.dumps(data, default=str)))}
        return self._write(name, json.dumps(body, indent=2) + "\n")

    def write_text(self, name: str, text: str) -> Path:
        return self._write(name, redact_text(text))

    def exists(self, name: str) -> bool:
        return (self.folder / name).exists()

    def read_json(self, name: str) -> dict[str, Any]:
        data = json.loads((self.folder / name).read_text())
        assert isinstance(data, dict)
        return data

    def missing(self) -> list[str]:
        return [name for name in required_files() if not (self.folder / name).exists()]

    def fill_not_reached(self, reason: str) -> list[str]:
        """Write a 'not reached' record for each step file still missing; return their names."""
        filled = []
        for name in self.missing():
            if name.endswith(".json") and name != steps.FINAL_STATUS_JSON:
                self.write_json(name, {"reached": False, "reason": reason})
                filled.append(name)
        return filled

    def paths(self) -> dict[str, str]:
        return {name: str(self.folder / name) for name in required_files()}
