# cython: language_level=3
"""The per-message half of the ASGI WebSocket bridge, compiled.

`WebSocketBridge` is the base class of `asgiws.asgi.websocket.WebSocketProtocol`. It holds what
runs once per message or per read — the receive buffer hand-off to the codec, the queue of
messages the app has not received yet, the app's `receive()` and `send()`, write coalescing and
backpressure — so that none of it is interpreted Python. Everything that runs once per
connection (the handshake, closing, timers, denial responses, the access log) stays in Python in
the subclass, which this class calls back by name for the rare events: `_control(event)`,
`_fail_after_queue()`, `_send_failure()`, `_transition(message_type)` and the `_on_<type>`
handlers of the non-hot ASGI messages.

Receive path per read: `get_buffer()` hands out the codec's buffer; `buffer_updated()` has the
codec parse the complete frames in it (at most _MAX_ITEMS per feed); whole uncompressed messages
come back as bare `str`/`bytes` (a fragmented one assembled by the codec) and are appended to
`queue` as they are; the event dict is built only when the app receives (`_pop`). A waiting
`receive()` is woken once per read, not once per message.

Reading (the socket, and parsing what is already buffered) stops for any of three reasons, kept
as bits in `paused_for` and applied in one place, `_update_reading()`:

- _PAUSED_QUEUE: the messages the app has not received (payload + _MESSAGE_OVERHEAD each) are
  over `read_high_water`, until they are under `read_low_water`;
- _PAUSED_WRITE: PONGs (or a Close reply) were written while the transport's write buffer is
  over its high-water mark: the peer does not read what its own frames make us send, so we stop
  reading them, until the buffer drains. (The app's own sends are paced by `await send()`
  instead: pausing reading for them would only serialise an echo's receiving and sending.)
- _PAUSED_HANDSHAKE: the app has not accepted yet and the bytes the client sent behind its
  handshake (held unparsed in the codec: no PONG or Close may go out before the 101) are over
  `read_high_water`;
- _PAUSED_TURN: this connection has had its share of the loop turn (_TURN_BUDGET, counting
  bytes and a cost per frame and per event handled in Python), until the next turn: a flood on
  one socket costs the others one budget's worth of work per turn, not a whole backlog. A
  compressed frame is inflated at most `INFLATE_STEP` (1 MiB) per turn the same way: the
  connection says `more` and the bridge calls its `resume()` on the next turn.

Send path per message: `send()` builds the frame in C (`server_frame`), appends it to this
connection's outgoing list and registers the connection with the loop's `WriteCoalescer`, which
writes every connection's list with one `write`/`writelines` at the next loop iteration.
"""

import asyncio
import sys
import weakref
from asyncio import Future as _Future, InvalidStateError

cimport cython
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_DECREF
from cpython.list cimport PyList_GET_SIZE
from cpython.unicode cimport PyUnicode_GET_LENGTH

from asgiws._codec cimport FrameParser, server_frame, server_header

from asgiws.asgi import ClientDisconnected, thrown_exception
from asgiws.asgi.app_state import AppState

cdef extern from "Python.h":
    int PyUnicode_KIND(object o)

