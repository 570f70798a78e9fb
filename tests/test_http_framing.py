"""HTTP/1.1 message framing (RFC 9112 §3.2, §6): one test per violation, each asserting the exact
status the server answers and that it then closes the connection; and the framing that is fine
still being served. Raw sockets, real server."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from conftest import RawConnection, TIMEOUT, warnings_logged


async def read_body(receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("disconnected")
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def recording_app():
    """An echo app that records the scope types it was called with."""
    calls = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return
        calls.append(scope["type"])
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"%s %s" % (scope["method"].encode(), body)})

    return app, calls


def assert_answered_and_closed(conn: RawConnection, status: int):
    response = conn.read_response()
    assert response.status == status, response
    assert response.headers["connection"] == "close"
    assert conn.at_eof()
    return response


def no_warnings(caplog) -> None:
    """A peer's mistake is logged at info/debug, never as a warning or an error."""
    assert not warnings_logged(caplog)


# -- Host (RFC 9112 §3.2) ------------------------------------------------------------------------


def test_http_1_1_request_without_host_is_400(run_server, caplog):
    app, calls = recording_app()
    with caplog.at_level(logging.DEBUG), run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n")
        assert assert_answered_and_closed(conn, 400).body == b"Missing Host header"
    assert calls == []
    no_warnings(caplog)


def test_http_1_0_request_without_host_is_served(run_server):
    app, calls = recording_app()
    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.read_response().status == 200
    assert calls == ["http"]


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_two_host_headers_are_400(run_server, version, caplog):
    app, calls = recording_app()
    with caplog.at_level(logging.DEBUG), run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/" + version + b"\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
        assert assert_answered_and_closed(conn, 400).body == b"More than one Host header"
    assert calls == []
    no_warnings(caplog)


def test_websocket_handshake_with_two_host_headers_is_400_not_handed_over(run_server):
    app, calls = recording_app()
    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(
            b"GET /ws HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert_answered_and_closed(conn, 400)
    assert calls == []  # the WebSocket layer (and so the app) never saw it


def test_websocket_handshake_without_host_is_400(run_server):
    app, calls = recording_app()
    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert_answered_and_closed(conn, 400)
    assert calls == []


def test_bad_host_after_pipelined_request_is_answered_in_order(run_server):
    app, calls = recording_app()
    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
        assert conn.read_response().status == 200
        assert_answered_and_closed(conn, 400)
    assert calls == ["http"]


# -- Transfer-Encoding (RFC 9112 §6.1, §6.3) -----------------------------------------------------


@pytest.mark.parametrize(
    "transfer_encoding",
    [b"xchunked", b"gzip", b"chunked, gzip", b"chunked, chunked", b"identity", b""],
    ids=["xchunked", "gzip", "chunked-then-gzip", "chunked-twice", "identity", "empty"],
)
def test_transfer_encoding_not_ending_in_chunked_is_400(run_server, transfer_encoding, caplog):
    app, calls = recording_app()
    with caplog.at_level(logging.DEBUG), run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + transfer_encoding + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        assert_answered_and_closed(conn, 400)
    assert calls == []
    no_warnings(caplog)


@pytest.mark.parametrize(
    "fields",
    [b"Transfer-Encoding: gzip, chunked\r\n", b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"],
    ids=["one-line", "two-lines"],
)
def test_unimplemented_coding_before_chunked_is_501(run_server, fields, caplog):
    app, calls = recording_app()
    with caplog.at_level(logging.DEBUG), run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n3\r\nabc\r\n0\r\n\r\n")
        response = assert_answered_and_closed(conn, 501)
        assert response.body == b"Transfer coding gzip not implemented"
    assert calls == []  # the coded body is never handed to the app as if it were plain
    no_warnings(caplog)


def test_chunked_in_any_case_is_served(run_server):
    app, calls = recording_app()
    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        assert conn.read_response().body == b"POST abc"


def test_chunk_size_overflow_before_the_response_is_400(run_server, caplog):
    disconnected = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()  # the request was answered by the server; the app learns it is over

    with caplog.at_level(logging.DEBUG), run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        conn.send(b"1" * 20 + b"\r\n")  # 2^80: more than any size llhttp can count
        assert_answered_and_closed(conn, 400)
        assert disconnected.wait(TIMEOUT)
    no_warnings(caplog)


def test_chunk_size_overflow_after_the_response_started_closes(run_server, caplog):
    started = threading.Event()
    outcome = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        started.set()
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
            await send({"type": "http.response.body", "body": b"more", "more_body": True})
        except OSError as exc:
            outcome.append(type(exc).__name__)
        else:
            outcome.append("sent")

    with caplog.at_level(logging.DEBUG), run_server(app) as server, RawConnection(server) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert started.wait(TIMEOUT)
        conn.send(b"f" * 20 + b"\r\n")
        received = conn.read_to_eof()  # no second status line: only the response already begun
        assert received.startswith(b"HTTP/1.1 200 ") and received.count(b"HTTP/1.1") == 1
        assert b"partial" in received
    assert outcome == ["ClientDisconnected"]
    no_warnings(caplog)


def test_chunk_size_overflow_in_a_pipelined_request_is_400_after_the_one_before(run_server):
    gate = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.to_thread(gate.wait, TIMEOUT)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first"})

    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 20 + b"\r\n"
        )
        gate.set()
        assert conn.read_response().body == b"first"
        assert_answered_and_closed(conn, 400)
