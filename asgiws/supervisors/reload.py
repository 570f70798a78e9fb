"""`--reload`: restart the server when the app's files change (development).

    reloader ── binds the listening socket(s) once, watches the files (asgiws.supervisors.watch)
        ├── python -c ... ─▶ server process: Server(config, sockets) on the inherited socket
        └── (on a change) python -c ... ─▶ the next server process, on the same socket

The reloader never imports the app. Each server process is a fresh interpreter (not a fork of
the reloader), so it imports every module of the app anew; it inherits the listening socket as a
file descriptor and reads its settings from a pipe. The socket stays open in the reloader for its
whole life, so no connection attempt is ever refused: while no process accepts, connections wait
in the backlog.

On a change (the new process is started before the old one is stopped):

1. a new server process starts, imports the app and runs its lifespan startup, while the old one
   goes on serving; it reports on a pipe once it accepts connections;
2. then the old one is asked to shut down gracefully for a restart (RESTART_SIGNAL): it stops
   accepting, finishes the requests in flight and closes each WebSocket with 1012 (Service
   Restart), whatever --ws-shutdown-close-code says, so clients reconnect, to the new process.

Why start the new one first: the time a request waits is then the new process's start (import
and lifespan startup) and nothing else. Stopping first would add the old process's graceful
shutdown to it: up to --timeout-graceful-shutdown when a WebSocket client is slow to close or a
response streams on (an open event stream in a browser tab). And an edit that does not import (a
syntax error) leaves the old process serving the old code, with the traceback in the log, until
the next change, instead of leaving nothing to serve. The cost: for a moment two processes run
the app, each with its own lifespan (an app that takes something exclusive at startup, such as
a file lock, cannot start its second copy; stop and start asgiws yourself in that case).

A change seen while a new process is still starting stops that one (it may have imported the
files before they changed) and starts another. A server process that exits on its own (a crash,
--limit-max-requests) is replaced at once; one that fails to start is logged, and the reloader
waits for the next change.

Signals to the reloader:

    SIGTERM, SIGINT  stop: SIGTERM to every server process (a graceful shutdown with
                     --ws-shutdown-close-code), then exit 0 once they are gone; a process still
                     running --timeout-graceful-shutdown + --timeout-lifespan-shutdown + 5 s
                     later is killed. A second signal forces them (SIGQUIT).
    SIGHUP           the same: a terminal that closes sends it, and a development server should
                     not outlive its terminal. (A --workers supervisor restarts on SIGHUP; here a
                     change to a file does.)

A server process ignores SIGHUP (the reloader decides) and handles the others as a --workers
worker does (asgiws.supervisors.multiprocess); it shuts down by itself when the reloader is gone.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Set

from asgiws.config import Config
from asgiws.logging import configure_logging
from asgiws.server import bind_sockets, close_sockets, describe_socket, make_ssl_context, origin_policy_warning
from asgiws.supervisors.multiprocess import RESTART_SIGNAL, SHUTDOWN_MARGIN, read_readiness, run_worker
from asgiws.supervisors.signals import SignalPipe
from asgiws.supervisors.watch import FileFilter, make_watcher

logger = logging.getLogger("asgiws.error")

# What a server process runs: serve_child() below. `-c`, not `-m`, so that this module is not
# imported twice (once as __main__).
CHILD_COMMAND = "from asgiws.supervisors.reload import serve_child; serve_child()"


class Phase(enum.Enum):
    RUNNING = "running"  # watching; a change starts a new server process
    STOPPING = "stopping"  # SIGTERM / SIGINT / SIGHUP: every process was told to stop


class ChildState(enum.Enum):
    BOOTING = "booting"  # importing the app, lifespan startup; not accepting yet
    SERVING = "serving"  # reported on its readiness pipe: accepting connections
    STOPPING = "stopping"  # sent RESTART_SIGNAL (replaced) or SIGTERM (the reloader stops)


class ServerProcess:
    """The reloader's view of one server process."""

    def __init__(self, process: subprocess.Popen[bytes], ready_fd: int, changes: Optional[List[Path]]) -> None:
        self.process = process
        self.pid = process.pid
        self.ready_fd: Optional[int] = ready_fd  # read end of the readiness pipe, until it reports
        self.changes = changes  # the changed files that started it (None: the first process)
        self.started = time.monotonic()
        self.state = ChildState.BOOTING
        self.kill_deadline = float("inf")  # monotonic; set when it is asked to stop


class ReloadSupervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.sockets: List[socket.socket] = []
        self.children: List[ServerProcess] = []
        self.phase = Phase.RUNNING
        self.forced = False
        self.announced = False  # "asgiws running on ..." is logged once, when the first process serves
        self.watcher: Any = None
        # Changed paths reported by the watcher thread, taken by the main thread when it wakes:
        # a set, so it holds each file once however often it changes (bounded by the tree).
        self._changed: Set[Path] = set()
        self._changed_lock = threading.Lock()
        self._change_r = self._change_w = -1
        self.signals = SignalPipe((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD))

    # -- the reloader's life -----------------------------------------------------------------

    def run(self) -> int:
        """Serve, restarting on changes, until SIGINT / SIGTERM / SIGHUP; the exit status (0).
        Raises StartupError when the socket cannot be bound or the TLS files do not load."""
        config = self.config
        make_ssl_context(config)  # a bad certificate or key fails here, once, not in every process
        self.sockets = bind_sockets(config)
        directories = [Path(d) for d in (config.reload_dir or (os.getcwd(),))]
        file_filter = FileFilter(config.reload_include or (), config.reload_exclude or ())
        try:
            self.signals.install()
            self._change_r, self._change_w = os.pipe()
            os.set_blocking(self._change_w, False)
            self.watcher = make_watcher(directories, file_filter, config.reload_delay, self._files_changed)
            logger.info("Started reloader process [%d] using %s, watching %s", os.getpid(), self.watcher.name,
                        ", ".join(_display(d) for d in self.watcher.directories))  # fmt: skip
            self.watcher.start()
            self._spawn(None)
            while self.phase is Phase.RUNNING or self.children:
                self._wait_for_events(self._timeout())
                self._reap()
                self._kill_overdue()
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            for fd in (self._change_r, self._change_w):
                if fd >= 0:
                    os.close(fd)
            self.signals.remove()
            self._close_sockets()
        logger.info("Stopping reloader process [%d]", os.getpid())
        return 0

    def _timeout(self) -> float:
        deadlines = [child.kill_deadline for child in self.children]
        return max(0.0, min([1.0] + [deadline - time.monotonic() for deadline in deadlines]))

    def _wait_for_events(self, timeout: float) -> None:
        """Sleep until a signal, a change, a process's readiness report, or `timeout`."""
        waiting = {child.ready_fd: child for child in self.children if child.ready_fd is not None}
        readable, _, _ = select.select([self.signals.fd, self._change_r, *waiting], [], [], timeout)
        for fd in readable:
            if fd == self.signals.fd:
                self._handle_signals()
            elif fd == self._change_r:
                self._take_changes()
            else:
                self._readiness_reported(waiting[fd])

    # -- changes -----------------------------------------------------------------------------

    def _files_changed(self, paths: List[Path]) -> None:
        """In the watcher's thread: hand the paths over and wake the main thread."""
        if self.watcher.stopping.is_set():  # the reloader is exiting, and closes the pipe
            return
        with self._changed_lock:
            self._changed.update(paths)
        try:
            os.write(self._change_w, b"!")
        except BlockingIOError:  # the pipe is full of wake-ups already: one is enough
            pass

    def _take_changes(self) -> None:
        try:
            os.read(self._change_r, 4096)
        except BlockingIOError:  # pragma: no cover - select said readable
            pass
        with self._changed_lock:
            changed, self._changed = sorted(self._changed), set()
        if not changed or self.phase is not Phase.RUNNING:
            return
        shown = ", ".join(_display(path) for path in changed[:5])
        if len(changed) > 5:
            shown += f" and {len(changed) - 5} more"
        logger.info("Detected changes in %s; restarting", shown)
        for child in self.children:
            if child.state is ChildState.BOOTING:  # it may have imported the files before they changed
                self._stop(child, signal.SIGTERM)
        self._spawn(changed)

    # -- server processes --------------------------------------------------------------------

    def _spawn(self, changes: Optional[List[Path]]) -> None:
        config = self.config
        settings = {field.name: getattr(config, field.name) for field in dataclasses.fields(Config)}
        settings["reload"] = False  # the server process serves; the reloader is this one
        socket_fds = [sock.fileno() for sock in self.sockets]
        settings_r, settings_w = os.pipe()
        ready_r, ready_w = os.pipe()
        # The interpreter's own flags (-X dev, -W, -O ...) carry over, as multiprocessing does it.
        # -B: no bytecode files. One records its source's modification time in whole seconds, so
        # an edit in the same second as the previous process's import that keeps the file's size
        # would make the next process load the old code from it.
        argv = [sys.executable, *subprocess._args_from_interpreter_flags(), "-B", "-c", CHILD_COMMAND,  # type: ignore[attr-defined]  # private; multiprocessing uses it the same way
                str(settings_r), str(ready_w), *map(str, socket_fds)]  # fmt: skip
        try:
            process = subprocess.Popen(argv, pass_fds=(settings_r, ready_w, *socket_fds))
        except OSError as exc:
            for fd in (settings_r, settings_w, ready_r, ready_w):
                os.close(fd)
            logger.error("Could not start a server process: %s; waiting for the next change", exc)
            return
        os.close(settings_r)
        os.close(ready_w)
        try:
            # A few hundred bytes, far below a pipe's capacity: this write does not block.
            with os.fdopen(settings_w, "wb") as stream:
                pickle.dump(settings, stream)
        except BrokenPipeError:  # it died at once; _reap says how
            pass
        self.children.append(ServerProcess(process, ready_r, changes))

    def _readiness_reported(self, child: ServerProcess) -> None:
        assert child.ready_fd is not None
        serving = read_readiness(child.ready_fd)
        child.ready_fd = None
        if not serving or child.state is not ChildState.BOOTING:
            return  # exiting (_reap says how), or told to stop while it was starting
        child.state = ChildState.SERVING
        if not self.announced:
            self.announced = True
            self._announce()
        elif child.changes is not None:
            logger.info("Reloaded in %.2fs: server process [%d] serves the new code",
                        time.monotonic() - child.started, child.pid)  # fmt: skip
        for other in self.children:
            if other is not child and other.state is ChildState.SERVING:
                self._stop(other, RESTART_SIGNAL)

    def _announce(self) -> None:
        tls = self.config.ssl_certfile is not None
        for sock in self.sockets:
            logger.info("asgiws running on %s, restarting when files change (Press CTRL+C to quit)",
                        describe_socket(sock, tls=tls))  # fmt: skip
        warning = origin_policy_warning(self.config, self.sockets, tls=tls)
        if warning is not None:
            logger.warning("%s", warning)

    def _stop(self, child: ServerProcess, sig: int) -> None:
        child.state = ChildState.STOPPING
        config = self.config
        child.kill_deadline = (time.monotonic() + config.timeout_graceful_shutdown
                               + config.timeout_lifespan_shutdown + SHUTDOWN_MARGIN)  # fmt: skip
        _signal(child, sig)

    def _reap(self) -> None:
        for child in list(self.children):
            status = child.process.poll()
            if status is None:
                continue
            self.children.remove(child)
            if child.ready_fd is not None:
                os.close(child.ready_fd)
            self._exited(child, _describe(status))

    def _exited(self, child: ServerProcess, how: str) -> None:
        if child.state is ChildState.STOPPING:
            logger.info("Server process [%d] stopped (%s)", child.pid, how)
        elif child.state is ChildState.BOOTING:
            serving = [other.pid for other in self.children if other.state is ChildState.SERVING]
            still = f"; server process [{serving[0]}] goes on serving the previous code" if serving else ""
            logger.error("Server process [%d] failed to start (%s)%s; waiting for the next change", child.pid,
                         how, still)  # fmt: skip
        elif self.phase is Phase.RUNNING:  # it was serving, and stopped on its own
            level = logging.INFO if how == "exit status 0" else logging.WARNING  # 0: --limit-max-requests
            logger.log(level, "Server process [%d] exited (%s); starting a new one", child.pid, how)
            if not any(other.state is ChildState.BOOTING for other in self.children):
                self._spawn(None)

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if now >= child.kill_deadline:
                logger.warning("Server process [%d] did not exit in time: killing it", child.pid)
                child.kill_deadline = float("inf")
                _signal(child, signal.SIGKILL)

    def _close_sockets(self) -> None:
        close_sockets(self.config, self.sockets)

    # -- signals (a SignalPipe wakes the select() in _wait_for_events) --------------------------

    def _handle_signals(self) -> None:
        for sig in self.signals.received():
            if sig not in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                continue  # SIGCHLD: _reap, which runs after every wake-up
            if self.phase is Phase.STOPPING:
                if not self.forced:
                    self.forced = True
                    logger.info("Second signal received: forcing the server processes to exit.")
                    for child in self.children:
                        _signal(child, signal.SIGQUIT)
                continue
            logger.info("Received %s: shutting down", signal.Signals(sig).name)
            self.phase = Phase.STOPPING
            for child in self.children:
                if child.state is not ChildState.STOPPING:
                    self._stop(child, signal.SIGTERM)


