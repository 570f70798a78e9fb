# cdef API of the WebSocket frame codec, for other Cython modules. See _codec.pyx.
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef extern from "mask.h":
    void asgiws_mask(uint8_t *dst, const uint8_t *src, size_t length, const uint8_t *key,
                     size_t offset) nogil
    const char *asgiws_mask_init() nogil

cdef extern from "utf8.h":
    uint32_t ASGIWS_UTF8_ACCEPT
    uint32_t ASGIWS_UTF8_REJECT
    uint32_t asgiws_utf8_feed(uint32_t state, const uint8_t *s, size_t length) nogil


cdef enum ParserState:
    # Where the parser is in the stream: between frames, or stopped for good.
    PARSE_FRAMES = 0
    PARSE_STOPPED = 1       # after a Close frame or a protocol error


cdef class Frame:
    cdef readonly bint fin
    cdef readonly bint rsv1
    cdef readonly int opcode
    cdef readonly object payload


cdef class FrameParser:
    cdef:
        uint8_t *buf            # NULL while nothing is buffered (an idle connection)
        Py_ssize_t capacity_
        Py_ssize_t start        # first unparsed byte
        Py_ssize_t end          # one past the last received byte
        Py_ssize_t initial_size
        Py_ssize_t pending      # size of the frame we are waiting on, 0 if unknown
        ParserState state
        bint is_server
        public bint rsv1_allowed
        # Whether the Connection that owns this parser is OPEN (it keeps this true or false as
        # its state changes): the compiled bridge's per-message checks read it here in C,
        # rather than the Connection's `state` attribute by name. (Here, beside another bint,
        # it takes no memory: the 4 bytes before max_size were padding.)
        public bint conn_open
        public Py_ssize_t max_size
        # The message being received (fragmentation, RFC 6455 §5.4).
        int message_opcode      # 0: no message open
        bint message_compressed
        Py_ssize_t message_size
        uint32_t utf8_state
        # The incomplete text frame at `start`: how many payload bytes are already unmasked in
        # place and validated, and the UTF-8 state after them (RFC 6455 §8.1 fail fast).
        Py_ssize_t partial_done
        uint32_t partial_utf8
        public object error
        # Each data frame after a message's first counts this many bytes toward max_size
        # besides its payload: a message in many tiny or empty fragments reaches the limit.
        public Py_ssize_t frame_overhead
        # bare_messages mode: the uncompressed fragmented message being assembled, its
        # fragments' payloads unmasked and copied into one buffer as they arrive (no object per
        # fragment). Bound: max_size, as the 1009 check counts every byte appended here.
        uint8_t *msg_buf
        Py_ssize_t msg_len
        Py_ssize_t msg_capacity
        # At most this many items per feed (0: no limit); `more`: whole frames were left in the
        # buffer for the next feed (feed(0) parses on), so one feed is bounded work.
        public Py_ssize_t max_items
        readonly bint more
        # Parse nothing yet, only buffer (the bytes a client sent behind its handshake, until the
        # server has answered it): no reply may go out before the 101.
        public bint held
        readonly Py_ssize_t frames_parsed   # every frame parsed so far, control frames too
        # A large binary frame is received straight into its destination (no copy out of the
        # buffer afterwards; unmasked in place as it arrives): a payload object of its own, or
        # the message buffer for a fragment of an assembled message.
        bint direct_active
        bint direct_assemble
        object direct                       # the payload object, or None (message buffer)
        uint8_t *direct_ptr                 # where the frame's payload goes
        Py_ssize_t direct_filled
        Py_ssize_t direct_length
        Py_ssize_t direct_header_len
        bint direct_fin
        bint direct_rsv1
        int direct_opcode
        bint direct_masked
        uint8_t direct_key[4]
        # Return whole uncompressed data frames as their bare payload, not as Frame objects.
        readonly bint bare_messages
        readonly bint all_bare      # the last feed returned bare payloads only
        readonly Py_ssize_t bytes_parsed  # wire bytes of every frame parsed so far

    cdef object get_buffer_c(self, Py_ssize_t sizehint)
    cdef list feed_c(self, Py_ssize_t nbytes)
    cdef list _feed_buffered(self, Py_ssize_t nbytes, bint lent)
    cdef int _keep_rest(self) except -1
    cdef list _parse(self)
    cdef int _fail(self, int code, str reason) except -1
    cdef void _fail_state(self)
    cdef int _check_partial_text(self, uint8_t *payload, Py_ssize_t received, bint masked,
                                 bint first) except -1
    cdef void _compact(self)
    cdef int _start_direct(self, uint8_t *p, Py_ssize_t header_len, Py_ssize_t length, bint fin,
                           bint rsv1, int opcode, bint masked, Py_ssize_t avail,
                           bint assemble) except -1
    cdef int _direct_received(self, Py_ssize_t nbytes, list frames) except -1
    cdef int _message_reserve(self, Py_ssize_t length) except -1
    cdef int _message_append(self, const uint8_t *payload, Py_ssize_t length,
                             const uint8_t *key) except -1
    cdef int _message_complete(self, list frames) except -1
    cdef void _message_start(self, int opcode)
    cdef void _message_release(self)
    cdef int _append(self, list frames, bint fin, bint rsv1, int opcode, object payload) except -1
    cdef int _reserve(self, Py_ssize_t free) except -1


# Unmasked final frames (what a server sends), for the ASGI bridge.
cdef bytes server_header(int opcode, uint64_t length)
cdef bytes server_frame(int opcode, object payload)
