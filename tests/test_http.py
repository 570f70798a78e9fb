"""HTTP/1.1 over a real server and real sockets: httpx for well-formed traffic, raw sockets for
exact bytes (pipelining, malformed requests, timeouts)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time

import httpx
import pytest
from pydantic import BaseModel

from conftest import RawConnection, TIMEOUT, warnings_logged

# -- apps ----------------------------------------------------------------------------------------


async def read_body(receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def send_text(send, body: bytes, status: int = 200, headers=()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain"), *headers]})
    await send({"type": "http.response.body", "body": body})


def scope_recorder():
    scopes = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        scopes.append(scope)
        await read_body(receive)
        await send_text(send, b"ok")

    return app, scopes


async def echo_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    await send_text(send, b"%s %s %s" % (scope["method"].encode(), scope["raw_path"], body))


# -- scope ---------------------------------------------------------------------------------------


def test_scope_fields(run_server):
    app, scopes = scope_recorder()
    with run_server(app) as server:
        response = httpx.get(server.url + "/caf%C3%A9/a%20b?x=1&y=%20", headers={"X-Custom": "Value"})
        assert response.status_code == 200
    (scope,) = scopes
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a b"  # percent-decoded, UTF-8
    assert scope["raw_path"] == b"/caf%C3%A9/a%20b"
    assert scope["query_string"] == b"x=1&y=%20"  # not decoded
    assert scope["root_path"] == ""
    assert (b"x-custom", b"Value") in [tuple(h) for h in scope["headers"]]  # name lowercased, value as sent
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert list(scope["client"])[0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert list(scope["server"]) == ["127.0.0.1", server.port]
    assert scope["state"] == {}


def test_duplicate_headers_kept_in_order(run_server):
    app, scopes = scope_recorder()
    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\n\r\n")
        assert conn.read_response().status == 200
    assert [tuple(h) for h in scopes[0]["headers"]] == [(b"host", b"x"), (b"x-a", b"1"), (b"x-b", b"2"), (b"x-a", b"3")]


def test_root_path(run_server):
    app, scopes = scope_recorder()
    with run_server(app, root_path="/api") as server:
        assert httpx.get(server.url + "/items/a%2Fb").status_code == 200
    (scope,) = scopes
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/items/a/b"  # path includes root_path (ASGI)
    assert scope["raw_path"] == b"/api/items/a%2Fb"


def test_unix_socket_scope(run_server, tmp_path):
    app, scopes = scope_recorder()
    path = str(tmp_path / "asgiws.sock")
    with run_server(app, uds=path) as server:
        assert server.uds == path
        with httpx.Client(transport=httpx.HTTPTransport(uds=path)) as client:
            assert client.get("http://localhost/x").status_code == 200
    assert list(scopes[0]["server"]) == [path, None]
    assert scopes[0]["client"] is None


def test_unix_socket_stale_file_is_replaced(run_server, tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    with run_server(echo_app, uds=path):
        with httpx.Client(transport=httpx.HTTPTransport(uds=path)) as client:
            assert client.get("http://localhost/").status_code == 200


def test_ipv6(run_server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no ::1")
    app, scopes = scope_recorder()
    with run_server(app, host="::1") as server:
        assert server.host == "::1"
        assert httpx.get(server.url + "/v6").status_code == 200
    assert scopes[0]["server"][0] == "::1"
    assert scopes[0]["client"][0] == "::1"


def test_options_star_and_absolute_form(run_server):
    app, scopes = scope_recorder()
    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET http://example.com/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200
        assert conn.read_response().status == 200
    assert scopes[0]["path"] == "*"
    assert (scopes[1]["path"], scopes[1]["query_string"]) == ("/abs", b"q=1")


def test_http_1_0_closes_after_response(run_server):
    app, scopes = scope_recorder()
    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200 and response.headers["connection"] == "close"
        assert conn.at_eof()
    assert scopes[0]["http_version"] == "1.0"


@pytest.mark.parametrize(
    "writes, requests",
    [
        # Read off the request line that begins a read (protocol._request_line_method and
        # _request_line_version)...
        ([b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"POST /b HTTP/1.0\r\nHost: x\r\n\r\n"],
         [("GET", "1.1"), ("POST", "1.0")]),
        # ...or asked of httptools: a second request in the same read,
        ([b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nDELETE /b HTTP/1.0\r\nHost: x\r\n\r\n"],
         [("GET", "1.1"), ("DELETE", "1.0")]),
        # an empty line before the request line (RFC 9112 §2.2 lets a server skip it),
        ([b"\r\nGET / HTTP/1.0\r\nHost: x\r\n\r\n"], [("GET", "1.0")]),
        # a request line cut by the read,
        ([b"GET / HT", b"TP/1.0\r\nHost: x\r\n\r\n"], [("GET", "1.0")]),
        # two empty lines first,
        ([b"\r\n\r\nGET /abcdefgh HTTP/1.0\r\nHost: x\r\n\r\n"], [("GET", "1.0")]),
        # the head cut after its request line,
        ([b"PUT / HTTP/1.0\r\nHost: x\r\n", b"\r\n"], [("PUT", "1.0")]),
        # a target that ends like a version,
        ([b"GET /HTTP/1.1 HTTP/1.0\r\nHost: x\r\n\r\n"], [("GET", "1.0")]),
        # other methods and targets: the common ones read off the line, the rest from httptools.
        ([b"DELETE /a?b=HTTP/1.0 HTTP/1.1\r\nHost: x\r\n\r\n", b"PATCH / HTTP/1.1\r\nHost: x\r\n\r\n",
          b"PROPFIND /dav HTTP/1.1\r\nHost: x\r\n\r\n", b"OPTIONS * HTTP/1.0\r\nHost: x\r\n\r\n"],
         [("DELETE", "1.1"), ("PATCH", "1.1"), ("PROPFIND", "1.1"), ("OPTIONS", "1.0")]),
    ],
    ids=["each-in-its-read", "pipelined", "empty-line-first", "line-cut", "two-empty-lines", "head-cut",
         "target-like-version", "methods"],
)
def test_the_method_and_version_of_each_request_however_its_bytes_arrive(run_server, writes, requests):
    app, scopes = scope_recorder()
    with run_server(app, lifespan="off") as server, RawConnection(server) as conn:
        for data in writes:
            conn.send(data)
            if data.endswith(b"\r\n\r\n") and len(writes) > 1:
                conn.read_response()  # one request at a time: each write is its own read
        while len(scopes) < len(requests):
            conn.read_response()
    assert [(scope["method"], scope["http_version"]) for scope in scopes] == requests


# -- request bodies ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_streaming_request_body(run_server):
    messages = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            messages.append(message)
            if not message["more_body"]:
                break
        total = sum(len(m["body"]) for m in messages)
        await send_text(send, str(total).encode())

    async def chunks():
        for _ in range(20):
            yield b"x" * 50_000

    with run_server(app) as server:
        async with httpx.AsyncClient() as client:
            response = await client.post(server.url, content=chunks())  # chunked transfer-encoding
    assert response.text == str(20 * 50_000)
    assert all(m["type"] == "http.request" for m in messages)
    assert [m["more_body"] for m in messages][-1] is False
    assert len(messages) > 1  # delivered as it arrived, not in one piece


def test_chunked_request_body_is_dechunked(run_server):
    with run_server(echo_app) as server, RawConnection(server) as conn:
        conn.send(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert conn.read_response().body == b"POST /c hello world"


def test_reading_pauses_while_app_does_not_consume_body(run_server):
    """The server stops reading (TCP backpressure) instead of buffering an unread body."""
    gate = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.to_thread(gate.wait, TIMEOUT)
        body = await read_body(receive)
        await send_text(send, str(len(body)).encode())

    total = 64 * 1024 * 1024
    with run_server(app) as server, RawConnection(server) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
        conn.sock.settimeout(0.5)
        chunk = b"x" * 65536
        sent = 0
        with pytest.raises(socket.timeout):
            while sent < total:
                sent += conn.sock.send(chunk[: total - sent])
        assert sent < total // 2  # the server stopped reading long before the end
        gate.set()
        conn.sock.settimeout(TIMEOUT)
        while sent < total:
            sent += conn.sock.send(chunk[: total - sent])
        assert conn.read_response().body == str(total).encode()


def test_expect_100_continue(run_server):
    with run_server(echo_app) as server, RawConnection(server) as conn:
        conn.send(b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert conn.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.send(b"hello")
        assert conn.read_response().body == b"POST /e hello"


def test_expect_100_continue_not_sent_when_app_answers_without_reading(run_server):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send_text(send, b"no thanks", status=413)

    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        response = conn.read_response()
        assert response.status == 413  # no 100 Continue before it
        assert conn.at_eof()  # the client may never send the body: the connection cannot be reused


# -- responses -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_streaming_response_is_chunked(run_server):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with run_server(app) as server:
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", server.url) as response:
                parts = [part async for part in response.aiter_raw()]
    assert response.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.headers
    assert b"".join(parts) == b"one two three"


def test_single_body_gets_content_length_and_default_headers(run_server):
    with run_server(echo_app) as server:
        response = httpx.get(server.url + "/x")
    assert response.headers["content-length"] == str(len(b"GET /x "))
    assert response.headers["server"] == "asgiws"
    assert response.headers["date"].endswith(" GMT")


def test_the_date_header_is_the_time_of_the_response(run_server):
    """RFC 9110 §6.6.1: the date the response was made, IMF-fixdate, one-second resolution. It
    is formatted once a second and cached (cycle._date_line_now): a response a second later
    carries a later date."""
    from email.utils import parsedate_to_datetime

    with run_server(echo_app, lifespan="off") as server, httpx.Client(timeout=TIMEOUT) as client:
        dates = []
        for _ in range(2):
            before = time.time()
            dates.append(parsedate_to_datetime(client.get(server.url + "/").headers["date"]).timestamp())
            assert int(before) <= dates[-1] <= time.time()
            deadline = time.monotonic() + TIMEOUT
            while int(time.time()) == int(before) and time.monotonic() < deadline:  # into the next second
                time.sleep(0.05)
    assert dates[1] > dates[0]


def test_app_headers_win_over_defaults(run_server):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send_text(send, b"", headers=[(b"server", b"mine"), (b"transfer-encoding", b"gzip")])

    with run_server(app) as server:
        response = httpx.get(server.url)
    assert response.headers.get_list("server") == ["mine"]
    assert "transfer-encoding" not in response.headers  # framing is the server's (ASGI)


def test_an_invalid_content_length_from_the_app_is_a_500(run_server, caplog):
    """The app's Content-Length must be a number: the response is refused before anything is on
    the wire (a 500), and the error is logged. The same twice: the header cache keeps the verdict."""

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send_text(send, b"five", headers=[(b"content-length", b"five")])

    with run_server(app, lifespan="off") as server:
        for _ in range(2):
            with RawConnection(server) as conn:
                conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert conn.read_response().status == 500
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert len(errors) == 2 and all("Invalid Content-Length b'five'" in str(r.exc_info[1]) for r in errors)


def test_connect_is_answered_then_the_connection_closes(run_server):
    """CONNECT (RFC 9110 §9.3.6): the app gets the authority-form target; whatever follows the
    request is tunnel data, never parsed as HTTP, and the connection closes after the response
    (asgiws does not tunnel)."""
    scopes = []

    async def app(scope, receive, send):
        if scope["type"] == "http":
            scopes.append(scope)
            await send_text(send, b"no tunnel", status=405)

    with run_server(app, lifespan="off") as server, RawConnection(server) as conn:
        conn.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
                  b"GET /not-a-request HTTP/1.1\r\nHost: x\r\n\r\n")  # fmt: skip
        response = conn.read_response()
        assert (response.status, response.body) == (405, b"no tunnel")
        assert conn.at_eof()
    assert [(scope["method"], scope["raw_path"]) for scope in scopes] == [("CONNECT", b"example.com:443")]


def test_head_response_has_no_body(run_server):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send_text(send, b"hello", headers=[(b"content-length", b"5")])

    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.read_response(head_request=True)
        assert head.status == 200 and head.headers["content-length"] == "5" and head.body == b""
        get = conn.read_response()  # would be garbled had the HEAD response carried a body
        assert get.body == b"hello"


def test_keep_alive_reuses_connection(run_server):
    app, scopes = scope_recorder()
    with run_server(app) as server, httpx.Client() as client:
        for _ in range(3):
            assert client.get(server.url).status_code == 200
    assert len({scope["client"][1] for scope in scopes}) == 1


def test_keep_alive_timeout_closes_idle_connection(run_server):
    with run_server(echo_app, timeout_keep_alive=0.2) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200
        started = time.monotonic()
        assert conn.at_eof()
        assert time.monotonic() - started < TIMEOUT / 2


def test_pipelined_requests_run_in_order(run_server):
    events = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        events.append(("start", scope["path"]))
        for _ in range(20):  # give a second request every chance to start early
            await asyncio.sleep(0)
        events.append(("end", scope["path"]))
        await send_text(send, scope["path"].encode())

    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [conn.read_response().body for _ in range(3)] == [b"/1", b"/2", b"/3"]
    assert events == [("start", "/1"), ("end", "/1"), ("start", "/2"), ("end", "/2"), ("start", "/3"), ("end", "/3")]


def test_pipelined_post_bodies(run_server):
    with run_server(echo_app) as server, RawConnection(server) as conn:
        conn.send(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert [conn.read_response().body for _ in range(3)] == [b"POST /a abc", b"POST /b de", b"GET /c "]
        assert conn.at_eof()


@pytest.mark.parametrize(
    "fields, stays_open",
    [
        (b"", True),
        (b"Connection: keep-alive\r\n", True),
        (b"Connection: close\r\n", False),
        (b"Connection: Close\r\n", False),
        (b"Connection: keep-alive, close\r\n", False),
        (b"Connection: te,  CLOSE \r\nTE: trailers\r\n", False),
        (b"Connection: keep-alive\r\nConnection: close\r\n", False),  # two fields: one list
        (b"Connection: closed\r\n", True),  # a different option, not "close"
        (b"Connection: upgrade\r\n", True),  # no Upgrade field: nothing to switch to
    ],
)
def test_connection_close_in_the_request_ends_the_connection_after_the_response(run_server, fields, stays_open):
    """RFC 9112 §9.6: "close" among the request's connection options (case-insensitive, any
    field, any position) closes after the response, which says `connection: close`; anything
    else keeps an HTTP/1.1 connection open for the next request."""
    with run_server(echo_app) as server, RawConnection(server) as conn:
        conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        response = conn.read_response()
        assert response.body == b"GET /a "
        assert (response.headers.get("connection") == "close") is not stays_open
        if stays_open:
            conn.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.read_response().body == b"GET /b "
        else:
            assert conn.at_eof()


def test_http_1_0_closes_after_each_response(run_server):
    with run_server(echo_app) as server, RawConnection(server) as conn:
        conn.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert conn.read_response().body == b"GET /a "
        assert conn.at_eof()


# -- the app's task --------------------------------------------------------------------------


def server_tasks(server) -> int:
    """How many app tasks the server counts as running, read on its loop one turn from now."""

    async def count() -> int:
        await asyncio.sleep(0)
        return len(server.server.server_state.tasks)

    return asyncio.run_coroutine_threadsafe(count(), server.loop).result(TIMEOUT)


def test_each_request_runs_in_a_task_that_leaves_the_server_set(run_server):
    """Every app runs in an asyncio Task of its own: an app that finishes in its first step, one
    that waits on something, one that waits for its body and a pipelined one are all real tasks,
    and none stays in the server's set of running tasks once done (graceful shutdown waits on
    it; --limit-concurrency counts it), each named "asgiws http app". Pins what any change to how the task starts (an eager
    start was tried: protocol._start_cycle) must keep."""
    seen = []
    started = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        task = asyncio.current_task()
        seen.append((isinstance(task, asyncio.Task), task.get_name()))
        started.set()
        if scope["path"] == "/wait":
            await asyncio.sleep(0)
        body = await read_body(receive)
        await send_text(send, b"ok " + body)

    with run_server(app, lifespan="off") as server, RawConnection(server) as conn:
        for path in (b"/", b"/wait", b"/"):
            conn.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            assert conn.read_response().body == b"ok "
            assert server_tasks(server) == 0
        started.clear()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")  # the body comes later
        assert started.wait(TIMEOUT)
        assert server_tasks(server) == 1  # waiting in receive()
        conn.send(b"body")
        assert conn.read_response().body == b"ok body"
        assert server_tasks(server) == 0
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [conn.read_response().body for _ in range(2)] == [b"ok ", b"ok "]
        assert server_tasks(server) == 0
    # One shared name (before 3.12 asyncio formats a "Task-<n>" for each task otherwise).
    assert seen == [(True, "asgiws http app")] * 6


def test_a_task_factory_the_app_installs_makes_every_app_task(run_server):
    """An app (or its instrumentation) that sets the loop's task factory in its lifespan gets
    every request's task from it."""
    made = []

    def factory(loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            asyncio.get_running_loop().set_task_factory(factory)
            await send({"type": "lifespan.startup.complete"})
            await receive()
            asyncio.get_running_loop().set_task_factory(None)
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send_text(send, b"made by the factory" if asyncio.current_task() in made else b"not")

    with run_server(app, lifespan="on") as server, RawConnection(server) as conn:
        for _ in range(3):
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.read_response().body == b"made by the factory"


def test_large_response_with_backpressure(run_server):
    """`await send` waits while the client is not reading; nothing is lost."""
    finished = threading.Event()
    chunk = b"y" * 65536
    count = 1024  # 64 MiB: far more than the kernel buffers hold

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % (len(chunk) * count))]})  # fmt: skip
        for _ in range(count):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        finished.set()

    with run_server(app) as server, RawConnection(server) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not finished.wait(0.5)  # held by backpressure while we do not read
        response = conn.read_response()
        assert len(response.body) == len(chunk) * count
        assert finished.wait(TIMEOUT)


