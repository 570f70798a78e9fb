"""The ASGI WebSocket bridge: one upgraded connection, its app, and the asyncio transport.

`WebSocketProtocol` is the `asyncio.BufferedProtocol` the HTTP protocol hands the transport to
(`upgrade()`, at the byte offset httptools reported). It validates the opening handshake, runs
the app, and turns frames into ASGI events and ASGI events into frames (asgiref www spec 2.5).

The app's side is one state machine, `AppState`, moved only by `_transition()`:

    CONNECTING ──websocket.accept──────────────▶ CONNECTED ──websocket.close──▶ CLOSED
    CONNECTING ──websocket.close (HTTP 403)────▶ CLOSED
    CONNECTING ──websocket.http.response.start─▶ DENIAL ──…body, more_body=False──▶ CLOSED
    any        ──connection lost / server fails it──────────────────────────────▶ CLOSED

What runs per message — `get_buffer`/`buffer_updated`, the queue of messages not yet received,
the app's `receive()` and `send()`, write coalescing and backpressure — is compiled: it is the
base class, `asgiws.asgi._bridge.WebSocketBridge` (see its docstring for the receive and send
paths; without the extensions, its pure-Python twin `_bridge_py`, as `bridge.py` chooses).
This class holds what runs once per connection, and the rare events the bridge calls back:
control frames, protocol failures, and the ASGI messages other than `websocket.send`.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

from ..websocket.connection import (
    CloseCode,
    CloseReceived,
    Connection,
    Pong,
    State,
    random_ping_payload,
)
from ..websocket.deflate import DeflateSettings, PerMessageDeflate, negotiate
from ..websocket.handshake import HandshakeError, build_response, validate_request
from ..access import client_text, fields, redact_query
from ..codec import is_valid_close_code
from ..stall import WriteStallWatch
from ..state import LINGER_TIMEOUT
from . import ClientDisconnected, UnexpectedMessage
from .app_state import AppState
from .bridge import WebSocketBridge
from .keepalive import keepalive
from .per_loop import LoopBound

logger = logging.getLogger("asgiws.error")
access_logger = logging.getLogger("asgiws.access")

ASGI_VERSION = {"version": "3.0", "spec_version": "2.5"}


_TRANSITIONS = {
    (AppState.CONNECTING, "websocket.accept"): AppState.CONNECTED,
    (AppState.CONNECTING, "websocket.close"): AppState.CLOSED,
    (AppState.CONNECTING, "websocket.http.response.start"): AppState.DENIAL,
    (AppState.DENIAL, "websocket.http.response.body"): AppState.DENIAL,
    (AppState.CONNECTED, "websocket.send"): AppState.CONNECTED,
    (AppState.CONNECTED, "websocket.close"): AppState.CLOSED,
}

_STATUS_PHRASES = {
    400: b"Bad Request", 403: b"Forbidden", 426: b"Upgrade Required",
    500: b"Internal Server Error", 503: b"Service Unavailable",
}  # fmt: skip


# What this server offers for permessage-deflate: one immutable object for every connection.
_DEFLATE_SETTINGS = DeflateSettings()

# Every app task's name: one shared str, where asyncio would make a "Task-<n>" (~58 bytes) for
# each connection, for as long as it is open.
_TASK_NAME = "asgiws websocket app"

# How many connection ends (a close after the peer's FIN, or telling an app its connection is
# gone) one loop turn handles at most.
_ENDS_PER_TURN = 64


class ConnectionEnds(LoopBound):
    """One per event loop: the work that ends WebSocket connections — closing the socket after
    the peer's FIN (the kernel's TCP teardown), then, once the transport reports the loss,
    telling the app (its websocket.disconnect, its task's end, the access log line) — done for
    at most _ENDS_PER_TURN connections per loop turn. libuv reports every FIN that arrived in
    one loop iteration: a peer that drops 10,000 connections at once (or a proxy restarting)
    then costs the other connections a few milliseconds per turn, not one stall of the time
    all those connections take to end."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)  # held weakly (per_loop says why)
        self.pending: "collections.deque[Callable[[], None]]" = collections.deque()
        self.scheduled = False

    def add(self, callback: Callable[[], None]) -> None:
        self.pending.append(callback)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._run)

    def _run(self) -> None:
        pending = self.pending
        for _ in range(min(len(pending), _ENDS_PER_TURN)):
            callback = pending.popleft()
            try:
                callback()
            except Exception:  # one broken connection must not strand the rest
                logger.exception("Error ending a WebSocket connection")
        if pending:
            self.loop.call_soon(self._run)
        else:
            self.scheduled = False


