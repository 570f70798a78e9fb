"""WebSocket over real sockets: the handshake, the ASGI contract (spec 2.5), the protocol.

A real asgiws server (in-process, port 0) and real clients: the `websockets` sync client, the
aiohttp client, and raw sockets for bytes no client library would send.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import gc
import logging
import os
import socket
import threading
import time
import zlib

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from asgiws.codec import FrameParser, build_close_payload, build_frame, parse_close_payload
from asgiws.asgi import ClientDisconnected, bridge

TIMEOUT = 10.0
MASK = b"\x0a\x0b\x0c\x0d"


# -- apps ---------------------------------------------------------------------------------------


async def echo_app(scope, receive, send):
    if scope["type"] != "websocket":
        return await plain_http(scope, receive, send)
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def plain_http(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class Recorder:
    """An app built from a coroutine, which records what it saw for the test to assert on."""

    def __init__(self, body):
        self.body = body
        self.events = []
        self.scope = None
        self.done = threading.Event()
        self.error = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await plain_http(scope, receive, send)
        self.scope = scope

        async def recording_receive():
            message = await receive()
            self.events.append(message)
            return message

        try:
            await self.body(recording_receive, send)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.done.set()


# -- raw socket client --------------------------------------------------------------------------


class RawClient:
    """A WebSocket client on a plain socket: it sends exactly the bytes a test gives it."""

    def __init__(self, server, path="/", headers=None, key=None, handshake=True):
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        self.parser = FrameParser(is_server=False, max_size=1 << 26)
        self.pending = []
        self.rest = b""
        if handshake:
            self.key = key or base64.b64encode(os.urandom(16))
            lines = [
                f"GET {path} HTTP/1.1", "Host: test", "Upgrade: websocket", "Connection: Upgrade",
                f"Sec-WebSocket-Key: {self.key.decode()}", "Sec-WebSocket-Version: 13",
            ] + list(headers or [])
            self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())
            self.status, self.response_headers = self.read_head()

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_head(self):
        data = self.rest
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed during the response head: {data!r}")
            data += chunk
        head, _, self.rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def read_body_to_eof(self):
        data = self.rest
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    def send_frame(self, opcode, payload=b"", fin=True, rsv1=False):
        self.send_raw(build_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=MASK))

    def recv_frame(self):
        """The next frame from the server, or None at EOF."""
        if self.rest:
            self.pending.extend(self.parser.feed_data(self.rest))
            self.rest = b""
        while not self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.pending.extend(self.parser.feed_data(chunk))
        return self.pending.pop(0)

    def recv_close(self):
        """Skip to the server's Close frame: (code, reason)."""
        while True:
            frame = self.recv_frame()
            assert frame is not None, "connection closed without a Close frame"
            if frame.opcode == 8:
                return parse_close_payload(frame.payload)

    def assert_eof(self):
        data = self.sock.recv(65536)
        assert data == b"", data

    def close(self):
        self.sock.close()


def assert_still_serving(server):
    """Every other connection keeps being served."""
    with connect(server.ws_url + "/other", open_timeout=TIMEOUT) as ws:
        ws.send("still here")
        assert ws.recv(TIMEOUT) == "still here"


# -- the handshake ------------------------------------------------------------------------------


