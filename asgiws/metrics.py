"""Prometheus metrics (--metrics-port), on prometheus-client from the `metrics` extra.

Off by default, and then free: nothing here is imported, `ServerState.metrics` is None, and each
connection reads that once when it is made — with metrics (and the access log) off, no request
is timed and nothing is recorded. On, the protocols call `Metrics` once per request, once per
connection's start and end, and once per WebSocket handshake and session; a session's message
and byte counts come from the counters the WebSocket bridge keeps anyway, read once at its end.

One process: `Server` makes a `Metrics` and serves it, with prometheus-client's default registry
(process_*, python_gc_*, and whatever the app registers there), from a thread (`Exporter`), so a
slow scrape never holds the event loop. With --workers N, prometheus-client's
multiprocess mode: the supervisor makes a directory and names it in PROMETHEUS_MULTIPROC_DIR
before any process imports prometheus-client, each worker writes its figures there, and one
child of the supervisor, the exporter, serves their sum. A dead worker's gauge files are removed
by the supervisor (`worker_exited`), so its open connections do not linger in
asgiws_connections; its counters stay in the sum, as counters must. The supervisor removes the
directory when it exits. docs/observability.md lists the metrics.
"""

from __future__ import annotations

import http.server
import socket
import threading
from typing import Any, Dict, Optional, Tuple

from asgiws.config import ConfigError

