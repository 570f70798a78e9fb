# Compiled declarations for asgiws/http/protocol.py (Cython's "augmenting .pxd"; see cycle.pxd):
# the connection's state as C fields, its internal steps as C functions. What uvloop, httptools,
# timers and the request cycle call stays a Python method (def in the .py, or cpdef here).

cimport cython

# The request cycle's C layout (cycle.pxd): the connection reads and sets its fields and calls its
# cdef/cpdef methods in C, not through attribute lookups (~0.6k instructions per request).
from asgiws.http.cycle cimport Connection, RequestCycle

cdef dict FIELD_NAMES
cdef dict METHOD_NAMES
cdef frozenset HEAD_FIELDS
cdef frozenset PROXY_FIELDS
cdef dict SCOPE_TEMPLATE
cdef dict ASGI_VERSION

cdef class HttpProtocol(Connection):
    cdef public object config
    cdef public object server_state
    cdef public object app
    cdef public dict app_state
    cdef public object loop
    cdef public object parser
    cdef public str _root_path
    cdef public bytes _raw_root_path
    cdef public bint access_log
    cdef public object _metrics
    cdef public object _balance
    cdef public bint _websocket
    cdef public bint _reset_contextvars
    cdef public object _trusted
    cdef public Py_ssize_t _limit_max_head
    cdef public object _limit_concurrency
    cdef public double _timeout_keep_alive
    cdef public set _tasks
    cdef public bint _count_requests
    cdef public bint _plain_tasks
    cdef public Py_ssize_t _limit_max_headers
    cdef public dict _extensions_10
    cdef public dict _extensions

    cdef public object _server
    cdef public object _client
    cdef public str _scheme
    cdef public bint _from_proxy
    cdef public RequestCycle _active
    cdef public RequestCycle _parsing
    cdef public object _pipeline
    cdef public Py_ssize_t _pipeline_bytes
    cdef public object _unparsed
    cdef public object _parse_handle
    cdef public bint _stopped
    cdef public object _deferred_upgrade
    cdef public object _deferred_error
    cdef public object _ignored_upgrade
    cdef public bint _priming
    cdef public bint _shutting_down
    cdef public object _header_deadline
    cdef public object _idle_deadline
    cdef public object _timer
    cdef public double _timer_when
    cdef public object _linger_timer
    cdef public object _writable
    cdef public object _stall_watch

    cdef public bint _head_in_progress
    cdef public bytes _url
    cdef public list _headers
    cdef public Py_ssize_t _head_size
    cdef public Py_ssize_t _head_received
    cdef public Py_ssize_t _head_feed
    cdef public Py_ssize_t _feed_count
    cdef public Py_ssize_t _messages_begun
    cdef public Py_ssize_t _version_message
    cdef public bytes _line_chunk
    cdef public bint _expect_100_continue
    cdef public object _upgrade_header
    cdef public bint _proxy_headers_seen
    cdef public object _upgrade_scope
    cdef public Py_ssize_t _host_count
    cdef public object _transfer_encoding
    cdef public object _content_length
    cdef public bint _connection_close
    cdef public object _body_remaining
    cdef object __weakref__

    cdef _new_parser(self)
    cpdef _parse(self)
    cdef bint _parse_blocked(self) except -1
    cdef _feed(self, object data, Py_ssize_t size)
    cdef _watch_write_stall(self)
    cdef _on_parser_upgrade(self)
    cdef _upgrade_to_websocket(self, bytes leftover)
    @cython.locals(url=bytes, raw_path=bytes, query=bytes, path=str, scope=dict)
    cdef dict _scope(self, str method, str http_version)
    cdef _start_cycle(self, RequestCycle cycle, object app)
    cpdef response_complete(self, RequestCycle cycle)
    cdef _advance(self)
    cdef _drop_pipeline(self)
    cpdef body_consumed(self)
    cdef _update_reading(self)
    cdef bint _over_concurrency_limit(self) except -1
    cdef _hand_off(self, dict scope, bytes leftover)
    cdef _reject(self, int status, str reason)
    cpdef write_error_response(self, int status, str reason)
    cdef _linger(self)
    cpdef close_transport(self)
    cpdef record_response(self, object cycle, int status)
    cdef _arm_header_timer(self)
    cdef _arm_idle_timer(self, double delay)
    cdef _schedule_timer(self, double when)
    cdef _on_header_timeout(self)
    cdef _on_keep_alive_timeout(self)
    cdef _cancel_timers(self)

cdef bytes _VERSION_PREFIX
cdef tuple _LINE_METHOD_NAMES
cdef tuple _LINE_METHODS
@cython.locals(i=Py_ssize_t)
cdef bint _holds_at(bytes data, Py_ssize_t start, bytes part) except -1
@cython.locals(index=Py_ssize_t)
cdef str _request_line_method(bytes data)
@cython.locals(minor=int)
cdef str _request_line_version(bytes data, Py_ssize_t start)
