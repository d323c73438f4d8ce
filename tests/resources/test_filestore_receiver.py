"""``artifact_folder.receive_filestore``: the landing side of a filestore the SSH store relays to a process host,
run here on a local folder (on a host it is the same function, sent as the program of ``python3 -c``)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from resources import artifact_folder
from resources.artifact_folder import ArtifactError, receive_filestore, send_file


def records(files: list[tuple[str, bytes, str | None]], end: bool = True) -> io.BytesIO:
    """The stream ``get-objects`` writes: each (relative name, content, tag: its SHA-1 unless given), then the end
    mark (unless ``end`` is false: a stream cut short)."""
    out = io.BytesIO()
    for rel, content, tag in files:
        send_file(out, io.BytesIO(content), 1_700_000_000_123_456_789, tag or hashlib.sha1(content).hexdigest(), rel)
    if end:
        out.write(b"E\n")
    out.seek(0)
    return out


def odoo(content: bytes) -> tuple[str, bytes, None]:
    sha1 = hashlib.sha1(content).hexdigest()
    return f"{sha1[:2]}/{sha1}", content, None


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".in-*")]


@pytest.mark.unit
def test_files_land_under_their_names_with_their_mtimes_and_the_counts_are_answered(tmp_path: Path) -> None:
    files = [odoo(b"a" * 10), odoo(b"b" * 3000), odoo(b"")]
    answer = io.BytesIO()
    receive_filestore(str(tmp_path / "fs"), records(files), answer)
    assert answer.getvalue() == b"3 3010\n"
    for rel, content, _tag in files:
        assert (tmp_path / "fs" / rel).read_bytes() == content
        assert (tmp_path / "fs" / rel).stat().st_mtime_ns == 1_700_000_000_123_456_789
        assert (tmp_path / "fs" / rel).stat().st_mode & 0o777 == 0o600  # owner-only: production's attachments
    assert not leftovers(tmp_path)


@pytest.mark.unit
def test_a_stream_cut_short_is_refused_and_leaves_only_whole_verified_files(tmp_path: Path) -> None:
    files = [odoo(b"first"), odoo(b"second")]
    with pytest.raises(ArtifactError, match="stream cut short after 2 files: no end mark"):
        receive_filestore(str(tmp_path / "fs"), records(files, end=False), io.BytesIO())
    # Inside a file: its partial copy is removed, never put in place.
    stream = records([odoo(b"x" * 5000)]).getvalue()
    with pytest.raises(ArtifactError, match="stream cut short"):
        receive_filestore(str(tmp_path / "cut"), io.BytesIO(stream[:2000]), io.BytesIO())
    assert not [p for p in (tmp_path / "cut").rglob("*") if p.is_file()]
    assert not leftovers(tmp_path)


@pytest.mark.unit
def test_content_that_is_not_its_objects_is_refused_and_not_put_in_place(tmp_path: Path) -> None:
    good = odoo(b"good")
    bad = ("ab/" + "ab" * 20, b"not what the name says", "ab" * 20)
    with pytest.raises(ArtifactError, match=f"arrived hashing to .*, not {'ab' * 20}"):
        receive_filestore(str(tmp_path / "fs"), records([good, bad]), io.BytesIO())
    assert (tmp_path / "fs" / good[0]).read_bytes() == b"good"
    assert not (tmp_path / "fs" / bad[0]).exists() and not leftovers(tmp_path)


@pytest.mark.unit
def test_a_name_outside_the_folder_or_one_already_there_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="refusing to write '../escape'"):
        receive_filestore(str(tmp_path / "fs"), records([("../escape", b"x", None)]), io.BytesIO())
    assert not (tmp_path / "escape").exists()
    twice = odoo(b"twice")
    receive_filestore(str(tmp_path / "again"), records([twice]), io.BytesIO())
    with pytest.raises(ArtifactError, match="is already there"):
        receive_filestore(str(tmp_path / "again"), records([twice]), io.BytesIO())


@pytest.mark.unit
def test_the_command_is_one_of_the_host_programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    # What SshFilestore.receive runs there: <folder> receive-filestore; a refusal is one line and exit 3.
    stream = records([odoo(b"x")], end=False)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(stream))
    assert artifact_folder.main([str(tmp_path / "fs"), "receive-filestore"]) == artifact_folder.REFUSED
    assert capsysbinary.readouterr().err == b"stream cut short after 1 files: no end mark\n"
