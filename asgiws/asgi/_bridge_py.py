"""The per-message half of the ASGI WebSocket bridge in pure Python: the runtime fallback for
`asgiws/asgi/_bridge.pyx`.

Used when the extensions are not built or `ASGIWS_NO_EXTENSIONS=1` asks for it
(`asgiws.asgi.bridge` chooses). The same class, line for line: read `_bridge.pyx`'s docstring
for the receive path, the send path and the reasons reading stops (`paused_for`); the
constants, the flow-control marks, the per-turn budget and the order of every step are the
same, so a peer meets the same bounds whichever runs. It works with either FrameParser (it
uses only the parser's public interface), so a compiled codec with an unbuilt bridge still
serves.

The one approximation: a queued `str` is charged its code points times the width CPython
stores them with, found from `sys.getsizeof` (the extension reads the width directly); on an
interpreter without `sys.getsizeof` it is charged 4 bytes per code point, the most it can hold.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, Union

from .. import codec
from . import ClientDisconnected, thrown_exception
from .app_state import AppState
from .per_loop import LoopBound

_CONNECTED = AppState.CONNECTED
_RECEIVE = "websocket.receive"
_SEND = "websocket.send"
_DISCONNECT = "websocket.disconnect"

_OP_TEXT = 0x1
_OP_BINARY = 0x2
# From this size a binary payload is written beside its header instead of copied behind it.
_LARGE_PAYLOAD = 64 * 1024
# Consumed slots at the head of the queue compacted away once there are this many (and they are
# at least half of it).
_QUEUE_COMPACT = 64
# What a queued message holds beyond its payload, for receive flow control (see _bridge.pyx).
_MESSAGE_OVERHEAD = 64
# The receive work one connection may do per loop turn (see _bridge.pyx).
_TURN_BUDGET = 4 * 1024 * 1024
_FRAME_COST = 64
_EVENT_COST = 4096
# Items (messages, frames) one codec feed returns at most; the rest wait in the buffer.
_MAX_ITEMS = 1024

_PAUSED_QUEUE = 1
_PAUSED_WRITE = 2
_PAUSED_TURN = 4
_PAUSED_HANDSHAKE = 8

_server_frame = codec.server_frame
_server_header = codec.server_header


def _str_width_finder() -> Callable[[str], int]:
    """A function giving the bytes per code point CPython stores a non-ASCII str with (1, 2
    or 4): its size less the header of a compact non-ASCII str, over its length + 1."""
    try:
        header = sys.getsizeof("\xe9") - 2
    except TypeError:  # no sys.getsizeof (PyPy): the most a code point can take
        return lambda text: 4
    getsizeof = sys.getsizeof

    def width(text: str) -> int:
        kind = (getsizeof(text) - header) // (len(text) + 1)
        return 4 if kind >= 4 else 2 if kind >= 2 else 1

    return width


_str_width = _str_width_finder()


def _queued_size(payload: Any) -> int:
    """Memory a queued message holds, for receive flow control: its bytes, or for a str its
    code points times their width, plus _MESSAGE_OVERHEAD. (The disconnect dict: 0.)"""
    kind = type(payload)
    if kind is bytes:
        return len(payload) + _MESSAGE_OVERHEAD
    if kind is str:
        if payload.isascii():
            return len(payload) + _MESSAGE_OVERHEAD
        return len(payload) * _str_width(payload) + _MESSAGE_OVERHEAD
    return 0


class Finished:
    """What `send()` returns once its message is written: a coroutine whose first step returns
    None (see `_bridge.pyx`). Awaiting it gives None without a suspension; one shared
    instance, no state."""

    __slots__ = ()

    def __await__(self) -> "Finished":
        return self

    def __iter__(self) -> "Finished":
        return self

    def __next__(self) -> None:
        raise StopIteration

    def send(self, value: Any) -> None:
        raise StopIteration

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> None:
        raise thrown_exception(typ, val, tb)

    def close(self) -> None:
        pass


FINISHED = Finished()


class WriteCoalescer(LoopBound):
    """One per event loop: the frames each connection sends during a loop iteration leave in
    one write (one syscall) at the start of the next."""

    __slots__ = ("dirty", "scheduled", "flush_callback")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)  # held weakly (per_loop says why)
        self.dirty: List[WebSocketBridge] = []
        self.scheduled = False
        self.flush_callback = self.flush

    def add(self, bridge: "WebSocketBridge") -> None:
        self.dirty.append(bridge)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush_callback)

    def flush(self) -> None:
        self.scheduled = False
        dirty = self.dirty
        self.dirty = []
        for bridge in dirty:
            bridge._flush_now()


_coalescers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteCoalescer]" = weakref.WeakKeyDictionary()


def coalescer_for_loop(loop: asyncio.AbstractEventLoop) -> WriteCoalescer:
    coalescer = _coalescers.get(loop)
    if coalescer is None:
        coalescer = _coalescers[loop] = WriteCoalescer(loop)
    return coalescer


class WebSocketBridge:
    # The fields of _bridge.pyx's C struct; those without an underscore are read or set by the
    # subclass (websocket.py), as the extension's `public` ones are.
    __slots__ = (
        "transport", "_conn", "_parser", "loop", "state",
        # Receive side: messages the app has not received, oldest at _queue[_queue_head]: bare
        # str/bytes payloads or the websocket.disconnect dict. Bound: read_high_water (bytes,
        # _MESSAGE_OVERHEAD per message) plus the message that crossed it.
        "_queue", "_queue_head", "queued_bytes", "read_high_water", "read_low_water",
        "paused_for", "reading_paused", "_turn_cost", "_turn_scheduled", "_conn_more",
        "_waiter", "_more_waiters",
        "connect_delivered", "disconnect_queued", "disconnect_delivered", "failure_pending",
        "pong_timer",
        # Send side: frames waiting for this loop iteration's flush (bound: write_high_water,
        # past which they are flushed at once), and transport backpressure.
        "_out", "out_bytes", "write_high_water", "_coalescer", "write_paused", "_drain_waiters",
        "messages_in", "messages_out", "bytes_out",
        # Set and read by the subclass (C numbers in the extension).
        "ping_slot", "started",
    )

    if TYPE_CHECKING:  # defined by the subclass, asgiws.asgi.websocket.WebSocketProtocol
        def _control(self, event: Any) -> None: ...
        def _fail_after_queue(self) -> None: ...
        def _send_failure(self) -> None: ...
        def _transition(self, message_type: str) -> None: ...

    def __init__(self, config: Any) -> None:
        self.loop = asyncio.get_event_loop()
        # Any, as in the .pyx (`object`): an asyncio transport, the sans-I/O Connection and
        # its FrameParser, each None until the handshake sets them.
        self.transport: Any = None
        self._conn: Any = None
        self._parser: Any = None
        self.state = AppState.CONNECTING
        self._queue: List[Any] = []  # str, bytes, or the websocket.disconnect dict
        self._queue_head = 0
        self.queued_bytes = 0
        self.read_high_water = config.ws_read_high_water
        self.read_low_water = self.read_high_water // 4
        self.paused_for = 0
        self.reading_paused = False
        self._turn_cost = 0
        self._turn_scheduled = False
        self._conn_more = False
        self._waiter: Optional[asyncio.Future[None]] = None
        self._more_waiters: Optional[List[asyncio.Future[None]]] = None
        self.connect_delivered = False
        self.disconnect_queued = False
        self.disconnect_delivered = False
        self.failure_pending = False
        self.pong_timer: Optional[asyncio.TimerHandle] = None
        self._out: List[Union[bytes, memoryview]] = []
        self.out_bytes = 0
        self.write_high_water = config.ws_high_water
        self._coalescer = coalescer_for_loop(self.loop)
        self.write_paused = False
        self._drain_waiters: Optional[List[asyncio.Future[None]]] = None
        self.messages_in = self.messages_out = self.bytes_out = 0
        self.ping_slot = 0
        self.started = 0.0

    @property
    def conn(self) -> Any:
        return self._conn

    @conn.setter
    def conn(self, conn: Any) -> None:
        self._conn = conn
        self._parser = conn.parser if conn is not None else None
        if self._parser is not None:
            self._parser.max_items = _MAX_ITEMS

    @property
    def queued_messages(self) -> int:
        """Events queued for the app and not received yet."""
        return len(self._queue) - self._queue_head

    # -- asyncio.BufferedProtocol: frames in -----------------------------------------------

    def get_buffer(self, sizehint: int) -> Any:  # the parser's memoryview
        return self._parser.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._feed(nbytes)

    def _feed(self, nbytes: int) -> None:
        """Parse what the last read added (nbytes; 0 to parse on in what is buffered), hand the
        result on, and charge the work to this turn."""
        frames_before = self._parser.frames_parsed
        self._parsed(self._parser.feed(nbytes), nbytes, frames_before)

    def receive_data(self, data: bytes) -> None:
        """Frames that arrived outside get_buffer() (pipelined behind the HTTP request)."""
        frames_before = self._parser.frames_parsed
        self._parsed(self._parser.feed_data(data), len(data), frames_before)

    def _parsed(self, frames: List[Any], nbytes: int, frames_before: int) -> None:
        """What one parse returned: queued as it is (the hot path) or handled by the connection;
        the work charged to this turn — the bytes, _FRAME_COST per frame parsed and _EVENT_COST
        per item handled in Python."""
        parser = self._parser
        cost = nbytes + (parser.frames_parsed - frames_before) * _FRAME_COST
        if parser.all_bare and parser.error is None and parser.conn_open:
            # The hot path: whole, uncompressed messages only (text already decoded).
            if frames:
                self._queue_messages(frames)
        else:
            cost += len(frames) * _EVENT_COST
            self._deliver(self._conn._handle(frames))
        if parser.held and parser.buffered > self.read_high_water:
            self._set_paused(_PAUSED_HANDSHAKE, True)
        self._charge(cost)

    def _release_held(self) -> None:
        """The 101 is written: parse what the client sent behind its handshake, in order."""
        self._parser.held = False
        self.paused_for &= ~_PAUSED_HANDSHAKE
        if self._parser.buffered:
            self._feed(0)
        self._update_reading()

    def _read_to_drop(self) -> None:
        """Closing, its Close sent (after a failure or the closing handshake): give back what
        only the wire needed (the connection parses nothing more, what is read is dropped as it
        comes) and read on, whatever paused reading, within the per-turn budget."""
        self._conn.release()
        self._conn_more = False
        self.paused_for &= _PAUSED_TURN
        self._update_reading()

    # -- reading: when it stops and resumes ------------------------------------------------

    def _charge(self, cost: int) -> None:
        """Count receive work against this turn's budget; past it, or with whole frames left
        in the buffer, stop reading until the next loop turn."""
        self._turn_cost += cost
        if ((self._turn_cost > _TURN_BUDGET or self._parser.more or self._conn_more)
                and not self._turn_scheduled):
            self._pause_turn()

    def _pause_turn(self) -> None:
        self._turn_scheduled = True
        self.paused_for |= _PAUSED_TURN
        self.loop.call_soon(self._next_turn)
        self._update_reading()

    def _next_turn(self) -> None:
        """The loop came back: go on inflating, or parse what was left buffered, or read again."""
        self._turn_scheduled = False
        self._turn_cost = 0
        self.paused_for &= ~_PAUSED_TURN
        if self.transport is None or self.transport.is_closing():
            return
        if self.paused_for == 0:
            if self._conn_more:
                self._deliver(self._conn.resume())
                self._charge(_EVENT_COST)  # may pause for the next turn again
            elif self._parser.more:
                self._feed(0)  # may pause for the next turn again
        self._update_reading()

    def _set_paused(self, reason: int, paused: bool) -> None:
        if paused:
            self.paused_for |= reason
        else:
            self.paused_for &= ~reason
        self._update_reading()

    def _update_reading(self) -> None:
        """The one place that pauses and resumes the transport's reading."""
        pause = self.paused_for != 0
        if (not pause and self._parser is not None and (self._parser.more or self._conn_more)
                and not self._turn_scheduled):
            # Whole frames wait in the buffer, or a frame is part-inflated: they are handled
            # next turn, before any new read.
            self._pause_turn()
            return
        if pause == self.reading_paused or self.transport is None or self.transport.is_closing():
            return
        self.reading_paused = pause
        if pause:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _queue_messages(self, messages: List[Union[str, bytes]]) -> None:
        queued = self.queued_bytes
        for payload in messages:
            queued += _queued_size(payload)
        self._queue.extend(messages)
        self.queued_bytes = queued
        self.messages_in += len(messages)
        self._after_queue()

    def _deliver(self, events: List[Any]) -> None:
        """Events from the connection's slow path: messages, Close, Pong, and what it owes the
        peer (Pongs, written inline)."""
        delivered = 0
        queued = self.queued_bytes
        conn = self._conn
        self._conn_more = conn.more
        for event in events:
            kind = type(event)
            if kind is str or kind is bytes:
                self._queue.append(event)
                queued += _queued_size(event)
                delivered += 1
            else:
                self._control(event)
        self.queued_bytes = queued
        self.messages_in += delivered
        if conn.outgoing:
            for frame in conn.data_to_send():
                self._write_frame(frame)
            if self.write_paused and not (self.paused_for & _PAUSED_WRITE):
                self._set_paused(_PAUSED_WRITE, True)
        if conn.failure is not None and not self.failure_pending:
            self._fail_after_queue()
        self._after_queue()

    def _after_queue(self) -> None:
        """Pause reading past the high-water mark; wake a waiting receive()."""
        if self.queued_bytes > self.read_high_water and not (self.paused_for & _PAUSED_QUEUE):
            # A Pong cannot be read while reading is paused: the peer is sending faster than
            # the app reads, which proves it alive. Keepalive resumes with reading.
            if self.pong_timer is not None:
                self.pong_timer.cancel()
                self.pong_timer = None
            self._set_paused(_PAUSED_QUEUE, True)
        self._wake()

    def _wake(self) -> None:
        """Wake every waiting receive() once something is queued; each one re-checks the queue,
        so with concurrent receive() calls the ones that find it empty wait again."""
        if len(self._queue) == self._queue_head:
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._more_waiters is not None:
            waiters = self._more_waiters
            self._more_waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _queue_disconnect(self, code: int, reason: str) -> None:
        """Queue the one websocket.disconnect, behind the messages already queued."""
        if self.disconnect_queued:
            return
        self.disconnect_queued = True
        self._queue.append({"type": _DISCONNECT, "code": code, "reason": reason})
        self._wake()

    # -- the app's receive -----------------------------------------------------------------

    async def receive(self) -> Dict[str, Any]:
        if not self.connect_delivered:
            self.connect_delivered = True
            return {"type": "websocket.connect"}
        if len(self._queue) == self._queue_head and self.failure_pending:
            self._send_failure()
        while len(self._queue) == self._queue_head:
            if self.disconnect_delivered:
                raise ClientDisconnected("websocket.disconnect was already delivered")
            # Each receive() waits on its own future: one cancelled (by a timeout, say) must
            # not cancel another's.
            waiter = self.loop.create_future()
            if self._waiter is None:
                self._waiter = waiter
            else:
                if self._more_waiters is None:
                    self._more_waiters = []
                self._more_waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return self._pop()

    def _pop(self) -> Dict[str, Any]:
        """The oldest queued message as its ASGI event; resumes reading below the low-water
        mark."""
        queue = self._queue
        head = self._queue_head
        item = queue[head]
        queue[head] = None
        head += 1
        if head == len(queue):
            del queue[:]
            head = 0
        elif head >= _QUEUE_COMPACT and 2 * head >= len(queue):
            del queue[:head]
            head = 0
        self._queue_head = head
        self.queued_bytes -= _queued_size(item)
        kind = type(item)
        if kind is bytes:
            event = {"type": _RECEIVE, "bytes": item}
        elif kind is str:
            event = {"type": _RECEIVE, "text": item}
        else:
            event = item
            self.disconnect_delivered = True
        if (self.paused_for & _PAUSED_QUEUE) and self.queued_bytes <= self.read_low_water:
            self._set_paused(_PAUSED_QUEUE, False)
        return event

    # -- the app's send --------------------------------------------------------------------

    def send(self, message: Dict[str, Any]) -> Awaitable[None]:
        event = message if type(message) is dict else dict(message)
        message_type = event["type"]
        if self.state is _CONNECTED and message_type == _SEND:
            self._send_message(event)
            if self.write_paused:
                return self._drain()
            return FINISHED
        self._transition(message_type)
        handler: Callable[[Dict[str, Any]], Awaitable[None]] = getattr(self, "_on_" + message_type.replace(".", "_"))
        return handler(message)

    def _send_message(self, message: Dict[str, Any]) -> None:
        """websocket.send: one frame, queued for this loop iteration's write."""
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
            if data is None:
                raise TypeError("websocket.send needs 'text' or 'bytes'")
            opcode = _OP_BINARY
        elif message.get("bytes") is not None:
            raise TypeError("websocket.send with both 'text' and 'bytes'")
        else:
            opcode = _OP_TEXT
        conn = self._conn
        if not self._parser.conn_open:  # the connection's state is not OPEN
            raise ClientDisconnected("WebSocket is closed")
        self.messages_out += 1
        if conn.deflate is not None:
            self._write_frame(conn.send_message(data))
        elif opcode == _OP_BINARY and len(data) >= _LARGE_PAYLOAD:
            # Header apart, payload as it is: writelines() sends both, no copy of the payload.
            self._write_frame(_server_header(_OP_BINARY, len(data)))
            self._write_frame(data)
        else:
            self._write_frame(_server_frame(opcode, data))  # copy: header and payload joined

    def _write(self, frame: Union[bytes, memoryview]) -> None:
        """Queue a frame (bytes) for this loop iteration's write."""
        self._write_frame(frame)

    def _write_frame(self, frame: Union[bytes, memoryview]) -> None:
        # Flush at once past the high-water mark, so the transport's backpressure
        # (pause_writing) sees it.
        if not self._out:
            self._coalescer.add(self)
        self._out.append(frame)
        self.out_bytes += len(frame)
        if self.out_bytes >= self.write_high_water:
            self._flush_now()

    def _flush(self) -> None:
        self._flush_now()

    def _flush_now(self) -> None:
        out = self._out
        if out:
            self.bytes_out += self.out_bytes
            self._out = []
            self.out_bytes = 0
            if not self.transport.is_closing():
                if len(out) == 1:
                    self.transport.write(out[0])
                else:
                    self.transport.writelines(out)

    def _drop_unsent(self) -> None:
        """The connection is gone: frames not written yet have nowhere to go."""
        self._out = []
        self.out_bytes = 0

    async def _drain(self) -> None:
        waiter = self.loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(waiter)
        await waiter

    def _fail_drain_waiters(self, exc: BaseException) -> None:
        self._release_drain_waiters(exc)

    def _release_drain_waiters(self, exc: Optional[BaseException]) -> None:
        """Wake every send() waiting for the transport to drain; with `exc`, raise it there."""
        waiters = self._drain_waiters
        self._drain_waiters = None
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    if exc is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(exc)

    # -- asyncio.BaseProtocol: transport backpressure --------------------------------------

    def pause_writing(self) -> None:
        """The peer is not reading what we send: `await send()` waits (_drain), PONGs stop
        reading (_deliver), and the subclass watches for a stall (_write_stall_started)."""
        self.write_paused = True
        self._write_stall_started()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._write_stall_ended()
        if self.paused_for & _PAUSED_WRITE:
            self._set_paused(_PAUSED_WRITE, False)
        self._release_drain_waiters(None)

    def _write_stall_started(self) -> None:
        pass  # overridden by WebSocketProtocol (the write-stall timer)

    def _write_stall_ended(self) -> None:
        pass
