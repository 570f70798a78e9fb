"""HTTP/1.1 (RFC 9112) for the ASGI `http` scope (asgiref www spec 2.5), over httptools (llhttp).

One `HttpProtocol` per TCP connection, one `RequestCycle` per request on it.

A connection serves requests one at a time, in order:

    idle ──first byte──▶ head ──headers complete──▶ request in flight ──response complete──▶ idle
     │ keep-alive timer   │ header timer                │                                      │
     └──▶ close           └──▶ close / 400 / 431        └─ more requests already parsed? ──────┘
                                                           start the next one (pipelining)

- Pipelining (RFC 9112 §9.3.2): httptools parses everything in a read, so several requests can
  arrive at once. Requests whose heads are parsed while another is in flight wait in
  `_pipeline`, and reading pauses until they have run: responses go out in request order, and a
  client can queue at most one read's worth of requests.
- Request bodies are buffered per request until the app calls `receive()`; past
  REQUEST_BODY_HIGH_WATER reading pauses, so a slow app slows the client instead of growing
  memory.
- `await send()` returns once the bytes are handed to the transport and the transport's write
  buffer is under its high-water mark (`pause_writing` / `resume_writing`).
- A WebSocket handshake (`Upgrade: websocket`) is not given to the http app: the transport is
  handed to `asgiws.asgi.websocket.WebSocketProtocol` with the scope built here and the bytes
  that followed the head, at the offset httptools reported; nothing is parsed twice. That layer
  checks the handshake and answers it (101, or 400 / 426). Other upgrades (h2c, ...) are
  ignored, as RFC 9110 §7.8 allows, and the request is served as plain HTTP.
- Proxy headers (X-Forwarded-*, Forwarded) are applied to `client`, `scheme` and the `host`
  header when the peer is in --forwarded-allow-ips (`asgiws.http.proxy`), as the scope is built.
- --limit-concurrency is checked when a request's head is complete (503 from a stand-in app)
  and before a WebSocket handshake is handed over (503 written here).
- An error response the server writes itself (400, 431, 500, 503) ends the connection with a
  lingering close (FIN, then drain), so the client reads it rather than a reset.

Peer misbehaviour (malformed requests, oversized heads, timeouts) is answered and logged at
info/debug, never as an error with a traceback: it is not the server's fault.
"""

from __future__ import annotations

import asyncio
import enum
import http
import logging
import re
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

import httptools

from asgiws.asgi import ClientDisconnected, UnexpectedMessage
from asgiws.headers import SERVER_HEADER, date_header
from asgiws.http.proxy import apply_proxy_headers, parse_trusted

if TYPE_CHECKING:
    from asgiws.config import Config
    from asgiws.server import ServerState

logger = logging.getLogger("asgiws.error")
access_logger = logging.getLogger("asgiws.access")

# Request body bytes buffered for the app before reading pauses (the app is not calling receive).
REQUEST_BODY_HIGH_WATER = 65536

# Bodies smaller than this are joined with their head / chunk framing into one write.
JOIN_LIMIT = 65536

# After an error response, how long to keep draining what the client still sends before closing.
LINGER_TIMEOUT = 2.0

# On shutdown, how long a connection that has not sent its first request yet may still send it.
FIRST_REQUEST_GRACE = 1.0

def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}

# RFC 9110 §5.1 (field-name is a token) and §5.5 (no CR, LF or NUL in a field value): a header the
# app sends must not be able to split the response.
INVALID_HEADER_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
INVALID_HEADER_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# Response fields the server acts on (lower-cased).
SERVER_HANDLED_FIELDS = frozenset((b"content-length", b"transfer-encoding", b"connection", b"server", b"date"))

# An app's response header (name, value) → (its head line, its lower-cased name if the server acts
# on it, else None). Apps send the same fields in every response; this saves validating and
# formatting them each time. Bounded: cleared when full; long values are not kept.
HEADER_CACHE_SIZE = 512
HEADER_CACHE_MAX_VALUE = 256
_header_lines: Dict[Tuple[bytes, bytes], Tuple[bytes, Optional[bytes]]] = {}


def _header_line(name: bytes, value: bytes) -> Tuple[bytes, Optional[bytes]]:
    """Validate a response header from the app and format its line (see _header_lines)."""
    if INVALID_HEADER_NAME.search(name) or INVALID_HEADER_VALUE.search(value):
        raise RuntimeError(f"Invalid HTTP response header {name!r}: {value!r}.")
    lowered = name.lower()
    entry = (b"%s: %s\r\n" % (name, value), lowered if lowered in SERVER_HANDLED_FIELDS else None)
    if len(value) <= HEADER_CACHE_MAX_VALUE and type(name) is bytes and type(value) is bytes:
        if len(_header_lines) >= HEADER_CACHE_SIZE:
            _header_lines.clear()
        _header_lines[name, value] = entry
    return entry