BAD_HANDSHAKES = [
    # (request lines, expected status)
    (["POST / HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
      "Content-Length: 0"], 400),
    (["GET / HTTP/1.0", "Upgrade: websocket", "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"], 400),
    (["GET / HTTP/1.1", "Upgrade: websocket", "Connection: keep-alive",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"], 400),
    (["GET / HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
      "Sec-WebSocket-Version: 13"], 400),
    (["GET / HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
      "Sec-WebSocket-Key: short", "Sec-WebSocket-Version: 13"], 400),
    (["GET / HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="], 400),
    (["GET / HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 8"], 426),
]


@pytest.mark.parametrize("lines, status", BAD_HANDSHAKES)
def test_bad_handshake_status(run_server, lines, status):
    with run_server(echo_app) as server:
        client = RawClient(server, handshake=False)
        client.send_raw(("\r\n".join(lines + ["Host: test"]) + "\r\n\r\n").encode())
        got, headers = client.read_head()
        assert got == status
        if status == 426:
            assert headers[b"sec-websocket-version"] == b"13"
        assert headers[b"server"] == b"asgiws" and headers[b"date"].endswith(b" GMT")
        client.close()
        assert_still_serving(server)


def test_accept_key_and_101(run_server):
    with run_server(echo_app) as server:
        client = RawClient(server, key=b"dGhlIHNhbXBsZSBub25jZQ==")
        assert client.status == 101
        assert client.response_headers[b"sec-websocket-accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert client.response_headers[b"upgrade"].lower() == b"websocket"
        # The fields every response from the server carries (RFC 9110 §6.6.1, §10.2.4).
        assert client.response_headers[b"server"] == b"asgiws"
        assert email.utils.parsedate_to_datetime(client.response_headers[b"date"].decode())
        client.close()


def test_app_headers_on_accept_replace_server_and_date(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept",
                    "headers": [(b"server", b"mine"), (b"date", b"Thu, 01 Jan 1970 00:00:00 GMT")]})
        await receive()

    with run_server(Recorder(body)) as server:
        client = RawClient(server)
        assert client.status == 101
        assert client.response_headers[b"server"] == b"mine"
        assert client.response_headers[b"date"] == b"Thu, 01 Jan 1970 00:00:00 GMT"
        client.close()


def test_scope(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "chat.v2",
                    "headers": [(b"x-accepted", b"yes")]})
        await receive()

    app = Recorder(body)
    with run_server(app, root_path="/root") as server:
        with connect(server.ws_url + "/caf%C3%A9/x?q=1&r=%20", subprotocols=["chat.v1", "chat.v2"],
                     additional_headers={"X-Custom": "1"}, open_timeout=TIMEOUT) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.response.headers["x-accepted"] == "yes"
        assert app.done.wait(TIMEOUT)
    scope = app.scope
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/root/café/x"  # path includes root_path, as uvicorn and Starlette read it
    assert scope["raw_path"] == b"/root/caf%C3%A9/x"
    assert scope["query_string"] == b"q=1&r=%20"
    assert scope["root_path"] == "/root"
    assert scope["subprotocols"] == ["chat.v1", "chat.v2"]
    assert (b"x-custom", b"1") in [tuple(h) for h in scope["headers"]]
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ["127.0.0.1", server.port] or scope["server"] == ("127.0.0.1", server.port)
    assert "websocket.http.response" in scope["extensions"]


# -- the ASGI contract --------------------------------------------------------------------------


def test_close_before_accept_is_403(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    with run_server(Recorder(body)) as server:
        with pytest.raises(InvalidStatus) as info:
            connect(server.ws_url, open_timeout=TIMEOUT)
        assert info.value.response.status_code == 403


def test_denial_response(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"x-why", b"token")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})

    with run_server(Recorder(body)) as server:
        client = RawClient(server)
        assert client.status == 401
        assert client.response_headers[b"x-why"] == b"token"
        assert client.response_headers[b"server"] == b"asgiws" and b"date" in client.response_headers
        assert client.read_body_to_eof() == b"no entry"


def test_app_error_before_accept_is_500(run_server, caplog):
    async def body(receive, send):
        await receive()
        raise RuntimeError("boom")

    with run_server(Recorder(body)) as server:
        assert RawClient(server).status == 500
        assert RawClient(server).status == 500  # and the server goes on serving


def test_app_returning_without_accept_is_500(run_server):
    async def body(receive, send):
        await receive()

    with run_server(Recorder(body)) as server:
        assert RawClient(server).status == 500