cdef extern from *:
    """
    /* The C slots of Receiving (receive()'s awaitable), which Cython cannot define itself:
       am_send (what `await` and asyncio's Task step an iterator with on CPython 3.10 and 3.11)
       hands back the await's result as a value, and tp_iternext (what `await` uses from 3.12)
       as StopIteration(result) without a traceback entry — as a coroutine's return does. Both
       call the Cython step function installed by asgiws_install_receiving(). */
    typedef PyObject *(*asgiws_receiving_step_fn)(PyObject *self, PyObject *value, int *returned);
    static asgiws_receiving_step_fn asgiws_receiving_step = NULL;

    static PySendResult asgiws_receiving_am_send(PyObject *self, PyObject *value,
                                                 PyObject **result) {
        int returned = 0;
        *result = asgiws_receiving_step(self, value, &returned);
        if (*result == NULL) return PYGEN_ERROR;
        return returned ? PYGEN_RETURN : PYGEN_NEXT;
    }

    static PyObject *asgiws_receiving_iternext(PyObject *self) {
        int returned = 0;
        PyObject *result = asgiws_receiving_step(self, Py_None, &returned);
        if (result == NULL || !returned) return result;
        if (result != Py_None) {
            if (PyTuple_Check(result) || PyExceptionInstance_Check(result)) {
                /* PyErr_SetObject would take these as the exception's args or itself. */
                PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
                if (stop != NULL) {
                    PyErr_SetObject(PyExc_StopIteration, stop);
                    Py_DECREF(stop);
                }
            } else {
                PyErr_SetObject(PyExc_StopIteration, result);
            }
        }
        Py_DECREF(result);
        return NULL;
    }

    static int asgiws_install_receiving(PyObject *type, void *step) {
        PyTypeObject *t = (PyTypeObject *)type;
        if (t->tp_as_async == NULL) {
            PyErr_SetString(PyExc_TypeError, "Receiving has no async slots");
            return -1;
        }
        asgiws_receiving_step = (asgiws_receiving_step_fn)step;
        t->tp_as_async->am_send = asgiws_receiving_am_send;
    #ifdef Py_TPFLAGS_HAVE_AM_SEND
        t->tp_flags |= Py_TPFLAGS_HAVE_AM_SEND;
    #endif
        t->tp_iternext = asgiws_receiving_iternext;
        PyType_Modified(t);
        return 0;
    }

    /* `await o` begins as `o.__await__()` ... */
    static PyObject *asgiws_await_iter(PyObject *o) {
        PyAsyncMethods *am = Py_TYPE(o)->tp_as_async;
        if (am != NULL && am->am_await != NULL) return am->am_await(o);
        return PyObject_CallMethod(o, "__await__", NULL);
    }

    /* ... and steps that iterator: 1 and *result what it yields, 0 and *result its return
       value, -1 with an exception set. */
    static int asgiws_iter_send(PyObject *it, PyObject *value, PyObject **result) {
        PySendResult status = PyIter_Send(it, value, result);
        return status == PYGEN_NEXT ? 1 : (status == PYGEN_RETURN ? 0 : -1);
    }

    /* Propagate the exception already set, from Cython code (an `except -1` return). */
    static int asgiws_reraise(void) { return -1; }
    """
    int asgiws_install_receiving(object type, void *step) except -1
    object asgiws_await_iter(object o)
    int asgiws_iter_send(object it, object value, PyObject **result)
    int asgiws_reraise() except -1


# Module-level C references: `is` tests against them are pointer compares.
cdef object _future_set_result = _Future.set_result
cdef object _CONNECTED = AppState.CONNECTED
cdef str _RECEIVE = "websocket.receive"
cdef str _SEND = "websocket.send"
cdef str _DISCONNECT = "websocket.disconnect"

cdef enum:
    _OP_TEXT = 0x1
    _OP_BINARY = 0x2
    # From this size a binary payload is written beside its header instead of copied behind it.
    _LARGE_PAYLOAD = 64 * 1024
    # Consumed slots at the head of the queue compacted away once there are this many (and they
    # are at least half of it): a queue the app keeps up with never holds more.
    _QUEUE_COMPACT = 64
    # What a queued message holds beyond its payload, for receive flow control: its queue slot
    # (8 B) and its bytes/str object header (33-56 B), rounded up. Empty and 1-byte messages
    # (CPython's shared objects) are charged too: they still cost a slot and the work.
    _MESSAGE_OVERHEAD = 64
    # The receive work one connection may do per loop turn, in bytes read, plus _FRAME_COST per
    # frame parsed (C) and _EVENT_COST per frame or event handled in Python (control frames,
    # compressed fragments): a few milliseconds of work at most (4 MiB of payload, ~40k small
    # messages, or 1024 Pings).
    _TURN_BUDGET = 4 * 1024 * 1024
    _FRAME_COST = 64
    _EVENT_COST = 4096
    # Items (messages, frames) one codec feed returns at most; the rest wait in the buffer.
    _MAX_ITEMS = 1024

cdef enum:
    _PAUSED_QUEUE = 1
    _PAUSED_WRITE = 2
    _PAUSED_TURN = 4
    _PAUSED_HANDSHAKE = 8


