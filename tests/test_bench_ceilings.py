"""bench/ceilings.py raw-frame, the store-and-forward floor bench/run.py measures the pipelined
1 MiB echo against: it must give back every frame byte for byte and in order, however the frames
are cut across reads, or the figure it stands for is wrong. A real process on a real socket."""

from __future__ import annotations

import os
import re
import selectors
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CEILINGS = Path(__file__).resolve().parent.parent / "bench" / "ceilings.py"
MASK = b"\x37\xfa\x21\x3d"


def masked_frame(payload: bytes) -> bytes:
    """A client's binary frame (the echo never unmasks, so the key's bytes are not applied)."""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return b"\x82" + length + MASK + payload


@pytest.fixture
def raw_frame_port():
    proc = subprocess.Popen([sys.executable, str(CEILINGS), "raw-frame", "--port", "0"],
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stderr is not None
        with selectors.DefaultSelector() as selector:  # its first line, within 30 s
            selector.register(proc.stderr, selectors.EVENT_READ)
            assert selector.select(timeout=30), "raw-frame printed nothing in 30 s"
        line = proc.stderr.readline().decode()  # "ceiling ready on 127.0.0.1:PORT", or it died
        match = re.search(r"ceiling ready on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def receive_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        assert chunk, f"closed after {got} of {n} bytes"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def test_raw_frame_gives_back_every_frame_whole_and_in_order(raw_frame_port):
    small = [masked_frame(bytes([i]) * size) for i, size in enumerate((0, 1, 125, 126, 4000))]
    large = masked_frame(os.urandom(1 << 20))  # larger than its staging buffer: read direct
    middle = masked_frame(os.urandom(70_000))  # just over it
    with socket.create_connection(("127.0.0.1", raw_frame_port), timeout=30) as sock:
        sock.settimeout(30)
        # Small frames together, then a large one cut inside its header and its payload, then
        # frames behind it in the same writes.
        smalls = b"".join(small)
        stream = smalls + large + middle + smalls
        cuts = [0, 3, len(smalls) + 1, 500_000, len(stream) - 10, len(stream)]
        for start, end in zip(cuts, cuts[1:]):
            sock.sendall(stream[start:end])
        assert receive_exactly(sock, len(stream)) == stream
        # The large frame's buffer is used again for the next frame of its size.
        again = masked_frame(os.urandom(1 << 20))
        sock.sendall(again)
        assert receive_exactly(sock, len(again)) == again
