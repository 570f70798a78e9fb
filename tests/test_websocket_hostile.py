"""A hostile WebSocket peer against a real server: every frame costs something, what it makes the
server hold is bounded in bytes, and it cannot stall the others.

One test per rule (DESIGN.md, "Everything a peer can make us hold is bounded"):

- a message's fragments are assembled into one buffer, and each fragment after the first counts
  `ws_frame_overhead` toward `ws_max_size`: empty or 1-byte fragments end in 1009, not in memory;
- queued messages count their payload plus an overhead each, so empty messages to an app that
  does not receive pause reading as large ones do;
- PONGs the peer does not read stop the server reading its Pings;
- a peer that reads nothing while the server has bytes for it is dropped after
  `timeout_write_stall` (the app sees 1006);
- a connection gets a bounded slice of each loop turn: another client is served while it floods.

Memory is read from the server's own bookkeeping here (the in-process server's protocol objects);
the RSS figures under full-size floods are in tests/floods.py and tests/test_stress.py.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import httpx
import pytest
from websockets.sync.client import connect

from asgiws.asgi.websocket import WebSocketProtocol

from test_websocket import MASK, RawClient, Recorder, assert_still_serving, echo_app
from asgiws.codec import build_frame

TIMEOUT = 10.0


def websocket_protocols(server):
    return [conn for conn in server.server.server_state.connections if isinstance(conn, WebSocketProtocol)]


def on_loop(server, fn):
    """fn() run on the server's loop thread; its result."""
    done = threading.Event()
    result = []
    server.call(lambda: (result.append(fn()), done.set()))
    assert done.wait(TIMEOUT)
    return result[0]


def send_until_blocked(sock, data, limit):
    """Send `data` over and over until the socket stops taking it (the server stopped reading
    and the kernel buffers are full) or `limit` bytes went out; the bytes sent."""
    sock.settimeout(0.5)
    sent = 0
    try:
        while sent < limit:
            sock.sendall(data)
            sent += len(data)
    except socket.timeout:
        pass
    finally:
        sock.settimeout(TIMEOUT)
    return sent


# -- fragments ------------------------------------------------------------------------------------


def test_empty_continuation_frames_close_1009(run_server):
    """With ws_max_size 64 KiB and 64 bytes per fragment, the 1024th empty continuation is over."""
    with run_server(echo_app, ws_max_size=65536, ws_frame_overhead=64) as server:
        client = RawClient(server)
        client.send_frame(2, b"", fin=False)
        client.send_raw(build_frame(0, b"", fin=False, mask=MASK) * 1100)
        assert client.recv_close() == (1009, "message over the maximum size")
        client.close()
        assert_still_serving(server)


def test_one_byte_fragments_are_assembled_into_one_message(run_server):
    payload = bytes(range(256)) * 40  # 10,240 fragments of one byte
    with run_server(echo_app) as server:
        client = RawClient(server)
        client.send_raw(b"".join(
            build_frame(0 if i else 2, payload[i:i + 1], fin=i == len(payload) - 1, mask=MASK)
            for i in range(len(payload))))  # fmt: skip
        frame = client.recv_frame()
        assert (frame.opcode, frame.payload) == (2, payload)
        client.close()


def test_one_byte_text_fragments_splitting_characters_and_pings_between(run_server):
    text = "é€😀" * 100
    data = text.encode()
    frames = []
    for i in range(len(data)):
        frames.append(build_frame(0 if i else 1, data[i:i + 1], fin=i == len(data) - 1, mask=MASK))
        if i % 100 == 0:
            frames.append(build_frame(9, b"p%d" % i, mask=MASK))
    with run_server(echo_app) as server:
        client = RawClient(server)
        client.send_raw(b"".join(frames))
        pongs = 0
        while (frame := client.recv_frame()).opcode == 0xA:
            pongs += 1
        assert (frame.opcode, frame.payload, pongs) == (1, text, len(range(0, len(data), 100)))
        client.close()


def test_sixty_four_thousand_fragments_fit_under_the_defaults(run_server):
    """Autobahn 9.4.1's shape: 4 MiB in 64-byte fragments (65,536 of them) is a valid message."""
    chunk = b"\x5a" * 64
    stream = build_frame(2, chunk, fin=False, mask=MASK) + build_frame(0, chunk, fin=False, mask=MASK) * 65534
    stream += build_frame(0, chunk, mask=MASK)
    with run_server(echo_app) as server:
        client = RawClient(server)
        threading.Thread(target=client.send_raw, args=(stream,), daemon=True).start()
        frame = client.recv_frame()
        assert frame.opcode == 2 and frame.payload == chunk * 65536
        client.close()