def test_app_error_after_accept_closes_1011(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("boom")

    with run_server(Recorder(body)) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            ws.send("trigger")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(TIMEOUT)
            assert info.value.rcvd.code == 1011


def test_app_close_with_code_and_reason(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4001, "reason": "go away"})
        message = await receive()
        assert message == {"type": "websocket.disconnect", "code": 4001, "reason": "go away"}

    app = Recorder(body)
    with run_server(app) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(TIMEOUT)
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "go away")
        assert app.done.wait(TIMEOUT)
    assert app.error is None


def test_disconnect_carries_peer_code_and_reason_exactly_once(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        with pytest.raises(ClientDisconnected):
            await receive()

    app = Recorder(body)
    with run_server(app) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            ws.close(4002, "bye now")
        assert app.done.wait(TIMEOUT)
    assert app.error is None
    assert app.events[-1] == {"type": "websocket.disconnect", "code": 4002, "reason": "bye now"}
    assert sum(e["type"] == "websocket.disconnect" for e in app.events) == 1


def test_disconnect_1005_for_an_empty_close(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    app = Recorder(body)
    with run_server(app) as server:
        client = RawClient(server)
        client.send_frame(8)
        assert client.recv_close() == (1005, "")
        assert app.done.wait(TIMEOUT)
    assert app.events[-1]["code"] == 1005


def test_disconnect_1006_when_tcp_drops(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    app = Recorder(body)
    with run_server(app) as server:
        client = RawClient(server)
        client.close()
        assert app.done.wait(TIMEOUT)
    assert app.events[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


def test_send_after_close_raises_oserror_without_error_log(run_server, caplog):
    seen = {}

    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await receive()  # the disconnect
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            seen["exc"] = exc
            raise

    app = Recorder(body)
    with caplog.at_level(logging.DEBUG, logger="asgiws"):
        with run_server(app) as server:
            with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
                ws.close()
            assert app.done.wait(TIMEOUT)
    assert isinstance(seen["exc"], ClientDisconnected)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "messages",
    [
        [{"type": "websocket.send", "text": "before accept"}],
        [{"type": "websocket.accept"}, {"type": "websocket.accept"}],
        [{"type": "websocket.accept"}, {"type": "websocket.http.response.start", "status": 400}],
    ],
    ids=["send-before-accept", "accept-twice", "denial-after-accept"],
)
def test_out_of_order_message_is_a_clear_error(run_server, messages):
    async def body(receive, send):
        await receive()
        for message in messages:
            await send(message)

    app = Recorder(body)
    with run_server(app) as server:
        client = RawClient(server)
        if client.status == 101:
            assert client.recv_close()[0] == 1011
        else:
            assert client.status == 500
        assert app.done.wait(TIMEOUT)
    assert "Unexpected ASGI message" in str(app.error)


def test_subprotocol_and_headers_on_accept_via_aiohttp(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "b",
                    "headers": [(b"set-cookie", b"k=v")]})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async def client(url):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            async with session.ws_connect(url, protocols=["a", "b"]) as ws:
                assert ws.protocol == "b"
                await ws.close()

    with run_server(Recorder(body)) as server:
        asyncio.run(client(server.ws_url))


# -- messages and the protocol ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 1 << 20])
def test_echo_sizes(run_server, size):
    with run_server(echo_app) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT, max_size=None) as ws:
            data = os.urandom(size)
            ws.send(data)
            assert ws.recv(TIMEOUT) == data
            text = "é" * (size // 2)
            ws.send(text)
            assert ws.recv(TIMEOUT) == text


def test_receive_and_send_work_as_tasks_and_survive_cancellation(run_server):
    """receive() is a compiled coroutine and send() returns one (a shared finished coroutine when
    it need not wait): apps (Django Channels does this) wrap them in tasks, and a receive()
    cancelled by a timeout loses no message."""
    got_timeout = threading.Event()

    async def body(receive, send):
        assert (await asyncio.create_task(receive()))["type"] == "websocket.connect"
        await asyncio.create_task(send({"type": "websocket.accept"}))
        try:
            await asyncio.wait_for(receive(), 0.05)  # nothing sent yet: cancelled
        except asyncio.TimeoutError:
            got_timeout.set()
        while True:
            task = asyncio.create_task(receive())
            done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
            message = task.result()
            if message["type"] == "websocket.disconnect":
                return
            if message["text"] == "two":
                await asyncio.create_task(send({"type": "websocket.send", "text": message["text"]}))
            else:
                await asyncio.ensure_future(send({"type": "websocket.send", "text": message["text"]}))

    app = Recorder(body)
    with run_server(app) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            assert got_timeout.wait(TIMEOUT)
            for text in ("one", "two", "three"):
                ws.send(text)
                assert ws.recv(TIMEOUT) == text
        assert app.done.wait(TIMEOUT)
    assert app.error is None


def test_concurrent_receive_calls_each_get_a_message(run_server):
    """Three tasks in receive() at once: each message goes to one of them, none is lost, the
    one left waiting when the client goes away gets websocket.disconnect, and a receive() after
    that raises."""
    results = []

    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        tasks = [asyncio.create_task(receive()) for _ in range(3)]
        await asyncio.sleep(0)  # all three are waiting now
        await send({"type": "websocket.send", "text": "all waiting"})
        for message in await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT):
            results.append(message["type"])
        try:
            await receive()
        except ClientDisconnected:
            results.append("ClientDisconnected")

    app = Recorder(body)
    with run_server(app) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            assert ws.recv(TIMEOUT) == "all waiting"
            ws.send("a")
            ws.send("b")
        assert app.done.wait(TIMEOUT)
    assert app.error is None
    assert sorted(results[:3]) == ["websocket.disconnect", "websocket.receive", "websocket.receive"]
    assert results[3] == "ClientDisconnected"


def test_receive_returns_a_coroutine_stepped_as_a_native_one_is(run_server):
    """What receive() returns (compiled: a Receiving object, not an `async def`'s coroutine)
    answers send, throw and close as a native coroutine does, by hand as well as under await:
    it yields the future it waits on, returns the event in StopIteration, cannot be awaited
    twice, and one closed or thrown into while waiting leaves no waiter behind that would take
    the next message."""
    seen = []

    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        unstarted = receive()
        assert asyncio.iscoroutine(unstarted)
        assert type(unstarted).__name__ == ("Receiving" if bridge.COMPILED else "coroutine")
        unstarted.close()
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            await unstarted
        with pytest.raises(ValueError):
            receive().throw(ValueError)
        # Nothing queued: the first step yields the pending future it waits on.
        for stop in ("close", "throw", "drop"):
            waiting = receive()
            future = waiting.send(None)
            assert asyncio.isfuture(future) and not future.done()
            if stop == "close":
                waiting.close()
            elif stop == "throw":
                with pytest.raises(KeyError):
                    waiting.throw(KeyError("k"))
            else:  # freed while waiting, as a dropped coroutine is closed
                del waiting
                gc.collect()
                continue
            with pytest.raises(RuntimeError):
                waiting.send(None)
        await send({"type": "websocket.send", "text": "ready"})
        awaited = receive()
        seen.append((await awaited)["text"])  # "one": the closed ones did not take it
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            await awaited
        # By hand: the client sends "three" only once told to, after the first step.
        seen.append((await receive())["text"])
        stepped = receive()
        future = stepped.send(None)
        assert asyncio.isfuture(future) and not future.done()
        await send({"type": "websocket.send", "text": "now three"})
        # The future is marked as awaited (as a task receives it): wait for it done.
        await asyncio.wait({future}, timeout=TIMEOUT)
        with pytest.raises(StopIteration) as stop:
            stepped.send(None)
        seen.append(stop.value.value["text"])
        seen.append((await receive())["type"])

    done = threading.Event()
    errors = []

    async def app(scope, receive, send):  # the server's own receive (Recorder wraps it)
        if scope["type"] != "websocket":
            return await plain_http(scope, receive, send)
        try:
            await body(receive, send)
        except BaseException as exc:
            errors.append(exc)
            raise
        finally:
            done.set()

    with run_server(app) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            assert ws.recv(TIMEOUT) == "ready"
            ws.send("one")
            ws.send("two")
            assert ws.recv(TIMEOUT) == "now three"
            ws.send("three")
        assert done.wait(TIMEOUT)
    assert errors == []
    assert seen == ["one", "two", "three", "websocket.disconnect"]


def test_fragmented_messages_are_reassembled(run_server):
    with run_server(echo_app) as server:
        client = RawClient(server)
        client.send_frame(1, "frag".encode(), fin=False)
        client.send_frame(9, b"in between")
        client.send_frame(0, "mé".encode()[:2], fin=False)
        client.send_frame(0, "mé".encode()[2:] + b"nt")
        pong = client.recv_frame()
        assert (pong.opcode, pong.payload) == (0xA, b"in between")
        echo = client.recv_frame()
        assert (echo.opcode, echo.payload) == (1, "fragmént")


def test_unsolicited_pong_is_ignored(run_server):
    with run_server(echo_app) as server:
        client = RawClient(server)
        client.send_frame(0xA, b"unsolicited")
        client.send_frame(1, b"after")
        frame = client.recv_frame()
        assert (frame.opcode, frame.payload) == (1, "after")


def test_client_ping_is_answered(run_server):
    with run_server(echo_app) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            assert ws.ping(b"abc").wait(TIMEOUT)


PROTOCOL_VIOLATIONS = [
    # (frames as raw bytes, close code)
    (bytes([0x81 | 0x40, 0x80]) + MASK, 1002),  # RSV1 without permessage-deflate
    (bytes([0x81 | 0x20, 0x80]) + MASK, 1002),  # RSV2
    (bytes([0x81 | 0x10, 0x80]) + MASK, 1002),  # RSV3
    (bytes([0x83, 0x80]) + MASK, 1002),  # reserved data opcode
    (bytes([0x8C, 0x80]) + MASK, 1002),  # reserved control opcode
    (build_frame(9, b"x" * 126, mask=MASK), 1002),  # control frame over 125 bytes
    (build_frame(9, b"x", fin=False, mask=MASK), 1002),  # fragmented control frame
    (build_frame(1, b"unmasked"), 1002),  # client frame without a mask
    (bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1]) + MASK, 1002),  # 64-bit length, top bit
    (build_frame(0, b"x", mask=MASK), 1002),  # continuation with no message open
    (build_frame(1, b"a", fin=False, mask=MASK) + build_frame(2, b"b", mask=MASK), 1002),
    (build_frame(8, b"\x03", mask=MASK), 1002),  # close payload of one byte
    (build_frame(8, b"\x03\xee", mask=MASK), 1002),  # close code 1006 on the wire
    (build_frame(8, b"\x0b\xb7", mask=MASK), 1002),  # close code 2999
    (build_frame(8, b"\x03\xe8\xc0\xaf", mask=MASK), 1007),  # overlong UTF-8 in the reason
    (build_frame(1, b"\xf4\x90\x80\x80", mask=MASK), 1007),  # above U+10FFFF
    (build_frame(1, b"\xce", fin=False, mask=MASK) + build_frame(0, b"A", mask=MASK), 1007),
    (build_frame(2, b"x" * 2000, mask=MASK), 1009),  # over ws_max_size=1000
    (build_frame(2, b"x" * 600, fin=False, mask=MASK) + build_frame(0, b"x" * 600, mask=MASK), 1009),
]