# -- errors --------------------------------------------------------------------------------------


def test_app_error_before_start_is_500(run_server, caplog):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            raise ValueError("boom")

    with run_server(app) as server, caplog.at_level(logging.ERROR, logger="asgiws.error"):
        response = httpx.get(server.url)
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert response.headers["connection"] == "close"
    assert any("Exception in ASGI application" in r.message and r.exc_info for r in caplog.records)


def test_app_error_after_start_but_before_body_is_still_500(run_server):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise ValueError("boom")

    with run_server(app) as server:
        assert httpx.get(server.url).status_code == 500  # the head was not on the wire yet


def test_app_error_mid_body_closes_connection(run_server):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise ValueError("boom")

    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = conn.read_to_eof()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"partial" in data and not data.endswith(b"0\r\n\r\n")  # cut short, and the client can tell


def test_app_returning_without_response_is_500(run_server):
    async def app(scope, receive, send):
        pass

    with run_server(app) as server:
        assert httpx.get(server.url).status_code == 500


def test_content_length_mismatch_closes(run_server):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"12345", "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_to_eof().endswith(b"12345")


def test_invalid_response_header_is_500(run_server):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send_text(send, b"", headers=[(b"x-injected", b"a\r\nset-cookie: evil=1")])

    with run_server(app) as server:
        response = httpx.get(server.url)
    assert response.status_code == 500 and "set-cookie" not in response.headers