# -- queued messages ------------------------------------------------------------------------------


async def push_only(scope, receive, send):
    """Never receives on "/" (a push-only endpoint that pushes nothing); echoes elsewhere."""
    if scope["type"] != "websocket" or scope["path"] != "/":
        return await echo_app(scope, receive, send)
    await receive()
    await send({"type": "websocket.accept"})
    await asyncio.sleep(3600)


@pytest.mark.parametrize("payload", [b"", b"x", b"xyz"], ids=["empty", "1 byte", "3 bytes"])
def test_small_messages_to_an_app_that_does_not_receive_pause_reading(run_server, payload):
    high_water = 65536
    with run_server(push_only, ws_read_high_water=high_water, timeout_graceful_shutdown=0.1) as server:
        client = RawClient(server)
        frame = build_frame(2, payload, mask=MASK) * 4096
        sent = send_until_blocked(client.sock, frame, 256 * 1024 * 1024)
        assert sent < 64 * 1024 * 1024, "the server kept reading"
        (ws,) = websocket_protocols(server)
        queued, queued_bytes, paused = on_loop(server, lambda: (ws.queued_messages, ws.queued_bytes, ws.paused_for))
        # Reading paused at the mark, with at most one feed (1024 items) more behind it.
        assert paused & 1 and high_water < queued_bytes <= high_water + 1024 * (64 + len(payload))
        assert queued == queued_bytes // (64 + len(payload))
        assert_still_serving(server)
        client.close()


# -- the peer does not read --------------------------------------------------------------------


def test_pings_whose_pongs_are_not_read_stop_reading(run_server):
    with run_server(echo_app, ws_high_water=16384, timeout_write_stall=None) as server:
        client = RawClient(server)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ping = build_frame(9, b"p" * 125, mask=MASK) * 256
        sent = send_until_blocked(client.sock, ping, 512 * 1024 * 1024)
        assert sent < 64 * 1024 * 1024, "the server kept reading"
        (ws,) = websocket_protocols(server)
        paused, unsent = on_loop(server, lambda: (ws.paused_for, ws.transport.get_write_buffer_size()))
        assert paused & 2, paused  # the write buffer is full: reading stopped
        assert unsent < 16384 + 1024 * 127 + 65536, unsent  # the mark + one feed of PONGs
        assert_still_serving(server)
        client.close()


def test_write_stall_drops_a_peer_that_reads_nothing(run_server):
    got = {}

    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "bytes": b"x" * 65536})
        except OSError as exc:
            got["error"] = exc
        got["disconnect"] = await receive()

    app = Recorder(body)
    with run_server(app, timeout_write_stall=0.5) as server:
        client = RawClient(server)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        started = time.monotonic()
        assert app.done.wait(TIMEOUT)
        assert 0.5 <= time.monotonic() - started < 5
        assert isinstance(got["error"], OSError)
        assert got["disconnect"]["type"] == "websocket.disconnect" and got["disconnect"]["code"] == 1006
        client.close()
        assert httpx.get(server.url, timeout=TIMEOUT).text == "ok"


