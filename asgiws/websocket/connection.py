"""The WebSocket connection state machine (RFC 6455 §5-§7), sans-I/O.

    OPEN ──close received──▶ CLOSED        (we echo the Close; the server then closes TCP)
    OPEN ──close sent──────▶ CLOSING ──close received──▶ CLOSED
    any  ──TCP lost─────────────────────────────────────▶ CLOSED (1006)

`receive(nbytes)` parses what the transport wrote into `parser.get_buffer()` and returns the
application-level events: a complete message is returned as the bare `str` or `bytes` (no wrapper
object on the hot path), a received Close as `CloseReceived`. Bytes to write (a Pong for a Ping,
a Close echo, a Close after a protocol violation) are appended to `outgoing`; the caller writes
them. Every failure goes through `fail(code, reason)`.

Copies per received message: see FrameParser, which also assembles a fragmented uncompressed
message into one buffer (no object per fragment). A compressed message is inflated once per frame
and its fragments' output appended to one bytearray, then copied (binary) or decoded (text) once.

A compressed frame can inflate to `max_size` bytes from a few KiB (a deflate bomb): one call
inflates at most `inflate_step` bytes. When it stops there, `more` is set and the caller calls
`resume()` (on a later loop turn) for the rest of that frame and the frames received behind it.

What a peer can make a Connection hold: one message, at most `max_size` bytes counted as payload
plus `frame_overhead` for every fragment after the first (checked from each frame's header,
before its payload is buffered); a Pong per Ping in `outgoing` until the caller writes them.
"""

from __future__ import annotations

import enum
import os
import zlib
from typing import Any, List, Optional, Sequence, Tuple, Union

from .. import codec as _codec
from ..codec import FrameParser, build_close_payload, build_frame, parse_close_payload
from .deflate import PerMessageDeflate

OP_CONTINUATION = _codec.OP_CONTINUATION
OP_TEXT = _codec.OP_TEXT
OP_BINARY = _codec.OP_BINARY
OP_CLOSE = _codec.OP_CLOSE
OP_PING = _codec.OP_PING
OP_PONG = _codec.OP_PONG

# An empty `outgoing` / `_pending`: shared and immutable, so an idle connection holds no list
# of its own (one object less per connection for the garbage collector to walk).
_NOTHING: Tuple[()] = ()

# What one receive()/resume() call inflates at most: about a millisecond of zlib (a deflate bomb
# reaches max_size in steps, a loop turn each when driven by the ASGI bridge).
INFLATE_STEP = 1 << 20


class CloseCode(enum.IntEnum):
    """RFC 6455 §7.4.1 and the IANA registry."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_FRAME_PAYLOAD_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012


class State(enum.Enum):
    OPEN = "OPEN"
    CLOSING = "CLOSING"  # we sent a Close and wait for the peer's
    CLOSED = "CLOSED"


class CloseReceived:
    """The peer's Close frame (or, with `code` 1006, the loss of the TCP connection)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str):
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"CloseReceived({self.code}, {self.reason!r})"


