# cython: language_level=3
"""The WebSocket frame codec (RFC 6455 §5): the hot path of asgiws.

Sans-I/O. `FrameParser` owns the receive buffer an `asyncio.BufferedProtocol` reads into, parses
every complete frame in it by offsets after each read, and hands out each payload unmasked and
copied once into the object the caller needs. Every protocol violation becomes a close code on
`FrameParser.error`. The builders write server (unmasked) and client (masked) frames.

The byte-level kernels (XOR masking, UTF-8 validation) are plain C in csrc/.
`asgiws/_reference.py` is the pure-Python reference the tests compare this module with.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove


cdef extern from "Python.h":
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    ctypedef struct PyMemoryViewObject:
        int flags
    int _Py_MEMORYVIEW_RELEASED
    const char *PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t *size) except NULL
    int PyBUF_WRITE


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

cdef enum:
    _CONTINUATION = 0x0
    _TEXT = 0x1
    _BINARY = 0x2
    _CLOSE = 0x8
    _PING = 0x9
    _PONG = 0xA
    _MAX_CONTROL_PAYLOAD = 125     # RFC 6455 §5.5
    # Free space get_buffer() guarantees at least: a read of this size per recv() call.
    _MIN_FREE = 8192
    # From this payload size a binary frame is received straight into its bytes object.
    _DIRECT_MIN = 65536

# The read buffer every parser with nothing buffered reads into (one per process; the event loop
# reads one socket at a time, and feed() follows its get_buffer() before any other parser's).
# What a read leaves unparsed — a partial frame, frames held or left for the next turn — is
# copied into the parser's own buffer. So an idle connection owns no buffer, and a read on one
# (a small message, or the FIN of one of 10,000 connections dropped at once) allocates nothing.
cdef uint8_t *_shared_buf = NULL
cdef Py_ssize_t _shared_size = 0
# The view of the shared buffer get_buffer() last handed out, and its length: handed out again
# for the next read of that length (not released, the buffer not grown since) instead of a new
# memoryview per read (its allocation and deallocation: ~650 instructions per read).
cdef object _shared_view = None
cdef Py_ssize_t _shared_view_len = 0

_MASK_IMPL = asgiws_mask_init().decode("ascii")
asgiws_utf8_feed(ASGIWS_UTF8_ACCEPT, NULL, 0)  # builds the UTF-8 tables at import


class ProtocolError(Exception):
    """An RFC 6455 violation; `code` is the close code to send, `reason` a short text."""

    def __init__(self, int code, str reason):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self):
        return f"{self.code} {self.reason}"


cdef inline bint _is_valid_close_code(int code):
    # RFC 6455 §7.4.1 plus the IANA registry (1012-1014); 1004-1006 and 1015 are reserved and
    # never sent on the wire; 3000-4999 belong to libraries and applications (§7.4.2).
    return (1000 <= code <= 1003) or (1007 <= code <= 1014) or (3000 <= code <= 4999)


def is_valid_close_code(int code):
    """May this code appear in a Close frame on the wire (RFC 6455 §7.4.1/§7.4.2)?"""
    return _is_valid_close_code(code)


@cython.freelist(64)
cdef class Frame:
    """One parsed frame; see _codec.pyi for what `payload` is."""

    def __repr__(self):
        return (f"Frame(fin={self.fin}, rsv1={self.rsv1}, opcode={self.opcode}, "
                f"payload={self.payload!r:.60})")


cdef class FrameParser:
    """Incremental frame parser over a receive buffer it owns. See _codec.pyi."""

    def __cinit__(self, *, bint is_server=True, Py_ssize_t max_size=16 * 1024 * 1024,
                  bint rsv1_allowed=False, Py_ssize_t initial_size=16 * 1024,
                  bint bare_messages=False, Py_ssize_t frame_overhead=0,
                  Py_ssize_t max_items=0):
        if initial_size < _MIN_FREE:
            initial_size = _MIN_FREE
        self.buf = NULL  # owned only while bytes are buffered: idle costs nothing
        self.capacity_ = initial_size
        self.initial_size = initial_size
        self.start = 0
        self.end = 0
        self.pending = 0
        self.state = PARSE_FRAMES
        self.is_server = is_server
        self.rsv1_allowed = rsv1_allowed
        self.max_size = max_size
        self.message_opcode = 0
        self.message_compressed = False
        self.message_size = 0
        self.utf8_state = ASGIWS_UTF8_ACCEPT
        self.partial_done = 0
        self.partial_utf8 = ASGIWS_UTF8_ACCEPT
        self.error = None
        self.bare_messages = bare_messages
        self.frame_overhead = frame_overhead
        self.max_items = max_items
        self.more = False
        self.held = False
        self.conn_open = True
        self.frames_parsed = 0
        self.msg_buf = NULL
        self.msg_len = 0
        self.msg_capacity = 0
        self.direct_active = False
        self.direct_assemble = False
        self.direct = None
        self.direct_ptr = NULL
        self.all_bare = True
        self.bytes_parsed = 0

    def __dealloc__(self):
        PyMem_Free(self.buf)
        PyMem_Free(self.msg_buf)

    @property
    def buffered(self):
        """Bytes received but not yet parsed (a partial frame)."""
        if self.direct_active:
            return self.direct_header_len + self.direct_filled
        return self.end - self.start

    @property
    def owns_buffer(self):
        """Whether this parser holds a receive buffer of its own (only while bytes wait in it;
        reads into an empty parser go to the shared buffer)."""
        return self.buf != NULL

    @property
    def assembled(self):
        """Payload bytes of the fragmented message being assembled (bare_messages mode)."""
        return self.msg_len

    @property
    def capacity(self):
        """Current size of the owned receive buffer."""
        return self.capacity_

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """A writable view of the free space at the end of the buffer, valid until the next
        get_buffer()/feed() call. Grows the buffer toward a large frame its header announced,
        at most doubling per read, so the rest arrives in few reads without trusting the
        declared length."""
        return self.get_buffer_c(sizehint)

    cdef object get_buffer_c(self, Py_ssize_t sizehint):
        global _shared_buf, _shared_size, _shared_view, _shared_view_len
        cdef Py_ssize_t want = _MIN_FREE
        cdef Py_ssize_t missing, received
        cdef uint8_t *grown
        if self.direct_active:
            # The rest of a large frame goes straight into its destination, and nothing else
            # does: the view ends where the frame ends.
            return PyMemoryView_FromMemory(
                <char *>self.direct_ptr + self.direct_filled,
                self.direct_length - self.direct_filled, PyBUF_WRITE)
        if self.pending > 0:
            # Grow toward the frame the header announced, but never past twice what has
            # arrived: memory follows the bytes a peer sends, not the length it claims.
            missing = self.pending - (self.end - self.start)
            received = self.end - self.start
            want = missing if missing < received else received
            if want < _MIN_FREE:
                want = _MIN_FREE
        elif self.buf == NULL:
            # Nothing buffered: read into the shared buffer; feed() keeps only what is left.
            if _shared_view_len == self.capacity_ and not (
                    (<PyMemoryViewObject *>_shared_view).flags & _Py_MEMORYVIEW_RELEASED):
                return _shared_view
            if _shared_size < self.capacity_:
                grown = <uint8_t *>PyMem_Realloc(_shared_buf, self.capacity_)
                if grown == NULL:
                    raise MemoryError()
                _shared_buf = grown
                _shared_size = self.capacity_
            _shared_view = PyMemoryView_FromMemory(<char *>_shared_buf, self.capacity_, PyBUF_WRITE)
            _shared_view_len = self.capacity_
            return _shared_view
        self._reserve(want)
        return PyMemoryView_FromMemory(<char *>self.buf + self.end, self.capacity_ - self.end,
                                       PyBUF_WRITE)

    def release(self):
        """The connection is gone: give back the buffers now (an app that never calls receive()
        may keep this object alive long after) and parse nothing more. Counters stay."""
        self._fail_state()
        self.more = False
        PyMem_Free(self.buf)
        self.buf = NULL
        self.start = self.end = 0
        self.capacity_ = self.initial_size

    def feed(self, Py_ssize_t nbytes):
        """`nbytes` were written into the last buffer handed out: parse every complete frame."""
        return self.feed_c(nbytes)

    cdef list feed_c(self, Py_ssize_t nbytes):
        cdef list direct_frames
        if self.direct_active:
            if nbytes < 0 or nbytes > self.direct_length - self.direct_filled:
                raise ValueError("nbytes out of range of the buffer handed out")
            direct_frames = []
            self.all_bare = True
            self._direct_received(nbytes, direct_frames)
            return direct_frames
        if nbytes < 0 or nbytes > self.capacity_ - self.end:
            raise ValueError("nbytes out of range of the buffer handed out")
        # With no buffer of its own, the parser handed out the shared one (get_buffer_c): a
        # read's bytes are there.
        cdef bint lent = self.buf == NULL
        if lent:
            self.buf = _shared_buf
        try:
            return self._feed_buffered(nbytes, lent)
        finally:
            if lent:
                self._keep_rest()

    cdef list _feed_buffered(self, Py_ssize_t nbytes, bint lent):
        self.end += nbytes
        if self.state == PARSE_STOPPED:
            # Nothing after a Close frame or a violation is parsed: keep none of it.
            self.start = self.end = 0
            return []
        if self.held:
            self.all_bare = True
            return []
        cdef list frames = self._parse()
        if not self.more and not lent:
            # (With frames left for the next feed, moving them now would be wasted: a buffer
            # of tiny frames parsed max_items at a time would be moved once per feed.)
            self._compact()
        return frames

    cdef int _keep_rest(self) except -1:
        """After a feed from the shared buffer: copy what is left unparsed into a buffer of
        this parser's own (initial_size, or the rest's size if larger), or own none."""
        cdef Py_ssize_t rest = self.end - self.start
        cdef uint8_t *own
        self.buf = NULL
        if rest <= 0:
            self.start = self.end = 0
            return 0
        if self.capacity_ < rest:
            self.capacity_ = rest
        own = <uint8_t *>PyMem_Malloc(self.capacity_)
        if own == NULL:
            self.start = self.end = 0
            raise MemoryError()
        memcpy(own, _shared_buf + self.start, rest)
        self.buf = own
        self.start = 0
        self.end = rest
        return 0

    def feed_data(self, data):
        """Copy `data` into the buffer and parse (bytes that arrived outside get_buffer)."""
        cdef Py_buffer view
        cdef list frames = []
        cdef Py_ssize_t offset = 0, take
        cdef bint all_bare = True
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            while True:
                if self.direct_active and offset < view.len:
                    take = min(view.len - offset, self.direct_length - self.direct_filled)
                    memcpy(<char *>self.direct_ptr + self.direct_filled,
                           <char *>view.buf + offset, take)
                    offset += take
                    frames.extend(self.feed(take))
                    all_bare = all_bare and self.all_bare
                    continue
                if offset >= view.len:
                    break
                take = view.len - offset
                self._reserve(take)
                # copy: outside the recv path
                memcpy(self.buf + self.end, <char *>view.buf + offset, take)
                offset += take
                frames.extend(self.feed(take))
                all_bare = all_bare and self.all_bare
        finally:
            PyBuffer_Release(&view)
        self.all_bare = all_bare
        return frames

    cdef int _start_direct(self, uint8_t *p, Py_ssize_t header_len, Py_ssize_t length, bint fin,
                           bint rsv1, int opcode, bint masked, Py_ssize_t avail,
                           bint assemble) except -1:
        """Receive the rest of this large binary frame straight into its destination: a payload
        object of its own, or (`assemble`) the message buffer after the fragments before it.
        Copies: what already arrived is unmasked into it once; the rest is read into it by the
        kernel and unmasked in place. Neither PyBytes_FromStringAndSize(NULL, n) nor growing the
        message buffer touches a payload page, so memory still follows the bytes received."""
        cdef Py_ssize_t received = avail - header_len
        if assemble:
            if opcode != _CONTINUATION:
                self._message_start(opcode)
            self._message_reserve(length)
            self.direct = None
            self.direct_ptr = self.msg_buf + self.msg_len
        else:
            self.direct = PyBytes_FromStringAndSize(NULL, length)
            self.direct_ptr = <uint8_t *>PyBytes_AS_STRING(self.direct)
        if masked:
            memcpy(self.direct_key, p + header_len - 4, 4)
            asgiws_mask(self.direct_ptr, p + header_len, <size_t>received, self.direct_key, 0)
        else:
            memcpy(self.direct_ptr, p + header_len, <size_t>received)
        self.direct_active = True
        self.direct_assemble = assemble
        self.direct_filled = received
        self.direct_length = length
        self.direct_header_len = header_len
        self.direct_fin = fin
        self.direct_rsv1 = rsv1
        self.direct_opcode = opcode
        self.direct_masked = masked
        self.start += avail
        self.pending = 0
        return 0

    cdef int _direct_received(self, Py_ssize_t nbytes, list frames) except -1:
        cdef uint8_t *data = self.direct_ptr
        cdef object payload
        if self.direct_masked:
            asgiws_mask(data + self.direct_filled, data + self.direct_filled, <size_t>nbytes,
                        self.direct_key, <size_t>self.direct_filled)
        self.direct_filled += nbytes
        if self.direct_filled < self.direct_length:
            return 0
        payload = self.direct
        self.direct = None
        self.direct_ptr = NULL
        self.direct_active = False
        self.bytes_parsed += self.direct_header_len + self.direct_length
        self.frames_parsed += 1
        if self.direct_opcode != _CONTINUATION:
            self.message_opcode = self.direct_opcode
            self.message_compressed = self.direct_rsv1
            self.message_size = 0
        else:
            self.message_size += self.frame_overhead
        self.message_size += self.direct_length
        if self.direct_assemble:
            self.msg_len += self.direct_length
            if self.direct_fin:
                self._message_complete(frames)
            return 0
        if self.direct_fin:
            self.message_opcode = 0
            self.message_size = 0
        self._append(frames, self.direct_fin, self.direct_rsv1, self.direct_opcode, payload)
        return 0

    # -- the assembled message (bare_messages mode) ----------------------------------------------

    cdef inline void _message_start(self, int opcode):
        self.message_opcode = opcode
        self.message_compressed = False
        self.message_size = 0
        self.utf8_state = ASGIWS_UTF8_ACCEPT
        self.msg_len = 0

    cdef int _message_reserve(self, Py_ssize_t length) except -1:
        """Room for `length` more bytes: doubling, but never past max_size (the 1009 check
        already bounds msg_len + length by it)."""
        cdef Py_ssize_t need = self.msg_len + length
        cdef Py_ssize_t capacity = self.msg_capacity
        cdef uint8_t *grown
        if need <= capacity:
            return 0
        capacity = 2 * capacity if capacity else 4096
        if capacity > self.max_size:
            capacity = self.max_size
        if capacity < need:
            capacity = need
        grown = <uint8_t *>PyMem_Realloc(self.msg_buf, capacity)
        if grown == NULL:
            raise MemoryError()
        self.msg_buf = grown
        self.msg_capacity = capacity
        return 0

    cdef int _message_append(self, const uint8_t *payload, Py_ssize_t length,
                             const uint8_t *key) except -1:
        """Copy (and unmask, with `key`) one fragment's payload behind the message so far."""
        self._message_reserve(length)
        if key != NULL:
            asgiws_mask(self.msg_buf + self.msg_len, payload, <size_t>length, key, 0)
        else:
            memcpy(self.msg_buf + self.msg_len, payload, <size_t>length)
        self.msg_len += length
        return 0

    cdef int _message_complete(self, list frames) except -1:
        """The final fragment arrived: the message, as one str or bytes (copy: decode or copy
        once out of the message buffer, which is then given back)."""
        cdef int opcode = self.message_opcode
        cdef object payload
        if opcode == _TEXT:
            # Validated fragment by fragment already (RFC 6455 §8.1); decoding cannot fail.
            payload = PyUnicode_DecodeUTF8(<char *>self.msg_buf, self.msg_len, NULL)
        else:
            payload = PyBytes_FromStringAndSize(<char *>self.msg_buf, self.msg_len)
        self._message_release()
        self.message_opcode = 0
        self.message_size = 0
        self._append(frames, True, False, opcode, payload)
        return 0

    cdef void _message_release(self):
        PyMem_Free(self.msg_buf)
        self.msg_buf = NULL
        self.msg_len = 0
        self.msg_capacity = 0

    cdef int _append(self, list frames, bint fin, bint rsv1, int opcode, object payload) except -1:
        cdef Frame frame
        if self.bare_messages and fin and not rsv1 and (opcode == _TEXT or opcode == _BINARY):
            frames.append(payload)  # a whole message: no Frame object
            return 0
        self.all_bare = False
        frame = Frame.__new__(Frame)
        frame.fin = fin
        frame.rsv1 = rsv1
        frame.opcode = opcode
        frame.payload = payload
        frames.append(frame)
        return 0

    cdef int _reserve(self, Py_ssize_t free) except -1:
        cdef Py_ssize_t new_capacity
        cdef uint8_t *new_buf
        if self.buf == NULL:
            if self.capacity_ < free:
                self.capacity_ = free
            self.buf = <uint8_t *>PyMem_Malloc(self.capacity_)
            if self.buf == NULL:
                raise MemoryError()
            return 0
        if self.capacity_ - self.end >= free:
            return 0
        if self.start > 0:
            self._compact()
            if self.capacity_ - self.end >= free:
                return 0
        new_capacity = self.capacity_ * 2
        if new_capacity < self.end + free:
            new_capacity = self.end + free
        new_buf = <uint8_t *>PyMem_Realloc(self.buf, new_capacity)
        if new_buf == NULL:
            raise MemoryError()
        self.buf = new_buf
        self.capacity_ = new_capacity
        return 0

    cdef void _compact(self):
        # Once per read: move the partial frame left by this read to the front. A large frame
        # that arrives over many reads is moved at most once, since start stays 0 until it is
        # complete. An empty buffer is given back (an idle connection holds none; the next
        # get_buffer() takes a fresh one of initial_size): a burst's growth does not outlive it.
        if self.start == self.end:
            self.start = 0
            self.end = 0
            self.capacity_ = self.initial_size
            PyMem_Free(self.buf)
            self.buf = NULL
        elif self.start > 0:
            memmove(self.buf, self.buf + self.start, self.end - self.start)
            self.end -= self.start
            self.start = 0

    cdef int _fail(self, int code, str reason) except -1:
        self.error = ProtocolError(code, reason)
        self._fail_state()
        return 0

    cdef void _fail_state(self):
        """Stop for good: no frame, direct read or message in progress any more."""
        self.state = PARSE_STOPPED
        self.pending = 0
        self.direct = None
        self.direct_ptr = NULL
        self.direct_active = False
        self._message_release()

    cdef int _check_partial_text(self, uint8_t *payload, Py_ssize_t received, bint masked,
                                 bint first) except -1:
        """Validate the part of an incomplete text frame received so far, so invalid UTF-8
        fails before the rest of the frame arrives. Bytes are unmasked in place once, from
        where the last read stopped (the mask key rotated to that offset)."""
        cdef Py_ssize_t done = self.partial_done
        if received <= done:
            return 0
        if done == 0:
            self.partial_utf8 = ASGIWS_UTF8_ACCEPT if first else self.utf8_state
        if masked:
            asgiws_mask(payload + done, payload + done, <size_t>(received - done), payload - 4,
                        <size_t>done)
        self.partial_utf8 = asgiws_utf8_feed(self.partial_utf8, payload + done,
                                             <size_t>(received - done))
        self.partial_done = received
        if self.partial_utf8 == ASGIWS_UTF8_REJECT:
            self._fail(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in a text message")
        return 0

    cdef list _parse(self):
        """Parse every complete frame in buf[start:end].

        Allocations per frame: the Frame object (freelist) and its payload; nothing else. In
        bare_messages mode a whole message is its payload alone, and a fragment of an
        uncompressed message allocates nothing: it is appended to the message buffer.
        Copies per frame: masked binary/control/fragment payloads are unmasked while copied
        once, buffer -> bytes (or -> message buffer); a complete text frame is unmasked in
        place, then decoded once, buffer -> str, which validates it."""
        cdef list frames = []
        self.all_bare = True
        self.more = False
        cdef uint8_t *p
        cdef uint8_t *payload_ptr
        cdef uint8_t *key
        cdef Py_ssize_t avail, header_len
        cdef uint64_t length
        cdef int opcode, close_code
        cdef bint fin, rsv1, masked, compressed, text, assemble
        cdef Py_ssize_t done
        cdef object payload

        while self.state == PARSE_FRAMES:
            avail = self.end - self.start
            if avail < 2:
                break
            if self.max_items and PyList_GET_SIZE(frames) >= self.max_items:
                self.more = True
                break
            p = self.buf + self.start
            fin = (p[0] & 0x80) != 0
            rsv1 = (p[0] & 0x40) != 0
            opcode = p[0] & 0x0F
            masked = (p[1] & 0x80) != 0
            length = p[1] & 0x7F

            # Checks in header order, each as soon as its bits have arrived.
            if p[0] & 0x30:
                self._fail(CLOSE_PROTOCOL_ERROR, "RSV2/RSV3 set without a negotiated extension")
                break
            if opcode >= 0x8:
                if opcode > _PONG:
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
                if opcode > _BINARY:
                    self._fail(CLOSE_PROTOCOL_ERROR, "reserved data opcode")
                    break
                if rsv1 and not self.rsv1_allowed:
                    self._fail(CLOSE_PROTOCOL_ERROR, "RSV1 set without a negotiated extension")
                    break
                if opcode == _CONTINUATION:
                    if self.message_opcode == 0:
                        self._fail(CLOSE_PROTOCOL_ERROR, "continuation frame with no message open")
                        break
                    if rsv1:
                        # permessage-deflate sets RSV1 on a message's first frame only (RFC 7692 §6).
                        self._fail(CLOSE_PROTOCOL_ERROR, "RSV1 set on a continuation frame")
                        break
                elif self.message_opcode != 0:
                    self._fail(CLOSE_PROTOCOL_ERROR, "new data frame while a message is open")
                    break
            if masked != self.is_server:
                self._fail(CLOSE_PROTOCOL_ERROR,
                           "unmasked client frame" if self.is_server else "masked server frame")
                break

            header_len = 2
            if length == 126:
                if avail < 4:
                    break
                length = (<uint64_t>p[2] << 8) | p[3]
                header_len = 4
            elif length == 127:
                if avail < 10:
                    break
                length = ((<uint64_t>p[2] << 56) | (<uint64_t>p[3] << 48) | (<uint64_t>p[4] << 40) |
                          (<uint64_t>p[5] << 32) | (<uint64_t>p[6] << 24) | (<uint64_t>p[7] << 16) |
                          (<uint64_t>p[8] << 8) | <uint64_t>p[9])
                if length >> 63:
                    self._fail(CLOSE_PROTOCOL_ERROR, "64-bit payload length with the top bit set")
                    break
                header_len = 10
            # 1009 from the header alone: nothing of this payload is buffered or allocated. A
            # continuation also pays frame_overhead, so empty fragments add up too.
            if length > <uint64_t>self.max_size or (
                    opcode == _CONTINUATION and <uint64_t>(self.message_size + self.frame_overhead)
                    + length > <uint64_t>self.max_size):
                self._fail(CLOSE_MESSAGE_TOO_BIG, "message over the maximum size")
                break
            if masked:
                header_len += 4
            payload_ptr = p + header_len
            key = payload_ptr - 4
            compressed = rsv1 or (opcode == _CONTINUATION and self.message_compressed)
            text = not compressed and (opcode == _TEXT or (
                opcode == _CONTINUATION and self.message_opcode == _TEXT))
            # A fragment of an uncompressed message, in bare_messages mode: into the message
            # buffer, no object of its own (compressed fragments go to the inflater as Frames).
            assemble = (self.bare_messages and opcode < 0x8 and not compressed
                        and not (fin and opcode != _CONTINUATION))
            if <uint64_t>avail < <uint64_t>header_len + length:
                self.pending = header_len + <Py_ssize_t>length
                if text:
                    if avail > header_len:
                        self._check_partial_text(payload_ptr, avail - header_len, masked,
                                                 opcode == _TEXT)
                elif opcode < 0x8 and length >= _DIRECT_MIN and avail >= header_len:
                    self._start_direct(p, header_len, <Py_ssize_t>length, fin, rsv1, opcode,
                                       masked, avail, assemble)
                break
            self.pending = 0
            done = self.partial_done
            self.partial_done = 0

            if text:
                # Text is unmasked in place (what an earlier read validated already is).
                if masked and done < <Py_ssize_t>length:
                    asgiws_mask(payload_ptr + done, payload_ptr + done, <size_t>length - done,
                                key, <size_t>done)
                masked = False
            if assemble:
                # Copy: the fragment's payload, unmasked while copied, behind the message so
                # far; text is validated first, from where an earlier read stopped (§8.1).
                if opcode != _CONTINUATION:
                    self._message_start(opcode)
                else:
                    self.message_size += self.frame_overhead
                self.message_size += <Py_ssize_t>length
                if text:
                    self.utf8_state = asgiws_utf8_feed(
                        self.partial_utf8 if done else self.utf8_state, payload_ptr + done,
                        <size_t>length - done)
                    if self.utf8_state == ASGIWS_UTF8_REJECT or (
                            fin and self.utf8_state != ASGIWS_UTF8_ACCEPT):
                        self._fail(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in a text message")
                        break
                self._message_append(payload_ptr, <Py_ssize_t>length, key if masked else NULL)
                self.start += header_len + <Py_ssize_t>length
                self.bytes_parsed += header_len + <Py_ssize_t>length
                self.frames_parsed += 1
                if fin:
                    self._message_complete(frames)
                continue
            if opcode == _TEXT and fin and not compressed:
                # A whole text message: decode once, which validates.
                try:
                    payload = PyUnicode_DecodeUTF8(<char *>payload_ptr, <Py_ssize_t>length, NULL)
                except UnicodeDecodeError:
                    self._fail(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in a text message")
                    break
            else:
                payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>length)
                if masked:
                    asgiws_mask(<uint8_t *>PyBytes_AS_STRING(payload), payload_ptr,
                                <size_t>length, key, 0)
                else:
                    memcpy(PyBytes_AS_STRING(payload), payload_ptr, <size_t>length)

            if opcode < 0x8:
                if opcode != _CONTINUATION:
                    self.message_opcode = opcode
                    self.message_compressed = rsv1
                    self.message_size = 0
                    self.utf8_state = ASGIWS_UTF8_ACCEPT
                else:
                    self.message_size += self.frame_overhead
                self.message_size += <Py_ssize_t>length
                if text and not (opcode == _TEXT and fin):
                    # A fragment of a text message: fail on the fragment that carries bad bytes.
                    if done:
                        self.utf8_state = asgiws_utf8_feed(
                            self.partial_utf8, <uint8_t *>PyBytes_AS_STRING(payload) + done,
                            <size_t>length - done)
                    else:
                        self.utf8_state = asgiws_utf8_feed(
                            self.utf8_state, <uint8_t *>PyBytes_AS_STRING(payload), <size_t>length)
                    if self.utf8_state == ASGIWS_UTF8_REJECT or (
                            fin and self.utf8_state != ASGIWS_UTF8_ACCEPT):
                        self._fail(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in a text message")
                        break
                if fin:
                    self.message_opcode = 0
                    self.message_size = 0
            elif opcode == _CLOSE:
                close_code = _check_close_payload(<bytes>payload)
                if close_code:
                    self._fail(close_code, "invalid close code" if close_code == 1002
                               else "invalid UTF-8 in the close reason")
                    break
                # Nothing after a Close frame is data (RFC 6455 §5.5.1).
                self.state = PARSE_STOPPED

            self.start += header_len + <Py_ssize_t>length
            self.bytes_parsed += header_len + <Py_ssize_t>length
            self.frames_parsed += 1
            self._append(frames, fin, rsv1, opcode, payload)
        return frames


cdef int _check_close_payload(bytes payload):
    """0 if a Close payload is valid, else the close code its violation calls for."""
    cdef Py_ssize_t n = len(payload)
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(payload)
    if n == 0:
        return 0
    if n == 1:
        return CLOSE_PROTOCOL_ERROR
    if not _is_valid_close_code((p[0] << 8) | p[1]):
        return CLOSE_PROTOCOL_ERROR
    if asgiws_utf8_feed(ASGIWS_UTF8_ACCEPT, p + 2, n - 2) != ASGIWS_UTF8_ACCEPT:
        return CLOSE_INVALID_PAYLOAD
    return 0


def parse_close_payload(bytes payload):
    """(code, reason) from a Close payload; (1005, "") for an empty one. Raises ProtocolError."""
    cdef int violation = _check_close_payload(payload)
    if violation == CLOSE_PROTOCOL_ERROR:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "invalid close code or payload")
    if violation == CLOSE_INVALID_PAYLOAD:
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in the close reason")
    if len(payload) == 0:
        return CLOSE_NO_STATUS, ""
    return (payload[0] << 8) | payload[1], payload[2:].decode("utf-8")


def build_close_payload(int code=1000, str reason=""):
    """Close frame payload: 2-byte code + UTF-8 reason; b"" for 1005 (no status)."""
    if code == CLOSE_NO_STATUS:
        if reason:
            raise ValueError("close code 1005 cannot carry a reason")
        return b""
    if not _is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent on the wire")
    cdef bytes encoded = reason.encode("utf-8")
    if len(encoded) > _MAX_CONTROL_PAYLOAD - 2:
        raise ValueError("close reason over 123 bytes of UTF-8")
    return bytes(((code >> 8) & 0xFF, code & 0xFF)) + encoded


cdef inline Py_ssize_t _header_len(uint64_t length, bint masked):
    cdef Py_ssize_t n = 2 if length < 126 else (4 if length < 65536 else 10)
    return n + 4 if masked else n


cdef Py_ssize_t _write_header(uint8_t *out, int opcode, uint64_t length, bint fin, bint rsv1,
                              const uint8_t *key):
    cdef Py_ssize_t n
    cdef int i
    cdef uint8_t mask_bit = 0x80 if key != NULL else 0
    out[0] = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (opcode & 0x0F)
    if length < 126:
        out[1] = mask_bit | <uint8_t>length
        n = 2
    elif length < 65536:
        out[1] = mask_bit | 126
        out[2] = <uint8_t>(length >> 8)
        out[3] = <uint8_t>length
        n = 4
    else:
        out[1] = mask_bit | 127
        for i in range(8):
            out[2 + i] = <uint8_t>(length >> (56 - 8 * i))
        n = 10
    if key != NULL:
        memcpy(out + n, key, 4)
        n += 4
    return n


cdef const uint8_t *_mask_key(object mask, Py_buffer *view) except? NULL:
    if mask is None:
        return NULL
    PyObject_GetBuffer(mask, view, PyBUF_SIMPLE)
    if view.len != 4:
        PyBuffer_Release(view)
        raise ValueError("a mask key is 4 bytes")
    return <const uint8_t *>view.buf


cdef bytes _header(int opcode, uint64_t length, bint fin, bint rsv1, const uint8_t *key):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _header_len(length, key != NULL))
    _write_header(<uint8_t *>PyBytes_AS_STRING(out), opcode, length, fin, rsv1, key)
    return out


cdef bytes _frame(int opcode, object payload, bint fin, bint rsv1, const uint8_t *key):
    """Header and payload in one bytes object; the payload is copied once (masked while copied
    when `key` is not NULL). A str payload is encoded as UTF-8 (no copy for ASCII str)."""
    cdef Py_buffer view
    cdef const uint8_t *data
    cdef Py_ssize_t length
    cdef bint release = False
    cdef bytes out
    cdef uint8_t *dst
    cdef Py_ssize_t n
    if isinstance(payload, str):
        data = <const uint8_t *>PyUnicode_AsUTF8AndSize(payload, &length)
    else:
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        release = True
        data = <const uint8_t *>view.buf
        length = view.len
    try:
        out = PyBytes_FromStringAndSize(NULL, _header_len(length, key != NULL) + length)
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        n = _write_header(dst, opcode, length, fin, rsv1, key)
        if key != NULL:
            asgiws_mask(dst + n, data, length, key, 0)
        else:
            memcpy(dst + n, data, length)
    finally:
        if release:
            PyBuffer_Release(&view)
    return out


cdef bytes server_header(int opcode, uint64_t length):
    """build_header() of an unmasked final frame, for other Cython modules."""
    return _header(opcode, length, True, False, NULL)


cdef bytes server_frame(int opcode, object payload):
    """build_frame() of an unmasked final frame, for other Cython modules."""
    return _frame(opcode, payload, True, False, NULL)


def build_header(int opcode, uint64_t length, *, bint fin=True, bint rsv1=False, mask=None):
    """Only the header (2, 4 or 10 bytes, +4 with a mask), for writelines([header, payload])."""
    cdef Py_buffer key_view
    cdef const uint8_t *key = _mask_key(mask, &key_view)
    try:
        return _header(opcode, length, fin, rsv1, key)
    finally:
        if key != NULL:
            PyBuffer_Release(&key_view)


def build_frame(int opcode, payload, *, bint fin=True, bint rsv1=False, mask=None):
    """Header and payload in one bytes object: one copy of the payload (masked while copied
    for a client frame). A str payload is encoded as UTF-8 (no copy for ASCII str)."""
    cdef Py_buffer key_view
    cdef const uint8_t *key = _mask_key(mask, &key_view)
    try:
        return _frame(opcode, payload, fin, rsv1, key)
    finally:
        if key != NULL:
            PyBuffer_Release(&key_view)


cdef inline const uint8_t *_key_bytes(object key, Py_buffer *view) except NULL:
    PyObject_GetBuffer(key, view, PyBUF_SIMPLE)
    if view.len != 4:
        PyBuffer_Release(view)
        raise ValueError("a mask key is 4 bytes")
    return <const uint8_t *>view.buf


def mask(data, key, Py_ssize_t offset=0):
    """XOR `data` with the 4-byte `key` from key position `offset % 4`, out of place."""
    cdef Py_buffer view
    cdef Py_buffer key_view
    cdef const uint8_t *k = _key_bytes(key, &key_view)
    cdef bytes out
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except BaseException:
        PyBuffer_Release(&key_view)
        raise
    out = PyBytes_FromStringAndSize(NULL, view.len)
    asgiws_mask(<uint8_t *>PyBytes_AS_STRING(out), <const uint8_t *>view.buf, view.len, k,
                <size_t>(offset & 3))
    PyBuffer_Release(&view)
    PyBuffer_Release(&key_view)
    return out


def mask_inplace(data, key, Py_ssize_t offset=0):
    """XOR a writable buffer in place."""
    cdef Py_buffer view
    cdef Py_buffer key_view
    cdef const uint8_t *k = _key_bytes(key, &key_view)
    try:
        PyObject_GetBuffer(data, &view, PyBUF_WRITABLE)
    except BaseException:
        PyBuffer_Release(&key_view)
        raise
    asgiws_mask(<uint8_t *>view.buf, <const uint8_t *>view.buf, view.len, k, <size_t>(offset & 3))
    PyBuffer_Release(&view)
    PyBuffer_Release(&key_view)


def mask_impl():
    """The masking kernel chosen at run time: "avx2", "sse2", "neon" or "scalar"."""
    return _MASK_IMPL


def utf8_valid(data):
    """Exactly what data.decode("utf-8") (strict) accepts."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    cdef uint32_t state = asgiws_utf8_feed(ASGIWS_UTF8_ACCEPT, <const uint8_t *>view.buf,
                                           view.len)
    PyBuffer_Release(&view)
    return state == ASGIWS_UTF8_ACCEPT


cdef class Utf8Validator:
    """Incremental UTF-8 validation whose state carries across chunks."""
    cdef uint32_t state

    def __cinit__(self):
        self.state = ASGIWS_UTF8_ACCEPT

    def feed(self, data):
        """False as soon as the bytes so far cannot be a prefix of valid UTF-8."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        self.state = asgiws_utf8_feed(self.state, <const uint8_t *>view.buf, view.len)
        PyBuffer_Release(&view)
        return self.state != ASGIWS_UTF8_REJECT

    def final(self):
        """True if the bytes fed so far are complete, valid UTF-8."""
        return self.state == ASGIWS_UTF8_ACCEPT

    def reset(self):
        self.state = ASGIWS_UTF8_ACCEPT
