# Compiled declarations for asgiws/http/cycle.py (Cython's "augmenting .pxd"): the .py is the
# source of both the extension and the pure-Python fallback; this file only says which of its
# names are C-level. Every attribute is `public` (the connection reads and sets them); methods
# other modules call stay Python-visible (def or cpdef), internal ones are cdef.

cimport cython

cdef long _date_second
cdef bytes _date_line
@cython.locals(now=double, second=long)
cdef bytes _date_line_now()

cdef class RequestCycle

# The connection as the cycle sees it; HttpProtocol (protocol.pxd) subclasses it, so the cycle
# reads these fields and calls these methods in C.
cdef class Connection:
    cdef public object transport
    cdef public bint observed
    cdef public bint add_date
    cdef public bytes server_line
    cdef public bytes extra_lines
    cdef public bint reading_paused
    cdef public bint write_paused
    cdef public object timeout_write_stall

    cpdef response_complete(self, RequestCycle cycle)
    cpdef body_consumed(self)
    cpdef write_error_response(self, int status, str reason)
    cpdef close_transport(self)
    cpdef record_response(self, object cycle, int status)

cdef class RequestCycle:
    cdef public Connection conn
    cdef public object transport
    cdef public dict scope
    cdef public bint keep_alive
    cdef public bint expect_100_continue
    cdef public list body_chunks
    cdef public bint disconnected
    cdef public bint request_complete
    cdef public Py_ssize_t body_buffered
    cdef public Py_ssize_t queued_bytes
    cdef public bint _final_body_delivered
    cdef public object _message_event
    cdef public double started
    cdef public object _body_sent
    cdef public object phase
    cdef public int status
    cdef public list _header_lines
    cdef public object _content_length
    cdef public bint _has_server
    cdef public bint _has_date
    cdef public bint _sent_connection_close
    cdef public object _framing
    cdef public object _remaining
    cdef public object _body_length
    cdef public bint _trailers_wanted
    cdef public bint _send_trailers
    cdef public object _file_sender
    cdef public object task
    cdef object __weakref__

    cpdef wake(self)
    cdef _answer_app_failure(self)
    cdef object _send(self, dict message)
    cdef _start(self, dict message)
    cdef list _head(self, bytes first_body, bint more_body)
    cdef _write_body(self, object body, bint more_body)
    cdef _body_complete(self)
    cdef bint _client_takes_trailers(self)
    cdef _write_trailers(self, object headers, bint more_trailers)
    cdef _write_early_hint(self, object links)
