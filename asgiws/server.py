"""The server: listening sockets, the event loop, signals, graceful shutdown.

    Server.run() ─▶ serve():  startup() ─▶ main_loop() ─▶ shutdown()

startup    import the app, run lifespan startup, listen (TCP host/port, Unix socket, or an
           inherited fd), print where.
main_loop  wait for SIGINT / SIGTERM (or `handle_exit()` from code).
shutdown   stop listening; ask every connection to finish (HTTP: close when idle or after the
           response in flight; WebSocket: Close with --ws-shutdown-close-code); wait up to
           --timeout-graceful-shutdown for connections and app tasks to end; cancel what is left;
           then lifespan shutdown. A second signal skips the waiting.

Protocols share one `ServerState` per process; that and `Connection.shutdown()` are the whole
contract between the server and a connection protocol (HTTP here, WebSocket in asgiws.asgi).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import stat
import sys
import threading
from typing import Any, Coroutine, List, Optional, Set

from asgiws.asgi.app import AppImportError
from asgiws.asgi.lifespan import Lifespan, LifespanFailure
from asgiws.config import Config, ConfigError
from asgiws.http.protocol import HttpProtocol

logger = logging.getLogger("asgiws.error")

HANDLED_SIGNALS = (
    signal.SIGINT,  # Ctrl+C
    signal.SIGTERM,  # `kill`, systemd, Docker, Kubernetes
)

# A Unix socket file gets these permissions: connecting needs write access, and the proxy in
# front (nginx) usually runs as another user. Restrict access with the directory's permissions.
UDS_PERMISSIONS = 0o666


class ServerState:
    """Shared by the server and every connection protocol in one process."""

    def __init__(self) -> None:
        self.connections: Set[Any] = set()  # live protocol objects; each has .shutdown()
        self.tasks: Set[asyncio.Task] = set()  # app tasks, for graceful shutdown
        self.total_requests: int = 0


class StartupError(Exception):
    """The server cannot start (address in use, lifespan startup failed, ...). One-line message."""


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.server_state = ServerState()
        self.lifespan: Optional[Lifespan] = None
        self.listeners: List[asyncio.AbstractServer] = []
        self.started = False
        self.force_exit = False
        self._exit_requested: Optional[asyncio.Event] = None
        self._uds_path: Optional[str] = None  # a socket file we created, removed on shutdown

    # -- entry points ------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SIGINT / SIGTERM, on a new event loop. Raises StartupError, AppImportError."""
        run_event_loop(self.config.new_event_loop(), self.serve())

    async def serve(self) -> None:
        self._install_signal_handlers()
        try:
            await self.startup()
            await self.main_loop()
            await self.shutdown()
        finally:
            self._remove_signal_handlers()

    def handle_exit(self, sig: Optional[int] = None) -> None:
        """Begin a graceful shutdown; called a second time, stop waiting for connections."""
        if self._exit_requested is None or not self._exit_requested.is_set():
            if self._exit_requested is not None:
                self._exit_requested.set()
        else:
            logger.info("Second signal received: forcing exit.")
            self.force_exit = True
            if self.lifespan is not None:
                self.lifespan.cancel()

    # -- startup -----------------------------------------------------------------------------

    async def startup(self) -> None:
        self._exit_requested = asyncio.Event()
        config = self.config
        app = config.load()
        logger.info("Started server process [%d]", os.getpid())

        self.lifespan = Lifespan(app, config.lifespan)

        # Bind first, so a taken address fails fast, before the app's startup connects to its
        # databases; accept connections only once that startup is complete.
        try:
            self.listeners = [await self._listen(app)]
        except OSError as exc:
            raise StartupError(f"Could not listen on {self._where()}: {_reason(exc)}") from None
        try:
            await self.lifespan.startup()
        except LifespanFailure as exc:
            self._close_listeners()
            raise StartupError(str(exc)) from None

        for listener in self.listeners:
            await listener.start_serving()
            for sock in listener.sockets:
                logger.info("asgiws running on %s (Press CTRL+C to quit)", describe_socket(sock))
        self.started = True

    async def _listen(self, app: Any) -> asyncio.AbstractServer:
        config = self.config
        loop = asyncio.get_running_loop()
        lifespan_state = self.lifespan.state if self.lifespan is not None else {}

        def protocol_factory() -> asyncio.Protocol:
            return HttpProtocol(config=config, server_state=self.server_state, app=app, app_state=lifespan_state)

        if config.fd is not None:
            sock = socket.socket(fileno=config.fd)  # family and type are read from the descriptor
            create = loop.create_unix_server if sock.family == socket.AF_UNIX else loop.create_server
            return await create(protocol_factory, sock=sock, backlog=config.backlog, start_serving=False)
        if config.uds is not None:
            _remove_stale_socket(config.uds)
            server = await loop.create_unix_server(
                protocol_factory, path=config.uds, backlog=config.backlog, start_serving=False
            )
            self._uds_path = config.uds
            os.chmod(config.uds, UDS_PERMISSIONS)
            return server
        return await loop.create_server(
            protocol_factory, host=config.host, port=config.port, backlog=config.backlog, reuse_address=True,
            start_serving=False,
        )  # fmt: skip

    def _where(self) -> str:
        config = self.config
        if config.fd is not None:
            return f"fd {config.fd}"
        if config.uds is not None:
            return config.uds
        return f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"

    @property
    def addresses(self) -> List[Any]:
        """Where the server listens: `(host, port)` per TCP socket, the path per Unix socket."""
        found = []
        for listener in self.listeners:
            for sock in listener.sockets:
                address = sock.getsockname()
                found.append(address if sock.family == socket.AF_UNIX else tuple(address[:2]))
        return found

    # -- running -----------------------------------------------------------------------------

    async def main_loop(self) -> None:
        assert self._exit_requested is not None, "startup() first"
        await self._exit_requested.wait()

    # -- shutdown ----------------------------------------------------------------------------

    async def shutdown(self) -> None:
        logger.info("Shutting down")
        state = self.server_state

        # 1. Stop accepting: from here the kernel refuses new connections.
        self._close_listeners()

        # 2. Ask every connection to finish what it is doing.
        for connection in list(state.connections):
            connection.shutdown()

        # 3. Wait for them, and for the app tasks, up to the deadline.
        if not await self._wait_until_idle(self.config.timeout_graceful_shutdown):
            logger.warning(
                "Graceful shutdown %s: cancelling %d task(s), closing %d connection(s).",
                "forced" if self.force_exit else "timed out", len(state.tasks), len(state.connections),
            )  # fmt: skip
            tasks = list(state.tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)
            for connection in list(state.connections):
                transport = getattr(connection, "transport", None)
                if transport is not None and not transport.is_closing():
                    transport.abort()

        # 4. Lifespan shutdown: after the last request, so the app can release what they used.
        if self.lifespan is not None and not self.force_exit:
            await self.lifespan.shutdown()

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            listener.close()
        if self._uds_path is not None:  # we created the socket file: leave no stale one behind
            try:
                os.unlink(self._uds_path)
            except OSError:
                pass
            self._uds_path = None

    async def _wait_until_idle(self, timeout: float) -> bool:
        """True once no connection and no task is left; False at the deadline or on force exit."""
        state = self.server_state
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await asyncio.sleep(0)  # let the transports closed in step 2 report connection_lost
        if state.connections or state.tasks:
            logger.info(
                "Waiting for %d connection(s) and %d task(s) to finish. (CTRL+C to force quit)",
                len(state.connections), len(state.tasks),
            )  # fmt: skip
        while state.connections or state.tasks:
            remaining = deadline - loop.time()
            if remaining <= 0 or self.force_exit:
                return False
            # Wake as soon as a task ends; connections are polled (they close on their own).
            if state.tasks:
                await asyncio.wait(list(state.tasks), timeout=min(remaining, 0.1))
            else:
                await asyncio.sleep(min(remaining, 0.02))
        return True

    # -- signals -----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread receives signals; an embedding program calls handle_exit()
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            try:
                loop.add_signal_handler(sig, self.handle_exit, sig)
            except NotImplementedError:  # pragma: no cover - Windows
                signal.signal(sig, lambda signum, frame: loop.call_soon_threadsafe(self.handle_exit, signum))

    def _remove_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            try:
                loop.remove_signal_handler(sig)
            except NotImplementedError:  # pragma: no cover - Windows
                signal.signal(sig, signal.SIG_DFL)


