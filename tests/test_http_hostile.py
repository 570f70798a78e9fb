"""HTTP/1.1 against hostile peers: what a client can make the server hold or do is bounded
(DESIGN.md, "Everything a peer can make us hold is bounded").

- A client that pipelines requests and never reads the responses is stopped being read: the
  server's memory stays flat, it accepts a bounded number of bytes, and other clients are served.
- A request body in 1-byte chunks to an app that never calls receive() pauses reading early (each
  chunk is counted with its overhead).
- A peer that reads nothing while a response waits for it is dropped after timeout_write_stall.
- Parsing a read in slices and parsing ahead only so far do not change what is served: many
  pipelined requests, bodies, big heads and upgrades across slice boundaries.

Memory is read from /proc/PID/status of a `python -m asgiws` process; the rest runs in-process.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from asgiws.http.protocol import BODY_CHUNK_OVERHEAD, FEED_SLICE, REQUEST_BODY_HIGH_WATER
from conftest import RawConnection, TIMEOUT, warnings_logged

APPS = Path(__file__).resolve().parent / "apps"
MiB = 1024 * 1024
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
FLOOD_SECONDS = 20.0

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def send_stream(sock: socket.socket, unit: bytes, sent: int, payload: bytes) -> int:
    """Send more of an endless repetition of `unit` (payload is unit * k), continuing where `sent`
    bytes left off, so a partial send never breaks a request in two. Returns bytes sent now."""
    offset = sent % len(unit)
    return sock.send(memoryview(payload)[offset:])


def pipeline_and_read(server, count: int, request: bytes = REQUEST) -> None:
    """Pipeline `count` requests from a thread while reading every response (warm-up)."""
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    sender = threading.Thread(target=sock.sendall, args=(request * count,), daemon=True)
    sender.start()
    seen, tail = 0, b""
    marker = b"HTTP/1.1 200 "
    while seen < count:
        data = sock.recv(1 << 20)
        assert data, f"closed after {seen} of {count} responses"
        window = tail + data
        seen += window.count(marker)
        tail = window[-(len(marker) - 1):]
    sender.join(TIMEOUT)
    sock.close()


# -- a client that pipelines and never reads --------------------------------------------------


@linux_only
def test_pipelining_client_that_never_reads_is_bounded(spawn_server):
    """The issue's flood: `GET /` pipelined for 20 s by a client that reads nothing. Before, the
    server accepted gigabytes and grew by hundreds of MiB; now reading stops once the responses
    fill the write buffer, so what it accepts is about the kernel's socket buffers."""
    with spawn_server("echo:app", "--lifespan", "off", "--no-access-log", app_dir=APPS) as server:
        pid = server.proc.pid
        pipeline_and_read(server, 50_000)  # first-use allocations go into the baseline
        with httpx.Client(timeout=TIMEOUT) as other:
            assert other.get(server.url).status_code == 200
            baseline = peak = memory_kib(pid)

            flood = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
            flood.settimeout(0.05)
            payload = REQUEST * (65536 // len(REQUEST))
            sent = probes = 0
            slowest = 0.0
            started = time.monotonic()
            next_probe = started
            while time.monotonic() - started < FLOOD_SECONDS:
                try:
                    sent += send_stream(flood, REQUEST, sent, payload)
                except socket.timeout:
                    pass
                if time.monotonic() >= next_probe:  # a second client is served all along
                    before = time.monotonic()
                    assert other.get(server.url).text == "ok"
                    slowest = max(slowest, time.monotonic() - before)
                    probes += 1
                    peak = max(peak, memory_kib(pid))
                    next_probe = before + 0.25
            rss = memory_kib(pid)
            peak = max(peak, rss)

            # The flooding connection is alive and served in order: its responses are there.
            flood.settimeout(TIMEOUT)
            head = b""
            while len(head) < 4096:
                chunk = flood.recv(4096)
                assert chunk
                head += chunk
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.count(b"HTTP/1.1 200 OK\r\n") > 10
            flood.close()

    growth_mib = (peak - baseline) / 1024
    print(f"\npipelined flood, {FLOOD_SECONDS:.0f} s, never read: server accepted {sent / MiB:.1f} MiB "
          f"({sent // len(REQUEST)} requests); RSS {baseline / 1024:.1f} -> peak {peak / 1024:.1f} MiB "
          f"(+{growth_mib:.2f}); second client: {probes} requests, slowest {slowest * 1000:.0f} ms")  # fmt: skip
    assert sent <= 32 * MiB, f"the server accepted {sent / MiB:.1f} MiB from a client that reads nothing"
    assert growth_mib <= 4, f"server RSS grew {growth_mib:.2f} MiB"
    assert probes >= FLOOD_SECONDS * 2
    assert slowest < 0.5, f"a request from another client took {slowest:.2f} s during the flood"


# -- request bodies ------------------------------------------------------------------------------


NEVER_RECEIVES = '''
import asyncio

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/ping":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"pong"})
        return
    await asyncio.Event().wait()  # never calls receive()
'''


@linux_only
@pytest.mark.parametrize("chunk_size", [1, 2])
def test_tiny_chunks_to_an_app_that_never_receives(spawn_server, tmp_path, chunk_size):
    """Each chunk is a list slot and, past one byte (CPython shares 1-byte bytes objects), a bytes
    object: ~56 B for 2 bytes of body. Counted by their length alone, 32,768-65,536 of them
    (up to ~2 MiB) would wait before reading paused; counted with their overhead, about 1,000."""
    (tmp_path / "never_receives.py").write_text(NEVER_RECEIVES)
    chunk = b"%x\r\n%s\r\n" % (chunk_size, b"a" * chunk_size)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with spawn_server("never_receives:app", "--lifespan", "off", "--timeout-graceful-shutdown", "1",
                      app_dir=tmp_path) as server:  # fmt: skip
        pid = server.proc.pid
        for _ in range(2):  # warm-up: the same kind of body, dropped with its connection
            with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
                sock.sendall(head + chunk * 20_000)
            assert httpx.get(server.url + "/ping", timeout=TIMEOUT).text == "pong"
        baseline = memory_kib(pid)

        sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        sock.sendall(head)
        sock.settimeout(1.0)
        payload = chunk * 10_000
        sent = 0
        with pytest.raises(socket.timeout):  # the server stops reading; the kernel buffers fill
            while sent < 256 * MiB:
                sent += send_stream(sock, chunk, sent, payload)
        growth_mib = (memory_kib(pid) - baseline) / 1024
        print(f"\n{chunk_size}-byte chunks, app never receives: client blocked after {sent / MiB:.1f} MiB "
              f"({sent // len(chunk)} chunks); server RSS +{growth_mib:.2f} MiB")  # fmt: skip
        assert sent < 32 * MiB
        assert growth_mib < 0.5, f"server RSS grew {growth_mib:.2f} MiB"
        assert httpx.get(server.url + "/ping", timeout=TIMEOUT).text == "pong"
        sock.close()


def test_body_chunks_count_their_overhead_against_the_high_water(run_server):
    """An app that does not read yet finds about 1,000 chunks waiting (+ one slice), not tens of
    thousands; once it reads, the whole body arrives."""
    gate = threading.Event()
    result = {}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.to_thread(gate.wait, TIMEOUT)
        first = await receive()
        result["first"] = len(first["body"])
        total = len(first["body"])
        more = first["more_body"]
        while more:
            message = await receive()
            total += len(message["body"])
            more = message["more_body"]
        result["total"] = total
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % total})

    count = 200_000
    with run_server(app) as server, RawConnection(server) as conn:
        body = b"1\r\na\r\n" * count + b"0\r\n\r\n"
        sender = threading.Thread(
            target=conn.sock.sendall,
            args=(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body,), daemon=True,
        )  # fmt: skip
        sender.start()
        time.sleep(0.5)  # bounded: the server reads up to its mark within milliseconds
        gate.set()
        assert conn.read_response().body == b"%d" % count
        sender.join(TIMEOUT)
    # What waited before the app first read: the mark in chunks, plus at most the slice parsed
    # past it (6 wire bytes per 1-byte chunk).
    mark = REQUEST_BODY_HIGH_WATER // (1 + BODY_CHUNK_OVERHEAD)
    assert mark < result["first"] <= mark + FEED_SLICE // 6 + 1, result


