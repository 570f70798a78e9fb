"""The server: listening sockets, the event loop, signals, graceful shutdown.

    Server.run() ─▶ serve():  startup() ─▶ main_loop() ─▶ shutdown()

startup    import the app, listen (TCP host/port, Unix socket, an inherited fd, or sockets a
           supervisor bound: asgiws.supervisors, gunicorn), run lifespan startup, serve (TLS with
           --ssl-certfile), print where; warn when the WebSocket data path runs in pure
           Python (asgiws.asgi.bridge).
main_loop  wait for SIGINT / SIGTERM (or `handle_exit()` from code), or --limit-max-requests
           HTTP requests answered.
shutdown   stop listening; ask every connection to finish (HTTP: close when idle or after the
           response in flight; WebSocket: Close with --ws-shutdown-close-code); wait up to
           --timeout-graceful-shutdown for connections and app tasks to end; cancel what is left;
           then lifespan shutdown. A second signal skips the waiting.

Protocols share one `ServerState` (asgiws.state) per process; that and `Connection.shutdown()`
are the whole contract between the server and a connection protocol (HTTP, and WebSocket in
asgiws.asgi). This module imports the protocols and is imported by the supervisors
(asgiws.supervisors, asgiws.workers for gunicorn) and by `asgiws.runner.run()`, never the
other way round.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import ipaddress
import logging
import os
import random
import signal
import socket
import stat
import threading
from typing import Any, Coroutine, List, Optional

from asgiws.asgi.bridge import fallback_warning
from asgiws.asgi.lifespan import Lifespan, LifespanFailure
from asgiws.config import Config
from asgiws.http.protocol import HttpProtocol
from asgiws.state import ServerState
from asgiws.websocket.connection import CloseCode

logger = logging.getLogger("asgiws.error")

HANDLED_SIGNALS = (
    signal.SIGINT,  # Ctrl+C
    signal.SIGTERM,  # `kill`, systemd, Docker, Kubernetes
)


class StartupError(Exception):
    """The server cannot start (address in use, lifespan startup failed, ...). One-line message."""


# A block this large, made and freed once at startup (see raise_malloc_mmap_threshold).
MALLOC_WARMUP_BYTES = 1 << 20


def raise_malloc_mmap_threshold() -> None:
    """Make and free one MALLOC_WARMUP_BYTES block, so that glibc's malloc serves blocks up to
    that size from its heap from now on.

    glibc answers a request of 128 KiB or more with an mmap() of its own, and munmap() on free,
    until it has once freed such a block; from then on its threshold is that block's size.
    uvloop's TLS transport allocates a 256 KiB bytes for every read it passes to a protocol that
    is not buffered (HTTP) and then shrinks it: below the threshold that is an mmap, an mremap,
    an munmap and page faults per read, which halved HTTPS requests per second (37k against
    81k, bench/RESULTS.md). Whether an earlier free had already raised it depended on what the
    imports happened to free (with no .pyc files, the compiler's buffers did; with them, nothing
    did). Other allocators ignore this: it is one allocation."""
    bytes(MALLOC_WARMUP_BYTES)


class Server:
    def __init__(
        self, config: Config, sockets: Optional[List[socket.socket]] = None, ssl_context: Any = None,
        metrics: Any = None, balance: Any = None,
    ) -> None:
        """`sockets`: listening sockets someone else bound (the --workers supervisor, gunicorn).
        They are served instead of binding per the config, never unlinked, and not announced:
        whoever bound them says where the server listens. `ssl_context`: TLS for them, made
        elsewhere (gunicorn's settings); by default it comes from the --ssl-* settings.
        `metrics`: an asgiws.metrics.Metrics someone else serves (the supervisor's exporter);
        by default, with --metrics-port, the server makes and serves its own. `balance`: an
        asgiws.supervisors.balance.AcceptBalance, for `sockets` shared with other worker
        processes; it may pause this server's accepting while this one holds more than its share
        of the connections (the listeners then listen on duplicates of `sockets`)."""
        self.config = config
        self.sockets = sockets
        self.ssl_context = ssl_context
        self.server_state = ServerState()
        self.server_state.metrics = metrics
        self.server_state.balance = balance
        self._listen_args: Any = None  # (app, ssl_context), kept to listen again after a pause
        self._accepting_ended = False  # shutdown closed the listeners for good
        self._resuming: Optional[asyncio.Task[None]] = None
        self.exporter: Any = None  # asgiws.metrics.Exporter, when this server serves /metrics
        self.lifespan: Optional[Lifespan] = None
        self.listeners: List[asyncio.Server] = []
        self.started = False
        self.force_exit = False
        self._exit_requested: Optional[asyncio.Event] = None
        self._uds_path: Optional[str] = None  # a socket file we created, removed on shutdown
        if config.limit_max_requests is not None:
            # Drawn per process (random is reseeded after a fork), so workers restart apart.
            jitter = random.randint(0, config.limit_max_requests_jitter)
            self.server_state.request_limit = config.limit_max_requests + jitter
            self.server_state.on_request_limit = self._request_limit_reached
        self.server_state.ws_shutdown_close = (config.ws_shutdown_close_code, "server shutting down")

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

    def handle_exit(self, sig: Optional[int] = None, restart: bool = False) -> None:
        """Begin a graceful shutdown; called a second time, stop waiting for connections.

        `restart`: a supervisor is replacing this process (--reload, a SIGHUP rolling restart),
        so every WebSocket is closed with 1012 (Service Restart: the client may reconnect at
        once) whatever --ws-shutdown-close-code says for a plain shutdown.
        """
        if self._exit_requested is None or not self._exit_requested.is_set():
            if restart:
                self.server_state.ws_shutdown_close = (CloseCode.SERVICE_RESTART, "server restarting")
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
        if config.gc_threshold is not None:  # why: Config.gc_threshold
            gc.set_threshold(config.gc_threshold, *gc.get_threshold()[1:])
        raise_malloc_mmap_threshold()
        logger.info("Started server process [%d]", os.getpid())
        slow_path = fallback_warning()
        if slow_path is not None:
            logger.warning("%s", slow_path)

        self.lifespan = Lifespan(app, config.lifespan)

        # Bind first, so a taken address fails fast, before the app's startup connects to its
        # databases; accept connections only once that startup is complete.
        ssl_context = self.ssl_context or make_ssl_context(config)
        sockets = self.sockets
        if sockets is None:
            sockets = bind_sockets(config)
            self._uds_path = config.uds
        self._listen_args = (app, ssl_context)
        if self.server_state.balance is not None:  # a pause closes a duplicate; the shared socket stays
            sockets = [sock.dup() for sock in sockets]
        self.listeners = [await self._listen(app, sock, ssl_context) for sock in sockets]
        try:
            if config.metrics_port is not None and self.sockets is None:
                self._start_metrics()
            await self.lifespan.startup()
        except BaseException as exc:
            self._close_listeners()
            self._stop_metrics()
            if isinstance(exc, LifespanFailure):
                raise StartupError(str(exc)) from None
            raise

        for listener in self.listeners:
            await listener.start_serving()
            if self.sockets is None:
                for sock in listener.sockets:
                    logger.info("asgiws running on %s (Press CTRL+C to quit)",
                                describe_socket(sock, tls=ssl_context is not None))  # fmt: skip
        if self.sockets is None:
            served = [sock for listener in self.listeners for sock in listener.sockets]
            warning = origin_policy_warning(config, served, tls=ssl_context is not None)
            if warning is not None:
                logger.warning("%s", warning)
        if self.server_state.balance is not None:
            self.server_state.balance.start(self)
        self.started = True

    async def _listen(self, app: Any, sock: socket.socket, ssl_context: Any) -> asyncio.Server:
        config = self.config
        loop = asyncio.get_running_loop()
        lifespan_state = self.lifespan.state if self.lifespan is not None else {}

        def protocol_factory() -> Any:  # an asyncio.Protocol in all but inheritance (protocol.py)
            return HttpProtocol(config=config, server_state=self.server_state, app=app, app_state=lifespan_state)

        # listen(2) again with our backlog: a socket bound elsewhere (--fd, a supervisor) gets it too.
        create = loop.create_unix_server if is_unix_socket(sock) else loop.create_server
        return await create(protocol_factory, sock=sock, backlog=config.backlog, ssl=ssl_context, start_serving=False)

    @property
    def addresses(self) -> List[Any]:
        """Where the server listens: `(host, port)` per TCP socket, the path per Unix socket."""
        found = []
        for listener in self.listeners:
            for sock in listener.sockets:
                address = sock.getsockname()
                found.append(address if is_unix_socket(sock) else tuple(address[:2]))
        return found

    # -- running -----------------------------------------------------------------------------

    async def main_loop(self) -> None:
        assert self._exit_requested is not None, "startup() first"
        await self._exit_requested.wait()

    def _request_limit_reached(self) -> None:
        if self._exit_requested is not None and not self._exit_requested.is_set():
            logger.info("Served %d requests (--limit-max-requests): shutting down.", self.server_state.request_limit)
            self._exit_requested.set()

    # -- shutdown ----------------------------------------------------------------------------

    async def shutdown(self) -> None:
        logger.info("Shutting down")
        state = self.server_state

        # 1. Stop accepting: from here the kernel refuses new connections (or, for sockets shared
        #    with other workers, leaves them to those).
        self._accepting_ended = True
        if self.server_state.balance is not None:
            self.server_state.balance.stop()
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
            await self.lifespan.shutdown(self.config.timeout_lifespan_shutdown)

        # 5. Metrics were served until here: a scrape during the shutdown sees the connections drain.
        self._stop_metrics()

    def _start_metrics(self) -> None:
        """--metrics-port in one process: record, and serve /metrics from a thread. Raises
        ConfigError (prometheus-client missing), StartupError (the port is taken)."""
        from asgiws import metrics

        recorder = metrics.Metrics()
        try:
            assert self.config.metrics_port is not None, "called only with --metrics-port"
            sock = metrics.bind(self.config.metrics_host, self.config.metrics_port)
        except OSError as exc:
            where = f"{self.config.metrics_host}:{self.config.metrics_port}"
            raise StartupError(f"Could not listen for metrics on {where}: {_reason(exc)}") from None
        from prometheus_client import REGISTRY

        self.exporter = metrics.Exporter(sock, recorder.registry, REGISTRY)
        self.exporter.start()
        self.server_state.metrics = recorder
        logger.info("Metrics on %s", metrics.describe(sock))

    def _stop_metrics(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None

    def pause_accepting(self) -> None:
        """Stop accepting for now (asgiws.supervisors.balance): the listeners close, and the
        shared sockets' queues stay for the other workers."""
        for listener in self.listeners:
            listener.close()
        self.listeners = []

    def resume_accepting(self) -> None:
        """Listen again after pause_accepting, on new duplicates of the shared sockets."""
        if self._resuming is None and not self._accepting_ended:
            self._resuming = asyncio.get_running_loop().create_task(self._resume_accepting())

    async def _resume_accepting(self) -> None:
        try:
            assert self.sockets is not None and self._listen_args is not None, "only shared sockets pause"
            app, ssl_context = self._listen_args
            listeners = [await self._listen(app, sock.dup(), ssl_context) for sock in self.sockets]
            if self._accepting_ended:  # shutdown began meanwhile
                for listener in listeners:
                    listener.close()
                return
            self.listeners = listeners
            for listener in listeners:
                await listener.start_serving()
        except Exception as exc:  # noqa: BLE001 - out of descriptors, ...: the other workers serve
            logger.error("Could not listen again: %s", exc)
        finally:
            self._resuming = None

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            listener.close()
        _remove_socket_file(self._uds_path)
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


def is_unix_socket(sock: socket.socket) -> bool:
    # socket.AF_UNIX does not exist on every platform (Windows); there no socket is a Unix one.
    return sock.family == getattr(socket, "AF_UNIX", None)


def describe_socket(sock: socket.socket, tls: bool = False) -> str:
    """`http://127.0.0.1:8000`, `https://[::1]:8443`, or `unix socket /run/app.sock`."""
    address = sock.getsockname()
    if is_unix_socket(sock):
        return f"unix socket {address}" + (" (TLS)" if tls else "")
    host, port = address[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{scheme}://{host}:{port}"


def origin_policy_warning(config: Config, sockets: List[Any], tls: bool = False) -> Optional[str]:
    """The startup warning for a server that other machines can reach and that takes WebSocket
    handshakes from pages of any origin (docs/websocket.md, "Origin policy"), or None.

    Reachable: a TCP socket bound to anything but loopback (127.0.0.0/8, ::1), an inherited
    --fd included, judged by its address. A Unix socket is not: only a local process — the
    proxy in front, which decides what it forwards — can connect to it.
    """
    if config.ws_allowed_origins is not None:
        return None
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(sock.getsockname()[0]):
            return (f"WebSocket handshakes are accepted from pages of any origin on {describe_socket(sock, tls)}: "
                    "a page on any site can open a WebSocket here with its visitors' cookies. Set "
                    "--ws-allowed-origins (e.g. same-host or https://app.example.com), or * to allow "
                    "every origin and silence this warning.")  # fmt: skip
    return None


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def describe_address(config: Config) -> str:
    """Where the config says to listen, before binding: for error messages."""
    if config.fd is not None:
        return f"fd {config.fd}"
    if config.uds is not None:
        return config.uds
    return f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"


def close_sockets(config: Config, sockets: List[socket.socket]) -> None:
    """Close what bind_sockets() returned, and remove the Unix socket file it made."""
    for sock in sockets:
        sock.close()
    _remove_socket_file(config.uds)


def _remove_socket_file(path: Optional[str]) -> None:
    """The Unix socket file we created: leave no stale one behind."""
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass


def bind_sockets(config: Config) -> List[socket.socket]:
    """The listening socket(s) the config names, bound and listening. Raises StartupError.

    TCP: one socket per address `host` resolves to (as asyncio's create_server does), with
    SO_REUSEADDR so a restart does not wait for TIME_WAIT. A Unix socket replaces a stale socket
    file and gets --uds-permissions. An inherited fd (socket activation) is taken as it is.
    """
    try:
        if config.fd is not None:
            return [socket.socket(fileno=config.fd)]  # family and type are read from the descriptor
        if config.uds is not None:
            _remove_stale_socket(config.uds)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(config.uds)
                os.chmod(config.uds, config.uds_permissions)
                sock.listen(config.backlog)
            except BaseException:
                sock.close()
                raise
            return [sock]
        sockets: List[socket.socket] = []
        try:
            infos = socket.getaddrinfo(config.host or None, config.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)  # fmt: skip
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does
                sock.bind(address)
                sock.listen(config.backlog)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets
    except OSError as exc:
        raise StartupError(f"Could not listen on {describe_address(config)}: {_reason(exc)}") from None


def make_ssl_context(config: Config) -> Any:
    """The server's TLS context for --ssl-certfile, or None. Raises StartupError.

    `ssl.create_default_context` gives the standard library's current safe choices (TLS 1.2+, no
    compression, strong ciphers). With --ssl-ca-certs a client must present a certificate
    signed by one of those CAs (mutual TLS), unless --ssl-cert-reqs says otherwise.
    --ssl-ciphers replaces the TLS 1.2 cipher list; --ssl-version 5 pins TLS 1.2.
    """
    if config.ssl_certfile is None:
        return None
    import ssl

    files = [path for path in (config.ssl_certfile, config.ssl_keyfile, config.ssl_ca_certs) if path]
    try:
        for path in files:
            with open(path, "rb"):  # OpenSSL's own errors do not say which file is missing
                pass
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=config.ssl_ca_certs)
        context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile, config.ssl_keyfile_password)
        if config.ssl_ciphers:
            context.set_ciphers(config.ssl_ciphers)
    except ssl.SSLError as exc:
        if config.ssl_ciphers and "cipher" in str(exc).lower():
            raise StartupError(f"TLS: --ssl-ciphers {config.ssl_ciphers!r} selects no cipher OpenSSL knows") from None
        raise StartupError(
            f"TLS: could not load {', '.join(files)}: {exc.reason or exc} (not PEM, a key that does not "
            "match the certificate, or a wrong --ssl-keyfile-password?)"
        ) from None
    except OSError as exc:
        raise StartupError(f"TLS: could not read {exc.filename}: {_reason(exc)}") from None
    if config.ssl_cert_reqs is not None:
        context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    elif config.ssl_ca_certs is not None:
        context.verify_mode = ssl.CERT_REQUIRED
    if config.ssl_version == 5:  # ssl.PROTOCOL_TLSv1_2, a deprecated name
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


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


def run_event_loop(loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, Any]) -> Any:
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