cdef class Finished:
    """What `send()` returns once its message is written: a coroutine whose first step returns
    None (awaiting it gives None at once, without a suspension).

    An `async def send` makes, runs and frees a coroutine object per message (~1k instructions,
    a fifth of the bridge's own cost per echoed message); the message is written before send()
    returns either way, since nothing in the common case waits. One shared instance serves
    every call: it holds no state, so each step is its first. It is a whole coroutine (`send`, `throw`, `close`,
    `__await__`), so `asyncio.create_task(send(message))` works as with a native one. When
    send() has to wait (the transport's buffer is full, or a handler that awaits), it returns
    that coroutine instead."""

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        raise StopIteration  # compiled to a bare NULL return: the await's result is None

    def send(self, value):
        raise StopIteration

    def throw(self, typ, val=None, tb=None):
        # As a finished coroutine's throw(): the exception comes straight back out.
        raise thrown_exception(typ, val, tb)

    def close(self):
        pass


FINISHED = Finished()


cdef class WriteCoalescer:
    """One per event loop: the frames each connection sends during a loop iteration leave in
    one write (one syscall) at the start of the next, instead of one syscall per frame."""
    cdef object loop_ref  # weakref.ref(loop): held weakly, as per_loop.LoopBound says why
    cdef list dirty
    cdef bint scheduled
    cdef object flush_callback

    def __cinit__(self, loop):
        self.loop_ref = weakref.ref(loop)
        self.dirty = []
        self.scheduled = False
        self.flush_callback = self.flush

    cdef inline void add(self, WebSocketBridge bridge) except *:
        self.dirty.append(bridge)
        if not self.scheduled:
            self.scheduled = True
            self.loop_ref().call_soon(self.flush_callback)

    def flush(self):
        cdef WebSocketBridge bridge
        self.scheduled = False
        dirty = self.dirty
        self.dirty = []
        for bridge in dirty:
            bridge._flush_now()


_coalescers = weakref.WeakKeyDictionary()
_plain_futures = weakref.WeakKeyDictionary()


# Before 3.12 CPython's C lookup of the running loop (what `Future()` without a loop does) asks
# the kernel for the process id (getpid, to notice a fork) every time: a system call per wait,
# one in three of the server's system calls in a small-message echo. There the waiter is made
# with the loop passed instead (a kwargs dict and its parsing: ~0.7k instructions more, and
# still 1-3 % more round trips per server CPU-second on 3.11, bench/RESULTS.md).
cdef bint _RUNNING_LOOP_COSTS_A_SYSCALL = sys.version_info < (3, 12)


cdef bint _makes_plain_futures(loop) except -1:
    """Whether `loop.create_future()` makes a plain asyncio.Future (uvloop's and asyncio's do;
    a custom loop may not): then receive() makes its waiter with `Future()`, which takes the
    running loop (the app's task runs on this one) without a keyword argument — a kwargs dict
    and its parsing, ~1k instructions per wait, less (but see _RUNNING_LOOP_COSTS_A_SYSCALL).
    Asked once per loop."""
    plain = _plain_futures.get(loop)
    if plain is None:
        future = loop.create_future()
        plain = _plain_futures[loop] = type(future) is _Future and future.get_loop() is loop
        future.cancel()
    return plain


def coalescer_for_loop(loop):
    coalescer = _coalescers.get(loop)
    if coalescer is None:
        coalescer = _coalescers[loop] = WriteCoalescer(loop)
    return coalescer


# The transport methods a flush calls, taken from the transport's class once per class rather
# than looked up by name on the transport at every flush (~100 instructions a lookup, two per
# flush). Every connection of a server has the same transport class (uvloop's TCPTransport, or
# its TLS transport).
cdef object _methods_of = None
cdef object _is_closing = None
cdef object _write = None
cdef object _writelines = None


cdef int _look_up_transport_methods(cls) except -1:
    global _methods_of, _is_closing, _write, _writelines
    _is_closing = cls.is_closing
    _write = cls.write
    _writelines = cls.writelines
    _methods_of = cls
    return 0


cdef inline Py_ssize_t _queued_size(object payload):
    """Memory a queued message holds, for receive flow control: its bytes, or for a str its
    code points times their width in CPython's representation, plus _MESSAGE_OVERHEAD. (The one
    websocket.disconnect dict is not counted.)"""
    if type(payload) is bytes:
        return PyBytes_GET_SIZE(payload) + _MESSAGE_OVERHEAD
    if type(payload) is str:
        return PyUnicode_GET_LENGTH(payload) * PyUnicode_KIND(payload) + _MESSAGE_OVERHEAD
    return 0


