# cython: annotation_typing=False, wraparound=True, boundscheck=True
"""HTTP/1.1 (RFC 9112) for the ASGI `http` scope (asgiref www spec 2.5), over httptools (llhttp).

One `HttpProtocol` per TCP connection, one `RequestCycle` (`asgiws.http.cycle`) per request on it.

A connection serves requests one at a time, in order:

    idle ──first byte──▶ head ──headers complete──▶ request in flight ──response complete──▶ idle
     │ keep-alive timer   │ header timer                │                                      │
     └──▶ close           └──▶ close / 400 / 431        └─ more requests already parsed? ──────┘
                                                           start the next one (pipelining)

- Parsing is bounded work: a read is fed to httptools in slices of FEED_SLICE bytes (a read no
  larger, the common case, in one call), and parsing stops between slices when a bound is hit;
  the rest of the read waits unparsed in `_unparsed`, reading from the socket pauses, and parsing
  resumes from that buffer before the socket is read again. A connection parses at most
  PARSE_BUDGET bytes per loop turn, then yields (call_soon), so one flooding peer costs the
  others little.
- Pipelining (RFC 9112 §9.3.2): requests whose heads are parsed while another is in flight wait
  in `_pipeline`, and reading pauses until they have run: responses go out in request order.
  Parsing ahead stops once the pipeline holds PIPELINE_HIGH_WATER bytes (see there).
- Request bodies are buffered per request until the app calls `receive()`; past
  REQUEST_BODY_HIGH_WATER (each chunk counted with its overhead) parsing and reading pause, so a
  slow app slows the client instead of growing memory.
- `await send()` returns once the bytes are handed to the transport and the transport's write
  buffer is under its high-water mark (`pause_writing` / `resume_writing`). While it is above,
  nothing more is read or parsed, and the next pipelined request waits: a client that does not
  read its responses stops being read. A peer that reads nothing for --timeout-write-stall
  while bytes wait for it is dropped (the app sees a disconnect).
- Framing (RFC 9112 §3.2, §6): an HTTP/1.1 request without Host, or any with two, is a 400; a
  Transfer-Encoding whose final coding is not chunked is a 400, and one with another coding
  before chunked a 501 (no transfer coding but chunked is implemented).
- A WebSocket handshake (`Upgrade: websocket`) is not given to the http app: the transport is
  handed to `asgiws.asgi.websocket.WebSocketProtocol` with the scope built here and the bytes
  that followed the head, at the offset httptools reported; nothing is parsed twice. That layer
  checks the handshake and answers it (101, or 400 / 426). Other upgrades (h2c, ...) are
  ignored, as RFC 9110 §7.8 allows, and the request is served as plain HTTP.
- With --ws none, `Upgrade: websocket` is ignored like any other upgrade (HTTP only).
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
import contextvars
import logging
import time
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

import httptools

from asgiws.access import client_text, fields, redact_query
from asgiws.http.cycle import (
    COMPLETE,
    HEAD_PENDING,
    STATUS_LINES,
    STREAMING,
    WAITING_START,
    Connection,
    RequestCycle,
    service_unavailable,
)
from asgiws.http.proxy import apply_proxy_headers, parse_trusted
from asgiws.http.tls import tls_extension
from asgiws.stall import WriteStallWatch
from asgiws.state import LINGER_TIMEOUT

if TYPE_CHECKING:
    from asgiws.config import Config
    from asgiws.state import ServerState

logger = logging.getLogger("asgiws.error")
access_logger = logging.getLogger("asgiws.access")

# Request body bytes buffered for the app before parsing and reading pause (the app is not calling
# receive). Each chunk httptools hands over counts BODY_CHUNK_OVERHEAD besides its length: its
# bytes object's header (33 B, rounded up by the allocator) and its list slot, so a body sent as
# 1-byte chunks pauses after ~1,000 of them (~64 KiB of memory), not 65,536. A slice parsed past
# the mark is kept: at most 64 KiB + one slice (FEED_SLICE + PARSE_BUDGET) is held.
REQUEST_BODY_HIGH_WATER = 65536
BODY_CHUNK_OVERHEAD = 64

# A read is parsed FEED_SLICE bytes at a time (a read no larger than that, the common case, in one
# call), and between slices parsing stops if a bound below is hit, keeping the rest unparsed. The
# bounds are checked between slices because httptools cannot stop inside one: what one slice
# holds is the overshoot (4 KiB of minimal 24-byte requests is ~170 of them, ~220 KiB parsed).
# A request body of known length is fed in one slice (up to PARSE_BUDGET), not sliced.
FEED_SLICE = 4096

# Bytes one connection parses per loop turn; past it, it yields and resumes on the next turn
# (call_soon), so a peer flooding one socket delays the others by about this much work.
PARSE_BUDGET = 65536

# Requests parsed ahead while another is in flight (pipelined) wait in `_pipeline`; parsing stops
# once they hold PIPELINE_HIGH_WATER bytes, counted as: PIPELINED_REQUEST_OVERHEAD each (its
# RequestCycle, scope dict and deque slot: ~1,260 B measured with tracemalloc), its head bytes,
# HEADER_OVERHEAD per header (the tuple and two bytes objects' headers: ~120 B), and its body as
# REQUEST_BODY_HIGH_WATER counts it. 16 KiB is ~12 minimal requests, or one with a 14 KiB head;
# with the slice that crosses the mark, a connection holds at most ~240 KiB of parsed requests.
# Parsing resumes once the pipeline is empty.
PIPELINE_HIGH_WATER = 16384
PIPELINED_REQUEST_OVERHEAD = 1280
HEADER_OVERHEAD = 128

# On shutdown, how long a connection that has not sent its first request yet may still send it.
FIRST_REQUEST_GRACE = 1.0

# Request fields the server acts on (lower-cased), tested with one set lookup per header.
HEAD_FIELDS = frozenset((b"host", b"content-length", b"transfer-encoding", b"expect", b"upgrade", b"connection"))

# The fields apply_proxy_headers reads (asgiws.http.proxy): a request from a trusted proxy that
# has none of them is left as it is.
PROXY_FIELDS = frozenset((b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"))

# Request field names as browsers, proxies and clients spell them -> one shared lower-cased bytes
# object. The scope's headers hold these instead of a fresh lower-cased copy per header: a
# WebSocket session keeps its handshake's headers for as long as it lasts, so ten names are ~350
# bytes less per idle connection, and a known name costs a dict lookup instead of an allocation.
# Other names are lower-cased as they come.
COMMON_FIELDS = (
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "connection", "upgrade",
    "origin", "cookie", "cache-control", "pragma", "referer", "authorization", "content-type",
    "content-length", "transfer-encoding", "expect", "te", "dnt", "priority", "if-none-match",
    "if-modified-since", "upgrade-insecure-requests", "x-forwarded-for", "x-forwarded-proto",
    "x-forwarded-host", "x-forwarded-port", "x-real-ip", "x-request-id", "forwarded", "via",
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user",
    "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform",
)
FIELD_NAMES: Dict[bytes, bytes] = {}
for _name in COMMON_FIELDS:
    _lower = _name.encode("ascii")
    for _spelling in (_name, _name.title(), _name.title().replace("Websocket", "WebSocket"), _name.upper()):
        FIELD_NAMES[_spelling.encode("ascii")] = _lower
del _name, _lower, _spelling

# The `http` scope's keys in the order the ASGI spec lists them; _scope copies this and sets
# every value.
SCOPE_TEMPLATE: Dict[str, Any] = dict.fromkeys((
    "type", "asgi", "http_version", "server", "client", "scheme", "method", "root_path", "path",
    "raw_path", "query_string", "headers", "state", "extensions",
))
SCOPE_TEMPLATE["type"] = "http"
ASGI_VERSION = {"version": "3.0", "spec_version": "2.5"}

# The app's task type, made directly when the loop has no task factory (see _plain_tasks).
_Task = asyncio.Task

# Every request's app task is named this one shared str (as WebSocket app tasks are): without
# a name, CPython before 3.12 formats a "Task-<n>" for each task it makes, ~1.5k instructions,
# about 3 % of a request.
_TASK_NAME = "asgiws http app"

# Request methods as the scope's str, without a decode each (llhttp checked the token).
METHOD_NAMES: Dict[bytes, str] = {
    name.encode("ascii"): name
    for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
}

# What `scope["extensions"]` offers (asgiref docs/extensions.rst; each request gets a copy):
# pathsend and trailers always, early hints with --early-hints to HTTP/1.1 requests only (RFC 9110
# §15.2: no 1xx to an HTTP/1.0 client), `tls` on TLS connections (asgiws.http.tls).
EXTENSIONS: Dict[str, Dict[str, Any]] = {"http.response.pathsend": {}, "http.response.trailers": {}}
EXTENSIONS_EARLY_HINTS = {**EXTENSIONS, "http.response.early_hint": {}}

# A protocol with no state, set between the HTTP and the WebSocket protocol (see _hand_off).
_DETACHED = asyncio.Protocol()

# The parser of a connection that has ended or been handed off: never fed. A connection's own
# parser holds the connection's bound methods, so keeping it would leave each connection a
# reference cycle for the cyclic GC to find instead of being freed by reference counting.
_NO_PARSER = httptools.HttpRequestParser(_DETACHED)


class _Reject(Exception):
    """Raised from a parser callback to answer the request with an error status and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _HandOff(Exception):
    """Raised from on_message_complete to stop httptools after a WebSocket handshake it did not
    treat as an upgrade (no `Connection: upgrade`)."""