@pytest.mark.parametrize("data, code", PROTOCOL_VIOLATIONS)
def test_protocol_violation_close_code(run_server, data, code):
    app = Recorder(lambda receive, send: echo_body(receive, send))
    with run_server(app, ws_max_size=1000) as server:
        client = RawClient(server)
        client.send_raw(data)
        assert client.recv_close()[0] == code
        client.assert_eof()  # the server closes TCP after failing the connection
        assert app.done.wait(TIMEOUT)
        assert app.events[-1]["type"] == "websocket.disconnect"
        assert app.events[-1]["code"] == code
        assert_still_serving(server)


async def echo_body(receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"),
                    "bytes": message.get("bytes")})


def test_messages_before_a_violation_are_echoed_first(run_server):
    with run_server(echo_app) as server:
        client = RawClient(server)
        client.send_raw(build_frame(1, b"one", mask=MASK) + build_frame(2, b"two", mask=MASK)
                        + bytes([0x85, 0x80]) + MASK)
        assert client.recv_frame().payload == "one"
        assert client.recv_frame().payload == b"two"
        assert client.recv_close()[0] == 1002


def test_the_close_for_a_violation_survives_a_peer_still_sending(run_server):
    # Autobahn 4.2.5 on a loaded machine: the peer's bytes behind the violation were still
    # arriving when the server closed TCP, so the kernel answered them with RST, and the RST
    # destroyed the echo and the Close before the client read them. The server now half-closes
    # (FIN after the Close) and reads on to drop what comes, so the client reads both, then EOF.
    junk = os.urandom(1 << 20)  # more than both kernels' socket buffers hold
    with run_server(echo_app) as server:
        client = RawClient(server)
        client.send_raw(build_frame(1, b"before", mask=MASK) + bytes([0x8F, 0x80]) + MASK + junk)
        assert client.recv_frame().payload == "before"
        assert client.recv_close()[0] == 1002
        client.assert_eof()
        assert_still_serving(server)


