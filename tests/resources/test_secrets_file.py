"""The secrets file is read again when it changes, and only then."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from resources import secrets

pytestmark = pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)


def test_a_changed_secrets_file_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secrets.json"
    monkeypatch.setattr(secrets, "_configured_file", None)  # no settings named a file in this process
    monkeypatch.setenv("PROMOTE_SECRETS_FILE", str(path))
    monkeypatch.delenv("REF_A", raising=False)
    with pytest.raises(secrets.SecretNotFound, match="REF_A"):
        secrets.resolve("REF_A")  # no file yet
    secrets.write_secrets_file(path, {"REF_A": "first-value"})
    assert secrets.resolve("REF_A") == "first-value"
    secrets.write_secrets_file(path, {"REF_A": "second-value", "REF_B": "other"})
    assert secrets.resolve("REF_A") == "second-value"
    assert sorted(secrets.known_values()) == ["other", "second-value"]
    path.unlink()
    assert secrets.known_values() == []


def test_secrets_file_is_owner_only_even_over_a_stale_0644_tmp(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    stale = path.with_suffix(".tmp")  # what an earlier, interrupted write left, with a loose mode
    stale.write_text("{}")
    stale.chmod(0o644)
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / ".secrets.json.tmp").symlink_to(elsewhere)  # a planted link at a predictable name
    previous = os.umask(0)
    try:
        secrets.write_secrets_file(path, {"REF_A": "value"})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not elsewhere.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and p not in (stale,)
                and not p.is_symlink()]


def test_a_secrets_file_readable_by_others_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secrets.json"
    secrets.write_secrets_file(path, {"REF_A": "value"})
    path.chmod(0o644)
    monkeypatch.setattr(secrets, "_configured_file", None)
    monkeypatch.setenv("PROMOTE_SECRETS_FILE", str(path))
    monkeypatch.delenv("REF_A", raising=False)
    with pytest.raises(secrets.SecretsFileUnsafe) as caught:
        secrets.resolve("REF_A")
    message = str(caught.value)
    assert str(path) in message and "0644" in message and "\n" not in message
    assert "value" not in message
    path.chmod(0o600)
    assert secrets.resolve("REF_A") == "value"