def test_response_headers_checked_in_every_response(run_server):
    # The server remembers header lines it has validated: the same fields again, a list pair, a
    # bytearray value, a new Content-Length, then an invalid field must each be handled afresh.
    headers_per_request = [
        [(b"x-a", b"1")],
        [(b"x-a", b"1")],
        [[b"x-a", b"1"], (b"x-b", bytearray(b"2"))],
        [(b"x-a", b"1"), (b"content-length", b"3")],
        [(b"x-a", b"1"), (b"x-bad", b"a\r\nset-cookie: evil=1")],
    ]
    bodies = [b"", b"", b"", b"abc", b""]

    async def app(scope, receive, send):
        if scope["type"] == "http":
            index = int(scope["path"][1:])
            await send({"type": "http.response.start", "status": 200, "headers": headers_per_request[index]})
            await send({"type": "http.response.body", "body": bodies[index]})

    with run_server(app) as server, httpx.Client() as client:
        responses = [client.get(f"{server.url}/{index}") for index in range(len(headers_per_request))]
    assert [response.status_code for response in responses] == [200, 200, 200, 200, 500]
    assert all(response.headers["x-a"] == "1" for response in responses[:4])
    assert responses[2].headers["x-b"] == "2"
    assert responses[3].content == b"abc"
    assert "set-cookie" not in responses[4].headers


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                     id="content-length-and-transfer-encoding"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                     id="duplicate-content-length"),
        pytest.param(b"GARBAGE\r\n\r\n", id="garbage"),
        pytest.param(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", id="space-in-header-name"),
        pytest.param(b"GET /\x01 HTTP/1.1\r\n\r\n", id="control-char-in-target"),
    ],
)  # fmt: skip
def test_malformed_request_is_400(run_server, request_bytes, caplog):
    with run_server(echo_app) as server, RawConnection(server) as conn, caplog.at_level(logging.DEBUG):
        conn.send(request_bytes)
        response = conn.read_response()
        assert response.status == 400
        assert response.headers["connection"] == "close"
        assert conn.at_eof()
    assert not warnings_logged(caplog, asgiws_only=False)  # the peer's fault: no error log


