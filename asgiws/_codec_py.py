"""The WebSocket frame codec in pure Python: the runtime fallback for `asgiws/_codec.pyx`.

Used when the C extension is not built (no compiler, no wheel for the platform) or when
`ASGIWS_NO_EXTENSIONS=1` asks for it; `asgiws.codec` chooses. Same interface (`_codec.pyi`) and
the same behaviour, frame for frame and close code for close code: the buffer a
`BufferedProtocol` reads into, parsing by offsets, fragmented uncompressed messages assembled
into one buffer, `frame_overhead`, `max_items`/`more`, `held`, `release()`. Several times slower
per message than the extension (docs/architecture.md gives the figure).

Differences that are not behaviour: a binary frame of 64 KiB or more goes through the receive
buffer like any other (the extension receives it straight into its payload object, saving one
copy), and `mask_impl()` is "python". The buffer is never resized in place (a bigger one
replaces it), since asyncio's selector loop keeps the view `get_buffer()` handed out alive
during `buffer_updated()`, and a bytearray with a live view cannot be resized.

Masking XORs the payload with the repeated key as two big integers (one C loop each way);
UTF-8 is validated by CPython's strict decoder, incrementally (`codecs.utf_8_decode` with
final=False, which refuses a prefix no valid sequence can start with, except a surrogate's
first two bytes, checked here) for fragmented text.
This is not the test oracle: `asgiws/_reference.py` is, and the tests compare both codecs
with it.
"""

from __future__ import annotations

import codecs
import struct
from typing import List, Optional, Tuple, Union

# What the builders and the mask take: anything with the buffer protocol, as the .pyx does.
_Buffer = Union[bytes, bytearray, memoryview]

# Opcodes (RFC 6455 §5.2).
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Close codes the codec reports (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_MESSAGE_TOO_BIG = 1009

_MAX_CONTROL_PAYLOAD = 125  # RFC 6455 §5.5
# Free space get_buffer() guarantees at least: a read of this size per recv() call.
_MIN_FREE = 8192
# The read buffer every parser with nothing buffered reads into (see _codec.pyx); replaced, never
# resized, when a parser needs a larger one, since a view of it may still be alive.
_shared_buf = bytearray(0)

_PARSE_FRAMES = 0
_PARSE_STOPPED = 1  # after a Close frame or a protocol error

_utf8_decode = codecs.utf_8_decode
_from_bytes = int.from_bytes

# UTF-8 validation state: the bytes of an incomplete sequence at the end of what was fed
# (b"" between characters), or None once invalid.
_UTF8_ACCEPT = b""


def _utf8_feed(state: Optional[bytes], data: _Buffer) -> Optional[bytes]:
    """The state after `data`: None as soon as the bytes so far cannot be a prefix of valid
    UTF-8. (Copies: the decoded str, dropped; and `data` once more when a sequence was cut.)"""
    if state is None:
        return None
    if state:
        data = state + bytes(data)
    try:
        _, consumed = _utf8_decode(data, "strict", False)
    except UnicodeDecodeError:
        return None
    if consumed == len(data):
        return _UTF8_ACCEPT
    tail = bytes(data[consumed:])
    if len(tail) > 1 and tail[0] == 0xED and tail[1] >= 0xA0:
        # A surrogate's first two bytes: the one prefix CPython leaves for the final decode
        # (for the surrogatepass handler) instead of refusing it at once.
        return None
    return tail


def _xor(data: _Buffer, key: bytes, offset: int = 0) -> bytes:
    """`data` XOR the 4-byte `key` from key position `offset % 4`, as a new bytes object: the
    payload and the repeated key as two little-endian integers, XORed (3 passes in C)."""
    n = len(data)
    if not n:
        return b""
    offset &= 3
    if offset:
        key = key[offset:] + key[:offset]
    keystream = (key * ((n >> 2) + 1))[:n]
    return (_from_bytes(data, "little") ^ _from_bytes(keystream, "little")).to_bytes(n, "little")


class ProtocolError(Exception):
    """An RFC 6455 violation; `code` is the close code to send, `reason` a short text."""

    def __init__(self, code: int, reason: str):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code} {self.reason}"