_ends_for_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectionEnds]" = \
    weakref.WeakKeyDictionary()


def connection_ends(loop: asyncio.AbstractEventLoop) -> ConnectionEnds:
    ends = _ends_for_loop.get(loop)
    if ends is None:
        ends = _ends_for_loop[loop] = ConnectionEnds(loop)
    return ends


class WebSocketProtocol(WebSocketBridge, asyncio.BufferedProtocol):
    # Slots, not a __dict__: one of these lives per WebSocket connection. The per-message state
    # (queue, flow control, outgoing frames, counters) lives in WebSocketBridge's C struct, and
    # so do ping_slot and started (numbers there, not objects).
    __slots__ = (
        "accept_timer",
        "app",
        "app_task",
        "close_timer",
        "closed_by",
        "config",
        "denial_headers",
        "extensions_header",
        "closing_timer",
        "lifespan_state",
        "metrics",
        "ping_payload",
        "request_key",
        "scope",
        "server_state",
        "stall_watch",
        "status",
        "subprotocol",
    )

    def __init__(self, config: Any, server_state: Any, app: Callable[..., Any],
                 app_state: Optional[Dict[str, Any]] = None) -> None:
        WebSocketBridge.__init__(self, config)
        self.config = config
        self.server_state = server_state
        self.app = app
        self.lifespan_state = app_state
        self.metrics = server_state.metrics  # --metrics-port; read once per connection
        self.scope: Dict[str, Any] = {}
        # Timers.
        self.accept_timer: Optional[asyncio.TimerHandle] = None
        self.close_timer: Optional[asyncio.TimerHandle] = None
        # A failure's Close waits for the app to consume what came before it (ws_close_timeout);
        # then, after a failure or the closing handshake, closing TCP waits for the peer's FIN
        # (LINGER_TIMEOUT, _linger): this timer, whichever of the two is running.
        self.closing_timer: Optional[asyncio.TimerHandle] = None
        self.ping_payload: Optional[bytes] = None
        self.stall_watch: Optional[WriteStallWatch] = None  # made on the first pause_writing
        # Access log.
        self.started = time.monotonic()
        self.status = 0
        self.closed_by = ""
        self.app_task: Optional[asyncio.Task[None]] = None

    # -- the handshake ------------------------------------------------------------------------

    def upgrade(self, transport: asyncio.Transport, http_scope: Dict[str, Any], leftover: bytes) -> None:
        """Take over `transport` from the HTTP protocol; `leftover` are the bytes after the
        request head."""
        self.transport = transport
        self.server_state.connections.add(self)
        if self.metrics is not None:
            self.metrics.connection_opened("websocket")
        try:
            request = validate_request(http_scope["method"], http_scope["http_version"],
                                       http_scope["headers"])
            if self.config.origin_policy is not None:  # RFC 6455 §10.2: 403 before the app sees it
                self.config.origin_policy.check(http_scope["headers"], http_scope["scheme"])
        except HandshakeError as exc:
            client = client_text(http_scope.get("client"))
            logger.info("Refused WebSocket handshake from %s: %s", client, exc.reason,
                        extra={"client": client, "status": exc.status})
            self.scope = http_scope
            self._http_response(exc.status, exc.headers, exc.reason.encode() + b"\n")
            self.state = AppState.CLOSED
            return
        # Only the key outlives the handshake: the parsed request (its extension offers and
        # their lists) would be garbage the collector walks for as long as the connection lives.
        self.request_key = request.key
        scheme = "wss" if http_scope.get("scheme") == "https" else "ws"
        self.scope = {
            "type": "websocket",
            "asgi": ASGI_VERSION,
            "http_version": "1.1",
            "scheme": scheme,
            "server": http_scope.get("server"),
            "client": http_scope.get("client"),
            "root_path": http_scope.get("root_path", ""),
            "path": http_scope["path"],
            "raw_path": http_scope.get("raw_path"),
            "query_string": http_scope.get("query_string", b""),
            "headers": http_scope["headers"],
            "subprotocols": request.subprotocols,
            "extensions": {"websocket.http.response": {}},
        }
        if "tls" in http_scope.get("extensions", ()):  # the ASGI tls extension covers wss:// too
            self.scope["extensions"]["tls"] = http_scope["extensions"]["tls"]
        if "state" in http_scope:
            self.scope["state"] = http_scope["state"]
        elif self.lifespan_state is not None:
            self.scope["state"] = self.lifespan_state.copy()

        deflate = None
        self.extensions_header = None
        if self.config.ws_per_message_deflate and request.extensions:
            agreed = negotiate(request.extensions, _DEFLATE_SETTINGS)
            if agreed is not None:
                params, self.extensions_header = agreed
                deflate = PerMessageDeflate(params, _DEFLATE_SETTINGS)
        self.conn = Connection(max_size=self.config.ws_max_size, deflate=deflate,
                               frame_overhead=self.config.ws_frame_overhead)
        transport.set_write_buffer_limits(high=self.config.ws_high_water)
        # A client may pipeline frames behind its request (RFC 6455 §4.1 says it must wait):
        # they are buffered, unparsed, until the app accepts, so no PONG or Close reply goes
        # out before the 101 (WebSocketBridge._release_held).
        self.conn.parser.held = True
        if leftover:
            self.receive_data(leftover)
        if self.config.ws_accept_timeout is not None:
            self.accept_timer = self.loop.call_later(self.config.ws_accept_timeout,
                                                     self._accept_timed_out)
        if self.config.reset_contextvars:  # the task copies the context it is created in: an empty one
            self.app_task = contextvars.Context().run(self.loop.create_task, self._run_asgi(),
                                                      name=_TASK_NAME)
        else:
            self.app_task = self.loop.create_task(self._run_asgi(), name=_TASK_NAME)
        self.server_state.tasks.add(self.app_task)  # _run_asgi takes it out when the app is done

    def _accept_timed_out(self) -> None:
        self.accept_timer = None
        if self.state is AppState.CONNECTING:
            logger.info("WebSocket app did not accept %s within %ss",
                        self.scope.get("path"), self.config.ws_accept_timeout)
            self._http_response(503, [], b"WebSocket handshake timed out\n")
            self.state = AppState.CLOSED

    # -- asyncio.BufferedProtocol --------------------------------------------------------------

    def eof_received(self) -> Optional[bool]:
        # The peer sent FIN (without a Close frame first, or after ours): there is nothing more
        # to read, and we close our side in the loop's ConnectionEnds; connection_lost follows.
        connection_ends(self.loop).add(self._close_after_eof)
        return True  # keep the transport until then

    def _close_after_eof(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """Timers and unsent frames go now, and nothing more is sent; the buffers and zlib
        contexts, and telling the app, wait their turn in ConnectionEnds."""
        self.server_state.connections.discard(self)
        self._drop_unsent()
        for timer in (self.accept_timer, self.close_timer, self.closing_timer, self.pong_timer):
            if timer is not None:
                timer.cancel()
        if self.ping_slot:
            keepalive(self.loop, self.config.ws_ping_interval).discard(self)
        if self.stall_watch is not None:
            self.stall_watch.stop()
        if self.conn is not None:
            self.conn.connection_lost()
        if not self.closed_by:
            self.closed_by = "network"
        if self.state is AppState.CONNECTING or self.state is AppState.DENIAL:
            self.state = AppState.CLOSED
        connection_ends(self.loop).add(self._after_connection_lost)

    def _after_connection_lost(self) -> None:
        conn = self.conn
        if conn is not None:
            conn.release()
        if conn is not None and conn.close_received is not None:
            self._queue_disconnect(conn.close_received.code, conn.close_received.reason)
        # Without a Close from the peer, the TCP connection was dropped (RFC 6455 §7.1.5).
        self._queue_disconnect(CloseCode.ABNORMAL_CLOSURE, "")
        self._fail_drain_waiters(ClientDisconnected("WebSocket connection lost"))
        if self.metrics is not None:
            self._record_metrics()
        if self.status:
            self._log_access()

    # -- frames in → events for the app --------------------------------------------------------

    def _control(self, event: Any) -> None:
        if type(event) is CloseReceived:
            self._close_received(event)
        elif type(event) is Pong:
            if self.pong_timer is not None and event.payload == self.ping_payload:
                self.pong_timer.cancel()
                self.pong_timer = None

    def _fail_after_queue(self) -> None:
        """A protocol violation: its Close waits until the app has consumed (and, for an echo,
        answered) the messages that arrived before it, so nothing valid is dropped — bounded
        by the close timeout."""
        self.failure_pending = True
        if self.status != 101 or not self.queued_messages:
            self._send_failure()
        else:
            self.closing_timer = self.loop.call_later(self.config.ws_close_timeout or 10.0,
                                                      self._send_failure)

    def _send_failure(self) -> None:
        self.closing_timer = None
        if not self.failure_pending or self.transport.is_closing():
            return
        self.failure_pending = False
        failure = self.conn.failure
        logger.info("WebSocket %s failed: %s %s", self.scope.get("path"), failure.code,
                    failure.reason)
        if self.status == 101 and self.conn.state is State.OPEN:
            self._write(self.conn.send_close(failure.code, failure.reason))
        self.closed_by = "server"
        self._queue_disconnect(failure.code, failure.reason)
        # Nothing after a violation can be parsed: close TCP now (RFC 6455 §7.1.7).
        self._linger()

    def _linger(self) -> None:
        """Close TCP without losing the Close just written: FIN after it (the server closes
        first, RFC 6455 §7.1.1), then read and drop what the peer still sends until its FIN,
        for LINGER_TIMEOUT at most. A peer that fails may be mid-stream (the frames behind a
        violation still arriving), and one may send frames behind its own Close; closing with
        bytes unread makes the kernel answer them with RST, which can destroy the Close and
        the messages before it in the peer's receive buffer."""
        self._flush()
        transport = self.transport
        if transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._read_to_drop()
        self.closing_timer = self.loop.call_later(LINGER_TIMEOUT, self._close_after_eof)

    def _close_received(self, event: CloseReceived) -> None:
        conn = self.conn
        if not self.closed_by:
            self.closed_by = "peer"
        if self.close_timer is not None:  # ours was answered
            self.close_timer.cancel()
            self.close_timer = None
        for frame in conn.data_to_send():  # the Close echo
            self._write(frame)
        self._queue_disconnect(event.code, event.reason)
        self._linger()

    def _transition(self, message_type: str) -> None:
        if self.state is AppState.CLOSED or self.transport.is_closing():
            if message_type in ("websocket.send", "websocket.close", "websocket.accept",
                                "websocket.http.response.body"):
                raise ClientDisconnected(f"{message_type} on a closed WebSocket")
        new_state = _TRANSITIONS.get((self.state, message_type))
        if new_state is None:
            raise UnexpectedMessage(self.state, message_type)
        self.state = new_state

    def _close_transport(self) -> None:
        """Close TCP after everything queued is written (transport.close() flushes its own
        buffer; ours goes first)."""
        self._flush()
        self.transport.close()

    async def _on_websocket_accept(self, message: Dict[str, Any]) -> None:
        subprotocol = message.get("subprotocol")
        headers = list(message.get("headers") or ())
        for name, _ in headers:
            if bytes(name).lower() == b"sec-websocket-protocol":
                raise RuntimeError("use the 'subprotocol' key, not a sec-websocket-protocol header")
        if subprotocol is not None and subprotocol not in self.scope["subprotocols"]:
            logger.info("App accepted subprotocol %r the client did not offer", subprotocol)
        self.transport.write(build_response(
            self.request_key, subprotocol, self.extensions_header,
            headers + self.config.response_fields.fields_for(headers)))
        self.status = 101
        self.subprotocol = subprotocol
        if self.metrics is not None:
            self.metrics.websocket_handshake(time.monotonic() - self.started)
        if self.accept_timer is not None:
            self.accept_timer.cancel()
            self.accept_timer = None
        self._release_held()
        self._schedule_ping()

    async def _on_websocket_close(self, message: Dict[str, Any]) -> None:
        if self.status == 0:
            # Close before accept: refuse the handshake with 403 (spec: "websocket.close").
            self._http_response(403, [], b"")
            self.closed_by = "app"
            return
        code = message.get("code")
        code = CloseCode.NORMAL_CLOSURE if code is None else int(code)
        if not is_valid_close_code(code):
            raise ValueError(f"close code {code} may not be sent in a Close frame")
        reason = _truncate_reason(message.get("reason") or "")
        self._close(code, reason, closed_by="app")

    async def _on_websocket_http_response_start(self, message: Dict[str, Any]) -> None:
        self.status = int(message["status"])
        self.closed_by = "app"
        self.denial_headers = [(bytes(k), bytes(v)) for k, v in message.get("headers") or ()]
        head = self._http_head(self.status, self.denial_headers)
        self.transport.write(head)

    async def _on_websocket_http_response_body(self, message: Dict[str, Any]) -> None:
        body = message.get("body", b"")
        if body:
            self.transport.write(body)
        if not message.get("more_body", False):
            self.state = AppState.CLOSED
            self.transport.close()
        elif self.write_paused:
            await self._drain()

    # -- closing ------------------------------------------------------------------------------

    def _close(self, code: int, reason: str, closed_by: str) -> None:
        """Start the closing handshake: send Close, wait for the peer's, bounded by a timer."""
        conn = self.conn
        if conn.state is not State.OPEN or self.transport.is_closing():
            return
        self.closed_by = closed_by
        self._write(conn.send_close(code, reason))
        self._flush()
        if self.config.ws_close_timeout is not None:
            self.close_timer = self.loop.call_later(self.config.ws_close_timeout,
                                                    self._close_timed_out)

    def _close_timed_out(self) -> None:
        self.close_timer = None
        logger.info("WebSocket %s: no Close from the peer within %ss; dropping TCP",
                    self.scope.get("path"), self.config.ws_close_timeout)
        self.transport.abort()

    def shutdown(self) -> None:
        """Server shutdown: Close every open WebSocket with ws_shutdown_close_code (1012 on a
        restart: ServerState.ws_shutdown_close) and tell its app now; refuse a handshake still
        waiting for the app."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.closing_timer is not None and not self.failure_pending:
            self.transport.close()  # lingering (its Close exchanged or sent): nothing to wait for
            return
        if self.state is AppState.CONNECTING:
            self._http_response(503, [], b"Server shutting down\n")
            self.state = AppState.CLOSED
            return
        if self.conn is not None and self.conn.state is State.OPEN and self.status == 101:
            code, reason = self.server_state.ws_shutdown_close
            self._close(code, reason, closed_by="server")
            self._queue_disconnect(code, reason)

    # -- keepalive ----------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self.config.ws_ping_interval
        if interval:
            keepalive(self.loop, interval).add(self)

    def _send_ping(self) -> None:
        """Called by the loop's Keepalive an interval after the last Ping."""
        conn = self.conn
        if conn.state is not State.OPEN or self.transport.is_closing():
            return
        if self.reading_paused:
            self._schedule_ping()  # see WebSocketBridge._after_queue: no Pong could be read now
            return
        self.ping_payload = random_ping_payload()
        self._write(conn.send_ping(self.ping_payload))
        timeout = self.config.ws_ping_timeout
        if timeout and self.pong_timer is None:
            self.pong_timer = self.loop.call_later(timeout, self._pong_timed_out)
        self._schedule_ping()

    # -- a peer that stops reading -------------------------------------------------------------

    def _write_stall_started(self) -> None:
        """The write buffer went over its high-water mark (WebSocketBridge.pause_writing)."""
        timeout = self.config.timeout_write_stall
        if timeout is not None:
            if self.stall_watch is None:
                self.stall_watch = WriteStallWatch(self.loop, self.transport, timeout, self._write_stalled)
            self.stall_watch.start()

    def _write_stall_ended(self) -> None:
        if self.stall_watch is not None:
            self.stall_watch.stop()

    def _write_stalled(self, unsent: int) -> None:
        """The peer read nothing for timeout_write_stall: drop it (the app gets 1006). While we
        stop reading from such a peer the keepalive cannot find it dead; this does."""
        logger.info("WebSocket %s: the peer read nothing for %ss (%d bytes unsent); dropping it",
                    self.scope.get("path"), self.config.timeout_write_stall, unsent)
        self.closed_by = "write stall"
        self.transport.abort()

    def _pong_timed_out(self) -> None:
        self.pong_timer = None
        logger.info("WebSocket %s: no Pong within %ss; dropping the connection",
                    self.scope.get("path"), self.config.ws_ping_timeout)
        self.closed_by = "keepalive"
        self.transport.abort()

    # -- running the app ----------------------------------------------------------------------

    async def _run_asgi(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            logger.debug("WebSocket app %s stopped: client disconnected", self.scope.get("path"))
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                # Cancelled: the server is shutting down and the app outlived the grace period.
                self._app_failed(self.server_state.ws_shutdown_close[0])
                raise
            logger.error("Exception in ASGI application", exc_info=exc)
            self._app_failed(CloseCode.INTERNAL_ERROR)
        else:
            if self.state is AppState.CONNECTING:
                logger.error("ASGI app returned without accepting or closing the WebSocket")
                self._http_response(500, [], b"")
            elif self.state is AppState.CONNECTED:
                self._close(CloseCode.NORMAL_CLOSURE, "", closed_by="app")
            elif self.state is AppState.DENIAL:
                self._close_transport()
        finally:
            # Here rather than by a done callback: one object fewer per open connection.
            self.server_state.tasks.discard(self.app_task)
            if self.accept_timer is not None:
                self.accept_timer.cancel()
                self.accept_timer = None

    def _app_failed(self, close_code: int) -> None:
        if self.transport.is_closing():
            return
        if self.state is AppState.CONNECTING:
            self._http_response(500, [], b"")
        elif self.state is AppState.DENIAL:
            self.transport.close()  # a half-sent denial response: cut it
        elif self.status == 101:
            self._close(close_code, "", closed_by="app")
        self.state = AppState.CLOSED

    # -- plain HTTP responses (refusals) ------------------------------------------------------

    def _http_head(self, status: int, headers: Sequence[Tuple[bytes, bytes]]) -> bytes:
        lines = [b"HTTP/1.1 %d %s" % (status, _STATUS_PHRASES.get(status, b""))]
        lines.extend(name + b": " + value for name, value in headers)
        lines.extend(name + b": " + value for name, value in self.config.response_fields.fields_for(headers))
        lines.append(b"connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _http_response(self, status: int, headers: Iterable[Tuple[bytes, bytes]], body: bytes) -> None:
        """A complete HTTP response, then close: a refused or failed handshake."""
        self.status = status
        self.closed_by = "server"
        headers = list(headers) + [(b"content-type", b"text/plain; charset=utf-8"),
                                   (b"content-length", str(len(body)).encode())]
        self.transport.write(self._http_head(status, headers) + body)
        self.transport.close()

    def _log_access(self) -> None:
        """The session's access record: the handshake's status, and for an accepted session its
        close code, who closed, and the bridge's counters, read once here (none per message)."""
        if not self.config.access_log or not access_logger.isEnabledFor(logging.INFO):
            return
        scope = self.scope
        duration = time.monotonic() - self.started
        query = redact_query(scope.get("query_string") or b"", self.config.redact_params)
        target = (scope.get("raw_path") or b"").decode("latin-1") or scope.get("path", "")
        if query:
            target += "?" + query
        conn = self.conn
        if self.status != 101:
            # Refused (by the server: 400, 403, 426, 503; by the app: 403 or its denial
            # response; a failing app: 500): an HTTP response, so no close code.
            record = fields(scope, query, self.status, duration, 0)
            record.update(type="websocket", closed_by=self.closed_by, ws_close_code=None)
            access_logger.info('%s - "WebSocket %s" %d refused by %s %.3fs', record["client"], target,
                               self.status, self.closed_by, duration, extra=record)  # fmt: skip
            return
        close = conn.close_received or conn.close_sent
        code = close.code if close is not None else CloseCode.ABNORMAL_CLOSURE
        bytes_in = conn.parser.bytes_parsed
        subprotocol = getattr(self, "subprotocol", None)
        record = fields(scope, query, 101, duration, self.bytes_out)
        record.update(
            subprotocol=subprotocol, ws_close_code=int(code), closed_by=self.closed_by,
            ws_messages_in=self.messages_in, ws_messages_out=self.messages_out,
            ws_bytes_in=bytes_in, ws_bytes_out=self.bytes_out,
        )  # fmt: skip
        access_logger.info(
            '%s - "WebSocket %s" 101 [%s] %.3fs close %s by %s; in %d msgs %d B, out %d msgs %d B',
            record["client"], target, subprotocol or "-", duration, code, self.closed_by,
            self.messages_in, bytes_in, self.messages_out, self.bytes_out, extra=record,
        )  # fmt: skip

    def _record_metrics(self) -> None:
        """The session's figures, once, at its end: per-message counts come from the bridge's
        counters, which it keeps anyway, never from a metric touched per message."""
        metrics = self.metrics
        metrics.connection_closed("websocket")
        if not self.status:
            return  # the peer left before the app answered the handshake
        if self.status != 101:
            metrics.websocket_session("refused")
            return
        conn = self.conn
        metrics.websocket_session(self.closed_by.replace(" ", "_"), self.messages_in, self.messages_out,
                                  conn.parser.bytes_parsed, self.bytes_out)  # fmt: skip


def _truncate_reason(reason: str) -> str:
    """A Close reason fits in 123 bytes of UTF-8 (RFC 6455 §5.5): cut at a character boundary."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= 123:
        return reason
    return encoded[:123].decode("utf-8", "ignore")
