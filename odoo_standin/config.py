"""What one ``serve`` process was told on its command line, shared by the HTTP and RPC layers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odoo_standin.databases import DbSelection


def version_info(server_version: str) -> list[Any]:
    """``"17.0"`` -> ``[17, 0, 0, "final", 0, ""]``, Odoo's ``version_info`` as JSON renders it."""
    major, _, minor = server_version.partition(".")
    return [int(major), int(minor or 0), 0, "final", 0, ""]


@dataclass(frozen=True)
class ServeConfig:
    dsn: str
    """DSN without a database name: every database is opened through it, its name put in."""
    data_dir: Path
    selection: DbSelection
    server_version: str = "17.0"
    proxy_mode: bool = False
    """Trust ``X-Forwarded-Host``/``-Proto`` for the request's URL root, as ``--proxy-mode`` does."""
    evented: bool = True
    """Whether ``/websocket`` can be served here: in threaded mode and in the websocket process, not in a
    prefork HTTP worker (whose websocket upgrades fail with a 500, as Odoo's do)."""
    websocket_port: int | None = None

    @property
    def version_info(self) -> list[Any]:
        return version_info(self.server_version)

    def filestore(self, db: str) -> Path:
        return (self.data_dir / "filestore" / db).resolve()

    @property
    def sessions_dir(self) -> Path:
        return self.data_dir / "sessions"
