# cython: annotation_typing=False, wraparound=True, boundscheck=True
"""One HTTP request and its response: the `receive` / `send` pair an ASGI `http` app call gets
(asgiref www spec 2.5), and how the response is framed on the wire (RFC 9112 §6).

The connection (`asgiws.http.protocol.HttpProtocol`) parses the request, makes a `RequestCycle`,
hands it the body as it arrives, and runs the app with it; the cycle writes the response to the
transport and tells the connection when it is complete. It sees the connection only through
`Connection`, below, so this module does not import the one that uses it.
"""

from __future__ import annotations

import asyncio
import enum
import http
import logging
import os
import re
import stat
from time import time as _wall_clock
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple

from asgiws.asgi import ClientDisconnected, UnexpectedMessage
from asgiws.asgi.bridge import FINISHED
from asgiws.headers import date_header
from asgiws.http.filesend import FileSender

logger = logging.getLogger("asgiws.error")

# Bodies smaller than this are joined with their head / chunk framing into one write.
JOIN_LIMIT = 65536


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

# Trailer fields dropped (RFC 9110 §6.5.1: framing and connection fields may not be trailers).
FORBIDDEN_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"connection", b"te", b"trailer", b"host"))

# Response fields the server acts on (lower-cased).
SERVER_HANDLED_FIELDS = frozenset((b"content-length", b"transfer-encoding", b"connection", b"server", b"date"))

# An app's response header (name, value) → (its head line, its lower-cased name if the server acts
# on it, else None, and for a content-length its value as an int, or None if it is not one).
# Apps send the same fields in every response; this saves validating, formatting and parsing
# them each time. Bounded: cleared when full; long values are not kept.
HEADER_CACHE_SIZE = 512
HEADER_CACHE_MAX_VALUE = 256
_header_lines: Dict[Tuple[bytes, bytes], Tuple[bytes, Optional[bytes], Optional[int]]] = {}


def _header_line(name: bytes, value: bytes) -> Tuple[bytes, Optional[bytes], Optional[int]]:
    """Validate a response header from the app and format its line (see _header_lines)."""
    if INVALID_HEADER_NAME.search(name) or INVALID_HEADER_VALUE.search(value):
        raise RuntimeError(f"Invalid HTTP response header {name!r}: {value!r}.")
    lowered = name.lower()
    length = None
    if lowered == b"content-length":
        try:
            length = int(value)
        except ValueError:
            pass  # _start says so
    entry = (b"%s: %s\r\n" % (name, value), lowered if lowered in SERVER_HANDLED_FIELDS else None, length)
    if len(value) <= HEADER_CACHE_MAX_VALUE and type(name) is bytes and type(value) is bytes:
        if len(_header_lines) >= HEADER_CACHE_SIZE:
            _header_lines.clear()
        _header_lines[name, value] = entry
    return entry


# The `date` line of the second it was made for (see _date_line_now).
_date_second = -1
_date_line = b""


def _date_line_now() -> bytes:
    """headers.date_header(), asked once a second. Compiled, this is one C call to the clock
    per response; date_header() is two Python frames (~2k instructions per response)."""
    global _date_second, _date_line
    now = _wall_clock()
    second = int(now)  # compiled: C numbers throughout (cycle.pxd)
    if second != _date_second:
        _date_line = date_header()
        _date_second = second
    return _date_line


class ResponsePhase(enum.Enum):
    WAITING_START = "waiting for http.response.start"
    HEAD_PENDING = "head pending"  # start received; the head is written with the first body, so
    #                                until then an app error can still become a 500
    STREAMING = "streaming"  # head written; more body to come
    TRAILERS = "waiting for http.response.trailers"  # body done; the app said it sends trailers
    COMPLETE = "complete"  # last body written; later messages are ignored (ASGI spec)


class Framing(enum.Enum):
    """How the response body is delimited (RFC 9112 §6)."""

    NONE = "none"  # HEAD, 1xx, 204, 304: no body on the wire
    LENGTH = "content-length"
    CHUNKED = "chunked"
    CLOSE = "close-delimited"  # HTTP/1.0 without Content-Length: the end of the body is the close


# Looking up an enum member (`ResponsePhase.COMPLETE`) runs Python code in CPython 3.11, about
# 0.1 µs each, and a request does a score of them: the per-request code uses these names instead.
WAITING_START, HEAD_PENDING, STREAMING, TRAILERS, COMPLETE = ResponsePhase
NO_BODY, LENGTH, CHUNKED, CLOSE_DELIMITED = Framing
_NO_LINES: List[bytes] = []