# -- a peer that reads nothing -------------------------------------------------------------------


def streaming_app(outcome: dict, done: threading.Event, chunk: int = 65536, limit: int = 1 << 40):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        try:
            while sent < limit:
                await send({"type": "http.response.body", "body": b"x" * chunk, "more_body": True})
                sent += chunk
            await send({"type": "http.response.body", "body": b""})
            outcome["completed"] = sent
        except OSError as exc:
            outcome["error"] = type(exc).__name__
            outcome["receive"] = (await receive())["type"]
        finally:
            done.set()

    return app


def test_write_stall_drops_a_peer_that_reads_nothing(run_server, caplog):
    outcome: dict = {}
    done = threading.Event()
    with caplog.at_level(logging.DEBUG), run_server(streaming_app(outcome, done), timeout_write_stall=0.5) as server:
        sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(REQUEST)
        started = time.monotonic()
        assert done.wait(TIMEOUT)  # and never reads
        elapsed = time.monotonic() - started
        sock.close()
    assert outcome == {"error": "ClientDisconnected", "receive": "http.disconnect"}
    assert elapsed >= 0.5
    records = [r for r in caplog.records if "read nothing" in r.getMessage()]
    assert records and all(r.levelno == logging.INFO for r in records)
    assert not warnings_logged(caplog)


