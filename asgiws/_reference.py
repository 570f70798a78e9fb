"""Pure-Python reference for the C/Cython codec (asgiws/_codec.pyx): masking, UTF-8 validation,
frame building and frame parsing, written to be read next to RFC 6455 §5 rather than to be fast.

The tests run the codec against this module on generated inputs (STYLE.md, habit 3). Nothing here
calls into the codec, and UTF-8 is checked by an explicit state machine, not by `bytes.decode`, so
that the two implementations can disagree and the tests can see it.

Timing of checks (the codec follows the same order, so both report the same violation on the same
bytes, however the stream is split):

1. as soon as the first two header bytes are in: RSV bits, opcode, control-frame rules (FIN set,
   7-bit length <= 125), message sequencing (continuation / new data frame), MASK bit, then the size
   limit when the 7-bit length is the length;
2. as soon as the extended length is in: the most significant bit of a 64-bit length, then the
   size limit (frame, then message);
3. as payload bytes of an uncompressed text frame (or of a continuation of an uncompressed text
   message) arrive: they must be a prefix of valid UTF-8, continuing the message so far -- invalid
   UTF-8 fails fast, before the rest of the frame arrives (§8.1, Autobahn 6.4.x);
4. when the whole frame is in: close payload (length, code, UTF-8 reason), then UTF-8 of an
   uncompressed text frame or fragment, which must also be complete at the end of the message.

Every check of stages 1 and 2 gives 1002 except the size limit (1009), so within one header a
protocol error wins over "too big".

Other decisions where the contract (_codec.pyi) leaves room, taken per RFC 6455:

- a length in a longer encoding than needed (e.g. 5 in 16 bits) is accepted: §5.2's "minimal
  number of bytes MUST be used" binds the sender, and peers (websockets among them) accept it;
- but a control frame's 7-bit length field must be <= 125, whatever a 16/64-bit length would say;
- `max_size` bounds every frame (control frames too) and every data message (the sum of its
  fragments' payloads as received, i.e. compressed bytes for a compressed message, plus
  `frame_overhead` for each fragment after the first, so that many tiny or empty fragments reach
  the limit as a large payload would); a frame or message of exactly `max_size` bytes is fine;
- after a Close frame nothing more is parsed (§5.5.1: no data follows a Close) and `error` stays
  None; after a Close or an error, bytes are dropped (not buffered): the connection is closing,
  and a peer that keeps sending must not grow the buffer. `buffered` is then 0.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import struct
from typing import Optional, Union

BytesLike = Union[bytes, bytearray, memoryview]


class Opcode(enum.IntEnum):
    """RFC 6455 §5.2."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})


class CloseCode(enum.IntEnum):
    """The close codes the codec sends (RFC 6455 §7.4.1)."""

    NORMAL_CLOSURE = 1000
    PROTOCOL_ERROR = 1002
    NO_STATUS_RCVD = 1005
    INVALID_FRAME_PAYLOAD_DATA = 1007
    MESSAGE_TOO_BIG = 1009


MAX_CONTROL_PAYLOAD = 125  # §5.5


