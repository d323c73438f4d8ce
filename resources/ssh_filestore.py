"""A filestore on a process host, read over SSH for the artifact store (``FilestoreObjects.ingest_filestore_from``).

Two calls over the host's shared connection. The listing: a short Python script there walks the folder the way
the local ingest walks one (sorted names, depth first; regular files only, never through a link) and prints each
file's relative name, size and mtime in nanoseconds, one JSON line each (names are any bytes: JSON keeps them
ASCII, newlines and undecodable bytes included, and ``os.fsencode`` gives the bytes back). The fetch: ``tar -c``
there reads the wanted names on its standard input (NUL-separated, taken verbatim: a name may start with ``-``)
and writes one tar stream, which Python's ``tarfile`` reads here member by member, so a file's bytes go straight
into the store's hashing and no local folder holds a copy first. Only metadata crosses for a file the store
already holds.

A third call lands a filestore relayed from the SSH artifact store (``SshFilestore.receive``): the store's stream
is the call's standard input, read by the store's own host program (``artifact_folder.receive_filestore``), which
hashes each file as it writes it and puts it in place only when its SHA-1 is its object's.

A file removed between the listing and the fetch (Odoo's file garbage collector) is not in the stream, and tar
says ``Cannot stat: No such file or directory`` of it: that is not an error (the local ingest counts it as
vanished too). Any other complaint of tar is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from resources import artifact_folder, redaction
from resources.odoo_host import HostError
from resources.ssh_session import SshSession

# Run by the host's Python with the folder as its argument; mirrors FilestoreObjects._walk.
_LIST = r"""
import json, os, stat, sys
root = os.fsencode(sys.argv[1])
skipped = 0
out = sys.stdout
def walk(rel):
    global skipped
    base = os.path.join(root, rel) if rel else root
    with os.scandir(base) as it:
        entries = sorted(it, key=lambda e: e.name)
    subdirs = []
    for e in entries:
        name = os.path.join(rel, e.name) if rel else e.name
        if e.is_dir(follow_symlinks=False):
            subdirs.append(name)
        elif e.is_file(follow_symlinks=False):
            st = e.stat(follow_symlinks=False)
            out.write(json.dumps([os.fsdecode(name), st.st_size, st.st_mtime_ns]) + "\n")
        else:
            skipped += 1
    for d in subdirs:
        walk(d)
if os.path.isdir(root):
    walk(b"")