class HttpProtocol(Connection):
    """An asyncio.Protocol by its methods, not by inheritance: compiled (protocol.pxd), it is a
    cdef class, which cannot derive from a Python class."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app: Callable[..., Any],
        app_state: Dict[str, Any],
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app = app
        self.app_state = app_state  # the lifespan state; each request scope gets a shallow copy
        self.loop = asyncio.get_event_loop()
        self.parser = self._new_parser()
        # None until connection_made(); nothing that writes runs before it.
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._root_path = config.root_path
        self._raw_root_path = urllib.parse.quote(config.root_path).encode("ascii")
        self.access_log = config.access_log and access_logger.isEnabledFor(logging.INFO)  # checked once
        # Metrics (--metrics-port) or None; like the access log, decided once per connection:
        # with both off, no request is timed and nothing is recorded (record_response).
        self._metrics = server_state.metrics
        self._balance = server_state.balance  # --workers: may pause accepting (supervisors.balance)
        self.observed = self.access_log or self._metrics is not None
        fields = config.response_fields
        self.add_date, self.server_line, self.extra_lines = fields.date, fields.server_line, fields.extra_lines
        self._websocket = config.ws != "none"  # --ws none: an upgrade to WebSocket is served as plain HTTP
        self._reset_contextvars = config.reset_contextvars
        self._trusted = parse_trusted(config.forwarded_allow_ips) if config.proxy_headers else None
        self._limit_max_head = config.limit_max_head
        self._limit_concurrency = config.limit_concurrency
        self._timeout_keep_alive = config.timeout_keep_alive
        self._tasks = server_state.tasks
        # No task factory (an app may install one in its lifespan, before any connection): the
        # app's task is made as loop.create_task would make it, without its wrapper (~0.5k).
        self._plain_tasks = self.loop.get_task_factory() is None
        # Requests are counted only for --limit-max-requests (set before the first connection).
        self._count_requests = server_state.request_limit is not None
        self._limit_max_headers = config.limit_max_headers
        self.timeout_write_stall = config.timeout_write_stall
        self._extensions_10 = EXTENSIONS  # HTTP/1.0 requests
        self._extensions = EXTENSIONS_EARLY_HINTS if config.early_hints else EXTENSIONS  # HTTP/1.1

        # Per connection
        self._server: Optional[Tuple[Any, Optional[int]]] = None
        self._client: Optional[Tuple[str, int]] = None
        self._scheme = "http"
        self._from_proxy = False  # the peer is in --forwarded-allow-ips: read its proxy headers
        self._active: Optional[RequestCycle] = None  # the request whose app runs / response is in flight
        self._parsing: Optional[RequestCycle] = None  # the request whose body is still arriving
        self._pipeline: Deque[Tuple[RequestCycle, Callable[..., Any]]] = deque()  # parsed, waiting for _active
        self._pipeline_bytes = 0  # their queued_bytes; bound: PIPELINE_HIGH_WATER (+ one slice)
        # Read but not parsed yet: the rest of one read (a view of it, so at most one read, 256 KiB
        # with uvloop) while a bound stops parsing or the budget has run out; reading is paused
        # while it holds anything.
        self._unparsed: Optional[memoryview] = None
        self._parse_handle: Optional[asyncio.Handle] = None  # _parse scheduled for a later turn
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
        self.reading_paused = False
        self.write_paused = False
        self._writable: Optional[asyncio.Event] = None
        self._stall_watch: Optional[WriteStallWatch] = None  # made on the first pause_writing

        # Per request head, while it is parsed
        self._head_in_progress = False
        self._url = b""
        self._headers: List[Tuple[bytes, bytes]] = []
        self._head_size = 0  # request-target and header bytes the callbacks have seen
        self._head_received = 0  # estimate for a head still incomplete after a read (see data_received)
        self._head_feed = 0  # the data_received call in which the current head began
        self._feed_count = 0
        self._messages_begun = 0
        # The message that begins the slice being fed, when one does, and that slice while it is
        # fed: on_headers_complete reads the method and version off its request line (see _feed).
        self._version_message = 0
        self._line_chunk: Optional[bytes] = None
        self._expect_100_continue = False
        self._upgrade_header: Optional[bytes] = None
        self._proxy_headers_seen = False  # X-Forwarded-* or Forwarded from a trusted peer
        self._upgrade_scope: Optional[Dict[str, Any]] = None
        self._host_count = 0
        self._transfer_encoding: Optional[bytes] = None  # the field lines joined with ","
        self._content_length: Optional[bytes] = None
        self._connection_close = False  # a Connection field lists "close"
        # Body bytes still to come by Content-Length, so a body is fed in one slice; only slice
        # sizes depend on it, and it is 0 outside a body of known length.
        self._body_remaining = 0

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
        self.transport = transport  # type: ignore[assignment]  # a stream server's BaseTransport is a Transport
        self.server_state.connections.add(self)
        if self._balance is not None:
            self._balance.connection_opened()
        if self._metrics is not None:
            self._metrics.connection_opened("http")
        self._server = _address(transport.get_extra_info("sockname"), unix_path=True)
        self._client = _address(transport.get_extra_info("peername"))  # type: ignore[assignment]  # TCP peer: (host, port); else None
        if transport.get_extra_info("sslcontext") is not None:
            self._scheme = "https"
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:  # the handshake is done: connection_made comes after it
                tls = tls_extension(ssl_object, self.config.ssl_certfile)
                self._extensions = {**self._extensions, "tls": tls}
                self._extensions_10 = {**self._extensions_10, "tls": tls}
        if self._trusted is not None:
            self._from_proxy = (self._client[0] if self._client else None) in self._trusted
        # The first request's head must be complete this long after the connection opened.
        self._arm_header_timer()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.server_state.connections.discard(self)
        self.parser = _NO_PARSER  # ours holds our bound methods (see _NO_PARSER)
        if self._metrics is not None:
            self._metrics.connection_closed("http")
        active = self._active
        if active is not None and self.observed and active.phase is STREAMING:
            self.record_response(active, active.status)  # cut short: its head went out
        self._cancel_timers()
        if self._stall_watch is not None:
            self._stall_watch.stop()
        if self._parse_handle is not None:
            self._parse_handle.cancel()
            self._parse_handle = None
        self._unparsed = None
        for cycle in (self._active, self._parsing):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self._drop_pipeline()
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
        if self._unparsed is None and not self.reading_paused and len(data) <= FEED_SLICE:
            self._feed(data, FEED_SLICE)  # the common case: one call, no slicing, nothing kept
            if self._unparsed is None:
                return
        elif self._unparsed is None:
            self._unparsed = memoryview(data)
        else:
            # Read although reading was paused (a transport may deliver what it already had):
            # kept behind what waits, never parsed past a bound.
            self._unparsed = memoryview(bytes(self._unparsed) + data)
        self._parse()

    def _parse(self) -> None:
        """Feed `_unparsed` to httptools a slice at a time, until it runs out, a bound stops
        parsing (`_update_reading` schedules this again once the bound clears), or this loop
        turn's PARSE_BUDGET is spent (then again on the next turn). Reading stays paused while
        anything is left."""
        if self._parse_handle is not None:
            self._parse_handle.cancel()  # called directly, or by this handle: once is enough
            self._parse_handle = None
        budget = PARSE_BUDGET
        while self._unparsed is not None:
            if self._stopped or self.transport.is_closing():
                self._unparsed = None
                return
            if self._parse_blocked():
                break
            if budget <= 0:  # yield the loop to the other connections
                if self._parse_handle is None:
                    self._parse_handle = self.loop.call_soon(self._parse)
                break
            size = FEED_SLICE
            if self._body_remaining > 0 and self._parsing is not None:
                size += min(self._body_remaining, budget)  # a body of known length: in one piece
            budget -= size
            self._feed(self._unparsed, size)
        self._update_reading()

    def _parse_blocked(self) -> bool:
        """A bound stops parsing: the client is not reading its responses, requests parsed ahead
        fill the pipeline, or the body waiting for the app is over its mark."""
        parsing = self._parsing
        return (
            self.write_paused
            or self._pipeline_bytes >= PIPELINE_HIGH_WATER
            or (parsing is not None and parsing.body_buffered > REQUEST_BODY_HIGH_WATER)
        )

    def _feed(self, data: Any, size: int) -> None:
        """Parse data[:size] (bytes or a memoryview); what follows it is left in `_unparsed`.

        Copies: none (a memoryview slice); httptools copies each URL, header and body span into
        the bytes objects the callbacks get."""
        if len(data) > size:
            chunk = data[:size]
            self._unparsed = data[size:]
        else:
            chunk = data
            self._unparsed = None
        self._feed_count += 1
        between_messages = not self._head_in_progress and self._parsing is None
        messages_before = self._messages_begun
        if between_messages and type(chunk) is bytes:
            # The next message starts this slice: its method and version, read off its request
            # line, save on_headers_complete asking httptools (see _request_line_method).
            self._version_message = messages_before + 1
            self._line_chunk = chunk
        try:
            try:
                self.parser.feed_data(chunk)
            finally:
                self._line_chunk = None  # not kept past its feed: a head cut by the read asks httptools
        except httptools.HttpParserUpgrade as upgrade:
            # httptools stopped at the end of a head that asks for a protocol switch; the offset
            # is into this chunk, so what follows the head is the rest of `data`.
            rest = memoryview(data)[upgrade.args[0]:]
            self._unparsed = rest if len(rest) else None
            self._on_parser_upgrade()
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._reject(cause.status, cause.reason)
            elif isinstance(cause, _HandOff):
                # An invalid handshake (no `Connection: upgrade`): it gets an error answer and
                # the connection closes, so the bytes after it do not matter.
                self._unparsed = None
                self._upgrade_to_websocket(b"")
            else:  # a bug in a callback below, not the client's fault
                logger.error("Error while handling an HTTP request", exc_info=cause or exc)
                self.close_transport()
            return
        except httptools.HttpParserError as exc:
            self._reject(400, f"Invalid HTTP request: {exc}")
            return

        if self._head_in_progress and not self._stopped:
            # The head is still incomplete after this slice, and httptools buffers a header
            # field it has not finished, unseen by on_header. Bound that by counting bytes fed: a
            # slice after the one where the head began is all head; so is that first slice when
            # it began between messages and started no other. Otherwise (it also carried the end
            # of an earlier request) count what the callbacks saw, short by at most that slice.
            if self._head_feed != self._feed_count:
                self._head_received += len(chunk)
            elif between_messages and self._messages_begun - messages_before == 1:
                self._head_received = len(chunk)
            else:
                self._head_received = self._head_size
            if self._head_received > self._limit_max_head:
                self._reject(431, "Request head too large")
            elif self._header_deadline is None and self._active is None:
                # A head began in this slice and is not complete: timeout_header runs from now
                # (the loop's clock is the same as in on_message_begin). Most heads arrive in one
                # read, so this is not done per request.
                self._arm_header_timer()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._writable is None:
            self._writable = asyncio.Event()
        self._writable.clear()
        self._watch_write_stall()
        if not self.reading_paused:
            self._update_reading()  # a client that does not read its responses is not read

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._stall_watch is not None and not self.transport.is_closing():
            self._stall_watch.stop()  # (closing, what is left is still watched: close_transport)
        if self._writable is not None:
            self._writable.set()
        if self._active is None:
            self._advance()  # the next pipelined request waited for this response to drain
        elif self.reading_paused:
            self._update_reading()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is under its high-water mark (or the connection is gone)."""
        if self.write_paused and self._writable is not None:
            await self._writable.wait()

    def _watch_write_stall(self) -> None:
        if self.timeout_write_stall is not None:
            if self._stall_watch is None:
                self._stall_watch = WriteStallWatch(
                    self.loop, self.transport, self.timeout_write_stall, self.write_stalled
                )
            self._stall_watch.start()

    def write_stalled(self, unsent: int) -> None:
        """The peer read nothing for timeout_write_stall while bytes waited for it (the
        WriteStallWatch armed in pause_writing): drop it. Reading from it stopped when its
        responses backed up, so no other timeout can tell it is gone."""
        logger.info("%s: the client read nothing for %ss (%d bytes unsent); dropping the connection.",
                    client_text(self._client), self.timeout_write_stall, unsent)  # fmt: skip
        self._cancel_timers()
        self.transport.abort()  # close() would wait for the buffer to drain, which it will not

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
        self._host_count = 0
        self._transfer_encoding = self._content_length = None
        self._connection_close = False
        self._body_remaining = 0
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
        name = FIELD_NAMES.get(name) or name.lower()
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_size > self._limit_max_head:
            raise _Reject(431, "Request head too large")
        if len(self._headers) > self._limit_max_headers:
            raise _Reject(431, "Too many request headers")
        if name in HEAD_FIELDS:  # one set lookup for the common header, not a comparison each
            if name == b"host":
                self._host_count += 1
            elif name == b"content-length":
                self._content_length = value
            elif name == b"transfer-encoding":
                te = self._transfer_encoding
                self._transfer_encoding = value if te is None else te + b"," + value
            elif name == b"expect":
                if value.lower() == b"100-continue":
                    self._expect_100_continue = True
            elif name == b"connection":
                # RFC 9112 §9.6: "close" among its options ends the connection after the response
                # (what llhttp's should_keep_alive() reads; asked here, it costs no call).
                if value != b"keep-alive" and _has_token(value, b"close"):
                    self._connection_close = True
            else:  # upgrade
                self._upgrade_header = value
        elif self._from_proxy and name in PROXY_FIELDS:
            self._proxy_headers_seen = True

    def on_headers_complete(self) -> None:
        if self._priming:
            return
        self._head_in_progress = False
        self._header_deadline = None

        parser = self.parser
        # When this request began the slice being fed, that slice starts with its request line,
        # "METHOD SP target SP HTTP-version CRLF", which llhttp has checked: its method and
        # version read off it in C save asking httptools for them (~0.7k and ~2.3k instructions).
        line = self._line_chunk if self._version_message == self._messages_begun else None
        method = _request_line_method(line) if line is not None else None
        if method is None:
            raw_method = parser.get_method()
            method = METHOD_NAMES.get(raw_method) or raw_method.decode("ascii")
        http_version = None
        if line is not None:  # the method is ASCII: its length in characters is its length in bytes
            http_version = _request_line_version(line, len(method) + len(self._url) + 2)
        if http_version is None:
            http_version = parser.get_http_version()  # formats a str: ~2.3k instructions
        # RFC 9112 §3.2: a Host in every HTTP/1.1 request, never two; checked before anything
        # uses the request (a WebSocket handshake included).
        if self._host_count != 1 and (self._host_count or http_version == "1.1"):
            raise _Reject(400, "More than one Host header" if self._host_count else "Missing Host header")
        if self._transfer_encoding is not None:
            _check_transfer_encoding(self._transfer_encoding)
        elif self._content_length is not None:
            try:
                self._body_remaining = int(self._content_length)  # llhttp checked it is digits
            except ValueError:
                pass
        scope = self._scope(method, http_version)

        if self._upgrade_header is not None and self._websocket and _has_token(self._upgrade_header, b"websocket"):
            # A WebSocket handshake, valid or not: the WebSocket layer checks it and answers (101,
            # or 400 / 426). With `Connection: upgrade` llhttp stops at the end of this head and
            # httptools raises HttpParserUpgrade with the offset; without it the handshake is
            # invalid, and it is handed over at the end of the message (on_message_complete).
            self._upgrade_scope = scope
            return

        # llhttp reports an upgrade only for CONNECT or a request with an Upgrade field.
        upgrade = (self._upgrade_header is not None or method == "CONNECT") and parser.should_upgrade()
        # HTTP/1.0 closes after each response (keep-alive there is an extension not offered).
        keep_alive = (
            http_version == "1.1" and not self._connection_close and not self._shutting_down and method != "CONNECT"
        )
        cycle = RequestCycle(self, scope, keep_alive, self._expect_100_continue and http_version == "1.1")
        if self.observed:
            cycle.started = time.perf_counter()
        self._parsing = cycle
        if upgrade:
            self._ignored_upgrade = (cycle, _body_framing(self._headers))

        app = service_unavailable if self._limit_concurrency is not None and self._over_concurrency_limit() else self.app

        if self._active is None and not self._pipeline and not self.write_paused:
            self._start_cycle(cycle, app)
        else:
            # Parsed ahead: it waits its turn (or for the previous response to drain), counted
            # against PIPELINE_HIGH_WATER until it starts.
            cycle.queued_bytes = (
                PIPELINED_REQUEST_OVERHEAD + self._head_size + HEADER_OVERHEAD * len(self._headers)
            )
            self._pipeline_bytes += cycle.queued_bytes
            self._pipeline.append((cycle, app))
            if not self.reading_paused:
                self._update_reading()

    def on_body(self, body: bytes) -> None:
        self._body_remaining -= len(body)
        cycle = self._parsing
        if cycle is None or cycle.phase is COMPLETE or cycle.disconnected:
            return  # nobody will read it: the response is done, or this is an upgrade request
        cycle.body_chunks.append(body)
        size = len(body) + BODY_CHUNK_OVERHEAD
        cycle.body_buffered += size
        if cycle.queued_bytes:  # pipelined: its body counts against the pipeline's bound too
            cycle.queued_bytes += size
            self._pipeline_bytes += size
        cycle.wake()
        if cycle.body_buffered > REQUEST_BODY_HIGH_WATER:
            self._update_reading()

    def on_message_complete(self) -> None:
        if self._priming:
            return
        self._body_remaining = 0
        cycle = self._parsing
        if cycle is None:  # a WebSocket handshake: no http cycle
            if self._upgrade_scope is not None and not self.parser.should_upgrade():
                raise _HandOff()  # stops the parser; see _feed
            return
        if self._ignored_upgrade is not None and self._ignored_upgrade[0] is cycle and self._ignored_upgrade[1]:
            return  # llhttp skipped this body (it expected a protocol switch); parsed after the upgrade
        self._parsing = None
        cycle.request_complete = True
        cycle.wake()
        if self._active is None:
            self._advance()  # the response went out before the body finished arriving

    def _on_parser_upgrade(self) -> None:
        """httptools stopped at the end of a head that asks for a protocol switch; what followed
        the head is in `_unparsed`."""
        if self._upgrade_scope is not None:
            leftover = bytes(self._unparsed) if self._unparsed is not None else b""  # copy: usually empty
            self._unparsed = None
            self._upgrade_to_websocket(leftover)
            return

        # Not a WebSocket upgrade: the request is being served as plain HTTP, Upgrade ignored,
        # and parsing carries on with `_unparsed`.
        if self._ignored_upgrade is None:  # pragma: no cover - llhttp reports upgrades at headers complete
            return
        cycle, body_framing = self._ignored_upgrade
        self._ignored_upgrade = None
        if cycle.scope["method"] == "CONNECT":
            self._stopped = True  # what follows is tunnel data; the connection closes after the response
            self._unparsed = None
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

    def _upgrade_to_websocket(self, leftover: bytes) -> None:
        scope, self._upgrade_scope = self._upgrade_scope, None
        assert scope is not None, "on_headers_complete saw the upgrade"
        self._stopped = True
        if self._active is None and not self._pipeline and not self.write_paused:
            self._hand_off(scope, leftover)
        else:
            # Responses go out in order, and the WebSocket protocol starts with the write buffer
            # under its mark: switch once the responses before this one are out and drained.
            self._deferred_upgrade = (scope, leftover)
            self._update_reading()

    def _scope(self, method: str, http_version: str) -> Dict[str, Any]:
        url = self._url
        if url.startswith(b"/") and b"#" not in url:
            # Origin form, the common case (llhttp checked its characters): split at the first
            # "?" here rather than through httptools.parse_url's URL object, as it would.
            raw_path, _, query = url.partition(b"?")
        elif url == b"*":  # OPTIONS * (RFC 9112 §3.2.4)
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
        if self._proxy_headers_seen and self._trusted is not None:  # only a peer in --forwarded-allow-ips sets it
            client, scheme, headers = apply_proxy_headers(client, scheme, headers, self._trusted)
        # A copy of SCOPE_TEMPLATE with each value set: copying a dict of these keys and
        # replacing values costs about half of inserting 14 keys into a new one (~1k).
        scope = SCOPE_TEMPLATE.copy()
        scope["asgi"] = ASGI_VERSION.copy()  # each request its own: an app may change its scope
        scope["http_version"] = http_version
        scope["server"] = self._server
        scope["client"] = client
        scope["scheme"] = scheme
        scope["method"] = method
        # `path` and `raw_path` are the full path, root_path included (as ASGI clarified).
        scope["root_path"] = self._root_path
        scope["path"] = self._root_path + path if self._root_path else path
        scope["raw_path"] = self._raw_root_path + raw_path if self._raw_root_path else raw_path
        scope["query_string"] = query
        scope["headers"] = headers
        scope["state"] = self.app_state.copy()
        # Copies: the extensions dict, once per request (~0.1 µs): an app may change its own.
        scope["extensions"] = (self._extensions if http_version == "1.1" else self._extensions_10).copy()
        return scope

    # -- moving between requests -------------------------------------------------------------

    def _start_cycle(self, cycle: RequestCycle, app: Callable[..., Any]) -> None:
        self._active = cycle
        if self._reset_contextvars:  # the task copies the context it is created in: an empty one
            task = contextvars.Context().run(self.loop.create_task, cycle.run_asgi(app, self._tasks), name=_TASK_NAME)
        elif self._plain_tasks:
            task = _Task(cycle.run_asgi(app, self._tasks), loop=self.loop, name=_TASK_NAME)
        else:
            task = self.loop.create_task(cycle.run_asgi(app, self._tasks), name=_TASK_NAME)
        # The app runs from the next loop turn on, and takes its task out of _tasks. Not started
        # eagerly (Python 3.12's eager_start, tried in 0941e78): that ran ~8 % fewer instructions
        # per request but answered ~10 % fewer requests per second, because a loop turn that
        # reads 64 requests and then writes 64 responses costs less than 64 read-write pairs
        # (bench/RESULTS.md, "HTTP per request").
        cycle.task = task
        self._tasks.add(task)

    def response_complete(self, cycle: RequestCycle) -> None:
        """Called by the cycle once its last body byte is written."""
        if self.observed:
            self.record_response(cycle, cycle.status)
        if self._count_requests:
            state = self.server_state
            state.total_requests += 1
            if state.total_requests == state.request_limit:  # --limit-max-requests reached
                state.on_request_limit()
        self._active = None
        if cycle.keep_alive:
            self._advance()
        elif self._parsing is not None:
            self._linger()  # the client may still be sending a body nobody will read
        else:
            self.close_transport()

    def _advance(self) -> None:
        """Nothing in flight: start the next request, or what the connection is waiting to do.
        While the write buffer is over its mark, nothing starts: resume_writing calls this again,
        so a response is complete only once its bytes fit under the mark."""
        if self._active is not None or self.write_paused or self.transport.is_closing():
            return
        if self._pipeline:
            cycle, app = self._pipeline.popleft()
            self._pipeline_bytes -= cycle.queued_bytes
            cycle.queued_bytes = 0
            self._start_cycle(cycle, app)
        elif self._parsing is not None:
            # Answered before its body finished arriving: read on and drop the rest (and what
            # waited unread), unless the client is waiting for a "100 Continue" it will now never get.
            if self._parsing.expect_100_continue:
                self._linger()
                return
            self._parsing.body_chunks = []
            self._parsing.body_buffered = 0
        elif self._deferred_upgrade is not None:
            scope, leftover = self._deferred_upgrade
            self._deferred_upgrade = None
            self._hand_off(scope, leftover)
            return
        elif self._deferred_error is not None:
            status, reason = self._deferred_error
            self._deferred_error = None
            self.write_error_response(status, reason)
            return
        elif self._stopped:
            return  # lingering, or past a CONNECT: nothing more to start
        elif self._head_in_progress:
            self._arm_header_timer()
        elif self._unparsed is not None:
            pass  # more requests were read: parsed next (_update_reading schedules it)
        else:
            self._arm_idle_timer(self._timeout_keep_alive)
            if not self.reading_paused:
                return  # idle with reading on: nothing to resume (the common case)
        self._update_reading()

    def _drop_pipeline(self) -> None:
        """The requests parsed ahead will never run (the connection is ending)."""
        for cycle, _ in self._pipeline:
            cycle.queued_bytes = 0
        self._pipeline.clear()
        self._pipeline_bytes = 0

    def body_consumed(self) -> None:
        """The app took the buffered body: reading may resume."""
        if self.reading_paused:
            self._update_reading()

    def _update_reading(self) -> None:
        """Read the socket only when nothing waits: no bound hit (_parse_blocked), nothing
        unparsed, pipelined or deferred. Restart parsing the unparsed bytes, on the next loop turn,
        once no bound stops it and the pipeline is empty (not at each request leaving it)."""
        if self._stopped and self._deferred_upgrade is None and self._deferred_error is None:
            return  # lingering (reading on, to drop what comes), handed off, or past a CONNECT
        unparsed = self._unparsed is not None
        blocked = self._parse_blocked()
        if unparsed and not blocked and not self._pipeline and self._parse_handle is None:
            self._parse_handle = self.loop.call_soon(self._parse)
        pause = (
            blocked
            or unparsed
            or bool(self._pipeline)
            or self._deferred_upgrade is not None
            or self._deferred_error is not None
        )
        if pause != self.reading_paused and not self.transport.is_closing():
            self.reading_paused = pause
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
        # Imported here, on the first upgrade: HTTP-only tests and tools never load the WebSocket
        # layer. (It always imports: without the extensions it runs in pure Python.)
        from asgiws.asgi.websocket import WebSocketProtocol

        self._cancel_timers()
        if self._stall_watch is not None:
            self._stall_watch.stop()
        ws = WebSocketProtocol(
            config=self.config, server_state=self.server_state, app=self.app, app_state=self.app_state
        )
        self.parser = _NO_PARSER  # this object is freed with the hand-off (see _NO_PARSER)
        transport = self.transport
        # uvloop keeps the previous protocol's data_received after set_protocol() to a
        # BufferedProtocol, which would keep this HttpProtocol (parser, headers: ~4 KiB) alive
        # for the whole WebSocket session: pass through a stateless placeholder first.
        transport.set_protocol(_DETACHED)
        transport.set_protocol(ws)
        self.server_state.connections.discard(self)
        if self._metrics is not None:  # from here it counts as a WebSocket connection
            self._metrics.connection_closed("http")
        if self.reading_paused:  # the WebSocket protocol starts with reading on
            self.reading_paused = False
            transport.resume_reading()
        ws.upgrade(transport, scope, leftover)
        if self._shutting_down:  # a handshake that arrived during the shutdown grace: refused (503)
            ws.shutdown()

    # -- errors, timeouts, shutdown ----------------------------------------------------------

    def _reject(self, status: int, reason: str) -> None:
        """The client sent something we cannot serve: answer `status` once the responses before
        it are out, then close."""
        if logger.isEnabledFor(logging.INFO):
            client = client_text(self._client)
            logger.info("%s: %d %s", client, status, reason, extra={"client": client, "status": status})
        self._stopped = True
        self._unparsed = None
        self._head_in_progress = False
        self._cancel_timers()
        cycle, self._parsing = self._parsing, None
        if cycle is not None:
            # Broken in the middle of its body (a chunk size that overflows, ...). Answered with
            # `status` if nothing of its response is on the wire yet; else closing is the only
            # honest signal left.
            if cycle.queued_bytes:  # pipelined, not started: it is the last one; answered in turn
                self._pipeline.pop()
                self._pipeline_bytes -= cycle.queued_bytes
                cycle.queued_bytes = 0
            elif cycle is self._active and cycle.phase in (WAITING_START, HEAD_PENDING):
                self._active = None
                cycle.disconnected = True  # the app's receive() gets http.disconnect, send() raises
                cycle.wake()
            else:
                self.close_transport()
                return
        if self._active is None and not self._pipeline:
            self.write_error_response(status, reason)
        else:
            self._deferred_error = (status, reason)
            self._update_reading()

    def write_error_response(self, status: int, reason: str) -> None:
        """A small text/plain response the server writes itself, then close (lingering)."""
        body = reason.encode("utf-8")
        self.transport.write(
            b"".join((
                STATUS_LINES[status], *self.config.response_fields.head_lines(),
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
        self._active = self._parsing = self._deferred_upgrade = self._unparsed = None
        self._drop_pipeline()
        transport = self.transport
        if transport.is_closing() or not transport.can_write_eof():
            self.close_transport()
            return
        self._cancel_timers()
        transport.write_eof()
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_TIMEOUT, self.close_transport)

    def close_transport(self) -> None:
        self._cancel_timers()
        self._unparsed = None
        transport = self.transport
        if not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size():
                # close() waits for the buffer to drain: a peer that reads none of it must not
                # hold the connection (and an app awaiting send) forever.
                self._watch_write_stall()

    def record_response(self, cycle: RequestCycle, status: int) -> None:
        """A response is over (complete, or cut short after its head): its access record and its
        metrics. Callers check `observed` first; nothing here runs with both off."""
        duration = time.perf_counter() - cycle.started
        scope = cycle.scope
        if self._metrics is not None:
            self._metrics.http_request(scope["method"], status, duration)
        if self.access_log:
            sent = cycle.body_bytes_sent
            query = redact_query(scope["query_string"], self.config.redact_params)
            record = fields(scope, query, status, duration, sent)
            complete = cycle.phase is COMPLETE
            record["complete"] = complete
            access_logger.info(
                '%s - "%s %s%s HTTP/%s" %d %d B %.1fms%s', record["client"], record["method"], record["path"],
                "?" + query if query else "", record["http_version"], status, sent, duration * 1000.0,
                "" if complete else " (incomplete)", extra=record,
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
                     client_text(self._client), self.config.timeout_header)  # fmt: skip
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
        self._drop_pipeline()
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


_VERSION_PREFIX = b"HTTP/1."

# The methods _request_line_method knows, and each as it starts a request line (the SP after it).
_LINE_METHOD_NAMES = ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH")
_LINE_METHODS = tuple(name.encode("ascii") + b" " for name in _LINE_METHOD_NAMES)


def _holds_at(data: bytes, start: int, part: bytes) -> bool:
    """Whether `data` holds `part` at `start` (which is in range). Compiled, a byte compare in
    C: no slice, no method call."""
    if len(data) < start + len(part):
        return False
    for i in range(len(part)):
        if data[start + i] != part[i]:
            return False
    return True


def _request_line_method(data: bytes) -> Optional[str]:
    """The method that begins `data` and the SP after it, if it is one of _LINE_METHOD_NAMES;
    else None (another method, or an empty line first), and httptools is asked. For a request
    that begins `data` (see _request_line_version)."""
    for index in range(len(_LINE_METHODS)):
        if _holds_at(data, 0, _LINE_METHODS[index]):
            return _LINE_METHOD_NAMES[index]
    return None


def _request_line_version(data: bytes, start: int) -> Optional[str]:
    """"1.1" or "1.0" when `data` holds that HTTP version at `start`, between a SP and a CR;
    else None, and httptools is asked.

    Used for a request that begins `data` (the parser was between messages when it was fed), at
    the offset its method and target put the version on a request line that starts `data`.
    llhttp has parsed and checked that line (RFC 9112 §3: request-line = method SP
    request-target SP HTTP-version), and a CR only ends it; so the SP before and the CR after
    are there only when the line does start `data`. Anything else (an empty line before the
    request, a line cut by the read, another version) is None. Compiled, every byte is read in
    C."""
    if len(data) <= start + 8 or data[start - 1] != 32 or data[start + 8] != 13:  # SP ... CR
        return None
    if not _holds_at(data, start, _VERSION_PREFIX):
        return None
    minor = data[start + 7]
    if minor == 49:  # "1"
        return "1.1"
    if minor == 48:  # "0"
        return "1.0"
    return None


def _has_token(value: bytes, token: bytes) -> bool:
    """Whether a comma-separated header value lists `token` (case-insensitive)."""
    return any(part.strip().lower() == token for part in value.split(b","))


def _check_transfer_encoding(value: bytes) -> None:
    """RFC 9112 §6.1, §6.3: a request's Transfer-Encoding must end with chunked (else its length
    cannot be known: 400), apply chunked once (400), and name no coding the server does not
    implement, which is any other (501). llhttp rejects some of these itself, but only after
    headers complete, and lets `gzip, chunked` through as if it were plain chunked."""
    codings = [part.split(b";", 1)[0].strip().lower() for part in value.split(b",")]
    codings = [coding for coding in codings if coding]  # empty list elements are allowed (RFC 9110 §5.6.1)
    if not codings or codings[-1] != b"chunked":
        raise _Reject(400, "Transfer-Encoding does not end with chunked")
    if len(codings) > 1:
        if b"chunked" in codings[:-1]:
            raise _Reject(400, "Transfer-Encoding applies chunked more than once")
        raise _Reject(501, "Transfer coding %s not implemented" % codings[0].decode("latin-1"))


def _body_framing(headers: List[Tuple[bytes, bytes]]) -> Optional[bytes]:
    """The framing header of a request that has a body, for re-parsing it; None without a body."""
    framing = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return b"transfer-encoding: " + value
        if name == b"content-length" and value.strip() not in (b"0", b""):
            framing = b"content-length: " + value.strip()
    return framing