def test_write_stall_spares_a_peer_that_reads_slowly(run_server):
    outcome: dict = {}
    done = threading.Event()
    total = 4 * MiB
    app = streaming_app(outcome, done, limit=total)
    with run_server(app, timeout_write_stall=0.5) as server, RawConnection(server) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.send(REQUEST)
        received = 0
        while not done.is_set() or received < total:
            data = conn.sock.recv(65536)
            if not data:
                break
            received += len(data)
            time.sleep(0.01)  # slow on purpose: about 6 MB/s at most
        assert done.wait(TIMEOUT)
    assert outcome == {"completed": total}


def test_write_stall_none_waits(run_server):
    outcome: dict = {}
    done = threading.Event()
    app = streaming_app(outcome, done, limit=8 * MiB)
    with run_server(app, timeout_write_stall=None) as server, RawConnection(server) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.send(REQUEST)
        assert not done.wait(1.0)  # held by backpressure, not dropped
        response = conn.read_response()
        assert len(response.body) == 8 * MiB
    assert outcome == {"completed": 8 * MiB}


def test_write_stall_drops_a_closing_connection_whose_peer_reads_nothing(run_server):
    """A `Connection: close` response whose bytes the peer never reads: close() waits for the
    buffer to drain, so without the watch the connection (and the app's send) would wait forever."""
    outcome = []
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"close")]})
        try:
            await send({"type": "http.response.body", "body": b"x" * (8 * MiB)})
        except OSError as exc:
            outcome.append(type(exc).__name__)
        else:
            outcome.append("returned")
        done.set()

    with run_server(app, timeout_write_stall=0.5, timeout_graceful_shutdown=1) as server:
        sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(REQUEST)
        dropped = done.wait(5)  # and never reads
        sock.close()
    assert dropped and outcome == ["returned"]  # send() returns: the response was complete


# -- write backpressure and pipelining ----------------------------------------------------------


def test_next_pipelined_request_waits_for_the_write_buffer_to_drain(run_server):
    started = []
    second_started = threading.Event()
    big = 8 * MiB

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        started.append(scope["path"])
        if scope["path"] == "/second":
            second_started.set()
        body = b"x" * big if scope["path"] == "/first" else b"second"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    with run_server(app) as server, RawConnection(server) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        # The first response is complete from the app's side, but its bytes wait for the client.
        assert not second_started.wait(1.0)
        assert started == ["/first"]
        assert len(conn.read_response().body) == big
        assert conn.read_response().body == b"second"
    assert started == ["/first", "/second"]


