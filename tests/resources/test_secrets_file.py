"""The secrets file is read again when it changes, and only then."""

from __future__ import annotations

from pathlib import Path

import pytest

from resources import secrets


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
