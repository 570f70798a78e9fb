"""Type stubs for the C/Cython WebSocket frame codec (asgiws/_codec.pyx).

The codec is sans-I/O: no sockets, no asyncio. It owns a receive buffer, parses RFC 6455 frames
out of it by offsets, unmasks each payload once into the object the caller needs, and reports every
protocol violation as a close code.
"""

from typing import Optional, Union

# Opcodes (RFC 6455 §5.2)
OP_CONTINUATION: int  # 0x0
OP_TEXT: int  # 0x1
OP_BINARY: int  # 0x2
OP_CLOSE: int  # 0x8
OP_PING: int  # 0x9
OP_PONG: int  # 0xA

# Close codes used by the codec (RFC 6455 §7.4.1)
CLOSE_NORMAL: int  # 1000
CLOSE_PROTOCOL_ERROR: int  # 1002
CLOSE_NO_STATUS: int  # 1005 (no status code in the Close frame)
CLOSE_INVALID_PAYLOAD: int  # 1007 (invalid UTF-8)
CLOSE_MESSAGE_TOO_BIG: int  # 1009

class ProtocolError(Exception):
    """An RFC 6455 violation; `code` is the close code to send, `reason` a short text."""

    code: int
    reason: str
    def __init__(self, code: int, reason: str) -> None: ...

class Frame:
    """One parsed frame. `payload` is:
    - `str` for a complete (FIN, not fragmented) uncompressed text frame: decoded once, which
      validated it;
    - `bytes` for everything else (binary, control frames, fragments of a text message, and frames
      of a compressed message, which the caller inflates).
    """

    fin: bool
    rsv1: bool
    opcode: int
    payload: Union[bytes, str]

class FrameParser:
    """Incremental frame parser over a receive buffer it owns.

    Use from `asyncio.BufferedProtocol`:
        get_buffer(sizehint) -> parser.get_buffer(sizehint)
        buffer_updated(n)    -> frames = parser.feed(n); then check parser.error

    `feed` parses every complete frame in the buffer and returns them in order. On a violation it
    stops, returns the frames parsed before it, and sets `error`. After a violation or a Close
    frame it is stopped: every later `feed` returns [] and keeps none of the bytes.

    The buffer starts at `initial_size` (16 KiB: the idle cost per connection), grows toward a
    large frame at most doubling per read (memory follows bytes received, never a declared
    length), and is freed whenever a read leaves it empty (an idle connection holds no buffer;
    `capacity` then reports the size the next one will have). A binary frame of 64 KiB or more
    is received straight into its payload object instead. The text of an incomplete frame is
    validated as it arrives, so invalid UTF-8 fails before the rest of the frame comes.

    Message-level rules are enforced here too: a continuation with no message open, a new data
    frame while a message is open (1002); a frame or a message (sum of its fragments' payloads,
    plus `frame_overhead` for each fragment after the first) over `max_size` (1009, raised from
    the header, before the payload is buffered or allocated);
    uncompressed fragmented text is validated incrementally, so invalid UTF-8 fails (1007) on the
    fragment that carries it. A message whose first frame has RSV1 (`rsv1_allowed`, i.e.
    permessage-deflate negotiated) is "compressed": its payloads are returned raw as `bytes` and
    the caller inflates and validates them.
    """

    error: Optional[ProtocolError]
    max_size: int
    rsv1_allowed: bool
    bare_messages: bool
    all_bare: bool
    bytes_parsed: int
    frames_parsed: int
    frame_overhead: int
    max_items: int
    more: bool
    held: bool  # buffer what arrives but parse nothing (until the handshake is answered)
    conn_open: bool  # the owning Connection is OPEN (it keeps this as its state changes)
    def __init__(
        self,
        *,
        is_server: bool = True,
        max_size: int = 16 * 1024 * 1024,
        rsv1_allowed: bool = False,
        initial_size: int = 16 * 1024,
        bare_messages: bool = False,
        frame_overhead: int = 0,
        max_items: int = 0,
    ) -> None:
        """`bare_messages`: return each whole (FIN), uncompressed text or binary frame as its
        payload alone (`str` or `bytes`) instead of a Frame, the connection's hot path, and
        assemble a fragmented uncompressed message into one buffer, returned the same way when
        its final frame arrives (its fragments return nothing and allocate no object; control
        frames between them are returned as they come); `all_bare` then says whether the last
        `feed` returned nothing else.
        `frame_overhead`: bytes each continuation frame counts toward `max_size` besides its
        payload, so that a message in many tiny or empty fragments reaches the limit.
        `max_items`: a `feed` returns at most this many items (0: no limit) and leaves the rest
        of the complete frames in the buffer, with `more` set; `feed(0)` parses on.
        `bytes_parsed` counts the wire bytes of every frame parsed (for the access log),
        `frames_parsed` the frames."""
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable view of the free space at the end of the receive buffer (never empty)."""
    def release(self) -> None:
        """The connection is gone: free the buffers and parse nothing more (counters stay)."""
    def feed(self, nbytes: int) -> list[Frame]:
        """`nbytes` were written into the last buffer handed out: parse all complete frames.
        ValueError if `nbytes` is negative or more than the free space handed out."""
    def feed_data(self, data: bytes) -> list[Frame]:
        """Copy `data` into the buffer and parse (for bytes that arrive outside get_buffer, e.g.
        bytes after the HTTP upgrade head, and for tests)."""
    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed (a partial frame)."""
    @property
    def owns_buffer(self) -> bool:
        """Whether a receive buffer of its own is held (only while bytes wait in it)."""
    @property
    def assembled(self) -> int:
        """Payload bytes of the fragmented message being assembled (bare_messages)."""
    @property
    def capacity(self) -> int:
        """Current size of the owned receive buffer."""