def test_many_pipelined_requests_in_one_write_are_all_answered_in_order(run_server):
    """Far more than the pipeline holds: parsed in batches from what was read, in order."""
    paths = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(scope["path"]))]})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    count = 3000
    with run_server(app) as server, RawConnection(server) as conn:
        requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count))
        threading.Thread(target=conn.send, args=(requests,), daemon=True).start()
        bodies = [conn.read_response().body for _ in range(count)]
    assert bodies == [b"/%d" % i for i in range(count)]
    assert paths == ["/%d" % i for i in range(count)]


def test_pipelined_bodies_across_slices(run_server):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message["body"])
            if not message["more_body"]:
                break
        body = b"".join(parts)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%s %d %d" % (scope["path"].encode(), len(body), sum(body))})

    requests, expected = [], []
    for i in range(300):
        body = bytes([i % 251]) * (i * 97 % 9000)
        if i % 2:
            requests.append(b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (i, len(body), body))
        else:
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[j:j + 700]), body[j:j + 700]) for j in range(0, len(body), 700))
            requests.append(b"POST /%d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n" % (i, chunks))
        expected.append(b"/%d %d %d" % (i, len(body), sum(body)))
    with run_server(app) as server, RawConnection(server) as conn:
        threading.Thread(target=conn.send, args=(b"".join(requests),), daemon=True).start()
        assert [conn.read_response().body for _ in range(len(expected))] == expected


def test_head_larger_than_a_slice(run_server):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            value = dict(scope["headers"]).get(b"x-big", b"")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"%d" % len(value)})

    with run_server(app, limit_max_head=16384) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 12000 + b"\r\n\r\n" + REQUEST)
        assert conn.read_response().body == b"12000"
        assert conn.read_response().body == b"0"  # the request after it, in the same read
    with run_server(app, limit_max_head=16384) as server, RawConnection(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        assert conn.read_response().status == 431
        assert conn.at_eof()


def test_websocket_upgrade_after_many_pipelined_requests_keeps_its_leftover(run_server):
    pytest.importorskip("asgiws.asgi.websocket", reason="the WebSocket bridge is not built yet")
    from asgiws.codec import OP_TEXT, FrameParser, build_frame

    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": "echo:" + message["text"]})
            await receive()
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

    count = 500
    key = base64.b64encode(os.urandom(16))
    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(
            REQUEST * count
            + b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
            + build_frame(OP_TEXT, b"hello", mask=b"\x01\x02\x03\x04")  # in the same write as the head
        )
        for _ in range(count):
            assert conn.read_response().body == b"ok"
        assert conn.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 101")
        parser = FrameParser(is_server=False, max_size=MiB)
        data = bytes(conn.buffer)  # what came with the 101
        frames = []
        while not frames:
            frames = [f for f in parser.feed_data(data) if f.opcode == OP_TEXT]
            data = b"" if frames else conn.sock.recv(65536)
        assert frames[0].payload in ("echo:hello", b"echo:hello")


def test_ignored_upgrade_with_body_after_many_pipelined_requests(run_server):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%s %s" % (scope["path"].encode(), body)})

    with run_server(app) as server, RawConnection(server) as conn:
        conn.send(
            REQUEST * 400
            + b"POST /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            + b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhello"
            + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        for _ in range(400):
            assert conn.read_response().body == b"/ "
        assert conn.read_response().body == b"/h2c hello"
        assert conn.read_response().body == b"/next "


def test_unread_body_is_dropped_once_the_response_is_complete(run_server):
    """An app that answers without reading a large body: the rest is read and dropped (not left
    holding reading paused), and the next request on the connection is served."""

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": scope["path"].encode()})

    size = 4 * MiB
    with run_server(app) as server, RawConnection(server) as conn:
        request = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
        sender = threading.Thread(target=conn.send, args=(request + b"x" * size + REQUEST,), daemon=True)
        sender.start()  # what arrives with the head fills the body buffer past its mark
        assert conn.read_response().body == b"/upload"
        assert conn.read_response().body == b"/"
        sender.join(TIMEOUT)