def test_malformed_request_after_pipelined_one_is_answered_in_order(run_server):
    with run_server(echo_app) as server, RawConnection(server) as conn:
        conn.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        assert conn.read_response().body == b"GET /ok "
        assert conn.read_response().status == 400
        assert conn.at_eof()


def test_oversized_head_is_431(run_server):
    with run_server(echo_app, limit_max_head=1024) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        assert conn.read_response().status == 431
        assert conn.at_eof()


def test_unfinished_header_is_cut_at_the_limit(run_server):
    """A header that never ends is cut once the head passes the limit, not buffered until it ends."""
    with run_server(echo_app, limit_max_head=4096) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"a" * 5000)  # however the reads split it
        assert conn.read_response().status == 431
        assert conn.at_eof()


def test_unfinished_header_after_pipelined_request_is_cut(run_server):
    with run_server(echo_app, limit_max_head=4096) as server, RawConnection(server) as conn:
        conn.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nX-Endless: " + b"a" * 2000)
        assert conn.read_response().body == b"GET /first "
        for _ in range(3):
            conn.send(b"a" * 2000)
        assert conn.read_response().status == 431


def test_long_url_is_431(run_server):
    with run_server(echo_app, limit_max_head=1024) as server, RawConnection(server) as conn:
        conn.send(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 431


def test_too_many_headers_is_431(run_server):
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(11))
    with run_server(echo_app, limit_max_headers=10) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
        assert conn.read_response().status == 431