def test_lingering_after_a_violation_is_bounded(run_server, monkeypatch):
    # A peer that never stops sending after its violation is closed LINGER_TIMEOUT later: the
    # server read and dropped its bytes until then, and then dropped the connection.
    monkeypatch.setattr("asgiws.asgi.websocket.LINGER_TIMEOUT", 0.2)
    with run_server(echo_app) as server:
        client = RawClient(server)
        client.send_raw(bytes([0x8F, 0x80]) + MASK)
        assert client.recv_close()[0] == 1002
        client.assert_eof()
        deadline = time.monotonic() + TIMEOUT
        with pytest.raises(OSError):  # EPIPE or ECONNRESET once the server has closed
            while time.monotonic() < deadline:
                client.send_raw(b"\x00" * 65536)
        assert_still_serving(server)


def test_invalid_utf8_fails_on_its_fragment(run_server):
    with run_server(echo_app) as server:
        client = RawClient(server)
        client.send_frame(1, b"valid ", fin=False)
        client.send_frame(0, b"\xed\xa0\x80", fin=False)  # a surrogate; the message is not over
        assert client.recv_close()[0] == 1007


def test_close_handshake_initiated_by_client(run_server):
    with run_server(echo_app) as server:
        client = RawClient(server)
        client.send_frame(8, build_close_payload(1000, "done"))
        frame = client.recv_frame()
        assert frame.opcode == 8 and parse_close_payload(frame.payload)[0] == 1000
        client.assert_eof()  # the server closes TCP first


