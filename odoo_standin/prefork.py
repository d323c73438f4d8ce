"""``serve --workers N``: Odoo's prefork process model (``odoo/service/server.py`` ``PreforkServer``).

A master process binds the HTTP socket and forks N HTTP workers that all accept on it, plus
one *websocket process* serving the whole app, websockets included, on ``--gevent-port`` (Odoo's
gevent process). The workers' ``/websocket`` answers 500; a router must send websocket traffic
to the other port, as with Odoo. (There is no cron worker: the stand-in runs no scheduled jobs.)

Nothing calls ``setsid``: every child stays in the master's process group and session, so
``kill -TERM -- -<pgid>`` reaches them all. Signals, as in Odoo:

- master, SIGTERM or SIGINT: graceful stop -- SIGKILL the websocket process, close the listening
  socket, SIGINT every worker, wait up to ``--limit-time-real`` seconds for them, then SIGTERM
  what is left; exit status 0. SIGCHLD: reap and respawn. SIGTTIN/SIGTTOU: one HTTP worker more
  or less. A worker that exits with status 3 (a critical error; the stand-in's
  ``crash_after_seconds`` fault) makes the master stop at once and exit with status 255.
- HTTP worker, SIGINT: finish the requests in progress, then exit; SIGTERM: the default action
  (immediate death). Every ``BEAT`` seconds it checks its parent: if the master is gone (killed
  with SIGKILL, say), it exits on its own -- but until then it keeps serving on the inherited
  socket. Killing the master's pid alone can therefore leave workers behind; stopping a
  deployment for sure means signalling its process group.
- websocket process: SIGTERM and SIGINT are default actions; it kills itself with SIGTERM when
  its parent changes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger(__name__)

BEAT = 4.0
"""Seconds between a child's checks of its parent, and the master's wake-ups (Odoo's ``beat``)."""
CRITICAL_EXIT = 3


@dataclass(frozen=True)
class PreforkOptions:
    host: str
    port: int
    websocket_port: int
    workers: int
    limit_time_real: float = 120.0


class _WorkerServer(uvicorn.Server):
    """uvicorn, with a prefork worker's signals: SIGINT is graceful, SIGTERM kills at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        signal.signal(signal.SIGINT, self.handle_exit)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        yield


class PreforkServer:
    def __init__(self, options: PreforkOptions, http_app: Callable[[], ASGIApp],
                 websocket_app: Callable[[], ASGIApp]) -> None:
        self.options = options
        self.population = options.workers
        self.http_app = http_app
        self.websocket_app = websocket_app
        self.workers: set[int] = set()
        self.websocket_pid: int | None = None
        self.queue: list[int] = []
        self.socket: socket.socket | None = None
        self.pipe = _pipe()
        # The master's pid, taken before any fork (Odoo's ``Worker.__init__`` sets ``self.ppid`` in the master):
        # a child that read ``getppid()`` itself would read init's pid if the master died between the fork and
        # that read, and would then never notice it was orphaned.
        self.master_pid = os.getpid()

    # -- master ------------------------------------------------------------------------------------
    def run(self) -> int:
        self.master_pid = os.getpid()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGTTIN,
                       signal.SIGTTOU):
            signal.signal(signum, self._on_signal)
        self.socket = _listen(self.options.host, self.options.port, 8 * self.population)
        log.info("HTTP service running on %s:%s with %d workers", self.options.host, self.options.port,
                 self.population)
        try:
            while True:
                self._process_signals()
                self._reap()
                self._spawn()
                self._sleep()
        except KeyboardInterrupt:
            self.stop(graceful=True)
            return 0
        except _CriticalWorker as exc:
            log.critical("Critical worker error (%s)", exc)
            self.stop(graceful=False)
            return 255

    def _on_signal(self, signum: int, frame: object) -> None:
        if len(self.queue) < 5 or signum == signal.SIGCHLD:
            self.queue.append(signum)
            with contextlib.suppress(BlockingIOError):
                os.write(self.pipe[1], b".")

    def _process_signals(self) -> None:
        while self.queue:
            signum = self.queue.pop(0)
            if signum in (signal.SIGINT, signal.SIGTERM):
                raise KeyboardInterrupt
            if signum == signal.SIGHUP:
                log.warning("SIGHUP: odoo_standin does not reload; ignored")
            elif signum == signal.SIGTTIN:
                self.population += 1
            elif signum == signal.SIGTTOU:
                self.population = max(0, self.population - 1)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == CRITICAL_EXIT:
                raise _CriticalWorker(pid)
            self.workers.discard(pid)
            if pid == self.websocket_pid:
                self.websocket_pid = None

    def _spawn(self) -> None:
        while len(self.workers) < self.population:
            self.workers.add(self._fork(self._run_http_worker))
        while len(self.workers) > self.population:
            self._kill(self.workers.pop(), signal.SIGINT)
        if self.websocket_pid is None:
            self.websocket_pid = self._fork(self._run_websocket_process)

    def _sleep(self) -> None:
        try:
            select.select([self.pipe[0]], [], [], BEAT)
            with contextlib.suppress(BlockingIOError):
                while os.read(self.pipe[0], 4096):
                    pass
        except InterruptedError:
            pass

    def stop(self, graceful: bool) -> None:
        if self.websocket_pid is not None:
            self._kill(self.websocket_pid, signal.SIGKILL)  # as Odoo does with its gevent process
            self.websocket_pid = None
        if self.socket is not None:
            self.socket.close()
        if graceful:
            log.info("Stopping gracefully")
            for pid in list(self.workers):
                self._kill(pid, signal.SIGINT)
            deadline = time.monotonic() + self.options.limit_time_real
            while self.workers and time.monotonic() < deadline:
                with contextlib.suppress(_CriticalWorker):
                    self._reap()
                time.sleep(0.1)
        for pid in list(self.workers):
            self._kill(pid, signal.SIGTERM)

    def _kill(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            self.workers.discard(pid)

    def _fork(self, child: Callable[[], None]) -> int:
        pid = os.fork()
        if pid:
            return pid
        status = 1
        try:
            os.close(self.pipe[0])
            os.close(self.pipe[1])
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGTTIN,
                           signal.SIGTTOU):
                signal.signal(signum, signal.SIG_DFL)
            child()
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("prefork child %d failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(status)

    # -- children ----------------------------------------------------------------------------------
    def _run_http_worker(self) -> None:
        assert self.socket is not None
        server = _WorkerServer(uvicorn.Config(self.http_app(), ws="none", lifespan="on", log_level="error",
                                              access_log=False, proxy_headers=False, timeout_graceful_shutdown=None))
        _watch_parent(server, self.master_pid, lambda: _leave(server))
        server.run(sockets=[self.socket])

    def _run_websocket_process(self) -> None:
        if self.socket is not None:
            self.socket.close()
        config = uvicorn.Config(self.websocket_app(), host=self.options.host, port=self.options.websocket_port,
                                lifespan="on", log_level="warning", access_log=False, proxy_headers=False)
        server = _WebsocketServer(config)
        _watch_parent(server, self.master_pid, _suicide)
        server.run()


class _CriticalWorker(Exception):
    pass


class _WebsocketServer(uvicorn.Server):
    """Odoo's gevent process keeps the default SIGTERM/SIGINT actions."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _watch_parent(server: uvicorn.Server, master_pid: int, when_orphaned: Callable[[], None]) -> None:
    """Every ``BEAT`` seconds (uvicorn's notify callback), check that the master is still our parent."""

    async def check() -> None:
        if os.getppid() != master_pid:
            when_orphaned()

    server.config.callback_notify = check
    server.config.timeout_notify = int(BEAT)


def _leave(server: uvicorn.Server) -> None:
    log.info("Worker (%s) Parent changed", os.getpid())
    server.should_exit = True


def _suicide() -> None:
    log.warning("Websocket process parent changed: %s", os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    for fd in (read_fd, write_fd):
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
    return read_fd, write_fd


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"odoo_standin serve: cannot listen on {host}:{port}: {errno.errorcode.get(exc.errno or 0)}"
                         ) from exc
    sock.listen(max(backlog, 8))
    sock.setblocking(False)
    return sock