def test_headers_at_the_limit_are_fine(run_server):
    headers = b"Host: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(9))
    with run_server(echo_app, limit_max_headers=10) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
        assert conn.read_response().status == 200


def test_header_timeout_closes_slow_client(run_server):
    with run_server(echo_app, timeout_header=0.2) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert conn.at_eof()


def test_header_timeout_applies_to_silent_connection(run_server):
    with run_server(echo_app, timeout_header=0.2) as server, RawConnection(server) as conn:
        assert conn.at_eof()


def test_header_timeout_applies_to_a_later_request_on_the_connection(run_server):
    # Keep-alive long, header timeout short: the unfinished second head is what closes it.
    with run_server(echo_app, timeout_header=0.2, timeout_keep_alive=TIMEOUT) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        assert conn.at_eof()
        assert time.monotonic() - started < TIMEOUT / 2


def test_header_timeout_applies_to_a_head_pipelined_after_a_request(run_server):
    with run_server(echo_app, timeout_header=0.2, timeout_keep_alive=TIMEOUT) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost")  # second never finished
        assert conn.read_response().status == 200
        started = time.monotonic()
        assert conn.at_eof()
        assert time.monotonic() - started < TIMEOUT / 2


def test_keep_alive_timeout_restarts_with_each_request(run_server):
    # Requests 0.15 s apart, keep-alive 0.3 s: each answer restarts the idle clock, so the
    # connection outlives the first deadline.
    with run_server(echo_app, timeout_keep_alive=0.3) as server, RawConnection(server) as conn:
        for _ in range(4):
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.read_response().status == 200
            time.sleep(0.15)
        started = time.monotonic()
        assert conn.at_eof()
        assert time.monotonic() - started < TIMEOUT / 2


