"""Backpressure end to end, against a real `python -m asgiws` process whose memory is read from
/proc/PID/status: a peer that does not read makes the app's `await send` wait; an app that does
not receive makes the server stop reading, so the peer's sends wait. Either way the server's
memory stays flat, and once the slow side catches up every message arrives.

The clients are raw sockets (no library buffering in between); permessage-deflate is not offered,
so every payload byte crosses the wire.
"""

from __future__ import annotations

import base64
import os
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from asgiws.codec import OP_BINARY, OP_CLOSE, OP_TEXT, FrameParser, build_close_payload, build_frame

from conftest import TIMEOUT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")

APPS = Path(__file__).resolve().parent / "apps"
MiB = 1024 * 1024
SIZE = 64 * 1024  # bytes per message
MASK = b"\x01\x02\x03\x04"


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def stats(server) -> dict:
    return httpx.get(server.url + "/stats", timeout=TIMEOUT).json()


def wait_until_still(read, quiet: float = 1.0, timeout: float = 30.0):
    """Poll `read()` until its value has not changed for `quiet` seconds; return that value."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still moving after {timeout}s: {value}"
        time.sleep(0.1)
        new = read()
        if new != value:
            value, since = new, time.monotonic()
    return value


class Client:
    """A WebSocket client on a plain socket; it reads only when told to."""

    def __init__(self, server, path: str):
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)  # byte by byte: nothing after the head is consumed here
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        self.parser = FrameParser(is_server=False, max_size=4 * MiB)

    def read_messages(self):
        """Read until the server's Close (answered) and EOF: yields each data frame."""
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                return
            for frame in self.parser.feed_data(data):
                if frame.opcode == OP_CLOSE:
                    self.sock.sendall(build_frame(OP_CLOSE, build_close_payload(1000), mask=MASK))
                elif frame.opcode in (OP_BINARY, OP_TEXT):
                    yield frame

    def close(self):
        self.sock.close()


@pytest.fixture
def server(spawn_server):
    with spawn_server("backpressure:app", "--lifespan", "off", "--ws-per-message-deflate", "false",
                      app_dir=APPS) as proc:  # fmt: skip
        yield proc


def warm_up(server):
    """One small session of each kind first, so imports and first-use allocations (the codec,
    buffers) are in the baseline rather than counted as growth."""
    client = Client(server, "/firehose?count=32")
    assert sum(1 for _ in client.read_messages()) == 32
    client.close()
    stats_before = stats(server)
    assert stats_before["send_done"]


def test_peer_that_does_not_read_blocks_await_send(server):
    pid = server.proc.pid
    warm_up(server)
    baseline = memory_kib(pid)
    count = 100 * MiB // SIZE  # 100 MiB in 1600 messages
    sent_before = stats(server)["sent"]

    client = Client(server, f"/firehose?count={count}")  # and never read, for now
    stalled = wait_until_still(lambda: stats(server)["sent"]) - sent_before
    rss_stalled = memory_kib(pid)
    growth_mib = (rss_stalled - baseline) / 1024
    print(f"\nfirehose: app stalled after {stalled} of {count} messages ({stalled * SIZE / MiB:.1f} MiB); "
          f"server RSS {baseline / 1024:.1f} -> {rss_stalled / 1024:.1f} MiB (+{growth_mib:.1f})")  # fmt: skip
    assert 0 < stalled < count // 4, stalled  # await send is waiting, well short of 100 MiB
    assert not stats(server)["send_done"]
    assert growth_mib < 10, f"server RSS grew {growth_mib:.1f} MiB while the app was blocked"

    received = received_bytes = 0
    for frame in client.read_messages():
        received += 1
        received_bytes += len(frame.payload)
    client.close()
    assert (received, received_bytes) == (count, count * SIZE)
    final = stats(server)
    assert final["send_done"] and final["sent"] - sent_before == count
    peak_growth_mib = (memory_kib(pid, "VmHWM") - baseline) / 1024
    print(f"firehose: all {count} messages read; server peak RSS +{peak_growth_mib:.1f} MiB over the baseline")
    assert peak_growth_mib < 10


def test_app_that_does_not_receive_pauses_reading(server):
    pid = server.proc.pid
    warm_up(server)
    baseline = memory_kib(pid)
    count = 200 * MiB // SIZE  # 200 MiB in 3200 messages
    frame = build_frame(OP_BINARY, os.urandom(SIZE), mask=MASK)  # the same masked frame each time

    client = Client(server, f"/sink?count={count}&delay=0.0002")
    progress = {"frames": 0, "error": None}

    def flood():
        try:
            for _ in range(count):
                client.sock.sendall(frame)  # blocks while the server is not reading
                progress["frames"] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            progress["error"] = exc

    client.sock.settimeout(60)
    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    stalled = wait_until_still(lambda: progress["frames"])
    rss_stalled = memory_kib(pid)
    growth_mib = (rss_stalled - baseline) / 1024
    print(f"\nsink: client's sends blocked after {stalled} of {count} messages ({stalled * SIZE / MiB:.1f} MiB); "
          f"server RSS {baseline / 1024:.1f} -> {rss_stalled / 1024:.1f} MiB (+{growth_mib:.1f})")  # fmt: skip
    assert progress["error"] is None, progress["error"]
    assert 0 < stalled < count // 4, stalled  # the socket filled up: the server stopped reading
    assert stats(server)["received"] == 0
    assert growth_mib < 30, f"server RSS grew {growth_mib:.1f} MiB while the app was not receiving"

    httpx.get(server.url + "/release", timeout=TIMEOUT)  # the app starts receiving (slowly)
    sender.join(120)
    assert not sender.is_alive() and progress["error"] is None, progress
    replies = [frame.payload for frame in client.read_messages()]
    client.close()
    assert replies == [f"done {count} {count * SIZE}"], replies
    peak_growth_mib = (memory_kib(pid, "VmHWM") - baseline) / 1024
    print(f"sink: all {count} messages received; server peak RSS +{peak_growth_mib:.1f} MiB over the baseline")
    assert peak_growth_mib < 30