class Connection:
    """What a RequestCycle uses of its connection: the base class of HttpProtocol
    (asgiws.http.protocol), its one subclass, which sets these fields and implements these
    methods. A base class rather than a typing Protocol so that, compiled (cycle.pxd declares it
    a cdef class), the cycle reads the fields and calls the methods in C although the two are
    separate modules; the connection imports this module, never the other way round."""

    transport: asyncio.Transport
    observed: bool  # record_response() is called only when it is set (access log or metrics on)
    # What the server adds to every response (config.response_fields, in C fields here):
    add_date: bool  # a `date` line, unless the app sent one
    server_line: bytes  # b"server: ...\r\n" unless the app sent one; b"" for --no-server-header
    extra_lines: bytes  # the --header lines
    reading_paused: bool
    write_paused: bool
    timeout_write_stall: Optional[float]

    def body_consumed(self) -> None:
        """The app took the buffered body: reading may resume."""
        raise NotImplementedError

    def response_complete(self, cycle: RequestCycle) -> None:
        """The last body byte is written."""
        raise NotImplementedError

    async def drain(self) -> None:
        """Wait until the write buffer is under its high-water mark."""
        raise NotImplementedError

    def write_error_response(self, status: int, reason: str) -> None:
        """Answer with a small error response of the server's own, then close."""
        raise NotImplementedError

    def write_stalled(self, unsent: int) -> None:
        """The peer read nothing for timeout_write_stall: drop it."""
        raise NotImplementedError

    def close_transport(self) -> None:
        raise NotImplementedError

    def record_response(self, cycle: RequestCycle, status: int) -> None:
        """The access record and the metrics of a response that is over (complete or not)."""
        raise NotImplementedError