# A protocol with no state, set between the HTTP and the WebSocket protocol (see _hand_off).
_DETACHED = asyncio.Protocol()


class _Reject(Exception):
    """Raised from a parser callback to answer the request with an error status and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _HandOff(Exception):
    """Raised from on_message_complete to stop httptools after a WebSocket handshake it did not
    treat as an upgrade (no `Connection: upgrade`)."""


class ResponsePhase(enum.Enum):
    WAITING_START = "waiting for http.response.start"
    HEAD_PENDING = "head pending"  # start received; the head is written with the first body, so
    #                                until then an app error can still become a 500
    STREAMING = "streaming"  # head written; more body to come
    COMPLETE = "complete"  # last body written; later messages are ignored (ASGI spec)


class Framing(enum.Enum):
    """How the response body is delimited (RFC 9112 §6)."""

    NONE = "none"  # HEAD, 1xx, 204, 304: no body on the wire
    LENGTH = "content-length"
    CHUNKED = "chunked"
    CLOSE = "close-delimited"  # HTTP/1.0 without Content-Length: the end of the body is the close


# Looking up an enum member (`ResponsePhase.COMPLETE`) runs Python code in CPython 3.11, about
# 0.1 µs each, and a request does a score of them: the per-request code uses these names instead.
WAITING_START, HEAD_PENDING, STREAMING, COMPLETE = ResponsePhase
NO_BODY, LENGTH, CHUNKED, CLOSE_DELIMITED = Framing


class RequestCycle:
    """One request and its response: the `receive` / `send` pair an app call gets.

    Built once per request: attributes that start the same for every request are class-level
    defaults, set on the instance only when they change; the event `receive()` waits on is made
    only if it has to wait.
    """

    # Request body, as httptools handed it over; joined only when the app takes it.
    disconnected = False
    request_complete = False
    body_buffered = 0
    _final_body_delivered = False
    _message_event: Optional[asyncio.Event] = None  # made by receive() when it has to wait

    # Response
    phase = WAITING_START
    status = 0
    _header_lines: List[bytes] = []  # replaced, never mutated
    _content_length: Optional[int] = None
    _has_server = _has_date = _sent_connection_close = False
    _framing = NO_BODY
    _remaining = 0  # LENGTH: body bytes still owed

    def __init__(self, conn: HttpProtocol, scope: Dict[str, Any], keep_alive: bool, expect_100_continue: bool):
        self.conn = conn
        self.transport = conn.transport
        self.scope = scope
        self.keep_alive = keep_alive  # False: close the connection after this response
        self.expect_100_continue = expect_100_continue  # client waits for "100 Continue" before the body
        self.body_chunks: List[bytes] = []

    def wake(self) -> None:
        """Something receive() may be waiting for happened: body arrived, request complete,
        response complete, or disconnect."""
        if self._message_event is not None:
            self._message_event.set()

    # -- the app call ------------------------------------------------------------------------

    async def run_asgi(self, app: Callable) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            # Raised by our own send() after the client went away (ASGI www 2.4): not an app error.
            logger.debug("Client disconnected while the app was sending.")
        except asyncio.CancelledError:
            # Graceful shutdown ran out of time: drop the connection with the task.
            self.conn.close_transport()
            raise
        except Exception as exc:
            logger.error("Exception in ASGI application", exc_info=exc)
            self._answer_app_failure()
        else:
            if result is not None:
                logger.error("ASGI callable returned %r; it must return None.", result)
            if self.phase is not COMPLETE and not self.disconnected:
                what = "starting" if self.phase is WAITING_START else "completing"
                logger.error("ASGI callable returned without %s the response.", what)
                self._answer_app_failure()

    def _answer_app_failure(self) -> None:
        if self.disconnected or self.phase is COMPLETE:
            return
        if self.phase in (WAITING_START, HEAD_PENDING):
            # Nothing on the wire yet: the client can still get a proper answer.
            self.phase = COMPLETE
            self.wake()
            if self.conn.access_log:
                self.conn.log_access(self.scope, 500)
            self.conn.write_error_response(500, "Internal Server Error")
        else:
            # Part of the response is out: closing is the only honest signal left.
            self.conn.close_transport()

    # -- receive -----------------------------------------------------------------------------

    async def receive(self) -> Dict[str, Any]:
        if self.expect_100_continue:
            # RFC 9110 §10.1.1: the client holds the body back until told to send it; the app
            # asking for the body is the sign that it wants it.
            self.expect_100_continue = False
            if self.phase is WAITING_START and not self.disconnected and not self.request_complete:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        while True:
            if self.disconnected or self.phase is COMPLETE:
                return {"type": "http.disconnect"}
            if not self._final_body_delivered and (self.body_chunks or self.request_complete):
                chunks = self.body_chunks
                # Copies: none when one chunk waited (the common case), else one join.
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self.body_chunks = []
                self.body_buffered = 0
                more_body = not self.request_complete
                self._final_body_delivered = not more_body
                if self.conn._reading_paused:
                    self.conn.body_consumed()
                return {"type": "http.request", "body": body, "more_body": more_body}
            if self._message_event is None:
                self._message_event = asyncio.Event()
            self._message_event.clear()
            await self._message_event.wait()

    # -- send --------------------------------------------------------------------------------

    async def send(self, message: Dict[str, Any]) -> None:
        message_type = message["type"]
        phase = self.phase
        if self.disconnected or (phase is not COMPLETE and self.transport.is_closing()):
            raise ClientDisconnected("the HTTP connection is closed")
        if phase is WAITING_START and message_type == "http.response.start":
            self._start(message)
        elif message_type == "http.response.body" and phase in (HEAD_PENDING, STREAMING):
            self._write_body(message.get("body", b""), message.get("more_body", False))
            if self.conn.write_paused:
                await self.conn.drain()
        elif phase is COMPLETE:
            return  # "any further messages on the channel will be ignored"
        else:
            raise UnexpectedMessage(phase, message_type)

    def _start(self, message: Dict[str, Any]) -> None:
        status = message["status"]
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise RuntimeError(f"Invalid HTTP status {status!r}.")
        lines = []
        for name, value in message.get("headers", ()):
            try:
                line, lowered = _header_lines[name, value]
            except (KeyError, TypeError):  # not seen lately, or not hashable (bytearray)
                line, lowered = _header_line(name, value)
            if lowered is None:
                pass  # the common case: a field the server passes on as it is
            elif lowered == b"content-length":
                try:
                    self._content_length = int(value)
                except ValueError:
                    raise RuntimeError(f"Invalid Content-Length {value!r}.") from None
            elif lowered == b"transfer-encoding":
                continue  # ASGI: the server frames the body itself and ignores the app's header
            elif lowered == b"connection":
                if b"close" in [token.strip().lower() for token in value.split(b",")]:
                    self.keep_alive = False
                    self._sent_connection_close = True
            elif lowered == b"server":
                self._has_server = True
            elif lowered == b"date":
                self._has_date = True
            lines.append(line)
        self.status = status
        self._header_lines = lines
        self.phase = HEAD_PENDING

    def _head(self, first_body: bytes, more_body: bool) -> List[bytes]:
        """The status line and header lines, ending with the blank line, now that the first body
        chunk tells how to frame the body."""
        status = self.status
        lines = [STATUS_LINES[status]]
        if not self._has_date:
            lines.append(date_header())
        if not self._has_server:
            lines.append(SERVER_HEADER)
        lines += self._header_lines
        if self.scope["method"] == "HEAD" or status < 200 or status in (204, 304):
            self._framing = NO_BODY
        elif self._content_length is not None:
            self._framing, self._remaining = LENGTH, self._content_length
        elif not more_body:
            # The whole body is in hand: say how long it is rather than chunk it.
            self._framing, self._remaining = LENGTH, len(first_body)
            lines.append(b"content-length: %d\r\n" % len(first_body))
        elif self.scope["http_version"] == "1.1":
            self._framing = CHUNKED
            lines.append(b"transfer-encoding: chunked\r\n")
        else:
            self._framing = CLOSE_DELIMITED
            self.keep_alive = False
        if not self.keep_alive and not self._sent_connection_close:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return lines

    def _write_body(self, body: bytes, more_body: bool) -> None:
        # Copies: a body under JOIN_LIMIT is joined with the head and its framing once, for one
        # write (one send()); a larger one is written beside them, not copied (uvloop: writev).
        head_pending = self.phase is HEAD_PENDING
        parts = self._head(body, more_body) if head_pending else []
        framing = self._framing
        if framing is LENGTH:
            if len(body) > self._remaining:
                raise RuntimeError("Response body longer than its Content-Length.")
            self._remaining -= len(body)
            parts.append(body)
        elif framing is CHUNKED:
            if body:
                parts += (b"%x\r\n" % len(body), body, b"\r\n")
            if not more_body:
                parts.append(b"0\r\n\r\n")
        elif framing is CLOSE_DELIMITED:
            parts.append(body)
        # NO_BODY: a body given for HEAD / 204 / 304 is dropped.

        conn = self.conn
        if head_pending:
            self.phase = STREAMING
            if conn.access_log:
                conn.log_access(self.scope, self.status)
        if len(parts) == 1:
            self.transport.write(parts[0])
        elif len(body) < JOIN_LIMIT:
            self.transport.write(b"".join(parts))
        elif parts:
            self.transport.writelines(parts)
        if not more_body:
            if framing is LENGTH and self._remaining:
                raise RuntimeError("Response body shorter than its Content-Length.")
            self.phase = COMPLETE
            if self._message_event is not None:
                self._message_event.set()
            conn.response_complete(self)


async def service_unavailable(scope: Dict[str, Any], receive: Callable, send: Callable) -> None:
    """The app that answers when --limit-concurrency is reached."""
    body = b"Service Unavailable"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HttpProtocol(asyncio.Protocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app: Callable,
        app_state: Dict[str, Any],
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app = app
        self.app_state = app_state  # the lifespan state; each request scope gets a shallow copy
        self.loop = asyncio.get_event_loop()
        self.parser = self._new_parser()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._root_path = config.root_path
        self._raw_root_path = urllib.parse.quote(config.root_path).encode("ascii")
        self.access_log = config.access_log and access_logger.isEnabledFor(logging.INFO)  # checked once
        self._trusted = parse_trusted(config.forwarded_allow_ips) if config.proxy_headers else None
        self._limit_max_head = config.limit_max_head
        self._limit_concurrency = config.limit_concurrency
        self._timeout_keep_alive = config.timeout_keep_alive
        self._tasks = server_state.tasks
        self._limit_max_headers = config.limit_max_headers

        # Per connection
        self._server: Optional[Tuple[Any, Optional[int]]] = None
        self._client: Optional[Tuple[str, int]] = None
        self._scheme = "http"
        self._from_proxy = False  # the peer is in --forwarded-allow-ips: read its proxy headers
        self._active: Optional[RequestCycle] = None  # the request whose app runs / response is in flight
        self._parsing: Optional[RequestCycle] = None  # the request whose body is still arriving
        self._pipeline: Deque[Tuple[RequestCycle, Callable]] = deque()  # parsed, waiting for _active
        self._stopped = False  # no more parsing: an error or an upgrade ends HTTP on this connection
        self._deferred_upgrade: Optional[Tuple[Dict[str, Any], bytes]] = None
        self._deferred_error: Optional[Tuple[int, str]] = None
        self._ignored_upgrade: Optional[Tuple[RequestCycle, Optional[bytes]]] = None
        self._priming = False  # feeding a synthetic head to a fresh parser (see _on_parser_upgrade)
        self._shutting_down = False
        # The header and keep-alive deadlines share one timer that is re-armed only when it fires
        # early (see _on_timer): a request moves the deadlines without making or cancelling one.
        self._header_deadline: Optional[float] = None  # the request head must be complete by then
        self._idle_deadline: Optional[float] = None  # keep-alive / shutdown grace: close if still idle
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_when = 0.0
        self._linger_timer: Optional[asyncio.TimerHandle] = None
        self._reading_paused = False
        self.write_paused = False
        self._writable: Optional[asyncio.Event] = None

        # Per request head, while it is parsed
        self._head_in_progress = False
        self._url = b""
        self._headers: List[Tuple[bytes, bytes]] = []
        self._head_size = 0  # request-target and header bytes the callbacks have seen
        self._head_received = 0  # estimate for a head still incomplete after a read (see data_received)
        self._head_feed = 0  # the data_received call in which the current head began
        self._feed_count = 0
        self._messages_begun = 0
        self._expect_100_continue = False
        self._upgrade_header: Optional[bytes] = None
        self._proxy_headers_seen = False  # X-Forwarded-* or Forwarded from a trusted peer
        self._upgrade_scope: Optional[Dict[str, Any]] = None

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        try:
            # Bytes after a `Connection: close` request are ignored rather than a parse error, so
            # that request still gets its response.
            parser.set_dangerous_leniencies(lenient_data_after_close=True)
        except AttributeError:  # httptools < 0.6.2
            pass
        return parser

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)
        self._server = _address(transport.get_extra_info("sockname"), unix_path=True)
        self._client = _address(transport.get_extra_info("peername"))  # type: ignore[assignment]
        if transport.get_extra_info("sslcontext") is not None:
            self._scheme = "https"
        if self._trusted is not None:
            self._from_proxy = (self._client[0] if self._client else None) in self._trusted
        # The first request's head must be complete this long after the connection opened.
        self._arm_header_timer()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.server_state.connections.discard(self)
        self._cancel_timers()
        for cycle in (self._active, self._parsing):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self._pipeline.clear()
        self._deferred_upgrade = None
        if self._writable is not None:
            self._writable.set()  # wake senders; their next send() raises ClientDisconnected

    def eof_received(self) -> Optional[bool]:
        # The client closed its side. Over TCP a half-close and a full close look the same here,
        # and an app waiting for `http.disconnect` (long-polling, streaming) must learn that the
        # client left: close, as the other ASGI servers do.
        return None

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            if self._deferred_upgrade is not None:  # bytes for the WebSocket, read before the pause took hold
                scope, leftover = self._deferred_upgrade
                self._deferred_upgrade = (scope, leftover + data)
            return
        self._idle_deadline = None
        self._feed_count += 1
        between_messages = not self._head_in_progress and self._parsing is None
        messages_before = self._messages_begun
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._on_parser_upgrade(data, upgrade.args[0])
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._reject(cause.status, cause.reason)
            elif isinstance(cause, _HandOff):
                # An invalid handshake (no `Connection: upgrade`): it gets an error answer and
                # the connection closes, so the bytes after it in this read do not matter.
                self._upgrade_to_websocket(b"")
            else:  # a bug in a callback below, not the client's fault
                logger.error("Error while handling an HTTP request", exc_info=cause or exc)
                self.close_transport()
            return
        except httptools.HttpParserError as exc:
            self._reject(400, f"Invalid HTTP request: {exc}")
            return

        if self._head_in_progress and not self._stopped:
            # The head is still incomplete after this read, and httptools buffers a header field
            # it has not finished, unseen by on_header. Bound that by counting bytes read: a read
            # after the one where the head began is all head; so is that first read when it began
            # between messages and started no other. Otherwise (it also carried the end of an
            # earlier request) count what the callbacks saw, short by at most that one read.
            if self._head_feed != self._feed_count:
                self._head_received += len(data)
            elif between_messages and self._messages_begun - messages_before == 1:
                self._head_received = len(data)
            else:
                self._head_received = self._head_size
            if self._head_received > self._limit_max_head:
                self._reject(431, "Request head too large")
            elif self._header_deadline is None and self._active is None:
                # A head began in this read and is not complete: timeout_header runs from now
                # (the loop's clock is the same as in on_message_begin). Most heads arrive in one
                # read, so this is not done per request.
                self._arm_header_timer()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._writable is None:
            self._writable = asyncio.Event()
        self._writable.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._writable is not None:
            self._writable.set()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is under its high-water mark (or the connection is gone)."""
        if self.write_paused and self._writable is not None:
            await self._writable.wait()

    # -- parsing -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._priming:
            return
        self._head_in_progress = True
        self._messages_begun += 1
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._head_feed = self._feed_count
        self._expect_100_continue = False
        self._upgrade_header = None
        self._proxy_headers_seen = False
        self._idle_deadline = None  # also when in the same read as the previous request's end

    def on_url(self, url: bytes) -> None:
        if self._priming:
            return
        self._url += url
        self._head_size += len(url)
        if self._head_size > self._limit_max_head:
            raise _Reject(431, "Request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._priming:
            return
        name = name.lower()
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_size > self._limit_max_head:
            raise _Reject(431, "Request head too large")
        if len(self._headers) > self._limit_max_headers:
            raise _Reject(431, "Too many request headers")
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_100_continue = True
        elif name == b"upgrade":
            self._upgrade_header = value
        elif self._from_proxy and (name == b"forwarded" or name.startswith(b"x-forwarded-")):
            self._proxy_headers_seen = True

    def on_headers_complete(self) -> None:
        if self._priming:
            return
        self._head_in_progress = False
        self._header_deadline = None

        parser = self.parser
        http_version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        scope = self._scope(method, http_version)

        if self._upgrade_header is not None and _has_token(self._upgrade_header, b"websocket"):
            # A WebSocket handshake, valid or not: the WebSocket layer checks it and answers (101,
            # or 400 / 426). With `Connection: upgrade` llhttp stops at the end of this head and
            # httptools raises HttpParserUpgrade with the offset; without it the handshake is
            # invalid, and it is handed over at the end of the message (on_message_complete).
            self._upgrade_scope = scope
            return

        upgrade = parser.should_upgrade()
        keep_alive = (
            http_version == "1.1" and parser.should_keep_alive() and not self._shutting_down and method != "CONNECT"
        )
        cycle = RequestCycle(self, scope, keep_alive, self._expect_100_continue and http_version == "1.1")
        self._parsing = cycle
        if upgrade:
            self._ignored_upgrade = (cycle, _body_framing(self._headers))

        app = service_unavailable if self._limit_concurrency is not None and self._over_concurrency_limit() else self.app

        if self._active is None:
            self._start_cycle(cycle, app)
        else:
            self._pipeline.append((cycle, app))
            self._update_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self._parsing
        if cycle is None or cycle.phase is COMPLETE or cycle.disconnected:
            return  # nobody will read it: the response is done, or this is an upgrade request
        cycle.body_chunks.append(body)
        cycle.body_buffered += len(body)
        cycle.wake()
        if cycle.body_buffered > REQUEST_BODY_HIGH_WATER:
            self._update_reading()

    def on_message_complete(self) -> None:
        if self._priming:
            return
        cycle = self._parsing
        if cycle is None:  # a WebSocket handshake: no http cycle
            if self._upgrade_scope is not None and not self.parser.should_upgrade():
                raise _HandOff()  # stops the parser; see data_received
            return
        if self._ignored_upgrade is not None and self._ignored_upgrade[0] is cycle and self._ignored_upgrade[1]:
            return  # llhttp skipped this body (it expected a protocol switch); parsed after the upgrade
        self._parsing = None
        cycle.request_complete = True
        cycle.wake()
        if self._active is None:
            self._advance()  # the response went out before the body finished arriving

    def _on_parser_upgrade(self, data: bytes, offset: int) -> None:
        """httptools stopped at the end of a head that asks for a protocol switch."""
        leftover = data[offset:]  # copy: the bytes after the head, usually none
        if self._upgrade_scope is not None:
            self._upgrade_to_websocket(leftover)
            return

        # Not a WebSocket upgrade: the request is being served as plain HTTP, Upgrade ignored.
        if self._ignored_upgrade is None:  # pragma: no cover - llhttp reports upgrades at headers complete
            self.data_received(leftover)
            return
        cycle, body_framing = self._ignored_upgrade
        self._ignored_upgrade = None
        if cycle.scope["method"] == "CONNECT":
            self._stopped = True  # what follows is tunnel data; the connection closes after the response
            return
        if body_framing is not None:
            # llhttp skipped the body, as it does before a protocol switch, but the body is HTTP
            # after all. A fresh parser primed with a head stating the same framing parses it
            # into this request (head callbacks ignore the priming), then carries on as usual.
            self.parser = self._new_parser()
            self._priming = True
            try:
                self.parser.feed_data(b"POST / HTTP/1.1\r\n" + body_framing + b"\r\n\r\n")
            finally:
                self._priming = False
        if leftover:
            self.data_received(leftover)

    def _upgrade_to_websocket(self, leftover: bytes) -> None:
        scope, self._upgrade_scope = self._upgrade_scope, None
        self._stopped = True
        if self._active is None and not self._pipeline:
            self._hand_off(scope, leftover)  # type: ignore[arg-type]
        else:
            # Responses go out in order: switch once the requests before this one are answered.
            self._deferred_upgrade = (scope, leftover)  # type: ignore[assignment]
            self._update_reading()

    def _scope(self, method: str, http_version: str) -> Dict[str, Any]:
        url = self._url
        if url == b"*":  # OPTIONS * (RFC 9112 §3.2.4)
            raw_path, query = url, b""
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                if method != "CONNECT":
                    raise _Reject(400, "Invalid request target") from None
                raw_path, query = url, b""  # authority-form, "host:port"
            else:
                raw_path, query = parsed.path or b"/", parsed.query or b""
        # llhttp admits only ASCII in the target; %-escapes decode as UTF-8 (invalid → U+FFFD).
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        client, scheme, headers = self._client, self._scheme, self._headers
        if self._proxy_headers_seen:  # only a peer in --forwarded-allow-ips sets it
            client, scheme, headers = apply_proxy_headers(client, scheme, headers, self._trusted)  # type: ignore[arg-type]
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.5"},
            "http_version": http_version,
            "server": self._server,
            "client": client,
            "scheme": scheme,
            "method": method,
            # `path` and `raw_path` are the full path, root_path included (as ASGI clarified).
            "root_path": self._root_path,
            "path": self._root_path + path,
            "raw_path": self._raw_root_path + raw_path,
            "query_string": query,
            "headers": headers,
            "state": self.app_state.copy(),
        }

    # -- moving between requests -------------------------------------------------------------

    def _start_cycle(self, cycle: RequestCycle, app: Callable) -> None:
        self._active = cycle
        task = self.loop.create_task(cycle.run_asgi(app))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def response_complete(self, cycle: RequestCycle) -> None:
        """Called by the cycle once its last body byte is written."""
        self.server_state.total_requests += 1
        self._active = None
        if cycle.keep_alive:
            self._advance()
        elif self._parsing is not None:
            self._linger()  # the client may still be sending a body nobody will read
        else:
            self.close_transport()

    def _advance(self) -> None:
        """Nothing in flight: start the next request, or what the connection is waiting to do."""
        if self._active is not None or self.transport.is_closing():
            return
        if self._pipeline:
            self._start_cycle(*self._pipeline.popleft())
        elif self._parsing is not None:
            # Answered before its body finished arriving: read on and drop the rest, unless the
            # client is waiting for a "100 Continue" it will now never get.
            if self._parsing.expect_100_continue:
                self._linger()
                return
        elif self._deferred_upgrade is not None:
            scope, leftover = self._deferred_upgrade
            self._deferred_upgrade = None
            self._hand_off(scope, leftover)
            return
        elif self._deferred_error is not None:
            self.write_error_response(*self._deferred_error)
            return
        elif self._head_in_progress:
            self._arm_header_timer()
        else:
            self._arm_idle_timer(self._timeout_keep_alive)
            if not self._reading_paused:
                return  # idle with reading on: nothing to resume (the common case)
        self._update_reading()

    def body_consumed(self) -> None:
        """The app took the buffered body: reading may resume."""
        if self._reading_paused:
            self._update_reading()

    def _update_reading(self) -> None:
        parsing = self._parsing
        pause = (
            bool(self._pipeline)
            or self._deferred_upgrade is not None
            or self._deferred_error is not None
            or (parsing is not None and parsing.body_buffered > REQUEST_BODY_HIGH_WATER)
        )
        if pause != self._reading_paused and not self.transport.is_closing():
            self._reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _over_concurrency_limit(self) -> bool:
        """--limit-concurrency: app tasks (HTTP requests, WebSocket sessions) or connections
        (HTTP ones, this one included, and WebSocket ones) past the limit."""
        limit = self.config.limit_concurrency
        state = self.server_state
        if limit is not None and (len(state.tasks) >= limit or len(state.connections) > limit):
            logger.warning("Concurrency limit of %d reached: answering 503.", limit)
            return True
        return False

    def _hand_off(self, scope: Dict[str, Any], leftover: bytes) -> None:
        """Give the transport to the WebSocket protocol: it validates the handshake and answers."""
        if self._over_concurrency_limit():
            # A WebSocket session holds a connection and an app task for as long as it lasts:
            # refused before the app sees it, like an HTTP request over the limit.
            self.write_error_response(503, "Service Unavailable")
            return
        try:
            # Imported here: the WebSocket layer loads the C codec, which HTTP-only use never needs.
            from asgiws.asgi.websocket import WebSocketProtocol
        except ImportError as exc:
            logger.error("WebSocket support is unavailable (%s); answering 500.", exc)
            self.write_error_response(500, "WebSocket support is unavailable")
            return
        self._cancel_timers()
        ws = WebSocketProtocol(
            config=self.config, server_state=self.server_state, app=self.app, app_state=self.app_state
        )
        transport = self.transport
        # uvloop keeps the previous protocol's data_received after set_protocol() to a
        # BufferedProtocol, which would keep this HttpProtocol (parser, headers: ~4 KiB) alive
        # for the whole WebSocket session: pass through a stateless placeholder first.
        transport.set_protocol(_DETACHED)
        transport.set_protocol(ws)
        self.server_state.connections.discard(self)
        if self._reading_paused:  # the WebSocket protocol starts with reading on
            self._reading_paused = False
            transport.resume_reading()
        ws.upgrade(transport, scope, leftover)
        if self._shutting_down:  # a handshake that arrived during the shutdown grace: refused (503)
            ws.shutdown()

    # -- errors, timeouts, shutdown ----------------------------------------------------------

    def _reject(self, status: int, reason: str) -> None:
        """The client sent something we cannot serve: answer `status` once the responses before
        it are out, then close."""
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s: %d %s", _client_text(self._client), status, reason)
        self._stopped = True
        self._head_in_progress = False
        self._cancel_timers()
        if self._parsing is not None:
            # Broken in the middle of a body: no answer can be framed sanely.
            self.close_transport()
        elif self._active is None and not self._pipeline:
            self.write_error_response(status, reason)
        else:
            self._deferred_error = (status, reason)
            self._update_reading()

    def write_error_response(self, status: int, reason: str) -> None:
        """A small text/plain response the server writes itself, then close (lingering)."""
        body = reason.encode("utf-8")
        self.transport.write(
            b"".join((
                STATUS_LINES[status], date_header(), SERVER_HEADER,
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body), body,
            ))  # fmt: skip
        )
        self._linger()

    def _linger(self) -> None:
        """Close without losing the response just written: send FIN after it, then read and drop
        what the client still sends, for LINGER_TIMEOUT at most. Closing with unread bytes makes
        the kernel answer them with RST, which can destroy the response before the client reads it.
        """
        self._stopped = True  # from here, what arrives is dropped unparsed
        self._active = self._parsing = self._deferred_upgrade = None
        self._pipeline.clear()
        transport = self.transport
        if transport.is_closing() or not transport.can_write_eof():
            self.close_transport()
            return
        self._cancel_timers()
        transport.write_eof()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_TIMEOUT, self.close_transport)

    def close_transport(self) -> None:
        self._cancel_timers()
        if not self.transport.is_closing():
            self.transport.close()

    def log_access(self, scope: Dict[str, Any], status: int) -> None:
        """One access log line; callers check `access_log` first."""
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        access_logger.info(
            '%s - "%s %s HTTP/%s" %d', _client_text(scope["client"]), scope["method"], target,
            scope["http_version"], status,
        )  # fmt: skip

    def _arm_header_timer(self) -> None:
        self._header_deadline = deadline = self.loop.time() + self.config.timeout_header
        if self._timer is None or self._timer_when > deadline:
            self._schedule_timer(deadline)

    def _arm_idle_timer(self, delay: float) -> None:
        self._idle_deadline = deadline = self.loop.time() + delay
        if self._timer is None or self._timer_when > deadline:
            self._schedule_timer(deadline)

    def _schedule_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        """The timer is due: act on the deadlines that have passed, and re-arm for the next one
        (the deadlines may have moved later since it was armed)."""
        self._timer = None
        now = self.loop.time() + 0.001  # the loop's clock has millisecond steps
        if self._header_deadline is not None and self._header_deadline <= now:
            self._header_deadline = None
            self._on_header_timeout()
        if self._idle_deadline is not None and self._idle_deadline <= now:
            self._idle_deadline = None
            self._on_keep_alive_timeout()
        pending = [deadline for deadline in (self._header_deadline, self._idle_deadline) if deadline is not None]
        if pending and self._timer is None:
            self._schedule_timer(min(pending))

    def _on_header_timeout(self) -> None:
        if self._active is not None:
            return  # busy answering: the timer restarts when the response is done (_advance)
        logger.debug("%s: request head not received within %ss; closing.",
                     _client_text(self._client), self.config.timeout_header)  # fmt: skip
        self.close_transport()

    def _on_keep_alive_timeout(self) -> None:
        if self._active is None and self._parsing is None and not self._head_in_progress:
            self.close_transport()

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._linger_timer = None
        self._header_deadline = self._idle_deadline = None

    def shutdown(self) -> None:
        """Graceful shutdown: close an idle keep-alive connection now; let the request in flight,
        or one whose head is arriving, finish (its response says `Connection: close`).

        A connection accepted just before the shutdown gets FIRST_REQUEST_GRACE to send its first
        request: its client sent it as soon as connect() returned, and closing now would fail it
        unanswered (after a request, an idle connection may close: clients retry on those).
        """
        self._shutting_down = True
        self._pipeline.clear()
        self._deferred_upgrade = None
        if self._active is not None:
            self._active.keep_alive = False
        elif self._head_in_progress:
            pass  # answered once complete (the header timer bounds the wait), then closed
        elif self._messages_begun == 0 and not self._stopped:
            grace = min(FIRST_REQUEST_GRACE, self.config.timeout_header)
            self._arm_idle_timer(grace)
        else:
            self.close_transport()


def _address(address: Any, unix_path: bool = False) -> Optional[Tuple[Any, Optional[int]]]:
    """`(host, port)` for TCP (IPv6's flow info and scope id dropped); `(path, None)` for the
    listening side of a Unix socket; None when there is nothing to tell."""
    if isinstance(address, (tuple, list)) and len(address) >= 2:
        return (str(address[0]), int(address[1]))
    if unix_path and address:
        return (address.decode("utf-8", "backslashreplace") if isinstance(address, bytes) else address, None)
    return None


def _client_text(client: Optional[Tuple[str, int]]) -> str:
    return "%s:%d" % client if client else "-"


def _has_token(value: bytes, token: bytes) -> bool:
    """Whether a comma-separated header value lists `token` (case-insensitive)."""
    return any(part.strip().lower() == token for part in value.split(b","))


def _body_framing(headers: List[Tuple[bytes, bytes]]) -> Optional[bytes]:
    """The framing header of a request that has a body, for re-parsing it; None without a body."""
    framing = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return b"transfer-encoding: " + value
        if name == b"content-length" and value.strip() not in (b"0", b""):
            framing = b"content-length: " + value.strip()
    return framing