class Pong:
    """A Pong frame from the peer (keepalive answers)."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes):
        self.payload = payload


Event = Union[str, bytes, CloseReceived, Pong]


class Connection:
    # Slots, not a __dict__: one of these lives per WebSocket connection, idle ones included
    # (slots: 8 bytes an attribute in the object; a __dict__'s values array: ~190 bytes more).
    __slots__ = (
        "state", "max_size", "frame_overhead", "deflate", "is_server", "parser", "outgoing",
        "close_sent", "close_received", "failure", "_inflated", "_inflated_opcode",
        "_inflated_size", "_inflated_utf8", "inflate_step", "_inflate_left", "_inflating",
        "_inflating_fin", "_pending", "more",
    )

    def __init__(self, *, max_size: int, deflate: Optional[PerMessageDeflate] = None,
                 is_server: bool = True, frame_overhead: int = 0,
                 inflate_step: Optional[int] = INFLATE_STEP):
        self.state = State.OPEN
        self.max_size = max_size
        self.frame_overhead = frame_overhead
        self.deflate = deflate
        self.is_server = is_server
        self.parser = FrameParser(is_server=is_server, max_size=max_size,
                                  rsv1_allowed=deflate is not None, bare_messages=True,
                                  frame_overhead=frame_overhead)
        # Frames owed to the peer (a list once there is one; an idle connection holds no list).
        self.outgoing: Sequence[bytes] = _NOTHING
        # The close code and reason we sent, once we sent one.
        self.close_sent: Optional[CloseReceived] = None
        self.close_received: Optional[CloseReceived] = None
        # A protocol violation found in what we received: the Close we owe the peer. The caller
        # sends it (send_close) once the app has consumed the messages that came before it.
        self.failure: Optional[CloseReceived] = None
        # The compressed message being inflated (RFC 7692 §6.2): its output so far (made when a
        # second fragment arrives), what it counts toward max_size, its text validator.
        self._inflated: Optional[bytearray] = None
        self._inflated_opcode = 0
        self._inflated_size = 0
        self._inflated_utf8: Optional[_codec.Utf8Validator] = None
        # Inflating in steps: the bytes one call may still inflate (None: no bound), whether a
        # frame's payload is part-inflated (its rest is in the decompressor) and whether that
        # frame is final, and the frames received behind it, not handled yet.
        self.inflate_step = inflate_step
        self._inflate_left: Optional[int] = None
        self._inflating = False
        self._inflating_fin = False
        self._pending: Sequence[Any] = _NOTHING
        self.more = False

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, nbytes: int) -> List[Event]:
        """`nbytes` were written into `parser.get_buffer()`: the events they complete."""
        return self._handle(self.parser.feed(nbytes))

    def receive_data(self, data: bytes) -> List[Event]:
        """Bytes that arrived outside the parser's buffer (after the HTTP head, in tests)."""
        return self._handle(self.parser.feed_data(data))

    def resume(self) -> List[Event]:
        """Go on where the last call stopped (`more`): the rest of a part-inflated frame, then the
        frames received behind it."""
        self.more = False
        frames, self._pending = self._pending, _NOTHING
        self._inflate_left = self.inflate_step
        events: List[Event] = []
        if self._inflating:
            message = self._inflate()
            if message is not None and self.state is State.OPEN:
                events.append(message)
            if self.failure is not None:
                return events
            if self._inflating:  # still not done: the frames behind it wait on
                self._pending = frames
                self.more = True
                return events
        return self._handle_frames(frames, events)

    def _handle(self, frames: List[Any]) -> List[Event]:  # Frame objects, or bare messages (str, bytes)
        parser = self.parser
        if parser.all_bare and parser.error is None and self.state is State.OPEN \
                and not self.more:
            # The hot path: the parser returned whole, uncompressed messages only (text already
            # decoded); they are the events as they are.
            return frames
        if self.more:  # behind frames still waiting (a caller that did not resume() first)
            self._pending = [*self._pending, *frames]
            return []
        self._inflate_left = self.inflate_step
        return self._handle_frames(frames, [])

    def _handle_frames(self, frames: Sequence[Any], events: List[Event]) -> List[Event]:
        if self.state is State.CLOSED or self.failure is not None:
            return events
        for index, frame in enumerate(frames):
            kind = type(frame)
            if kind is str or kind is bytes:  # a whole message
                if self.state is State.OPEN:
                    events.append(frame)
                continue
            opcode = frame.opcode
            if opcode <= OP_BINARY:
                message = self._data_frame(frame)
                if message is not None and self.state is State.OPEN:
                    events.append(message)
                if self.failure is not None:
                    return events
                if self._inflating:  # this call's inflation is spent: the rest waits
                    self._pending = list(frames[index + 1:])
                    self.more = True
                    return events
            elif opcode == OP_PING:
                if self.state is State.OPEN:
                    self._owe(build_frame(OP_PONG, frame.payload))
            elif opcode == OP_PONG:
                events.append(Pong(frame.payload))
            else:  # OP_CLOSE; the parser already validated its payload
                code, reason = parse_close_payload(frame.payload)
                events.append(self._close_frame(code, reason))
                return events
        error = self.parser.error
        if error is not None:
            self.fail(error.code, error.reason)
        return events

    def _data_frame(self, frame: Any) -> Optional[Union[str, bytes]]:
        """A frame of a compressed message (the parser assembles uncompressed ones): start
        inflating it; return the message a final frame completes."""
        if frame.opcode != OP_CONTINUATION:
            self._inflated = None
            self._inflated_opcode = frame.opcode
            self._inflated_size = 0
            self._inflated_utf8 = None
        else:
            self._inflated_size += self.frame_overhead
        assert self.deflate is not None, "RSV1 is accepted only with permessage-deflate negotiated"
        self.deflate.feed(frame.payload, frame.fin)
        self._inflating = True
        self._inflating_fin = frame.fin
        return self._inflate()

    def _inflate(self) -> Optional[Union[str, bytes]]:
        """Inflate the current frame, at most `_inflate_left` bytes in this call (the frame stays
        `_inflating` if they run out); return the message its end completes, if it is final."""
        deflate = self.deflate
        assert deflate is not None, "inflating only with permessage-deflate negotiated"
        text = self._inflated_opcode == OP_TEXT
        while True:
            room = self.max_size - self._inflated_size
            want = room + 1  # one byte more than fits proves the message too big
            if self._inflate_left is not None:
                if self._inflate_left <= 0:
                    return None
                want = min(want, self._inflate_left)
            try:
                out, done = deflate.inflate(want)
            except zlib.error:
                self.fail(CloseCode.INVALID_FRAME_PAYLOAD_DATA, "invalid compressed data")
                return None
            if len(out) > room:
                self.fail(CloseCode.MESSAGE_TOO_BIG, "message over the maximum size")
                return None
            self._inflated_size += len(out)
            if self._inflate_left is not None:
                self._inflate_left -= len(out)
            if done and self._inflating_fin and self._inflated is None:
                # A message inflated in one call: its output is the message, no copy.
                self._inflating = False
                return self._message(out, text)
            if self._inflated is None:
                self._inflated = bytearray()
            self._inflated += out  # copy: behind the message so far
            if text:
                # Inflated in pieces: validate as it inflates, to fail fast.
                if self._inflated_utf8 is None:
                    self._inflated_utf8 = _codec.Utf8Validator()
                if not self._inflated_utf8.feed(out):
                    self.fail(CloseCode.INVALID_FRAME_PAYLOAD_DATA,
                              "invalid UTF-8 in a text message")
                    return None
            if done:
                break
        self._inflating = False
        if not self._inflating_fin:
            return None
        message, self._inflated = self._inflated, None
        if text:
            if self._inflated_utf8 is not None and not self._inflated_utf8.final():
                self.fail(CloseCode.INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8 in a text message")
                return None
            return message.decode("utf-8")  # copy: decode once (validated above)
        return bytes(message)  # copy: the app gets bytes

    def _message(self, payload: bytes, text: bool) -> Optional[Union[str, bytes]]:
        if not text:
            return payload
        try:
            return payload.decode("utf-8")  # copy: decode once
        except UnicodeDecodeError:
            self.fail(CloseCode.INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8 in a text message")
            return None

    def _close_frame(self, code: int, reason: str) -> CloseReceived:
        received = CloseReceived(code, reason)
        self.close_received = received
        if self.state is State.OPEN:
            # Echo the peer's code (RFC 6455 §5.5.1); an empty Close is answered empty.
            echo = b"" if code == CloseCode.NO_STATUS_RCVD else build_close_payload(code)
            self._owe(build_frame(OP_CLOSE, echo))
            self.close_sent = CloseReceived(code, "")
        self._enter(State.CLOSED)
        return received

    # -- sending -----------------------------------------------------------------------------

    def send_message(self, data: Union[str, bytes]) -> bytes:
        """The frame for one message. (Raises if the connection is not OPEN.)"""
        if self.state is not State.OPEN:
            raise ConnectionClosedError(self.state)
        opcode = OP_TEXT if type(data) is str else OP_BINARY
        if self.deflate is not None:
            raw = data.encode("utf-8") if isinstance(data, str) else data
            if len(raw) >= self.deflate.settings.compress_min_size:
                return build_frame(opcode, self.deflate.compress(raw), rsv1=True)
            return build_frame(opcode, raw)  # too small to be worth it (RFC 7692 §6 allows it)
        return build_frame(opcode, data)

    def send_ping(self, payload: bytes = b"") -> bytes:
        if self.state is not State.OPEN:
            raise ConnectionClosedError(self.state)
        return build_frame(OP_PING, payload)

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bytes:
        """Start the closing handshake; the caller waits for the peer's Close (CLOSING)."""
        if self.state is not State.OPEN:
            raise ConnectionClosedError(self.state)
        self._enter(State.CLOSING)
        self.close_sent = CloseReceived(code, reason)
        return build_frame(OP_CLOSE, build_close_payload(code, reason))

    def fail(self, code: int, reason: str) -> None:
        """_Fail the WebSocket Connection_ (RFC 6455 §7.1.7): stop receiving (the parser and the
        message in progress are dropped) and record the Close owed (`failure`). The caller sends
        it with send_close() and then closes TCP: after a violation the stream cannot be parsed
        further."""
        if self.failure is not None or self.state is not State.OPEN:
            return
        self.failure = CloseReceived(code, reason)
        # Nothing more is received: the message in progress goes now (up to max_size inflated,
        # and the decompressor), not when TCP closes, which may be a close timeout later.
        self.parser.release()
        self._inflated = None
        self._inflated_utf8 = None
        self._inflating = False
        self._pending = _NOTHING
        self.more = False
        if self.deflate is not None:
            self.deflate.stop_inflating()

    def connection_lost(self) -> None:
        """TCP is gone: nothing more is sent or delivered."""
        self._enter(State.CLOSED)
        self._inflating = False
        self._pending = _NOTHING
        self.more = False
        self.outgoing = _NOTHING

    def _enter(self, state: State) -> None:
        """The one place the state changes after OPEN. The parser keeps whether it is OPEN, for
        the compiled bridge, which checks it per message (see FrameParser.conn_open)."""
        self.state = state
        self.parser.conn_open = state is State.OPEN

    def release(self) -> None:
        """Give back what only the wire needed, once TCP is gone: the receive buffers, the
        permessage-deflate windows (8 KiB at 12 bits) and kept compressor. The caller does it
        when TCP is lost, not when the app's task ends: an app that never calls receive() may
        hold this object for long."""
        self.parser.release()
        if self.deflate is not None:
            self.deflate.release()
        self.deflate = None
        self._inflated = None

    def data_to_send(self) -> List[bytes]:
        out, self.outgoing = self.outgoing, _NOTHING
        return out if type(out) is list else []

    def _owe(self, frame: bytes) -> None:
        if type(self.outgoing) is list:
            self.outgoing.append(frame)
        else:
            self.outgoing = [frame]


class ConnectionClosedError(Exception):
    def __init__(self, state: State):
        super().__init__(f"WebSocket is {state.value}")
        self.state = state


def random_ping_payload() -> bytes:
    return os.urandom(4)