def is_valid_close_code(code: int) -> bool:
    """May this code appear in a Close frame on the wire (RFC 6455 §7.4.1/§7.4.2)?"""
    # 1004-1006 and 1015 are reserved and never sent; 3000-4999 belong to libraries and apps.
    return (1000 <= code <= 1003) or (1007 <= code <= 1014) or (3000 <= code <= 4999)


class Frame:
    """One parsed frame; see _codec.pyi for what `payload` is."""

    __slots__ = ("fin", "rsv1", "opcode", "payload")

    def __init__(self, fin: bool, rsv1: bool, opcode: int, payload: Union[bytes, str]):
        self.fin = fin
        self.rsv1 = rsv1
        self.opcode = opcode
        self.payload = payload

    def __repr__(self) -> str:
        return (f"Frame(fin={self.fin}, rsv1={self.rsv1}, opcode={self.opcode}, "
                f"payload={self.payload!r:.60})")


class FrameParser:
    """Incremental frame parser over a receive buffer it owns. See _codec.pyi."""

    __slots__ = (
        "_buf", "_capacity", "_start", "_end", "_initial_size", "_pending", "_state",
        "_is_server", "rsv1_allowed", "max_size",
        "_message_opcode", "_message_compressed", "_message_size", "_utf8_state",
        "_partial_done", "_partial_utf8", "error", "frame_overhead",
        # The uncompressed fragmented message being assembled (bare_messages mode). Bound:
        # max_size, as the 1009 check counts every byte appended here.
        "_msg",
        "max_items", "more", "held", "conn_open", "frames_parsed", "bare_messages", "all_bare",
        "bytes_parsed",
    )

    def __init__(self, *, is_server: bool = True, max_size: int = 16 * 1024 * 1024,
                 rsv1_allowed: bool = False, initial_size: int = 16 * 1024,
                 bare_messages: bool = False, frame_overhead: int = 0, max_items: int = 0):
        if initial_size < _MIN_FREE:
            initial_size = _MIN_FREE
        self._buf: Optional[bytearray] = None  # owned only while bytes wait in it
        self._capacity = initial_size
        self._initial_size = initial_size
        self._start = 0  # first unparsed byte
        self._end = 0  # one past the last received byte
        self._pending = 0  # size of the frame we are waiting on, 0 if unknown
        self._state = _PARSE_FRAMES
        self._is_server = bool(is_server)
        self.rsv1_allowed = bool(rsv1_allowed)
        self.max_size = max_size
        self._message_opcode = 0  # 0: no message open
        self._message_compressed = False
        self._message_size = 0
        self._utf8_state: Optional[bytes] = _UTF8_ACCEPT
        # The incomplete text frame at _start: payload bytes already unmasked in place and
        # validated, and the UTF-8 state after them (RFC 6455 §8.1 fail fast).
        self._partial_done = 0
        self._partial_utf8: Optional[bytes] = _UTF8_ACCEPT
        self.error: Optional[ProtocolError] = None
        self.bare_messages = bool(bare_messages)
        self.frame_overhead = frame_overhead
        self.max_items = max_items
        self.more = False
        self.held = False
        self.conn_open = True  # the owning Connection is OPEN (it keeps this; see _codec.pxd)
        self.frames_parsed = 0
        self._msg: Optional[bytearray] = None
        self.all_bare = True
        self.bytes_parsed = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed (a partial frame)."""
        return self._end - self._start

    @property
    def owns_buffer(self) -> bool:
        """Whether a receive buffer of its own is held (only while bytes wait in it)."""
        return self._buf is not None

    @property
    def assembled(self) -> int:
        """Payload bytes of the fragmented message being assembled (bare_messages mode)."""
        return len(self._msg) if self._msg is not None else 0

    @property
    def capacity(self) -> int:
        """Current size of the owned receive buffer."""
        return self._capacity

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable view of the free space at the end of the buffer, valid until the next
        get_buffer()/feed() call. Grows the buffer toward a large frame its header announced,
        at most doubling per read: memory follows the bytes a peer sends, not the length it
        claims."""
        want = _MIN_FREE
        if self._pending > 0:
            received = self._end - self._start
            missing = self._pending - received
            want = missing if missing < received else received
            if want < _MIN_FREE:
                want = _MIN_FREE
        elif self._buf is None:
            # Nothing buffered: read into the shared buffer; feed() keeps only what is left
            # (see _codec.pyx: an idle connection owns no buffer).
            global _shared_buf
            if len(_shared_buf) < self._capacity:
                _shared_buf = bytearray(self._capacity)  # new, not resized: views may live
            return memoryview(_shared_buf)[:self._capacity]
        self._reserve(want)
        assert self._buf is not None  # _reserve() made one
        return memoryview(self._buf)[self._end:]

    def release(self) -> None:
        """The connection is gone: give back the buffers now and parse nothing more."""
        self._fail_state()
        self.more = False
        self._buf = None
        self._start = self._end = 0
        self._capacity = self._initial_size

    def feed(self, nbytes: int) -> List[Union[Frame, str, bytes]]:
        """`nbytes` were written into the last buffer handed out: parse every complete frame."""
        if nbytes < 0 or nbytes > self._capacity - self._end:
            raise ValueError("nbytes out of range of the buffer handed out")
        # With no buffer of its own, the parser handed out the shared one (get_buffer): a read's
        # bytes are there.
        if self._buf is not None:
            return self._feed_buffered(nbytes, False)
        self._buf = _shared_buf
        try:
            return self._feed_buffered(nbytes, True)
        finally:
            self._keep_rest()

    def _feed_buffered(self, nbytes: int, lent: bool) -> List[Union[Frame, str, bytes]]:
        self._end += nbytes
        if self._state == _PARSE_STOPPED:
            # Nothing after a Close frame or a violation is parsed: keep none of it.
            self._start = self._end = 0
            return []
        if self.held:
            self.all_bare = True
            return []
        frames = self._parse()
        if not self.more and not lent:
            self._compact()
        return frames

    def _keep_rest(self) -> None:
        """After a feed from the shared buffer: copy what is left unparsed into a buffer of
        this parser's own (initial_size, or the rest's size if larger), or own none."""
        start, end = self._start, self._end
        self._buf = None
        self._start = self._end = 0
        if end > start:
            if self._capacity < end - start:
                self._capacity = end - start
            own = bytearray(self._capacity)
            own[:end - start] = memoryview(_shared_buf)[start:end]  # copy
            self._buf = own
            self._end = end - start

    def feed_data(self, data: _Buffer) -> List[Union[Frame, str, bytes]]:
        """Copy `data` into the buffer and parse (bytes that arrived outside get_buffer)."""
        view = memoryview(data)
        n = view.nbytes
        if not n:
            self.all_bare = True
            return []
        self._reserve(n)
        end = self._end
        assert self._buf is not None  # _reserve() made one
        self._buf[end:end + n] = view.cast("B") if view.format != "B" else view  # copy
        return self.feed(n)

    # -- the buffer -------------------------------------------------------------------------

    def _reserve(self, free: int) -> None:
        buf = self._buf
        if buf is None:
            if self._capacity < free:
                self._capacity = free
            self._buf = bytearray(self._capacity)
            return
        if self._capacity - self._end >= free:
            return
        if self._start > 0:
            self._compact()
            if self._buf is None:
                self._reserve(free)
                return
            if self._capacity - self._end >= free:
                return
        capacity = self._capacity * 2
        if capacity < self._end + free:
            capacity = self._end + free
        # A new buffer, not a resized one: a view of the old one may still be alive.
        grown = bytearray(capacity)
        grown[:self._end] = memoryview(buf)[:self._end]  # copy
        self._buf = grown
        self._capacity = capacity

    def _compact(self) -> None:
        # Once per read: move the partial frame left by this read to the front. An empty buffer
        # is given back (an idle connection holds none): a burst's growth does not outlive it.
        start, end = self._start, self._end
        if start == end:
            self._start = self._end = 0
            self._capacity = self._initial_size
            self._buf = None
        elif start > 0:
            buf = self._buf
            assert buf is not None  # bytes wait in it
            buf[:end - start] = buf[start:end]  # copy (twice: through a temporary)
            self._end = end - start
            self._start = 0

    def _fail(self, code: int, reason: str) -> None:
        self.error = ProtocolError(code, reason)
        self._fail_state()

    def _fail_state(self) -> None:
        """Stop for good: no frame or message in progress any more."""
        self._state = _PARSE_STOPPED
        self._pending = 0
        self._msg = None

    # -- the assembled message (bare_messages mode) -----------------------------------------

    def _message_start(self, opcode: int) -> None:
        self._message_opcode = opcode
        self._message_compressed = False
        self._message_size = 0
        self._utf8_state = _UTF8_ACCEPT
        self._msg = bytearray()

    def _message_complete(self, frames: List[Union[Frame, str, bytes]]) -> None:
        """The final fragment arrived: the message as one str or bytes (copy: decoded or copied
        once out of the message buffer, which is then given back)."""
        opcode = self._message_opcode
        msg = self._msg
        assert msg is not None  # _message_start() made it
        self._msg = None
        if opcode == OP_TEXT:
            payload: Union[str, bytes] = msg.decode("utf-8")  # validated fragment by fragment: cannot fail
        else:
            payload = bytes(msg)
        self._message_opcode = 0
        self._message_size = 0
        self._append(frames, True, False, opcode, payload)

    def _append(self, frames: List[Union[Frame, str, bytes]], fin: bool, rsv1: bool, opcode: int,
                payload: Union[str, bytes]) -> None:
        if self.bare_messages and fin and not rsv1 and (opcode == OP_TEXT or opcode == OP_BINARY):
            frames.append(payload)  # a whole message: no Frame object
            return
        self.all_bare = False
        frames.append(Frame(fin, rsv1, opcode, payload))

    def _check_partial_text(self, view: memoryview, payload_at: int, received: int, masked: bool,
                            first: bool) -> None:
        """Validate the part of an incomplete text frame received so far, so invalid UTF-8
        fails before the rest of the frame arrives. Bytes are unmasked in place once, from
        where the last read stopped (the mask key rotated to that offset)."""
        done = self._partial_done
        if received <= done:
            return
        if done == 0:
            self._partial_utf8 = _UTF8_ACCEPT if first else self._utf8_state
        lo, hi = payload_at + done, payload_at + received
        if masked:
            key = bytes(view[payload_at - 4:payload_at])
            view[lo:hi] = _xor(view[lo:hi], key, done)  # unmasked in place
        self._partial_utf8 = _utf8_feed(self._partial_utf8, view[lo:hi])
        self._partial_done = received
        if self._partial_utf8 is None:
            self._fail(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in a text message")

    def _parse(self) -> List[Union[Frame, str, bytes]]:
        """Parse every complete frame in buf[start:end], in the order and with the checks of
        _codec.pyx (see _reference.py for when each check happens).

        Copies per frame: masked binary/control/fragment payloads are unmasked while copied
        once, buffer -> bytes (-> message buffer, with a temporary, for a fragment); a text
        frame is unmasked in place, then decoded once, buffer -> str."""
        frames: List[Union[Frame, str, bytes]] = []
        self.all_bare = True
        self.more = False
        buf = self._buf
        if buf is None:
            return frames
        view = memoryview(buf)
        max_items = self.max_items
        try:
            while self._state == _PARSE_FRAMES:
                start = self._start
                avail = self._end - start
                if avail < 2:
                    break
                if max_items and len(frames) >= max_items:
                    self.more = True
                    break
                b0 = buf[start]
                b1 = buf[start + 1]
                fin = (b0 & 0x80) != 0
                rsv1 = (b0 & 0x40) != 0
                opcode = b0 & 0x0F
                masked = (b1 & 0x80) != 0
                length = b1 & 0x7F

                # Checks in header order, each as soon as its bits have arrived.
                if b0 & 0x30:
                    self._fail(CLOSE_PROTOCOL_ERROR, "RSV2/RSV3 set without a negotiated extension")
                    break
                if opcode >= 0x8:
                    if opcode > OP_PONG:
                        self._fail(CLOSE_PROTOCOL_ERROR, "reserved control opcode")
                        break
                    if not fin:
                        self._fail(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
                        break
                    if rsv1:
                        self._fail(CLOSE_PROTOCOL_ERROR, "RSV1 set on a control frame")
                        break
                    if length > _MAX_CONTROL_PAYLOAD:
                        self._fail(CLOSE_PROTOCOL_ERROR, "control frame payload over 125 bytes")
                        break
                else:
                    if opcode > OP_BINARY:
                        self._fail(CLOSE_PROTOCOL_ERROR, "reserved data opcode")
                        break
                    if rsv1 and not self.rsv1_allowed:
                        self._fail(CLOSE_PROTOCOL_ERROR, "RSV1 set without a negotiated extension")
                        break
                    if opcode == OP_CONTINUATION:
                        if self._message_opcode == 0:
                            self._fail(CLOSE_PROTOCOL_ERROR,
                                       "continuation frame with no message open")
                            break
                        if rsv1:
                            # permessage-deflate sets RSV1 on a message's first frame only.
                            self._fail(CLOSE_PROTOCOL_ERROR, "RSV1 set on a continuation frame")
                            break
                    elif self._message_opcode != 0:
                        self._fail(CLOSE_PROTOCOL_ERROR, "new data frame while a message is open")
                        break
                if masked != self._is_server:
                    self._fail(CLOSE_PROTOCOL_ERROR,
                               "unmasked client frame" if self._is_server else "masked server frame")
                    break

                header_len = 2
                if length == 126:
                    if avail < 4:
                        break
                    length = (buf[start + 2] << 8) | buf[start + 3]
                    header_len = 4
                elif length == 127:
                    if avail < 10:
                        break
                    length = _from_bytes(view[start + 2:start + 10], "big")
                    if length >> 63:
                        self._fail(CLOSE_PROTOCOL_ERROR,
                                   "64-bit payload length with the top bit set")
                        break
                    header_len = 10
                # 1009 from the header alone: nothing of this payload is buffered. A
                # continuation also pays frame_overhead, so empty fragments add up too.
                if length > self.max_size or (
                        opcode == OP_CONTINUATION
                        and self._message_size + self.frame_overhead + length > self.max_size):
                    self._fail(CLOSE_MESSAGE_TOO_BIG, "message over the maximum size")
                    break
                if masked:
                    header_len += 4
                at = start + header_len  # the payload
                compressed = rsv1 or (opcode == OP_CONTINUATION and self._message_compressed)
                text = not compressed and (opcode == OP_TEXT or (
                    opcode == OP_CONTINUATION and self._message_opcode == OP_TEXT))
                # A fragment of an uncompressed message, in bare_messages mode: into the message
                # buffer (compressed fragments go to the inflater as Frames).
                assemble = (self.bare_messages and opcode < 0x8 and not compressed
                            and not (fin and opcode != OP_CONTINUATION))
                if avail < header_len + length:
                    self._pending = header_len + length
                    if text and avail > header_len:
                        self._check_partial_text(view, at, avail - header_len, masked,
                                                 opcode == OP_TEXT)
                    break
                self._pending = 0
                done = self._partial_done
                self._partial_done = 0
                end = at + length
                key = bytes(view[at - 4:at]) if masked else b""  # used only when masked

                if text:
                    # Text is unmasked in place (what an earlier read validated already is).
                    if masked and done < length:
                        view[at + done:end] = _xor(view[at + done:end], key, done)
                    masked = False
                if assemble:
                    # Copy: the fragment's payload, unmasked, behind the message so far; text
                    # is validated first, from where an earlier read stopped (§8.1).
                    if opcode != OP_CONTINUATION:
                        self._message_start(opcode)
                    else:
                        self._message_size += self.frame_overhead
                    self._message_size += length
                    if text:
                        self._utf8_state = _utf8_feed(
                            self._partial_utf8 if done else self._utf8_state,
                            view[at + done:end])
                        if self._utf8_state is None or (fin and self._utf8_state):
                            self._fail(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in a text message")
                            break
                    msg = self._msg
                    assert msg is not None  # _message_start() made it
                    if masked:
                        msg += _xor(view[at:end], key)
                    else:
                        msg += view[at:end]
                    self._start = end
                    self.bytes_parsed += header_len + length
                    self.frames_parsed += 1
                    if fin:
                        self._message_complete(frames)
                    continue
                if opcode == OP_TEXT and fin and not compressed:
                    # A whole text message: decode once, which validates.
                    try:
                        payload: Union[str, bytes] = str(view[at:end], "utf-8")
                    except UnicodeDecodeError:
                        self._fail(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in a text message")
                        break
                elif masked:
                    payload = _xor(view[at:end], key)
                else:
                    payload = bytes(view[at:end])

                if opcode < 0x8:
                    if opcode != OP_CONTINUATION:
                        self._message_opcode = opcode
                        self._message_compressed = rsv1
                        self._message_size = 0
                        self._utf8_state = _UTF8_ACCEPT
                    else:
                        self._message_size += self.frame_overhead
                    self._message_size += length
                    if text and not (opcode == OP_TEXT and fin):
                        # A fragment of a text message: fail on the fragment with bad bytes.
                        if done:
                            self._utf8_state = _utf8_feed(self._partial_utf8,
                                                          memoryview(payload)[done:])  # type: ignore[arg-type]  # bytes here: str is a whole text frame
                        else:
                            self._utf8_state = _utf8_feed(self._utf8_state, payload)  # type: ignore[arg-type]  # bytes here: str is a whole text frame
                        if self._utf8_state is None or (fin and self._utf8_state):
                            self._fail(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in a text message")
                            break
                    if fin:
                        self._message_opcode = 0
                        self._message_size = 0
                elif opcode == OP_CLOSE:
                    close_code = _check_close_payload(payload)  # type: ignore[arg-type]  # bytes here: str is a whole text frame
                    if close_code:
                        self._fail(close_code, "invalid close code" if close_code == 1002
                                   else "invalid UTF-8 in the close reason")
                        break
                    # Nothing after a Close frame is data (RFC 6455 §5.5.1).
                    self._state = _PARSE_STOPPED

                self._start = end
                self.bytes_parsed += header_len + length
                self.frames_parsed += 1
                self._append(frames, fin, rsv1, opcode, payload)
        finally:
            view.release()
        return frames


def _check_close_payload(payload: bytes) -> int:
    """0 if a Close payload is valid, else the close code its violation calls for."""
    n = len(payload)
    if n == 0:
        return 0
    if n == 1 or not is_valid_close_code((payload[0] << 8) | payload[1]):
        return CLOSE_PROTOCOL_ERROR
    if not utf8_valid(memoryview(payload)[2:]):
        return CLOSE_INVALID_PAYLOAD
    return 0


def parse_close_payload(payload: bytes) -> Tuple[int, str]:
    """(code, reason) from a Close payload; (1005, "") for an empty one. Raises ProtocolError."""
    violation = _check_close_payload(payload)
    if violation == CLOSE_PROTOCOL_ERROR:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "invalid close code or payload")
    if violation == CLOSE_INVALID_PAYLOAD:
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in the close reason")
    if len(payload) == 0:
        return CLOSE_NO_STATUS, ""
    return (payload[0] << 8) | payload[1], payload[2:].decode("utf-8")


def build_close_payload(code: int = 1000, reason: str = "") -> bytes:
    """Close frame payload: 2-byte code + UTF-8 reason; b"" for 1005 (no status)."""
    if code == CLOSE_NO_STATUS:
        if reason:
            raise ValueError("close code 1005 cannot carry a reason")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent on the wire")
    encoded = reason.encode("utf-8")
    if len(encoded) > _MAX_CONTROL_PAYLOAD - 2:
        raise ValueError("close reason over 123 bytes of UTF-8")
    return bytes(((code >> 8) & 0xFF, code & 0xFF)) + encoded


def _mask_key(mask: Optional[_Buffer]) -> Optional[bytes]:
    return None if mask is None else _key_bytes(mask)


def _key_bytes(mask: _Buffer) -> bytes:
    key = bytes(memoryview(mask))
    if len(key) != 4:
        raise ValueError("a mask key is 4 bytes")
    return key


def _header(opcode: int, length: int, fin: bool, rsv1: bool, key: Optional[bytes]) -> bytes:
    if not 0 <= length < 1 << 64:
        raise OverflowError("frame length out of range")
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (opcode & 0x0F)
    mask_bit = 0x80 if key is not None else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    return header if key is None else header + key


def build_header(opcode: int, length: int, *, fin: bool = True, rsv1: bool = False,
                 mask: Optional[_Buffer] = None) -> bytes:
    """Only the header (2, 4 or 10 bytes, +4 with a mask), for writelines([header, payload])."""
    return _header(opcode, length, fin, rsv1, _mask_key(mask))


def build_frame(opcode: int, payload: Union[str, _Buffer], *, fin: bool = True, rsv1: bool = False,
                mask: Optional[_Buffer] = None) -> bytes:
    """Header and payload in one bytes object (copies: the payload once, masked for a client
    frame through a temporary; a str is encoded first)."""
    key = _mask_key(mask)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    length = len(payload) if isinstance(payload, bytes) else memoryview(payload).nbytes
    header = _header(opcode, length, fin, rsv1, key)
    if key is not None:
        return header + _xor(payload, key)
    return header + payload


def server_header(opcode: int, length: int) -> bytes:
    """build_header() of an unmasked final frame (the bridge's send path)."""
    return _header(opcode, length, True, False, None)


def server_frame(opcode: int, payload: Union[str, bytes]) -> bytes:
    """build_frame() of an unmasked final frame (the bridge's send path)."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return _header(opcode, len(data), True, False, None) + data


def mask(data: _Buffer, key: _Buffer, offset: int = 0) -> bytes:
    """XOR `data` with the 4-byte `key` from key position `offset % 4`, out of place."""
    return _xor(memoryview(data).cast("B"), _key_bytes(key), offset)


def mask_inplace(data: _Buffer, key: _Buffer, offset: int = 0) -> None:
    """XOR a writable buffer in place."""
    key_bytes = _key_bytes(key)
    view = memoryview(data)
    if view.readonly:
        raise BufferError("mask_inplace needs a writable buffer")
    view = view.cast("B")
    view[:] = _xor(view, key_bytes, offset)


def mask_impl() -> str:
    """The masking kernel: always "python" here."""
    return "python"


def utf8_valid(data: _Buffer) -> bool:
    """Exactly what data.decode("utf-8") (strict) accepts."""
    try:
        _utf8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


class Utf8Validator:
    """Incremental UTF-8 validation whose state carries across chunks."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: Optional[bytes] = _UTF8_ACCEPT

    def feed(self, data: _Buffer) -> bool:
        """False as soon as the bytes so far cannot be a prefix of valid UTF-8."""
        self._state = _utf8_feed(self._state, data)
        return self._state is not None

    def final(self) -> bool:
        """True if the bytes fed so far are complete, valid UTF-8."""
        return self._state == _UTF8_ACCEPT

    def reset(self) -> None:
        self._state = _UTF8_ACCEPT