cdef inline int _resolve(waiter) except -1:
    """Wake a receive() waiting on `waiter`, unless it was cancelled meanwhile (only a
    cancellation makes a waiter done before this: each is resolved once, here)."""
    try:
        if type(waiter) is _Future:
            _future_set_result(waiter, None)  # the method itself, not a lookup by name
        else:
            waiter.set_result(None)
    except InvalidStateError:
        pass
    return 0


cdef class WebSocketBridge:
    # The transport, the sans-I/O connection (asgiws.websocket.connection.Connection) and its
    # parser; set by the subclass's upgrade().
    cdef public object transport
    cdef object conn_
    cdef FrameParser parser
    cdef public object loop
    cdef public object state                # AppState; the subclass's _transition() moves it
    # Receive side: messages the app has not received, oldest at queue[queue_head]. Entries are
    # bare str/bytes payloads (their event dict is built by _pop) or a websocket.disconnect dict.
    # None while nothing is queued: an idle connection holds no list (56 bytes).
    cdef list queue
    cdef Py_ssize_t queue_head
    cdef public Py_ssize_t queued_bytes
    cdef public Py_ssize_t read_high_water
    cdef public Py_ssize_t read_low_water
    cdef public int paused_for              # _PAUSED_* bits: why reading stops (see above)
    cdef public bint reading_paused         # the transport's reading is paused
    cdef Py_ssize_t turn_cost               # receive work since the last turn pause
    cdef bint turn_scheduled                # _next_turn is scheduled
    cdef bint conn_more                     # the connection stopped mid-inflation (conn.more)
    cdef object waiter                      # the future a receive() waits on, if any
    cdef list more_waiters                  # those of concurrent receive() calls (rare), or None
    cdef bint plain_futures                 # make waiters with Future() (_makes_plain_futures)
    cdef public bint connect_delivered
    cdef public bint disconnect_queued
    cdef public bint disconnect_delivered
    # A protocol violation whose Close waits for the app to consume the messages before it.
    cdef public bint failure_pending
    # conn.deflate is not None: permessage-deflate agreed. (Beside the other bints: a bint
    # between two pointers would take 8 bytes of every connection, not 4.)
    cdef bint compressing
    cdef public object pong_timer           # keepalive; cancelled when reading pauses
    # Send side: frames waiting for this loop iteration's flush (None when there are none: an
    # idle connection holds no list), and transport backpressure.
    cdef list out
    cdef public Py_ssize_t out_bytes
    cdef public Py_ssize_t write_high_water
    cdef WriteCoalescer coalescer
    cdef public bint write_paused
    cdef object drain_waiters               # a list of futures, made when first needed
    # Counters for the access log; bytes are wire bytes (frames, headers included).
    cdef public Py_ssize_t messages_in
    cdef public Py_ssize_t messages_out
    cdef public Py_ssize_t bytes_out
    # Set and read by the subclass; C numbers, not objects: as Python attributes, an int and a
    # float of 28 and 24 bytes each per connection, idle ones included. The keepalive slot this
    # connection waits in (0: none; asgiws.asgi.keepalive) and time.monotonic() at its start.
    cdef public Py_ssize_t ping_slot
    cdef public double started

    def __init__(self, config):
        self.loop = asyncio.get_event_loop()
        self.transport = None
        self.conn_ = None
        self.parser = None
        self.state = AppState.CONNECTING
        self.queue = None
        self.queue_head = 0
        self.queued_bytes = 0
        self.read_high_water = config.ws_read_high_water
        self.read_low_water = self.read_high_water // 4
        self.paused_for = 0
        self.reading_paused = False
        self.turn_cost = 0
        self.turn_scheduled = False
        self.conn_more = False
        self.waiter = None
        self.more_waiters = None
        self.plain_futures = _makes_plain_futures(self.loop)
        self.connect_delivered = False
        self.disconnect_queued = False
        self.disconnect_delivered = False
        self.failure_pending = False
        self.pong_timer = None
        self.out = None
        self.out_bytes = 0
        self.write_high_water = config.ws_high_water
        self.coalescer = coalescer_for_loop(self.loop)
        self.write_paused = False
        self.drain_waiters = None
        self.messages_in = self.messages_out = self.bytes_out = 0
        self.ping_slot = 0
        self.started = 0.0

    @property
    def conn(self):
        return self.conn_

    @conn.setter
    def conn(self, conn):
        self.conn_ = conn
        self.parser = conn.parser if conn is not None else None
        # Agreed in the handshake, for the connection's life (Connection.release() drops it
        # only once nothing more is sent: the connection lost, or a failure's Close written,
        # when _send_message refuses before reading this).
        self.compressing = conn is not None and conn.deflate is not None
        if self.parser is not None:
            self.parser.max_items = _MAX_ITEMS

    @property
    def queued_messages(self):
        """Events queued for the app and not received yet."""
        return self._queued_count()

    cdef inline Py_ssize_t _queued_count(self):
        if self.queue is None:
            return 0
        return PyList_GET_SIZE(self.queue) - self.queue_head

    cdef inline int _enqueue(self, item) except -1:
        if self.queue is None:
            self.queue = [item]
        else:
            self.queue.append(item)
        return 0

    # -- asyncio.BufferedProtocol: frames in ---------------------------------------------------

    def get_buffer(self, Py_ssize_t sizehint):
        return self.parser.get_buffer_c(sizehint)

    def buffer_updated(self, Py_ssize_t nbytes):
        self._feed(nbytes)

    cdef int _feed(self, Py_ssize_t nbytes) except -1:
        """Parse what the last read added (nbytes; 0 to parse on in what is buffered), hand the
        result on, and charge the work to this turn."""
        cdef Py_ssize_t frames_before = self.parser.frames_parsed
        return self._parsed(self.parser.feed_c(nbytes), nbytes, frames_before)

    def receive_data(self, data):
        """Frames that arrived outside get_buffer() (pipelined behind the HTTP request)."""
        cdef Py_ssize_t frames_before = self.parser.frames_parsed
        self._parsed(self.parser.feed_data(data), len(data), frames_before)

    cdef int _parsed(self, list frames, Py_ssize_t nbytes, Py_ssize_t frames_before) except -1:
        """What one parse returned: queued as it is (the hot path) or handled by the connection;
        the work charged to this turn — the bytes, _FRAME_COST per frame parsed and _EVENT_COST
        per item handled in Python."""
        cdef FrameParser parser = self.parser
        cdef Py_ssize_t cost = nbytes + (parser.frames_parsed - frames_before) * _FRAME_COST
        if parser.all_bare and parser.error is None and parser.conn_open:
            # The hot path: whole, uncompressed messages only (text already decoded).
            if PyList_GET_SIZE(frames):
                self._queue_messages(frames)
        else:
            cost += PyList_GET_SIZE(frames) * _EVENT_COST
            self._deliver(self.conn_._handle(frames))
        if parser.held and parser.end - parser.start > self.read_high_water:
            self._set_paused(_PAUSED_HANDSHAKE, True)
        self._charge(cost)
        return 0

    def _release_held(self):
        """The 101 is written: parse what the client sent behind its handshake, in order."""
        self.parser.held = False
        self.paused_for &= ~_PAUSED_HANDSHAKE
        if self.parser.end > self.parser.start:
            self._feed(0)
        self._update_reading()

    def _read_to_drop(self):
        """Closing, its Close sent (after a failure or the closing handshake): give back what
        only the wire needed (the connection parses nothing more, what is read is dropped as it
        comes) and read on, whatever paused reading, within the per-turn budget."""
        self.conn_.release()
        self.conn_more = False
        self.paused_for &= _PAUSED_TURN
        self._update_reading()

    # -- reading: when it stops and resumes ----------------------------------------------------

    cdef inline int _charge(self, Py_ssize_t cost) except -1:
        """Count receive work against this turn's budget; past it, or with whole frames left
        in the buffer, stop reading until the next loop turn."""
        self.turn_cost += cost
        if (self.turn_cost > _TURN_BUDGET or self.parser.more or self.conn_more) \
                and not self.turn_scheduled:
            self._pause_turn()
        return 0

    cdef int _pause_turn(self) except -1:
        self.turn_scheduled = True
        self.paused_for |= _PAUSED_TURN
        self.loop.call_soon(self._next_turn)
        self._update_reading()
        return 0

    def _next_turn(self):
        """The loop came back: go on inflating, or parse what was left buffered, or read again."""
        self.turn_scheduled = False
        self.turn_cost = 0
        self.paused_for &= ~_PAUSED_TURN
        if self.transport is None or self.transport.is_closing():
            return
        if self.paused_for == 0:
            if self.conn_more:
                self._deliver(self.conn_.resume())
                self._charge(_EVENT_COST)  # may pause for the next turn again
            elif self.parser.more:
                self._feed(0)  # may pause for the next turn again
        self._update_reading()

    cdef int _set_paused(self, int reason, bint paused) except -1:
        if paused:
            self.paused_for |= reason
        else:
            self.paused_for &= ~reason
        self._update_reading()
        return 0

    cdef int _update_reading(self) except -1:
        """The one place that pauses and resumes the transport's reading."""
        cdef bint pause = self.paused_for != 0
        if not pause and self.parser is not None and (self.parser.more or self.conn_more) \
                and not self.turn_scheduled:
            # Whole frames wait in the buffer, or a frame is part-inflated: they are handled
            # next turn, before any new read.
            self._pause_turn()
            return 0
        if pause == self.reading_paused or self.transport is None or self.transport.is_closing():
            return 0
        self.reading_paused = pause
        if pause:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()
        return 0

    cdef int _queue_messages(self, list messages) except -1:
        cdef Py_ssize_t queued = self.queued_bytes
        for payload in messages:
            queued += _queued_size(payload)
        if self.queue is None:
            self.queue = messages  # the parser's fresh list, nobody else's: kept, not copied
        else:
            self.queue.extend(messages)
        self.queued_bytes = queued
        self.messages_in += PyList_GET_SIZE(messages)
        self._after_queue()
        return 0

    def _deliver(self, list events):
        """Events from the connection's slow path: messages, Close, Pong, and what it owes the
        peer (Pongs, written inline)."""
        cdef Py_ssize_t delivered = 0
        cdef Py_ssize_t queued = self.queued_bytes
        conn = self.conn_
        self.conn_more = conn.more
        for event in events:
            if type(event) is str or type(event) is bytes:
                self._enqueue(event)
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

    cdef int _after_queue(self) except -1:
        """Pause reading past the high-water mark; wake a waiting receive()."""
        if self.queued_bytes > self.read_high_water and not (self.paused_for & _PAUSED_QUEUE):
            # A Pong cannot be read while reading is paused: the peer is sending faster than
            # the app reads, which proves it alive. Keepalive resumes with reading.
            if self.pong_timer is not None:
                self.pong_timer.cancel()
                self.pong_timer = None
            self._set_paused(_PAUSED_QUEUE, True)
        self._wake()
        return 0

    cdef inline int _wake(self) except -1:
        """Wake every waiting receive() once something is queued; each one re-checks the queue,
        so with concurrent receive() calls the ones that find it empty wait again."""
        if self._queued_count() == 0:
            return 0
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            _resolve(waiter)
        if self.more_waiters is not None:
            waiters = self.more_waiters
            self.more_waiters = None
            for waiter in waiters:
                _resolve(waiter)
        return 0

    def _queue_disconnect(self, int code, str reason):
        """Queue the one websocket.disconnect, behind the messages already queued."""
        if self.disconnect_queued:
            return
        self.disconnect_queued = True
        self._enqueue({"type": _DISCONNECT, "code": code, "reason": reason})
        self._wake()

    # -- the app's receive ---------------------------------------------------------------------

    def receive(self):
        """The app's `receive`: an awaitable callable (ASGI), returning a Receiving."""
        cdef Receiving receiving = Receiving.__new__(Receiving)
        receiving.bridge = self
        return receiving

    cdef object _pop(self):
        """The oldest queued message as its ASGI event; resumes reading below the low-water
        mark."""
        cdef list queue = self.queue
        cdef Py_ssize_t head = self.queue_head
        item = queue[head]
        queue[head] = None
        head += 1
        if head == PyList_GET_SIZE(queue):
            self.queue = None  # all received: an idle connection holds no list
            head = 0
        elif head >= _QUEUE_COMPACT and 2 * head >= PyList_GET_SIZE(queue):
            del queue[:head]
            head = 0
        self.queue_head = head
        self.queued_bytes -= _queued_size(item)
        if type(item) is bytes:
            event = {"type": _RECEIVE, "bytes": item}
        elif type(item) is str:
            event = {"type": _RECEIVE, "text": item}
        else:
            event = item
            self.disconnect_delivered = True
        if (self.paused_for & _PAUSED_QUEUE) and self.queued_bytes <= self.read_low_water:
            self._set_paused(_PAUSED_QUEUE, False)
        return event

    # -- the app's send ------------------------------------------------------------------------

    def send(self, message):
        """The app's `send`: an awaitable callable (ASGI). Not an `async def`: a message that
        needs no wait is written here and FINISHED returned (see Finished); otherwise the
        coroutine that waits is returned for the app to await."""
        cdef dict event
        if type(message) is dict:  # what apps send; exact type: C dict lookups below
            event = <dict>message
        else:
            event = dict(message)
        message_type = event["type"]
        if self.state is _CONNECTED and message_type == _SEND:
            self._send_message(event)
            if self.write_paused:
                return self._drain()
            return FINISHED
        self._transition(message_type)
        handler = getattr(self, "_on_" + message_type.replace(".", "_"))
        return handler(message)

    cdef int _send_message(self, dict message) except -1:
        """websocket.send: one frame built in C, queued for this loop iteration's write."""
        cdef int opcode
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
        if not self.parser.conn_open:  # the connection's state is not OPEN
            raise ClientDisconnected("WebSocket is closed")
        self.messages_out += 1
        if self.compressing:
            self._write_frame(self.conn_.send_message(data))
        elif opcode == _OP_BINARY and len(data) >= _LARGE_PAYLOAD:
            # Header apart, payload as it is: writelines() sends both, no copy of the payload.
            self._write_frame(server_header(_OP_BINARY, len(data)))
            self._write_frame(data)
        else:
            self._write_frame(server_frame(opcode, data))  # copy: header and payload joined
        return 0

    def _write(self, frame):
        """Queue a frame (bytes) for this loop iteration's write."""
        self._write_frame(frame)

    cdef int _write_frame(self, frame) except -1:
        # Flush at once past the high-water mark, so the transport's backpressure
        # (pause_writing) sees it.
        if self.out is None:
            self.out = [frame]
            self.coalescer.add(self)
        else:
            self.out.append(frame)
        self.out_bytes += len(frame)
        if self.out_bytes >= self.write_high_water:
            self._flush_now()
        return 0

    def _flush(self):
        self._flush_now()

    cdef int _flush_now(self) except -1:
        cdef list out = self.out
        if out is not None:
            self.bytes_out += self.out_bytes
            self.out = None
            self.out_bytes = 0
            transport = self.transport
            if type(transport) is not _methods_of:
                _look_up_transport_methods(type(transport))
            if not _is_closing(transport):
                if PyList_GET_SIZE(out) == 1:
                    _write(transport, out[0])
                else:
                    _writelines(transport, out)
        return 0

    def _drop_unsent(self):
        """The connection is gone: frames not written yet have nowhere to go."""
        self.out = None
        self.out_bytes = 0

    async def _drain(self):
        waiter = self.loop.create_future()
        if self.drain_waiters is None:
            self.drain_waiters = []
        self.drain_waiters.append(waiter)
        await waiter

    def _fail_drain_waiters(self, exc):
        self._release_drain_waiters(exc)

    cdef int _release_drain_waiters(self, exc) except -1:
        """Wake every send() waiting for the transport to drain; with `exc`, raise it there."""
        waiters = self.drain_waiters
        self.drain_waiters = None
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    if exc is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(exc)
        return 0

    # -- asyncio.BaseProtocol: transport backpressure ------------------------------------------

    def pause_writing(self):
        """The peer is not reading what we send: `await send()` waits (_drain), PONGs stop
        reading (_deliver), and the subclass watches for a stall (_write_stall_started)."""
        self.write_paused = True
        self._write_stall_started()

    def resume_writing(self):
        self.write_paused = False
        self._write_stall_ended()
        if self.paused_for & _PAUSED_WRITE:
            self._set_paused(_PAUSED_WRITE, False)
        self._release_drain_waiters(None)

    def _write_stall_started(self):
        pass  # overridden by WebSocketProtocol (the write-stall timer)

    def _write_stall_ended(self):
        pass