MISSING = "--metrics-port needs prometheus-client: pip install 'asgiws[metrics]'"

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The `method` label takes these; any other method (httptools knows a few dozen, WebDAV's and
# others) counts as OTHER, so the label's values stay few whatever clients send.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))

# A scrape that has not sent its request within this many seconds is dropped.
SCRAPE_TIMEOUT = 10.0

# Scrapes served at once, each on its own thread (a few KiB of request head and one rendered
# page each); a connection past this is closed unanswered, so a peer opening many connections
# to the metrics port cannot make the server start a thread for each.
MAX_SCRAPES = 4


def check_available() -> None:
    """Raise ConfigError (one line naming the extra) when prometheus-client cannot be imported.
    The supervisor calls it only after setting PROMETHEUS_MULTIPROC_DIR: prometheus-client picks
    its mode when it is first imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING) from None


class Metrics:
    """The server's metrics, in one process. Only the protocols call it (see module docstring)."""

    def __init__(self) -> None:
        check_available()
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # A registry per server, not prometheus-client's default one: an embedding program (or
        # a test) may run several servers in one process. The exporter shows both.
        self.registry = registry = CollectorRegistry()
        self.http_requests = Counter(
            "asgiws_http_requests", "HTTP responses, by request method and response status.",
            ["method", "status"], registry=registry)  # fmt: skip
        self.http_duration = Histogram(
            "asgiws_http_request_duration_seconds",
            "From a request's head parsed to its response's last byte written.", registry=registry)  # fmt: skip
        self.connections = Gauge(
            "asgiws_connections", "Open connections, by kind: http (including keep-alive idle), websocket.",
            ["kind"], registry=registry, multiprocess_mode="livesum")  # fmt: skip
        self.ws_sessions = Counter(
            "asgiws_websocket_sessions", "Ended WebSocket sessions, by outcome: refused (the handshake got an "
            "HTTP status, not 101), or who closed it (peer, app, server, network, keepalive, write_stall).",
            ["outcome"], registry=registry)  # fmt: skip
        self.ws_handshake = Histogram(
            "asgiws_websocket_handshake_duration_seconds",
            "From a WebSocket handshake request parsed to the app's accept (the 101 written).", registry=registry)  # fmt: skip
        self.ws_messages = Counter(
            "asgiws_websocket_messages", "WebSocket data messages of ended sessions, by direction (in, out).",
            ["direction"], registry=registry)  # fmt: skip
        self.ws_bytes = Counter(
            "asgiws_websocket_bytes", "WebSocket bytes on the wire (frames, after compression) of ended "
            "sessions, by direction (in, out).", ["direction"], registry=registry)  # fmt: skip
        # Children looked up once per label value, not per call. Bounded: METHODS (+ OTHER) x
        # statuses 100-599; the outcomes and kinds are the server's own words.
        self._requests: Dict[Tuple[str, int], Any] = {}
        self._open = {kind: self.connections.labels(kind) for kind in ("http", "websocket")}
        self._sessions: Dict[str, Any] = {}
        self._messages_in, self._messages_out = self.ws_messages.labels("in"), self.ws_messages.labels("out")
        self._bytes_in, self._bytes_out = self.ws_bytes.labels("in"), self.ws_bytes.labels("out")
        for kind in self._open.values():
            kind.set(0)  # shown from the first scrape, not from the first connection

    def http_request(self, method: str, status: int, duration: float) -> None:
        key = (method, status)
        child = self._requests.get(key)
        if child is None:
            if method not in METHODS:
                key = ("OTHER", status)  # kept apart from the known methods' children
            child = self._requests.get(key) or self.http_requests.labels(key[0], str(status))
            self._requests[key] = child
        child.inc()
        self.http_duration.observe(duration)

    def connection_opened(self, kind: str) -> None:
        self._open[kind].inc()

    def connection_closed(self, kind: str) -> None:
        self._open[kind].dec()

    def websocket_handshake(self, duration: float) -> None:
        self.ws_handshake.observe(duration)

    def websocket_session(self, outcome: str, messages_in: int = 0, messages_out: int = 0, bytes_in: int = 0,
                          bytes_out: int = 0) -> None:  # fmt: skip
        child = self._sessions.get(outcome)
        if child is None:
            child = self._sessions[outcome] = self.ws_sessions.labels(outcome)
        child.inc()
        if messages_in:
            self._messages_in.inc(messages_in)
        if messages_out:
            self._messages_out.inc(messages_out)
        if bytes_in:
            self._bytes_in.inc(bytes_in)
        if bytes_out:
            self._bytes_out.inc(bytes_out)


# -- serving /metrics -------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """The metrics listener, bound and listening. Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return sock


def multiprocess_registry() -> Any:
    """A registry holding the sum of every process's figures in PROMETHEUS_MULTIPROC_DIR."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def worker_exited(pid: int) -> None:
    """Multiprocess mode: forget a dead worker's gauges (its open connections)."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid)


class _BoundedServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer with at most MAX_SCRAPES requests in progress."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_SCRAPES)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: closed unanswered
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class Exporter:
    """Answers GET /metrics (any path, as prometheus-client's own server does) on `sock`: one
    thread per scrape, so a slow one holds nobody else; each waits at most SCRAPE_TIMEOUT for
    its request."""

    def __init__(self, sock: socket.socket, *registries: Any) -> None:
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        class ScrapeHandler(http.server.BaseHTTPRequestHandler):
            timeout = SCRAPE_TIMEOUT

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = b"".join(generate_latest(registry) for registry in registries)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the server's own log

        self.httpd = _BoundedServer(sock.getsockname()[:2], ScrapeHandler, bind_and_activate=False)
        self.httpd.socket.close()
        self.httpd.socket = sock
        self.thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Serve from a daemon thread (one process: the event loop's thread stays free)."""
        self.thread = threading.Thread(target=self.serve_forever, name="asgiws-metrics", daemon=True)
        self.thread.start()

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        if self.thread is not None:
            self.httpd.shutdown()  # returns within poll_interval
            self.thread.join()
        self.httpd.server_close()


def describe(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/metrics" if sock.family == socket.AF_INET6 else f"http://{host}:{port}/metrics"


def exporter_main(sock: socket.socket) -> None:
    """The supervisor's exporter child: serve the workers' sum until SIGTERM."""
    Exporter(sock, multiprocess_registry()).serve_forever()

