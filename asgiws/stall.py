"""The write-stall watch (`timeout_write_stall`), shared by the HTTP and WebSocket protocols.

A peer that stops reading leaves our bytes for it in the transport's write buffer; the protocol
then stops reading from it too (backpressure), so neither a request timeout nor the WebSocket
keepalive can tell whether it is alive. This watch can: armed when the write buffer goes over its
high-water mark (`pause_writing`), it looks again `timeout` seconds later, and if nothing the
server had for the peer has left since — neither from the transport's buffer nor from the
kernel's send queue (bytes sent but not acknowledged) — it calls `on_stall`, which drops the
connection. A slow reader that reads at all makes progress and is watched on, never cut.

Made on the first `pause_writing` of a connection, so an idle connection pays nothing for it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Callable, Optional

# The ioctl that reads a socket's send queue: SIOCOUTQ on Linux, which has TIOCOUTQ's number.
# Elsewhere None, and the transport's buffer alone is watched: Windows has no fcntl; macOS and
# the BSDs define TIOCOUTQ for terminals only (on a socket it fails with ENOTTY).
_OUTQ: Optional[int] = None
try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover - not a Unix
    pass
else:
    if sys.platform.startswith("linux"):
        _OUTQ = getattr(termios, "TIOCOUTQ", None)


def unsent_bytes(transport: asyncio.WriteTransport) -> int:
    """Bytes written to `transport` that the peer has not acknowledged: the transport's buffer
    plus, on Linux, the kernel's send queue (SIOCOUTQ, the same ioctl number as TIOCOUTQ)."""
    unsent = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None and _OUTQ is not None:
        try:
            unsent += int.from_bytes(fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"),
                                     "little", signed=True)
        except (OSError, ValueError):
            pass  # not a TCP socket (a Unix socket, a closed one): the transport's buffer alone
    return unsent


class WriteStallWatch:
    __slots__ = ("loop", "transport", "timeout", "on_stall", "timer", "unsent")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.WriteTransport,
                 timeout: float, on_stall: Callable[[int], None]) -> None:
        self.loop = loop
        self.transport = transport
        self.timeout = timeout
        self.on_stall = on_stall  # called with the bytes still unsent
        self.timer: Optional[asyncio.TimerHandle] = None
        self.unsent = 0

    def start(self) -> None:
        """The write buffer went over its high-water mark."""
        if self.timer is None:
            self.unsent = unsent_bytes(self.transport)
            self.timer = self.loop.call_later(self.timeout, self._check)

    def stop(self) -> None:
        """The buffer drained below its low-water mark, or the connection is gone."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self) -> None:
        # Also once the transport is closing: close() waits for the buffer to drain, so a peer
        # that never reads the last response would hold the connection forever.
        self.timer = None
        unsent = unsent_bytes(self.transport)
        if unsent and unsent >= self.unsent:
            self.on_stall(unsent)
        elif unsent:
            self.unsent = unsent
            self.timer = self.loop.call_later(self.timeout, self._check)