def build_frame(
    opcode: int,
    payload: Union[bytes, bytearray, memoryview, str],
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: Optional[bytes] = None,
) -> bytes:
    """Header and payload in one `bytes` (one copy of the payload). `str` is encoded as UTF-8.
    `mask` (4 bytes) makes a client frame: MASK bit set and payload masked."""

def build_header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: Optional[bytes] = None,
) -> bytes:
    """Only the header (2, 4 or 10 bytes, +4 with a mask), for `writelines([header, payload])`."""

def build_close_payload(code: int = 1000, reason: str = "") -> bytes:
    """Close frame payload: 2-byte code + UTF-8 reason; b"" for code 1005 (no status).
    Raises ValueError for a code that may not go on the wire, for 1005 with a reason, and for a
    reason over 123 bytes of UTF-8."""

def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """(code, reason) from a close payload; (1005, "") for an empty one. Raises ProtocolError
    1002 for a 1-byte payload or an invalid code (§7.4), 1007 for a non-UTF-8 reason."""

def is_valid_close_code(code: int) -> bool:
    """May this code appear in a Close frame on the wire (RFC 6455 §7.4.1/§7.4.2)?"""

def mask(data: Union[bytes, bytearray, memoryview], key: bytes, offset: int = 0) -> bytes:
    """XOR `data` with the 4-byte `key`, starting at key position `offset % 4`; out of place.
    A key that is not 4 bytes raises ValueError."""

def mask_inplace(data: Union[bytearray, memoryview], key: bytes, offset: int = 0) -> None:
    """XOR a writable buffer in place (a read-only buffer raises BufferError)."""

def mask_impl() -> str:
    """The masking kernel chosen at run time: "avx2", "sse2", "neon" or "scalar"
    (ASGIWS_MASK_KERNEL=scalar|sse2 in the environment forces a narrower one)."""

def utf8_valid(data: Union[bytes, bytearray, memoryview]) -> bool:
    """Exactly what `data.decode("utf-8")` (strict) accepts."""

class Utf8Validator:
    """Incremental UTF-8 validation whose state carries across chunks."""

    def __init__(self) -> None: ...
    def feed(self, data: Union[bytes, bytearray, memoryview]) -> bool:
        """False as soon as the bytes so far cannot be a prefix of valid UTF-8."""
    def final(self) -> bool:
        """True if the bytes fed so far are complete, valid UTF-8 (no sequence cut off)."""
    def reset(self) -> None: ...