cdef enum:
    _RECEIVING_NEW = 0      # not stepped yet
    _RECEIVING_WAIT = 1     # waiting on its future for a message to be queued
    _RECEIVING_DONE = 2     # returned, raised or closed


@cython.freelist(16)
cdef class Receiving:
    """What `receive()` returns: a coroutine that takes the oldest queued event, waiting on a
    future of its own while none is queued (each await its own: one cancelled, by a timeout
    say, must not cancel another's).

    An `async def receive` costs a Cython coroutine and its closure per message, created, sent
    into twice through two levels of delegation and freed (~1k instructions, a sixth of the
    bridge's cost per echoed message). This object holds the same state (the bridge, the
    future, that future's iterator) in three fields, and its C slots step it directly (see
    asgiws_receiving_am_send). It is a whole coroutine — `send`, `throw`, `close`, `__await__`
    — so `asyncio.create_task(receive())` and `wait_for(receive(), t)` behave as with a native
    one, cancellation included."""
    cdef WebSocketBridge bridge
    cdef object waiter      # the future waited on (_RECEIVING_WAIT)
    cdef object waiting     # its iterator, as `await waiter` makes it
    cdef int state

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def send(self, value):
        cdef int returned = 0
        result = _receiving_step(self, value, &returned)
        if returned:
            raise StopIteration(result)
        return result

    def throw(self, typ, val=None, tb=None):
        # Thrown into the await on the future (asyncio's Task does this to cancel): it comes
        # straight back out, as through `await waiter` in a coroutine, which then has finished.
        self._finish()
        raise thrown_exception(typ, val, tb)

    def close(self):
        self._finish()

    def __dealloc__(self):
        if self.state == _RECEIVING_WAIT:
            self._finish()

    cdef int _finish(self) except -1:
        """Done with this await: the bridge no longer wakes its future."""
        if self.state == _RECEIVING_WAIT:
            self.waiting = None
            # (The bridge is None when the garbage collector cleared this object first.)
            if self.bridge is not None and self.bridge.waiter is self.waiter:
                self.bridge.waiter = None
            self.waiter = None
        self.state = _RECEIVING_DONE
        return 0


