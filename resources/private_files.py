"""Owner-only folders and files: what artifacts, evidence and the secrets file are made of.

A production dump holds password hashes, ``database.secret`` and mail-server passwords; evidence and the secrets
file hold as much. Modes are set explicitly after creation, so the operator's umask neither loosens nor narrows
them, and temporary files are created exclusively under unique names, so a file (or a symlink) that was already
there is never written through nor inherits its mode.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path
from secrets import token_hex

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dirs(path: Path) -> Path:
    """Create ``path`` and its missing parents owner-only; ``path`` itself is tightened if it already existed."""
    created = []
    parent = path
    while not os.path.lexists(parent) and parent != parent.parent:
        created.append(parent)
        parent = parent.parent
    path.mkdir(parents=True, exist_ok=True)
    for folder in (path, *created):
        os.chmod(folder, DIR_MODE)
    return path


def create_exclusive(folder: Path, prefix: str, mode: int = FILE_MODE) -> tuple[int, str]:
    """A new file in ``folder`` under a unique name: never an existing file, never through a symlink."""
    name = str(folder / f"{prefix}{token_hex(8)}.tmp")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    os.fchmod(fd, mode)
    return fd, name


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically by an owner-only file holding ``data``."""
    fd, tmp = create_exclusive(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

