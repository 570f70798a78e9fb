"""Graceful shutdown of a real server process on a real signal (tests/apps/production.py).

SIGTERM with 50 open WebSockets: each gets every message the app sent before the signal, then a
Close with --ws-shutdown-close-code; the app sees websocket.disconnect with that code; an HTTP
request in flight completes; lifespan shutdown runs; the process exits 0 within the timeout. An
app that never returns is cancelled after --timeout-graceful-shutdown.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from conftest import TIMEOUT

APPS = Path(__file__).resolve().parent / "apps"

pytest.importorskip("asgiws.asgi.websocket", reason="the WebSocket bridge is not built")


def events(path: Path) -> list:
    return path.read_text().splitlines() if path.exists() else []


async def wait_for_events(path: Path, line: str, count: int = 1) -> None:
    deadline = time.monotonic() + TIMEOUT
    while events(path).count(line) < count:
        assert time.monotonic() < deadline, f"{count} x {line!r} not in {events(path)}"
        await asyncio.sleep(0.02)


def spawn_app(spawn_server, tmp_path: Path, *args: str):
    return spawn_server("production:app", "--lifespan", "on", *args, app_dir=APPS,
                        env={"PRODUCTION_EVENTS": str(tmp_path / "events")})  # fmt: skip


async def read_until_close(ws) -> tuple:
    """Every message until the Close; the Close's code."""
    from websockets.exceptions import ConnectionClosed

    received = []
    try:
        while True:
            received.append(await ws.recv())
    except ConnectionClosed as closed:
        return received, closed.rcvd.code if closed.rcvd is not None else None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "args, code",
    [((), 1012), (("--ws-shutdown-close-code", "1001"), 1001), (("--workers", "2"), 1012)],
    ids=["default-1012", "flag-1001", "workers-2"],
)
async def test_sigterm_with_open_websockets_and_a_request_in_flight(spawn_server, tmp_path, args, code):
    from websockets.asyncio.client import connect

    log = tmp_path / "events"
    burst = 300
    with spawn_app(spawn_server, tmp_path, *args) as proc:
        sockets = await asyncio.wait_for(
            asyncio.gather(*(connect(f"ws://{proc.host}:{proc.port}/ws", close_timeout=TIMEOUT) for _ in range(50))),
            TIMEOUT,
        )
        try:
            for ws in sockets:
                await ws.send(f"burst {burst}")
            # Every burst is sent by the app (mostly unread: the client reads 16 ahead at most).
            await wait_for_events(log, f"burst sent {burst}", 50)
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                slow = asyncio.ensure_future(client.get(f"{proc.url}/slow?1.5"))
                await wait_for_events(log, "slow started")
                signalled = time.monotonic()
                proc.signal(signal.SIGTERM)
                results = await asyncio.wait_for(asyncio.gather(*(read_until_close(ws) for ws in sockets)), TIMEOUT)
                response = await asyncio.wait_for(slow, TIMEOUT)
        finally:
            for ws in sockets:
                await ws.close()
        assert response.status_code == 200 and response.text == "slow done"
        for received, close_code in results:
            assert received == [str(n) for n in range(burst)]
            assert close_code == code
        assert await asyncio.to_thread(proc.wait) == 0
        assert time.monotonic() - signalled < TIMEOUT
    lines = events(log)
    assert lines.count(f"disconnect {code}") == 50, lines
    workers = 2 if "--workers" in args else 1
    assert len([line for line in lines if line.startswith("shutdown ")]) == workers
    assert "Graceful shutdown timed out" not in proc.text