cdef inline object _owned(PyObject *reference):
    """The object of a new reference that C code handed over (asgiws_iter_send's result), as an
    object Cython manages: one reference, not two."""
    obj = <object>reference  # Cython takes a reference of its own here
    Py_DECREF(obj)  # and the one handed over is given back
    return obj


cdef object _receiving_step(Receiving self, value, int *returned):
    """One step of a Receiving: the event (*returned = 1), or the future to wait on (0)."""
    cdef WebSocketBridge bridge = self.bridge
    cdef PyObject *result
    cdef int status
    if self.state == _RECEIVING_WAIT:
        status = asgiws_iter_send(self.waiting, value, &result)
        if status == 1:  # stepped again before its future is done: it yields the future again
            return _owned(result)
        self._finish()
        if status < 0:
            asgiws_reraise()  # cancelled
        _owned(result)  # the future's result: None
        self.state = _RECEIVING_NEW
    elif self.state == _RECEIVING_DONE:
        raise RuntimeError("cannot reuse already awaited coroutine")
    else:
        if not bridge.connect_delivered:
            bridge.connect_delivered = True
            self.state = _RECEIVING_DONE
            returned[0] = 1
            return {"type": "websocket.connect"}
        if bridge._queued_count() == 0 and bridge.failure_pending:
            bridge._send_failure()
    if bridge._queued_count():
        self.state = _RECEIVING_DONE
        returned[0] = 1
        return bridge._pop()
    if bridge.disconnect_delivered:
        self.state = _RECEIVING_DONE
        raise ClientDisconnected("websocket.disconnect was already delivered")
    if not bridge.plain_futures:
        waiter = bridge.loop.create_future()
    elif _RUNNING_LOOP_COSTS_A_SYSCALL:
        waiter = _Future(loop=bridge.loop)
    else:
        waiter = _Future()
    if bridge.waiter is None:
        bridge.waiter = waiter
    else:
        if bridge.more_waiters is None:
            bridge.more_waiters = []
        bridge.more_waiters.append(waiter)
    self.waiter = waiter
    self.waiting = asgiws_await_iter(waiter)
    self.state = _RECEIVING_WAIT
    status = asgiws_iter_send(self.waiting, None, &result)
    if status < 0:
        self._finish()
        asgiws_reraise()
    return _owned(result)  # a pending future's first step yields it (to the app's task)


asgiws_install_receiving(Receiving, <void *>_receiving_step)