class ProtocolError(Exception):
    """An RFC 6455 violation; `code` is the close code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"ProtocolError({self.code}, {self.reason!r})"


# --------------------------------------------------------------------------------------------
# Masking (§5.3)


def mask(data: BytesLike, key: bytes, offset: int = 0) -> bytes:
    """Octet i of the result is octet i of `data` XOR octet (i + offset) mod 4 of `key`."""
    if len(key) != 4:
        raise ValueError("a masking key is 4 bytes")
    data = bytes(data)
    rotated = key[offset % 4 :] + key[: offset % 4]  # rotated[i % 4] == key[(i + offset) % 4]
    keystream = (rotated * (len(data) // 4 + 1))[: len(data)]
    # One XOR of two big integers instead of a Python loop over octets: same result, C speed.
    xored = int.from_bytes(data, "big") ^ int.from_bytes(keystream, "big")
    return xored.to_bytes(len(data), "big")


_mask = mask  # for build_frame and build_header, whose `mask` argument is the key


# --------------------------------------------------------------------------------------------
# UTF-8 (RFC 3629 §4, the Unicode Standard table 3-7 "Well-Formed UTF-8 Byte Sequences")

# Lead byte ranges -> (number of continuation bytes, allowed range of the FIRST continuation byte).
# Every later continuation byte is 80..BF. Bytes not listed (80..C1, F5..FF) never start a sequence.
# The narrowed first ranges exclude overlong forms (E0, F0), surrogates (ED) and code points above
# U+10FFFF (F4).
_LEAD_BYTES = (
    # lead range   continuation bytes   first continuation range
    ((0xC2, 0xDF), 1, (0x80, 0xBF)),
    ((0xE0, 0xE0), 2, (0xA0, 0xBF)),
    ((0xE1, 0xEC), 2, (0x80, 0xBF)),
    ((0xED, 0xED), 2, (0x80, 0x9F)),
    ((0xEE, 0xEF), 2, (0x80, 0xBF)),
    ((0xF0, 0xF0), 3, (0x90, 0xBF)),
    ((0xF1, 0xF3), 3, (0x80, 0xBF)),
    ((0xF4, 0xF4), 3, (0x80, 0x8F)),
)
_ANY_CONTINUATION = (0x80, 0xBF)


class Utf8Validator:
    """Incremental UTF-8 validation: a state machine whose state is the number of continuation
    bytes still expected and the range the next one must fall in. Once invalid, it stays invalid
    until `reset()`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._invalid = False
        self._pending = 0  # continuation bytes still expected
        self._next_range = _ANY_CONTINUATION  # where the next continuation byte must fall

    def feed(self, data: BytesLike) -> bool:
        """False as soon as the bytes so far cannot be a prefix of valid UTF-8."""
        if self._invalid:
            return False
        for octet in bytes(data):
            if not self._step(octet):
                self._invalid = True
                return False
        return True

    def final(self) -> bool:
        """True if the bytes fed so far are complete, valid UTF-8."""
        return not self._invalid and self._pending == 0

    def _step(self, octet: int) -> bool:
        if self._pending:
            low, high = self._next_range
            if not low <= octet <= high:
                return False
            self._pending -= 1
            self._next_range = _ANY_CONTINUATION
            return True
        if octet <= 0x7F:
            return True
        for (lead_low, lead_high), pending, first_range in _LEAD_BYTES:
            if lead_low <= octet <= lead_high:
                self._pending = pending
                self._next_range = first_range
                return True
        return False


def utf8_valid(data: BytesLike) -> bool:
    """Exactly what `bytes(data).decode("utf-8")` (strict) accepts."""
    validator = Utf8Validator()
    return validator.feed(data) and validator.final()


# --------------------------------------------------------------------------------------------
# Close payloads (§5.5.1, §7.4)


def is_valid_close_code(code: int) -> bool:
    """May this code appear in a Close frame on the wire (§7.4.1, §7.4.2, IANA registry)?

    1004 is reserved, 1005/1006/1015 must never be sent, 1016-2999 are unassigned/reserved for
    future RFCs, 3000-3999 are registered by libraries, 4000-4999 are private."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


def build_close_payload(code: int = 1000, reason: str = "") -> bytes:
    """b"" for 1005 (no status); ValueError for a code that may not be sent or a reason that does
    not fit in a control frame."""
    if code == CloseCode.NO_STATUS_RCVD:
        if reason:
            raise ValueError("close code 1005 cannot carry a reason")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent on the wire")
    encoded = reason.encode("utf-8")
    if 2 + len(encoded) > MAX_CONTROL_PAYLOAD:
        raise ValueError("close reason over 123 bytes of UTF-8")
    return struct.pack("!H", code) + encoded


def parse_close_payload(payload: BytesLike) -> tuple[int, str]:
    payload = bytes(payload)
    if len(payload) == 0:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, "close payload of 1 byte")
    (code,) = struct.unpack("!H", payload[:2])
    if not is_valid_close_code(code):
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    reason = payload[2:]
    if not utf8_valid(reason):
        raise ProtocolError(CloseCode.INVALID_FRAME_PAYLOAD_DATA, "close reason is not UTF-8")
    return code, reason.decode("utf-8")


# --------------------------------------------------------------------------------------------
# Frame building (§5.2)


def build_header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: Optional[bytes] = None,
) -> bytes:
    """Header with the shortest length encoding; the masking key follows the length."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length <= 125:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask is not None:
        if len(mask) != 4:
            raise ValueError("a masking key is 4 bytes")
        header += bytes(mask)
    return header