def describe_socket(sock: socket.socket) -> str:
    """`http://127.0.0.1:8000`, `http://[::1]:8000`, or `unix socket /run/app.sock`."""
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix socket {address}"
    host, port = address[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (is another server running?)"
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc)


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a server that is gone; refuse to take over a live one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"Could not listen on {path}: the file exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: stale
    else:
        raise StartupError(f"Could not listen on {path}: another server is listening there")
    finally:
        probe.close()


def run_event_loop(loop: asyncio.AbstractEventLoop, main: Coroutine) -> Any:
    """Run `main` to completion on `loop`, then close the loop (asyncio.run with a loop of our choosing)."""
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            remaining = asyncio.all_tasks(loop)
            for task in remaining:
                task.cancel()
            if remaining:
                loop.run_until_complete(asyncio.gather(*remaining, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def run(app: Any, **settings: Any) -> None:
    """Serve `app` (an ASGI callable or "module:attribute") until SIGINT / SIGTERM.

    Takes the settings of `Config` as keyword arguments, and behaves like the `asgiws` command:
    logs to stderr, and exits with status 1 (one line on stderr) if the server cannot start.
    An invalid setting raises ConfigError.
    """
    from asgiws.logging import configure_logging

    config = Config(app=app, **settings)
    configure_logging(config.log_level, config.access_log, config.log_config)
    server = Server(config)
    try:
        server.run()
    except (AppImportError, StartupError, ConfigError) as exc:
        # A failure inside the user's module deserves its traceback; the rest is one line.
        cause = exc.__cause__ if isinstance(exc, AppImportError) else None
        logger.error("%s", exc, exc_info=cause)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl+C before the signal handlers were installed
        pass