class RequestCycle:
    """One request and its response: the `receive` / `send` pair an app call gets.

    Compiled (cycle.pxd declares it a cdef class: its attributes are C fields, its internal
    methods C functions) when the extensions are built; this source is also the pure-Python
    fallback. The event `receive()` waits on is made only if it has to wait.
    """

    def __init__(self, conn: Connection, scope: Dict[str, Any], keep_alive: bool, expect_100_continue: bool):
        self.conn = conn
        self.transport = self.conn.transport  # compiled: read in C (self.conn is typed)
        self.scope = scope
        self.keep_alive = keep_alive  # False: close the connection after this response
        self.expect_100_continue = expect_100_continue  # client waits for "100 Continue" before the body
        # Request body, as httptools handed it over; joined only when the app takes it.
        self.body_chunks: List[bytes] = []
        self.disconnected = False
        self.request_complete = False
        # Kept by the connection (asgiws.http.protocol), which bounds them:
        self.body_buffered = 0  # body bytes waiting for receive(), each chunk + BODY_CHUNK_OVERHEAD
        self.queued_bytes = 0  # while pipelined (not started): what it counts against PIPELINE_HIGH_WATER
        self._final_body_delivered = False
        self._message_event: Optional[asyncio.Event] = None  # made by receive() when it has to wait

        # Access record and metrics, when the connection is `observed`: when the request's head
        # was parsed (time.perf_counter()), and the body bytes sent in a chunked or
        # close-delimited body (a Content-Length body's are counted by _remaining).
        self.started = 0.0
        self._body_sent = 0

        # Response
        self.phase = WAITING_START
        self.status = 0
        self._header_lines: List[bytes] = _NO_LINES  # replaced, never mutated
        self._content_length: Optional[int] = None
        self._has_server = self._has_date = self._sent_connection_close = False
        self._framing = NO_BODY
        self._remaining = 0  # LENGTH: body bytes still owed
        self._body_length = 0  # LENGTH: the whole body's
        self._trailers_wanted = False  # the app's start said "trailers": True
        self._send_trailers = False  # ...and they go on the wire (chunked, and the client sent TE: trailers)
        self._file_sender: Optional[FileSender] = None  # while an http.response.pathsend is being sent
        self.task: Any = None  # the app's task, once started

    def wake(self) -> None:
        """Something receive() may be waiting for happened: body arrived, request complete,
        response complete, or disconnect."""
        if self._message_event is not None:
            self._message_event.set()
        if self.disconnected and self._file_sender is not None:
            self._file_sender.abort()

    # -- the app call ------------------------------------------------------------------------

    async def run_asgi(self, app: Callable[..., Any], tasks: Set[Any]) -> None:
        """Run the app; its task (`self.task`) leaves the server's set of app tasks when the app is
        done, here rather than by a done callback, which would cost a callback and a loop turn
        per request."""
        try:
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
        finally:
            tasks.discard(self.task)

    def _answer_app_failure(self) -> None:
        if self.disconnected or self.phase is COMPLETE:
            return
        if self.phase in (WAITING_START, HEAD_PENDING):
            # Nothing on the wire yet: the client can still get a proper answer.
            self.phase = COMPLETE
            self.wake()
            body = "Internal Server Error"
            if self.conn.observed:
                self._body_sent = len(body)  # the server's own body, written just below
                self.conn.record_response(self, 500)
            self.conn.write_error_response(500, body)
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
                if self.conn.reading_paused:
                    self.conn.body_consumed()
                return {"type": "http.request", "body": body, "more_body": more_body}
            if self._message_event is None:
                self._message_event = asyncio.Event()
            self._message_event.clear()
            await self._message_event.wait()

    # -- send --------------------------------------------------------------------------------

    def send(self, message: Dict[str, Any]) -> Awaitable[None]:
        """The app's `send`: an awaitable callable (ASGI). Not an `async def`: what needs no
        wait is written here and the shared finished coroutine returned (asgiws.asgi.bridge's
        FINISHED: no coroutine made and freed per message); what waits (a full write buffer,
        a file being sent) returns the coroutine that waits."""
        # An exact dict (what apps send) is read with C dict lookups (cycle.pxd types _send's).
        return self._send(message if type(message) is dict else dict(message))

    def _send(self, message: Dict[str, Any]) -> Awaitable[None]:
        message_type = message["type"]
        phase = self.phase
        if self.disconnected or (phase is not COMPLETE and self.transport.is_closing()):
            raise ClientDisconnected("the HTTP connection is closed")
        if phase is WAITING_START and message_type == "http.response.start":
            self._start(message)
            return FINISHED
        elif message_type == "http.response.body" and phase in (HEAD_PENDING, STREAMING):
            self._write_body(message.get("body", b""), message.get("more_body", False))
        elif phase is COMPLETE:
            return FINISHED  # "any further messages on the channel will be ignored"
        elif message_type == "http.response.pathsend" and phase is HEAD_PENDING:
            return self._send_path(message["path"])
        elif message_type == "http.response.trailers" and phase is TRAILERS:
            self._write_trailers(message.get("headers", ()), message.get("more_trailers", False))
        elif message_type == "http.response.early_hint" and phase in (WAITING_START, HEAD_PENDING):
            self._write_early_hint(message.get("links", ()))
        else:
            raise UnexpectedMessage(phase, message_type)
        if self.conn.write_paused:
            return self.conn.drain()
        return FINISHED

    def _start(self, message: Dict[str, Any]) -> None:
        status = message["status"]
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise RuntimeError(f"Invalid HTTP status {status!r}.")
        lines = []
        for name, value in message.get("headers", ()):
            try:
                line, lowered, length = _header_lines[name, value]
            except (KeyError, TypeError):  # not seen lately, or not hashable (bytearray)
                line, lowered, length = _header_line(name, value)
            if lowered is None:
                pass  # the common case: a field the server passes on as it is
            elif lowered == b"content-length":
                if length is None:
                    raise RuntimeError(f"Invalid Content-Length {value!r}.")
                self._content_length = length
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
        if message.get("trailers", False):
            self._trailers_wanted = True
        self.phase = HEAD_PENDING

    def _head(self, first_body: bytes, more_body: bool) -> List[bytes]:
        """The status line and header lines, ending with the blank line, now that the first body
        chunk tells how to frame the body."""
        status = self.status
        lines = [STATUS_LINES[status]]
        conn = self.conn
        if conn.add_date and not self._has_date:
            lines.append(_date_line_now())
        if conn.server_line and not self._has_server:
            lines.append(conn.server_line)
        if conn.extra_lines:
            lines.append(conn.extra_lines)
        lines += self._header_lines
        if self.scope["method"] == "HEAD" or status < 200 or status in (204, 304):
            self._framing = NO_BODY
        elif self._content_length is not None:
            self._framing, self._remaining = LENGTH, self._content_length
            self._body_length = self._content_length
        elif self._trailers_wanted and self.scope["http_version"] == "1.1" and self._client_takes_trailers():
            # Only chunked framing can carry trailers: chunked even when the body is all here.
            self._framing, self._send_trailers = CHUNKED, True
            lines.append(b"transfer-encoding: chunked\r\n")
        elif not more_body:
            # The whole body is in hand: say how long it is rather than chunk it.
            self._framing, self._remaining = LENGTH, len(first_body)
            self._body_length = len(first_body)
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
                self._body_sent += len(body)
            if not more_body:
                # The last chunk; the blank line that ends the message follows the trailers.
                parts.append(b"0\r\n" if self._send_trailers else b"0\r\n\r\n")
        elif framing is CLOSE_DELIMITED:
            parts.append(body)
            self._body_sent += len(body)
        # NO_BODY: a body given for HEAD / 204 / 304 is dropped.

        if head_pending:
            self.phase = STREAMING
        if len(parts) == 1:
            self.transport.write(parts[0])
        elif len(body) < JOIN_LIMIT:
            self.transport.write(b"".join(parts))
        elif parts:
            self.transport.writelines(parts)
        if not more_body:
            if framing is LENGTH and self._remaining:
                raise RuntimeError("Response body shorter than its Content-Length.")
            self._body_complete()

    def _body_complete(self) -> None:
        """The last body byte is written: the response is complete, unless trailers follow."""
        if self._trailers_wanted:
            self.phase = TRAILERS
            return
        self.phase = COMPLETE
        if self._message_event is not None:
            self._message_event.set()
        self.conn.response_complete(self)

    @property
    def body_bytes_sent(self) -> int:
        """Response body bytes written so far (nginx's $body_bytes_sent): framing not counted."""
        if self._framing is LENGTH:
            return self._body_length - self._remaining
        return self._body_sent

    # -- extensions (asgiref docs/extensions.rst) ---------------------------------------------

    async def _send_path(self, path: str) -> None:
        """`http.response.pathsend`: the body is the file at `path`, framed by its length.

        Without a Content-Length from the app, the file's size at open() is sent as one (never
        chunked: the length is known). A Content-Length larger than the file is an app error
        (a 500, nothing is on the wire yet); a file that shrinks while it is sent ends the
        connection. HEAD, 204 and 304 get the head alone."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))  # OSError: the app's 500
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise RuntimeError(f"http.response.pathsend: {path} is not a regular file.")
            if self._content_length is None:
                self._content_length = info.st_size
                self._header_lines = self._header_lines + [b"content-length: %d\r\n" % info.st_size]
            elif self._content_length > info.st_size:
                raise RuntimeError(f"Content-Length {self._content_length} is more than the "
                                   f"{info.st_size} bytes of {path}.")  # fmt: skip
            head = self._head(b"", True)
            self.phase = STREAMING
            conn = self.conn
            self.transport.write(b"".join(head))
            if self._framing is LENGTH and self._remaining:
                sender = FileSender(conn, fd, 0, self._remaining, conn.write_stalled, conn.timeout_write_stall)
                self._file_sender = sender
                try:
                    await sender.run()
                finally:
                    self._file_sender = None
                self._remaining = 0
        finally:
            os.close(fd)
        self._body_complete()
        if self.conn.write_paused:
            await self.conn.drain()

    def _client_takes_trailers(self) -> bool:
        """The request said `TE: trailers` (RFC 9110 §10.1.4). Read only for a response whose app
        wants to send trailers, so no request pays for it."""
        for name, value in self.scope["headers"]:
            if name == b"te" and b"trailers" in [token.split(b";")[0].strip().lower() for token in value.split(b",")]:
                return True
        return False

    def _write_trailers(self, headers: Any, more_trailers: bool) -> None:
        """`http.response.trailers`: written as the chunked body's trailer section when the
        client accepts trailers, else dropped (the spec allows it; the body is complete)."""
        if self._send_trailers:
            lines = []
            for name, value in headers:
                line, lowered, _ = _header_line(name, value)  # validated like a header: no splitting
                if name.lower() not in FORBIDDEN_TRAILERS:
                    lines.append(line)
            if not more_trailers:
                lines.append(b"\r\n")
            if lines:
                self.transport.write(b"".join(lines))
        if not more_trailers:
            self._trailers_wanted = False
            self._body_complete()

    def _write_early_hint(self, links: Any) -> None:
        """`http.response.early_hint`: a 103 with these Link fields before the final response
        (RFC 8297). Written only where advertised (--early-hints, an HTTP/1.1 request); once the
        final head is out, or when not advertised, the hint is dropped, as the spec allows."""
        if "http.response.early_hint" not in self.scope.get("extensions", ()):
            return
        lines = [b"HTTP/1.1 103 Early Hints\r\n"]
        for link in links:
            lines.append(_header_line(b"link", link)[0])
        if len(lines) > 1:
            lines.append(b"\r\n")
            self.transport.write(b"".join(lines))


async def service_unavailable(scope: Dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """The app that answers when --limit-concurrency is reached."""
    body = b"Service Unavailable"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