def test_the_close_echo_survives_a_peer_sending_behind_its_close(run_server):
    # Autobahn 7.1.x send frames behind their Close. The server half-closes after its echo and
    # drops what follows until the peer's FIN, so no reset destroys the echo (as in 4.2.5 above).
    junk = os.urandom(1 << 20)
    with run_server(echo_app) as server:
        client = RawClient(server)
        client.send_raw(build_frame(8, build_close_payload(1000, "done"), mask=MASK)
                        + build_frame(9, b"late", mask=MASK) + junk)
        frame = client.recv_frame()
        assert frame.opcode == 8 and parse_close_payload(frame.payload)[0] == 1000
        client.assert_eof()
        assert_still_serving(server)


def test_close_timeout_drops_a_peer_that_never_answers(run_server):
    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        assert (await receive())["code"] == 1006

    app = Recorder(body)
    with run_server(app, ws_close_timeout=0.3) as server:
        client = RawClient(server)
        assert client.recv_close()[0] == 1000
        client.assert_eof()  # no Close from us: the server drops TCP after the timeout
        assert app.done.wait(TIMEOUT)
    assert app.error is None


def test_keepalive_ping_and_timeout(run_server):
    app = Recorder(echo_body)
    with run_server(app, ws_ping_interval=0.2, ws_ping_timeout=0.3) as server:
        client = RawClient(server)
        frame = client.recv_frame()
        assert frame.opcode == 9  # a keepalive ping; we don't answer it
        assert client.recv_frame() in (None,) or client.recv_frame() is None
        assert app.done.wait(TIMEOUT)
    assert app.events[-1]["code"] == 1006


