"""The artifact store kept on a named host, reached over SSH: what lets a run worker on any machine back up and
restore.

The same calls as ``LocalArtifactStore`` (it is one, to the steps: a subclass whose every method that touches the
store's files is its own, which ``tests/hosts/test_ssh_artifact_store.py`` checks), the same layout under ``root``
on the host, the same contract. Each call is one run of ``artifact_folder.py`` (standard library only, sent
in the command: nothing is installed on the host but a Python 3) over the shared SSH connection of
``ssh_session.py`` (OpenSSH's ControlMaster; the key by secret reference; host keys checked against the settings'
known_hosts file, an unknown or changed key refused in one line).

- Filestore (backup): one call, under the host's shared lock from start to end (the collector never runs between
  "this object is there" and the index in place). The worker walks the filestore and sends the names that are
  object ids (Odoo's ``<ab>/<sha1>``); the host answers with the size and mtime of those it holds; a file whose
  object is there with its size and mtime is not read at all (as in the local store). The rest goes in one
  stream on the same call, hashed on the host as it is written and stored under the SHA-1 of what arrived; the
  host answers each with its SHA-1, and the worker writes the index from those answers.
- Dump (backup): pg_dump -Fd -j writes its files in parallel into a directory, so it writes into an owner-only
  folder of the worker (``spool_dir``) and the store sends that folder to the host in one stream once pg_dump is
  done, hashing each file as it reads it and comparing with the host's own hash of what it wrote; then removes
  it. Its table of contents is read (``pg_restore --list``) before it leaves.
- Dump (restore): pg_restore reads a directory dump only from a directory (its parallel jobs each open their
  table's file; it reads no directory format from a pipe), so the dump comes back in one stream into an
  owner-only folder of the worker, each file hashed as it lands and compared with the contract, and is removed as
  soon as pg_restore is done, failed or not. That is the one full local copy, for the length of the restore; the
  filestore is never copied twice: its objects stream straight into green's filestore folder.
- Verification (checksums of the dump, the index, and every object when ``deep``) runs on the host, over the
  stored bytes; only the result comes back.
- A filestore on a process host (``ssh_filestore.py``), relayed by the worker, which holds both logins (the hosts
  need no keys to each other): a backup lists it there, asks this host which objects it holds, fetches only the
  rest (one ``tar -c`` stream there) and passes each file on as a record of the same ``ingest`` call as it reads
  it; a restore hands the pipe of ``get-objects`` to the ssh call that lands the files on the process host
  (``artifact_folder.receive_filestore`` there: each file hashed as it is written, in place only when its SHA-1 is
  its object's, complete only at the stream's end mark). Nothing is kept on the worker; a failure on either side
  is one line naming both hosts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from dagster import InitResourceContext
from pydantic import Field, PrivateAttr

from resources import artifact_folder, redaction
from resources.artifact_folder import _HEX, DUMP_DIR, INDEX
from resources.artifact_store import ArtifactError, LocalArtifactStore
from resources.filestore_objects import FilestoreSource
from resources.odoo_host import HostError
from resources.private_files import make_private_dirs
from resources.ssh_filestore import SshFilestore
from resources.ssh_session import SshSession

# The host's side, sent as ``python3 -c`` in every call's command line: one argument of the remote shell, which
# Linux caps at 128 KiB (MAX_ARG_STRLEN); a unit test keeps the file well under it. Lists of any length (artifact
# ids, object ids) go through standard input, never the command line.
_HOST_PROGRAM = Path(artifact_folder.__file__).read_text()
_CONTRACT = "artifact.json"


class SshArtifactStore(LocalArtifactStore):
    """Artifacts in ``root`` on one host, over SSH. ``root`` is a folder *on that host*."""

    root: str = Field(description="Absolute path of the store's folder on the host: one sub-folder per artifact, and"
                      " the shared objects.")
    host: str = Field(description="Address or DNS name of the store's host: where its sshd listens (the name the"
                      " known_hosts file holds its key under).")
    ssh_port: int = Field(default=22, description="Port of the host's sshd.")
    user: str = Field(description="User to log in as on the host; it owns the store's folder and files.")
    identity_ref: str = Field(description="Secret reference to the client's private key: the key's text, or the"
                              " path of an owner-only key file.")
    known_hosts_file: str = Field(description="known_hosts file holding the host's key (under `host`); a key not"
                                  " there, or different, is refused.")
    python: str = Field(default="python3", description="Python 3 on the host, which runs the store's side of every"
                        " call (standard library only).")
    spool_dir: str = Field(default="", description="Folder on the worker for a dump in transit (written by pg_dump"
                           " before it is sent, or received before pg_restore reads it); owner-only sub-folders,"
                           " removed after use. Empty: the system's temporary folder.")
    connect_timeout_seconds: int = Field(default=10, description="How long ssh may take to connect.")
    command_timeout_seconds: float = Field(default=3600.0, description="How long one call may run (a call carries"
                                           " a whole filestore or dump).")
    control_persist_seconds: int = Field(default=120, description="How long the shared SSH connection stays open"
                                         " after its last use.")

    _runtime: dict[str, Any] = PrivateAttr(default_factory=dict)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    # -- the connection ---------------------------------------------------------------------------------
    def _session(self) -> SshSession:
        return SshSession(name="artifact store", address=self.host, port=self.ssh_port, user=self.user,
                          identity_ref=self.identity_ref, known_hosts_file=self.known_hosts_file,
                          connect_timeout_seconds=self.connect_timeout_seconds,
                          command_timeout_seconds=self.command_timeout_seconds,
                          control_persist_seconds=self.control_persist_seconds, runtime=self._runtime, lock=self._lock)

    @property
    def where(self) -> str:
        return f"{self._session().where}, root {self.root}"

    def _argv(self, command: str, *args: str) -> list[str]:
        remote = " ".join(shlex.quote(a) for a in (self.python, "-c", _HOST_PROGRAM, self.root, command, *args))
        try:
            return self._session().command_argv(remote)
        except HostError as exc:
            raise ArtifactError(str(exc)) from None

    def _failed(self, returncode: int, stderr: bytes) -> ArtifactError:
        self._session().used(returncode)
        words = redaction.redact_text(stderr.decode(errors="replace").strip())
        if returncode == 255:
            return ArtifactError(self._session().failure(words, over_shared=True))
        last = words.splitlines()[-1] if words else "no message"
        if returncode == artifact_folder.REFUSED:
            return ArtifactError(f"{self.where}: {last}"[:500])
        return ArtifactError(f"{self.where}: the host's side failed (exit {returncode}): {last}"[:500])

    def _call(self, command: str, *args: str, data: bytes = b"") -> bytes:
        """One call whose input and output fit in memory."""
        try:
            done = subprocess.run(self._argv(command, *args), input=data, capture_output=True,
                                  timeout=self.command_timeout_seconds)
        except subprocess.TimeoutExpired:
            raise ArtifactError(f"{self.where}: {command} did not finish within"
                                f" {self.command_timeout_seconds}s") from None
        if done.returncode != 0:
            raise self._failed(done.returncode, done.stderr)
        self._session().used(0)
        return done.stdout

    @contextmanager
    def _stream(self, command: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
        """One call streaming through its standard input and output; its failure raised when the block ends."""
        errors = tempfile.TemporaryFile()
        proc = subprocess.Popen(self._argv(command, *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=errors)
        try:
            yield proc
        except BaseException as exc:
            if isinstance(exc, (BrokenPipeError, _HostEnded)):
                # The host's side stopped reading or writing: it is ending, and its words say why (a full disk
                # there, say), which the killed process's status would hide.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            proc.kill()
            proc.wait()
            errors.seek(0)
            stderr = errors.read()
            errors.close()
            if proc.returncode not in (0, -9) and stderr.strip():  # the host said why: that is the failure
                raise self._failed(proc.returncode, stderr) from None
            raise
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()
        returncode = proc.wait(timeout=self.command_timeout_seconds)
        errors.seek(0)
        stderr = errors.read()
        errors.close()
        if returncode != 0:
            raise self._failed(returncode, stderr)
        self._session().used(0)

    def close(self) -> None:
        """The shared connection closed and its runtime folder removed."""
        self._session().close()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.close()

    # -- artifacts ------------------------------------------------------------------------------------------
    def ensure_root(self) -> Path:
        try:
            self._call("ensure", "1" if self.create_root else "0")
        except ArtifactError as exc:
            if str(exc).endswith("its root folder does not exist"):
                raise ArtifactError(f"{exc}: create it there, or set the store's create_root to true in the"
                                    " settings") from None
            raise
        return Path(self.root)

    def allocate(self, artifact_id: str) -> Path:
        path = self.folder(artifact_id)
        self._call("allocate", artifact_id, "1" if self.create_root else "0")
        return path

    def write_contract(self, artifact_id: str, contract_json: str) -> Path:
        self._call("put-file", artifact_id, _CONTRACT, data=contract_json.encode())
        return self.folder(artifact_id) / _CONTRACT

    def read_contract(self, artifact_id: str) -> dict[str, object]:
        try:
            data = json.loads(self._call("get-file", artifact_id, _CONTRACT))
        except ValueError as exc:
            raise ArtifactError(f"artifact {artifact_id}: manifest unreadable ({exc})") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"artifact {artifact_id}: manifest is not an object")
        return data

    def _spool(self, what: str) -> Path:
        base = make_private_dirs(Path(self.spool_dir)) if self.spool_dir else Path(tempfile.gettempdir())
        return Path(tempfile.mkdtemp(prefix=f"promote-{what}-", dir=base))  # 0700 from the start

    @contextmanager
    def receiving_dump(self, artifact_id: str) -> Iterator[Path]:
        """An owner-only folder of the worker for pg_dump; when the block ends without error, its table of contents
        read and the folder sent to the host (each file hashed as it is read, compared with the host's hash of what
        it wrote); removed in every case."""
        spool = self._spool("dump")
        try:
            yield spool / DUMP_DIR
            dump = spool / DUMP_DIR
            listing = subprocess.run([self.pg_restore_bin, "--list", str(dump)], capture_output=True, text=True)
            if listing.returncode != 0:
                raise ArtifactError(f"artifact {artifact_id}: pg_restore --list failed: {listing.stderr.strip()[:300]}")
            self._runtime.setdefault("toc", {})[artifact_id] = sum(
                1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
            sent: dict[str, tuple[str, int]] = {}
            with self._stream("put-dump", artifact_id) as proc:
                assert proc.stdin is not None and proc.stdout is not None
                for entry in sorted(os.scandir(dump), key=lambda e: e.name):
                    digest = hashlib.sha256()
                    with open(entry.path, "rb") as fh:
                        size = artifact_folder.send_file(proc.stdin, fh, 0, "-", entry.name, digest)
                    sent[entry.name] = (digest.hexdigest(), size)
                proc.stdin.write(b"E\n")
                proc.stdin.close()
                answers = proc.stdout.read().decode().splitlines()
            stored = {name: (sha, int(size)) for _d, sha, size, name in (a.split(" ", 3) for a in answers)}
            if stored != sent:
                raise ArtifactError(f"artifact {artifact_id}: the dump stored on {self.where} differs from the one"
                                    " sent")
        finally:
            shutil.rmtree(spool, ignore_errors=True)

    @contextmanager
    def readable_dump(self, artifact_id: str, db_dump: Mapping[str, Any]) -> Iterator[Path]:
        """The dump received into an owner-only folder of the worker, each file hashed as it lands and compared with
        the contract; removed when the block ends, whatever happened in it."""
        want = {str(f["name"]): (str(f["sha256"]), int(f["size_bytes"])) for f in db_dump.get("files") or []}
        spool = self._spool("restore")
        try:
            dump = spool / DUMP_DIR
            dump.mkdir(mode=0o700)
            got: dict[str, tuple[str, int]] = {}
            with self._stream("get-dump", artifact_id) as proc:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.close()
                while (header := artifact_folder.read_header(proc.stdout)) is not None:
                    name = artifact_folder.plain(header[2])
                    got[name] = artifact_folder.write_private(str(dump / name), artifact_folder.read_body(proc.stdout))
            for name in sorted(set(want) | set(got)):
                if got.get(name) != want.get(name):
                    raise ArtifactError(f"artifact {artifact_id}: db_dump file {name} as received from {self.where}"
                                        " differs from the contract")
            yield dump
        finally:
            shutil.rmtree(spool, ignore_errors=True)

    def free_bytes(self) -> int:
        return int(self._call("free"))

    def has_objects(self) -> bool:
        return self._call("has-objects") == b"1"

    # -- filestore --------------------------------------------------------------------------------------------
    def ingest_filestore(self, artifact_id: str, src: Path) -> dict[str, Any]:
        """Store the filestore ``src`` on the host for ``artifact_id``: only the objects it lacks are sent, in one
        stream, and the index. The same counts as the local store, and ``sent_files``/``sent_bytes``: what went
        over the wire."""
        facts = _facts()
        files = list(self._walk(src, facts)) if src.is_dir() else []
        paths = {rel: path for rel, path, _s, _m in files}

        def send(wanted: list[str], put: _Put) -> None:
            for rel in wanted:
                try:
                    fh = open(paths[rel], "rb")  # noqa: SIM115 (closed below)
                except FileNotFoundError:  # removed since the walk saw it (Odoo's file GC): not needed
                    continue
                with fh:
                    put(rel, fh, os.fstat(fh.fileno()).st_mtime_ns)

        return self._ingest(artifact_id, [(rel, size, mtime) for rel, _p, size, mtime in files], facts, send)

    def ingest_filestore_from(self, artifact_id: str, source: FilestoreSource) -> dict[str, Any]:
        """Store a filestore on a process host (``source``) on the store's host: relayed through this worker,
        which holds both logins (the hosts need no keys to each other). The listing (metadata only) comes from
        the process host; the store's host says which of the named objects it holds; only the files not trusted
        by name, size and mtime travel, in one stream from ``tar -c`` there, each record passed on to the store's
        host as it is read (nothing lands here) and hashed where it is written. A failure or a cut stream on
        either side fails the backup in one line naming both hosts; no index is written then."""
        route = f"filestore from {source.where} into {self.where}"
        try:
            facts = _facts()
            listing, facts["skipped_not_regular"] = source.list_files()
            mtimes = {rel: mtime for rel, _size, mtime in listing}

            def send(wanted: list[str], put: _Put) -> None:
                order = {rel: i for i, rel in enumerate(wanted)}
                last = -1
                with source.fetch(wanted) as arriving:
                    for rel, reader in arriving:
                        # The stream holds the wanted files in the order asked, less those gone meanwhile.
                        if order.get(rel, -1) <= last:
                            raise ArtifactError(f"{rel!r} arrived from {source.name} but was not asked for")
                        last = order[rel]
                        # The mtime of the listing, taken before the first byte was read: a write since leaves the
                        # file newer than its object, and the next backup reads it again.
                        put(rel, reader, mtimes[rel])

            return self._ingest(artifact_id, listing, facts, send)
        except (ArtifactError, HostError, tarfile.TarError, OSError, ValueError) as exc:
            why = (str(exc) or type(exc).__name__).removeprefix(f"{self.where}: ")
            raise ArtifactError(f"{route}: {why}"[:800]) from None

    def _ingest(self, artifact_id: str, listing: list[tuple[str, int, int]], facts: dict[str, int],
                send: Callable[[list[str], _Put], None]) -> dict[str, Any]:
        """One ``ingest`` call: the Odoo-named files of ``listing`` (relative name, size, mtime_ns) offered by
        name, the host's answer compared with their size and mtime, ``send`` asked for the rest (it ``put``s each
        it still finds, in the order asked), the index written from the host's SHA-1 of what it stored."""
        for rel, _size, _mtime in listing:
            if "\n" in rel:
                raise ArtifactError(f"filestore file name with a newline: {rel!r}")
        named = [rel.rpartition("/")[2] for rel, _s, _m in listing]
        candidates = sorted({n for n, (rel, _s, _m) in zip(named, listing, strict=True)
                             if len(n) == 40 and rel == f"{n[:2]}/{n}" and set(n) <= _HEX})
        lines: queue.Queue[bytes] = queue.Queue()
        index = bytearray()
        with self._stream("ingest", artifact_id) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            stdin = proc.stdin
            reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
            reader.start()
            stdin.write("".join(f"{n}\n" for n in candidates).encode() + b"E\n")
            stdin.flush()
            have: dict[str, tuple[int, int]] = {}
            while (line := _next(lines, proc)) != "E":
                _h, held, held_size, held_mtime = line.split(" ")
                have[held] = (int(held_size), int(held_mtime))
            trusted: list[bool] = []
            for (rel, size, mtime_ns), name in zip(listing, named, strict=True):
                known = have.get(name) if rel == f"{name[:2]}/{name}" else None
                trusted.append(known == (size, mtime_ns))
                if known is not None and known != (size, mtime_ns):
                    facts["rehashed_by_stat"] += 1
            sent: set[str] = set()

            def put(rel: str, fh: IO[bytes], mtime_ns: int) -> None:
                facts["sent_files"] += 1
                facts["sent_bytes"] += artifact_folder.send_file(stdin, fh, mtime_ns, rel.rpartition("/")[2], rel)
                sent.add(rel)

            send([rel for (rel, _s, _m), ok in zip(listing, trusted, strict=True) if not ok], put)
            stdin.write(b"E\n")
            stdin.flush()
            for (rel, size, _m), name, ok in zip(listing, named, trusted, strict=True):
                if ok:
                    sha1 = name
                elif rel not in sent:  # gone since the listing (Odoo's file GC): not needed
                    facts["vanished"] += 1
                    continue
                else:
                    _r, sha1, got, new = _next(lines, proc).split(" ")
                    if int(got) != size:  # written to while the backup ran: what was sent is what is stored
                        facts["changed_while_copied"] += 1
                        size = int(got)
                    if new == "1":
                        facts["new_objects"] += 1
                        facts["new_bytes"] += size
                    if name != sha1:
                        facts["renamed_by_content"] += 1
                index += f"{sha1} {size} {rel}\n".encode()
                facts["file_count"] += 1
                facts["size_bytes"] += size
            artifact_folder.send_file(stdin, io.BytesIO(bytes(index)), 0, "-", INDEX)
            stdin.close()
            _i, index_sha, index_size = _next(lines, proc).split(" ")
        if (index_sha, int(index_size)) != (hashlib.sha256(index).hexdigest(), len(index)):
            raise ArtifactError(f"artifact {artifact_id}: the index stored on {self.where} differs from the one sent")
        # ``fetched_*``: the names a backup's evidence gives what travelled from a process host.
        return {**facts, "fetched_files": facts["sent_files"], "fetched_bytes": facts["sent_bytes"],
                "index_sha256": index_sha, "index_bytes": len(index), "store": str(self.objects)}

    def iter_index(self, artifact_id: str) -> Iterator[tuple[str, int, str]]:
        for raw in self._call("get-file", artifact_id, INDEX).decode().splitlines():
            sha1, size, rel = raw.split(" ", 2)
            yield sha1, int(size), rel

    def materialize_filestore(self, artifact_id: str, dest: Path) -> dict[str, Any]:
        """The artifact's filestore streamed from the host into ``dest`` (new or empty), each file checked against
        its SHA-1 as it lands and given its object's mtime (so the next backup can trust it without reading it)."""
        dest.mkdir(parents=True, exist_ok=True)
        count = total = 0
        made: set[str] = set()
        with self._stream("get-objects", artifact_id) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            while (header := artifact_folder.read_header(proc.stdout)) is not None:
                mtime_ns, sha1, rel = header
                if rel.startswith("/") or ".." in rel.split("/"):
                    raise ArtifactError(f"artifact {artifact_id}: index names a path outside the filestore: {rel!r}")
                parent = rel.rpartition("/")[0]
                if parent and parent not in made:
                    os.makedirs(dest / parent, exist_ok=True)
                    made.add(parent)
                digest, size = hashlib.sha1(), 0
                # As the local store's copies: a new file (never through what is there), the usual mode.
                with os.fdopen(os.open(dest / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as out:
                    for chunk in artifact_folder.read_body(proc.stdout):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                if digest.hexdigest() != sha1:
                    raise ArtifactError(f"artifact {artifact_id}: filestore object {sha1} ({rel}) arrived from"
                                        f" {self.where} with content hashing to {digest.hexdigest()}")
                os.utime(dest / rel, ns=(mtime_ns, mtime_ns))
                count += 1
                total += size
        return {"streamed": count, "bytes": total}

    def send_filestore_to(self, artifact_id: str, target: SshFilestore) -> dict[str, Any]:
        """The artifact's filestore written into ``target``, a folder on a process host, relayed through this
        worker: the store's host sends each object of the index (``get-objects``) and its stream goes, through the
        kernel, straight into the ssh call that lands it there (``SshFilestore.receive``): one pipe, nothing read
        or kept here, the hosts need no keys to each other. Each file is hashed where it lands and put in place
        only when its SHA-1 is its object's; only the stream's end mark, sent once every object of the index was
        read, completes it. A failure on either side is one line naming both hosts."""
        route = f"filestore of {artifact_id} from {self.where} to {target.where}"
        errors = tempfile.TemporaryFile()
        landed: tuple[int, int] | None = None
        landing: HostError | None = None
        try:
            proc = subprocess.Popen(self._argv("get-objects", artifact_id), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=errors)
        except ArtifactError as exc:
            errors.close()
            raise ArtifactError(f"{route}: {exc}") from None
        assert proc.stdout is not None
        try:
            landed = target.receive(proc.stdout)
        except HostError as exc:
            landing = exc
        finally:
            if not proc.stdout.closed:
                proc.stdout.close()
            if landing is not None or landed is None:
                proc.kill()  # the landing side gave up: nothing reads the store's side any more
            code = proc.wait(timeout=self.command_timeout_seconds)
        errors.seek(0)
        stderr = errors.read()
        errors.close()
        self._session().used(code)
        sending = None if code == 0 else str(self._failed(code, stderr)).removeprefix(f"{self.where}: ")
        # The first cause said: the store's side failing cuts the stream short (the landing side says only that),
        # the landing side failing breaks the store's pipe (the store's side says only that).
        if sending is not None and (landing is None or "Broken pipe" not in sending) and code != -9:
            raise ArtifactError(f"{route}: the store's side failed: {sending}"[:800])
        if landing is not None or landed is None:
            raise ArtifactError(f"{route}: {landing or 'the landing side gave no count'}"[:800])
        return {"files": landed[0], "bytes": landed[1]}

    # -- verification (on the host) -----------------------------------------------------------------------
    def verify(self, artifact_id: str, db_dump: Mapping[str, Any], filestore: Mapping[str, Any],
               full: bool = True, deep: bool = False) -> dict[str, object]:
        """The local store's checks, run on the host over the stored bytes (see ``verify`` there)."""
        result = self._verify(artifact_id, {"db_dump": dict(db_dump), "filestore": dict(filestore), "full": full,
                                            "deep": deep})
        if isinstance(result.get("db_dump"), dict):
            result["db_dump"]["toc_entries"] = self._runtime.get("toc", {}).get(artifact_id)
        return result

    def _verify(self, artifact_id: str, request: dict[str, Any]) -> dict[str, Any]:
        return dict(json.loads(self._call("verify", artifact_id, data=json.dumps(request).encode())))

    def verify_dump(self, artifact_id: str, db_dump: Mapping[str, Any], full: bool = True) -> dict[str, object]:
        result = self._verify(artifact_id, {"db_dump": dict(db_dump), "full": full})["db_dump"]
        return {**result, "toc_entries": self._runtime.get("toc", {}).get(artifact_id)}

    def verify_filestore(self, artifact_id: str, filestore: Mapping[str, Any], full: bool = True,
                         deep: bool = False) -> dict[str, object]:
        return dict(self._verify(artifact_id, {"filestore": dict(filestore), "full": full, "deep": deep})["filestore"])

    # -- listing, deletion, garbage collection (on the host) -----------------------------------------------
    def artifact_ids(self) -> list[str]:
        return self._call("list").decode().split()

    def folder_usage(self, artifact_id: str) -> tuple[int, float]:
        total, newest = json.loads(self._call("usage", artifact_id))
        return int(total), float(newest)

    def remove_folder(self, artifact_id: str) -> bool:
        return self._call("remove", artifact_id) == b"1"

    def live_objects(self, without: frozenset[str] = frozenset()) -> set[str]:
        return set(self._call("live", data="".join(f"{a}\n" for a in sorted(without)).encode()).decode().split())

    def objects_freed_by(self, going: frozenset[str]) -> tuple[int, int]:
        count, total = json.loads(self._call("freed", data="".join(f"{a}\n" for a in sorted(going)).encode()))
        return int(count), int(total)

    def collect_garbage(self) -> dict[str, int]:
        return {k: int(v) for k, v in json.loads(self._call("gc")).items()}


class _HostEnded(ArtifactError):
    """The host's side closed its output before its answer was complete: it failed, and its error output says why."""


_Put = Callable[[str, IO[bytes], int], None]  # one file sent: (relative name, its content, its mtime_ns)


def _facts() -> dict[str, int]:
    return {"file_count": 0, "size_bytes": 0, "new_objects": 0, "new_bytes": 0, "renamed_by_content": 0,
            "skipped_not_regular": 0, "vanished": 0, "changed_while_copied": 0, "rehashed_by_stat": 0,
            "sent_files": 0, "sent_bytes": 0}


def _read_lines(pipe: IO[bytes], lines: queue.Queue[bytes]) -> None:
    for line in iter(pipe.readline, b""):
        lines.put(line)
    lines.put(b"")  # the host's side ended


def _next(lines: queue.Queue[bytes], proc: subprocess.Popen[bytes]) -> str:
    line = lines.get()
    if not line:
        raise _HostEnded("the host's side of the artifact store ended early")  # _stream says why, from stderr
    return line.decode().rstrip("\n")