def _signal(child: ServerProcess, sig: int) -> None:
    try:
        os.kill(child.pid, sig)
    except ProcessLookupError:  # already gone; _reap will see it
        pass


def _describe(returncode: int) -> str:
    """subprocess's return code (negative: the signal that killed it) in words."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _display(path: Path) -> str:
    """A path relative to the current directory when it is under it: what the user typed."""
    try:
        return f"'{Path(path).relative_to(Path.cwd())}'" if Path(path) != Path.cwd() else "'.'"
    except ValueError:
        return f"'{path}'"


# ---------------------------------------------------------------------------------------------
# The server process side
# ---------------------------------------------------------------------------------------------


def serve_child() -> None:
    """A server process's whole life (CHILD_COMMAND): argv is the settings pipe, the readiness
    pipe, then the listening sockets, all inherited file descriptors."""
    # Until the event loop's handlers are in place: Ctrl+C reaches the whole process group, and the
    # reloader follows it with a SIGTERM, so a SIGINT here must not end the import in a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the reloader's (module docstring)
    settings_fd, ready_fd, *socket_fds = (int(arg) for arg in sys.argv[1:])
    with os.fdopen(settings_fd, "rb") as stream:
        settings = pickle.load(stream)  # written by the reloader, our parent: trusted
    config = Config(**settings)
    configure_logging(config.log_level, config.access_log, config.log_config, config.use_colors,
                      config.log_format)
    sockets = [socket.socket(fileno=fd) for fd in socket_fds]  # family and type from the descriptor
    sys.exit(run_worker(config, sockets, ready_fd))