def test_header_timeout_does_not_cut_slow_app(run_server):
    gate = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await asyncio.to_thread(gate.wait, TIMEOUT)
            await send_text(send, b"late")

    with run_server(app, timeout_header=0.2) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.4)  # longer than timeout_header, on purpose: the head was complete
        gate.set()
        assert conn.read_response().body == b"late"


def test_limit_concurrency_503(run_server):
    gate = threading.Event()
    entered = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] == "http":
            entered.set()
            await asyncio.to_thread(gate.wait, TIMEOUT)
            await send_text(send, b"done")

    with run_server(app, limit_concurrency=1) as server, RawConnection(server) as first:
        first.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(TIMEOUT)
        response = httpx.get(server.url)
        assert response.status_code == 503
        gate.set()
        assert first.read_response().body == b"done"


# -- disconnects ---------------------------------------------------------------------------------


def test_disconnect_then_send_raises_oserror(run_server, caplog):
    outcome = {}
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await read_body(receive)
        outcome["message"] = await receive()  # blocks until the client goes away
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except OSError as exc:
            outcome["error"] = exc
        done.set()

    with run_server(app) as server, caplog.at_level(logging.DEBUG):
        with RawConnection(server) as conn:
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert done.wait(TIMEOUT)
    assert outcome["message"] == {"type": "http.disconnect"}
    assert isinstance(outcome["error"], OSError)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_uncaught_client_disconnected_is_not_logged_as_error(run_server, caplog):
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        try:
            await receive()
            await receive()  # http.disconnect
            await send({"type": "http.response.start", "status": 200, "headers": []})
        finally:
            done.set()

    with run_server(app) as server, caplog.at_level(logging.DEBUG):
        with RawConnection(server) as conn:
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert done.wait(TIMEOUT)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_receive_after_response_is_disconnect(run_server):
    seen = []

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await read_body(receive)
            await send_text(send, b"ok")
            seen.append(await receive())

    with run_server(app) as server:
        assert httpx.get(server.url).status_code == 200
    assert seen == [{"type": "http.disconnect"}]