def test_keepalive_answered_keeps_connection(run_server):
    with run_server(echo_app, ws_ping_interval=0.1, ws_ping_timeout=0.2) as server:
        client = RawClient(server)
        for _ in range(4):
            frame = client.recv_frame()
            assert frame.opcode == 9
            client.send_frame(0xA, frame.payload)
        client.send_frame(1, b"alive")
        while (frame := client.recv_frame()).opcode == 9:
            client.send_frame(0xA, frame.payload)
        assert frame.payload == "alive"


def test_accept_deadline(run_server):
    async def body(receive, send):
        await receive()
        await asyncio.sleep(TIMEOUT)

    with run_server(Recorder(body), ws_accept_timeout=0.2, timeout_graceful_shutdown=0.5) as server:
        assert RawClient(server).status == 503


# -- permessage-deflate -------------------------------------------------------------------------


def test_permessage_deflate_with_websockets_client(run_server):
    with run_server(echo_app) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            assert "permessage-deflate" in ws.response.headers["sec-websocket-extensions"]
            for message in ["text " * 1000, b"\x00" * 70000, "", os.urandom(3000)]:
                ws.send(message)
                assert ws.recv(TIMEOUT) == message


def test_permessage_deflate_with_aiohttp_client(run_server):
    async def client(url):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            async with session.ws_connect(url, compress=15) as ws:
                assert ws.compress
                for _ in range(3):
                    await ws.send_str("compressed " * 100)
                    assert (await ws.receive_str(timeout=TIMEOUT)) == "compressed " * 100

    with run_server(echo_app) as server:
        asyncio.run(client(server.ws_url))


def test_permessage_deflate_off(run_server):
    with run_server(echo_app, ws_per_message_deflate=False) as server:
        with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            assert "sec-websocket-extensions" not in ws.response.headers
            ws.send("plain")
            assert ws.recv(TIMEOUT) == "plain"


def test_compressed_bomb_closes_1009(run_server):
    with run_server(echo_app, ws_max_size=1 << 16) as server:
        client = RawClient(server, headers=["Sec-WebSocket-Extensions: permessage-deflate"])
        assert b"permessage-deflate" in client.response_headers[b"sec-websocket-extensions"]
        compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
        bomb = (compressor.compress(b"\x00" * (64 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        assert len(bomb) < 1 << 16
        client.send_frame(2, bomb, rsv1=True)
        assert client.recv_close()[0] == 1009


def test_keepalive_does_not_drop_a_live_client_while_reading_is_paused(run_server):
    """An app that stops receiving pauses reading; the client's Pongs then cannot be read, so
    the keepalive must not take their absence for a dead peer."""
    gate = threading.Event()

    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, TIMEOUT)
        count = 0
        while (await receive())["type"] == "websocket.receive":
            count += 1
            if count == 40:
                await send({"type": "websocket.send", "text": "got 40"})

    app = Recorder(body)
    with run_server(app, ws_ping_interval=0.1, ws_ping_timeout=0.2, ws_read_high_water=65536) as server:
        client = RawClient(server)
        for _ in range(40):
            client.send_frame(2, b"x" * 32768)  # 1.25 MiB: reading pauses
        threading.Timer(1.0, gate.set).start()  # the app resumes after 5 ping timeouts
        while (frame := client.recv_frame()).opcode == 9:
            client.send_frame(0xA, frame.payload)
        assert (frame.opcode, frame.payload) == (1, "got 40")