out.write(json.dumps({"skipped": skipped}) + "\n")
"""

# The landing side of a filestore relayed from the SSH store: the store's own host program (standard library only),
# whose ``receive-filestore`` command writes and checks the files.
_RECEIVER = Path(artifact_folder.__file__).read_text()

_VANISHED = "Cannot stat: No such file or directory"
_CHANGED = "file changed as we read it"
_TAR_SUMMARY = "Exiting with failure status due to previous errors"


@dataclass
class SshFilestore:
    """One filestore folder on a process host (``SshOdooHost.filestore_source``, ``filestore_folder``)."""

    name: str  # the host's, as messages say it
    folder: str
    session: SshSession
    python: str
    timeout_seconds: float

    @property
    def where(self) -> str:
        return f"{self.session.where} folder {self.folder}"

    def receive(self, feed: IO[bytes]) -> tuple[int, int]:
        """The records of the SSH store's ``get-objects`` on ``feed`` (the read end of the store's pipe: handed to
        ssh as its standard input, so the bytes go from one connection into the other through the kernel, never
        through this process or a local file, and closed here) landed in the folder there by
        ``artifact_folder.receive_filestore``: each file hashed as it is written and put in place only when its
        SHA-1 is its object's. Returns (files, bytes) once the stream's end mark arrived; HostError otherwise."""
        q = shlex.quote
        remote = f"{q(self.python)} -c {q(_RECEIVER)} {q(self.folder)} receive-filestore"
        errors = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(self.session.command_argv(remote), stdin=feed, stdout=subprocess.PIPE,
                                    stderr=errors)
        finally:
            feed.close()  # the receiver holds it now: should it stop, the store's side sees a broken pipe
        try:
            out, _ = proc.communicate(timeout=self.timeout_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise HostError(f"on {self.name}: writing filestore {self.folder} did not finish within"
                            f" {self.timeout_seconds}s") from None
        errors.seek(0)
        words = redaction.redact_text(errors.read().decode(errors="replace").strip())
        errors.close()
        self.session.used(proc.returncode)
        if proc.returncode == 255:
            raise HostError(self.session.failure(words, over_shared=True))
        if proc.returncode != 0:
            last = words.splitlines()[-1] if words else "no message"
            raise HostError(f"on {self.name}: writing filestore {self.folder} failed (exit {proc.returncode}):"
                            f" {last[:300]}")
        counts = out.split()
        if len(counts) != 2 or not all(c.isdigit() for c in counts):
            raise HostError(f"on {self.name}: writing filestore {self.folder} gave no count ({out[:60]!r})")
        return int(counts[0]), int(counts[1])

    def list_files(self) -> tuple[list[tuple[str, int, int]], int]:
        """Every regular file of the folder there: (relative name, size, mtime_ns); and how many entries were not
        regular files. An absent folder is an empty filestore, as it is for the local ingest."""
        text = self.session.run_script(f"exec {shlex.quote(self.python)} -c {shlex.quote(_LIST)}"
                                       f" {shlex.quote(self.folder)}\n", timeout=self.timeout_seconds)
        lines = text.splitlines()
        try:
            end = json.loads(lines[-1]) if lines else None
            if not isinstance(end, dict) or "skipped" not in end:
                raise ValueError("no end line")
            files = [(str(rel), int(size), int(mtime)) for rel, size, mtime in map(json.loads, lines[:-1])]
        except ValueError as exc:
            raise HostError(f"on {self.name}: the listing of filestore {self.folder} is incomplete ({exc})") from None
        return files, int(end["skipped"])

    @contextlib.contextmanager
    def fetch(self, rels: Sequence[str]) -> Iterator[Iterator[tuple[str, IO[bytes]]]]:
        """The files ``rels`` (relative to the folder) as (name, readable) pairs from one ``tar -c`` stream there, in
        the order asked; those gone since the listing are not among them."""
        if not rels:
            yield iter(())
            return
        q = shlex.quote
        remote = (f"cd -- {q(self.folder)} && exec tar -c -f - --format=gnu --no-recursion --hard-dereference"
                  " --null --verbatim-files-from -T -")
        argv = self.session.command_argv(remote)
        errors = tempfile.TemporaryFile()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdin is not None and proc.stdout is not None
        # tar reads its list while it writes the archive: the list goes in from a thread, or both pipes could fill.
        feeder = threading.Thread(target=_feed, args=(proc.stdin, rels), daemon=True)
        feeder.start()
        finished = False
        unreadable = ""
        try:
            try:
                tar = tarfile.open(fileobj=proc.stdout, mode="r|", errors="surrogateescape")
            except tarfile.ReadError as exc:  # nothing came: tar's exit status and words below say why
                unreadable = str(exc)
                yield iter(())
            else:
                with tar:
                    yield _members(tar)
            finished = True
        finally:
            if not finished:
                proc.kill()
            with contextlib.suppress(OSError):
                while proc.stdout.read(1 << 16):  # the archive's end blocks
                    pass
            proc.stdout.close()
            code = proc.wait(timeout=self.timeout_seconds)
            feeder.join(timeout=self.timeout_seconds)
            errors.seek(0)
            words = redaction.redact_text(errors.read().decode(errors="replace").strip())
            errors.close()
            self.session.used(code)
        if code == 255:
            raise HostError(self.session.failure(words, over_shared=True))
        complaints = [ln for ln in words.splitlines()
                      if ln.strip() and not any(w in ln for w in (_VANISHED, _CHANGED, _TAR_SUMMARY))]
        # tar's exit 1: a file changed while it was read (what arrived was hashed: the index says what is stored);
        # exit 2 with only "no such file": files removed since the listing.
        if code not in (0, 1, 2) or complaints or unreadable:
            why = complaints[0] if complaints else unreadable or f"exit {code}"
            raise HostError(f"on {self.name}: reading filestore {self.folder} failed (exit {code}): {why[:300]}")


def _feed(pipe: IO[bytes], rels: Sequence[str]) -> None:
    try:
        for rel in rels:
            pipe.write(os.fsencode(rel) + b"\0")
    except (BrokenPipeError, ValueError):
        pass  # tar stopped reading (or the fetch was abandoned): its exit status says why
    finally:
        with contextlib.suppress(BrokenPipeError, ValueError):
            pipe.close()


def _members(tar: tarfile.TarFile) -> Iterator[tuple[str, IO[bytes]]]:
    for member in tar:
        reader = tar.extractfile(member) if member.isfile() else None
        if reader is not None:
            yield member.name, reader