def test_a_slow_reader_that_keeps_reading_is_not_dropped(run_server):
    total = 64 * 65536

    async def body(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        for _ in range(64):
            await send({"type": "websocket.send", "bytes": b"x" * 65536})
        await send({"type": "websocket.close"})

    app = Recorder(body)
    with run_server(app, timeout_write_stall=0.3) as server:
        client = RawClient(server)
        received = 0
        while (frame := client.recv_frame()).opcode == 2:
            received += len(frame.payload)
            time.sleep(0.02)  # slower than the server writes: its buffer stays full, but drains
        assert frame.opcode == 8 and received == total
        client.close()


# -- fairness -----------------------------------------------------------------------------------


def test_one_flooding_connection_does_not_stall_the_others(run_server):
    """A client sends a flood of Pings and tiny messages as fast as it can (reading its PONGs and
    echoes on a thread); another client's echoes are answered meanwhile. Latencies are printed,
    not asserted (the machine is shared); liveness is."""
    with run_server(echo_app) as server:
        flooder = RawClient(server)
        stop = threading.Event()

        def drain():
            flooder.sock.settimeout(0.5)
            while not stop.is_set():
                try:
                    if not flooder.sock.recv(1 << 20):
                        return
                except OSError:
                    continue

        def flood():
            data = (build_frame(9, b"", mask=MASK) + build_frame(2, b"a", mask=MASK)) * 8192
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not stop.is_set():
                flooder.sock.sendall(data)

        threads = [threading.Thread(target=drain, daemon=True), threading.Thread(target=flood, daemon=True)]
        for thread in threads:
            thread.start()
        latencies = []
        with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            while threads[1].is_alive():
                started = time.monotonic()
                ws.send(b"side")
                assert ws.recv(TIMEOUT) == b"side"
                latencies.append(time.monotonic() - started)
                time.sleep(0.01)
        stop.set()
        flooder.close()
        latencies.sort()
        print(f"\nside echoes during the flood: {len(latencies)}, p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
              f"max {latencies[-1] * 1e3:.1f} ms")  # fmt: skip
        assert len(latencies) >= 10


# -- frames sent behind the handshake -----------------------------------------------------------


def handshake_with(server, frames):
    """A handshake with `frames` in the same write, before the 101 (RFC 6455 §4.1 says a client
    must wait; some do not). Returns the raw bytes the server sends until it closes or goes
    quiet."""
    request = (b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    sock.sendall(request + frames)
    sock.settimeout(1.0)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        pass
    sock.close()
    return data


def test_a_ping_behind_the_handshake_is_answered_after_the_101(run_server):
    with run_server(echo_app) as server:
        data = handshake_with(server, build_frame(9, b"early", mask=MASK) + build_frame(1, "hi", mask=MASK))
    head, _, frames = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), data
    assert frames == build_frame(0xA, b"early") + build_frame(1, "hi"), frames


def test_a_close_behind_the_handshake_is_answered_after_the_101(run_server):
    with run_server(echo_app) as server:
        data = handshake_with(server, build_frame(8, b"\x03\xe8", mask=MASK))
    head, _, frames = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), data
    assert frames == build_frame(8, b"\x03\xe8"), frames


def test_bytes_behind_an_unanswered_handshake_are_bounded(run_server):
    """Before the app accepts, what the client sends is held unparsed; past ws_read_high_water
    the server stops reading."""
    gate = threading.Event()

    async def body(receive, send):
        await receive()
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, TIMEOUT)
        await send({"type": "websocket.accept"})
        count = 0
        while (await receive())["type"] == "websocket.receive":
            count += 1
            if count == 2000:
                await send({"type": "websocket.send", "text": "got 2000"})

    app = Recorder(body)
    with run_server(app, ws_read_high_water=65536) as server:
        client = RawClient(server, handshake=False)
        request = (b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        client.send_raw(request)
        frames = build_frame(2, b"x" * 1024, mask=MASK) * 2000  # 2 MiB
        sender = threading.Thread(target=client.send_raw, args=(frames,), daemon=True)
        sender.start()
        deadline = time.monotonic() + TIMEOUT
        while not [ws for ws in websocket_protocols(server) if ws.paused_for & 8]:
            assert time.monotonic() < deadline, "reading did not pause before the accept"
            time.sleep(0.01)
        (ws,) = websocket_protocols(server)
        assert on_loop(server, lambda: ws.conn.parser.buffered) <= 65536 + 256 * 1024
        gate.set()
        assert client.read_head()[0] == 101
        while (frame := client.recv_frame()).opcode != 1:
            pass
        assert frame.payload == "got 2000"
        client.close()


# -- many connections lost at once ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_connections_lost_at_once_are_ended_a_batch_per_turn(run_server, how):
    """300 clients vanish in one go (as when a proxy restarts): libuv reports every FIN or reset
    in one loop iteration, but the sockets are closed after a FIN, and the apps woken (and the
    sessions logged), at most 64 connections per turn; every app gets its 1006."""
    from asgiws.asgi import websocket as ws_module

    lost_codes = []
    all_lost = threading.Event()
    count = 300

    async def app(scope, receive, send):
        if scope["path"] == "/other":
            return await echo_app(scope, receive, send)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        message = await receive()
        lost_codes.append(message.get("code"))
        if len(lost_codes) == count:
            all_lost.set()

    batches = []
    original = ws_module.ConnectionEnds._run

    def counting_run(self):
        batches.append(min(len(self.pending), ws_module._ENDS_PER_TURN))
        original(self)

    ws_module.ConnectionEnds._run = counting_run
    try:
        with run_server(app) as server:
            clients = [RawClient(server) for _ in range(count)]
            if how == "reset":  # SO_LINGER 0: close() sends RST
                for client in clients:
                    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            for client in clients:
                client.sock.close()
            assert all_lost.wait(TIMEOUT)
            assert lost_codes == [1006] * count
            ends = count * (2 if how == "fin" else 1)  # after a FIN, the close is one more
            assert max(batches) <= 64 and sum(batches) == ends and len(batches) >= ends // 64
            assert_still_serving(server)
    finally:
        ws_module.ConnectionEnds._run = original