class RawWebSocket:
    """A WebSocket client on a plain socket with a small receive buffer, that reads only when
    told to: the server's sends back up into its own buffers."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # before connect: fixes the window
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        assert chunk, "connection closed"
        self.buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send_text(self, text: str, opcode: int = 0x1) -> None:
        payload, mask = text.encode() if isinstance(text, str) else text, os.urandom(4)
        assert len(payload) < 126
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def read_until_close(self) -> tuple:
        """Every text message until the Close (answered); the Close's code."""
        messages = []
        while True:
            first, second = self._take(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(self._take(2), "big")
            elif length == 127:
                length = int.from_bytes(self._take(8), "big")
            payload = self._take(length)
            if first & 0x0F == 0x8:
                self.send_text(payload[:2], opcode=0x8)
                return messages, int.from_bytes(payload[:2], "big")
            messages.append(payload.decode())

    def close(self) -> None:
        self.sock.close()


def test_messages_waiting_on_backpressure_are_flushed_before_the_close(spawn_server, tmp_path):
    """The clients do not read: the app's sends fill the kernel's buffers and the server's until
    send() waits. Every message whose send() completed before the signal still arrives, in
    order, before the Close."""
    log = tmp_path / "events"
    with spawn_app(spawn_server, tmp_path) as proc:
        clients = [RawWebSocket(proc.host, proc.port) for _ in range(3)]
        try:
            for client in clients:
                client.send_text("big 4000 4000")  # 16 MB each: far more than the buffers hold
            # Wait until the app is stuck in send(): no send completed for a while.
            seen, deadline = -1, time.monotonic() + TIMEOUT
            while True:
                time.sleep(0.3)
                count = len(events(log))
                if count == seen and count > 0:
                    break
                assert time.monotonic() < deadline, "the app never waited on backpressure"
                seen = count
            last_sent = {}
            for line in events(log):
                if line.startswith("sent "):
                    _, port, number = line.split()
                    last_sent[int(port)] = int(number)
            proc.signal(signal.SIGTERM)
            results = [client.read_until_close() for client in clients]
            ports = [client.sock.getsockname()[1] for client in clients]
        finally:
            for client in clients:
                client.close()
        for port, (received, close_code) in zip(ports, results):
            assert last_sent[port] < 3999  # the app was still sending
            assert [int(message) for message in received] == list(range(len(received)))
            assert len(received) > last_sent[port], (len(received), last_sent[port])
            assert close_code == 1012
        assert proc.wait() == 0


@pytest.mark.anyio
async def test_new_connections_are_refused_after_sigterm_while_old_ones_finish(spawn_server, tmp_path):
    log = tmp_path / "events"
    with spawn_app(spawn_server, tmp_path) as proc:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            slow = asyncio.ensure_future(client.get(f"{proc.url}/slow?1"))
            await wait_for_events(log, "slow started")
            proc.signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait_for_line, "Shutting down")
            with pytest.raises(httpx.ConnectError):
                await httpx.AsyncClient().get(proc.url + "/")
            assert (await asyncio.wait_for(slow, TIMEOUT)).status_code == 200
        assert await asyncio.to_thread(proc.wait) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_app_that_never_returns_is_cancelled_after_the_timeout(spawn_server, tmp_path, kind):
    from websockets.asyncio.client import connect

    log = tmp_path / "events"
    with spawn_app(spawn_server, tmp_path, "--timeout-graceful-shutdown", "1") as proc:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            if kind == "http":
                hung = asyncio.ensure_future(client.get(f"{proc.url}/hang"))
                await wait_for_events(log, "hang started")
            else:
                ws = await connect(f"ws://{proc.host}:{proc.port}/ws-hang")
            signalled = time.monotonic()
            proc.signal(signal.SIGTERM)
            status = await asyncio.to_thread(proc.wait)
            elapsed = time.monotonic() - signalled
            if kind == "http":
                with pytest.raises(httpx.TransportError):  # cut: no response was ever started
                    await asyncio.wait_for(hung, TIMEOUT)
            else:
                _, close_code = await asyncio.wait_for(read_until_close(ws), TIMEOUT)
                assert close_code == 1012  # the Close went out at once; the app went on regardless
    assert status == 0
    assert 1.0 <= elapsed < 1.0 + 4.0, elapsed
    lines = events(log)
    assert ("hang cancelled" if kind == "http" else "ws hang cancelled") in lines
    assert lines[-1].startswith("shutdown "), lines  # lifespan shutdown, after the cancellation
    assert "Graceful shutdown timed out: cancelling 1 task(s)" in proc.text


def test_second_signal_skips_the_wait(spawn_server, tmp_path):
    import threading

    log = tmp_path / "events"
    with spawn_app(spawn_server, tmp_path, "--timeout-graceful-shutdown", "30") as proc:
        threading.Thread(target=lambda: _quietly(httpx.get, f"{proc.url}/hang", timeout=TIMEOUT), daemon=True).start()
        asyncio.run(wait_for_events(log, "hang started"))
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        proc.wait_for_line("Waiting for 1 connection")
        proc.signal(signal.SIGINT)
        assert proc.wait() == 0
        assert time.monotonic() - started < 5
    assert "hang cancelled" in events(log)


def _quietly(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception:
        pass


# -- connections accepted just before the shutdown (in-process) ------------------------------------


async def ok_app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await receive()


def accepted(server, count: int = 1) -> None:
    deadline = time.monotonic() + TIMEOUT
    while len(server.server.server_state.connections) < count:
        assert time.monotonic() < deadline, "connection not accepted"
        time.sleep(0.005)


def shutting_down(server) -> None:
    server.stop()
    deadline = time.monotonic() + TIMEOUT
    while all(listener.is_serving() for listener in server.server.listeners):
        assert time.monotonic() < deadline, "shutdown did not begin"
        time.sleep(0.005)


def test_first_request_on_a_connection_accepted_before_shutdown_is_served(run_server, raw):
    with run_server(ok_app, lifespan="off") as server, raw(server) as conn:
        accepted(server)
        shutting_down(server)
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200 and response.headers["connection"] == "close"
        assert conn.at_eof()


def test_silent_new_connection_is_closed_after_the_grace(run_server, raw):
    from asgiws.http.protocol import FIRST_REQUEST_GRACE

    with run_server(ok_app, lifespan="off") as server, raw(server) as conn:
        accepted(server)
        started = time.monotonic()
        shutting_down(server)
        assert conn.at_eof()
        assert FIRST_REQUEST_GRACE * 0.9 <= time.monotonic() - started < FIRST_REQUEST_GRACE + 2


def test_idle_keep_alive_connection_is_closed_at_once(run_server, raw):
    with run_server(ok_app, lifespan="off") as server, raw(server) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 200
        started = time.monotonic()
        shutting_down(server)
        assert conn.at_eof()
        assert time.monotonic() - started < 0.5


def test_websocket_handshake_during_shutdown_is_refused_with_503(run_server, raw):
    with run_server(ok_app, lifespan="off") as server, raw(server) as conn:
        accepted(server)
        shutting_down(server)
        conn.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
        assert conn.read_response().status == 503