def test_send_returns_a_coroutine_that_tasks_and_awaits_take(run_server):
    """send is an awaitable callable (ASGI); what it returns is also a coroutine, so apps and
    frameworks that hand it to asyncio.create_task / ensure_future / wait_for still work."""
    seen = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await read_body(receive)
        start = send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        seen.append(asyncio.iscoroutine(start))
        seen.append(await asyncio.create_task(start))
        seen.append(await asyncio.wait_for(send({"type": "http.response.body", "body": b"o", "more_body": True}), TIMEOUT))
        seen.append(await asyncio.ensure_future(send({"type": "http.response.body", "body": b"k", "more_body": True})))
        seen.append(await send({"type": "http.response.body", "body": b"!!!"}))
        seen.append(await send({"type": "http.response.body", "body": b"ignored"}))  # complete: ignored

    with run_server(app) as server:
        response = httpx.get(server.url)
    assert (response.status_code, response.content) == (200, b"ok!!!")
    assert seen == [True, None, None, None, None, None]


@pytest.mark.parametrize("module", ["asgiws.asgi._bridge", "asgiws.asgi._bridge_py"])
def test_the_finished_send_behaves_as_a_coroutine_that_returns_at_once(module):
    """FINISHED (what send() returns when nothing waits) against a native coroutine whose body
    is `return None`, not started: the same answers to send, throw and close (each asked of a
    fresh native one; FINISHED is shared, so it answers the same every time)."""
    finished = pytest.importorskip(module, reason="the extensions are not built").FINISHED

    async def nothing():
        return None

    for coroutine in (nothing(), finished, finished):
        assert asyncio.iscoroutine(coroutine)
        with pytest.raises(StopIteration) as stop:
            coroutine.send(None)
        assert stop.value.value is None
    for coroutine in (nothing(), finished):
        with pytest.raises(ValueError, match="^$"):
            coroutine.throw(ValueError)
    for coroutine in (nothing(), finished):
        with pytest.raises(KeyError, match="k"):
            coroutine.throw(KeyError("k"))
    for coroutine in (nothing(), finished):
        assert coroutine.close() is None

    async def awaits():
        return [await finished, await finished, await asyncio.create_task(finished)]

    assert asyncio.run(awaits()) == [None, None, None]


def test_unexpected_message_is_500(run_server):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.body", "body": b"no start"})

    with run_server(app) as server:
        assert httpx.get(server.url).status_code == 500


# -- upgrades ------------------------------------------------------------------------------------


