"""Worker processes: `--workers N` runs N copies of the server under one supervisor.

    supervisor ── binds the listening socket(s) once
        ├── fork ─▶ worker: Server(config, sockets) on its own event loop, its own lifespan
        ├── fork ─▶ worker
        └── ...

The workers accept on the same listening socket; the kernel hands each new connection to one of
them, and a worker holding more than its share of the connections stops accepting for a moment
so the others take the next ones (asgiws.supervisors.balance: the counts are in a table in
shared memory that the supervisor makes before the first fork). The supervisor never serves a
request and never imports the app (each worker does, after the fork, so a reload picks up new
code). It:

- starts the workers and waits until each is serving: a worker writes one byte to its readiness
  pipe once its lifespan startup is complete and it accepts connections. Then it logs the
  address. A worker that fails to boot at startup stops everything (the command exits with
  status 3);
- replaces a worker that dies (a crash, `kill -9`, --limit-max-requests reached). A worker that
  fails to boot later (a bad deploy) is retried with a growing delay while the others serve;
- health check (--timeout-worker-healthcheck, uvicorn's): a thread in each worker writes a byte
  to its health pipe every HEALTH_INTERVAL; a worker silent for the timeout — stopped, or stuck
  in code that holds the GIL — is SIGKILLed, then replaced as a dead one. A thread, not the event
  loop, answers, as in uvicorn: a slow handler on the loop does not get its worker killed;
- SIGTERM / SIGINT: sends SIGTERM to every worker (each shuts down gracefully: see
  asgiws.server), waits up to --timeout-graceful-shutdown, --timeout-lifespan-shutdown and
  SHUTDOWN_MARGIN, then SIGKILLs
  what is left. A second signal forces the workers to stop waiting (SIGQUIT to each);
- SIGHUP: replaces the workers one at a time: start a new one, wait until it is serving, then
  stop an old one gracefully. The listening socket stays open in the supervisor throughout, so no
  connection is refused: at worst it waits in the backlog for a moment.

A worker's signals, with both the supervisor and the outside world sending them:

    SIGTERM  shut down gracefully; a repeat changes nothing (systemd's default KillMode sends
             SIGTERM to every process of the service, and the supervisor forwards one too)
    SIGINT   the same, but a second SIGINT forces the exit (Ctrl+C reaches the whole process
             group, the supervisor's SIGTERM arriving before or after it)
    SIGQUIT  force the exit: stop waiting for connections (the supervisor's second signal)
    SIGUSR1  shut down gracefully for a restart (RESTART_SIGNAL): as SIGTERM, but every WebSocket
             gets Close 1012 (Service Restart) whatever --ws-shutdown-close-code says. The
             supervisors send it to a worker they replace: a SIGHUP rolling restart, --reload
    SIGHUP   ignored (it is the supervisor's: a reload)

A worker whose supervisor is gone (SIGKILLed) notices within a second and shuts down gracefully.

--metrics-port: each worker records into prometheus-client's multiprocess directory, which the
supervisor makes (and names in PROMETHEUS_MULTIPROC_DIR) before the first fork and removes when
it exits; one more child, the exporter, serves their sum on the metrics socket the supervisor
bound, and is restarted if it dies. The supervisor removes a dead worker's gauge files, so its
connections stop counting as open (asgiws.metrics).

Why fork rather than spawn: the supervisor has no threads and no event loop and has not imported
the app, so a forked worker starts clean, and it inherits the listening sockets and its pipe
without any passing of descriptors. Each worker then creates its own event loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

from asgiws import metrics
from asgiws.asgi.app import AppImportError
from asgiws.config import Config
from asgiws.supervisors.balance import AcceptBalance, ConnectionTable
from asgiws.supervisors.signals import SignalPipe
from asgiws.server import (
    Server,
    StartupError,
    bind_sockets,
    close_sockets,
    describe_socket,
    make_ssl_context,
    origin_policy_warning,
    run_event_loop,
)

logger = logging.getLogger("asgiws.error")

# On shutdown, how long past --timeout-graceful-shutdown and --timeout-lifespan-shutdown (the
# worker's lifespan shutdown runs after the first) to wait for a worker before killing it.
SHUTDOWN_MARGIN = 5.0

# A worker that fails to boot after startup is retried after this delay, doubling up to the max.
RESPAWN_DELAY, RESPAWN_DELAY_MAX = 0.5, 30.0

# How often a worker checks that its supervisor is still there.
PARENT_CHECK_INTERVAL = 1.0

# How often a worker's health thread writes to its pipe (at most; less with a short timeout).
HEALTH_INTERVAL = 1.0

# Sent to a worker that is being replaced (module docstring): not SIGHUP, which is the
# supervisor's own, and which a terminal's hangup sends to the whole process group. (Looked up
# with getattr: where there is no SIGUSR1 there is no fork and no supervisor, but this module
# must still import.)
RESTART_SIGNAL: int = getattr(signal, "SIGUSR1", 0)  # 0: no such signal (and no worker to send it to)


class Phase(enum.Enum):
    BOOTING = "booting"  # the first workers are starting; none has failed
    RUNNING = "running"  # serving; dead workers are replaced; SIGHUP reloads
    STOPPING = "stopping"  # every worker was sent SIGTERM; waiting for them to exit


class WorkerProcess:
    """The supervisor's view of one worker."""

    def __init__(self, pid: int, ready_fd: int, generation: int, health_fd: Optional[int] = None,
                 slot: Optional[int] = None) -> None:  # fmt: skip
        self.pid = pid
        self.slot = slot  # its row in the supervisor's ConnectionTable, if it got one
        self.ready_fd: Optional[int] = ready_fd  # read end of the readiness pipe, until it reports
        self.health_fd = health_fd  # read end of the health pipe (--timeout-worker-healthcheck)
        self.last_heard = time.monotonic()
        self.generation = generation  # SIGHUP starts a new generation and retires the older ones
        self.ready = False
        self.stopping = False  # sent SIGTERM: its exit is expected


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.sockets: List[socket.socket] = []
        self.workers: Dict[int, WorkerProcess] = {}
        self.phase = Phase.BOOTING
        self.generation = 0
        self.exit_status = 0
        self.kill_deadline = 0.0
        self.forced = False
        self.boot_failures = 0  # in a row; sets the respawn delay
        self.next_spawn = 0.0  # monotonic time before which no worker is started
        self.reloading = False
        self.signals = SignalPipe((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD))
        # --metrics-port: the workers' shared directory, the listener, and the exporter child.
        self.metrics_dir: Optional[str] = None
        self.metrics_socket: Optional[socket.socket] = None
        self.exporter_pid = 0
        # Open connections per worker, in shared memory (asgiws.supervisors.balance): a row for
        # each worker, and as many again for the ones a rolling restart or respawn starts while
        # old ones drain.
        self.table = ConnectionTable(2 * config.workers) if config.workers > 1 else None

    # -- the supervisor's life ---------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGINT / SIGTERM; the exit status. Raises StartupError."""
        config = self.config
        make_ssl_context(config)  # a bad certificate or key fails here, once, not in every worker
        self.sockets = bind_sockets(config)
        try:
            if config.metrics_port is not None:
                self._prepare_metrics()
        except BaseException:
            self._close_sockets()
            raise
        self.signals.install()
        try:
            logger.info("Started supervisor process [%d]; starting %d workers", os.getpid(), config.workers)
            while self.phase is not Phase.STOPPING or self.workers:
                self._spawn_missing()
                if self.metrics_socket is not None and not self.exporter_pid and self.phase is not Phase.STOPPING:
                    self._spawn_exporter()
                self._wait_for_events(self._timeout())
                self._reap()
                if self.phase is Phase.BOOTING and len(self.workers) == config.workers and all(
                    worker.ready for worker in self.workers.values()
                ):
                    self.phase = Phase.RUNNING
                    for sock in self.sockets:
                        logger.info("asgiws running on %s with %d workers (Press CTRL+C to quit)",
                                    describe_socket(sock, tls=config.ssl_certfile is not None), config.workers)  # fmt: skip
                    warning = origin_policy_warning(config, self.sockets, tls=config.ssl_certfile is not None)
                    if warning is not None:
                        logger.warning("%s", warning)
                if self.phase is Phase.RUNNING:
                    self._advance_reload()
                elif self.phase is Phase.STOPPING and time.monotonic() >= self.kill_deadline:
                    self._kill_all()
        finally:
            self._stop_exporter()
            self.signals.remove()
            self._close_sockets()
        logger.info("Supervisor [%d] exiting", os.getpid())
        return self.exit_status

    def _timeout(self) -> float:
        now = time.monotonic()
        if self.phase is Phase.STOPPING:
            return max(0.0, min(1.0, self.kill_deadline - now))
        longest = 1.0 if self.config.timeout_worker_healthcheck is None else min(1.0, self._health_interval())
        if self.next_spawn > now:
            return min(longest, self.next_spawn - now)
        return longest

    def _health_interval(self) -> float:
        timeout = self.config.timeout_worker_healthcheck
        assert timeout is not None, "called only with a health check"
        return min(HEALTH_INTERVAL, timeout / 4)

    def _wait_for_events(self, timeout: float) -> None:
        """Sleep until a signal arrives, a worker reports ready, or `timeout`; handle what came."""
        waiting = {worker.ready_fd: worker for worker in self.workers.values() if worker.ready_fd is not None}
        health = {worker.health_fd: worker for worker in self.workers.values() if worker.health_fd is not None}
        try:
            readable, _, _ = select.select([self.signals.fd, *waiting, *health], [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
            readable = []
        for fd in readable:
            if fd == self.signals.fd:
                self._handle_signals()
            elif fd in waiting:
                self._readiness_reported(waiting[fd])
            else:
                self._heard_from(health[fd])
        self._check_health()

    def _readiness_reported(self, worker: WorkerProcess) -> None:
        assert worker.ready_fd is not None
        serving = read_readiness(worker.ready_fd)
        worker.ready_fd = None
        if serving:  # else: the pipe closed without a word, the worker is exiting; _reap tells why
            worker.ready = True
            self.boot_failures = 0
            logger.info("Worker [%d] is serving", worker.pid)

    # -- health check ------------------------------------------------------------------------

    def _heard_from(self, worker: WorkerProcess) -> None:
        assert worker.health_fd is not None
        try:
            data = os.read(worker.health_fd, 512)
        except OSError:
            data = b""
        if data:
            worker.last_heard = time.monotonic()
        else:  # the worker is exiting; _reap tells how
            os.close(worker.health_fd)
            worker.health_fd = None

    def _check_health(self) -> None:
        timeout = self.config.timeout_worker_healthcheck
        if timeout is None:
            return
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.health_fd is not None and now - worker.last_heard > timeout:
                logger.warning("Worker [%d] did not answer the health check for %gs: killing it", worker.pid, timeout)
                os.close(worker.health_fd)
                worker.health_fd = None
                self._signal(worker, signal.SIGKILL)  # _reap replaces it

    # -- starting and replacing workers ------------------------------------------------------

    def _active(self) -> List[WorkerProcess]:
        return [worker for worker in self.workers.values() if not worker.stopping]

    def _spawn_missing(self) -> None:
        if self.phase is Phase.STOPPING or time.monotonic() < self.next_spawn:
            return
        while len(self._active()) < self.config.workers and time.monotonic() >= self.next_spawn:
            self._spawn()

    def _free_slot(self) -> Optional[int]:
        if self.table is None:
            return None
        taken = {worker.slot for worker in self.workers.values()}
        return next((slot for slot in range(self.table.slots) if slot not in taken), None)

    def _spawn(self) -> None:
        slot = self._free_slot()
        ready_r, ready_w = os.pipe()
        health_r, health_w = os.pipe() if self.config.timeout_worker_healthcheck is not None else (None, None)
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: try again later, keep serving
            for fd in (ready_r, ready_w, health_r, health_w):
                if fd is not None:
                    os.close(fd)
            logger.error("Could not start a worker: %s; trying again in %.1fs", exc, RESPAWN_DELAY_MAX)
            self.next_spawn = time.monotonic() + RESPAWN_DELAY_MAX
            return
        if pid == 0:  # the worker: never return into the supervisor's code
            status = 1
            try:
                os.close(ready_r)
                self._in_child()
                if self.metrics_socket is not None:  # the exporter's
                    self.metrics_socket.close()
                if health_r is not None and health_w is not None:
                    os.close(health_r)
                    _start_health_thread(health_w, self._health_interval())
                balance = None
                if self.table is not None and slot is not None:  # its row was cleared at the last reap
                    balance = AcceptBalance(self.table, slot, self.config.workers)
                status = run_worker(self.config, self.sockets, ready_w, balance)
            finally:
                os._exit(status)
        os.close(ready_w)
        if health_w is not None:
            os.close(health_w)
        self.workers[pid] = WorkerProcess(pid, ready_r, self.generation, health_r, slot)

    def _in_child(self) -> None:
        """Right after the fork: drop what belongs to the supervisor."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor's signal (a reload), not ours
        self.signals.close()
        for fd in [w.ready_fd for w in self.workers.values() if w.ready_fd]:
            os.close(fd)
        for fd in [w.health_fd for w in self.workers.values() if w.health_fd is not None]:
            os.close(fd)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.exporter_pid:
                self.exporter_pid = 0  # restarted by the main loop unless stopping
                if self.phase is not Phase.STOPPING:
                    logger.warning("Metrics exporter [%d] ended (%s); starting a new one", pid, _describe_status(status))
                continue
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if self.metrics_dir is not None:
                metrics.worker_exited(pid)
            if self.table is not None and worker.slot is not None:
                self.table.clear(worker.slot)  # its connections are gone with it
            for fd in (worker.ready_fd, worker.health_fd):
                if fd is not None:
                    os.close(fd)
            self._worker_exited(worker, status)

    def _worker_exited(self, worker: WorkerProcess, status: int) -> None:
        how = _describe_status(status)
        if worker.stopping:
            logger.info("Worker [%d] stopped (%s)", worker.pid, how)
        elif not worker.ready:
            if self.phase is Phase.BOOTING:
                logger.error("Worker [%d] failed to boot (%s): stopping", worker.pid, how)
                self.exit_status = 1
                self._stop()
            else:
                self.boot_failures += 1
                delay = min(RESPAWN_DELAY * 2 ** (self.boot_failures - 1), RESPAWN_DELAY_MAX)
                logger.error("Worker [%d] failed to boot (%s); trying again in %.1fs", worker.pid, how, delay)
                self.next_spawn = time.monotonic() + delay
        elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            logger.info("Worker [%d] exited (%s); starting a new one", worker.pid, how)  # --limit-max-requests
        else:
            logger.warning("Worker [%d] died (%s); starting a new one", worker.pid, how)

    # -- SIGHUP: a rolling restart -----------------------------------------------------------

    def _reload(self) -> None:
        self.generation += 1
        self.reloading = True
        logger.info("Received SIGHUP: replacing %d workers one at a time", len(self._active()))

    def _advance_reload(self) -> None:
        """One step at a time: a new worker first; once it (and every other) is serving, stop
        one old worker gracefully; repeat until none of an older generation is left."""
        if not self.reloading:
            return
        active = self._active()
        old = [worker for worker in active if worker.generation < self.generation]
        if not old:
            self.reloading = False
            logger.info("Reload complete")
        elif any(not worker.ready for worker in active):
            return  # a new worker is starting
        elif len(active) <= self.config.workers:
            if time.monotonic() >= self.next_spawn:
                self._spawn()
        else:
            self._signal(old[0], RESTART_SIGNAL)
            old[0].stopping = True

    # -- stopping ----------------------------------------------------------------------------

    def _stop(self) -> None:
        if self.phase is Phase.STOPPING:
            return
        self.phase = Phase.STOPPING
        self.reloading = False
        self.kill_deadline = (time.monotonic() + self.config.timeout_graceful_shutdown
                              + self.config.timeout_lifespan_shutdown + SHUTDOWN_MARGIN)
        logger.info("Shutting down: stopping %d workers", len(self.workers))
        for worker in self.workers.values():
            worker.stopping = True
            self._signal(worker, signal.SIGTERM)

    def _force(self) -> None:
        if self.forced:
            return
        self.forced = True
        logger.info("Second signal received: forcing the workers to exit.")
        for worker in self.workers.values():
            self._signal(worker, signal.SIGQUIT)

    def _kill_all(self) -> None:
        for worker in self.workers.values():
            logger.warning("Worker [%d] did not exit in time: killing it", worker.pid)
            self._signal(worker, signal.SIGKILL)
        self.kill_deadline = float("inf")
        for pid in list(self.workers):  # SIGKILL cannot be caught: wait for each (briefly)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.workers.pop(pid, None)

    @staticmethod
    def _signal(worker: WorkerProcess, sig: int) -> None:
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:  # already gone; _reap will see it
            pass

    # -- metrics -----------------------------------------------------------------------------

    def _prepare_metrics(self) -> None:
        """Before the first fork: the directory every process's figures go to (set in the
        environment before prometheus-client is imported anywhere: it picks its mode on import),
        and the listener. Raises ConfigError (the extra is missing), StartupError."""
        self.metrics_dir = tempfile.mkdtemp(prefix="asgiws-metrics-")
        os.environ[metrics.MULTIPROC_ENV] = self.metrics_dir
        metrics.check_available()  # the caller's cleanup (_close_sockets) removes the directory
        try:
            assert self.config.metrics_port is not None, "called only with --metrics-port"
            self.metrics_socket = metrics.bind(self.config.metrics_host, self.config.metrics_port)
        except OSError as exc:
            where = f"{self.config.metrics_host}:{self.config.metrics_port}"
            raise StartupError(f"Could not listen for metrics on {where}: {exc.strerror or exc}") from None
        logger.info("Metrics on %s (the sum of the workers', kept in %s)", metrics.describe(self.metrics_socket),
                    self.metrics_dir)  # fmt: skip

    def _spawn_exporter(self) -> None:
        assert self.metrics_socket is not None
        try:
            pid = os.fork()
        except OSError as exc:
            logger.error("Could not start the metrics exporter: %s", exc)
            return
        if pid == 0:
            status = 1
            try:
                self._in_child()
                for sock in self.sockets:  # it serves metrics only
                    sock.close()
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C: the supervisor stops it last
                metrics.exporter_main(self.metrics_socket)
                status = 0
            except BaseException as exc:  # noqa: BLE001 - never unwind into the supervisor's code
                logger.error("Metrics exporter failed", exc_info=exc)
            finally:
                os._exit(status)
        self.exporter_pid = pid

    def _stop_exporter(self) -> None:
        """After the last worker: stop the exporter, then remove the figures' directory."""
        if self.exporter_pid:
            try:
                os.kill(self.exporter_pid, signal.SIGKILL)  # it holds no state of its own
                os.waitpid(self.exporter_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.exporter_pid = 0
        if self.metrics_socket is not None:
            self.metrics_socket.close()
            self.metrics_socket = None
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            if os.environ.get(metrics.MULTIPROC_ENV) == self.metrics_dir:
                del os.environ[metrics.MULTIPROC_ENV]
            self.metrics_dir = None

    def _close_sockets(self) -> None:
        self._stop_exporter()
        close_sockets(self.config, self.sockets)

    # -- signals (a SignalPipe wakes the select() in _wait_for_events) --------------------------

    def _handle_signals(self) -> None:
        for sig in self.signals.received():
            if sig in (signal.SIGINT, signal.SIGTERM):
                if self.phase is Phase.STOPPING:
                    self._force()
                else:
                    logger.info("Received %s", signal.Signals(sig).name)
                    self._stop()
            elif sig == signal.SIGHUP and self.phase is not Phase.STOPPING:
                if self.phase is Phase.BOOTING:
                    logger.info("Received SIGHUP while starting: ignored")
                else:
                    self._reload()
            # SIGCHLD: _reap, which runs after every wake-up


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit status {os.WEXITSTATUS(status)}"


# ---------------------------------------------------------------------------------------------
# The worker side
# ---------------------------------------------------------------------------------------------


def read_readiness(ready_fd: int) -> bool:
    """The supervisor's end of a worker's readiness pipe, once it is readable: True if the worker
    wrote that it serves, False if the pipe closed without a word (it is exiting). Closes it."""
    try:
        data = os.read(ready_fd, 1)
    except OSError:
        data = b""
    os.close(ready_fd)
    return bool(data)


def run_worker(config: Config, sockets: List[socket.socket], ready_fd: int,
               balance: Optional[AcceptBalance] = None) -> int:  # fmt: skip
    """A worker process's whole life, after the fork: the exit status."""
    worker = _Worker(config, sockets, ready_fd, balance)
    try:
        run_event_loop(config.new_event_loop(), worker.serve())
        return 0
    except (AppImportError, StartupError) as exc:
        cause = exc.__cause__ if isinstance(exc, AppImportError) else None
        logger.error("%s", exc, exc_info=cause)
        return 1
    except BaseException as exc:  # noqa: BLE001 - a worker must not unwind into the supervisor's code
        logger.error("Worker [%d] failed", os.getpid(), exc_info=exc)
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # pragma: no cover
                pass


def _start_health_thread(fd: int, interval: float) -> None:
    """In a worker: write a byte to the supervisor every `interval` from a thread of its own,
    until the pipe breaks (the supervisor is gone) or the process exits."""

    def beat() -> None:
        # The worker's signals are the main thread's (see _Worker.serve): never taken here.
        signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        try:
            while True:
                os.write(fd, b".")
                time.sleep(interval)
        except OSError:
            pass

    threading.Thread(target=beat, name="asgiws-health", daemon=True).start()


WORKER_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1")
                       if hasattr(signal, name))


class _Worker:
    def __init__(self, config: Config, sockets: List[socket.socket], ready_fd: int,
                 balance: Optional[AcceptBalance] = None) -> None:  # fmt: skip
        # --metrics-port: this worker records into the supervisor's directory; the exporter serves.
        recorder = metrics.Metrics() if config.metrics_port is not None else None
        self.server = Server(config, sockets=sockets, metrics=recorder, balance=balance)
        self.ready_fd = ready_fd
        self.supervisor_pid = os.getppid()
        self.exiting = False
        self.interrupted = False  # a SIGINT came: the next one forces

    async def serve(self) -> None:
        server = self.server
        loop = asyncio.get_running_loop()
        for sig in WORKER_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await server.startup()
            os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)
            watchdog = loop.create_task(self._watch_supervisor())
            try:
                await server.main_loop()
                await server.shutdown()
            finally:
                watchdog.cancel()
        finally:
            # Not back to the default action, which ends the process: the supervisor's SIGTERM
            # may arrive after a Ctrl+C's SIGINT has shut this one down already, and must not
            # turn its clean exit into "killed by SIGTERM". remove_signal_handler restores the
            # default before SIG_IGN replaces it, so the signals wait blocked meanwhile (a
            # pending one is then discarded, being ignored).
            signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
            try:
                for sig in WORKER_SIGNALS:
                    loop.remove_signal_handler(sig)
                    signal.signal(sig, signal.SIG_IGN)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)

    def _on_signal(self, sig: int) -> None:
        force = sig == signal.SIGQUIT or (sig == signal.SIGINT and self.interrupted)
        self.interrupted = self.interrupted or sig == signal.SIGINT
        if not self.exiting:
            self.exiting = True
            self.server.handle_exit(sig, restart=sig == RESTART_SIGNAL)  # the first call: graceful
        if force:
            self.server.handle_exit(sig)  # a later call: stop waiting

    async def _watch_supervisor(self) -> None:
        while True:
            await asyncio.sleep(PARENT_CHECK_INTERVAL)
            if os.getppid() != self.supervisor_pid:
                logger.warning("Worker [%d]: the supervisor is gone; shutting down", os.getpid())
                self._on_signal(signal.SIGTERM)
                return