def build_frame(
    opcode: int,
    payload: Union[BytesLike, str],
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: Optional[bytes] = None,
) -> bytes:
    data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    header = build_header(opcode, len(data), fin=fin, rsv1=rsv1, mask=mask)
    if mask is not None:
        data = _mask(data, mask)
    return header + data


# --------------------------------------------------------------------------------------------
# Frame parsing (§5.2 - §5.7, §8.1)


@dataclasses.dataclass(frozen=True)
class Frame:
    """`payload` is `str` for a complete (FIN, unfragmented) uncompressed text frame, `bytes`
    otherwise."""

    fin: bool
    rsv1: bool
    opcode: int
    payload: Union[bytes, str]


@dataclasses.dataclass
class _Message:
    """The data message whose first frame has arrived and whose FIN frame has not."""

    opcode: int  # TEXT or BINARY, from its first frame
    compressed: bool  # first frame had RSV1 (permessage-deflate): not validated here
    size: int  # its fragments' payload lengths so far, + frame_overhead per continuation
    utf8: Optional[Utf8Validator]  # for uncompressed text


class ReferenceParser:
    """Frames out of a byte stream, with the message-level rules of `asgiws._codec.FrameParser`.

    Re-reads the pending frame's header from the start of the buffer on every feed; message state
    changes only when a whole frame has been parsed, so re-reading is harmless."""

    def __init__(
        self,
        *,
        is_server: bool = True,
        max_size: int = 16 * 1024 * 1024,
        rsv1_allowed: bool = False,
        frame_overhead: int = 0,
    ) -> None:
        self.is_server = is_server
        self.max_size = max_size
        self.frame_overhead = frame_overhead
        self.rsv1_allowed = rsv1_allowed
        self.error: Optional[ProtocolError] = None
        self._buffer = bytearray()
        self._message: Optional[_Message] = None
        self._stopped = False  # after a protocol error or a Close frame
        self._partial: Optional[tuple[Utf8Validator, int]] = None  # see _check_partial_text
        self.bytes_parsed = 0  # wire bytes of every frame parsed

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed_data(self, data: BytesLike) -> list[Frame]:
        """Parse every whole frame received so far. Stops for good at a protocol error (sets
        `error`) and after a Close frame: nothing after a Close is data (§5.5.1). From then on
        bytes are dropped, so a peer that keeps sending costs no memory."""
        if self._stopped:
            return []
        self._buffer += data
        frames = []
        try:
            while not self._stopped and (frame := self._parse_frame()) is not None:
                frames.append(frame)
        except ProtocolError as exc:
            self.error = exc
            self._stopped = True
        if self._stopped:
            self._buffer.clear()
        return frames

    def _parse_frame(self) -> Optional[Frame]:
        """Parse and remove the first frame of the buffer; None if it is not all there yet."""
        buf = self._buffer
        if len(buf) < 2:
            return None

        # Stage 1: the first two bytes.
        fin = bool(buf[0] & 0x80)
        rsv1, rsv2, rsv3 = bool(buf[0] & 0x40), bool(buf[0] & 0x20), bool(buf[0] & 0x10)
        opcode = buf[0] & 0x0F
        masked = bool(buf[1] & 0x80)
        length = buf[1] & 0x7F

        if rsv2 or rsv3:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "RSV2 or RSV3 set")
        if rsv1 and not self.rsv1_allowed:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "RSV1 set without an extension")
        if rsv1 and opcode in CONTROL_OPCODES:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "RSV1 set on a control frame")
        if rsv1 and opcode == Opcode.CONTINUATION:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "RSV1 set on a continuation frame")
        if opcode not in DATA_OPCODES and opcode not in CONTROL_OPCODES:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if opcode in CONTROL_OPCODES:
            if not fin:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "control frame too long")
        if opcode == Opcode.CONTINUATION and self._message is None:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "continuation with no message open")
        if opcode in (Opcode.TEXT, Opcode.BINARY) and self._message is not None:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "new data frame inside a message")
        if self.is_server and not masked:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "unmasked frame from a client")
        if not self.is_server and masked:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "masked frame from a server")

        # Stage 2: the payload length (§5.2: 7 bits, or 126 + 16 bits, or 127 + 64 bits).
        position = 2
        if length == 126:
            if len(buf) < position + 2:
                return None
            (length,) = struct.unpack_from("!H", buf, position)
            position += 2
        elif length == 127:
            if len(buf) < position + 8:
                return None
            (length,) = struct.unpack_from("!Q", buf, position)
            position += 8
            if length >> 63:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "64-bit length with the MSB set")
        if length > self.max_size:
            raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "frame over max_size")
        if (opcode == Opcode.CONTINUATION
                and self._continued().size + self.frame_overhead + length > self.max_size):
            raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "message over max_size")

        # Stages 3 and 4: masking key, payload so far (text is checked as it arrives), whole frame.
        key = None
        if masked:
            if len(buf) < position + 4:
                return None
            key = bytes(buf[position : position + 4])
            position += 4
        payload = bytes(buf[position : position + length])
        if key is not None:
            payload = mask(payload, key)
        if len(payload) < length:
            self._check_partial_text(opcode, rsv1, payload)
            return None
        self._partial = None
        frame = self._frame(fin, rsv1, opcode, payload)
        del buf[: position + length]  # only once the frame is accepted
        self.bytes_parsed += position + length
        return frame

    def _continued(self) -> _Message:
        """The message a continuation frame continues (stage 1 refused one with none)."""
        assert self._message is not None
        return self._message

    def _check_partial_text(self, opcode: int, rsv1: bool, received: bytes) -> None:
        """Fail fast (§8.1): the received part of an uncompressed text frame must be a prefix of
        valid UTF-8, continuing the message so far, before the rest of the frame arrives.

        A copy of the message's validator goes through the frame's bytes as they arrive
        (`_partial`: that copy and how many bytes it has seen; cleared when the frame is whole)."""
        if self._partial is None:
            if opcode == Opcode.TEXT and not rsv1:
                validator = Utf8Validator()
            elif opcode == Opcode.CONTINUATION and (so_far := self._continued().utf8) is not None:
                validator = copy.copy(so_far)
            else:
                return
            self._partial = (validator, 0)
        validator, seen = self._partial
        if not validator.feed(received[seen:]):
            raise ProtocolError(CloseCode.INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8")
        self._partial = (validator, len(received))

    def _frame(self, fin: bool, rsv1: bool, opcode: int, payload: bytes) -> Frame:
        """Apply the payload rules and the message state to one whole frame."""
        if opcode == Opcode.CLOSE:
            parse_close_payload(payload)
            self._stopped = True
            return Frame(fin, rsv1, opcode, payload)
        if opcode in CONTROL_OPCODES:
            return Frame(fin, rsv1, opcode, payload)

        if opcode == Opcode.CONTINUATION:
            message = self._continued()
            message.size += self.frame_overhead + len(payload)
        else:
            compressed = rsv1
            text = opcode == Opcode.TEXT and not compressed
            message = _Message(opcode, compressed, len(payload), Utf8Validator() if text else None)
            if fin and text:  # a whole text message in one frame: the payload is a str
                if not utf8_valid(payload):
                    raise ProtocolError(CloseCode.INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8")
                return Frame(fin, rsv1, opcode, payload.decode("utf-8"))

        if message.utf8 is not None:
            if not message.utf8.feed(payload) or (fin and not message.utf8.final()):
                raise ProtocolError(CloseCode.INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8")
        self._message = None if fin else message
        return Frame(fin, rsv1, opcode, payload)