def test_non_websocket_upgrade_is_served_as_http(run_server):
    with run_server(echo_app) as server, RawConnection(server) as conn:
        conn.send(
            b"POST /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert conn.read_response().body == b"POST /h2c hello"
        assert conn.read_response().body == b"GET /next "


def test_non_websocket_upgrade_with_chunked_body(run_server):
    with run_server(echo_app) as server, RawConnection(server) as conn:
        conn.send(b"POST /u HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")  # fmt: skip
        assert conn.read_response().body == b"POST /u abc"


@pytest.mark.anyio
async def test_websocket_upgrade_is_handed_over(run_server):
    pytest.importorskip("asgiws.asgi.websocket", reason="the WebSocket bridge is not built yet")
    websockets_client = pytest.importorskip("websockets.asyncio.client")

    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": "echo:" + message["text"]})
            await receive()
        elif scope["type"] == "http":
            await send_text(send, b"http")

    with run_server(app) as server:
        async with websockets_client.connect(server.ws_url + "/ws") as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "echo:hi"
        async with httpx.AsyncClient() as client:  # and plain HTTP still works next to it
            assert (await client.get(server.url)).text == "http"


def test_websocket_upgrade_after_pipelined_request_waits_its_turn(run_server):
    pytest.importorskip("asgiws.asgi.websocket", reason="the WebSocket bridge is not built yet")

    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await receive()
        elif scope["type"] == "http":
            await send_text(send, b"first")

    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert conn.read_response().body == b"first"
        assert conn.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101")


# -- access log ----------------------------------------------------------------------------------


def test_access_log_line(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws.access"):
        with run_server(echo_app) as server:
            httpx.get(server.url + "/some/path?q=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "asgiws.access"]
    assert len(lines) == 1
    # uvicorn's line, then the response body's size and the time from the request's head to its last byte.
    assert re.fullmatch(r'127\.0\.0\.1:\d+ - "GET /some/path\?q=1 HTTP/1\.1" 200 \d+ B \d+\.\dms', lines[0]), lines


def test_access_log_off(run_server, caplog):
    with caplog.at_level(logging.INFO, logger="asgiws.access"):
        with run_server(echo_app, access_log=False) as server:
            httpx.get(server.url)
    assert not [r for r in caplog.records if r.name == "asgiws.access"]


# -- shutdown ------------------------------------------------------------------------------------


def test_graceful_shutdown_finishes_response_in_flight(run_server):
    gate = threading.Event()
    entered = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] == "http":
            entered.set()
            await asyncio.to_thread(gate.wait, TIMEOUT)
            await send_text(send, b"finished")

    with run_server(app) as server, RawConnection(server) as conn, RawConnection(server) as idle:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(TIMEOUT)
        server.stop()
        assert idle.at_eof()  # idle connections close at once
        gate.set()
        response = conn.read_response()
        assert response.body == b"finished"
        assert response.headers["connection"] == "close"
        assert conn.at_eof()


def test_graceful_shutdown_timeout_cancels_app(run_server):
    cancelled = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] == "http":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    with run_server(app, timeout_graceful_shutdown=0.2) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        while not server.server.server_state.tasks:
            time.sleep(0.01)
        server.stop()
        assert conn.at_eof()
        assert cancelled.wait(TIMEOUT)


# -- frameworks ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_starlette_app(run_server):
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    @asynccontextmanager
    async def lifespan(app):
        yield {"greeting": "hello"}

    async def hello(request: Request):
        return JSONResponse({"greeting": request.state.greeting, "name": request.path_params["name"],
                             "q": request.query_params.get("q")})  # fmt: skip

    async def upload(request: Request):
        return PlainTextResponse(str(len(await request.body())))

    async def stream(request: Request):
        async def numbers():
            for i in range(5):
                yield f"{i}\n"

        return StreamingResponse(numbers(), media_type="text/plain")

    app = Starlette(routes=[Route("/hello/{name}", hello), Route("/upload", upload, methods=["POST"]),
                            Route("/stream", stream)], lifespan=lifespan)  # fmt: skip
    with run_server(app, lifespan="on") as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.get("/hello/w%C3%B6rld", params={"q": "a b"})
            assert response.json() == {"greeting": "hello", "name": "wörld", "q": "a b"}
            assert (await client.post("/upload", content=b"z" * 300_000)).text == "300000"
            assert (await client.get("/stream")).text == "0\n1\n2\n3\n4\n"
            assert (await client.get("/missing")).status_code == 404


class Item(BaseModel):  # module level: FastAPI resolves the (string) annotation from here
    name: str
    price: float


@pytest.mark.anyio
async def test_fastapi_app(run_server):
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str = ""):
        return {"item_id": item_id, "q": q}

    @app.post("/items")
    async def create_item(item: Item):
        return {"name": item.name, "double": item.price * 2}

    with run_server(app, root_path="") as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/items/42", params={"q": "x"})).json() == {"item_id": 42, "q": "x"}
            created = await client.post("/items", json={"name": "pen", "price": 1.5})
            assert created.json() == {"name": "pen", "double": 3.0}
            assert (await client.get("/items/notanint")).status_code == 422
            assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")


def test_asgi2_app_is_wrapped(run_server):
    class App:
        def __init__(self, scope):
            self.scope = scope

        async def __call__(self, receive, send):
            if self.scope["type"] == "http":
                await send_text(send, b"asgi2")

    with run_server(App) as server:
        assert httpx.get(server.url).text == "asgi2"


def test_websocket_handshake_without_connection_upgrade_goes_to_websocket_layer(run_server):
    pytest.importorskip("asgiws.asgi.websocket", reason="the WebSocket bridge is not built yet")
    app, scopes = scope_recorder()
    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
        assert conn.read_response().status == 400  # an invalid handshake, answered by the WebSocket layer
    assert scopes == []  # never shown to the http app
